//! Mutual-information registration across contrasts: b=0 reference (median of the b0s) against
//! the mean diffusion-weighted image of the mini phantom (data/sample, 4 mm), whose contrast is
//! partly inverted. Truth is either a known rigid transform applied to the DW volumes before
//! averaging (noise-free `clean.nii.gz`) or the phantom's own motion (`truth.tsv`, noisy
//! `dwi.nii.gz`, realigned with the true transforms before averaging).

use nalgebra::{Matrix4, Rotation3, Vector3};
use nifreeze::image::{Mask, Series, Volume};
use nifreeze::io::nifti::{read_mask, read_series};
use nifreeze::registration::mutual_information::{register_mi, MiConfig};
use nifreeze::registration::{resample, Interpolation};
use std::path::Path;

fn bvals() -> Vec<f64> {
    std::fs::read_to_string("data/sample/dwi.bval")
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

/// Rows of truth.tsv: RAS reference → volume matrices.
fn truth() -> Vec<Matrix4<f64>> {
    let text = std::fs::read_to_string("data/sample/truth.tsv").unwrap();
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let m00 = head.iter().position(|h| *h == "m00").unwrap();
    lines
        .map(|l| {
            let v: Vec<f64> = l.split('\t').map(|x| x.parse().unwrap()).collect();
            Matrix4::from_row_slice(&v[m00..m00 + 16])
        })
        .collect()
}

fn load(name: &str) -> (Series, Mask) {
    let (s, _) = read_series(Path::new(&format!("data/sample/{name}"))).unwrap();
    let m = read_mask(Path::new("data/sample/brainmask.nii.gz"), &s.grid).unwrap();
    (s, m)
}

fn median_b0(s: &Series, b: &[f64]) -> Volume {
    let idx: Vec<usize> = (0..b.len()).filter(|&i| b[i] <= 50.0).collect();
    let n = s.grid.len();
    let mut out = vec![0f32; n];
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

/// Mean of the volumes with b in `range`, each first resampled through `t(k)`
/// (`out_k(x) = vol_k(t(k)·x)`).
fn mean_dw(
    s: &Series,
    b: &[f64],
    range: (f64, f64),
    t: impl Fn(usize) -> Option<Matrix4<f64>>,
) -> Volume {
    let idx: Vec<usize> = (0..b.len())
        .filter(|&i| b[i] > range.0 && b[i] < range.1)
        .collect();
    let mut acc = vec![0f64; s.grid.len()];
    for &i in &idx {
        let v = s.to_volume(i);
        let v = match t(i) {
            Some(m) => resample(&v, &s.grid, &m, Interpolation::CubicBSpline),
            None => v,
        };
        for (a, x) in acc.iter_mut().zip(&v.data) {
            *a += *x as f64;
        }
    }
    let n = idx.len() as f64;
    Volume::new(s.grid.clone(), acc.iter().map(|a| (a / n) as f32).collect())
}

fn rigid(rot_deg: [f64; 3], t: [f64; 3], c: Vector3<f64>) -> Matrix4<f64> {
    let r = Rotation3::from_euler_angles(
        rot_deg[0].to_radians(),
        rot_deg[1].to_radians(),
        rot_deg[2].to_radians(),
    );
    nifreeze::registration::transform::about_centre(r.matrix(), &Vector3::from(t), &c)
}

/// Mean displacement (mm) between two transforms over the mask voxels.
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

fn mask_centre(m: &Mask) -> Vector3<f64> {
    let idx = m.indices();
    idx.iter()
        .map(|&i| {
            let [x, y, z] = m.grid.ijk(i);
            m.grid.world([x as f64, y as f64, z as f64])
        })
        .sum::<Vector3<f64>>()
        / idx.len() as f64
}

#[test]
fn explore_clean() {
    let b = bvals();
    let (s, m) = load("clean.nii.gz");
    let fixed = median_b0(&s, &b);
    let c = mask_centre(&m);
    for (rot, tr) in [
        ([0.0; 3], [0.0; 3]),
        ([2.0, -1.0, 1.5], [1.5, -1.0, 1.2]),
        ([5.0, -3.0, 4.0], [4.0, -3.0, 2.5]),
    ] {
        let truth = rigid(rot, tr, c);
        // moving_k(y) = clean_k(truth⁻¹ y): the DW head moved by truth
        let inv = truth.try_inverse().unwrap();
        let moving = mean_dw(&s, &b, (50.0, 1500.0), |_| Some(inv));
        let t0 = std::time::Instant::now();
        let r = register_mi(&fixed, &moving, Some(&m), &Matrix4::identity(), &MiConfig::default()).unwrap();
        let e = mean_error(&r.matrix, &truth, &m);
        eprintln!("{rot:?} {tr:?}: err {e:.4} mm, it {}, mi {:.4}, {:?}", r.iterations, r.metric, t0.elapsed());
    }
}

#[test]
fn explore_grad() {
    let b = bvals();
    let (s, m) = load("clean.nii.gz");
    let fixed = median_b0(&s, &b);
    let moving = mean_dw(&s, &b, (50.0, 1500.0), |_| None);
    for h in [1e-2, 1e-3] {
        let (mi, g, fd) = nifreeze::registration::mutual_information::debug_eval(&fixed, &moving, &m, &Matrix4::identity(), &MiConfig::default(), h);
        eprintln!("mi {mi} g {g:?}\n fd {fd:?}");
    }
    let c = mask_centre(&m);
    let t = rigid([1.0, 0.5, 0.0], [0.5, 0.3, -0.2], c);
    let (mi, g, fd) = nifreeze::registration::mutual_information::debug_eval(&fixed, &moving, &m, &t, &MiConfig::default(), 1e-3);
    eprintln!("mi {mi} g {g:?}\n fd {fd:?}");
}

#[test]
fn explore_cfg() {
    let b = bvals();
    let (s, m) = load("clean.nii.gz");
    let fixed = median_b0(&s, &b);
    let c = mask_centre(&m);
    let truth = rigid([2.0, -1.0, 1.5], [1.5, -1.0, 1.2], c);
    let inv = truth.try_inverse().unwrap();
    let moving0 = mean_dw(&s, &b, (50.0, 1500.0), |_| None);
    let moving = mean_dw(&s, &b, (50.0, 1500.0), |_| Some(inv));
    let movall = mean_dw(&s, &b, (50.0, 3000.0), |_| Some(inv));
    for bins in [32, 48, 64] {
        for dil in [0, 2, 4] {
            for fs in [0.5, 0.75, 1.0] {
                let pct = fs;
                let mut cfg = MiConfig { bins, mask_dilation: dil, ..MiConfig::default() };
                cfg.levels.last_mut().unwrap().sigma = fs;
                let r0 = register_mi(&fixed, &moving0, Some(&m), &Matrix4::identity(), &cfg).unwrap();
                let r = register_mi(&fixed, &moving, Some(&m), &Matrix4::identity(), &cfg).unwrap();
                let ra = register_mi(&fixed, &movall, Some(&m), &Matrix4::identity(), &cfg).unwrap();
                eprintln!("bins {bins} dil {dil} fs {pct:?}: id {:.4} b1000 {:.4} all {:.4}  it {} {} {}",
                    mean_error(&r0.matrix, &Matrix4::identity(), &m), mean_error(&r.matrix, &truth, &m), mean_error(&ra.matrix, &truth, &m), r0.iterations, r.iterations, ra.iterations);
            }
        }
    }
}

#[test]
fn explore_bias() {
    let b = bvals();
    let (s, m) = load("clean.nii.gz");
    let fixed = median_b0(&s, &b);
    let c = mask_centre(&m);
    for (lo, hi) in [(50.0, 1500.0), (1500.0, 3000.0), (50.0, 3000.0)] {
        let moving0 = mean_dw(&s, &b, (lo, hi), |_| None);
        for fs in [0.0, 1.0] {
            for bins in [32, 64] {
                let mut cfg = MiConfig { bins, ..MiConfig::default() };
                cfg.levels.last_mut().unwrap().sigma = fs;
                let r = register_mi(&fixed, &moving0, Some(&m), &Matrix4::identity(), &cfg).unwrap();
                let t = r.matrix;
                let r3 = t.fixed_view::<3, 3>(0, 0);
                let tc = r3 * c + t.fixed_view::<3, 1>(0, 3) - c;
                let ang = Rotation3::from_matrix(&r3.into_owned()).euler_angles();
                eprintln!("b {lo}-{hi} fs {fs} bins {bins}: err {:.4} tc {:.3} {:.3} {:.3} rot(deg) {:.3} {:.3} {:.3} mi {:.4}",
                    mean_error(&t, &Matrix4::identity(), &m), tc.x, tc.y, tc.z, ang.0.to_degrees(), ang.1.to_degrees(), ang.2.to_degrees(), r.metric);
            }
        }
    }
}

/// Realign every volume of `s` with its true transform: out_k(x) = s_k(T_k x).
fn realigned(s: &Series, t: &[Matrix4<f64>]) -> Series {
    let vols: Vec<Vec<f32>> = (0..s.n_volumes)
        .map(|k| resample(&s.to_volume(k), &s.grid, &t[k], Interpolation::CubicBSpline).data)
        .collect();
    Series::from_volumes(s.grid.clone(), &vols)
}

#[test]
fn explore_noisy() {
    let b = bvals();
    let (s, m) = load("clean.nii.gz");
    let (n, _) = load("dwi.nii.gz");
    let n = realigned(&n, &truth());
    let c = mask_centre(&m);
    let fixed_c = median_b0(&s, &b);
    let fixed_n = median_b0(&n, &b);
    let cases = [([2.0, -1.0, 1.5], [1.5, -1.0, 1.2]), ([5.0, -3.0, 4.0], [4.0, -3.0, 2.5])];
    for bins in [32, 48, 64] {
        for dil in [0, 2] {
            let cfg = MiConfig { bins, mask_dilation: dil, ..MiConfig::default() };
            let mut line = format!("bins {bins} dil {dil}:");
            for (fixed, ser) in [(&fixed_c, &s), (&fixed_n, &n)] {
                for (rot, tr) in [([0.0; 3], [0.0; 3]), cases[0], cases[1]] {
                    let truth = rigid(rot, tr, c);
                    let inv = truth.try_inverse().unwrap();
                    let moving = mean_dw(ser, &b, (50.0, 3000.0), |_| Some(inv));
                    let r = register_mi(fixed, &moving, Some(&m), &Matrix4::identity(), &cfg).unwrap();
                    line += &format!(" {:.4}", mean_error(&r.matrix, &truth, &m));
                }
                line += " |";
            }
            eprintln!("{line}");
        }
    }
}
