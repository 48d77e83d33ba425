//! `nifreeze-rs predict` end to end on tests/data/lovo44: float32 output that matches DIPY,
//! one volume per --volume, clear exit-2 errors.

use std::path::{Path, PathBuf};
use std::process::Command;

fn data(name: &str) -> String {
    let p: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/lovo44")
        .join(name);
    p.to_str().unwrap().to_string()
}

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nifreeze-rs"))
        .arg("predict")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Shape, values in NIfTI order (x fastest), and whether the file is float32.
fn read(path: &str) -> (Vec<usize>, Vec<f64>, bool) {
    use ::nifti::{IntoNdArray, NiftiObject, ReaderOptions};
    let obj = ReaderOptions::new().read_file(path).unwrap();
    let is_f32 = obj.header().datatype == 16;
    let arr = obj.into_volume().into_ndarray::<f64>().unwrap();
    let s = arr.shape().to_vec();
    // Reversed axes + standard (C) iteration = Fortran order.
    let out: Vec<f64> = arr.reversed_axes().iter().copied().collect();
    (s, out, is_f32)
}

#[test]
fn predict_writes_dipy_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pred.nii.gz");
    let out = out.to_str().unwrap();
    let (dwi, mask) = (data("dwi.nii.gz"), data("brainmask.nii.gz"));
    // manifest: DW positions 0, 7, 20, 39 are 4-D volumes 1, 8, 22, 41
    for (model, method, gold) in [
        ("dki", "ols", "pred_dki_ols.nii.gz"),
        ("dti", "wls", "pred_dti_wls.nii.gz"),
    ] {
        let (code, err) = run(&[
            &dwi,
            "--model",
            model,
            "--fit-method",
            method,
            "--mask",
            &mask,
            "--volume",
            "1,8,22,41",
            "-j",
            "2",
            "--out",
            out,
        ]);
        assert_eq!(code, 0, "{err}");
        let (shape, got, is_f32) = read(out);
        assert_eq!(shape, vec![12, 10, 4, 4]);
        assert!(is_f32);
        let (_, want, _) = read(&data(gold));
        assert_eq!(got.len(), want.len());
        for (a, g) in got.iter().zip(&want) {
            if *g == 0.0 {
                assert_eq!(*a, 0.0);
            } else {
                assert!((a - g).abs() <= 1e-6 * g, "{model} {method}: {a} vs {g}");
            }
        }
    }
    // one volume -> a 3-D image
    let (code, err) = run(&[
        &dwi, "--model", "dti", "--mask", &mask, "--volume", "8", "--out", out,
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(read(out).0, vec![12, 10, 4]);
}

#[test]
fn predict_rejects_bad_volumes_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.nii.gz");
    let out = out.to_str().unwrap();
    let (dwi, mask) = (data("dwi.nii.gz"), data("brainmask.nii.gz"));
    let (code, err) = run(&[
        &dwi, "--model", "dti", "--mask", &mask, "--volume", "21", "--out", out,
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("b=0 volume"), "{err}");
    let (code, err) = run(&[
        &dwi, "--model", "dti", "--mask", &mask, "--volume", "43", "--out", out,
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("out of range"), "{err}");
    assert!(!Path::new(out).exists());
}
