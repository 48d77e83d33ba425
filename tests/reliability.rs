//! Issue 9, reliability: no panic, no abort, no signal death, no exit 0 with a wrong answer —
//! on hostile inputs and in hostile environments (closed pipes, full disks, file-size and
//! memory limits). Each test names the family it guards. Inputs are the bad-input corpus
//! (tests/data/bad, built by make_corpus.py) or the bundled sample, changed in memory.

use nalgebra::Matrix4;
use nifreeze::image::{Mask, Series};
use nifreeze::io::nifti::{read_mask, read_series, write_mask, write_series, write_volume};
use nifreeze::registration::{register, RegistrationConfig};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_nifreeze-rs");

fn corpus(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/bad")
        .join(name)
        .display()
        .to_string()
}

fn sample(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data/sample")
        .join(name)
        .display()
        .to_string()
}

fn output(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run(args: &[&str]) -> (i32, String, String) {
    output(Command::new(BIN).args(args))
}

/// The run ended with exactly one `nifreeze-rs: error:` line (warnings aside) holding `words`.
fn one_error_line(err: &str, words: &[&str]) {
    let lines: Vec<&str> = err.lines().filter(|l| !l.contains("warning:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(lines[0].starts_with("nifreeze-rs: error: "), "{err}");
    for w in words {
        assert!(lines[0].contains(w), "message lacks '{w}': {}", lines[0]);
    }
}

fn sample_series() -> Series {
    read_series(Path::new(&sample("dwi.nii.gz"))).unwrap().0
}

/// The sample series with `edit` applied, written with its sidecars into `dir`.
fn sample_with(dir: &Path, name: &str, edit: impl FnOnce(&mut Series)) -> String {
    let mut s = sample_series();
    edit(&mut s);
    let p = dir.join(format!("{name}.nii.gz"));
    write_series(&p, &s, None).unwrap();
    for ext in ["bval", "bvec"] {
        std::fs::copy(
            sample(&format!("dwi.{ext}")),
            dir.join(format!("{name}.{ext}")),
        )
        .unwrap();
    }
    p.display().to_string()
}

// ---- family 1: panics and aborts ----

#[test]
fn mutual_information_survives_non_finite_voxels() {
    // The NaN voxel panicked with "range start index … mutual_information.rs" after a whole run.
    let s = sample_series();
    let m = read_mask(Path::new(&sample("brainmask.nii.gz")), &s.grid).unwrap();
    let clean = s.to_volume(0);
    let mut bad = clean.clone();
    let centre = bad.grid.index(22, 27, 22);
    bad.data[centre] = f32::NAN;
    bad.data[centre + 1] = f32::INFINITY;
    let reference = register(
        &clean,
        &clean,
        Some(&m),
        &Matrix4::identity(),
        &RegistrationConfig::mutual_information(),
    )
    .unwrap();
    for (f, mv) in [(&bad, &clean), (&clean, &bad)] {
        let r = register(
            f,
            mv,
            Some(&m),
            &Matrix4::identity(),
            &RegistrationConfig::mutual_information(),
        )
        .unwrap();
        assert!(r.matrix.iter().all(|v| v.is_finite()));
        // two voxels of 100 000 barely move the result (identity registration of the same image)
        let d = (r.matrix - reference.matrix).abs().max();
        assert!(d < 0.05, "one NaN voxel moved the result by {d}");
    }
}

#[test]
fn estimate_cleans_a_nan_voxel_with_one_warning() {
    let dir = tempfile::tempdir().unwrap();
    let dwi = sample_with(dir.path(), "nan", |s| s.volume_mut(5)[0] = f32::NAN);
    let out = dir.path().join("out");
    let (code, _, err) = run(&[
        "estimate",
        &dwi,
        "--model",
        "b0",
        "--no-resample",
        "-j",
        "2",
        "-q",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("nifreeze-rs: warning: ")
            && err.contains("1 voxel is NaN or infinite (volume 5)"),
        "{err}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let w = summary["warnings"].as_array().unwrap();
    assert!(
        w.iter()
            .any(|w| w.as_str().unwrap().contains("NaN or infinite")),
        "{w:?}"
    );
}

#[test]
fn crafted_ants_mat_files_are_refused_not_panicked_on() {
    let fixed = corpus("zero_b0_volume.nii"); // any readable 3-D/4-D image; --volume picks one
    let dir = tempfile::tempdir().unwrap();
    for file in ["overflow.mat", "negative_rows.mat"] {
        let out = dir.path().join("x.tfm");
        let (code, _, err) = run(&[
            "register",
            "--fixed",
            &fixed,
            "--moving",
            &fixed,
            "--volume",
            "1",
            "--init",
            &corpus(file),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(code, 2, "{file}: {err}");
        one_error_line(&err, &[file, "MATLAB v4"]);
    }
}

#[test]
fn a_closed_pipe_ends_the_report_quietly() {
    // `info … | head -0`: the reader is gone before the report is written.
    let mut child = Command::new(BIN)
        .args(["info", &sample("dwi.nii.gz")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{:?}", out);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[cfg(target_os = "linux")]
#[test]
fn a_full_stdout_is_one_error_line_and_a_full_stderr_loses_nothing() {
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let (code, _, err) = output(
        Command::new(BIN)
            .args(["info", &sample("dwi.nii.gz")])
            .stdout(full()),
    );
    assert_eq!(code, 1, "{err}");
    one_error_line(&err, &["standard output", "No space left"]);

    // warnings cannot be written, the report still is and the run succeeds
    let (code, out, _) = output(
        Command::new(BIN)
            .args(["info", &corpus("nan_bvec_b0.nii")])
            .stderr(full()),
    );
    assert_eq!(code, 0);
    assert!(out.contains("dimensions:  4 x 4 x 3 x 8"), "{out}");
}

#[cfg(target_os = "linux")]
#[test]
fn a_closed_stdout_is_said_not_silent() {
    // `>&-`: the report cannot go anywhere; a warning says so, the exit code stays the command's
    let (code, _, err) = output(
        Command::new("sh")
            .arg("-c")
            .arg("exec \"$0\" \"$@\" >&-")
            .arg(BIN)
            .args(["info", &sample("dwi.nii.gz")]),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.starts_with("nifreeze-rs: warning: standard output is closed")
            && err.lines().count() == 1,
        "{err}"
    );
    // a redirect to /dev/null is a choice, not an accident: no warning
    let (code, _, err) = output(
        Command::new(BIN)
            .args(["info", &sample("dwi.nii.gz")])
            .stdout(Stdio::null()),
    );
    assert_eq!((code, err.as_str()), (0, ""));
}

#[cfg(unix)]
fn limited(limit: &str, args: &[&str]) -> (i32, String, String) {
    let script = format!("ulimit {limit} && exec \"$0\" \"$@\"");
    output(Command::new("sh").arg("-c").arg(script).arg(BIN).args(args))
}

#[cfg(unix)]
#[test]
fn a_file_size_limit_is_a_one_line_error_not_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.tfm");
    let res = dir.path().join("res.nii.gz");
    // 1 block: the transform fits, the resampled image does not (SIGXFSZ killed the run)
    let (code, _, err) = limited(
        "-f 1",
        &[
            "register",
            "--fixed",
            &sample("dwi.nii.gz"),
            "--moving",
            &sample("dwi.nii.gz"),
            "--volume",
            "0",
            "--out",
            out.to_str().unwrap(),
            "--resampled",
            res.to_str().unwrap(),
            "-q",
        ],
    );
    assert_eq!(code, 1, "{err}");
    one_error_line(&err, &["res.nii.gz", "too large"]);
    assert!(!res.exists(), "a half-written output under its final name");
}

#[cfg(target_os = "linux")]
#[test]
fn a_memory_limit_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    // 150 MB of address space: too little for the sample (measured: it needs ~300 MB at -j 2)
    let (code, _, err) = limited(
        "-v 150000",
        &[
            "estimate",
            &sample("dwi.nii.gz"),
            "-j",
            "2",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1, "{err}");
    one_error_line(&err, &["not enough memory", "ulimit -v"]);
    assert!(!out.join("motion.tsv").exists());
}

/// `--max-memory` below the run's estimate is refused before any work, with both figures
/// (exit 1: the input is fine); a size that does not parse is a usage error (exit 2).
#[test]
fn max_memory_below_the_estimate_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    let run = |size: &str| {
        output(Command::new(BIN).args([
            "estimate",
            &sample("dwi.nii.gz"),
            "--max-memory",
            size,
            "--out",
            out.to_str().unwrap(),
        ]))
    };
    let (code, _, err) = run("20M");
    assert_eq!(code, 1, "{err}");
    // the sample is 12 MB as float32: its estimate is well above 20 MiB (about 120 MB)
    one_error_line(&err, &["not enough memory", "--max-memory allows 21 MB"]);
    assert!(!out.join("motion.tsv").exists());
    let (code, _, err) = run("lots");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a memory size"), "{err}");
    // (the parser's units: src/cli/tests.rs)
}

/// A small file whose header claims terabytes is bad input (exit 2, "truncated" / "header"),
/// not a lack of memory (exit 1): uncompressed by its length, gzip by deflate's ~1032:1 bound,
/// both found from the header alone, before the memory estimate.
#[test]
fn a_header_claiming_terabytes_is_bad_input_not_a_memory_failure() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let raw = std::fs::read(sample("dwi.nii.gz")).unwrap();
    let mut header = Vec::new();
    flate2::read::GzDecoder::new(&raw[..])
        .take(352)
        .read_to_end(&mut header)
        .unwrap();
    // dim = 4, 30000 × 30000 × 30000 × 27: about 1.5e15 voxels
    for (i, v) in [4i16, 30000, 30000, 30000, 27, 1, 1, 1].iter().enumerate() {
        header[40 + 2 * i..42 + 2 * i].copy_from_slice(&v.to_le_bytes());
    }
    header.extend_from_slice(&[0u8; 64]);
    let plain = dir.path().join("huge.nii");
    std::fs::write(&plain, &header).unwrap();
    let gz = dir.path().join("huge.nii.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&header).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    for f in [&plain, &gz] {
        let out = dir.path().join("o");
        let (code, _, err) = run(&[
            "estimate",
            f.to_str().unwrap(),
            "--bval",
            &sample("dwi.bval"),
            "--bvec",
            &sample("dwi.bvec"),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(code, 2, "{}: {err}", f.display());
        one_error_line(&err, &["huge.nii"]);
        assert!(err.contains("truncated"), "{err}");
        assert!(!err.contains("memory"), "{err}");
    }
}

// ---- family 2: exit 0 with a wrong answer ----

#[test]
fn compare_fails_closed_on_non_finite_scores() {
    let dir = tempfile::tempdir().unwrap();
    let truth = std::fs::read_to_string(sample("truth.tsv")).unwrap();
    let mut lines: Vec<String> = truth.lines().map(String::from).collect();
    let head: Vec<&str> = lines[0].split('\t').collect();
    let m03 = head.iter().position(|h| *h == "m03").unwrap();
    let mut row: Vec<String> = lines[3].split('\t').map(String::from).collect();
    row[m03] = "1e300".into();
    lines[3] = row.join("\t");
    let est = dir.path().join("est.tsv");
    std::fs::write(&est, lines.join("\n") + "\n").unwrap();
    let (t, m) = (sample("truth.tsv"), sample("brainmask.nii.gz"));
    for thresholds in [
        &["--max-median-mm", "0.5", "--max-worst-mm", "1"][..],
        &[][..],
    ] {
        let mut args = vec![
            "compare",
            "--truth",
            t.as_str(),
            "--estimate",
            est.to_str().unwrap(),
            "--mask",
            m.as_str(),
        ];
        args.extend_from_slice(thresholds);
        let (code, _, err) = run(&args);
        assert_eq!(code, 1, "{err}");
        one_error_line(&err, &["FAIL", "not finite"]);
        assert!(!err.contains("PASS"), "{err}");
    }
}

#[test]
fn a_mask_in_the_air_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample_series();
    let [nx, ny, nz] = s.grid.dims;
    let mut data = vec![false; s.grid.len()];
    for k in 0..6 {
        for j in 0..6 {
            for i in 0..6 {
                data[s.grid.index(i, j, k)] = true;
                data[s.grid.index(nx - 1 - i, ny - 1 - j, nz - 1 - k)] = true;
            }
        }
    }
    let mask = Mask {
        grid: s.grid.clone(),
        data,
    };
    let mp = dir.path().join("air.nii.gz");
    write_mask(&mp, &mask, None).unwrap();
    let out = dir.path().join("o");
    let (code, _, err) = run(&[
        "estimate",
        &sample("dwi.nii.gz"),
        "--mask",
        mp.to_str().unwrap(),
        "-q",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    one_error_line(&err, &["air.nii.gz", "covers no signal"]);
}

#[test]
fn register_refuses_images_that_do_not_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let s = sample_series();
    let v = s.to_volume(0);
    let mut far = v.clone();
    far.grid.affine[(0, 3)] += 1000.0;
    let (f, m) = (dir.path().join("f.nii.gz"), dir.path().join("m.nii.gz"));
    write_volume(&f, &v, None).unwrap();
    write_volume(&m, &far, None).unwrap();
    let out = dir.path().join("x.tfm");
    let (code, _, err) = run(&[
        "register",
        "--fixed",
        f.to_str().unwrap(),
        "--moving",
        m.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    one_error_line(&err, &["do not overlap"]);
    assert!(!out.exists(), "the identity was written");
}

#[test]
fn register_refuses_images_without_signal_and_cleans_nan_voxels() {
    let dir = tempfile::tempdir().unwrap();
    let v = sample_series().to_volume(0);
    let f = dir.path().join("f.nii.gz");
    write_volume(&f, &v, None).unwrap();
    let mut some_nan = v.clone();
    some_nan.data[1000] = f32::NAN;
    let mut all_nan = v.clone();
    all_nan.data.iter_mut().for_each(|x| *x = f32::NAN);
    let mut zeros = v.clone();
    zeros.data.iter_mut().for_each(|x| *x = 0.0);
    for (name, img, refused) in [
        ("some_nan", &some_nan, None),
        ("all_nan", &all_nan, Some("holds no finite value")),
        ("zeros", &zeros, Some("is constant")),
    ] {
        let p = dir.path().join(format!("{name}.nii.gz"));
        write_volume(&p, img, None).unwrap();
        let out = dir.path().join("x.tfm");
        let _ = std::fs::remove_file(&out);
        for (fixed, moving) in [(&f, &p), (&p, &f)] {
            let (code, _, err) = run(&[
                "register",
                "--fixed",
                fixed.to_str().unwrap(),
                "--moving",
                moving.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "-q",
            ]);
            match refused {
                Some(words) => {
                    // the moving image gave an identity with exit 0; the fixed one blamed the mask
                    assert_eq!(code, 2, "{name}: {err}");
                    one_error_line(&err, &[words, "nothing to register"]);
                }
                None => {
                    assert_eq!(code, 0, "{name}: {err}");
                    assert!(
                        err.contains("warning:") && err.contains("1 voxel is NaN"),
                        "{err}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_huge_voxel_is_cleaned_like_a_nan() {
    let mut s = sample_series();
    let before = s.clone();
    s.volume_mut(5)[100] = 3e38;
    let r = nifreeze::data_check::clean_series(&mut s);
    assert_eq!(r.implausible.iter().sum::<usize>(), 1);
    assert_eq!(s.volume(5)[100], 0.0);
    // nothing else changed: the limit lies far above the real signal
    let changed = s
        .samples()
        .zip(before.samples())
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(changed, 1);
}

/// Corpus cases refused by `estimate` with exit 2 and one line naming the problem.
const REFUSED: &[(&str, &[&str])] = &[
    ("inf_volume.nii", &["volume 3", "no finite value"]),
    ("zero_dw_volume.nii", &["volume 2 (b=1000)", "no signal"]),
    ("zero_b0_volume.nii", &["volume 0 (b=0)", "no signal"]),
    ("negative_slope.nii", &["negative", "scl_slope is -1"]),
    ("same_directions.nii", &["do not determine a DTI model"]),
    (
        "nan_bvec_dw.nii",
        &["volume 5", "non-finite gradient vector"],
    ),
    (
        "invisible_char.nii",
        &["U+200B ZERO WIDTH SPACE", "invisible_char.bval line 1"],
    ),
    ("nonunit_quaternion.nii", &["quaternion", "nibabel"]),
    ("nan_pixdim.nii", &["qform affine is not finite"]),
];

#[test]
fn corpus_refusals_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for (file, words) in REFUSED {
        let out = dir.path().join(file);
        let (code, _, err) = run(&["estimate", &corpus(file), "--out", out.to_str().unwrap()]);
        assert_eq!(code, 2, "{file}: {err}");
        one_error_line(&err, words);
        assert!(!out.join("motion.tsv").exists(), "{file}");
    }
}

// ---- families 4 and 5: resources and messages ----

#[test]
fn accepted_oddities_are_read() {
    for (file, warning) in [
        ("bom_sidecars.nii", None),
        (
            "nan_bvec_b0.nii",
            Some("b=0 volume 0 has a non-finite gradient vector"),
        ),
        ("gzip_zero_padding.nii.gz", None),
        ("gzip_bomb.nii.gz", None),
    ] {
        let (code, out, err) = run(&["info", &corpus(file), "--json"]);
        assert_eq!(code, 0, "{file}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["dims"], serde_json::json!([4, 4, 3, 8]), "{file}");
        match warning {
            None => assert_eq!(err, "", "{file}"),
            Some(w) => assert!(
                err.starts_with("nifreeze-rs: warning: ") && err.contains(w),
                "{file}: {err}"
            ),
        }
    }
    // the bomb's 16 MiB tail is never decompressed; the data read are the header's 384 floats
    let (s, _) = read_series(Path::new(&corpus("gzip_bomb.nii.gz"))).unwrap();
    assert_eq!(s.samples().count(), 4 * 4 * 3 * 8);
    assert_eq!(s.get(0, 17), 100.0);
    let (p, _) = read_series(Path::new(&corpus("gzip_zero_padding.nii.gz"))).unwrap();
    assert!(p.samples().eq(s.samples()));
}

#[test]
fn thread_counts_are_bounded_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o");
    for cmd in [
        vec![
            "estimate",
            "DWI",
            "--out",
            out.to_str().unwrap(),
            "-j",
            "100000",
        ],
        vec![
            "predict", "DWI", "--model", "dti", "--volume", "1", "--out", "p.nii.gz", "-j",
            "100000",
        ],
        vec![
            "register", "--fixed", "DWI", "--moving", "DWI", "--out", "x.tfm", "-j", "100000",
        ],
    ] {
        let dwi = sample("dwi.nii.gz");
        let args: Vec<&str> = cmd
            .iter()
            .map(|a| if *a == "DWI" { dwi.as_str() } else { a })
            .collect();
        let (code, _, err) = run(&args);
        assert_eq!(code, 2, "{err}");
        one_error_line(&err, &["-j 100000", "too many threads", "-j 0"]);
    }
}

#[test]
fn usage_errors_are_one_documented_line() {
    let dwi = sample("dwi.nii.gz");
    for (args, words) in [
        (
            vec!["estimate", dwi.as_str(), "--out", "o", "--bogus"],
            vec!["--bogus"],
        ),
        (vec!["estimate", dwi.as_str()], vec!["--out"]),
        (
            vec!["estimate", dwi.as_str(), "--out", "o", "--model", "tensor"],
            vec!["tensor"],
        ),
        (
            vec!["estimate", dwi.as_str(), "--out", "o", "-j", "-1"],
            vec!["-1"],
        ),
        (vec!["frobnicate"], vec!["frobnicate"]),
        (vec![], vec!["no command"]),
    ] {
        let (code, out, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}");
        one_error_line(&err, &words);
        assert!(err.trim_end().ends_with("(see --help)"), "{err}");
    }
    // a negative number is a value, judged by the command, not an unknown flag
    let (code, _, err) = run(&["estimate", &dwi, "--out", "o", "--b0-threshold", "-5"]);
    assert_eq!(code, 2);
    one_error_line(&err, &["--b0-threshold must be a non-negative number"]);
    let (code, _, err) = run(&[
        "compare",
        "--truth",
        "t",
        "--estimate",
        "e",
        "--mask",
        "m",
        "--max-worst-mm",
        "-1",
    ]);
    assert_eq!(code, 2);
    one_error_line(&err, &["--max-worst-mm -1"]);
    let (code, out, _) = run(&["compare", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("score is not finite"), "{out}");
}

#[test]
fn registration_of_a_nan_volume_reads_as_zero_signal() {
    // library callers skipping the load-time cleaning still get a finite result
    let s = sample_series();
    let v = s.to_volume(0);
    let mut bad = v.clone();
    for x in bad.data.iter_mut().step_by(1000) {
        *x = f32::NAN;
    }
    let r =
        nifreeze::registration::register(&v, &bad, None, &Matrix4::identity(), &Default::default())
            .unwrap();
    assert!(r.matrix.iter().all(|x| x.is_finite()));
}

// ---- family 2: header geometry follows nibabel ----

#[test]
fn header_geometry_matches_nibabel_or_is_refused() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/geometry");
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("nibabel_affines.json")).unwrap())
            .unwrap();
    let cases = fixture["cases"].as_object().unwrap();
    assert!(cases.len() >= 10);
    for (name, case) in cases {
        let got = read_series(&dir.join(format!("{name}.nii")));
        if let Some(e) = case.get("error") {
            let err = got
                .err()
                .unwrap_or_else(|| panic!("{name}: read, nibabel refuses ({e})"));
            assert!(err.to_string().contains("quaternion"), "{name}: {err}");
            continue;
        }
        let want = case["affine"].as_array().unwrap();
        if want
            .iter()
            .flat_map(|r| r.as_array().unwrap())
            .any(|v| v.is_null())
        {
            let err = got
                .err()
                .unwrap_or_else(|| panic!("{name}: nibabel's affine is NaN"));
            assert!(err.to_string().contains("not finite"), "{name}: {err}");
            continue;
        }
        let (s, _) = got.unwrap_or_else(|e| panic!("{name}: {e}"));
        for (r, row) in want.iter().enumerate() {
            for c in 0..4 {
                let w = row[c].as_f64().unwrap();
                // nibabel computes the rotation in float32
                assert!(
                    (s.grid.affine[(r, c)] - w).abs() < 2e-6 * (1.0 + w.abs()),
                    "{name}: affine[{r}][{c}] = {} but nibabel gives {w}",
                    s.grid.affine[(r, c)]
                );
            }
        }
    }
}
