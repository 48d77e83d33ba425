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

#[test]
fn registers_one_volume_and_writes_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("xfm.tfm");
    let res = dir.path().join("res.nii.gz");
    let o = run(&[
        "--fixed".as_ref(),
        sample("clean.nii.gz").as_os_str(),
        "--moving".as_ref(),
        sample("dwi.nii.gz").as_os_str(),
        "--volume".as_ref(),
        "5".as_ref(),
        "--mask".as_ref(),
        sample("brainmask.nii.gz").as_os_str(),
        "-j".as_ref(),
        "2".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
        "--resampled".as_ref(),
        res.as_os_str(),
    ]);
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
    let o = run(&[
        "--fixed".as_ref(),
        sample("clean.nii.gz").as_os_str(),
        "--moving".as_ref(),
        sample("dwi.nii.gz").as_os_str(),
        "--volume".as_ref(),
        "5".as_ref(),
        "--mask".as_ref(),
        sample("brainmask.nii.gz").as_os_str(),
        "--init".as_ref(),
        init.as_os_str(),
        "-j".as_ref(),
        "0".as_ref(),
        "--quiet".as_ref(),
        "--out".as_ref(),
        mat.as_os_str(),
    ]);
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
