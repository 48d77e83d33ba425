//! Outlier slices end to end: a simulated series with known dropouts (artefacts.json) is
//! estimated; outliers.tsv must list those dropout slices and nothing else, summary.json must
//! count them, and --repol must bring the corrected dropout slices closer to the truth.

use nifreeze::compare::{parse_dropouts, parse_outlier_slices, score_detection};
use nifreeze::io::nifti::read_series;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_nifreeze-rs");

fn run(args: &[&str]) -> (i32, String) {
    let o = Command::new(BIN).args(args).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn p(x: &Path) -> &str {
    x.to_str().unwrap()
}

#[test]
fn dropouts_are_found_listed_and_replaced() {
    let d = tempfile::tempdir().unwrap();
    let ph = d.path().join("ph");
    let (code, err) = run(&[
        "simulate",
        "--out",
        p(&ph),
        "--voxel-size",
        "5",
        "--shells",
        "1000:16,2000:16",
        "--b0",
        "3",
        "--seed",
        "11",
        "--dropout",
        "0.2",
        "--drift",
        "3",
        "--clean",
    ]);
    assert_eq!(code, 0, "{err}");
    let truth = parse_dropouts(
        &std::fs::read_to_string(ph.join("artefacts.json")).unwrap(),
        "artefacts",
    )
    .unwrap();
    assert!(truth.len() >= 6, "{truth:?}");
    let (dwi, brain) = (ph.join("dwi.nii.gz"), ph.join("brainmask.nii.gz"));
    let mut results = Vec::new();
    for repol in [false, true] {
        let est = d.path().join(if repol { "repol" } else { "plain" });
        let mut args = vec![
            "estimate",
            p(&dwi),
            "--mask",
            p(&brain),
            "--out",
            p(&est),
            "-j",
            "2",
            "--quiet",
        ];
        if repol {
            args.push("--repol");
        }
        let (code, err) = run(&args);
        assert_eq!(code, 0, "{err}");
        assert!(
            err.contains("nifreeze-rs: warning:") && err.contains("outlier slices"),
            "{err}"
        );
        let tsv = std::fs::read_to_string(est.join("outliers.tsv")).unwrap();
        assert!(tsv.starts_with("volume\tslice\tbvalue\tscore\treplaced\n"));
        let reported = parse_outlier_slices(&tsv, "outliers.tsv").unwrap();
        let s = score_detection(&truth, &reported, 0.4);
        assert!(s.recall >= 0.95 && s.precision >= 0.95, "{s:?}");
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(est.join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(summary["outliers"]["slices"], reported.len());
        assert_eq!(
            summary["outliers"]["replaced_in_corrected_series"],
            serde_json::json!(repol)
        );
        let replaced_col = tsv.lines().nth(1).unwrap().split('\t').nth(4).unwrap();
        assert_eq!(replaced_col, if repol { "1" } else { "0" });
        let (c, _) = read_series(&est.join("dwi_corrected.nii.gz")).unwrap();
        results.push(c);
    }
    // On the dropout slices, the --repol series is closer to the clean (unmoved, noise-free)
    // truth than the plain one.
    let (clean, _) = read_series(&ph.join("clean.nii.gz")).unwrap();
    let mask = nifreeze::io::nifti::read_mask(&ph.join("brainmask.nii.gz"), &clean.grid).unwrap();
    let [nx, ny, _] = clean.grid.dims;
    let err = |s: &nifreeze::image::Series| -> f64 {
        let mut e = 0.0;
        for &(v, sl, _) in &truth {
            for i in sl * nx * ny..(sl + 1) * nx * ny {
                if mask.data[i] {
                    e += (s.volume(v)[i] - clean.volume(v)[i]).abs() as f64;
                }
            }
        }
        e
    };
    let (plain, repol) = (err(&results[0]), err(&results[1]));
    assert!(repol < 0.5 * plain, "repol {repol} plain {plain}");
}

#[test]
fn clean_series_has_no_outliers() {
    let d = tempfile::tempdir().unwrap();
    let est = d.path().join("est");
    let (code, err) = run(&[
        "estimate",
        "data/sample/dwi.nii.gz",
        "--mask",
        "data/sample/brainmask.nii.gz",
        "--out",
        p(&est),
        "-j",
        "2",
        "--quiet",
        "--no-resample",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("outlier"), "{err}");
    let tsv = std::fs::read_to_string(est.join("outliers.tsv")).unwrap();
    assert_eq!(tsv, "volume\tslice\tbvalue\tscore\treplaced\n");
}
