//! `register`: align one image (moving) to another (fixed) and write the ITK transform.

use nalgebra::Matrix4;
use nifreeze::data_check;
use nifreeze::image::{Series, Volume};
use nifreeze::io::{atomic, nifti, transforms};
use nifreeze::registration::{self, Interpolation, RegistrationConfig, TransformKind};
use nifreeze::{Error, Result};
use std::path::Path;

use crate::cli::{exit_codes, parse_pe_dir, Threads, TransformChoice};
use clap::{Args, ValueEnum};
use std::path::PathBuf;

// ---- the command's options ----

pub const HELP: &str = concat!(
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

/// `register --metric`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricChoice {
    /// Least squares with a fitted intensity scale and offset (same contrast).
    Ls,
    /// Mattes mutual information (different contrasts).
    Mi,
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
    #[command(flatten)]
    pub threads: Threads,
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

/// Volume `k` of a series, or the only volume of a 3-D image.
fn pick(s: Series, k: Option<usize>, path: &Path, role: &str) -> Result<Volume> {
    if s.n_volumes == 1 {
        return Ok(s.to_volume(0));
    }
    let Some(k) = k else {
        return Err(Error::input(format!(
            "the {role} image {} is 4-D with {} volumes: choose one with --volume K",
            path.display(),
            s.n_volumes
        )));
    };
    if k >= s.n_volumes {
        return Err(Error::input(format!(
            "--volume {k} is out of range: {} has volumes 0..{}",
            path.display(),
            s.n_volumes - 1
        )));
    }
    Ok(s.to_volume(k))
}

/// The input policy of `data_check` for one image: non-finite (and implausibly large) voxels
/// become 0 with a warning; an image without any finite value, or constant, has nothing to
/// register and is refused (exit 2) — it used to give an identity with exit 0 as moving, and
/// blame the mask as fixed. Negative values are allowed here (any image may be registered).
fn with_signal(v: Volume, path: &Path, role: &str) -> Result<Volume> {
    let mut s = Series::new(v.grid, 1, v.data);
    let report = data_check::clean_series(&mut s);
    if let Some(w) = report.warning() {
        super::console::warn(&format!("the {role} image {}: {w}", path.display()));
    }
    let v = s.to_volume(0);
    let n = v.data.len();
    if n > 0 && report.non_finite[0] == n {
        return Err(Error::input(format!(
            "the {role} image {} holds no finite value (every voxel is NaN or infinite): nothing to register",
            path.display()
        )));
    }
    let first = v.data.first().copied().unwrap_or(0.0);
    if v.data.iter().all(|&x| x == first) {
        return Err(Error::input(format!(
            "the {role} image {} is constant (every voxel is {first}): nothing to register",
            path.display()
        )));
    }
    Ok(v)
}

pub fn run(args: &RegisterArgs) -> Result<()> {
    let mut inputs: Vec<&Path> = vec![&args.fixed, &args.moving];
    if let Some(m) = &args.mask {
        inputs.push(m);
    }
    if let Some(i) = &args.init {
        inputs.push(i);
    }
    atomic::ensure_not_input(&args.out, &inputs)?;
    if let Some(r) = &args.resampled {
        atomic::ensure_not_input(r, &inputs)?;
    }

    let pool = super::resources::thread_pool(args.threads.n)?;
    let (fs, fmeta) = nifti::read_series(&args.fixed)?;
    let (ms, _) = nifti::read_series(&args.moving)?;
    let fixed = with_signal(
        pick(fs, args.volume, &args.fixed, "fixed")?,
        &args.fixed,
        "fixed",
    )?;
    let moving = with_signal(
        pick(ms, args.volume, &args.moving, "moving")?,
        &args.moving,
        "moving",
    )?;
    let mask = match &args.mask {
        Some(p) => Some(nifti::read_mask(p, &fixed.grid)?),
        None => None,
    };
    let init: Matrix4<f64> = match &args.init {
        None => Matrix4::identity(),
        Some(p) => {
            let all = transforms::read_any(p)?;
            match (all.len(), args.volume) {
                (1, _) => all[0],
                (n, Some(k)) if k < n => all[k],
                (n, _) => {
                    return Err(Error::input(format!(
                        "{} holds {n} transforms: give --volume K (0..{}) to pick one, or a single-transform file",
                        p.display(),
                        n - 1
                    )))
                }
            }
        }
    };
    let kind = match args.transform {
        TransformChoice::Rigid => TransformKind::Rigid,
        TransformChoice::Affine => TransformKind::Affine,
        TransformChoice::Eddy => {
            let (pe, _) = super::input::phase_encoding(args.pe_dir, &args.moving)?;
            TransformKind::Eddy {
                pe: pe.world(&moving.grid).into(),
            }
        }
    };
    let cfg = match args.metric {
        MetricChoice::Ls => RegistrationConfig::default(),
        MetricChoice::Mi => RegistrationConfig::mutual_information(),
    }
    .with_transform(kind);
    let result =
        pool.install(|| registration::register(&fixed, &moving, mask.as_ref(), &init, &cfg))?;

    let ext = args
        .out
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "mat" => transforms::write_ants_mat(&args.out, &result.matrix)?,
        "x5" | "h5" => transforms::write_x5(&args.out, &[result.matrix], Some(&fixed.grid))?,
        _ => transforms::write_itk(&args.out, &[result.matrix])?,
    }
    if let Some(r) = &args.resampled {
        let vol = pool.install(|| {
            registration::resample(
                &moving,
                &fixed.grid,
                &result.matrix,
                Interpolation::CubicBSpline,
            )
        });
        nifti::write_volume(r, &vol, Some(&fmeta))?;
    }
    if !args.quiet {
        super::console::stderr_line(&format!(
            "registered in {} iterations, {} {:.6}; transform written to {}",
            result.iterations,
            match args.metric {
                MetricChoice::Ls => "correlation",
                MetricChoice::Mi => "mutual information (nats)",
            },
            result.metric,
            args.out.display()
        ));
    }
    Ok(())
}
