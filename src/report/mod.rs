//! What `estimate` reports: motion parameters and QC metrics ([`motion`]), the motion table
//! `motion.tsv`, rotated gradient tables in FSL and MRtrix form ([`gradients`]), the
//! self-contained `report.svg` ([`svg`]) and the `summary.json` structure ([`summary`]).
//!
//! Everything here is pure: functions return text or values and the caller writes files
//! atomically. The one exception is [`summary::peak_memory_mb`], which reads
//! `/proc/self/status`.

pub mod gradients;
pub mod motion;
pub mod summary;
pub mod svg;

pub use gradients::{fsl_text, mrtrix_text, rotate_bvecs};
pub use motion::{
    framewise_displacement, motion_rows, motion_tsv, motion_tsv_eddy, polar_rotation,
    read_motion_tsv, rigid_parameters, rms_deviation, MotionRow, RMS_RADIUS_MM,
};
pub use summary::{
    fnv1a64, peak_memory_mb, Fnv1a64, InputFile, MotionStats, StageTime, Summary, VolumeFit,
};
pub use svg::{svg_report, svg_report_with, utc_date, ReportOptions, DEFAULT_FD_THRESHOLD_MM};

/// Shortest text that parses back to exactly `x` (Rust's `{}` for f64), with −0 written as 0.
/// Used wherever numbers must survive a round trip (matrices, gradient tables): deterministic
/// on every platform, and never an exponent.
pub fn fmt_exact(x: f64) -> String {
    if x == 0.0 {
        "0".to_string()
    } else {
        format!("{x}")
    }
}
