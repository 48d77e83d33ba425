//! `simulate` end to end: the files and formats of the shared phantoms, determinism across
//! thread counts, and the physical meaning of truth.tsv (moved_k(T_k x) = clean_k(x)) checked
//! on the written images with an independent trilinear sampler.

mod common;

use nalgebra::{Matrix4, Vector4};
use nifreeze::compare::parse_matrices;
use nifreeze::io::gradients;
use nifreeze::io::gradients::GradientArgs;
use nifreeze::io::nifti::{read_mask, read_series, DataType};
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_nifreeze-rs");

fn simulate(out: &Path, extra: &[&str], threads: &str) {
    let o = Command::new(BIN)
        .args(["simulate", "--out", out.to_str().unwrap()])
        .args(extra)
        .env("RAYON_NUM_THREADS", threads)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

const SMALL: [&str; 8] = [
    common::SMALL_PHANTOM[0],
    common::SMALL_PHANTOM[1],
    common::SMALL_PHANTOM[2],
    common::SMALL_PHANTOM[3],
    common::SMALL_PHANTOM[4],
    common::SMALL_PHANTOM[5],
    "--seed",
    "3",
];

#[test]
fn writes_the_phantom_layout_deterministically() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    simulate(&a, &SMALL, "1");
    simulate(&b, &SMALL, "2");
    for f in [
        "dwi.nii.gz",
        "dwi.bval",
        "dwi.bvec",
        "dwi.b",
        "brainmask.nii.gz",
        "truth.tsv",
        "phantom.json",
    ] {
        let x = std::fs::read(a.join(f)).unwrap();
        assert_eq!(
            x,
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs between 1 and 2 threads"
        );
    }
    let (s, meta) = read_series(&a.join("dwi.nii.gz")).unwrap();
    assert_eq!(meta.datatype, DataType::I16);
    assert_eq!(s.n_volumes, 14);
    assert!(s.samples().all(|v| v.fract() == 0.0 && v >= 0.0));
    let mask = read_mask(&a.join("brainmask.nii.gz"), &s.grid).unwrap();
    // A 5 mm brain of ~1.7-1.9 L: 11 000 - 16 000 voxels.
    assert!((11_000..16_000).contains(&mask.count()), "{}", mask.count());

    // truth.tsv: the shared phantoms' header, identity for volume 0, b-values match dwi.bval
    let truth = std::fs::read_to_string(a.join("truth.tsv")).unwrap();
    let shared_header = "index\tbvalue\ttx\tty\ttz\trx\try\trz\tm00\tm01\tm02\tm03\tm10\tm11\tm12\tm13\tm20\tm21\tm22\tm23\tm30\tm31\tm32\tm33";
    assert_eq!(truth.lines().next().unwrap(), shared_header);
    let t = parse_matrices(&truth, "truth").unwrap();
    assert_eq!(t.len(), 14);
    assert_eq!(t[0], Matrix4::identity());

    // FSL and MRtrix tables describe the same scanner-RAS gradients.
    let dwi = a.join("dwi.nii.gz");
    let fsl = gradients::load(&dwi, &GradientArgs::default(), &s.grid, 14).unwrap();
    let mr = GradientArgs {
        grad: Some(a.join("dwi.b")),
        ..GradientArgs::default()
    };
    let mr = gradients::load(&dwi, &mr, &s.grid, 14).unwrap();
    assert_eq!(fsl.table.bvals, mr.table.bvals);
    for (g, h) in fsl.table.bvecs.iter().zip(&mr.table.bvecs) {
        for c in 0..3 {
            assert!((g[c] - h[c]).abs() < 1e-6, "{g:?} vs {h:?}");
        }
    }
    let bcol: Vec<f64> = truth
        .lines()
        .skip(1)
        .map(|l| l.split('\t').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(bcol, fsl.table.bvals);

    let c = d.path().join("c");
    simulate(
        &c,
        &[&common::SMALL_PHANTOM[..], &["--seed", "4"]].concat(),
        "2",
    );
    assert_ne!(
        std::fs::read(a.join("truth.tsv")).unwrap(),
        std::fs::read(c.join("truth.tsv")).unwrap()
    );
}

/// Trilinear sample of volume `v` at world point `p` (None outside).
fn sample(data: &[f32], dims: [usize; 3], inv: &Matrix4<f64>, p: &Vector4<f64>) -> Option<f64> {
    let u = inv * p;
    let f = [u.x.floor(), u.y.floor(), u.z.floor()];
    if f.iter()
        .zip(dims)
        .any(|(&x, n)| x < 0.0 || x + 1.0 >= n as f64)
    {
        return None;
    }
    let (i, j, k) = (f[0] as usize, f[1] as usize, f[2] as usize);
    let t = [u.x - f[0], u.y - f[1], u.z - f[2]];
    let mut s = 0.0;
    for c in 0..2 {
        for b in 0..2 {
            for a in 0..2 {
                let w = (if a == 1 { t[0] } else { 1.0 - t[0] })
                    * (if b == 1 { t[1] } else { 1.0 - t[1] })
                    * (if c == 1 { t[2] } else { 1.0 - t[2] });
                s += w * data[(i + a) + dims[0] * ((j + b) + dims[1] * (k + c))] as f64;
            }
        }
    }
    Some(s)
}

/// Noise-free, large motion, oblique and x-flipped grid: for every b=0 volume, sampling the
/// moved image at T_k x reproduces the clean image at x far better than at x or T_k⁻¹ x.
#[test]
fn truth_maps_reference_points_to_moved_points() {
    let d = tempfile::tempdir().unwrap();
    let o = d.path().join("o");
    simulate(
        &o,
        &[
            "--voxel-size",
            "4",
            "--shells",
            "1000:3",
            "--b0",
            "8",
            "--snr",
            "0",
            "--max-rot",
            "8",
            "--max-trans",
            "6",
            "--oblique",
            "12",
            "--flip-x",
            "--clean",
            "--seed",
            "9",
        ],
        "2",
    );
    let (s, _) = read_series(&o.join("dwi.nii.gz")).unwrap();
    let (c, _) = read_series(&o.join("clean.nii.gz")).unwrap();
    let mask = read_mask(&o.join("brainmask.nii.gz"), &s.grid).unwrap();
    let t = parse_matrices(
        &std::fs::read_to_string(o.join("truth.tsv")).unwrap(),
        "truth",
    )
    .unwrap();
    let bvals: Vec<f64> = std::fs::read_to_string(o.join("dwi.bval"))
        .unwrap()
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let inv = s.grid.affine.try_inverse().unwrap();
    let rms = |k: usize, m: &Matrix4<f64>| -> f64 {
        let (mut e, mut n) = (0.0, 0.0);
        for idx in mask.indices().into_iter().step_by(3) {
            let [i, j, kk] = s.grid.ijk(idx);
            let x = s.grid.affine * Vector4::new(i as f64, j as f64, kk as f64, 1.0);
            if let Some(v) = sample(&s.volume(k), s.grid.dims, &inv, &(m * x)) {
                e += (v - c.volume(k)[idx] as f64).powi(2);
                n += 1.0;
            }
        }
        (e / n).sqrt()
    };
    // (motion size, error at T_k x, at x, at T_k⁻¹ x) per moved b=0 volume
    let mut rows = Vec::new();
    for k in 1..t.len() {
        if bvals[k] > 0.0 {
            continue;
        }
        let c = s.grid.center_world();
        let shift =
            (t[k] * Vector4::new(c.x, c.y, c.z, 1.0) - Vector4::new(c.x, c.y, c.z, 1.0)).norm();
        let row = (
            shift,
            rms(k, &t[k]),
            rms(k, &Matrix4::identity()),
            rms(k, &t[k].try_inverse().unwrap()),
        );
        eprintln!("volume {k}: {row:?}");
        rows.push(row);
    }
    // The truth always explains the moved image better than no motion or the inverse motion;
    // for the largest motion by a wide margin (what is left is 4 mm interpolation error).
    for r in &rows {
        assert!(r.1 < r.2 && r.1 < r.3, "{r:?}");
    }
    let big = rows
        .iter()
        .cloned()
        .fold((0.0, 0.0, 0.0, 0.0), |a, r| if r.0 > a.0 { r } else { a });
    assert!(
        big.0 > 2.0 && big.1 < 0.4 * big.2 && big.1 < 0.4 * big.3,
        "{big:?}"
    );
    let checked = rows.len();
    assert!(checked >= 2);
}

#[test]
fn bad_arguments_exit_2() {
    let d = tempfile::tempdir().unwrap();
    for bad in [
        vec!["--shells", "1000"],
        vec!["--voxel-size", "0.1"],
        vec!["--max-rot", "-1"],
        vec!["--snr", "-3"],
        vec!["--pe-dir", "x"],
        vec!["--pe-dir", "j+"],
        vec!["--dropout", "1.5"],
        vec!["--ec", "-1"],
        vec!["--drift", "90"],
    ] {
        let o = Command::new(BIN)
            .args(["simulate", "--out", d.path().join("x").to_str().unwrap()])
            .args(&bad)
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(2),
            "{bad:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// With artefacts, truth.tsv holds the full maps, truth_rigid.tsv and artefacts.json the head
/// motion alone (the bench_artefacts schema), and the full map differs from the rigid one only
/// by a displacement along the phase-encode axis.
#[test]
fn artefacts_are_listed_with_the_bench_artefacts_schema() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a");
    let mut args: Vec<&str> = SMALL.to_vec();
    args.extend([
        "--ec",
        "1",
        "--pe-dir",
        "i-",
        "--dropout",
        "0.25",
        "--drift",
        "5",
    ]);
    simulate(&a, &args, "2");
    let full = parse_matrices(&std::fs::read_to_string(a.join("truth.tsv")).unwrap(), "t").unwrap();
    let rigid = parse_matrices(
        &std::fs::read_to_string(a.join("truth_rigid.tsv")).unwrap(),
        "r",
    )
    .unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("artefacts.json")).unwrap()).unwrap();
    for key in ["pe_axis_world", "dropouts", "drift", "rigid_truth", "note"] {
        assert!(json.get(key).is_some(), "artefacts.json lacks {key}");
    }
    let pe: Vec<f64> = serde_json::from_value(json["pe_axis_world"].clone()).unwrap();
    assert_eq!(pe, vec![-1.0, 0.0, 0.0]);
    let bvals = std::fs::read_to_string(a.join("dwi.bval")).unwrap();
    let b: Vec<f64> = bvals
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let rt: Vec<Vec<f64>> = serde_json::from_value(json["rigid_truth"].clone()).unwrap();
    let mut distorted = 0;
    for k in 0..full.len() {
        for e in 0..16 {
            assert!((rt[k][e] - rigid[k][(e / 4, e % 4)]).abs() < 1e-9);
        }
        let d = full[k] * rigid[k].try_inverse().unwrap() - Matrix4::identity();
        // rows y, z, w untouched: the distortion moves along x only
        assert!(d.fixed_view::<3, 4>(1, 0).abs().max() < 1e-9, "{k}: {d}");
        if b[k] > 50.0 {
            assert!(
                d.row(0).abs().max() > 1e-4,
                "volume {k} carries no eddy currents"
            );
            distorted += 1;
        } else {
            assert!(d.abs().max() < 1e-12);
        }
    }
    assert_eq!(distorted, 12);
    let drops = json["dropouts"].as_object().unwrap();
    assert_eq!(drops.len(), 3); // round(0.25 * 12)
    for (v, slices) in drops {
        let v: usize = v.parse().unwrap();
        assert!(b[v] > 50.0, "dropout in a b=0 volume {v}");
        for s in slices.as_array().unwrap() {
            let f = s[1].as_f64().unwrap();
            assert!((0.05..=0.40).contains(&f));
        }
    }
    let drift: Vec<f64> = serde_json::from_value(json["drift"].clone()).unwrap();
    assert_eq!(drift.len(), full.len());
    assert!((drift[drift.len() - 1] - 0.95).abs() < 1e-12);
}
