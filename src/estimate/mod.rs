//! The leave-one-volume-out motion-estimation pipeline.
//!
//! [`estimate`] runs these stages, in this order, over one [`Dataset`] (the series, its
//! gradients, the brain mask and every volume's current transform):
//!
//! 0. **Coil shading** ([`shading::of_series`]): the receive field, fixed in the scanner, is
//!    estimated from the b=0 median and the shell means as acquired and divided out of every
//!    volume (a gain on the series: no copy) before anything else reads it.
//! 1. **b=0 reference** ([`reference::align_b0s`]): b=0 volumes are registered to their
//!    voxelwise median; the median is recomputed from the realigned b=0s and the registration
//!    repeated once. That refined median defines the reference frame of every transform
//!    returned.
//! 2. **Signal drift** ([`reference::drift_stage`]): fitted to the realigned b=0 means; with
//!    `drift_correct` every later stage sees the corrected series.
//! 3. **Bootstrap** ([`passes::bootstrap`]): every diffusion-weighted volume is registered to
//!    that reference by mutual information (a model fitted to data that still move is a poor
//!    target).
//! 4. **Model passes** ([`passes::model_pass`]): each fits the diffusion model to a *fixed*
//!    snapshot of the data — the series realigned once with the current estimates (b-vectors
//!    rotated) — predicts every diffusion-weighted volume from all the others
//!    ([`passes::Predictor`]; `--model b0` predicts the b=0 reference, nifreeze's
//!    `TrivialModel`), finds outlier slices against those predictions
//!    ([`outlier_stage::outlier_stage`]), registers each original volume to its prediction
//!    starting from its current estimate, and (eddy-current model) applies the second-level
//!    field model.
//! 5. **Shell link** ([`link::link_shells`]): the lowest shell's realigned mean is tied once
//!    more to the reference, every other shell to the lowest through their spread over
//!    gradient directions.
//!
//! Every per-volume loop runs through [`par_volumes`]. Because a pass fits a fixed snapshot,
//! the volumes of one pass are independent of each other: they run in parallel, and the result
//! does not depend on the processing order or on the number of threads (bit for bit). The order
//! only decides which volume is reported first.

mod dataset;
mod link;
mod outlier_stage;
mod passes;
mod reference;
pub mod shading;
mod weights;

pub use dataset::{
    drift_corrected, median_volume, processing_order, realign, realign_at, realign_volume, Dataset,
};
pub use link::{links_to_b0, shell_links, ShellImage, MIN_SPREAD_VOLUMES};
pub use outlier_stage::OutlierStage;
pub use passes::{fit_groups, sanitize_prediction, voxel_maxima, FitGroup, DTI_MIN_SHELL_VOLUMES};

use crate::drift::Drift;
use crate::image::{Mask, Series, Volume};
use crate::io::gradients::{check_usable, GradientTable};
use crate::model::{requirements, FitMethod, FoldFit, Model, ModelKind};
use crate::outliers::OutlierConfig;
use crate::registration::eddy::{EddyModel, EddyParams};
use crate::registration::RegistrationConfig;
use crate::timing::Timeline;
use crate::{Error, Result};
use nalgebra::Matrix4;
use rayon::prelude::*;

/// What each held-out volume is registered to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The leave-one-out prediction of a diffusion model.
    Model(ModelKind),
    /// The b=0 reference itself (no model): a cheap baseline.
    B0,
}

/// Order in which held-out volumes are processed (see the module doc: results do not depend on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Linear,
    Random,
    Bvalue,
    Centralsym,
}

/// A validated configuration (the command builds it once from its arguments, see
/// `commands/estimate_config.rs`); [`estimate`] trusts it.
#[derive(Clone, Debug)]
pub struct EstimateConfig {
    pub target: Target,
    pub fit_method: FitMethod,
    /// How the leave-one-out folds are fitted ([`FoldFit`]).
    pub fold_fit: FoldFit,
    pub registration: RegistrationConfig,
    pub order: Order,
    pub passes: usize,
    pub seed: u64,
    pub b0_threshold: f64,
    /// S0 from the 98th percentile of the data instead of the b=0 median (nifreeze's ignore_bzero).
    pub ignore_b0: bool,
    /// Outlier-slice detection after each model pass (None: off).
    pub outliers: Option<OutlierConfig>,
    /// Divide every volume by the signal drift fitted to the b=0 volumes before the model
    /// fits ([`crate::drift`]); the drift is estimated and reported either way.
    pub drift_correct: bool,
}

impl EstimateConfig {
    /// Whether the gradient table supports this configuration: enough diffusion-weighted
    /// volumes, a b=0 reference (or `ignore_b0`), what the model's leave-one-out fits need
    /// ([`Model::design`], the rule `predict` follows too). Returns warnings for what is
    /// possible but measured to be unreliable. [`estimate`] trusts a configuration that
    /// passed this check.
    pub fn check_gradients(&self, table: &GradientTable) -> Result<Vec<String>> {
        check_usable(table, self.b0_threshold, self.ignore_b0)?;
        match self.target {
            Target::B0 => {
                if table.b0_indices(self.b0_threshold).is_empty() {
                    return Err(Error::input(
                        "--model b0 registers every volume to the b=0 reference, but the series has no b=0 volume: use --model dti",
                    ));
                }
                Ok(Vec::new())
            }
            Target::Model(kind) => {
                // The model decides what its design needs ([`Model::design`]); the passes
                // always append the S0 sample.
                Model::new(kind)
                    .b0_threshold(self.b0_threshold)
                    .s0_sample(true)
                    .design(table)?;
                Ok(requirements::warnings(kind, table, self.b0_threshold))
            }
        }
    }
}

impl EstimateConfig {
    /// Complete what needs the series' grid: outlier slices are counted along `slice_axis`
    /// (a voxel axis) and how much brain a slice needs to be judged depends on the in-plane
    /// voxel size; the eddy-current model's phase-encode axis `pe_world` (scanner space) is
    /// a voxel axis of the grid.
    pub fn complete_for_grid(
        &mut self,
        grid: &crate::image::Grid,
        slice_axis: usize,
        pe_world: Option<nalgebra::Vector3<f64>>,
    ) {
        self.outliers = self.outliers.take().map(|o| OutlierConfig {
            threshold: o.threshold,
            ..OutlierConfig::for_grid(grid.voxel_sizes(), slice_axis)
        });
        if let Some(pe) = pe_world {
            self.registration = RegistrationConfig::eddy(pe.into());
        }
    }
}

/// A progress report: `done` of `total` steps of `stage` are finished.
#[derive(Clone, Debug)]
pub struct Progress<'a> {
    pub stage: &'a str,
    pub done: usize,
    pub total: usize,
}

/// Where progress reports go (called from worker threads).
pub type ProgressFn<'a> = dyn Fn(&Progress) + Sync + 'a;

/// Per-volume diagnostics of the last pass.
#[derive(Clone, Debug, Default)]
pub struct VolumeDiagnostics {
    /// Normalised correlation between target and registered volume (1 = perfect).
    pub correlation: f64,
    pub iterations: usize,
    /// Fraction of target voxels replaced as implausible (see [`sanitize_prediction`]).
    pub replaced_fraction: f64,
}

pub struct MotionEstimate {
    /// One RAS reference→moving matrix per 4-D volume.
    pub transforms: Vec<Matrix4<f64>>,
    pub diagnostics: Vec<VolumeDiagnostics>,
    /// The b=0 reference (median of the realigned b=0 volumes) that defines the frame.
    pub reference: Volume,
    /// With the eddy-current model: its axis and centre, and each volume's parameters
    /// (`model.compose(&params[k]) == transforms[k]` up to rounding).
    pub eddy: Option<(EddyModel, Vec<EddyParams>)>,
    /// Outlier slices found by the last model pass and their replacements (None: detection
    /// off or no model).
    pub outliers: Option<OutlierStage>,
    /// Signal drift fitted to the b=0 volumes (None with fewer than two).
    pub drift: Option<Drift>,
    /// The coil shading divided out of the series before every stage ([`shading::of_series`];
    /// None when it could not be estimated). `reference` and the outlier predictions are on
    /// the shading-free scale; the outlier replacements are not (see [`OutlierStage`]).
    pub shading: Option<shading::Shading>,
}

impl MotionEstimate {
    /// The head motion alone of each volume: the rigid part of the eddy model, else the
    /// transforms themselves. Gradients are rotated by these (as FSL eddy does).
    pub fn head_motion(&self) -> Vec<Matrix4<f64>> {
        match &self.eddy {
            Some((_, p)) => p.iter().map(|p| p.rigid).collect(),
            None => self.transforms.clone(),
        }
    }
}

/// What every stage shares besides the data: the configuration, where progress goes and
/// where stage times go.
pub(crate) struct Run<'a> {
    pub cfg: &'a EstimateConfig,
    pub progress: &'a ProgressFn<'a>,
    pub timeline: &'a Timeline<'a>,
}

/// The one parallel loop over volumes: `f(i, volumes[i])` for every `i` on the current rayon
/// pool, results in the order of `volumes` (so never dependent on scheduling). With a stage
/// name, every finished volume is reported to `progress` as `done` of `volumes.len()`.
pub fn par_volumes<T: Send>(
    volumes: &[usize],
    report: Option<(&str, &ProgressFn)>,
    f: impl Fn(usize, usize) -> T + Sync + Send,
) -> Vec<T> {
    let done = std::sync::atomic::AtomicUsize::new(0);
    volumes
        .par_iter()
        .enumerate()
        .map(|(i, &k)| {
            let out = f(i, k);
            if let Some((stage, progress)) = report {
                let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                progress(&Progress {
                    stage,
                    done: d,
                    total: volumes.len(),
                });
            }
            out
        })
        .collect()
}

/// Run the whole estimation. `mask` is the brain mask; `progress` is called from worker threads;
/// every stage's wall time goes to `timeline`. `cfg` must have passed
/// [`EstimateConfig::check_gradients`] for `table`.
pub fn estimate(
    series: &Series,
    table: &GradientTable,
    mask: &Mask,
    cfg: &EstimateConfig,
    progress: &ProgressFn,
    timeline: &Timeline,
) -> Result<MotionEstimate> {
    if table.len() != series.n_volumes {
        return Err(Error::input(format!(
            "{} gradients for {} volumes",
            table.len(),
            series.n_volumes
        )));
    }
    let run = Run {
        cfg,
        progress,
        timeline,
    };
    let shading = timeline.time("coil shading", || {
        shading::of_series(
            series,
            &table.b0_indices(cfg.b0_threshold),
            &crate::io::gradients::shells(table, cfg.b0_threshold),
            mask,
        )
    });
    let flat = shading.as_ref().map(|s| series.with_gain(&s.inverse()));
    let series = flat.as_ref().unwrap_or(series);
    let mut data = Dataset::new(series, table, mask, cfg);
    let eddy = passes::eddy_model(cfg, mask);

    let reference = timeline.time("b0 alignment", || {
        reference::align_b0s(&run, &mut data, eddy.as_ref())
    })?;
    let drift = timeline.time("signal drift", || reference::drift_stage(&data));
    if let (Some(d), true) = (&drift, cfg.drift_correct) {
        data.correct_drift(d);
    }
    if data.has_b0() {
        timeline.time("bootstrap (mutual information to b=0)", || {
            passes::bootstrap(&run, &mut data, &reference)
        })?;
    }
    let predictor = passes::Predictor::new(cfg, &reference);
    let fit = data.fit_region(cfg);
    for pass in 1..=cfg.passes {
        passes::model_pass(&run, &mut data, &predictor, &fit, eddy.as_ref(), pass)?;
    }
    if predictor.is_model() && data.has_b0() {
        timeline.time("shell-to-b0 link", || {
            link::link_shells(&run, &mut data, &reference)
        })?;
    }
    let mut result = data.finish(reference, eddy, drift, cfg.b0_threshold);
    result.shading = shading;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn par_volumes_keeps_the_order_and_reports_every_volume() {
        let seen = std::sync::Mutex::new(Vec::new());
        let progress = |p: &Progress| seen.lock().unwrap().push((p.done, p.total));
        let vols: Vec<usize> = (0..50).rev().collect();
        let out = par_volumes(&vols, Some(("s", &progress)), |i, k| (i, k * 2));
        assert_eq!(out, (0..50).map(|i| (i, (49 - i) * 2)).collect::<Vec<_>>());
        let mut seen = seen.into_inner().unwrap();
        seen.sort_unstable();
        assert_eq!(seen, (1..=50).map(|d| (d, 50)).collect::<Vec<_>>());
    }
}
