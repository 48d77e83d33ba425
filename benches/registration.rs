//! Registration benchmark: seconds per volume and accuracy, rigid and affine, on the shared
//! phantoms (4 mm mini, 2.5 mm bench). Skips gracefully when ../shared is missing.
//!
//! `cargo bench --bench registration -- [mini] [bench] [--affine] [--out DIR] [--threads N]`
//! - mini: each dwi volume (moving) to the same clean volume (fixed), brain mask; error = mean
//!   displacement over mask voxels between the estimate and truth.tsv (raw, no global
//!   alignment). With --out, writes one ITK file per volume for ../shared/tools/score.py.
//! - bench: no clean image exists, so the median b0 (fixed) is resampled with known random
//!   rigid transforms up to 6°/6 mm plus Rician-like noise (moving), and b0 volumes are
//!   registered to their median (timing only).
//!   Env REG_LEVELS="shrink:sigma:cubic,..." overrides the pyramid (for measurements).

use nalgebra::{Matrix4, Vector3};
use nifreeze::image::{Grid, Mask, Volume};
use nifreeze::registration::{self, Interpolation, Level, RegistrationConfig, TransformKind};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn load(path: &Path) -> (Grid, usize, Vec<f32>) {
    use nifti::{NiftiObject, ReaderOptions};
    let obj = ReaderOptions::new().read_file(path).expect("read nifti");
    let h = obj.header().clone();
    let vol = obj.into_volume();
    let data: Vec<f32> = match h.datatype {
        2 => vol
            .into_nifti_typed_data::<u8>()
            .unwrap()
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        4 => vol
            .into_nifti_typed_data::<i16>()
            .unwrap()
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        16 => vol.into_nifti_typed_data::<f32>().unwrap(),
        64 => vol
            .into_nifti_typed_data::<f64>()
            .unwrap()
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        t => panic!("datatype {t}"),
    };
    let s = |r: [f32; 4]| [r[0] as f64, r[1] as f64, r[2] as f64, r[3] as f64];
    let (x, y, z) = (s(h.srow_x), s(h.srow_y), s(h.srow_z));
    let affine = Matrix4::new(
        x[0], x[1], x[2], x[3], y[0], y[1], y[2], y[3], z[0], z[1], z[2], z[3], 0.0, 0.0, 0.0, 1.0,
    );
    let dims = [h.dim[1] as usize, h.dim[2] as usize, h.dim[3] as usize];
    let nv = if h.dim[0] >= 4 { h.dim[4] as usize } else { 1 };
    (Grid::new(dims, affine), nv, data)
}

fn truth(path: &Path) -> Vec<Matrix4<f64>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let hdr: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let idx: Vec<usize> = (0..16)
        .map(|k| {
            hdr.iter()
                .position(|h| *h == format!("m{}{}", k / 4, k % 4))
                .unwrap()
        })
        .collect();
    lines
        .map(|l| {
            let f: Vec<f64> = l.split('\t').map(|v| v.parse().unwrap()).collect();
            Matrix4::from_row_slice(&idx.iter().map(|&i| f[i]).collect::<Vec<_>>())
        })
        .collect()
}

fn mean_disp(a: &Matrix4<f64>, b: &Matrix4<f64>, pts: &[Vector3<f64>]) -> f64 {
    let d = a - b;
    pts.iter()
        .map(|p| (d.fixed_view::<3, 3>(0, 0) * p + d.fixed_view::<3, 1>(0, 3)).norm())
        .sum::<f64>()
        / pts.len() as f64
}

fn median(v: &[f64]) -> f64 {
    nifreeze::stats::median(&mut v.to_vec())
}

fn config(kind: TransformKind) -> RegistrationConfig {
    let mut cfg = RegistrationConfig {
        kind,
        ..Default::default()
    };
    if let Ok(s) = std::env::var("REG_LEVELS") {
        cfg.levels = s
            .split(',')
            .map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                Level {
                    shrink: f[0].parse().unwrap(),
                    sigma: f[1].parse().unwrap(),
                    cubic: f[2] == "1",
                }
            })
            .collect();
    }
    if let Ok(s) = std::env::var("REG_DILATE") {
        cfg.mask_dilation = s.parse().unwrap();
    }
    cfg
}

/// Deterministic pseudo-random numbers (SplitMix64) for the synthetic motions and noise.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.next().max(1e-300), self.next());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

fn rigid_about(rot_deg: [f64; 3], t: [f64; 3], c: &Vector3<f64>) -> Matrix4<f64> {
    let r = nalgebra::Rotation3::from_euler_angles(
        rot_deg[0].to_radians(),
        rot_deg[1].to_radians(),
        rot_deg[2].to_radians(),
    );
    registration::transform::about_centre(r.matrix(), &Vector3::from(t), c)
}

fn mask_points(m: &Mask) -> Vec<Vector3<f64>> {
    m.indices()
        .iter()
        .step_by(7)
        .map(|&i| {
            let [a, b, c] = m.grid.ijk(i);
            m.grid.world([a as f64, b as f64, c as f64])
        })
        .collect()
}

fn run_mini(root: &Path, kind: TransformKind, out: Option<&Path>) {
    let d = root.join("phantoms/mini");
    let (g, nv, dwi) = load(&d.join("dwi.nii.gz"));
    let (_, _, clean) = load(&d.join("clean.nii.gz"));
    let (_, _, m) = load(&d.join("brainmask.nii.gz"));
    let mask = Mask {
        grid: g.clone(),
        data: m.iter().map(|&v| v > 0.0).collect(),
    };
    let tr = truth(&d.join("truth.tsv"));
    let pts = mask_points(&mask);
    let cfg = config(kind);
    let n = g.len();
    let mut errs = Vec::new();
    let mut total = 0.0;
    let mut iters = 0;
    let mut all = Vec::new();
    // REG_FIXED_NOISE=s: add Rician noise of s × (mask mean of the b0) to the fixed image too
    // (a crude stand-in for a noisy model prediction)
    let fixed_noise: f64 = std::env::var("REG_FIXED_NOISE")
        .map(|s| s.parse().unwrap())
        .unwrap_or(0.0);
    let b0mean: f64 =
        mask.indices().iter().map(|&i| clean[i] as f64).sum::<f64>() / mask.count() as f64;
    let mut rng = Rng(11);
    for k in 0..nv {
        let mut fixed = Volume::new(g.clone(), clean[k * n..(k + 1) * n].to_vec());
        // REG_FIXED_MASKED=1: zero the fixed image outside the brain mask (a prediction that
        // exists only inside the mask)
        if std::env::var("REG_FIXED_MASKED").is_ok() {
            for (v, &m) in fixed.data.iter_mut().zip(&mask.data) {
                if !m {
                    *v = 0.0;
                }
            }
        }
        if fixed_noise > 0.0 {
            let s = fixed_noise * b0mean;
            for v in fixed.data.iter_mut() {
                let (a, b) = (*v as f64 + s * rng.normal(), s * rng.normal());
                *v = (a * a + b * b).sqrt() as f32;
            }
        }
        let moving = Volume::new(g.clone(), dwi[k * n..(k + 1) * n].to_vec());
        let t0 = Instant::now();
        // REG_INIT_OFFSET=deg_mm: start from the truth composed with a random rigid offset
        // of up to ±deg_mm degrees and mm (tests the capture range on real noisy volumes)
        let init = match std::env::var("REG_INIT_OFFSET") {
            Ok(v) => {
                let a: f64 = v.parse().unwrap();
                let rot = [0, 1, 2].map(|_| (rng.next() * 2.0 - 1.0) * a);
                let tra = [0, 1, 2].map(|_| (rng.next() * 2.0 - 1.0) * a);
                tr[k] * rigid_about(rot, tra, &g.center_world())
            }
            Err(_) => Matrix4::identity(),
        };
        let r = registration::register(&fixed, &moving, Some(&mask), &init, &cfg).unwrap();
        total += t0.elapsed().as_secs_f64();
        iters += r.iterations;
        errs.push(mean_disp(&r.matrix, &tr[k], &pts));
        if let Some(o) = out {
            if std::env::var("REG_MAT").is_ok() {
                let p = o.join(format!("vol-{k:04}.mat"));
                nifreeze::io::transforms::write_ants_mat(&p, &r.matrix).unwrap();
            } else {
                let p = o.join(format!("vol-{k:04}.tfm"));
                nifreeze::io::transforms::write_itk(&p, &[r.matrix]).unwrap();
            }
            all.push(r.matrix);
        }
    }
    if let Some(o) = out {
        nifreeze::io::transforms::write_itk(&o.with_extension("multi.tfm"), &all).unwrap();
        nifreeze::io::transforms::write_x5(&o.with_extension("x5"), &all, Some(&g)).unwrap();
    }
    println!(
        "mini {kind:?}: {nv} volumes, {:.4} s/volume, {:.1} iterations/volume, error median {:.4} mm, worst {:.4} mm",
        total / nv as f64,
        iters as f64 / nv as f64,
        median(&errs),
        errs.iter().cloned().fold(0.0, f64::max)
    );
    if std::env::var("REG_VERBOSE").is_ok() {
        println!(
            "  per volume: {:?}",
            errs.iter()
                .map(|e| (e * 1e4).round() / 1e4)
                .collect::<Vec<_>>()
        );
    }
}

fn run_bench(root: &Path, kind: TransformKind) {
    let d = root.join("phantoms/bench");
    let (g, nv, dwi) = load(&d.join("dwi.nii.gz"));
    let (_, _, m) = load(&d.join("brainmask.nii.gz"));
    let mask = Mask {
        grid: g.clone(),
        data: m.iter().map(|&v| v > 0.0).collect(),
    };
    let bvals: Vec<f64> = std::fs::read_to_string(d.join("dwi.bval"))
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let b0: Vec<usize> = (0..nv).filter(|&k| bvals[k] <= 50.0).collect();
    let n = g.len();
    let med: Vec<f32> = (0..n)
        .map(|i| {
            let v: Vec<f64> = b0.iter().map(|&k| dwi[k * n + i] as f64).collect();
            median(&v) as f32
        })
        .collect();
    let fixed = Volume::new(g.clone(), med);
    let pts = mask_points(&mask);
    let cfg = config(kind);
    let c = g.center_world();
    // synthetic: median b0 moved by known transforms up to 6°/6 mm, plus noise (σ = 3 % of the mask mean)
    let mean: f64 = mask
        .indices()
        .iter()
        .map(|&i| fixed.data[i] as f64)
        .sum::<f64>()
        / mask.count() as f64;
    let mut rng = Rng(7);
    let (mut errs, mut total) = (Vec::new(), 0.0);
    let nsyn = 8;
    for _ in 0..nsyn {
        let rot = [0, 1, 2].map(|_| (rng.next() * 2.0 - 1.0) * 6.0);
        let tra = [0, 1, 2].map(|_| (rng.next() * 2.0 - 1.0) * 6.0);
        let t = rigid_about(rot, tra, &c);
        // moved(T x) = fixed(x)  ⇔  moved(y) = fixed(T⁻¹ y)
        let mut moving = registration::resample(
            &fixed,
            &g,
            &t.try_inverse().unwrap(),
            Interpolation::CubicBSpline,
        );
        for v in moving.data.iter_mut() {
            let s = 0.03 * mean;
            let (a, b) = (*v as f64 + s * rng.normal(), s * rng.normal());
            *v = (a * a + b * b).sqrt() as f32;
        }
        let t0 = Instant::now();
        let r = registration::register(&fixed, &moving, Some(&mask), &Matrix4::identity(), &cfg)
            .unwrap();
        total += t0.elapsed().as_secs_f64();
        errs.push(mean_disp(&r.matrix, &t, &pts));
    }
    println!(
        "bench {kind:?} synthetic (≤6°/6 mm, noise): {:.4} s/volume, error median {:.4} mm, worst {:.4} mm",
        total / nsyn as f64,
        median(&errs),
        errs.iter().cloned().fold(0.0, f64::max)
    );
    let t0 = Instant::now();
    for &k in &b0 {
        let moving = Volume::new(g.clone(), dwi[k * n..(k + 1) * n].to_vec());
        registration::register(&fixed, &moving, Some(&mask), &Matrix4::identity(), &cfg).unwrap();
    }
    println!(
        "bench {kind:?} b0 → median b0: {:.4} s/volume",
        t0.elapsed().as_secs_f64() / b0.len() as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if !root.join("phantoms").is_dir() {
        println!("registration bench: {} not found, skipping", root.display());
        return;
    }
    let threads = args
        .iter()
        .position(|a| a == "--threads")
        .map(|i| args[i + 1].parse().unwrap())
        .unwrap_or(1);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .ok();
    let out = args
        .iter()
        .position(|a| a == "--out")
        .map(|i| PathBuf::from(&args[i + 1]));
    if let Some(o) = &out {
        std::fs::create_dir_all(o).unwrap();
    }
    let kinds: Vec<TransformKind> = if args.iter().any(|a| a == "--affine") {
        vec![TransformKind::Affine]
    } else if args.iter().any(|a| a == "--rigid") {
        vec![TransformKind::Rigid]
    } else {
        vec![TransformKind::Rigid, TransformKind::Affine]
    };
    let pick: Vec<&str> = args
        .iter()
        .map(|s| s.as_str())
        .filter(|a| *a == "mini" || *a == "bench")
        .collect();
    let all = pick.is_empty();
    for &kind in &kinds {
        if all || pick.contains(&"mini") {
            run_mini(&root, kind, out.as_deref());
        }
        if all || pick.contains(&"bench") {
            run_bench(&root, kind);
        }
    }
}
