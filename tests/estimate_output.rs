//! The `--out` folder of `estimate` (src/io/output.rs): every clash between an input and a file
//! the run writes or deletes is refused before anything is computed or written (exit 2, inputs
//! and folder byte-identical afterwards); one run at a time; a complete earlier run needs
//! --force; what killed runs left is cleared; a failed run leaves no empty folder it created.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SAMPLE: &str = "data/sample";

fn nifreeze(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nifreeze-rs"))
        .args(args)
        .output()
        .expect("binary runs")
}

fn p(s: &str) -> &Path {
    Path::new(s)
}

/// Every file under `dir` (hidden ones included) with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut m = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return m;
    };
    for e in entries {
        let path = e.unwrap().path();
        if path.is_dir() {
            m.extend(snapshot(&path));
        } else {
            m.insert(path.clone(), std::fs::read(&path).unwrap());
        }
    }
    m
}

/// A copy of the sample series with its sidecars as `dir/NAME.nii.gz`, `.bval`, `.bvec`.
fn copy_sample(dir: &Path, name: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for ext in ["nii.gz", "bval", "bvec"] {
        std::fs::copy(
            format!("{SAMPLE}/dwi.{ext}"),
            dir.join(format!("{name}.{ext}")),
        )
        .unwrap();
    }
    dir.join(format!("{name}.nii.gz"))
}

/// The run must be refused with exit 2 and one `nifreeze-rs: error:` line containing `words`,
/// and leave everything under `root` byte-identical.
fn assert_refused(root: &Path, args: &[&Path], words: &[&str]) {
    let before = snapshot(root);
    let out = nifreeze(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(err.starts_with("nifreeze-rs: error: "), "{err}");
    for w in words {
        assert!(err.contains(w), "{args:?}: message lacks '{w}': {err}");
    }
    assert!(
        snapshot(root) == before,
        "{args:?}: files changed by a refused run"
    );
}

#[test]
fn every_input_clash_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let out = root.join("out");
    let dwi = copy_sample(&root.join("in"), "dwi");
    let bval = root.join("in/dwi.bval");
    let bvec = root.join("in/dwi.bvec");
    let est = p("estimate");
    let o = p("--out");

    // A gradient file named like an output, inside --out (with and without --no-resample, which
    // deletes the corrected series' tables instead of writing them).
    std::fs::create_dir_all(&out).unwrap();
    let inside_bvec = out.join("dwi_corrected.bvec");
    let inside_bval = out.join("dwi_corrected.bval");
    std::fs::copy(&bvec, &inside_bvec).unwrap();
    std::fs::copy(&bval, &inside_bval).unwrap();
    for extra in [&[][..], &[p("--no-resample")][..]] {
        let mut args = vec![
            est,
            &dwi,
            o,
            &out,
            p("--bval"),
            &bval,
            p("--bvec"),
            &inside_bvec,
        ];
        args.extend(extra);
        assert_refused(root, &args, &["--bvec", "dwi_corrected.bvec", "--out"]);
        let mut args = vec![
            est,
            &dwi,
            o,
            &out,
            p("--bval"),
            &inside_bval,
            p("--bvec"),
            &bvec,
        ];
        args.extend(extra);
        assert_refused(root, &args, &["--bval", "dwi_corrected.bval"]);
    }
    let grad = out.join("dwi_corrected.b");
    std::fs::copy(format!("{SAMPLE}/dwi.b"), &grad).unwrap();
    assert_refused(root, &[est, &dwi, o, &out, p("--grad"), &grad], &["--grad"]);

    // Re-estimating a corrected series into its own folder: the series and its sidecars are
    // outputs. A complete earlier run is there; even --force must not touch it.
    let again = copy_sample(&out, "dwi_corrected");
    std::fs::write(out.join("summary.json"), "{}").unwrap();
    std::fs::write(out.join("motion.tsv"), "earlier").unwrap();
    assert_refused(root, &[est, &again, o, &out], &["dwi_corrected.nii.gz"]);
    assert_refused(root, &[est, &again, o, &out, p("--force")], &["DWI series"]);

    // --mask inside --out under the mask output's name.
    let mask = out.join("brainmask.nii.gz");
    std::fs::copy(format!("{SAMPLE}/brainmask.nii.gz"), &mask).unwrap();
    assert_refused(
        root,
        &[est, &dwi, o, &out, p("--mask"), &mask, p("--force")],
        &["--mask", "brainmask.nii.gz"],
    );
    // The same through a relative path with `..` and a link to the folder.
    let link = root.join("link");
    std::os::unix::fs::symlink(&out, &link).unwrap();
    let odd = root.join("in/../link/brainmask.nii.gz");
    assert_refused(
        root,
        &[est, &dwi, o, &out, p("--mask"), &odd, p("--force")],
        &["--mask"],
    );

    // A hard link and a symbolic link in --out, under output names, to inputs elsewhere.
    let out2 = root.join("out2");
    std::fs::create_dir_all(out2.join("xfm")).unwrap();
    let my_mask = root.join("in/mask.nii.gz");
    std::fs::copy(format!("{SAMPLE}/brainmask.nii.gz"), &my_mask).unwrap();
    std::fs::hard_link(&my_mask, out2.join("report.svg")).unwrap();
    assert_refused(
        root,
        &[est, &dwi, p("--out"), &out2, p("--mask"), &my_mask],
        &["--mask", "report.svg"],
    );
    std::fs::remove_file(out2.join("report.svg")).unwrap();
    std::os::unix::fs::symlink(&bvec, out2.join("xfm/vol-0003.tfm")).unwrap();
    assert_refused(
        root,
        &[est, &dwi, p("--out"), &out2],
        &["sidecar", "vol-0003.tfm"],
    );

    // --out names a file.
    assert_refused(root, &[est, &dwi, o, &dwi], &["not a folder"]);
}

#[test]
fn a_complete_earlier_run_needs_force_and_a_failed_run_leaves_no_empty_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let dwi = copy_sample(&root.join("in"), "dwi");
    let out = root.join("done");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("summary.json"), "{}").unwrap();
    assert_refused(
        root,
        &[p("estimate"), &dwi, p("--out"), &out],
        &["complete earlier run", "--force", "another --out"],
    );

    // A run that fails (a 3-D image) removes the folders it created, and only those.
    let bad = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bad/three_d.nii");
    let nested = root.join("new/deeper");
    let r = nifreeze(&[p("estimate"), &bad, p("--out"), &nested]);
    assert_eq!(r.status.code(), Some(2));
    assert!(!root.join("new").exists(), "a failed run left its folder");
    let existing = root.join("existing");
    std::fs::create_dir(&existing).unwrap();
    let r = nifreeze(&[p("estimate"), &bad, p("--out"), &existing]);
    assert_eq!(r.status.code(), Some(2));
    assert!(
        existing.is_dir(),
        "a failed run removed a folder it did not create"
    );
    assert!(snapshot(&existing).is_empty(), "a failed run left its lock");
}

/// A process id that is certainly not running: a child that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn one_run_at_a_time_and_leftovers_of_killed_runs_are_cleared() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(out.join("xfm")).unwrap();
    // A killed run left its lock file and temporaries; a live writer's temporary must stay.
    let dead = dead_pid();
    let lock = out.join(".nifreeze-rs.lock");
    std::fs::write(&lock, dead.to_string()).unwrap();
    let dead_tmp = [
        out.join(format!(".motion.tsv.{dead}.tmp")),
        out.join(format!(".dwi_corrected.nii.gz.{dead}.tmp")),
        out.join(format!("xfm/.vol-0003.tfm.{dead}.tmp")),
    ];
    let live_tmp = out.join(format!(".motion.tsv.{}.tmp", std::process::id()));
    let unrelated = out.join(format!(".notes.txt.{dead}.tmp"));
    for f in dead_tmp.iter().chain([&live_tmp, &unrelated]) {
        std::fs::write(f, "partial").unwrap();
    }

    let mut first = Command::new(env!("CARGO_BIN_EXE_nifreeze-rs"))
        .args([
            "estimate",
            "data/sample/dwi.nii.gz",
            "-q",
            "--no-resample",
            "--out",
        ])
        .arg(&out)
        .spawn()
        .unwrap();
    // Wait until the first run holds the lock (its pid in the lock file), then start a second.
    let pid = first.id().to_string();
    let t = std::time::Instant::now();
    while std::fs::read_to_string(&lock).map_or(true, |s| s != pid) {
        assert!(
            t.elapsed().as_secs() < 60 && first.try_wait().unwrap().is_none(),
            "the first run never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = nifreeze(&[p("estimate"), p("data/sample/dwi.nii.gz"), p("--out"), &out]);
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("pid {pid}")) && err.contains("another --out"),
        "{err}"
    );
    assert!(first.wait().unwrap().success());

    assert!(out.join("summary.json").exists());
    assert!(!lock.exists(), "the lock file outlived the run");
    for f in &dead_tmp {
        assert!(!f.exists(), "{} of a dead run survived", f.display());
    }
    assert!(live_tmp.exists(), "a live writer's temporary was removed");
    assert!(
        unrelated.exists(),
        "a file that is not an output was removed"
    );
}
