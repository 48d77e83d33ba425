//! The bad-input corpus (tests/data/bad, built by make_corpus.py): every broken input must end
//! with exit code 2 and one readable line on stderr that names the problem — never a panic.

use std::path::PathBuf;
use std::process::Command;

fn corpus(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/bad")
        .join(name)
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nifreeze-rs"))
        .args(args)
        .output()
        .expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// (file, words the message must contain)
const CASES: &[(&str, &[&str])] = &[
    (
        "truncated_gzip.nii.gz",
        &["truncated_gzip.nii.gz", "gzip", "truncated"],
    ),
    ("mismatched_counts.nii", &["7 b-values", "8 volumes"]),
    ("three_d.nii", &["3-D", "4-D"]),
    ("nifti2.nii", &["NIfTI-2"]),
    ("empty.nii", &["empty"]),
    ("plain_text.nii", &["not a NIfTI-1 file"]),
    (
        "missing_sidecar.nii",
        &["no gradient table", "missing_sidecar.bval", "--bval"],
    ),
    ("nan_bvalue.nii", &["non-finite", "nan_bvalue.bval"]),
    ("truncated_data.nii", &["truncated", "bytes"]),
    ("zero_bvec.nii", &["zero gradient vector"]),
    ("too_few_directions.nii", &["at least 6"]),
    ("no_b0.nii", &["no b=0", "--ignore-b0"]),
    ("bad_bvec_shape.nii", &["3×8"]),
    ("complex.nii", &["unsupported datatype", "complex"]),
    ("long_bvec.nii", &["unit length"]),
];

#[test]
fn every_bad_input_exits_2_with_one_useful_line() {
    let out = tempfile::tempdir().unwrap();
    for (file, words) in CASES {
        let path = corpus(file);
        let outdir = out.path().join(file);
        let (code, _, err) = run(&[
            "estimate",
            path.to_str().unwrap(),
            "--out",
            outdir.to_str().unwrap(),
        ]);
        assert_eq!(code, 2, "{file}: exit code {code}, stderr: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.contains("warning:")).collect();
        assert_eq!(
            lines.len(),
            1,
            "{file}: expected one error line, got: {err}"
        );
        assert!(
            lines[0].starts_with("nifreeze-rs: error: "),
            "{file}: {err}"
        );
        for w in *words {
            assert!(
                lines[0].contains(w),
                "{file}: message lacks '{w}': {}",
                lines[0]
            );
        }
        assert!(
            !err.contains("panicked") && !err.contains("internal error"),
            "{file}: {err}"
        );
        // Nothing that looks like a finished result may be left behind.
        assert!(
            !outdir.join("motion.tsv").exists(),
            "{file}: left a motion.tsv"
        );
    }
}

#[test]
fn info_rejects_the_same_unreadable_files() {
    for file in [
        "truncated_gzip.nii.gz",
        "nifti2.nii",
        "empty.nii",
        "plain_text.nii",
        "truncated_data.nii",
    ] {
        let (code, _, err) = run(&["info", corpus(file).to_str().unwrap()]);
        assert_eq!(code, 2, "{file}: {err}");
        assert_eq!(err.lines().count(), 1, "{file}: {err}");
    }
}

#[test]
fn a_nan_scale_slope_means_no_scaling() {
    // NIfTI: a zero or non-finite scl_slope means slope 1, intercept 0 (nibabel writes NaN).
    let (code, out, err) = run(&["info", corpus("nan_slope.nii").to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["datatype"], "int16");
    let (s, _) = nifreeze::io::nifti::read_series(&corpus("nan_slope.nii")).unwrap();
    assert!(s.samples().all(|x| x.is_finite()));
    assert_eq!(s.get(0, 0), 100.0);
    assert_eq!(s.get(0, 5), 105.0);
}

#[test]
fn usage_errors_exit_2_and_help_documents_exit_codes() {
    let (code, _, err) = run(&["estimate"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(&["estimate", "x.nii", "--out", "o", "--model", "tensor"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("tensor"));
    let (code, out, _) = run(&["estimate", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("Exit codes"));
    let (code, _, err) = run(&["info", "/nonexistent/dwi.nii.gz"]);
    assert_eq!(code, 2);
    assert!(err.contains("no such file"), "{err}");
}
