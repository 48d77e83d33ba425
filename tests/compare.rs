//! `compare` agrees with the independent Python scorer (../shared/tools/score.py), whose
//! output for two committed truth/estimate/mask triples is stored in tests/data/compare
//! (provenance in its README), and its exit codes make it a CI regression check.

use nifreeze::compare::{parse_matrices, sample_points, score};
use nifreeze::image::Mask;
use nifreeze::io::nifti::read_volume;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_nifreeze-rs");

fn case(name: &str) -> (String, String, String, Value) {
    let d = "tests/data/compare";
    let (truth, mask) = if name == "mini" {
        (
            "data/sample/truth.tsv".to_string(),
            "data/sample/brainmask.nii.gz".to_string(),
        )
    } else {
        (
            format!("{d}/oblique/truth.tsv"),
            format!("{d}/oblique/brainmask.nii.gz"),
        )
    };
    let est = format!("{d}/{name}_estimate.tsv");
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{d}/{name}_score_py.json")).unwrap(),
    )
    .unwrap();
    (truth, est, mask, reference)
}

/// `compare --truth T --estimate E --mask M EXTRA…`: (exit code, stdout, stderr).
fn compare_with(truth: &str, estimate: &str, mask: &str, extra: &[&str]) -> (i32, String, String) {
    let base = [
        "compare",
        "--truth",
        truth,
        "--estimate",
        estimate,
        "--mask",
        mask,
    ];
    run(&[&base[..], extra].concat())
}

fn check_against_score_py(name: &str) {
    let (truth, est, mask, r) = case(name);
    let t = parse_matrices(&std::fs::read_to_string(&truth).unwrap(), &truth).unwrap();
    let e = parse_matrices(&std::fs::read_to_string(&est).unwrap(), &est).unwrap();
    let (v, _) = read_volume(Path::new(&mask)).unwrap();
    let m = Mask {
        data: v.data.iter().map(|&x| x > 0.0).collect(),
        grid: v.grid,
    };
    let s = score(&t, &e, &sample_points(&m)).unwrap();
    let close = |a: f64, b: &Value, tol: f64, what: &str| {
        let b = b.as_f64().unwrap();
        assert!((a - b).abs() <= tol, "{name} {what}: ours {a} score.py {b}");
    };
    close(
        s.true_motion_mean_mm,
        &r["true_motion_mean_mm"],
        1e-9,
        "true motion",
    );
    close(
        s.aligned_median_mm,
        &r["aligned_mean_mm"]["median"],
        1e-9,
        "median",
    );
    close(s.aligned_p95_mm, &r["aligned_mean_mm"]["p95"], 1e-9, "p95");
    close(
        s.aligned_worst_volume_mm,
        &r["aligned_mean_mm"]["max"],
        1e-9,
        "worst volume",
    );
    close(s.aligned_max_mm, &r["aligned_max_mm"], 1e-9, "worst voxel");
    close(
        s.raw_median_mm,
        &r["raw_mean_mm"]["median"],
        1e-9,
        "raw median",
    );
    close(s.raw_max_mm, &r["raw_mean_mm"]["max"], 1e-9, "raw max");
    close(
        s.global_offset_mm,
        &r["global_offset_mm"],
        1e-9,
        "global offset",
    );
    let pv = r["per_volume_aligned_mean_mm"].as_array().unwrap();
    assert_eq!(pv.len(), s.volumes);
    for (k, (a, b)) in s.per_volume_aligned_mean_mm.iter().zip(pv).enumerate() {
        // score.py rounds this list to 4 decimals
        close(*a, b, 5.1e-5, &format!("volume {k}"));
    }
}

#[test]
fn agrees_with_score_py_on_mini() {
    check_against_score_py("mini");
}

#[test]
fn agrees_with_score_py_on_oblique_flipped_grid() {
    check_against_score_py("oblique");
}

fn run(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(BIN).args(args).output().unwrap();
    (
        o.status.code().unwrap(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn thresholds_set_the_exit_code() {
    let (truth, est, mask, r) = case("mini");
    let median = r["aligned_mean_mm"]["median"].as_f64().unwrap();
    let worst = r["aligned_mean_mm"]["max"].as_f64().unwrap();
    let base = [
        "compare",
        "--truth",
        &truth,
        "--estimate",
        &est,
        "--mask",
        &mask,
    ];

    let (code, out, _) = run(&base);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().filter(|l| !l.starts_with('#')).count(),
        1 + 27,
        "{out}"
    );

    let hi_med = format!("{}", median + 0.01);
    let hi_worst = format!("{}", worst + 0.01);
    let (code, _, err) = run(&[
        &base[..],
        &["--max-median-mm", &hi_med, "--max-worst-mm", &hi_worst],
    ]
    .concat());
    assert_eq!(code, 0, "{err}");

    let lo_med = format!("{}", median - 0.01);
    let (code, _, err) = run(&[&base[..], &["--max-median-mm", &lo_med]].concat());
    assert_eq!(code, 1);
    assert!(err.contains("median") && err.contains("exceeds"), "{err}");

    let lo_worst = format!("{}", worst - 0.01);
    let (code, out, err) = run(&[&base[..], &["--max-worst-mm", &lo_worst, "--json"]].concat());
    assert_eq!(code, 1);
    assert!(err.contains("worst"), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["pass"], Value::Bool(false));

    // truth against itself: zero error
    let (code, out, _) = compare_with(&truth, &truth, &mask, &["--json", "--max-worst-mm", "1e-9"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn bad_inputs_exit_2() {
    let (truth, _, mask, _) = case("mini");
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.tsv");
    let text = std::fs::read_to_string(&truth).unwrap();
    let lines: Vec<&str> = text.lines().take(5).collect();
    std::fs::write(&short, lines.join("\n")).unwrap();
    let (code, _, err) = compare_with(&truth, short.to_str().unwrap(), &mask, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("4 transforms") && err.contains("27"), "{err}");
    let nocol = dir.path().join("nocol.tsv");
    std::fs::write(&nocol, "a\tb\n1\t2\n").unwrap();
    let (code, _, err) = compare_with(&truth, nocol.to_str().unwrap(), &mask, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("m00"), "{err}");
    let (code, _, _) = compare_with("/nonexistent.tsv", &truth, &mask, &[]);
    assert_eq!(code, 2);
}

/// Given the artefact list and an outlier list, compare reports dropout detection and fails
/// (exit 1) below --min-recall.
#[test]
fn dropout_detection_is_reported_and_thresholded() {
    let (truth, est, mask, _) = case("mini");
    let d = tempfile::tempdir().unwrap();
    let art = d.path().join("artefacts.json");
    let out = d.path().join("outliers.tsv");
    std::fs::write(
        &art,
        r#"{"dropouts": {"4": [[10, 0.2], [12, 0.35]], "9": [[20, 0.5]]}}"#,
    )
    .unwrap();
    std::fs::write(
        &out,
        "volume\tslice\tbvalue\tscore\treplaced\n4\t10\t1000\t-9.1\t0\n9\t20\t2000\t-5.0\t0\n6\t3\t1000\t-4.2\t0\n",
    )
    .unwrap();
    let base = [
        "compare",
        "--truth",
        &truth,
        "--estimate",
        &est,
        "--mask",
        &mask,
        "--artefacts",
        art.to_str().unwrap(),
        "--outliers",
        out.to_str().unwrap(),
    ];
    let (code, stdout, err) = run(&base);
    assert_eq!(code, 0, "{err}");
    // recall: 1 of the 2 slices at <= 40 %; precision: 2 of 3 reported are dropouts
    assert!(stdout.contains("recall 0.500 (1 of 2"), "{stdout}");
    assert!(stdout.contains("precision 0.667 (2 of 3"), "{stdout}");
    assert!(stdout.contains("missed: volume 4 slice 12"), "{stdout}");
    let mut json_args = base.to_vec();
    json_args.push("--json");
    let (_, js, _) = run(&json_args);
    let v: Value = serde_json::from_str(&js).unwrap();
    assert_eq!(v["dropout_detection"]["found"], 1);
    let mut fail = base.to_vec();
    fail.extend(["--min-recall", "0.95"]);
    let (code, _, err) = run(&fail);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("recall 0.500 is below --min-recall 0.95"),
        "{err}"
    );
    let mut bad = base.to_vec();
    bad.extend(["--min-precision", "2"]);
    assert_eq!(run(&bad).0, 2);
}
