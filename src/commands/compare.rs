//! `nifreeze-rs compare`: score an estimate against the truth (as ../shared/tools/score.py)
//! and fail with exit code 1 when a threshold is exceeded — a one-line CI regression check.

use super::console::{stderr_line, stdout_text};
use nifreeze::compare::{
    parse_dropouts, parse_matrices, parse_outlier_slices, sample_points, score, score_detection,
    DetectionScore, Score, DROPOUT_MAX_FRACTION,
};
use nifreeze::image::Mask;
use nifreeze::io::nifti::read_volume;
use nifreeze::{Error, Result};
use serde_json::json;
use std::fmt::Write;
use std::path::Path;

use clap::Args;
use std::path::PathBuf;

// ---- the command's options ----

pub const HELP: &str = "Examples:
  nifreeze-rs compare --truth ph/truth.tsv --estimate est/motion.tsv --mask ph/brainmask.nii.gz
  nifreeze-rs compare --truth ph/truth.tsv --estimate est/motion.tsv \\
      --mask ph/brainmask.nii.gz --max-median-mm 0.2 --max-worst-mm 0.5 --json
  nifreeze-rs compare --truth ph/truth.tsv --estimate est/motion.tsv \
      --mask ph/brainmask.nii.gz --artefacts ph/artefacts.json --outliers est/outliers.tsv

Error measure (as ../shared/tools/score.py): for volume k, the mean over brain points x
(every 7th mask voxel) of |E_k x - T_k G x| in mm, E_k the estimated and T_k the true
reference->volume matrix, G one rigid transform common to all volumes (least-squares fit: a
motion estimate's reference frame is arbitrary, so a constant offset is not an error).
The report gives the median and the worst volume.

Exit codes: 0 within thresholds; 1 a threshold is exceeded, or a score is not finite (fails
closed, with or without thresholds); 2 bad usage or bad input.";

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Ground truth (truth.tsv with m00..m33 columns).
    #[arg(long, value_name = "FILE")]
    pub truth: PathBuf,
    /// Estimate (motion.tsv with m00..m33 columns).
    #[arg(long, value_name = "FILE")]
    pub estimate: PathBuf,
    /// Brain mask whose voxels are displaced.
    #[arg(long, value_name = "FILE")]
    pub mask: PathBuf,
    /// Fail (exit 1) when the median per-volume error exceeds this (mm).
    #[arg(long, value_name = "X")]
    pub max_median_mm: Option<f64>,
    /// Fail (exit 1) when the worst per-volume error exceeds this (mm).
    #[arg(long, value_name = "Y")]
    pub max_worst_mm: Option<f64>,
    /// The simulator's artefact list (artefacts.json: `dropouts`, volume -> [[slice,
    /// fraction], ...]); with --outliers, report how well dropout slices were detected
    /// (recall over slices keeping at most 40 % of their signal; precision over all reported).
    #[arg(long, value_name = "FILE", requires = "outliers")]
    pub artefacts: Option<PathBuf>,
    /// outliers.tsv written by `estimate` (volume and slice columns).
    #[arg(long, value_name = "FILE", requires = "artefacts")]
    pub outliers: Option<PathBuf>,
    /// Fail (exit 1) when the dropout detection recall is below this.
    #[arg(long, value_name = "R", requires = "artefacts")]
    pub min_recall: Option<f64>,
    /// Fail (exit 1) when the dropout detection precision is below this.
    #[arg(long, value_name = "P", requires = "artefacts")]
    pub min_precision: Option<f64>,
    /// Print the report as JSON (median, worst, per-volume errors) instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn read_text(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::input(format!("cannot read {what} {}: {e}", path.display())))
}

pub fn run(args: &CompareArgs) -> Result<()> {
    for (flag, v) in [
        ("--max-median-mm", args.max_median_mm),
        ("--max-worst-mm", args.max_worst_mm),
    ] {
        if let Some(v) = v {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(Error::input(format!(
                    "{flag} {v} must be a non-negative number of mm"
                )));
            }
        }
    }
    for (flag, v) in [
        ("--min-recall", args.min_recall),
        ("--min-precision", args.min_precision),
    ] {
        if let Some(v) = v {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::input(format!("{flag} {v} must be within [0, 1]")));
            }
        }
    }
    let detection = match (&args.artefacts, &args.outliers) {
        (Some(a), Some(o)) => {
            let truth = parse_dropouts(&read_text(a, "artefact list")?, &a.display().to_string())?;
            let reported =
                parse_outlier_slices(&read_text(o, "outlier list")?, &o.display().to_string())?;
            Some(score_detection(&truth, &reported, DROPOUT_MAX_FRACTION))
        }
        _ => None,
    };
    let truth = parse_matrices(
        &read_text(&args.truth, "truth")?,
        &args.truth.display().to_string(),
    )?;
    let est = parse_matrices(
        &read_text(&args.estimate, "estimate")?,
        &args.estimate.display().to_string(),
    )?;
    let (vol, _) = read_volume(&args.mask)?;
    let mask = Mask {
        data: vol.data.iter().map(|&v| v > 0.0).collect(),
        grid: vol.grid,
    };
    let points = sample_points(&mask);
    let s = score(&truth, &est, &points)?;

    let mut failures = Vec::new();
    // Fail closed: a NaN compares false with every threshold, so a non-finite score (an
    // entry like 1e300 in the estimate) would otherwise pass as within bounds.
    let all_scores = [
        s.true_motion_mean_mm,
        s.aligned_median_mm,
        s.aligned_p95_mm,
        s.aligned_worst_volume_mm,
        s.aligned_max_mm,
        s.raw_median_mm,
        s.raw_max_mm,
        s.global_offset_mm,
    ];
    let bad_volumes: Vec<String> = (0..s.volumes)
        .filter(|&k| {
            !(s.per_volume_aligned_mean_mm[k].is_finite()
                && s.per_volume_raw_mean_mm[k].is_finite()
                && s.per_volume_true_motion_mm[k].is_finite())
        })
        .map(|k| k.to_string())
        .collect();
    if !bad_volumes.is_empty() || all_scores.iter().any(|v| !v.is_finite()) {
        failures.push(format!(
            "the scores are not finite (volumes {}): the estimate or the truth holds matrices too large to score",
            if bad_volumes.is_empty() {
                "all".to_string()
            } else {
                bad_volumes.join(", ")
            }
        ));
    }
    if let Some(x) = args.max_median_mm {
        if s.aligned_median_mm > x {
            failures.push(format!(
                "median per-volume error {:.4} mm exceeds --max-median-mm {x}",
                s.aligned_median_mm
            ));
        }
    }
    if let Some(y) = args.max_worst_mm {
        if s.aligned_worst_volume_mm > y {
            let k = s
                .per_volume_aligned_mean_mm
                .iter()
                .position(|&v| v == s.aligned_worst_volume_mm)
                .unwrap_or(0);
            failures.push(format!(
                "worst per-volume error {:.4} mm (volume {k}) exceeds --max-worst-mm {y}",
                s.aligned_worst_volume_mm
            ));
        }
    }
    if let Some(d) = &detection {
        if let Some(r) = args.min_recall {
            if d.recall < r {
                failures.push(format!(
                    "dropout recall {:.3} is below --min-recall {r}",
                    d.recall
                ));
            }
        }
        if let Some(p) = args.min_precision {
            if d.precision < p {
                failures.push(format!(
                    "dropout precision {:.3} is below --min-precision {p}",
                    d.precision
                ));
            }
        }
    }
    let report = if args.json {
        json_report(&s, detection.as_ref(), args, failures.is_empty())
    } else {
        let mut t = table_report(&s);
        if let Some(d) = &detection {
            t += &detection_report(d);
        }
        t
    };
    stdout_text(&report)?;
    if failures.is_empty() {
        if args.max_median_mm.is_some()
            || args.max_worst_mm.is_some()
            || args.min_recall.is_some()
            || args.min_precision.is_some()
        {
            stderr_line("compare: PASS (all thresholds met)");
        }
        Ok(())
    } else {
        Err(Error::runtime(format!(
            "compare: FAIL: {}",
            failures.join("; ")
        )))
    }
}

fn table_report(s: &Score) -> String {
    // writing into a String cannot fail
    let mut t = String::new();
    let _ = writeln!(t, "volume\ttrue_motion_mm\traw_error_mm\taligned_error_mm");
    for k in 0..s.volumes {
        let _ = writeln!(
            t,
            "{k}\t{:.4}\t{:.4}\t{:.4}",
            s.per_volume_true_motion_mm[k],
            s.per_volume_raw_mean_mm[k],
            s.per_volume_aligned_mean_mm[k]
        );
    }
    let _ = writeln!(
        t,
        "# volumes {}  brain points {}  true motion mean {:.3} mm  global offset {:.3} mm",
        s.volumes, s.points, s.true_motion_mean_mm, s.global_offset_mm
    );
    let _ = writeln!(
        t,
        "# aligned error per volume (mean over mask, mm): median {:.4}  p95 {:.4}  max {:.4}  worst voxel {:.4}",
        s.aligned_median_mm, s.aligned_p95_mm, s.aligned_worst_volume_mm, s.aligned_max_mm
    );
    let _ = writeln!(
        t,
        "# raw error: median {:.4}  max {:.4}",
        s.raw_median_mm, s.raw_max_mm
    );
    t
}

fn detection_report(d: &DetectionScore) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# dropout detection: recall {:.3} ({} of {} slices with <= {:.0} % signal found)  precision {:.3} ({} of {} reported slices are dropouts)",
        d.recall,
        d.found,
        d.true_dropouts,
        DROPOUT_MAX_FRACTION * 100.0,
        d.precision,
        d.correct,
        d.reported
    );
    for (v, s, f) in &d.missed {
        let _ = writeln!(
            t,
            "# missed: volume {v} slice {s} ({:.0} % signal)",
            f * 100.0
        );
    }
    for (v, s) in &d.false_positives {
        let _ = writeln!(t, "# false positive: volume {v} slice {s}");
    }
    t
}

/// JSON with score.py's keys (plus thresholds, the dropout detection and the verdict);
/// non-finite numbers are null.
fn json_report(
    s: &Score,
    detection: Option<&DetectionScore>,
    args: &CompareArgs,
    pass: bool,
) -> String {
    let v = json!({
        "dropout_detection": detection,
        "volumes": s.volumes,
        "points": s.points,
        "true_motion_mean_mm": s.true_motion_mean_mm,
        "aligned_mean_mm": {"median": s.aligned_median_mm, "p95": s.aligned_p95_mm, "max": s.aligned_worst_volume_mm},
        "aligned_max_mm": s.aligned_max_mm,
        "raw_mean_mm": {"median": s.raw_median_mm, "max": s.raw_max_mm},
        "global_offset_mm": s.global_offset_mm,
        "per_volume_aligned_mean_mm": s.per_volume_aligned_mean_mm,
        "per_volume_raw_mean_mm": s.per_volume_raw_mean_mm,
        "thresholds": {"max_median_mm": args.max_median_mm, "max_worst_mm": args.max_worst_mm,
                       "min_recall": args.min_recall, "min_precision": args.min_precision},
        "pass": pass,
    });
    serde_json::to_string_pretty(&v).expect("JSON of plain values") + "\n"
}
