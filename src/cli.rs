//! Command-line definitions (clap derive) and nothing else: parsing only, no work.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

const EXIT_CODES: &str =
    "Exit codes: 0 success; 2 bad usage or bad input (the message says what to fix); \
1 failure while running.";

/// Fast, exact leave-one-volume-out head-motion estimation for diffusion MRI.
#[derive(Parser, Debug)]
#[command(name = "nifreeze-rs", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Describe a DWI series: grid, orientation, datatype, shells, gradient source.
    #[command(after_help = EXIT_CODES)]
    Info(InfoArgs),
    /// Estimate head motion volume by volume (leave one out, predict, register).
    #[command(after_help = EXIT_CODES)]
    Estimate(EstimateArgs),
    /// Write the leave-one-volume-out model prediction of chosen volumes.
    #[command(after_help = EXIT_CODES)]
    Predict(PredictArgs),
    /// Register one image (moving) to another (fixed) and write the transform.
    #[command(after_help = EXIT_CODES)]
    Register(RegisterArgs),
    /// Simulate a realistic multi-shell DWI series with known rigid head motion.
    #[command(after_help = EXIT_CODES)]
    Simulate(SimulateArgs),
    /// Compare estimated transforms with the truth (a one-line CI regression check).
    #[command(
        after_help = "Exit codes: 0 within thresholds; 1 a threshold is exceeded; 2 bad usage or bad input."
    )]
    Compare(CompareArgs),
}

/// Where the gradient table comes from. Without any of these, BIDS sidecars next to the
/// DWI file are used: `<stem>.bval` + `<stem>.bvec`, else `<stem>.b`.
#[derive(Args, Debug, Clone, Default)]
pub struct GradientArgs {
    /// FSL b-values file (use with --bvec).
    #[arg(long, value_name = "FILE", requires = "bvec", conflicts_with = "grad")]
    pub bval: Option<PathBuf>,
    /// FSL b-vectors file (use with --bval).
    #[arg(long, value_name = "FILE", requires = "bval", conflicts_with = "grad")]
    pub bvec: Option<PathBuf>,
    /// MRtrix b-table: one row `x y z b` per volume, scanner RAS, b in s/mm².
    #[arg(long, value_name = "FILE")]
    pub grad: Option<PathBuf>,
    /// Volumes with b at or below this (s/mm²) are b=0 references.
    #[arg(long, value_name = "B", default_value_t = 50.0)]
    pub b0_threshold: f64,
    /// Allow series without b=0 volumes (S0 = 98th percentile of the masked data).
    #[arg(long)]
    pub ignore_b0: bool,
}

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
    /// Diffusion kurtosis (DIPY DiffusionKurtosisModel); needs two non-zero shells.
    Dki,
    /// No diffusion model: every volume is registered to the median b=0 (a cheap baseline).
    B0,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictModelChoice {
    Dti,
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
    /// Transform model for each volume.
    #[arg(long, value_enum, default_value_t = TransformChoice::Rigid)]
    pub transform: TransformChoice,
    /// Order in which volumes are processed. Each pass fits a fixed snapshot of the data, so
    /// the estimates are identical for every order (and every -j); it only changes the log.
    #[arg(long, value_enum, default_value_t = OrderChoice::Linear)]
    pub order: OrderChoice,
    /// Model passes over the series, each refitting the model to the original data realigned
    /// with the current estimates. Default: 1 for dti and b0, 2 for dki (measured: a second
    /// DTI pass loses accuracy on multi-shell data, whose kurtosis DTI cannot fit; a second
    /// DKI pass gains a little; see the README).
    #[arg(long, value_name = "N")]
    pub passes: Option<usize>,
    /// Worker threads (0 = all cores). Results are identical for any value.
    #[arg(short = 'j', long = "threads", value_name = "N", default_value_t = 1)]
    pub threads: usize,
    /// Output folder (created if missing). A folder holding a complete earlier run
    /// (summary.json) is refused unless --force; one run at a time (a lock file).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Replace a complete earlier run in --out.
    #[arg(long)]
    pub force: bool,
    /// Seed for --order random.
    #[arg(long, value_name = "S", default_value_t = 20250101)]
    pub seed: u64,
    /// Do not write the motion-corrected series.
    #[arg(long)]
    pub no_resample: bool,
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
    #[arg(long, value_enum)]
    pub model: PredictModelChoice,
    #[arg(long, value_enum, default_value_t = FitMethodChoice::Wls)]
    pub fit_method: FitMethodChoice,
    /// Brain mask on the DWI grid (default: computed automatically).
    #[arg(long, value_name = "FILE")]
    pub mask: Option<PathBuf>,
    /// 4-D indices of the volumes to predict, comma separated.
    #[arg(long, value_name = "K[,K...]", value_delimiter = ',', required = true)]
    pub volume: Vec<usize>,
    /// Worker threads (0 = all cores). Results are identical for any value.
    #[arg(short = 'j', long = "threads", value_name = "N", default_value_t = 1)]
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
    /// Fixed-image mask.
    #[arg(long, value_name = "FILE")]
    pub mask: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = TransformChoice::Rigid)]
    pub transform: TransformChoice,
    /// Initial transform (ITK text file).
    #[arg(long, value_name = "XFM")]
    pub init: Option<PathBuf>,
    /// Worker threads (0 = all cores). Results are identical for any value.
    #[arg(short = 'j', long = "threads", value_name = "N", default_value_t = 1)]
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
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
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
    #[arg(long)]
    pub json: bool,
}
