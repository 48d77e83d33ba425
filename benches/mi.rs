//! Mutual-information registration benchmark (post-eddy alignment of shells): the median b0
//! (fixed) against the mean DW image (moving) of the shared phantoms, after realigning every
//! volume with its true transform, so the true answer is the identity. A second case moves the
//! DW volumes by a known rigid transform (3°, 2 mm) before averaging. Prints the mean
//! displacement error over the brain mask and the time per call on one thread and on all.
//! Skips gracefully when ../shared is missing.
//!
//! `cargo bench --bench mi -- [mini] [bench] [PHANTOM_DIR ...]`; env MI_BINS, MI_DIL override the defaults.

use nalgebra::{Matrix4, Rotation3, Vector3};
use nifreeze::image::{Mask, Series, Volume};
use nifreeze::io::nifti::{read_mask, read_series};
use nifreeze::registration::{register, resample, Interpolation, MetricKind, RegistrationConfig};
use std::path::Path;
use std::time::Instant;

/// The phantom's true motion (truth.tsv), read by the library's motion-table reader.
fn truth(path: &Path) -> Vec<Matrix4<f64>> {
    nifreeze::report::read_motion_tsv(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn median_of(s: &Series, idx: &[usize]) -> Volume {
    let mut out = vec![0f32; s.grid.len()];
    let mut buf = vec![0f32; idx.len()];
    for (v, o) in out.iter_mut().enumerate() {
        for (t, &i) in idx.iter().enumerate() {
            buf[t] = s.volume(i)[v];
        }
        buf.sort_by(|a, b| a.total_cmp(b));
        let h = buf.len() / 2;
        *o = if buf.len() % 2 == 1 {
            buf[h]
        } else {
            0.5 * (buf[h - 1] + buf[h])
        };
    }
    Volume::new(s.grid.clone(), out)
}

fn mean_error(a: &Matrix4<f64>, b: &Matrix4<f64>, m: &Mask) -> f64 {
    let d = a - b;
    let idx = m.indices();
    idx.iter()
        .map(|&i| {
            let [x, y, z] = m.grid.ijk(i);
            let p = m.grid.world([x as f64, y as f64, z as f64]);
            (d.fixed_view::<3, 3>(0, 0) * p + d.fixed_view::<3, 1>(0, 3)).norm()
        })
        .sum::<f64>()
        / idx.len() as f64
}

fn run(dir: &Path, cfg: &RegistrationConfig) {
    let Ok((s, _)) = read_series(&dir.join("dwi.nii.gz")) else {
        eprintln!("skip {}: no data", dir.display());
        return;
    };
    let m = read_mask(&dir.join("brainmask.nii.gz"), &s.grid).unwrap();
    let t = truth(&dir.join("truth.tsv"));
    let b: Vec<f64> = std::fs::read_to_string(dir.join("dwi.bval"))
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let idx = m.indices();
    let c = idx
        .iter()
        .map(|&i| {
            let [x, y, z] = m.grid.ijk(i);
            m.grid.world([x as f64, y as f64, z as f64])
        })
        .sum::<Vector3<f64>>()
        / idx.len() as f64;
    let known = {
        let r = Rotation3::from_euler_angles(
            2.0f64.to_radians(),
            -1.5f64.to_radians(),
            1.0f64.to_radians(),
        );
        nifreeze::registration::transform::about_centre(
            r.matrix(),
            &Vector3::new(1.2, -1.5, 0.8),
            &c,
        )
    };
    let b0: Vec<usize> = (0..b.len()).filter(|&i| b[i] <= 50.0).collect();
    let dw: Vec<usize> = (0..b.len()).filter(|&i| b[i] > 50.0).collect();
    // realigned_k(x) = dwi_k(T_k x); with the known motion: dwi_k(T_k · known⁻¹ · x)
    let realign = |k: usize, extra: &Matrix4<f64>| {
        resample(
            &s.to_volume(k),
            &s.grid,
            &(t[k] * extra),
            Interpolation::CubicBSpline,
        )
        .data
    };
    let b0s: Vec<Vec<f32>> = b0
        .iter()
        .map(|&k| realign(k, &Matrix4::identity()))
        .collect();
    let fixed = median_of(
        &Series::from_volumes(s.grid.clone(), &b0s),
        &(0..b0.len()).collect::<Vec<_>>(),
    );
    let kinv = known.try_inverse().unwrap();
    for (name, extra, expect) in [
        ("identity", Matrix4::identity(), Matrix4::identity()),
        ("known 2°/2 mm", kinv, known),
    ] {
        let mut acc = vec![0f64; s.grid.len()];
        for &k in &dw {
            for (a, v) in acc.iter_mut().zip(realign(k, &extra)) {
                *a += v as f64;
            }
        }
        let moving = Volume::new(
            s.grid.clone(),
            acc.iter().map(|a| (a / dw.len() as f64) as f32).collect(),
        );
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let t0 = Instant::now();
        let r = one
            .install(|| register(&fixed, &moving, Some(&m), &Matrix4::identity(), cfg))
            .unwrap();
        let t1 = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let r2 = register(&fixed, &moving, Some(&m), &Matrix4::identity(), cfg).unwrap();
        let tn = t0.elapsed().as_secs_f64();
        assert_eq!(r.matrix, r2.matrix, "thread-count dependence");
        println!(
            "{} {name}: error {:.4} mm, {} iterations, MI {:.4}, {:.3} s on 1 thread, {:.3} s on {}",
            dir.file_name().unwrap().to_string_lossy(),
            mean_error(&r.matrix, &expect, &m),
            r.iterations,
            r.metric,
            t1,
            tn,
            rayon::current_num_threads()
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let mut cfg = RegistrationConfig::mutual_information();
    if let (Ok(v), MetricKind::MutualInformation(mi)) = (std::env::var("MI_BINS"), &mut cfg.metric)
    {
        mi.bins = v.parse().unwrap();
    }
    if let Ok(v) = std::env::var("MI_DIL") {
        cfg.mask_dilation = v.parse().unwrap();
    }
    println!("config: {:?}, dilation {}", cfg.metric, cfg.mask_dilation);
    let root = Path::new("../shared/phantoms");
    for name in ["mini", "bench"] {
        if args.is_empty() || args.iter().any(|a| a == name) {
            run(&root.join(name), &cfg);
        }
    }
    // Any other argument is a phantom folder (e.g. one written by `nifreeze-rs simulate`).
    for dir in args.iter().filter(|a| a.contains('/')) {
        run(Path::new(dir), &cfg);
    }
}
