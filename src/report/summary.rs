//! summary.json: what was run, on what, with which result, how long it took and how much
//! memory it used. The lead's `estimate` fills it in; here are the types, the checksum and
//! the peak-memory probe.

use super::motion::MotionRow;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Contents of summary.json. Maps are `BTreeMap` so the key order (and the bytes) are stable.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// "nifreeze-rs".
    pub tool: String,
    /// Crate version (`env!("CARGO_PKG_VERSION")`).
    pub version: String,
    /// argv as given.
    pub command_line: Vec<String>,
    /// Effective parameters (model, transform, passes, order, seed, threads, thresholds…).
    pub parameters: BTreeMap<String, serde_json::Value>,
    /// Input files with their sizes and checksums.
    pub inputs: Vec<InputFile>,
    /// Where the gradient table came from (e.g. "FSL dwi.bval/dwi.bvec").
    pub gradient_source: String,
    /// The frame all transforms map from (e.g. "b=0 median of the original data").
    pub reference_frame: String,
    /// Number of voxels in the brain mask, and whether it was given or computed.
    pub mask_voxels: usize,
    pub mask_source: String,
    /// Per-volume metrics in 4-D order.
    pub volumes: Vec<MotionRow>,
    /// Per-volume registration diagnostics in 4-D order.
    pub registration: Vec<VolumeFit>,
    /// Aggregates over `volumes`.
    pub motion: MotionStats,
    /// Wall time per stage in seconds, in the order the stages ran (non-overlapping).
    pub timings: Vec<StageTime>,
    /// Total wall time (s).
    pub total_seconds: f64,
    /// Peak resident memory (MiB), if the platform reports it.
    pub peak_memory_mb: Option<f64>,
    /// Warnings issued during the run.
    pub warnings: Vec<String>,
    /// Outlier slices (signal dropouts): counts, settings and rows (see outliers.tsv).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outliers: Option<serde_json::Value>,
    /// Signal drift fitted to the b=0 volumes (see `--drift-correct`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<serde_json::Value>,
}

/// One input file: role ("dwi", "bval", "bvec", "mask", …), path as given, size, checksum.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InputFile {
    pub role: String,
    pub path: String,
    pub bytes: u64,
    /// FNV-1a 64 of the file bytes, 16 lowercase hex digits.
    pub fnv1a64: String,
}

/// How well one volume matched its registration target.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeFit {
    pub index: usize,
    /// Normalised correlation of target and registered volume over the mask (1 = perfect).
    pub correlation: f64,
    /// Gauss–Newton iterations over all pyramid levels (last pass).
    pub iterations: usize,
    /// Fraction of target voxels replaced as implausible model predictions.
    pub replaced_fraction: f64,
}

/// Wall and CPU time of one stage (stages do not overlap), and the process's peak resident
/// memory (MiB) when it ended: the stage whose figure jumps is the one that set the peak.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTime {
    pub stage: String,
    pub seconds: f64,
    /// CPU seconds of all threads in the stage (CPU / wall = cores kept busy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_mb: Option<f64>,
}

/// Motion aggregates: mean and max FD and relative RMS, max absolute RMS, and how many
/// volumes moved more than 0.5 mm FD (a common exclusion screen).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MotionStats {
    pub mean_fd: f64,
    pub max_fd: f64,
    pub mean_rms_rel: f64,
    pub max_rms_rel: f64,
    pub max_rms_abs: f64,
    pub n_fd_above_0_5mm: usize,
}

impl MotionStats {
    /// Aggregates of motion rows; means over volumes 1… (volume 0 has no predecessor).
    pub fn from_rows(rows: &[MotionRow]) -> Self {
        let tail = if rows.len() > 1 {
            &rows[1..]
        } else {
            &rows[..0]
        };
        let mean = |f: &dyn Fn(&MotionRow) -> f64| {
            if tail.is_empty() {
                0.0
            } else {
                tail.iter().map(f).sum::<f64>() / tail.len() as f64
            }
        };
        let max = |f: &dyn Fn(&MotionRow) -> f64| rows.iter().map(f).fold(0.0, f64::max);
        MotionStats {
            mean_fd: mean(&|r| r.fd),
            max_fd: max(&|r| r.fd),
            mean_rms_rel: mean(&|r| r.rms_rel),
            max_rms_rel: max(&|r| r.rms_rel),
            max_rms_abs: max(&|r| r.rms_abs),
            n_fd_above_0_5mm: rows.iter().filter(|r| r.fd > 0.5).count(),
        }
    }
}

impl Summary {
    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("summary serialises");
        s.push('\n');
        s
    }
}

/// FNV-1a, 64 bit: a cheap, stable, dependency-free checksum of input files (it identifies
/// inputs in summary.json; it is not a cryptographic hash). Feed bytes in any chunking.
#[derive(Clone, Copy, Debug)]
pub struct Fnv1a64(u64);

impl Default for Fnv1a64 {
    fn default() -> Self {
        Fnv1a64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a64 {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }

    pub fn finish(&self) -> u64 {
        self.0
    }

    /// 16 lowercase hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

/// FNV-1a 64 of a byte slice.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = Fnv1a64::new();
    h.update(bytes);
    h.finish()
}

/// Peak resident set size of this process in MiB (VmHWM from /proc/self/status), or `None`
/// where that file does not exist (non-Linux). The one function of `report` that reads a file.
pub fn peak_memory_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vmhwm_mb(&status)
}

/// VmHWM of a /proc/<pid>/status text, in MiB.
pub fn parse_vmhwm_mb(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut it = line["VmHWM:".len()..].split_whitespace();
    let kb: f64 = it.next()?.parse().ok()?;
    match it.next() {
        Some("kB") | None => Some(kb / 1024.0),
        _ => None,
    }
}
