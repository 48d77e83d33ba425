//! `estimate --bids-derivatives DIR`: names follow the BIDS derivative rules (checked here by
//! rules written from the specification, not by the library's code), entities come from the
//! input name, the files are the native outputs under those names, with sidecars and a
//! dataset_description.json carrying GeneratedBy.

use nifreeze::io::bids::{derivative_files, Entities};
use nifreeze::io::transforms::read_itk;
use nifreeze::report::read_motion_tsv;
use std::path::Path;
use std::process::Command;

/// BIDS order of the entities these files can carry (specification, entity table).
const ORDER: [&str; 10] = [
    "sub", "ses", "acq", "rec", "dir", "run", "from", "to", "mode", "desc",
];

/// A derivative file name obeys: `key-label` pairs of letters/digits, `sub` first, keys in
/// BIDS order and not repeated, then `_suffix.ext`; and it lies in sub-X/[ses-Y/]dwi with X, Y
/// equal to its own sub and ses.
fn check_name(rel: &Path) {
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let name = parts.last().unwrap();
    let (stem, ext) = name.split_once('.').unwrap();
    assert!(
        ["nii.gz", "bval", "bvec", "json", "tsv", "txt"].contains(&ext),
        "{name}: extension"
    );
    let mut fields: Vec<&str> = stem.split('_').collect();
    let suffix = fields.pop().unwrap();
    assert!(["dwi", "motion", "xfm"].contains(&suffix), "{name}: suffix");
    let mut last = 0;
    let mut sub = None;
    let mut ses = None;
    for (i, f) in fields.iter().enumerate() {
        let (k, v) = f.split_once('-').unwrap_or_else(|| panic!("{name}: {f}"));
        assert!(
            !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric()),
            "{name}: {f}"
        );
        let pos = ORDER
            .iter()
            .position(|o| *o == k)
            .unwrap_or_else(|| panic!("{name}: {k}"));
        assert!(
            i == 0 && k == "sub" || pos > last,
            "{name}: {k} out of order"
        );
        last = pos;
        match k {
            "sub" => sub = Some(v),
            "ses" => ses = Some(v),
            _ => {}
        }
    }
    let mut want = vec![format!("sub-{}", sub.unwrap())];
    if let Some(s) = ses {
        want.push(format!("ses-{s}"));
    }
    want.push("dwi".into());
    assert_eq!(parts[..parts.len() - 1], want[..], "{name}: folder");
}

#[test]
fn naming_rules() {
    let e = Entities::parse(Path::new(
        "/data/sub-01_ses-pre_acq-multi_dir-AP_run-2_dwi.nii.gz",
    ))
    .unwrap();
    assert_eq!(e.suffix, "dwi");
    for (k, v) in [
        ("sub", "01"),
        ("ses", "pre"),
        ("acq", "multi"),
        ("dir", "AP"),
        ("run", "2"),
    ] {
        assert_eq!(e.get(k), Some(v));
    }
    let names: Vec<String> = derivative_files(&e).into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"sub-01_ses-pre_acq-multi_dir-AP_run-2_desc-hmc_dwi.nii.gz".into()));
    assert!(names.contains(&"sub-01_ses-pre_acq-multi_dir-AP_run-2_desc-hmc_motion.tsv".into()));
    assert!(names.contains(
        &"sub-01_ses-pre_acq-multi_dir-AP_run-2_from-orig_to-hmc_mode-image_xfm.txt".into()
    ));
    let folder = e.folder(Path::new("deriv"), "dwi");
    assert_eq!(folder, Path::new("deriv/sub-01/ses-pre/dwi"));
    for n in &names {
        check_name(&Path::new("sub-01/ses-pre/dwi").join(n));
    }
    // No session: no ses folder. An input desc is replaced by ours.
    let e = Entities::parse(Path::new("sub-x7_desc-raw_dwi.nii")).unwrap();
    assert_eq!(e.folder(Path::new("d"), "dwi"), Path::new("d/sub-x7/dwi"));
    for (n, _) in derivative_files(&e) {
        assert!(!n.contains("desc-raw"), "{n}");
        check_name(&Path::new("sub-x7/dwi").join(n));
    }
    for bad in [
        "dwi.nii.gz",
        "ses-1_sub-01_dwi.nii.gz",
        "sub-01_ses-_dwi.nii.gz",
        "sub-01_run-1_run-2_dwi.nii.gz",
        "sub-01_acq-a.b_dwi.nii.gz",
        "sub-01_dwi_extra.nii.gz",
    ] {
        assert!(Entities::parse(Path::new(bad)).is_err(), "{bad} accepted");
    }
}

#[test]
fn estimate_writes_bids_derivatives() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("raw");
    std::fs::create_dir(&raw).unwrap();
    let stem = "sub-01_ses-1_acq-multi_dir-AP_run-2_dwi";
    for ext in ["nii.gz", "bval", "bvec"] {
        std::fs::copy(
            format!("data/sample/dwi.{ext}"),
            raw.join(format!("{stem}.{ext}")),
        )
        .unwrap();
    }
    std::fs::write(
        raw.join(format!("{stem}.json")),
        r#"{"PhaseEncodingDirection": "j-", "TotalReadoutTime": 0.05}"#,
    )
    .unwrap();
    let deriv = tmp.path().join("derivatives/nifreeze");
    let out = tmp.path().join("hmc");
    let run = Command::new(env!("CARGO_BIN_EXE_nifreeze-rs"))
        .arg("estimate")
        .arg(raw.join(format!("{stem}.nii.gz")))
        .args(["-j", "2", "-q", "--out"])
        .arg(&out)
        .arg("--bids-derivatives")
        .arg(&deriv)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let folder = deriv.join("sub-01/ses-1/dwi");
    let mut written: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written.len(), 7, "{written:?}");
    for n in &written {
        check_name(&Path::new("sub-01/ses-1/dwi").join(n));
    }
    let p = |s: &str| folder.join(format!("sub-01_ses-1_acq-multi_dir-AP_run-2_{s}"));
    // Copies of the native outputs, byte for byte.
    for (bids, native) in [
        ("desc-hmc_dwi.nii.gz", "dwi_corrected.nii.gz"),
        ("desc-hmc_dwi.bval", "dwi_corrected.bval"),
        ("desc-hmc_dwi.bvec", "dwi_corrected.bvec"),
        ("desc-hmc_motion.tsv", "motion.tsv"),
    ] {
        assert!(
            std::fs::read(p(bids)).unwrap() == std::fs::read(out.join(native)).unwrap(),
            "{bids}"
        );
    }
    let motion =
        read_motion_tsv(&std::fs::read_to_string(p("desc-hmc_motion.tsv")).unwrap()).unwrap();
    let xfm = read_itk(&p("from-orig_to-hmc_mode-image_xfm.txt")).unwrap();
    assert_eq!(xfm.len(), 27);
    for (a, b) in xfm.iter().zip(&motion) {
        assert!((a - b).abs().max() < 1e-12);
    }
    // Sidecars: the source's metadata carried over; every motion column described.
    let dwi_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("desc-hmc_dwi.json")).unwrap()).unwrap();
    assert_eq!(dwi_json["PhaseEncodingDirection"], "j-");
    assert_eq!(dwi_json["TotalReadoutTime"], 0.05);
    assert!(dwi_json["Description"].is_string());
    let motion_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("desc-hmc_motion.json")).unwrap()).unwrap();
    let header = std::fs::read_to_string(p("desc-hmc_motion.tsv")).unwrap();
    for col in header.lines().next().unwrap().split('\t') {
        assert!(motion_json[col]["Description"].is_string(), "column {col}");
    }
    assert_eq!(motion_json["tx"]["Units"], "mm");
    let dd: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deriv.join("dataset_description.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(dd["DatasetType"], "derivative");
    assert_eq!(dd["GeneratedBy"][0]["Name"], "nifreeze-rs");
    assert!(dd["BIDSVersion"].is_string() && dd["Name"].is_string());

    // A series without a BIDS name, or without the corrected series, is refused up front.
    let plain = Command::new(env!("CARGO_BIN_EXE_nifreeze-rs"))
        .args(["estimate", "data/sample/dwi.nii.gz", "-q", "--out"])
        .arg(tmp.path().join("plain"))
        .arg("--bids-derivatives")
        .arg(&deriv)
        .output()
        .unwrap();
    assert_eq!(plain.status.code(), Some(2));
    let err = String::from_utf8_lossy(&plain.stderr);
    assert!(err.contains("BIDS") && err.contains("sub-"), "{err}");
    assert!(!tmp.path().join("plain/summary.json").exists());
    let no_resample = Command::new(env!("CARGO_BIN_EXE_nifreeze-rs"))
        .arg("estimate")
        .arg(raw.join(format!("{stem}.nii.gz")))
        .args(["--no-resample", "--out", "x", "--bids-derivatives", "y"])
        .output()
        .unwrap();
    assert_eq!(no_resample.status.code(), Some(2));
}
