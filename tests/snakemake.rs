//! The Snakemake recipe (examples/snakemake/Snakefile) on a two-subject BIDS-like folder
//! built with `simulate`. Without `snakemake` on PATH it prints SKIPPED (visibly, past the
//! harness's capture), and fails when CI is set (`.ci/run` installs snakemake into a virtual
//! environment under target/ and sets CI). Also: the Nextflow example builds the same
//! estimate command line as the Snakemake rule (Nextflow itself cannot run offline).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_nifreeze-rs");

fn snakemake() -> Option<PathBuf> {
    let ok = Command::new("snakemake")
        .arg("--version")
        .output()
        .map(|o| o.status.success());
    if matches!(ok, Ok(true)) {
        return Some(PathBuf::from("snakemake"));
    }
    // In CI a missing tool is a failure, not a silent pass.
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        !ci,
        "snakemake is not on PATH but CI is set: install it (.ci/run does, into target/ci-venv)"
    );
    // Written to the stream itself, not through eprintln!, which the test harness captures:
    // a skipped test must not pass unnoticed.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: snakemake is not on PATH (pip install snakemake, or run .ci/run)"
    );
    None
}

fn snakefile() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/snakemake/Snakefile")
}

/// Two small subjects (5 mm, 14 volumes): bids/sub-0N/dwi/sub-0N_dwi.{nii.gz,bval,bvec},
/// and each subject's truth.tsv + brainmask.nii.gz under truth/sub-0N/.
fn bids(root: &Path) {
    for (s, seed) in [("01", "1"), ("02", "2")] {
        let sim = root.join(format!("sim-{s}"));
        let o = Command::new(BIN)
            .args(["simulate", "--out", sim.to_str().unwrap(), "--seed", seed])
            .args(common::SMALL_PHANTOM)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let dwi = root.join(format!("bids/sub-{s}/dwi"));
        std::fs::create_dir_all(&dwi).unwrap();
        for ext in ["nii.gz", "bval", "bvec"] {
            std::fs::rename(
                sim.join(format!("dwi.{ext}")),
                dwi.join(format!("sub-{s}_dwi.{ext}")),
            )
            .unwrap();
        }
    }
}

fn run_snakemake(smk: &Path, root: &Path, extra: &[&str]) -> (bool, String) {
    let o = Command::new(smk)
        .args([
            "--snakefile",
            snakefile().to_str().unwrap(),
            "--cores",
            "2",
            "--directory",
        ])
        .arg(root)
        .args([
            "--config",
            "bids=bids",
            "out=derivatives",
            &format!("nifreeze={BIN}"),
            "threads=2",
        ])
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

/// The workflow finds both subjects and plans one estimate job each (needs no estimate).
#[test]
fn snakefile_plans_one_job_per_subject() {
    let Some(smk) = snakemake() else { return };
    let d = tempfile::tempdir().unwrap();
    bids(d.path());
    let (ok, text) = run_snakemake(&smk, d.path(), &["--dry-run"]);
    assert!(ok, "{text}");
    let jobs = text
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 2 && f[0] == "estimate").then(|| f[1].to_string())
        })
        .unwrap_or_default();
    assert_eq!(jobs, "2", "{text}");
    assert!(text.contains("sub-01") && text.contains("sub-02"), "{text}");
}

#[test]
fn snakemake_runs_estimate_for_two_subjects() {
    let Some(smk) = snakemake() else { return };
    let d = tempfile::tempdir().unwrap();
    bids(d.path());
    let (ok, text) = run_snakemake(&smk, d.path(), &[]);
    let logs: String = ["01", "02"]
        .iter()
        .map(|s| {
            std::fs::read_to_string(d.path().join(format!("derivatives/logs/sub-{s}.log")))
                .unwrap_or_default()
        })
        .collect();
    assert!(ok, "{text}\n--- estimate logs ---\n{logs}");
    for s in ["01", "02"] {
        let out = d.path().join(format!("derivatives/sub-{s}"));
        for f in ["motion.tsv", "transforms.tfm", "summary.json"] {
            let len = std::fs::metadata(out.join(f)).map(|m| m.len()).unwrap_or(0);
            assert!(len > 0, "sub-{s}/{f} missing or empty");
        }
        // The estimate is a usable motion estimate: compare against the simulated truth.
        let sim = d.path().join(format!("sim-{s}"));
        let o = Command::new(BIN)
            .args(["compare", "--truth"])
            .arg(sim.join("truth.tsv"))
            .arg("--estimate")
            .arg(out.join("motion.tsv"))
            .arg("--mask")
            .arg(sim.join("brainmask.nii.gz"))
            .args(["--max-median-mm", "1.0"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "sub-{s}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // A second run has nothing to do (outputs are up to date).
    let (ok, text) = run_snakemake(&smk, d.path(), &[]);
    assert!(ok && text.contains("Nothing to be done"), "{text}");
}

/// The estimate command line of a workflow file, as words with its placeholders replaced by
/// role names through `roles` (placeholder → role).
fn canonical(command: &str, roles: &[(&str, &str)]) -> Vec<String> {
    let mut c = command.to_string();
    for (placeholder, role) in roles {
        c = c.replace(placeholder, role);
    }
    c.split_whitespace().map(str::to_string).collect()
}

/// The shell command of the Snakefile's `estimate` rule: its string literals joined.
fn snakemake_command() -> String {
    let text = std::fs::read_to_string(snakefile()).unwrap();
    let rule = &text[text.find("rule estimate:").expect("rule estimate")..];
    let shell = &rule[rule.find("shell:").expect("shell:") + 6..];
    let mut cmd = String::new();
    for line in shell.lines().skip(1) {
        let l = line.trim();
        if !(l.starts_with('"') && l.ends_with('"')) {
            break;
        }
        cmd.push_str(&l[1..l.len() - 1]);
    }
    cmd
}

/// The script of the Nextflow ESTIMATE process: the triple-quoted block, continuations joined.
fn nextflow_command() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/nextflow/main.nf");
    let text = std::fs::read_to_string(path).unwrap();
    let script = &text[text.find("script:").expect("script:")..];
    let start = script.find("\"\"\"").unwrap() + 3;
    let end = start + script[start..].find("\"\"\"").unwrap();
    script[start..end].replace("\\\\\n", " ")
}

#[test]
fn nextflow_builds_the_same_command_as_snakemake() {
    let smk = canonical(
        &snakemake_command(),
        &[
            ("{params.nifreeze}", "NIFREEZE"),
            ("{input.dwi:q}", "DWI"),
            ("{input.bval:q}", "BVAL"),
            ("{input.bvec:q}", "BVEC"),
            ("{threads}", "THREADS"),
            ("{params.extra}", "EXTRA"),
            ("{params.outdir:q}", "OUTDIR"),
            // Snakemake's log file; Nextflow keeps each task's stderr itself.
            (" 2> {log:q}", ""),
        ],
    );
    let nf = canonical(
        &nextflow_command(),
        &[
            ("${params.nifreeze}", "NIFREEZE"),
            ("${dwi}", "DWI"),
            ("${bval}", "BVAL"),
            ("${bvec}", "BVEC"),
            ("${task.cpus}", "THREADS"),
            ("${params.args}", "EXTRA"),
            ("sub-${subject}", "OUTDIR"),
        ],
    );
    assert!(smk.len() > 8, "Snakefile command not found: {smk:?}");
    assert_eq!(
        nf, smk,
        "Nextflow and Snakemake run different estimate commands"
    );
    // Every word left is a literal option of estimate or a role: no unmapped placeholder.
    for w in &nf {
        assert!(
            !w.contains('{') && !w.contains('$'),
            "unmapped placeholder {w}"
        );
    }
}
