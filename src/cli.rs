//! The command line: the top-level parser, the subcommand list and the option groups several
//! commands share (gradient import options, fit method, transform family, phase-encode
//! direction). Each command's own options live with the command (`commands::NAME`).

use crate::commands;
use clap::{Args, Parser, Subcommand, ValueEnum};

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

pub(crate) use {exit_codes, gradients_help};

const TOP_HELP: &str = concat!(
    "Examples:
  nifreeze-rs info sub-01_dwi.nii.gz
  nifreeze-rs estimate sub-01_dwi.nii.gz --model dti -j 4 --out sub-01_hmc

Every transform written maps points of the reference (fixed) image, RAS mm, to where they are
in the moving volume (ITK/ANTs fixed->moving, nitransforms' convention).

",
    exit_codes!()
);

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
    #[command(after_help = commands::info::HELP, allow_negative_numbers = true)]
    Info(commands::info::InfoArgs),
    /// Estimate head motion volume by volume (leave one out, predict, register).
    #[command(after_help = commands::estimate::args::HELP, allow_negative_numbers = true)]
    Estimate(commands::estimate::args::EstimateArgs),
    /// Write the leave-one-volume-out model prediction of chosen volumes.
    #[command(after_help = commands::predict::HELP, allow_negative_numbers = true)]
    Predict(commands::predict::PredictArgs),
    /// Register one image (moving) to another (fixed) and write the transform.
    #[command(after_help = commands::register::HELP, allow_negative_numbers = true)]
    Register(commands::register::RegisterArgs),
    /// Simulate a realistic multi-shell DWI series with known rigid head motion.
    #[command(after_help = commands::simulate::HELP, allow_negative_numbers = true)]
    Simulate(commands::simulate::SimulateArgs),
    /// Compare estimated transforms with the truth (a one-line CI regression check).
    #[command(after_help = commands::compare::HELP, allow_negative_numbers = true)]
    Compare(commands::compare::CompareArgs),
}

pub use nifreeze::io::gradients::GradientArgs;

/// `-j`: the worker threads of every command that computes in parallel.
#[derive(Args, Debug, Clone, Copy)]
pub struct Threads {
    /// Worker threads (0 = all cores). Results are identical for any value.
    #[arg(
        id = "threads",
        short = 'j',
        long = "threads",
        visible_alias = "nthreads",
        value_name = "N",
        default_value_t = 1
    )]
    pub n: usize,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FitMethodChoice {
    /// Weighted least squares (DIPY's default: OLS, then weights from its prediction).
    Wls,
    /// Ordinary least squares.
    Ols,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoldsChoice {
    /// One weighted fit per voxel; each leave-one-out fold derived from it by a rank-one
    /// downdate (WLS weights from all volumes). About ten times cheaper than refit.
    Downdate,
    /// Every fold refitted from scratch, its WLS weights from its own OLS fit: nifreeze's
    /// and DIPY's numbers exactly.
    Refit,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransformChoice {
    Rigid,
    Affine,
    /// Rigid head motion plus a linear eddy-current field along the phase-encode axis
    /// (FSL eddy's linear model; see --pe-dir).
    Eddy,
}

/// `--pe-dir`: a BIDS phase-encoding direction (i, i-, j, j-, k, k-).
pub fn parse_pe_dir(s: &str) -> Result<nifreeze::io::bids::PhaseEncoding, String> {
    nifreeze::io::bids::PhaseEncoding::parse(s)
        .ok_or_else(|| format!("'{s}' is not one of i, i-, j, j-, k, k-"))
}

#[cfg(test)]
mod tests;
