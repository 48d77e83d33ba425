//! Command-line definitions (clap derive) and nothing else: parsing only, no work.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// The exit-code paragraph every command's help ends with.
macro_rules! exit_codes {
    () => {
        "Exit codes: 0 success; 2 bad usage or bad input (the message says what to fix);
1 failure while running."
    };
}

/// Where gradients come from when no option names them (every command that reads a DWI).
macro_rules! gradients_help {
    () => {
        "Gradients: --bval/--bvec (FSL, alias --bvals/--bvecs), --fslgrad BVECS BVALS (MRtrix
order) or --grad (MRtrix b-table). With none of them the sidecars next to the series are used:
sub-01_dwi.nii.gz -> sub-01_dwi.bval + sub-01_dwi.bvec, else sub-01_dwi.b."
    };
}

const TOP_HELP: &str = concat!(
    "Examples:
  nifreeze-rs info sub-01_dwi.nii.gz
  nifreeze-rs estimate sub-01_dwi.nii.gz --model dti -j 4 --out sub-01_hmc

Every transform written maps points of the reference (fixed) image, RAS mm, to where they are
in the moving volume (ITK/ANTs fixed->moving, nitransforms' convention).

",
    exit_codes!()
);

const INFO_HELP: &str = concat!(
    "Examples:
  nifreeze-rs info sub-01_dwi.nii.gz
  nifreeze-rs info dwi.nii.gz --bval dwi.bval --bvec dwi.bvec --json > dwi.json

",
    gradients_help!(),
    "\n\n",
    exit_codes!()
);

const ESTIMATE_HELP: &str = concat!(
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

const PREDICT_HELP: &str = concat!(
    "Examples:
  nifreeze-rs predict sub-01_dwi.nii.gz --model dti --volume 5 --out pred-5.nii.gz
  nifreeze-rs predict dwi.nii.gz --model dki --volume 3,17,40 -j 4 --out pred.nii.gz

The prediction of volume K comes from the model fitted to every other volume (leave one out),
in the frame of the input series (no motion correction).

",
    gradients_help!(),
    "\n\n",
    exit_codes!()
);

const REGISTER_HELP: &str = concat!(
    "Examples:
  nifreeze-rs register --fixed b0.nii.gz --moving dwi.nii.gz --volume 7 --out vol-7.tfm
  nifreeze-rs register --fixed t1.nii.gz --moving mean_b0.nii.gz --transform affine \\
      --out xfm.mat --resampled mean_b0_in_t1.nii.gz
  nifreeze-rs register --fixed b0.nii.gz --moving dwi.nii.gz --volume 7 --metric mi --out v7.tfm

The transform maps points of the fixed image (RAS mm) to where they are in the moving image
(ITK/ANTs fixed->moving): resampled(x) = moving(T x), as antsApplyTransforms -r fixed -t xfm
applies it. Metrics: ls (default) is least squares with a fitted intensity scale and offset, for
images of the same contrast (Gauss-Newton); mi is Mattes mutual information, for different
contrasts such as a b=0 image against a diffusion-weighted one (BFGS). Every metric works with
every --transform.

",
    exit_codes!()
);

const SIMULATE_HELP: &str = concat!(
    "Examples:
  nifreeze-rs simulate --out phantom --seed 7
  nifreeze-rs simulate --out ph --shells 1000:30 --b0 3 --voxel-size 2 --max-rot 6 --clean
  nifreeze-rs simulate --out ph --ec 1 --pe-dir j- --dropout 0.1 --drift 5 --clean

Writes dwi.nii.gz (int16), dwi.bval/.bvec (FSL), dwi.b (MRtrix), brainmask.nii.gz,
truth.tsv (per volume: the true RAS reference->volume matrix m00..m33 and its parameters),
phantom.json, and clean.nii.gz with --clean. The same --seed gives the same bytes.
With --ec/--dropout/--drift, truth.tsv holds the full map (head motion, then the eddy-current
distortion), truth_rigid.tsv the head motion alone, and artefacts.json (the schema of
../shared/phantoms/bench_artefacts) the dropout slices, the drift and the rigid truth.

",
    exit_codes!()
);

const COMPARE_HELP: &str = "Examples:
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

/// A positive, finite number of millimetres.
fn positive_mm(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number of mm")),
    }
}

/// Fast, exact leave-one-volume-out head-motion estimation for diffusion MRI.
#[derive(Parser, Debug)]
#[command(name = "nifreeze-rs", version, about, long_about = None, after_help = TOP_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Describe a DWI series: grid, orientation, datatype, shells, gradient source.
    #[command(after_help = INFO_HELP, allow_negative_numbers = true)]
    Info(InfoArgs),
    /// Estimate head motion volume by volume (leave one out, predict, register).
    #[command(after_help = ESTIMATE_HELP, allow_negative_numbers = true)]
    Estimate(EstimateArgs),
    /// Write the leave-one-volume-out model prediction of chosen volumes.
    #[command(after_help = PREDICT_HELP, allow_negative_numbers = true)]
    Predict(PredictArgs),
    /// Register one image (moving) to another (fixed) and write the transform.
    #[command(after_help = REGISTER_HELP, allow_negative_numbers = true)]
    Register(RegisterArgs),
    /// Simulate a realistic multi-shell DWI series with known rigid head motion.
    #[command(after_help = SIMULATE_HELP, allow_negative_numbers = true)]
    Simulate(SimulateArgs),
    /// Compare estimated transforms with the truth (a one-line CI regression check).
    #[command(after_help = COMPARE_HELP, allow_negative_numbers = true)]
    Compare(CompareArgs),
}

pub use nifreeze::io::gradients::GradientArgs;

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// DWI series (.nii or .nii.gz).
    pub dwi: PathBuf,
    #[command(flatten)]
    pub gradients: GradientArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

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
pub enum PredictModelChoice {
    /// Diffusion tensor (DIPY TensorModel).
    Dti,
    /// Diffusion kurtosis (DIPY DiffusionKurtosisModel); needs two non-zero shells.
    Dki,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FitMethodChoice {
    /// Weighted least squares (DIPY's default: OLS, then weights from its prediction).
    Wls,
    /// Ordinary least squares.
    Ols,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransformChoice {
    Rigid,
    Affine,
    /// Rigid head motion plus a linear eddy-current field along the phase-encode axis
    /// (FSL eddy's linear model; see --pe-dir).
    Eddy,
}

/// `register --metric`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricChoice {
    /// Least squares with a fitted intensity scale and offset (same contrast).
    Ls,
    /// Mattes mutual information (different contrasts).
    Mi,
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

/// `--pe-dir`: a BIDS phase-encoding direction (i, i-, j, j-, k, k-).
fn parse_pe_dir(s: &str) -> Result<nifreeze::io::bids::PhaseEncoding, String> {
    nifreeze::io::bids::PhaseEncoding::parse(s)
        .ok_or_else(|| format!("'{s}' is not one of i, i-, j, j-, k, k-"))
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderChoice {
    Linear,
    Random,
    Bvalue,
    Centralsym,
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
    /// Worker threads (0 = all cores). Results are identical for any value.
    #[arg(
        short = 'j',
        long = "threads",
        visible_alias = "nthreads",
        value_name = "N",
        default_value_t = 1
    )]
    pub threads: usize,
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
    /// default is 4; a sign is ignored, -6 = 6). Measured: dropouts keeping <= 40 % of their
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

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// DWI series (.nii or .nii.gz).
    pub dwi: PathBuf,
    #[command(flatten)]
    pub gradients: GradientArgs,
    /// Diffusion model fitted to the other volumes.
    #[arg(long, value_enum)]
    pub model: PredictModelChoice,
    /// Model fit method.
    #[arg(long, value_enum, default_value_t = FitMethodChoice::Wls)]
    pub fit_method: FitMethodChoice,
    /// Brain mask on the DWI grid (default: computed automatically).
    #[arg(long, value_name = "FILE")]
    pub mask: Option<PathBuf>,
    /// 4-D indices of the volumes to predict, comma separated.
    #[arg(long, value_name = "K[,K...]", value_delimiter = ',', required = true)]
    pub volume: Vec<usize>,
    /// Worker threads (0 = all cores). Results are identical for any value.
    #[arg(
        short = 'j',
        long = "threads",
        visible_alias = "nthreads",
        value_name = "N",
        default_value_t = 1
    )]
    pub threads: usize,
    /// Output NIfTI (float32, one volume per --volume).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct RegisterArgs {
    /// Fixed (reference) image.
    #[arg(long, value_name = "FILE")]
    pub fixed: PathBuf,
    /// Moving image.
    #[arg(long, value_name = "FILE")]
    pub moving: PathBuf,
    /// Volume index used when the moving (or fixed) image is 4-D.
    #[arg(long, value_name = "K")]
    pub volume: Option<usize>,
    /// Fixed-image mask: only its voxels drive the metric.
    #[arg(long, value_name = "FILE")]
    pub mask: Option<PathBuf>,
    /// Transform model: rigid (6 parameters), affine (12) or eddy (rigid plus a linear
    /// eddy-current field along the phase-encode axis).
    #[arg(long, value_enum, default_value_t = TransformChoice::Rigid)]
    pub transform: TransformChoice,
    /// Similarity metric: ls (least squares with intensity scale, same contrast) or mi
    /// (Mattes mutual information, any contrast).
    #[arg(long, value_enum, default_value_t = MetricChoice::Ls)]
    pub metric: MetricChoice,
    /// Phase-encode direction of the moving image (i, i-, j, j-, k, k-), for --transform
    /// eddy. Default: the moving image's BIDS sidecar, else j with a warning.
    #[arg(long, value_name = "DIR", value_parser = parse_pe_dir)]
    pub pe_dir: Option<nifreeze::io::bids::PhaseEncoding>,
    /// Initial transform (ITK text file).
    #[arg(long, value_name = "XFM")]
    pub init: Option<PathBuf>,
    /// Worker threads (0 = all cores). Results are identical for any value.
    #[arg(
        short = 'j',
        long = "threads",
        visible_alias = "nthreads",
        value_name = "N",
        default_value_t = 1
    )]
    pub threads: usize,
    /// Output transform: ITK text (.tfm, .txt), ANTs binary (.mat) or X5 (.x5, .h5).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Also write the moving image resampled onto the fixed grid.
    #[arg(long, value_name = "FILE")]
    pub resampled: Option<PathBuf>,
    /// Do not print the one-line result summary (on stderr).
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Output folder (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Random seed: the same seed writes the same bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Shells as b:count pairs.
    #[arg(long, default_value = "1000:32,2000:32")]
    pub shells: String,
    /// Number of b=0 volumes.
    #[arg(long, default_value_t = 6)]
    pub b0: usize,
    /// Voxel size in mm.
    #[arg(long, default_value_t = 2.5)]
    pub voxel_size: f64,
    /// Signal-to-noise ratio of the b=0 white-matter signal.
    #[arg(long, default_value_t = 25.0)]
    pub snr: f64,
    /// Largest rotation about any axis, degrees.
    #[arg(long, default_value_t = 3.0)]
    pub max_rot: f64,
    /// Largest translation along any axis, mm.
    #[arg(long, default_value_t = 3.0)]
    pub max_trans: f64,
    /// Tilt the acquisition grid by this many degrees (oblique slices; tests unseen geometry).
    #[arg(
        long,
        value_name = "DEG",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub oblique: f64,
    /// Store the image with the x axis flipped (det < 0, LAS-like, as many scanners export).
    #[arg(long)]
    pub flip_x: bool,
    /// Also write clean.nii.gz: the same volumes unmoved and noise-free (float32), without
    /// eddy currents, dropouts or drift.
    #[arg(long)]
    pub clean: bool,
    /// Eddy-current strength S: each diffusion-weighted volume is displaced along the
    /// phase-encode axis by a field linear in scanner position, proportional to b and mixed by
    /// the gradient direction; at S = 1 and b = 1000 the field displaces by about 1.4 mm per
    /// 100 mm from the isocentre (RMS per axis) plus a ~0.4 mm shift, which gives 0.6-0.8 mm
    /// median displacement over the brain on a 1000/2000 protocol (like
    /// ../shared/phantoms/bench_artefacts: 0.67 mm). Displacements scale linearly with S. 0 = none.
    #[arg(long, value_name = "S", default_value_t = 0.0)]
    pub ec: f64,
    /// Phase-encode direction (BIDS PhaseEncodingDirection): i, i-, j, j-, k or k-.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "j",
        allow_hyphen_values = true
    )]
    pub pe_dir: String,
    /// Fraction of the diffusion-weighted volumes with signal dropouts: 1-3 interleaved
    /// slices (third voxel axis) keep 5-40 % of their signal. Listed in artefacts.json.
    #[arg(long, value_name = "FRAC", default_value_t = 0.0)]
    pub dropout: f64,
    /// Signal drift over acquisition order, per cent lost by the last volume (linear plus
    /// quadratic decline). Listed per volume in artefacts.json.
    #[arg(long, value_name = "PCT", default_value_t = 0.0)]
    pub drift: f64,
}

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

#[cfg(test)]
mod tests;
