//! `predict`: the leave-one-volume-out model prediction of chosen volumes (what each volume
//! is registered to), written as float32 NIfTI.

use super::input::load_dwi;
use nifreeze::image::{Mask, Series, Volume};
use nifreeze::io::atomic::ensure_not_input;
use nifreeze::io::gradients::check_usable;
use nifreeze::io::nifti;
use nifreeze::mask::brain_mask;
use nifreeze::model::engine::median_b0;
use nifreeze::model::{requirements, FitMethod, Model, ModelKind};
use nifreeze::{Error, Result};

use crate::cli::{exit_codes, gradients_help, FitMethodChoice, GradientArgs, Threads};
use clap::{Args, ValueEnum};
use std::path::PathBuf;

// ---- the command's options ----

pub const HELP: &str = concat!(
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

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictModelChoice {
    /// Diffusion tensor (DIPY TensorModel).
    Dti,
    /// Diffusion kurtosis (DIPY DiffusionKurtosisModel); needs two non-zero shells.
    Dki,
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
    #[command(flatten)]
    pub threads: Threads,
    /// Output NIfTI (float32, one volume per --volume).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

pub fn run(args: &PredictArgs) -> Result<()> {
    if args.volume.is_empty() {
        return Err(Error::input("give at least one volume index with --volume"));
    }
    let mut inputs = vec![args.dwi.as_path()];
    if let Some(m) = &args.mask {
        inputs.push(m.as_path());
    }
    ensure_not_input(&args.out, &inputs)?;
    let pool = super::resources::thread_pool(args.threads.n)?;

    let dwi = load_dwi(
        &args.dwi,
        &args.gradients,
        // not measured per thread: the series-copy plan it always had
        super::resources::MemoryPlan {
            series_copies: 2.0,
            volumes_per_thread: 0.0,
        },
        pool.current_num_threads(),
        None,
    )?;
    let g = &args.gradients;
    let table = &dwi.gradients.table;
    check_usable(table, g.b0_threshold, g.ignore_b0)?;
    let n = dwi.series.n_volumes;
    for &k in &args.volume {
        if k >= n {
            return Err(Error::input(format!(
                "--volume {k} is out of range: the series has volumes 0-{}",
                n - 1
            )));
        }
        if table.bvals[k] <= g.b0_threshold {
            return Err(Error::input(format!(
                "--volume {k} is a b=0 volume (b={}); only diffusion-weighted volumes (b > {}) have a model prediction",
                table.bvals[k], g.b0_threshold
            )));
        }
    }

    let kind = match args.model {
        PredictModelChoice::Dti => ModelKind::Dti,
        PredictModelChoice::Dki => ModelKind::Dki,
    };
    let method = match args.fit_method {
        FitMethodChoice::Wls => FitMethod::Wls,
        FitMethodChoice::Ols => FitMethod::Ols,
    };
    // The same rule as estimate's (model::requirements): the engine refuses what is
    // impossible; what is possible but measured to be unreliable is a warning.
    for w in requirements::warnings(kind, table, g.b0_threshold) {
        super::console::warn(&w);
    }

    let volumes: Vec<Volume> = pool.install(|| -> Result<Vec<Volume>> {
        let mask = match &args.mask {
            Some(p) => nifti::read_mask(p, &dwi.series.grid)?,
            None => auto_mask(&dwi.series, table, g.b0_threshold)?,
        };
        if mask.count() == 0 {
            return Err(Error::input(
                "the brain mask is empty: give a mask with voxels inside the brain (--mask)",
            ));
        }
        let engine = Model::new(kind)
            .fit_method(method)
            .b0_threshold(g.b0_threshold)
            .ignore_b0(g.ignore_b0)
            .leave_one_out(&dwi.series, table, &mask)?;
        args.volume.iter().map(|&k| engine.predict(k)).collect()
    })?;

    if volumes.len() == 1 {
        nifti::write_volume(&args.out, &volumes[0], Some(&dwi.meta))
    } else {
        let data: Vec<Vec<f32>> = volumes.into_iter().map(|v| v.data).collect();
        let series = Series::from_volumes(dwi.series.grid.clone(), &data);
        nifti::write_series(&args.out, &series, Some(&dwi.meta))
    }
}

/// Automatic brain mask from the median b=0 (or, without b=0 volumes, the mean of the
/// diffusion-weighted volumes).
fn auto_mask(
    series: &Series,
    table: &nifreeze::io::gradients::GradientTable,
    b0_threshold: f64,
) -> Result<Mask> {
    let reference = match median_b0(series, table, b0_threshold) {
        Some(v) => v,
        None => {
            let dw = table.dw_indices(b0_threshold);
            let mut acc = vec![0.0f64; series.grid.len()];
            for &k in &dw {
                for (a, &v) in acc.iter_mut().zip(series.volume(k).iter()) {
                    *a += v as f64;
                }
            }
            Volume::new(
                series.grid.clone(),
                acc.iter().map(|&a| (a / dw.len() as f64) as f32).collect(),
            )
        }
    };
    let m = brain_mask(&reference);
    if m.count() == 0 {
        return Err(Error::input(
            "the automatic brain mask is empty (is the b=0 image blank?); give one with --mask",
        ));
    }
    Ok(m)
}
