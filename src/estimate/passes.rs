//! Stages 3–4: the bootstrap and the model passes (predict, find outlier slices, register,
//! and the eddy-current model's second level).

use super::dataset::{expand, realign_at, Dataset, FitRegion};
use super::outlier_stage::outlier_stage;
use super::weights::{shell_weights, weighs_residuals};
use super::{par_volumes, EstimateConfig, Run, Target, VolumeDiagnostics};
use crate::image::{Mask, MaskedSeries, Series, Volume};
use crate::io::gradients::{GradientTable, Shell};
use crate::model::batch::predict_masked;
use crate::model::{Model, ModelKind};
use crate::registration::eddy::{second_level_field, EddyModel};
use crate::registration::{prepare, prepare_weighted, sampling, RegistrationConfig, TransformKind};
use crate::report::rotate_bvecs;
use crate::{stats, Error, Result};
use nalgebra::Matrix4;
use rayon::prelude::*;
use std::borrow::Cow;

/// Fraction of the mask's voxels sampled by the bootstrap's mutual information. Measured on
/// the shared bench phantom (`-j 2`, final error after one DTI / two DKI passes, median mm):
/// all voxels 0.032 / 0.025 with a 33 s bootstrap; half 0.034 / 0.027 in 18 s; a quarter
/// 0.035 / 0.030 in 12 s (with the earlier least-squares link between shells). Half keeps the
/// accuracy and takes a third off a DTI run.
const BOOTSTRAP_MI_SAMPLING: f64 = 0.5;

/// The bootstrap's mutual information (every diffusion-weighted volume to the b=0 reference).
///
/// It must be *precise*, not only robust: the model passes cannot undo an error that varies
/// smoothly with the gradient direction, because each volume's prediction is built from
/// neighbours in direction space that carry the same error. Stopped after its half-resolution
/// levels (σ = 2 and 1 voxel), the bootstrap left the bench at 0.067 / 0.114 mm after one DTI
/// pass, 0.057 / 0.092 after two and 0.078 / 0.132 with DKI (two passes), against
/// 0.021 / 0.048 with the full-resolution level (shared machine, 2026-12-03). So the
/// full-resolution level stays, and that level is where the time goes.
///
/// Levels: half resolution σ = 2 voxels (the capture range), then full resolution σ = 0. The
/// middle level (half resolution, σ = 1) was dropped: `estimate -j 2`, final median / worst
/// error before → after, bootstrap CPU seconds (shared machine, load 7–11): bench dti
/// 0.0209 / 0.0478 → 0.0210 / 0.0478 mm, 13.3–14.9 → 9.1 s; bench dki 0.0222 / 0.0555 →
/// 0.0222 / 0.0557, 16.8 → 12.0 s; 6°/6 mm simulated (`large_motion`) dti 0.0469 / 0.0883 →
/// 0.0471 / 0.0871, 20.8 → 14.6 s; own `simulate --seed 11 --dropout 0.1 --drift 5` dti
/// 0.0424 / 0.0907 → 0.0425 / 0.0905; bench_artefacts `--transform eddy` dti 0.0504 / 0.1639
/// → 0.0502 / 0.1644. Dropping the coarsest level instead kept the accuracy but saved less
/// (bench dti 12.9 s). Stopping at 0.03 or 0.05 mm instead of 0.01 mm saved nothing
/// measurable. Sampling a quarter of the voxels instead of half at every level: 10.2 s but
/// 0.0229 / 0.0504 mm (an eighth: 8.5 s, 0.0278 / 0.0599).
///
/// Earlier (`RegistrationConfig::mutual_information()` → these settings with three levels):
/// the middle level sampled every second voxel and the 0.01 mm tolerance took a bench DTI
/// run from 56.8 to 45.0 CPU s at the same accuracy.
///
/// The family searched: rigid, except with the eddy-current model (`kind` Eddy), where the
/// bootstrap searches it too (6 rigid parameters and the 3 field gradients). A rigid bootstrap
/// hands every volume's eddy-current field to the first model pass (on bench_artefacts 0.46 /
/// 0.85 mm mean at b=1000 / 2000, 99 % a linear, odd function of the gradient direction). That
/// pass predicts each volume from the others while they are still distorted; the distortion's
/// second-order effect on intensities is even in g, which a tensor absorbs, so the first pass
/// locks an even direction pattern into every volume that no later pass removes (the DKI
/// residual per volume after two passes: 0.045 / 0.132 mm at b=1000 / 2000, 93 % explained by
/// functions of g up to quadratic; benches/README.md, "Direction patterns the model passes
/// cannot see"). Searching the eddy family here, by mutual information to the b=0
/// reference, leaves 0.018 / 0.042 mm. `estimate -j 2 --no-resample --transform eddy`, median
/// / worst (mm), rigid → eddy bootstrap (2026-12-03, sixth session; bootstrap CPU s about the
/// same, 6.7 → 6.9 on the first): bench_artefacts DKI 0.0703 / 0.2291 → 0.0251 / 0.0914, DTI
/// 0.0503 / 0.1523 → 0.0270 / 0.0876; own `simulate --ec 1 --seed 21` DKI 0.0908 / 0.3477 →
/// 0.0337 / 0.0769, `--ec 1 --seed 22 --dropout 0.1 --drift 5` 0.0928 / 0.2886 → 0.0367 /
/// 0.1017. Not for `--transform affine`: mutual information across contrasts reads contrast
/// as scale and shear (shared bench DKI 0.0344 / 0.0682 → 0.2640 / 0.3105), so that family's
/// bootstrap stays rigid. Rigid runs are unchanged (bit for bit).
fn bootstrap_registration(kind: TransformKind) -> RegistrationConfig {
    let level = |shrink, sigma| crate::registration::Level {
        shrink,
        sigma,
        cubic: true,
    };
    RegistrationConfig {
        levels: vec![level(2, 2.0), level(1, 0.0)],
        tol_mm: 0.01,
        sampling: BOOTSTRAP_MI_SAMPLING,
        ..RegistrationConfig::mutual_information()
    }
    .with_transform(bootstrap_family(kind))
}

/// The transform family the bootstrap searches for a run of family `kind` (see
/// [`bootstrap_registration`]): the eddy-current model's own, else rigid.
fn bootstrap_family(kind: TransformKind) -> TransformKind {
    match kind {
        TransformKind::Eddy { .. } => kind,
        TransformKind::Rigid | TransformKind::Affine => TransformKind::Rigid,
    }
}

/// Bootstrap: a model fitted to data that still move is a poor target (DKI especially, whose
/// fit explodes on inconsistent samples). So every diffusion-weighted volume is first
/// registered to the b=0 reference itself, by mutual information since the contrasts differ
/// (CSF bright at b=0, dark when diffusion-weighted). This also puts every shell in the
/// frame of the reference from the start. Measured on the bench phantom, this alone reaches
/// 0.035 mm median error; the model passes then refine it with same-contrast targets.
/// (Registering to leave-one-out shell means instead, and linking each shell to the
/// reference afterwards as FSL eddy does, left direction-dependent errors of 0.05–0.13 mm
/// that the model passes could not remove.)
pub fn bootstrap(run: &Run, data: &mut Dataset, reference: &Volume) -> Result<()> {
    // every volume has the same target: its samples are prepared once
    let reg = bootstrap_registration(run.cfg.registration.kind);
    let target = prepare(reference, Some(data.mask), &reg)?;
    let series = data.original();
    let transforms = &data.transforms;
    let results = par_volumes(&data.order, Some(("bootstrap", run.progress)), |_, h| {
        target
            .register(&series.to_volume(h), &transforms[h])
            .map(|r| r.matrix)
    });
    for (&h, r) in data.order.iter().zip(results) {
        data.transforms[h] = r?;
    }
    Ok(())
}

/// The eddy-current model of the configuration (None for rigid and affine transforms),
/// centred on the brain.
pub fn eddy_model(cfg: &EstimateConfig, mask: &Mask) -> Option<EddyModel> {
    match cfg.registration.kind {
        TransformKind::Eddy { pe } => Some(EddyModel::new(pe.into(), mask_centroid(mask))),
        _ => None,
    }
}

/// World centroid of a mask's voxels.
fn mask_centroid(mask: &Mask) -> nalgebra::Vector3<f64> {
    let idx = mask.indices();
    let mut c = nalgebra::Vector3::zeros();
    for &v in &idx {
        let [i, j, k] = mask.grid.ijk(v);
        c += mask.grid.world([i as f64, j as f64, k as f64]);
    }
    c / idx.len().max(1) as f64
}

/// The rigid parts of full eddy-model maps (transforms unchanged for other families).
fn head_motion_of(transforms: &[Matrix4<f64>], eddy: Option<&EddyModel>) -> Vec<Matrix4<f64>> {
    match eddy {
        Some(m) => transforms
            .iter()
            .map(|f| m.decompose(f, 0.0).rigid)
            .collect(),
        None => transforms.to_vec(),
    }
}

/// One volume's prediction, held at the fitted voxels only ([`FitRegion::voxels`]), with the
/// number of values [`sanitize_prediction`] replaced.
pub struct Prediction {
    pub values: Vec<f32>,
    pub replaced: usize,
    /// The registration's weight at each of those voxels ([`super::weights`]; None: equal
    /// weights), shared by the volumes of a shell.
    pub weights: Option<std::sync::Arc<Vec<f32>>>,
}

/// The predictions of one pass, in processing order; None where the predictor is the
/// reference itself.
pub type Predictions = Vec<Option<Prediction>>;

/// What each held-out volume is registered to in a model pass.
pub enum Predictor<'r> {
    /// A diffusion model fitted, leaving the volume out, to a snapshot of the others.
    Model(ModelKind),
    /// The b=0 reference itself (`--model b0`, nifreeze's `TrivialModel`): b=0 contrast, so
    /// registered by mutual information.
    Reference(&'r Volume),
}

impl<'r> Predictor<'r> {
    pub fn new(cfg: &EstimateConfig, reference: &'r Volume) -> Self {
        match cfg.target {
            Target::Model(kind) => Predictor::Model(kind),
            Target::B0 => Predictor::Reference(reference),
        }
    }

    pub fn is_model(&self) -> bool {
        matches!(self, Predictor::Model(_))
    }

    /// How a volume is registered to this predictor's target; `refine`: every volume starts
    /// near its answer ([`RegistrationConfig::refinement`] for a model's prediction).
    fn registration(&self, cfg: &EstimateConfig, refine: bool) -> RegistrationConfig {
        match self {
            Predictor::Model(_) if refine => cfg.registration.refinement(),
            Predictor::Model(_) => cfg.registration.clone(),
            // mutual information, searching the family asked for (it used to be rigid
            // whatever --transform said)
            Predictor::Reference(_) => {
                RegistrationConfig::mutual_information().with_transform(cfg.registration.kind)
            }
        }
    }

    /// Every volume's prediction from `src` realigned with the current transforms. The
    /// snapshot the model sees is fixed for the pass, so every prediction is made first;
    /// outlier slices can then be judged against the whole shell before any volume is
    /// registered.
    fn predict_all(
        &self,
        run: &Run,
        data: &Dataset,
        src: &Series,
        fit: &FitRegion,
        eddy: Option<&EddyModel>,
        step: &dyn Fn(&str) -> String,
    ) -> Result<Predictions> {
        let Predictor::Model(kind) = *self else {
            return Ok(data.order.iter().map(|_| None).collect());
        };
        let (cfg, timeline) = (run.cfg, run.timeline);
        let t = timeline.mark();
        let snapshot = realign_at(src, &data.transforms, &fit.voxels);
        let ceiling = voxel_maxima(&snapshot);
        timeline.record(&step("snapshot (realign)"), t);
        let t = timeline.mark();
        // gradients follow the head, not the eddy-current field (as FSL eddy rotates them)
        let gradients = rotate_bvecs(data.table, &head_motion_of(&data.transforms, eddy));
        // Both models get S0 as one b=0 sample: nifreeze does so for DKI only, but for DTI
        // on multi-shell data it is what makes the prediction resemble the measured volume
        // (correlation with the noise-free volume 0.62 → 0.97 on the sample phantom).
        let model = Model::new(kind)
            .fit_method(cfg.fit_method)
            .fold_fit(cfg.fold_fit)
            .b0_threshold(cfg.b0_threshold)
            .ignore_b0(cfg.ignore_b0)
            .s0_sample(true);
        let mut held: Vec<Option<Prediction>> = (0..src.n_volumes).map(|_| None).collect();
        for group in fit_groups(kind, &data.shells, &data.b0) {
            // The group's volumes alone (all of them: no copy); the fit's columns are the
            // group's volumes in order.
            let (sub_snapshot, sub_gradients);
            let (g_snapshot, g_gradients) = if group.fit.len() == src.n_volumes {
                (&snapshot, &gradients)
            } else {
                sub_snapshot = snapshot.select(&group.fit);
                sub_gradients = GradientTable {
                    bvals: group.fit.iter().map(|&k| gradients.bvals[k]).collect(),
                    bvecs: group.fit.iter().map(|&k| gradients.bvecs[k]).collect(),
                };
                (&sub_snapshot, &sub_gradients)
            };
            let members: Vec<usize> = data
                .order
                .iter()
                .copied()
                .filter(|h| group.predict.contains(h))
                .collect();
            let columns: Vec<usize> = members
                .iter()
                .map(|h| {
                    group
                        .fit
                        .iter()
                        .position(|k| k == h)
                        .expect("a group member")
                })
                .collect();
            // the fitted voxels a batch at a time: one batch's f64 log-signals in memory
            let values = predict_masked(&model, g_snapshot, g_gradients, &fit.mask, &columns)?;
            // each volume's values are moved out of their slot, never copied
            let slots: Vec<std::sync::Mutex<Vec<f32>>> =
                values.into_iter().map(std::sync::Mutex::new).collect();
            let predictions = par_volumes(&members, None, |i, h| {
                let mut values =
                    std::mem::take(&mut *slots[i].lock().unwrap_or_else(|e| e.into_inner()));
                let mates: Vec<usize> = data
                    .shells
                    .iter()
                    .find(|s| s.indices.contains(&h))
                    .map(|s| s.indices.iter().copied().filter(|&k| k != h).collect())
                    .unwrap_or_default();
                let replaced = sanitize_prediction(&mut values, &snapshot, &ceiling, &mates);
                Ok(Prediction {
                    values,
                    replaced,
                    weights: None,
                })
            });
            for (&h, p) in members.iter().zip(predictions) {
                held[h] = Some(p?);
            }
        }
        if weighs_residuals(kind) {
            let weights = shell_weights(&snapshot, &held, &data.shells);
            for (p, w) in held.iter_mut().zip(weights) {
                if let Some(p) = p {
                    p.weights = w;
                }
            }
        }
        timeline.record(&step("model fit + predict"), t);
        Ok(data.order.iter().map(|&h| held[h].take()).collect())
    }
}

/// Fewest volumes a shell needs to be fitted on its own by DTI (with the b=0 volumes): with
/// one left out, 19 samples and S0 for the 7 parameters. Smaller shells are predicted from all
/// diffusion-weighted volumes together. Fewer cost more than they gained: at 12 per shell the
/// prediction flagged a false outlier slice on the 4 mm sample (`--transform eddy`); at 16 per
/// shell the 2 mm three-shell phantom gained (b=1000 median 0.095 → 0.083 mm) but a 5 mm
/// phantom lost dropout detection (recall and precision 1.00 → 0.91, tests/outliers.rs).
pub const DTI_MIN_SHELL_VOLUMES: usize = 20;

/// Volumes fitted together (`fit`: 4-D indices, ascending, b=0 volumes included) and the
/// diffusion-weighted volumes predicted from that fit (`predict`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FitGroup {
    pub fit: Vec<usize>,
    pub predict: Vec<usize>,
}

/// Which volumes each prediction is fitted on. DKI: all of them (its kurtosis term is there to
/// model the curvature of the signal across b-values). DTI: every shell below the highest
/// with the b=0 volumes on its own, the highest from all volumes together. A tensor is
/// mono-exponential in b, so one fitted across shells over-predicts a lower shell wherever
/// the decay is not (partial volume with CSF at the brain's edge and the ventricles): the
/// prediction of a b=1000 volume from a joint b=1000/2000 fit looks ≈1 % larger than the
/// anatomy, which a registration reads as motion (../shared/phantoms/bench realigned with the
/// true motion: rigid error of b=1000 volumes 0.04–0.09 mm, affine scale 0.991; fitted per
/// shell 0.007–0.011 mm, scale 1.000). The highest shell is the noisiest, and there the
/// joint fit measured better than its own (bench, `estimate --model dti`: b=2000 volumes
/// median / worst 0.029 / 0.059 mm joint, 0.035 / 0.063 alone; simulated three shells: b=3000
/// 0.109 / 0.142 joint, 0.130 / 0.201 alone). Shells smaller than [`DTI_MIN_SHELL_VOLUMES`]
/// are predicted from the joint fit too.
pub fn fit_groups(kind: ModelKind, shells: &[Shell], b0: &[usize]) -> Vec<FitGroup> {
    let all = || {
        let mut v: Vec<usize> = b0.to_vec();
        v.extend(shells.iter().flat_map(|s| s.indices.iter().copied()));
        v.sort_unstable();
        v
    };
    let per_shell = kind == ModelKind::Dti && shells.len() > 1;
    let top = shells
        .iter()
        .map(|s| s.bvalue)
        .fold(f64::NEG_INFINITY, f64::max);
    let (alone, rest): (Vec<&Shell>, Vec<&Shell>) = shells
        .iter()
        .partition(|s| per_shell && s.indices.len() >= DTI_MIN_SHELL_VOLUMES && s.bvalue < top);
    let mut groups: Vec<FitGroup> = alone
        .iter()
        .map(|s| {
            let mut fit: Vec<usize> = b0.to_vec();
            fit.extend(s.indices.iter().copied());
            fit.sort_unstable();
            FitGroup {
                fit,
                predict: s.indices.clone(),
            }
        })
        .collect();
    if !rest.is_empty() {
        let mut predict: Vec<usize> = rest
            .iter()
            .flat_map(|s| s.indices.iter().copied())
            .collect();
        predict.sort_unstable();
        groups.push(FitGroup {
            fit: all(),
            predict,
        });
    }
    groups
}

/// One model pass: predict every diffusion-weighted volume from a snapshot of the others,
/// find outlier slices against those predictions (and predict again without them), register
/// each volume to its prediction, and (eddy-current model) apply the second-level field model.
pub fn model_pass(
    run: &Run,
    data: &mut Dataset,
    predictor: &Predictor,
    fit: &FitRegion,
    eddy: Option<&EddyModel>,
    pass: usize,
) -> Result<()> {
    let (cfg, timeline) = (run.cfg, run.timeline);
    let stage = format!("pass {pass}/{}", cfg.passes);
    let step = |what: &str| format!("{stage}: {what}");
    // The snapshot: the working series (outlier slices replaced once found).
    let mut predictions = predictor.predict_all(run, data, data.working(), fit, eddy, &step)?;
    if let (Some(ocfg), true) = (&cfg.outliers, predictor.is_model()) {
        let detect_with = |p: &Predictions| {
            timeline.time(&step("outlier detection"), || {
                outlier_stage(data, p, &fit.voxels, ocfg)
            })
        };
        let mut found = detect_with(&predictions);
        if !found.table.rows.is_empty() {
            // The fit behind these predictions saw the other volumes' dropouts, which
            // distort the prediction of those slices in every volume (on a 4 mm phantom
            // by up to ±50 %, hiding true dropouts and faking others): refit without them
            // and judge again (eddy does the same across its iterations).
            let cleaned = found.cleaned(data.base());
            // The first predictions are done with (`found` holds its own copies of the
            // replacements): free them before the refit, which would otherwise hold two sets
            // of predictions at once. On the HCP-size phantom (pass 2 found one dropout slice)
            // that was the run's peak: 5325 → 6355 MB in pass 2's model stage.
            drop(std::mem::take(&mut predictions));
            predictions = predictor.predict_all(run, data, &cleaned, fit, eddy, &step)?;
            found = detect_with(&predictions);
        }
        data.set_outliers(found);
    }
    let t = timeline.mark();
    // After a bootstrap that searched this family (rigid, or the eddy-current model's) or an
    // earlier pass every volume starts within a fraction of a voxel: the finest level only.
    // (An affine run's bootstrap is rigid: its first pass keeps the pyramid.) With the eddy
    // bootstrap, pass 1 refining instead of the pyramid (`estimate -j 2 --transform eddy`, DKI,
    // median / worst mm): bench_artefacts 0.0251 / 0.0914 both ways, pass-1 registration
    // 5.1 → 2.7 CPU s; own `--ec 1` seed 21 0.0337 / 0.0769 → 0.0339 / 0.0769 (4.1 → 3.5 s),
    // seed 22 0.0367 / 0.1017 → 0.0364 / 0.1010 (4.3 → 3.6 s).
    let refine = pass > 1
        || (data.has_b0() && bootstrap_family(cfg.registration.kind) == cfg.registration.kind);
    register_pass(run, data, predictor, &predictions, fit, &stage, refine)?;
    if let Some(m) = eddy {
        // FSL eddy's second-level model: see `second_level_field`
        let groups: Vec<Vec<usize>> = data.shells.iter().map(|s| s.indices.clone()).collect();
        second_level_field(m, &mut data.transforms, &groups, &data.table.bvecs);
    }
    timeline.record(&step("registration"), t);
    Ok(())
}

/// Register every diffusion-weighted volume of the working series to its prediction, starting
/// from its current transform; updates the transforms and the diagnostics.
fn register_pass(
    run: &Run,
    data: &mut Dataset,
    predictor: &Predictor,
    predictions: &Predictions,
    fit: &FitRegion,
    stage: &str,
    refine: bool,
) -> Result<()> {
    let cfg = run.cfg;
    let registration = predictor.registration(cfg, refine);
    let (working, mask) = (data.working(), data.mask);
    let (transforms, diagnostics, outliers) = (&data.transforms, &data.diagnostics, &data.outliers);
    // every target is on the series' grid with the brain mask: its sample points, computed
    // once (volumes with outlier slices leave some out and choose their own); an error
    // surfaces at the first volume that needs them, as it would from `register`
    let shared = sampling(&working.grid, Some(mask), &registration);
    let results = par_volumes(&data.order, Some((stage, run.progress)), |i, h| {
        if outliers
            .as_ref()
            .is_some_and(|o| o.table.broken_volumes.contains(&h))
        {
            // A broken volume holds nothing to register: it keeps its estimate.
            return Ok((transforms[h], diagnostics[h].clone()));
        }
        let (expanded, weights);
        let (target, replaced) = match (&predictions[i], predictor) {
            (Some(p), _) => {
                expanded = expand(&working.grid, &fit.voxels, &p.values);
                // outside the fitted region (which the dilated mask never reaches): the
                // median weight
                weights = p.weights.as_ref().map(|w| {
                    let mut grid = vec![1f32; working.grid.len()];
                    for (&l, &x) in fit.voxels.iter().zip(w.iter()) {
                        grid[l] = x;
                    }
                    grid
                });
                (&expanded, p.replaced)
            }
            (None, Predictor::Reference(reference)) => {
                weights = None;
                (*reference, 0)
            }
            (None, Predictor::Model(_)) => unreachable!("a model predicts every volume"),
        };
        // Outlier slices weigh nothing: the moving volume carries the prediction there
        // (so smoothing does not spread the dark slice), and the fixed-space mask
        // leaves out every point that lands on them.
        let excluded = outliers
            .as_ref()
            .and_then(|o| o.excluded_mask(h, mask, &transforms[h], &registration));
        let moving = working.to_volume(h);
        let w = weights.as_deref();
        let r = match &excluded {
            Some((m, reg)) => {
                let s = sampling(&target.grid, Some(m), reg)?;
                prepare_weighted(target, Cow::Owned(s), w)?.register(&moving, &transforms[h])
            }
            None => match &shared {
                Ok(s) => {
                    prepare_weighted(target, Cow::Borrowed(s), w)?.register(&moving, &transforms[h])
                }
                Err(e) => Err(match e {
                    Error::Input(m) => Error::Input(m.clone()),
                    Error::Runtime(m) => Error::Runtime(m.clone()),
                }),
            },
        }?;
        Ok((
            r.matrix,
            VolumeDiagnostics {
                correlation: r.metric,
                iterations: r.iterations,
                replaced_fraction: replaced as f64 / fit.voxels.len().max(1) as f64,
            },
        ))
    });
    for (&h, r) in data.order.iter().zip(results) {
        let (m, d): (Matrix4<f64>, VolumeDiagnostics) = r?;
        data.transforms[h] = m;
        data.diagnostics[h] = d;
    }
    Ok(())
}

/// Replace implausible predicted values before registering to them.
///
/// DIPY-exact DKI predictions explode where the fit is ill-posed (values up to 1e12 in a few
/// per cent of voxels); a registration target with such spikes is useless. A predicted value is
/// implausible when it is not finite, negative, or above everything that voxel ever measured
/// (the maximum over all volumes, b=0 included). It is replaced by the median of that voxel's
/// other measurements in the held-out volume's shell — what a model-free predictor would say.
/// `pred` is at `data`'s voxels; `ceiling` is [`voxel_maxima`] of `data`. Returns the number of
/// voxels replaced.
pub fn sanitize_prediction(
    pred: &mut [f32],
    data: &MaskedSeries,
    ceiling: &[f32],
    shell_mates: &[usize],
) -> usize {
    let mut replaced = 0;
    let mut buf = Vec::with_capacity(shell_mates.len());
    for (i, p) in pred.iter_mut().enumerate() {
        if p.is_finite() && *p >= 0.0 && *p <= ceiling[i] {
            continue;
        }
        buf.clear();
        buf.extend(shell_mates.iter().map(|&k| data.volume(k)[i] as f64));
        *p = stats::median(&mut buf).max(0.0) as f32;
        replaced += 1;
    }
    replaced
}

/// The largest value each held voxel takes over all volumes of `data`.
pub fn voxel_maxima(data: &MaskedSeries) -> Vec<f32> {
    let mut hi = vec![f32::MIN; data.voxels().len()];
    for k in 0..data.n_volumes {
        hi.par_chunks_mut(8192)
            .zip(data.volume(k).par_chunks(8192))
            .for_each(|(h, d)| {
                h.iter_mut().zip(d).for_each(|(h, &d)| *h = h.max(d));
            });
    }
    hi
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Grid;

    #[test]
    fn the_bootstrap_searches_the_eddy_family_and_keeps_affine_runs_rigid() {
        let eddy = TransformKind::Eddy {
            pe: [0.0, 1.0, 0.0],
        };
        assert_eq!(bootstrap_registration(eddy).kind, eddy);
        for kind in [TransformKind::Rigid, TransformKind::Affine] {
            let reg = bootstrap_registration(kind);
            assert_eq!(reg.kind, TransformKind::Rigid);
            // everything but the family is the same bootstrap
            assert_eq!(
                reg,
                bootstrap_registration(eddy).with_transform(TransformKind::Rigid)
            );
        }
    }

    #[test]
    fn implausible_predictions_are_replaced_by_the_shell_median() {
        let grid = Grid::new([4, 1, 1], Matrix4::identity());
        // Volumes: a b=0 (the ceiling) and three of one shell.
        let data = Series::from_volumes(
            grid,
            &[
                vec![100.0, 100.0, 100.0, 100.0],
                vec![50.0, 40.0, 30.0, 20.0],
                vec![52.0, 44.0, 36.0, 28.0],
                vec![54.0, 48.0, 42.0, 36.0],
            ],
        );
        // held at three of the four voxels (the model fits only part of the grid)
        let vols: Vec<Vec<f32>> = (0..data.n_volumes)
            .map(|k| [0, 1, 3].iter().map(|&l| data.volume(k)[l]).collect())
            .collect();
        let held = MaskedSeries::from_volumes(data.grid.clone(), vec![0, 1, 3], &vols);
        assert_eq!((held.get(1, 3), held.get(1, 2)), (20.0, 0.0));
        let ceiling = voxel_maxima(&held);
        assert_eq!(ceiling, vec![100.0; 3]);
        let mut pred = vec![f32::INFINITY, -3.0, 1e12];
        let n = sanitize_prediction(&mut pred, &held, &ceiling, &[2, 3]);
        assert_eq!(n, 3);
        assert_eq!(pred, vec![53.0, 46.0, 32.0]);
        let mut fine = vec![60.0, 0.0, 100.0];
        assert_eq!(sanitize_prediction(&mut fine, &held, &ceiling, &[2, 3]), 0);
    }
}
