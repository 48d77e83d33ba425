//! Cubic B-spline microbenchmark: the prefilter (ms per volume), `value` and `value_gradient`
//! at registration-like points (ns per point), and whole-volume resampling under a rigid
//! transform (ns per output voxel, prefilter included and excluded). One thread, on a
//! synthetic volume of the bench phantom's size (70×85×71); no shared data needed.
//!
//! `cargo bench --bench interpolate -- [--reps N] [--dims NX,NY,NZ]`
//!
//! Each figure is the fastest of `reps` repetitions (default 7; the least disturbed by other jobs). A checksum of every output
//! is printed too: a faster build must print the same checksums (the same bits).

use nalgebra::{Matrix4, Rotation3, Vector3};
use nifreeze::image::{Grid, Volume};
use nifreeze::registration::interpolate::BSpline;
use nifreeze::registration::{resample, transform, Interpolation};
use std::hint::black_box;
use std::time::Instant;

/// Fastest seconds of `reps` runs of `f` (the least disturbed by other jobs on the machine).
fn time<T>(reps: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut out = None;
    let times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            out = Some(black_box(f()));
            t.elapsed().as_secs_f64()
        })
        .collect();
    (
        times.into_iter().fold(f64::INFINITY, f64::min),
        out.unwrap(),
    )
}

/// FNV-1a over the bits of the values: equal checksums, equal outputs.
fn checksum(v: impl IntoIterator<Item = u64>) -> u64 {
    v.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, x| {
        (h ^ x).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let reps: usize = arg("--reps").map_or(7, |s| s.parse().expect("--reps N"));
    let dims: [usize; 3] = arg("--dims").map_or([70, 85, 71], |s| {
        let v: Vec<usize> = s.split(',').map(|x| x.parse().expect("--dims")).collect();
        [v[0], v[1], v[2]]
    });
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| run(dims, reps));
}

fn run(dims: [usize; 3], reps: usize) {
    let n = dims[0] * dims[1] * dims[2];
    // a head-like blob with texture and noise, 2.5 mm voxels
    let c = dims.map(|d| (d as f64 - 1.0) / 2.0);
    let mut data = Vec::with_capacity(n);
    let mut s = 0x1234_5678u64;
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                let r = ((i as f64 - c[0]) / c[0]).powi(2)
                    + ((j as f64 - c[1]) / c[1]).powi(2)
                    + ((k as f64 - c[2]) / c[2]).powi(2);
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let noise = (s >> 40) as f64 / (1u64 << 24) as f64 - 0.5;
                let v = if r < 0.8 {
                    800.0
                        + 200.0 * (i as f64 * 0.4).sin() * (j as f64 * 0.3).cos()
                        + 100.0 * (k as f64 * 0.5).sin()
                } else {
                    0.0
                };
                data.push((v + 40.0 * noise) as f32);
            }
        }
    }
    let affine = Matrix4::new(
        2.5,
        0.0,
        0.0,
        -c[0] * 2.5,
        0.0,
        2.5,
        0.0,
        -c[1] * 2.5,
        0.0,
        0.0,
        2.5,
        -c[2] * 2.5,
        0.0,
        0.0,
        0.0,
        1.0,
    );
    let grid = Grid::new(dims, affine);
    println!(
        "interpolate microbench: {}×{}×{} ({n} voxels), 1 thread, best of {reps}",
        dims[0], dims[1], dims[2]
    );

    let (t_pre, spline) = time(reps, || BSpline::new(&data, dims));
    println!(
        "prefilter (BSpline::new)        {:8.2} ms/volume",
        t_pre * 1e3
    );

    // registration-like points: every voxel of the lattice (every 2nd voxel along each axis),
    // jittered, seen through a rigid motion of 3° and 2 mm, in raster order
    let r = Rotation3::from_euler_angles(0.03, -0.05, 0.04);
    let t = transform::about_centre(r.matrix(), &Vector3::new(2.0, -1.0, 1.5), &Vector3::zeros());
    let v = affine.try_inverse().unwrap() * t * affine;
    let mut pts = Vec::new();
    let mut h = 0u64;
    for k in (0..dims[2]).step_by(2) {
        for j in (0..dims[1]).step_by(2) {
            for i in (0..dims[0]).step_by(2) {
                let u = nifreeze::registration::pyramid::hash3(h);
                h += 1;
                let p = v * nalgebra::Vector4::new(
                    i as f64 + u[0],
                    j as f64 + u[1],
                    k as f64 + u[2],
                    1.0,
                );
                pts.push([p.x, p.y, p.z]);
            }
        }
    }
    let np = pts.len() as f64;
    let (t_val, vals) = time(reps, || {
        pts.iter().map(|&p| spline.value(p)).collect::<Vec<_>>()
    });
    println!(
        "value at {:7} points            {:8.1} ns/point   checksum {:016x}",
        pts.len(),
        t_val / np * 1e9,
        checksum(vals.iter().map(|x| x.to_bits()))
    );
    let (t_grad, grads) = time(reps, || {
        pts.iter()
            .map(|&p| spline.value_gradient(p))
            .collect::<Vec<_>>()
    });
    println!(
        "value_gradient at the same       {:8.1} ns/point   checksum {:016x}",
        t_grad / np * 1e9,
        checksum(grads.iter().flat_map(|(a, g)| [
            a.to_bits(),
            g[0].to_bits(),
            g[1].to_bits(),
            g[2].to_bits()
        ]))
    );

    let (t_vals, vals) = time(reps, || {
        let mut out = vec![0.0; pts.len()];
        spline.values_with(pts.len(), |m| pts[m], |m, v| out[m] = v);
        out
    });
    println!(
        "values_with at the same          {:8.1} ns/point   checksum {:016x}",
        t_vals / np * 1e9,
        checksum(vals.iter().map(|x| x.to_bits()))
    );
    let (t_grads, grads) = time(reps, || {
        let mut out = vec![(0.0, [0.0; 3]); pts.len()];
        spline.value_gradients_with(
            pts.len(),
            |m| pts[m],
            |m, vg| out[m] = vg.unwrap_or_default(),
        );
        out
    });
    println!(
        "value_gradients_with at the same {:8.1} ns/point   checksum {:016x}",
        t_grads / np * 1e9,
        checksum(grads.iter().flat_map(|(a, g)| [
            a.to_bits(),
            g[0].to_bits(),
            g[1].to_bits(),
            g[2].to_bits()
        ]))
    );

    let vol = Volume::new(grid.clone(), data.clone());
    let (t_res, out) = time(reps, || {
        resample(&vol, &grid, &t, Interpolation::CubicBSpline)
    });
    println!(
        "resample (rigid, cubic)          {:8.1} ns/voxel    {:.1} without the prefilter   checksum {:016x}",
        t_res / n as f64 * 1e9,
        (t_res - t_pre) / n as f64 * 1e9,
        checksum(out.data.iter().map(|x| x.to_bits() as u64))
    );
    let (t_lin, out) = time(reps, || resample(&vol, &grid, &t, Interpolation::Linear));
    println!(
        "resample (rigid, trilinear)      {:8.1} ns/voxel                            checksum {:016x}",
        t_lin / n as f64 * 1e9,
        checksum(out.data.iter().map(|x| x.to_bits() as u64))
    );
}
