//! `estimate`'s options, its help text and their parsers.

use crate::cli::{
    exit_codes, gradients_help, parse_pe_dir, FitMethodChoice, FoldsChoice, GradientArgs, Threads,
    TransformChoice,
};
use clap::{Args, ValueEnum};
use std::path::PathBuf;

pub const HELP: &str = concat!(
    "Examples:
  nifreeze-rs estimate sub-01_dwi.nii.gz --model dti -j 4 --out sub-01_hmc
  nifreeze-rs estimate dwi.nii.gz --fslgrad dwi.bvec dwi.bval --mask brain.nii.gz \\
      --model dki --nthreads 8 --out hmc

Outputs (in --out, each written atomically; summary.json last, so it marks a complete run):
  motion.tsv             per volume: tx ty tz (mm) rx ry rz (deg) about the volume centre,
                         FD, RMS (abs, rel), then the 4x4 RAS matrix m00..m33
  transforms.tfm         all volumes, one ITK text file (nitransforms reads it)
  xfm/vol-NNNN.tfm       one ITK text transform per volume (antsApplyTransforms)
  xfm/vol-NNNN.mat       the same as ANTs binary (MATLAB v4) .mat, as antsRegistration writes
  transforms.x5          all volumes in one X5 (HDF5) file
  dwi_corrected.nii.gz   the series resampled onto the reference (not with --no-resample)
  dwi_corrected.bval/.bvec/.b   its gradient table with rotated b-vectors (FSL, MRtrix)
  brainmask.nii.gz       the brain mask used (given or computed)
  report.svg             motion traces over volumes; title: series name and date (UTC, or
                         SOURCE_DATE_EPOCH); FD threshold line (--fd-threshold)
  summary.json           parameters, input checksums, per-volume metrics, timings
With --eddy-outputs PREFIX, FSL eddy's files (eddy's scaled-mm axes, x reversed when det > 0):
  PREFIX.eddy_parameters         tx ty tz (mm) rx ry rz (rad) about the grid centre, then 10
                                 eddy-current terms (zero for the rigid model)
  PREFIX.eddy_movement_rms       RMS displacement over the mask: from reference, from previous
  PREFIX.eddy_restricted_movement_rms   the same without translation along the phase encoding
                                 (PhaseEncodingDirection of the JSON sidecar, else j)
  PREFIX.eddy_rotated_bvecs      the corrected series' b-vectors (FSL)
  (.eddy_outlier_map and .eddy_outlier_n_stdev_map only when outliers were detected)
With --bids-derivatives DIR, copies under BIDS derivative names (entities from the input):
  DIR/sub-01/[ses-1/]dwi/sub-01[_ses-1…]_desc-hmc_dwi.nii.gz/.bval/.bvec/.json,
  …_desc-hmc_motion.tsv/.json, …_from-orig_to-hmc_mode-image_xfm.txt (ITK, all volumes),
  DIR/dataset_description.json (written when missing, with GeneratedBy)

Transforms: every matrix maps a point of the reference head (the b=0 median, RAS mm) to where
it is in volume k: corrected_k(x) = volume_k(T_k x) (ITK/ANTs fixed->moving, nitransforms).

",
    gradients_help!(),
    "\n\n",
    exit_codes!()
);

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelChoice {
    /// Diffusion tensor (DIPY TensorModel).
    Dti,
    /// Diffusion kurtosis (DIPY DiffusionKurtosisModel); needs two non-zero shells and every
    /// leave-one-out fit determined (at least 22 diffusion-weighted volumes); warns below 44.
    Dki,
    /// No diffusion model: every volume is registered to the median b=0 (a cheap baseline).
    B0,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderChoice {
    Linear,
    Random,
    Bvalue,
    Centralsym,
}

/// A positive, finite number of millimetres.
fn positive_mm(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number of mm")),
    }
}

/// `--readout-time`: seconds, positive and under one (BIDS `TotalReadoutTime`).
/// `8G`, `1500M`, `2.5GiB`, `4096` (MiB) → bytes (binary multiples, as Slurm's --mem).
pub fn parse_memory_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit.trim_end_matches("IB").trim_end_matches('B');
    let scale: f64 = match unit {
        "" | "M" => 1024.0 * 1024.0,
        "K" => 1024.0,
        "G" => 1024.0 * 1024.0 * 1024.0,
        "T" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("'{s}' is not a memory size: use e.g. 8G or 1500M")),
    };
    match num.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v * scale < 1.8e19 => Ok((v * scale) as u64),
        _ => Err(format!("'{s}' is not a memory size: use e.g. 8G or 1500M")),
    }
}

fn parse_readout_time(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(t) if t > 0.0 && t < 1.0 => Ok(t),
        _ => Err(format!(
            "'{s}' is not a readout time: give seconds between 0 and 1 (e.g. 0.05)"
        )),
    }
}

#[derive(Args, Debug)]
pub struct EstimateArgs {
    /// DWI series (.nii or .nii.gz).
    pub dwi: PathBuf,
    #[command(flatten)]
    pub gradients: GradientArgs,
    /// Brain mask on the DWI grid (default: computed from the b=0 median and written to --out).
    #[arg(long, value_name = "FILE")]
    pub mask: Option<PathBuf>,
    /// Diffusion model that predicts each held-out volume.
    #[arg(long, value_enum, default_value_t = ModelChoice::Dti)]
    pub model: ModelChoice,
    /// Model fit method.
    #[arg(long, value_enum, default_value_t = FitMethodChoice::Wls)]
    pub fit_method: FitMethodChoice,
    /// How the leave-one-out folds are fitted: `downdate` derives every fold from one fit per
    /// voxel (fast; WLS weights from all volumes), `refit` fits each fold from scratch as
    /// nifreeze/DIPY do (about 10x slower model stage).
    #[arg(long, value_enum, default_value_t = FoldsChoice::Downdate)]
    pub folds: FoldsChoice,
    /// Transform model for each volume: rigid (6 parameters) or affine (12).
    #[arg(long, value_enum, default_value_t = TransformChoice::Rigid)]
    pub transform: TransformChoice,
    /// Phase-encode direction of the series as a voxel axis (i, i-, j, j-, k, k-), for
    /// --transform eddy. Default: `PhaseEncodingDirection` of the BIDS sidecar (<stem>.json),
    /// else j with a warning.
    #[arg(long, value_name = "DIR", value_parser = parse_pe_dir)]
    pub pe_dir: Option<nifreeze::io::bids::PhaseEncoding>,
    /// Total readout time (s) of the series, for --transform eddy with --eddy-outputs: eddy's
    /// parameter file gives the eddy-current field in Hz, which is the displacement divided by
    /// the readout time. Default: `TotalReadoutTime` of the BIDS sidecar.
    #[arg(long, value_name = "SECONDS", value_parser = parse_readout_time)]
    pub readout_time: Option<f64>,
    /// Order in which volumes are processed. Each pass fits a fixed snapshot of the data, so
    /// the estimates are identical for every order (and every -j); it only changes the log.
    /// Hidden from --help for that reason; accepted for nifreeze command lines.
    #[arg(long, value_enum, default_value_t = OrderChoice::Linear, hide = true)]
    pub order: OrderChoice,
    /// Model passes over the series, each refitting the model to the original data realigned
    /// with the current estimates. Default: 1 for dti and b0, 2 for dki (measured: a second
    /// DTI pass loses accuracy on multi-shell data, whose kurtosis DTI cannot fit; a second
    /// DKI pass gains a little; see the README).
    #[arg(long, value_name = "N")]
    pub passes: Option<usize>,
    #[command(flatten)]
    pub threads: Threads,
    /// Output folder (created if missing). A folder holding a complete earlier run
    /// (summary.json) is refused unless --force; one run at a time (a lock file).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Replace a complete earlier run in --out.
    #[arg(long)]
    pub force: bool,
    /// Memory the run may use, e.g. 8G, 1500M (K/M/G/T: KiB…TiB, as Slurm's --mem; a plain
    /// number is MiB). A run whose estimate exceeds it is refused before any work, with the
    /// figure. Default: the memory the machine has available.
    #[arg(long, value_name = "SIZE", value_parser = parse_memory_size)]
    pub max_memory: Option<u64>,
    /// Seed for --order random (only the log order; hidden with it).
    #[arg(long, value_name = "S", default_value_t = 20250101, hide = true)]
    pub seed: u64,
    /// Do not write the motion-corrected series.
    #[arg(long)]
    pub no_resample: bool,
    /// Outlier slices (signal dropouts): a slice is an outlier when its mean signal, compared
    /// with the model's prediction and with its neighbouring slices, lies more than Z robust
    /// standard deviations below the other volumes of its shell (like eddy's --ol_nstd, whose
    /// default is 4; a sign is ignored, -6 = 6) and it lost at least 10 % of its signal beyond
    /// the shell's typical slice. Measured: dropouts keeping <= 40 % of their
    /// signal score below -15, clean slices above -4.5. Slices follow
    /// SliceEncodingDirection of the JSON sidecar, else the third voxel axis. Outlier slices
    /// weigh nothing in their volume's registration and are replaced by their prediction in
    /// the next pass's model fit. Listed in outliers.tsv.
    #[arg(
        long,
        value_name = "Z",
        default_value_t = 6.0,
        allow_negative_numbers = true
    )]
    pub outlier_threshold: f64,
    /// Write dwi_corrected with outlier slices replaced by their prediction (eddy's --repol);
    /// without it they are kept as acquired.
    #[arg(long)]
    pub repol: bool,
    /// Correct the signal drift before the model fits, and in dwi_corrected: every volume is
    /// divided by a quadratic (linear with 2-3 b=0 volumes) fitted to the b=0 volumes' mean
    /// signal over acquisition order (Vos et al. 2017). The drift is reported either way.
    #[arg(long)]
    pub drift_correct: bool,
    /// Also write FSL eddy's motion files for pipelines that read them (QSIPrep, eddy_quad):
    /// PREFIX.eddy_parameters, .eddy_movement_rms, .eddy_restricted_movement_rms,
    /// .eddy_rotated_bvecs; a relative PREFIX lies in --out. The outlier maps are written only
    /// when outliers were detected.
    #[arg(long, value_name = "PREFIX")]
    pub eddy_outputs: Option<PathBuf>,
    /// Also write BIDS derivatives into DIR: sub-<label>/[ses-<label>/]dwi/<entities>_desc-hmc_dwi
    /// (.nii.gz, .bval, .bvec, .json), _desc-hmc_motion.tsv + .json,
    /// _from-orig_to-hmc_mode-image_xfm.txt, and DIR/dataset_description.json if missing.
    /// Entities (sub, ses, acq, dir, run …) come from the input's BIDS name.
    #[arg(long, value_name = "DIR", conflicts_with = "no_resample")]
    pub bids_derivatives: Option<PathBuf>,
    /// Framewise displacement (mm) marked in report.svg: a threshold line and the number of
    /// volumes above it.
    #[arg(long, value_name = "MM", default_value_t = 0.5, value_parser = positive_mm)]
    pub fd_threshold: f64,
    /// Silence progress output.
    #[arg(short, long)]
    pub quiet: bool,
}
