//! `nifreeze-rs register` end to end on data/sample (the mini phantom).

mod common;

use nalgebra::Matrix4;
use nifreeze::io::nifti::{read_mask, read_volume};
use nifreeze::io::transforms::{read_ants_mat, read_itk, write_itk};
use std::path::PathBuf;
use std::process::Command;

fn truth(k: usize) -> Matrix4<f64> {
    common::read_truth(sample("truth.tsv"))[k]
}

/// Mean displacement over the sample's brain mask.
fn mean_error(a: &Matrix4<f64>, b: &Matrix4<f64>) -> f64 {
    let (v, _) = read_volume(&sample("brainmask.nii.gz")).unwrap();
    let m = read_mask(&sample("brainmask.nii.gz"), &v.grid).unwrap();
    common::mean_error(a, b, &m)
}

fn sample(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data/sample")
        .join(name)
}

fn run(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nifreeze-rs"))
        .arg("register")
        .args(args)
        .output()
        .unwrap()
}

/// `register --fixed FIXED --moving data/sample/dwi.nii.gz --volume K --mask (the sample's)
/// EXTRA… --out OUT`.
fn run_on_sample(
    fixed: &std::path::Path,
    k: usize,
    extra: &[&std::ffi::OsStr],
    out: &std::path::Path,
) -> std::process::Output {
    let (moving, mask, k) = (
        sample("dwi.nii.gz"),
        sample("brainmask.nii.gz"),
        k.to_string(),
    );
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "--fixed".as_ref(),
        fixed.as_os_str(),
        "--moving".as_ref(),
        moving.as_os_str(),
        "--volume".as_ref(),
        k.as_ref(),
        "--mask".as_ref(),
        mask.as_os_str(),
    ];
    args.extend_from_slice(extra);
    args.extend(["--out".as_ref(), out.as_os_str()]);
    run(&args)
}

#[test]
fn registers_one_volume_and_writes_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("xfm.tfm");
    let res = dir.path().join("res.nii.gz");
    let clean = sample("clean.nii.gz");
    let o = run_on_sample(
        &clean,
        5,
        &[
            "-j".as_ref(),
            "2".as_ref(),
            "--resampled".as_ref(),
            res.as_os_str(),
        ],
        &out,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Results go to files: stdout stays empty, the one-line summary is on stderr.
    assert!(o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("transform written to"));
    let t = read_itk(&out).unwrap();
    assert_eq!(t.len(), 1);
    let e = mean_error(&t[0], &truth(5));
    assert!(e < 0.06, "error {e} mm");
    let (r, _) = read_volume(&res).unwrap();
    assert_eq!(r.grid.dims, [45, 54, 45]);

    // the same with an ANTs .mat output, initialised from a multi-transform file (truth of
    // every volume): --volume picks transform 5, and the answer does not depend on -j
    // (-j 0: all cores)
    let all: Vec<Matrix4<f64>> = (0..27).map(truth).collect();
    let init = dir.path().join("init.tfm");
    write_itk(&init, &all).unwrap();
    let mat = dir.path().join("xfm.mat");
    let o = run_on_sample(
        &clean,
        5,
        &[
            "--init".as_ref(),
            init.as_os_str(),
            "-j".as_ref(),
            "0".as_ref(),
            "--quiet".as_ref(),
        ],
        &mat,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        o.stdout.is_empty() && o.stderr.is_empty(),
        "--quiet printed"
    );
    let m = read_ants_mat(&mat).unwrap();
    assert!(mean_error(&m, &truth(5)) < 0.06);
    assert!(
        mean_error(&m, &t[0]) < 0.005,
        "initialisation changed the optimum"
    );
}

#[test]
fn usage_errors_exit_with_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.tfm");
    // 4-D moving image without --volume
    let o = run(&[
        "--fixed".as_ref(),
        sample("clean.nii.gz").as_os_str(),
        "--moving".as_ref(),
        sample("dwi.nii.gz").as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--volume"));
    // volume out of range
    let o = run(&[
        "--fixed".as_ref(),
        sample("clean.nii.gz").as_os_str(),
        "--moving".as_ref(),
        sample("dwi.nii.gz").as_os_str(),
        "--volume".as_ref(),
        "27".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!out.exists());
}

/// `register --fixed F --moving dwi.nii.gz --volume K --mask … --metric M --transform T` into
/// `dir`; the mean error (mm) of the written transform against volume K's truth.
fn phantom_error(
    dir: &std::path::Path,
    fixed: &std::path::Path,
    k: usize,
    metric: &str,
    transform: &str,
) -> f64 {
    let out = dir.join(format!("{metric}-{transform}-{k}.tfm"));
    let o = run_on_sample(
        fixed,
        k,
        &[
            "--metric".as_ref(),
            metric.as_ref(),
            "--transform".as_ref(),
            transform.as_ref(),
            "--pe-dir".as_ref(),
            "j".as_ref(),
            "-j".as_ref(),
            "2".as_ref(),
        ],
        &out,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    mean_error(&read_itk(&out).unwrap()[0], &truth(k))
}

/// Every metric × transform combination through the command line, on acquired (moved, noisy)
/// volumes of the mini phantom against their clean, unmoved twins, scored against the
/// simulation's truth (rigid motion: the affine and eddy-current families must find it too,
/// with their extra parameters near zero). Each bound is about twice the measured error.
#[test]
fn every_metric_and_transform_recovers_the_phantom_motion() {
    let dir = tempfile::tempdir().unwrap();
    // (metric, transform, volume, bound in mm); measured: ls 0.033 / 0.048 / 0.037 mm (rigid /
    // affine / eddy) on volume 4 (b≈2000), 0.011 / 0.052 / 0.030 on volume 10 (b≈1000); mi
    // 0.101 / 0.103 / 0.104 and 0.068 / 0.081 / 0.080 (MI on one noisy volume is less precise
    // than least squares against the same contrast, which is why the estimate loop uses it
    // only across contrasts)
    let cases: &[(&str, &str, usize, f64)] = &[
        ("ls", "rigid", 4, 0.06),
        ("ls", "affine", 4, 0.1),
        ("ls", "eddy", 4, 0.08),
        ("mi", "rigid", 4, 0.2),
        ("mi", "affine", 4, 0.2),
        ("mi", "eddy", 4, 0.2),
        ("ls", "rigid", 10, 0.03),
        ("ls", "affine", 10, 0.1),
        ("ls", "eddy", 10, 0.06),
        ("mi", "rigid", 10, 0.14),
        ("mi", "affine", 10, 0.16),
        ("mi", "eddy", 10, 0.16),
    ];
    for &(metric, transform, k, bound) in cases {
        let e = phantom_error(dir.path(), &sample("clean.nii.gz"), k, metric, transform);
        eprintln!("{metric} {transform} volume {k}: error {e:.4} mm");
        assert!(
            e <= bound,
            "{metric} {transform} volume {k}: error {e} mm (bound {bound})"
        );
    }
}

/// Across contrasts: the clean b=0 volume as the fixed image and an acquired b≈1000 / b≈2000
/// volume as moving. Mutual information recovers the motion; least squares, which assumes
/// one contrast up to scale and offset, does clearly worse on the same pair.
#[test]
fn mutual_information_registers_across_contrasts() {
    let dir = tempfile::tempdir().unwrap();
    let (clean, meta) = nifreeze::io::nifti::read_series(&sample("clean.nii.gz")).unwrap();
    let b0 = dir.path().join("b0.nii.gz");
    nifreeze::io::nifti::write_volume(&b0, &clean.to_volume(0), Some(&meta)).unwrap();
    for k in [3, 8] {
        let mut errs = Vec::new();
        for metric in ["mi", "ls"] {
            let e = phantom_error(dir.path(), &b0, k, metric, "rigid");
            eprintln!("b=0 to volume {k}, {metric}: error {e:.4} mm");
            errs.push(e);
        }
        // measured: MI 0.193 / 0.232 mm, least squares 0.650 / 3.09 mm (volumes 3 / 8)
        assert!(errs[0] <= 0.4, "volume {k}: MI error {} mm", errs[0]);
        assert!(
            errs[1] > 2.0 * errs[0],
            "volume {k}: least squares {} mm is not clearly worse than MI {} mm across contrasts",
            errs[1],
            errs[0]
        );
    }
}
