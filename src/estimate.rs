//! The leave-one-volume-out motion-estimation loop.
//!
//! 1. b=0 volumes are registered to their voxelwise median; the median is recomputed from the
//!    realigned b=0s and the registration repeated once. That refined median defines the
//!    reference frame of every transform returned.
//! 2. Bootstrap: every diffusion-weighted volume is registered to that reference by mutual
//!    information (a model fitted to data that still move is a poor target).
//! 3. Each pass fits the diffusion model to a *fixed* snapshot of the data — the original
//!    series realigned once with the current estimates (b-vectors rotated) — and, for every
//!    diffusion-weighted volume, predicts it from all the others and registers the original
//!    volume to that prediction, starting from its current estimate.
//! 4. Each shell's realigned mean is tied once more to the reference ([`link_shells`]).
//!
//! Because a pass fits a fixed snapshot, the volumes of one pass are independent of each other:
//! they run in parallel, and the result does not depend on the processing order or on the number
//! of threads (bit for bit). The order only decides which volume is reported first.

use crate::drift::Drift;
use crate::image::{Grid, Mask, MaskedSeries, Series, Volume};
use crate::io::gradients::{check_usable, shells, GradientTable, Shell};
use crate::mask::dilate;
use crate::model::batch::predict_masked;
use crate::model::{requirements, EngineOptions, FitMethod, ModelKind};
use crate::outliers::{detect, slice_sums, OutlierConfig, OutlierTable, SliceSums};
use crate::registration::eddy::{second_level_field, split_constant, EddyModel, EddyParams};
use crate::registration::interpolate::BSpline;
use crate::registration::{
    prepare, register, resample, Interpolation, RegistrationConfig, TransformKind,
};
use crate::report::rotate_bvecs;
use crate::timing::Timeline;
use crate::{stats, Error, Result};
use nalgebra::Matrix4;
use rayon::prelude::*;

/// Fraction of the mask's voxels sampled by the bootstrap's mutual information. Measured on
/// the shared bench phantom (`-j 2`, final error after one DTI / two DKI passes, median mm):
/// all voxels 0.032 / 0.025 with a 33 s bootstrap; half 0.034 / 0.027 in 18 s; a quarter
/// 0.035 / 0.030 in 12 s (with the earlier least-squares link between shells). Half keeps the
/// accuracy and takes a third off a DTI run.
const BOOTSTRAP_MI_SAMPLING: f64 = 0.5;

/// The bootstrap's mutual information (every diffusion-weighted volume to the b=0 reference):
/// the model passes refine its answer with same-contrast targets, so it needs to be robust
/// rather than precise. Measured against `RegistrationConfig::mutual_information()` with
/// [`BOOTSTRAP_MI_SAMPLING`] (`estimate --model dti -j 2`, final median / worst error, CPU
/// seconds of the whole run on a machine shared by three agents): the middle level (σ = 1
/// voxel) sampled every second voxel instead of every voxel, and levels stopped when a step
/// moves the brain less than 0.01 mm instead of 0.001 mm: bench 0.0244 / 0.0439 →
/// 0.0244 / 0.0440 mm, 56.8 → 45.0 s (bootstrap 33 → 19 s wall); bench_artefacts
/// (`--transform eddy`) 0.0913 / 0.2040 → 0.0910 / 0.2041 mm, 113 → 97 s. Each change alone
/// on bench: the level 48.7 s, the tolerance 53.1 s, same accuracy. Sampling 0.3 instead of
/// 0.5 on top lost accuracy (bench 0.0264 / 0.0450 mm).
fn bootstrap_registration() -> RegistrationConfig {
    let level = |shrink, sigma| crate::registration::Level {
        shrink,
        sigma,
        cubic: true,
    };
    RegistrationConfig {
        levels: vec![level(2, 2.0), level(2, 1.0), level(1, 0.0)],
        tol_mm: 0.01,
        sampling: BOOTSTRAP_MI_SAMPLING,
        ..RegistrationConfig::mutual_information()
    }
}

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

#[derive(Clone, Debug)]
pub struct EstimateConfig {
    pub target: Target,
    pub fit_method: FitMethod,
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
    /// ([`requirements::check`], the rule `predict` follows too). Returns warnings for what is
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
                // The estimate loop always appends the S0 sample (see the model passes).
                requirements::check(kind, table, self.b0_threshold, true)?;
                Ok(requirements::warnings(kind, table, self.b0_threshold))
            }
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

/// The processing order of the diffusion-weighted volumes `dw` (4-D indices).
pub fn processing_order(order: Order, dw: &[usize], bvals: &[f64], seed: u64) -> Vec<usize> {
    match order {
        Order::Linear => dw.to_vec(),
        Order::Bvalue => {
            let mut v = dw.to_vec();
            v.sort_by(|&a, &b| bvals[a].total_cmp(&bvals[b]).then(a.cmp(&b)));
            v
        }
        Order::Random => {
            let mut v = dw.to_vec();
            let mut rng = SplitMix64(seed);
            for i in (1..v.len()).rev() {
                let j = (rng.next() % (i as u64 + 1)) as usize;
                v.swap(i, j);
            }
            v
        }
        // nifreeze's centre-out order: middle, one below, one above, …
        Order::Centralsym => {
            let n = dw.len();
            let upper = &dw[n / 2..];
            let lower: Vec<usize> = dw[..n / 2].iter().rev().copied().collect();
            let mut v = Vec::with_capacity(n);
            for i in 0..upper.len().max(lower.len()) {
                v.extend(upper.get(i));
                v.extend(lower.get(i));
            }
            v
        }
    }
}

/// A small, well-mixed PRNG (Steele et al.'s SplitMix64): enough for shuffling, and
/// reproducible across platforms and crate versions.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Voxelwise median of the given volumes ([`stats::median`]: numpy semantics, NaN ignored).
pub fn median_volume(series: &Series, indices: &[usize]) -> Volume {
    let n = series.grid.len();
    let mut out = vec![0f32; n];
    out.par_chunks_mut(4096).enumerate().for_each(|(c, chunk)| {
        let mut buf = Vec::with_capacity(indices.len());
        for (o, v) in chunk.iter_mut().enumerate() {
            let idx = c * 4096 + o;
            buf.clear();
            buf.extend(indices.iter().map(|&k| series.volume(k)[idx] as f64));
            *v = stats::median(&mut buf) as f32;
        }
    });
    Volume::new(series.grid.clone(), out)
}

/// Each volume of `series` resampled into the reference frame with its transform:
/// `out_k(x) = series_k(T_k x)`. Always from the given (original) data: never cumulative.
pub fn realign(series: &Series, transforms: &[Matrix4<f64>], interp: Interpolation) -> Series {
    let vols: Vec<Vec<f32>> = (0..series.n_volumes)
        .into_par_iter()
        .map(|k| realign_volume(series, k, &transforms[k], interp))
        .collect();
    Series::from_volumes(series.grid.clone(), &vols)
}

/// Volume `k` of [`realign`] alone (the same numbers), for callers that stream the volumes.
pub fn realign_volume(
    series: &Series,
    k: usize,
    transform: &Matrix4<f64>,
    interp: Interpolation,
) -> Vec<f32> {
    if *transform == Matrix4::identity() {
        series.volume(k).to_vec()
    } else {
        resample(&series.to_volume(k), &series.grid, transform, interp).data
    }
}

/// [`realign`] at `voxels` only (ascending grid indices): the same numbers there, computed
/// the same way, for the model fits, which read nothing else.
pub fn realign_at(series: &Series, transforms: &[Matrix4<f64>], voxels: &[usize]) -> MaskedSeries {
    let vols: Vec<Vec<f32>> = (0..series.n_volumes)
        .into_par_iter()
        .map(|k| {
            if transforms[k] == Matrix4::identity() {
                voxels.iter().map(|&l| series.volume(k)[l]).collect()
            } else {
                resample_at(series.volume(k), &series.grid, &transforms[k], voxels)
            }
        })
        .collect();
    MaskedSeries::from_volumes(series.grid.clone(), voxels.to_vec(), &vols)
}

/// `volume(T·x)` at the centres `x` of `voxels` (cubic B-spline): [`resample`]'s arithmetic
/// (the same voxel-to-voxel matrix, the same spline), evaluated at those voxels only.
fn resample_at(volume: &[f32], grid: &Grid, t: &Matrix4<f64>, voxels: &[usize]) -> Vec<f32> {
    let inv = grid
        .affine
        .try_inverse()
        .expect("series affine is invertible (checked on reading)");
    let v = inv * t * grid.affine;
    let spline = BSpline::new(volume, grid.dims);
    let mut out = vec![0f32; voxels.len()];
    out.par_chunks_mut(4096)
        .zip(voxels.par_chunks(4096))
        .for_each(|(o, ls)| {
            for (o, &l) in o.iter_mut().zip(ls) {
                let [i, j, k] = grid.ijk(l);
                let p = v * nalgebra::Vector4::new(i as f64, j as f64, k as f64, 1.0);
                *o = spline.value([p.x, p.y, p.z]) as f32;
            }
        });
    out
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

/// A prediction held at the fitted voxels only, back on the whole grid (0 elsewhere, as the
/// model predicts there).
fn expand(grid: &Grid, voxels: &[usize], values: &[f32]) -> Volume {
    let mut out = vec![0f32; grid.len()];
    for (&l, &v) in voxels.iter().zip(values) {
        out[l] = v;
    }
    Volume::new(grid.clone(), out)
}

/// Register each b=0 volume to the b=0 median twice (the second time to the median of the
/// realigned b=0s). Returns the refined median and the b=0 transforms (identity elsewhere).
fn align_b0s(
    series: &Series,
    b0: &[usize],
    mask: &Mask,
    reg: &RegistrationConfig,
    transforms: &mut [Matrix4<f64>],
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<Volume> {
    let mut reference = median_volume(series, b0);
    if b0.len() < 2 {
        return Ok(reference);
    }
    // Progress counts the b=0 volumes of each round (a stage per round), not volumes × rounds.
    let total = b0.len();
    for round in 1..=2 {
        let stage = format!("b0 alignment {round}/2");
        let done = std::sync::atomic::AtomicUsize::new(0);
        // every b=0 volume of the round has the same target: its samples are prepared once
        let target = prepare(&reference, Some(mask), reg)?;
        let results: Vec<Result<Matrix4<f64>>> = b0
            .par_iter()
            .map(|&k| {
                let r = target.register(&series.to_volume(k), &transforms[k])?;
                let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                progress(&Progress {
                    stage: &stage,
                    done: d,
                    total,
                });
                Ok(r.matrix)
            })
            .collect();
        for (&k, r) in b0.iter().zip(results) {
            transforms[k] = r?;
        }
        let realigned = realign_subset(series, b0, transforms);
        let idx: Vec<usize> = (0..b0.len()).collect();
        reference = median_volume(&realigned, &idx);
    }
    Ok(reference)
}

/// Tie the diffusion-weighted shells to the b=0 reference frame (FSL eddy's "post-eddy
/// alignment of shells"). Volumes registered to model predictions agree with each other far
/// better than with the b=0 reference, but a whole shell can sit a little off the reference
/// (the per-volume mutual information of the bootstrap is biased by ~0.08 mm on the bench
/// phantom, and the model passes keep a shell's frame). So each shell's realigned mean — sharp
/// and with little noise — is registered once more by mutual information: the lowest shell to
/// the reference, every higher shell to the next lower one. The corrections are composed into
/// the shell's transforms. Between shells the contrasts differ too (CSF and grey/white matter
/// fade at different rates), and MI beat least squares with a global intensity scale on every
/// phantom measured with the true motion (`benches/link.rs`: 0.015 vs 0.031 mm on the shared
/// bench phantom, 0.05–0.11 vs 0.08–0.15 mm on simulated ones).
fn link_shells(
    series: &Series,
    shell_list: &[Shell],
    transforms: &mut [Matrix4<f64>],
    reference: &Volume,
    mask: &Mask,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<()> {
    if shell_list.is_empty() {
        return Ok(());
    }
    // Progress in shells: each takes a resampling of its volumes and one registration.
    let total = shell_list.len();
    progress(&Progress {
        stage: "shell link",
        done: 0,
        total,
    });
    // Each mean is summed in volume order from a few realigned volumes at a time (never a
    // realigned copy of the shell: half the series on a two-shell protocol).
    let batch = 2 * rayon::current_num_threads().max(1);
    let means: Vec<Volume> = shell_list
        .iter()
        .map(|sh| {
            let mut acc = vec![0f64; series.grid.len()];
            for ks in sh.indices.chunks(batch) {
                let aligned = realign_subset(series, ks, transforms);
                for k in 0..aligned.n_volumes {
                    acc.iter_mut()
                        .zip(aligned.volume(k))
                        .for_each(|(a, &v)| *a += v as f64);
                }
            }
            let n = sh.indices.len() as f64;
            Volume::new(
                series.grid.clone(),
                acc.iter().map(|&a| (a / n) as f32).collect(),
            )
        })
        .collect();
    let id = Matrix4::identity();
    let mi = RegistrationConfig::mutual_information();
    let mut link = register(reference, &means[0], Some(mask), &id, &mi)?.matrix;
    for (s, sh) in shell_list.iter().enumerate() {
        if s > 0 {
            link = register(&means[s - 1], &means[s], Some(mask), &id, &mi)?.matrix * link;
        }
        for &k in &sh.indices {
            transforms[k] *= link;
        }
        progress(&Progress {
            stage: "shell link",
            done: s + 1,
            total,
        });
    }
    Ok(())
}

fn realign_subset(series: &Series, idx: &[usize], transforms: &[Matrix4<f64>]) -> Series {
    let vols: Vec<Vec<f32>> = idx
        .par_iter()
        .map(|&k| {
            resample(
                &series.to_volume(k),
                &series.grid,
                &transforms[k],
                Interpolation::CubicBSpline,
            )
            .data
        })
        .collect();
    Series::from_volumes(series.grid.clone(), &vols)
}

/// Run the whole estimation. `mask` is the brain mask; `progress` is called from worker threads;
/// every stage's wall time goes to `timeline`. `cfg` must have passed
/// [`EstimateConfig::check_gradients`] for `table`.
pub fn estimate(
    series: &Series,
    table: &GradientTable,
    mask: &Mask,
    cfg: &EstimateConfig,
    progress: &(dyn Fn(&Progress) + Sync),
    timeline: &Timeline,
) -> Result<MotionEstimate> {
    let n = series.n_volumes;
    if table.len() != n {
        return Err(Error::input(format!(
            "{} gradients for {n} volumes",
            table.len()
        )));
    }
    let b0 = table.b0_indices(cfg.b0_threshold);
    let dw = table.dw_indices(cfg.b0_threshold);
    let mut transforms = vec![Matrix4::identity(); n];
    let mut diagnostics = vec![VolumeDiagnostics::default(); n];

    // The eddy-current model: b=0 volumes carry no eddy currents, so they align rigidly.
    let eddy_model = match cfg.registration.kind {
        TransformKind::Eddy { pe } => Some(EddyModel::new(pe.into(), mask_centroid(mask))),
        _ => None,
    };
    let b0_registration = match eddy_model {
        Some(_) => RegistrationConfig {
            kind: TransformKind::Rigid,
            ..cfg.registration.clone()
        },
        None => cfg.registration.clone(),
    };
    let t0 = timeline.mark();
    let reference = if b0.is_empty() {
        median_volume(series, &dw)
    } else {
        align_b0s(
            series,
            &b0,
            mask,
            &b0_registration,
            &mut transforms,
            progress,
        )?
    };
    timeline.record("b0 alignment", t0);
    let drift = timeline.time("signal drift", || {
        drift_stage(series, &b0, &transforms, mask)
    });
    // With --drift-correct every later stage sees the drift-corrected series.
    let base: std::borrow::Cow<Series> = match (&drift, cfg.drift_correct) {
        (Some(d), true) => std::borrow::Cow::Owned(drift_corrected(series, d)),
        _ => std::borrow::Cow::Borrowed(series),
    };
    let base: &Series = &base;

    // The model is fitted a little beyond the brain so that the prediction covers the
    // (dilated) registration mask and brain edges, which carry most of the alignment signal.
    let fit_mask = dilate(mask, cfg.registration.mask_dilation + 1);
    let fit_voxels = fit_mask.indices();
    let shell_list = shells(table, cfg.b0_threshold);
    let order = processing_order(cfg.order, &dw, &table.bvals, cfg.seed);

    // Bootstrap: a model fitted to data that still move is a poor target (DKI especially, whose
    // fit explodes on inconsistent samples). So every diffusion-weighted volume is first
    // registered to the b=0 reference itself, by mutual information since the contrasts differ
    // (CSF bright at b=0, dark when diffusion-weighted). This also puts every shell in the
    // frame of the reference from the start. Measured on the bench phantom, this alone reaches
    // 0.035 mm median error; the model passes then refine it with same-contrast targets.
    // (Registering to leave-one-out shell means instead, and linking each shell to the
    // reference afterwards as FSL eddy does, left direction-dependent errors of 0.05–0.13 mm
    // that the model passes could not remove.)
    if !b0.is_empty() {
        let t = timeline.mark();
        let bootstrap_mi = bootstrap_registration();
        // every volume has the same target: its samples are prepared once
        let target = prepare(&reference, Some(mask), &bootstrap_mi)?;
        let done = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<Result<Matrix4<f64>>> = order
            .par_iter()
            .map(|&h| {
                let r = target.register(&series.to_volume(h), &transforms[h])?;
                let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                progress(&Progress {
                    stage: "bootstrap",
                    done: d,
                    total: order.len(),
                });
                Ok(r.matrix)
            })
            .collect();
        for (&h, r) in order.iter().zip(results) {
            transforms[h] = r?;
        }
        timeline.record("bootstrap (mutual information to b=0)", t);
    }

    // The series with outlier slices replaced by their prediction (eddy's --repol), once some
    // are found; the original until then.
    let mut working: std::borrow::Cow<Series> = std::borrow::Cow::Borrowed(base);
    let mut outliers: Option<OutlierStage> = None;
    for pass in 1..=cfg.passes {
        let stage = format!("pass {pass}/{}", cfg.passes);
        let step = |what: &str| format!("{stage}: {what}");
        // Snapshot the model sees: original data realigned once with current estimates
        // (outlier slices replaced by their prediction once found). Every prediction is made
        // first (they depend only on the snapshot), so that outlier slices can be judged
        // against the whole shell before any volume is registered.
        // Predictions are held at the fitted voxels only (the model predicts nothing elsewhere).
        let predict_all = |src: &Series| -> Result<HeldPredictions> {
            let Target::Model(kind) = cfg.target else {
                return Ok(vec![None; order.len()]);
            };
            let t = timeline.mark();
            let data = realign_at(src, &transforms, &fit_voxels);
            let ceiling = voxel_maxima(&data);
            timeline.record(&step("snapshot (realign)"), t);
            let t = timeline.mark();
            // gradients follow the head, not the eddy-current field (as FSL eddy rotates them)
            let gradients = rotate_bvecs(table, &head_motion_of(&transforms, eddy_model.as_ref()));
            // Both models get S0 as one b=0 sample: nifreeze does so for DKI only, but for DTI
            // on multi-shell data it is what makes the prediction resemble the measured volume
            // (correlation with the noise-free volume 0.62 → 0.97 on the sample phantom).
            let options = EngineOptions {
                ignore_b0: cfg.ignore_b0,
                s0_sample: true,
            };
            // the fitted voxels a batch at a time: one batch's f64 log-signals in memory
            let values = predict_masked(
                &data,
                &gradients,
                &fit_mask,
                kind,
                cfg.fit_method,
                cfg.b0_threshold,
                options,
                &order,
            )?;
            let predictions = order
                .par_iter()
                .zip(values)
                .map(|(&h, mut p)| {
                    let mates: Vec<usize> = shell_list
                        .iter()
                        .find(|s| s.indices.contains(&h))
                        .map(|s| s.indices.iter().copied().filter(|&k| k != h).collect())
                        .unwrap_or_default();
                    let r = sanitize_prediction(&mut p, &data, &ceiling, &mates);
                    Ok(Some((p, r)))
                })
                .collect::<Result<Vec<_>>>();
            timeline.record(&step("model fit + predict"), t);
            predictions
        };
        let mut predictions = predict_all(&working)?;
        if let (Some(ocfg), Target::Model(_)) = (&cfg.outliers, cfg.target) {
            let detect_with = |p: &[Option<(Vec<f32>, usize)>]| {
                timeline.time(&step("outlier detection"), || {
                    let p = Predictions {
                        values: p,
                        voxels: &fit_voxels,
                    };
                    outlier_stage(
                        base,
                        table,
                        &shell_list,
                        &order,
                        &p,
                        &transforms,
                        mask,
                        ocfg,
                    )
                })
            };
            let mut found = detect_with(&predictions);
            if !found.table.rows.is_empty() {
                // The fit behind these predictions saw the other volumes' dropouts, which
                // distort the prediction of those slices in every volume (on a 4 mm phantom
                // by up to ±50 %, hiding true dropouts and faking others): refit without them
                // and judge again (eddy does the same across its iterations).
                predictions = predict_all(&found.cleaned(base))?;
                found = detect_with(&predictions);
            }
            working = found.cleaned(base);
            outliers = Some(found);
        }
        let t_reg = timeline.mark();
        // Every volume starts near its answer after the bootstrap (rigid; the eddy-current
        // field starts at 0) or an earlier pass: the finest level only.
        let pass_registration =
            if pass > 1 || (!b0.is_empty() && cfg.registration.kind == TransformKind::Rigid) {
                cfg.registration.refinement()
            } else {
                cfg.registration.clone()
            };
        // Without a model the target has b=0 contrast: mutual information, searching the
        // family asked for (it used to be rigid whatever --transform said).
        let b0_model_registration =
            RegistrationConfig::mutual_information().with_transform(cfg.registration.kind);
        let done = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<Result<(Matrix4<f64>, VolumeDiagnostics)>> = order
            .par_iter()
            .zip(predictions.par_iter())
            .map(|(&h, pred)| {
                let expanded;
                let (target, replaced) = match pred {
                    Some((p, r)) => {
                        expanded = expand(&base.grid, &fit_voxels, p);
                        (&expanded, *r)
                    }
                    None => (&reference, 0),
                };
                // Outlier slices weigh nothing: the moving volume carries the prediction there
                // (so smoothing does not spread the dark slice), and the fixed-space mask
                // leaves out every point that lands on them.
                let excluded = outliers
                    .as_ref()
                    .and_then(|o| o.excluded_mask(h, mask, &transforms[h], &pass_registration));
                if outliers
                    .as_ref()
                    .is_some_and(|o| o.table.broken_volumes.contains(&h))
                {
                    // A broken volume holds nothing to register: it keeps its estimate.
                    return Ok((transforms[h], diagnostics[h].clone()));
                }
                let moving = working.to_volume(h);
                let r = match (pred, &excluded) {
                    (Some(_), Some((m, reg))) => {
                        register(target, &moving, Some(m), &transforms[h], reg)?
                    }
                    (Some(_), None) => register(
                        target,
                        &moving,
                        Some(mask),
                        &transforms[h],
                        &pass_registration,
                    )?,
                    (None, _) => register(
                        target,
                        &moving,
                        Some(mask),
                        &transforms[h],
                        &b0_model_registration,
                    )?,
                };
                let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                progress(&Progress {
                    stage: &stage,
                    done: d,
                    total: order.len(),
                });
                Ok((
                    r.matrix,
                    VolumeDiagnostics {
                        correlation: r.metric,
                        iterations: r.iterations,
                        replaced_fraction: replaced as f64 / fit_voxels.len().max(1) as f64,
                    },
                ))
            })
            .collect();
        for (&h, r) in order.iter().zip(results) {
            let (m, d) = r?;
            transforms[h] = m;
            diagnostics[h] = d;
        }
        if let Some(m) = &eddy_model {
            // FSL eddy's second-level model: see `second_level_field`
            let groups: Vec<Vec<usize>> = shell_list.iter().map(|s| s.indices.clone()).collect();
            second_level_field(m, &mut transforms, &groups, &table.bvecs);
        }
        timeline.record(&step("registration"), t_reg);
    }
    if matches!(cfg.target, Target::Model(_)) && !b0.is_empty() {
        let t = timeline.mark();
        link_shells(
            &working,
            &shell_list,
            &mut transforms,
            &reference,
            mask,
            progress,
        )?;
        timeline.record("shell-to-b0 link", t);
    }
    // Products of registrations can leave the affine's bottom row 1 ulp off (m33 =
    // 1.000000000000001); it is 0 0 0 1 by definition, and motion.tsv and X5 print it.
    for t in &mut transforms {
        t.set_row(3, &nalgebra::RowVector4::new(0.0, 0.0, 0.0, 1.0));
    }
    let eddy = eddy_model.map(|m| {
        let directions: Vec<[f64; 3]> = (0..n)
            .map(|k| {
                let s = if table.bvals[k] > cfg.b0_threshold {
                    table.bvals[k] / 1000.0
                } else {
                    0.0
                };
                table.bvecs[k].map(|v| v * s)
            })
            .collect();
        let params = split_constant(&m, &transforms, &directions);
        (m, params)
    });
    Ok(MotionEstimate {
        transforms,
        diagnostics,
        reference,
        eddy,
        outliers,
        drift,
    })
}

/// Mean brain signal of each b=0 volume (realigned) against its 4-D index, fitted.
fn drift_stage(
    series: &Series,
    b0: &[usize],
    transforms: &[Matrix4<f64>],
    mask: &Mask,
) -> Option<Drift> {
    if b0.len() < 2 {
        return None;
    }
    let aligned = realign_subset(series, b0, transforms);
    let voxels = mask.indices();
    let means: Vec<(usize, f64)> = b0
        .iter()
        .enumerate()
        .map(|(i, &k)| {
            let v = aligned.volume(i);
            let sum: f64 = voxels.iter().map(|&x| v[x] as f64).sum();
            (k, sum / voxels.len().max(1) as f64)
        })
        .collect();
    crate::drift::fit(&means, series.n_volumes)
}

/// `series` with volume k divided by the drift curve at k.
pub fn drift_corrected(series: &Series, drift: &Drift) -> Series {
    let mut out = series.clone();
    for k in 0..series.n_volumes {
        let f = drift.scale[k];
        if f > 0.0 && f.is_finite() {
            let inv = (1.0 / f) as f32;
            out.volume_mut(k).iter_mut().for_each(|v| *v *= inv);
        }
    }
    out
}

/// What the outlier stage found: the table, and for every volume with outlier slices the
/// prediction brought into that volume's acquired space (to replace the slices).
#[derive(Clone, Debug)]
pub struct OutlierStage {
    pub table: OutlierTable,
    /// (volume, its prediction in acquired space; 0 outside the fitted region).
    pub replacements: Vec<(usize, Vec<f32>)>,
    /// The grid the slices index.
    pub grid: crate::image::Grid,
}

/// How far (in slices) around an outlier slice fixed-space points are left out of the
/// registration cost: the slice itself and half of each neighbour, which the cubic B-spline
/// and the pyramid's smoothing mix in.
const EXCLUDE_HALF_WIDTH: f64 = 1.5;

impl OutlierStage {
    /// `series` with every outlier slice replaced by its prediction where the prediction
    /// exists (inside the fitted region); the original when there are no outliers.
    pub fn cleaned<'a>(&self, series: &'a Series) -> std::borrow::Cow<'a, Series> {
        if self.replacements.is_empty() {
            return std::borrow::Cow::Borrowed(series);
        }
        let mut out = series.clone();
        for (v, pred) in &self.replacements {
            self.replace_slices(*v, out.volume_mut(*v), pred);
        }
        std::borrow::Cow::Owned(out)
    }

    /// Volume `v`'s outlier slices in `vol` (acquired space) replaced by `pred_acq` (its
    /// prediction in acquired space) where the prediction exists (> 0: inside the fitted region).
    fn replace_slices(&self, v: usize, vol: &mut [f32], pred_acq: &[f32]) {
        let slices = self.table.slices_of(v);
        let dims = self.grid.dims;
        let axis = self.table.slice_axis;
        for (idx, (o, &p)) in vol.iter_mut().zip(pred_acq).enumerate() {
            let ijk = [
                idx % dims[0],
                (idx / dims[0]) % dims[1],
                idx / (dims[0] * dims[1]),
            ];
            if p > 0.0 && slices.contains(&ijk[axis]) {
                *o = p;
            }
        }
    }

    /// The registration mask of volume `h` without the fixed-space points that `t` maps onto
    /// (or next to) its outlier slices, already dilated, with the matching configuration
    /// (no further dilation). None when `h` has no outlier slices.
    pub fn excluded_mask(
        &self,
        h: usize,
        mask: &Mask,
        t: &Matrix4<f64>,
        reg: &RegistrationConfig,
    ) -> Option<(Mask, RegistrationConfig)> {
        let slices = self.table.slices_of(h);
        if slices.is_empty() {
            return None;
        }
        let mut m = dilate(mask, reg.mask_dilation);
        let to_voxel = self.grid.affine.try_inverse()? * t * mask.grid.affine;
        let axis = self.table.slice_axis;
        let dims = mask.grid.dims;
        // slice coordinate (acquired space) of a fixed-space point
        let coord = |idx: usize| -> f64 {
            let [i, j, k] = [
                idx % dims[0],
                (idx / dims[0]) % dims[1],
                idx / (dims[0] * dims[1]),
            ];
            (to_voxel * nalgebra::Vector4::new(i as f64, j as f64, k as f64, 1.0))[axis]
        };
        for (idx, inside) in m.data.iter_mut().enumerate() {
            if !*inside {
                continue;
            }
            let s = coord(idx);
            if slices
                .iter()
                .any(|&sl| (s - sl as f64).abs() < EXCLUDE_HALF_WIDTH)
            {
                *inside = false;
            }
        }
        let cfg = RegistrationConfig {
            mask_dilation: 0,
            ..reg.clone()
        };
        Some((m, cfg))
    }
}

/// Each volume's prediction at the fitted voxels and the count of values replaced (None: no
/// model), in processing order.
type HeldPredictions = Vec<Option<(Vec<f32>, usize)>>;

/// The predictions of one pass, in processing order, each held at `voxels` only (with the
/// number of values [`sanitize_prediction`] replaced); None where there is no model.
struct Predictions<'a> {
    values: &'a [Option<(Vec<f32>, usize)>],
    voxels: &'a [usize],
}

/// Outlier detection for one pass: each diffusion-weighted volume's prediction (reference
/// frame) is brought into the volume's acquired space with the current estimate, and slice
/// means of the original data are compared with it over the brain mask (mapped the same way);
/// see [`crate::outliers`].
#[allow(clippy::too_many_arguments)]
fn outlier_stage(
    series: &Series,
    table: &GradientTable,
    shell_list: &[Shell],
    order: &[usize],
    predictions: &Predictions,
    transforms: &[Matrix4<f64>],
    mask: &Mask,
    cfg: &OutlierConfig,
) -> OutlierStage {
    let grid = &series.grid;
    let mask_f = Volume::new(
        grid.clone(),
        mask.data.iter().map(|&b| f32::from(u8::from(b))).collect(),
    );
    // The prediction of volume h brought into its acquired space: T⁻¹z is the reference
    // point that acquired point z shows.
    let acquired = |h: usize, i: usize| -> Option<Vec<f32>> {
        let (pred, _) = predictions.values[i].as_ref()?;
        let inv = transforms[h].try_inverse()?;
        let pred = expand(grid, predictions.voxels, pred);
        Some(resample(&pred, grid, &inv, Interpolation::CubicBSpline).data)
    };
    // The same, at the voxels of `m_acq` only (0 elsewhere): all that the slice sums read.
    let acquired_in = |h: usize, i: usize, m_acq: &[bool]| -> Option<Vec<f32>> {
        let (pred, _) = predictions.values[i].as_ref()?;
        let inv = transforms[h].try_inverse()?;
        let pred = expand(grid, predictions.voxels, pred);
        let voxels: Vec<usize> = (0..grid.len()).filter(|&l| m_acq[l]).collect();
        let mut out = vec![0f32; grid.len()];
        for (&l, v) in voxels
            .iter()
            .zip(resample_at(&pred.data, grid, &inv, &voxels))
        {
            out[l] = v;
        }
        Some(out)
    };
    // Slice sums of every volume first; the (whole-volume) predictions in acquired space are
    // not kept, but made again for the few volumes found to have outlier slices.
    let per: Vec<(usize, SliceSums)> = order
        .par_iter()
        .enumerate()
        .filter_map(|(i, &h)| {
            let inv = transforms[h].try_inverse()?;
            let m_acq: Vec<bool> = resample(&mask_f, grid, &inv, Interpolation::Linear)
                .data
                .iter()
                .map(|&v| v >= 0.5)
                .collect();
            let pred_acq = acquired_in(h, i, &m_acq)?;
            let sums = slice_sums(
                series.volume(h),
                &pred_acq,
                &m_acq,
                grid.dims,
                cfg.slice_axis,
            );
            Some((h, sums))
        })
        .collect();
    let mut sums: Vec<Option<SliceSums>> = vec![None; series.n_volumes];
    for (h, s) in per {
        sums[h] = Some(s);
    }
    let shells: Vec<Vec<usize>> = shell_list.iter().map(|s| s.indices.clone()).collect();
    let found = detect(&sums, &shells, &table.bvals, cfg);
    let replacements = order
        .par_iter()
        .enumerate()
        .filter(|(_, &h)| found.rows.iter().any(|r| r.volume == h))
        .filter_map(|(i, &h)| Some((h, acquired(h, i)?)))
        .collect();
    OutlierStage {
        table: found,
        replacements,
        grid: grid.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Grid;

    #[test]
    fn orders_are_permutations_and_centralsym_matches_nifreeze() {
        let dw: Vec<usize> = (10..15).collect();
        let b = vec![0.0; 15];
        // nifreeze's centralsym_iterator(5) yields 2, 1, 3, 0, 4.
        assert_eq!(
            processing_order(Order::Centralsym, &dw, &b, 0),
            vec![12, 11, 13, 10, 14]
        );
        assert_eq!(processing_order(Order::Linear, &dw, &b, 0), dw);
        let r1 = processing_order(Order::Random, &dw, &b, 42);
        assert_eq!(r1, processing_order(Order::Random, &dw, &b, 42), "seeded");
        let mut sorted = r1.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, dw);
        let mut bv = vec![0.0; 15];
        bv[10..15].copy_from_slice(&[2000.0, 1000.0, 3000.0, 1000.0, 2000.0]);
        assert_eq!(
            processing_order(Order::Bvalue, &dw, &bv, 0),
            vec![11, 13, 10, 14, 12]
        );
    }

    /// The registration mask leaves out the band around an outlier slice in acquired space,
    /// nothing else, and follows the volume's transform.
    #[test]
    fn outlier_band_is_left_out_in_acquired_space() {
        let grid = Grid::new([6, 5, 20], Matrix4::identity());
        let mask = Mask {
            grid: grid.clone(),
            data: (0..grid.len())
                .map(|i| (2..18).contains(&(i / 30)))
                .collect(),
        };
        let stage = OutlierStage {
            table: OutlierTable {
                slice_axis: 2,
                n_slices: 20,
                rows: vec![crate::outliers::OutlierRow {
                    volume: 1,
                    slice: 4,
                    bvalue: 1000.0,
                    score: -20.0,
                    replaced: false,
                }],
                ..Default::default()
            },
            replacements: vec![],
            grid: grid.clone(),
        };
        let reg = RegistrationConfig {
            mask_dilation: 0,
            ..RegistrationConfig::rigid()
        };
        assert!(stage
            .excluded_mask(0, &mask, &Matrix4::identity(), &reg)
            .is_none());
        let (m, cfg) = stage
            .excluded_mask(1, &mask, &Matrix4::identity(), &reg)
            .unwrap();
        assert_eq!(cfg.mask_dilation, 0);
        // mask slices 2..=17: band |z − 4| < 1.5
        let kept: Vec<usize> = (0..20).filter(|&z| m.data[z * 30]).collect();
        let expected: Vec<usize> = (2..18).filter(|z| ![3, 4, 5].contains(z)).collect();
        assert_eq!(kept, expected);
        // a volume moved by 2 slices along z: the band follows the acquired slices
        let mut t = Matrix4::identity();
        t[(2, 3)] = 2.0;
        let (m, _) = stage.excluded_mask(1, &mask, &t, &reg).unwrap();
        let kept: Vec<usize> = (0..20).filter(|&z| m.data[z * 30]).collect();
        // acquired s = z + 2: |s − 4| < 1.5 → z 1..=3
        let expected: Vec<usize> = (2..18).filter(|z| ![2, 3].contains(z)).collect();
        assert_eq!(kept, expected);
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

    #[test]
    fn realigning_at_some_voxels_gives_the_whole_grid_numbers_there() {
        // a smooth volume with some texture, moved by a small rigid transform
        let grid = Grid::new(
            [9, 8, 7],
            Matrix4::new(
                2.0, 0.0, 0.0, -8.0, 0.0, 2.5, 0.0, -9.0, 0.0, 0.0, 3.0, -9.0, 0.0, 0.0, 0.0, 1.0,
            ),
        );
        let n = grid.len();
        let vol = |s: f32| -> Vec<f32> {
            (0..n)
                .map(|l| {
                    let [i, j, k] = grid.ijk(l);
                    s * (i as f32 * 0.7).sin() + (j * k) as f32 * 0.3 + (l % 5) as f32
                })
                .collect()
        };
        let series = Series::from_volumes(grid.clone(), &[vol(1.0), vol(-2.0)]);
        let mut r = nalgebra::Rotation3::from_euler_angles(0.05, -0.03, 0.04).to_homogeneous();
        r[(0, 3)] = 0.6;
        r[(1, 3)] = -0.4;
        r[(2, 3)] = 0.3;
        let ts = [Matrix4::identity(), r];
        let full = realign(&series, &ts, Interpolation::CubicBSpline);
        let voxels: Vec<usize> = (0..n).filter(|l| l % 3 != 1).collect();
        let part = realign_at(&series, &ts, &voxels);
        for k in 0..2 {
            for (i, &l) in voxels.iter().enumerate() {
                assert_eq!(
                    part.volume(k)[i].to_bits(),
                    full.volume(k)[l].to_bits(),
                    "volume {k}, voxel {l}"
                );
            }
        }
        assert_ne!(
            full.volume(1),
            series.volume(1),
            "the transform moved the volume"
        );
    }
}
