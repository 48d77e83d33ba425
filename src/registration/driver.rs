//! The one registration driver (ITK's `ImageRegistrationMethodv4`): checks and cleans the
//! inputs, dilates the mask, and runs the pyramid — per level it smooths both images, chooses
//! the fixed samples, builds the metric and hands it to the metric's optimiser with
//! parameter scales from physical shift. Metrics and optimisers never see a file, a mask
//! policy or a pyramid.

use super::metric::{
    mutual_information, FixedSamples, LeastSquares, MiFixed, MovingImage, MutualInformation,
};
use super::optimize::{self, LevelSettings};
use super::transform::{nearest_rotation, Increment};
use super::{
    eddy, interpolate, pyramid, Level, MetricKind, RegistrationConfig, RegistrationResult,
    TransformKind,
};
use crate::image::{Grid, Mask, Volume};
use crate::{Error, Result};
use nalgebra::{Matrix3, Matrix4, Vector3};

/// The region the metric is evaluated over, in fixed world coordinates: the dilated mask's
/// centroid (the increments' centre), bounding box (convergence tests) and second moment
/// (parameter scales).
#[derive(Clone)]
struct Domain {
    centre: Vector3<f64>,
    lo: Vector3<f64>,
    hi: Vector3<f64>,
    second_moment: Matrix3<f64>,
}

impl Domain {
    fn new(grid: &Grid, pts: &[[usize; 3]]) -> Domain {
        let world: Vec<Vector3<f64>> = pts
            .iter()
            .map(|p| grid.world([p[0] as f64, p[1] as f64, p[2] as f64]))
            .collect();
        let mut centre = Vector3::zeros();
        let mut lo = Vector3::repeat(f64::INFINITY);
        let mut hi = Vector3::repeat(f64::NEG_INFINITY);
        for x in &world {
            centre += x;
            lo = lo.inf(x);
            hi = hi.sup(x);
        }
        centre /= world.len() as f64;
        let mut second_moment = Matrix3::zeros();
        for x in &world {
            let d = x - centre;
            second_moment += d * d.transpose();
        }
        second_moment /= world.len() as f64;
        Domain {
            centre,
            lo,
            hi,
            second_moment,
        }
    }
}

/// Register `moving` to `fixed`: find `T` (fixed world → moving world) such that
/// `moving(T·x)` matches `fixed(x)` over the fixed mask, starting from `init` — up to an
/// intensity scale and offset for least squares, up to any intensity relation for mutual
/// information. The same as [`prepare`] then [`Prepared::register`].
///
/// The two images may have different grids (size, voxel size, orientation). Non-finite voxels
/// count as 0. Threads: sums use rayon over fixed chunks reduced in order, so the result is
/// bit-identical for any pool size and it is safe (and cheap) to call from inside a rayon pool.
pub fn register(
    fixed: &Volume,
    moving: &Volume,
    fixed_mask: Option<&Mask>,
    init: &Matrix4<f64>,
    cfg: &RegistrationConfig,
) -> Result<RegistrationResult> {
    prepare(fixed, fixed_mask, cfg)?.register(moving, init)
}

/// The fixed side of a registration, computed once: checked settings, the dilated mask, its
/// domain and, per pyramid level, the smoothed fixed image's samples (least squares: design
/// rows and normal matrix; mutual information: sample positions and fixed bins). Many moving
/// images registered to one target (the estimate bootstrap: every volume to the b=0
/// reference) share it; the result is the same as [`register`]'s, bit for bit.
pub struct Prepared<'a> {
    fixed: &'a Volume,
    sampling: std::borrow::Cow<'a, Sampling>,
    levels: Vec<FixedLevel>,
}

/// The mask side of a registration, which depends on the fixed grid and mask only: checked
/// settings, the dilated mask's domain and every pyramid level's sample points. Many fixed
/// images on one grid with one mask (the model passes: every volume's prediction) share it
/// ([`prepare_with`]); the result is the same as [`prepare`]'s, bit for bit.
#[derive(Clone)]
pub struct Sampling {
    grid: Grid,
    cfg: RegistrationConfig,
    what: &'static str,
    /// The fixed mask as given (all true without one): the overlap check's domain.
    mask: Vec<bool>,
    domain: Domain,
    /// Each level kept (coarse levels too coarse for the mask are left out) with its samples.
    levels: Vec<(Level, Vec<[usize; 3]>)>,
}

/// One pyramid level's fixed side.
struct FixedLevel {
    level: Level,
    samples: FixedSide,
}

enum FixedSide {
    LeastSquares(FixedSamples),
    MutualInformation(MiFixed),
}

/// Check the settings and the fixed image and prepare every level's fixed samples.
pub fn prepare<'a>(
    fixed: &'a Volume,
    fixed_mask: Option<&Mask>,
    cfg: &RegistrationConfig,
) -> Result<Prepared<'a>> {
    let s = sampling(&fixed.grid, fixed_mask, cfg)?;
    prepare_fixed(fixed, std::borrow::Cow::Owned(s), None)
}

/// [`prepare`] with the mask side computed once beforehand by [`sampling`] on `fixed`'s grid.
pub fn prepare_with<'a>(fixed: &'a Volume, s: &'a Sampling) -> Result<Prepared<'a>> {
    prepare_weighted(fixed, std::borrow::Cow::Borrowed(s), None)
}

/// [`prepare_with`] with a weight per fixed voxel (`weights`: the fixed grid's length, ≥ 0),
/// for least squares: each sample's squared residual counts `weights` times. The inverse of
/// the variance of `moving − fixed` at a voxel makes the estimate the maximum-likelihood one
/// when that variance differs across the image. Ignored by mutual information.
pub fn prepare_weighted<'a>(
    fixed: &'a Volume,
    s: std::borrow::Cow<'a, Sampling>,
    weights: Option<&[f32]>,
) -> Result<Prepared<'a>> {
    if let Some(w) = weights {
        if w.len() != fixed.grid.len() {
            return Err(Error::input(format!(
                "{}: {} weights for a fixed image of {} voxels",
                s.what,
                w.len(),
                fixed.grid.len()
            )));
        }
    }
    if fixed.grid.dims != s.grid.dims || fixed.grid.affine != s.grid.affine {
        return Err(Error::input(format!(
            "{}: the fixed image is not on the grid its samples were prepared for",
            s.what
        )));
    }
    prepare_fixed(fixed, s, weights)
}

/// Check the settings and the fixed grid, dilate the mask and choose every level's samples.
pub fn sampling(
    grid: &Grid,
    fixed_mask: Option<&Mask>,
    cfg: &RegistrationConfig,
) -> Result<Sampling> {
    let what = match cfg.metric {
        MetricKind::LeastSquares => "registration",
        MetricKind::MutualInformation(_) => "mutual-information registration",
    };
    let fdims = grid.dims;
    if cfg.levels.is_empty() {
        return Err(Error::input(format!(
            "{what}: at least one pyramid level is needed"
        )));
    }
    if !(cfg.sampling > 0.0 && cfg.sampling <= 1.0) {
        return Err(Error::input(format!(
            "{what}: the sampling fraction must lie in (0, 1], not {}",
            cfg.sampling
        )));
    }
    if let MetricKind::MutualInformation(mi) = &cfg.metric {
        mi.check()?;
    }
    if let TransformKind::Eddy { pe } = cfg.kind {
        let n = Vector3::from(pe).norm();
        if !(n.is_finite() && n > 0.5) {
            return Err(Error::input(format!(
                "{what}: the eddy-current model needs a phase-encode direction (unit vector)"
            )));
        }
    }
    if grid.is_empty() {
        return Err(Error::input(format!("{what}: the fixed image is empty")));
    }
    if grid.affine.try_inverse().is_none() {
        return Err(Error::input(format!(
            "{what}: the fixed image's affine is singular; fix the NIfTI header"
        )));
    }
    let mask0 = match fixed_mask {
        Some(m) if m.grid.dims != grid.dims => {
            return Err(Error::input(format!(
                "{what}: mask size {:?} does not match the fixed image {:?}",
                m.grid.dims, grid.dims
            )))
        }
        Some(m) => m.data.clone(),
        None => vec![true; grid.len()],
    };
    let mask = crate::mask::dilate_voxels(&mask0, fdims, cfg.mask_dilation);
    let min_samples = min_samples(cfg);
    let all = pyramid::lattice_points(&mask, fdims, 1);
    if all.len() < min_samples {
        return Err(Error::input(format!(
            "{what}: the mask holds {} voxels, too few to register (at least {min_samples}); check the mask",
            all.len()
        )));
    }
    let domain = Domain::new(grid, &all);
    let levels: Vec<(Level, Vec<[usize; 3]>)> = cfg
        .levels
        .iter()
        .map(|level| {
            (
                level.clone(),
                samples(&mask, fdims, level.shrink, cfg.sampling),
            )
        })
        // too coarse for this mask: finer levels take over
        .filter(|(_, pts)| pts.len() >= min_samples)
        .collect();
    if levels.is_empty() {
        return Err(Error::input(format!(
            "{what}: the mask is too small for every pyramid level (each needs {min_samples} samples); check the mask or add a finer level"
        )));
    }
    Ok(Sampling {
        grid: grid.clone(),
        cfg: cfg.clone(),
        what,
        mask: mask0,
        domain,
        levels,
    })
}

/// Every level's fixed samples of `fixed` on the prepared mask side.
fn prepare_fixed<'a>(
    fixed: &'a Volume,
    s: std::borrow::Cow<'a, Sampling>,
    weights: Option<&[f32]>,
) -> Result<Prepared<'a>> {
    let (cfg, fdims) = (&s.cfg, fixed.grid.dims);
    // Non-finite voxels (e.g. an ill-posed model prediction) would poison every sum (and
    // index outside a histogram): they count as 0, like the space outside the image.
    let fixed_data = finite_or_zero(&fixed.data);
    let fvs = fixed.grid.voxel_sizes();
    let mean_fvs = (fvs[0] + fvs[1] + fvs[2]) / 3.0;
    let mut levels = Vec::new();
    for (level, pts) in &s.levels {
        let sigma_mm = level.sigma * mean_fvs;
        let fdata = pyramid::gaussian_smooth(&fixed_data, fdims, fvs.map(|v| sigma_mm / v));
        let samples = match &cfg.metric {
            MetricKind::LeastSquares => FixedSide::LeastSquares(FixedSamples::new(
                &fdata,
                fdims,
                &fixed.grid.affine,
                pts,
                cfg.kind,
                &s.domain.centre,
                level.cubic,
                weights,
            )),
            MetricKind::MutualInformation(mi) => FixedSide::MutualInformation(MiFixed::new(
                &fixed.grid,
                &fdata,
                pts,
                level.shrink,
                mi,
            )),
        };
        levels.push(FixedLevel {
            level: level.clone(),
            samples,
        });
    }
    Ok(Prepared {
        fixed,
        sampling: s,
        levels,
    })
}

/// Fewest samples a level needs: ten per unknown for least squares (parameters, scale and
/// offset), a joint histogram's worth for mutual information.
fn min_samples(cfg: &RegistrationConfig) -> usize {
    match cfg.metric {
        MetricKind::LeastSquares => 10 * (cfg.kind.n_params() + 2),
        MetricKind::MutualInformation(_) => mutual_information::MIN_SAMPLES,
    }
}

impl Prepared<'_> {
    /// Register `moving` to the prepared fixed image, starting from `init`.
    pub fn register(&self, moving: &Volume, init: &Matrix4<f64>) -> Result<RegistrationResult> {
        let s = &*self.sampling;
        let (what, cfg, fixed) = (s.what, &s.cfg, self.fixed);
        let minv = checked_moving(what, fixed, moving, &s.mask, init)?;
        let centre = s.domain.centre;
        let moving_data = finite_or_zero(&moving.data);
        let fvs = fixed.grid.voxel_sizes();
        let mvs = moving.grid.voxel_sizes();
        let mean_fvs = (fvs[0] + fvs[1] + fvs[2]) / 3.0;
        let settings = LevelSettings {
            kind: cfg.kind,
            centre,
            lo: s.domain.lo,
            hi: s.domain.hi,
            max_iterations: cfg.max_iterations,
            tol_mm: cfg.tol_mm,
        };
        let mut t = *init;
        let mut iterations = 0;
        let mut metric = 0.0;
        for (l, FixedLevel { level, samples }) in self.levels.iter().enumerate() {
            let ran_coarser = l > 0;
            let sigma_mm = level.sigma * mean_fvs;
            let mdata =
                pyramid::gaussian_smooth(&moving_data, moving.grid.dims, mvs.map(|v| sigma_mm / v));
            let out = match (samples, &cfg.metric) {
                (FixedSide::LeastSquares(fs), _) => {
                    let mov = if level.cubic {
                        MovingImage::Cubic(interpolate::BSpline::new(&mdata, moving.grid.dims))
                    } else {
                        MovingImage::Linear {
                            data: mdata,
                            dims: moving.grid.dims,
                        }
                    };
                    let ls = LeastSquares {
                        samples: fs,
                        moving: mov,
                        fixed_affine: fixed.grid.affine,
                        moving_inv_affine: minv,
                    };
                    // Gauss–Newton is invariant to parameter scaling: no scales needed
                    optimize::gauss_newton(&ls, &settings, 0.1 * mean_fvs, &t)?
                }
                (FixedSide::MutualInformation(mf), MetricKind::MutualInformation(mi)) => {
                    let m = MutualInformation::new(
                        mf,
                        &moving.grid,
                        &mdata,
                        &minv,
                        &t,
                        &centre,
                        cfg.kind,
                        mi,
                    )?;
                    let scales = Increment::at(cfg.kind, centre, &t)
                        .physical_shift_scales(&s.domain.second_moment);
                    // First step: half a (coarse) voxel, at least 0.5 mm, on the first level
                    // (the capture range); a quarter voxel on a level that continues from a
                    // coarser one, which left the estimate within a fraction of its voxel.
                    // Measured on the shared bench (`estimate --model dti -j 2`, bootstrap,
                    // full-resolution level after the half-resolution one): half a voxel
                    // (1.25 mm) was rejected once and then accepted at 0.6–0.9 mm, away
                    // from the optimum, 6.6 metric evaluations per volume; a quarter
                    // (0.625 mm) 5.7, 0.3 mm 5.9, 0.15 mm 6.3, final error 0.0215 / 0.0476 mm
                    // → 0.0214 / 0.0475.
                    let step0 = if ran_coarser {
                        0.25 * mean_fvs * level.shrink as f64
                    } else {
                        (0.5 * mean_fvs * level.shrink as f64).max(0.5)
                    };
                    let mut o = optimize::bfgs(&m, &settings, &scales, step0, &t);
                    o.value = -o.value; // report the MI, not the cost
                    o
                }
                (FixedSide::MutualInformation(_), MetricKind::LeastSquares) => {
                    unreachable!("prepared with the configuration's metric")
                }
            };
            t = out.transform;
            if let TransformKind::Eddy { pe } = cfg.kind {
                // each update keeps the map in the family only to first order: project it back
                t = eddy::EddyModel::new(Vector3::from(pe), centre).project(&t);
            }
            iterations += out.iterations;
            metric = out.value;
        }
        if cfg.kind == TransformKind::Rigid {
            // keep the estimate exactly rigid after many compositions
            let r = nearest_rotation(&t.fixed_view::<3, 3>(0, 0).into_owned());
            t.fixed_view_mut::<3, 3>(0, 0).copy_from(&r);
        }
        if t.iter().any(|v| !v.is_finite()) {
            return Err(Error::runtime(format!(
                "{what} diverged (non-finite transform); try another initialisation"
            )));
        }
        Ok(RegistrationResult {
            matrix: t,
            iterations,
            metric,
        })
    }
}

/// The fixed samples of one level: mask voxels on the `shrink` lattice, thinned to the
/// fraction `sampling` by a fixed hash of each sample's rank (deterministic, like ANTs'
/// random sampling with a fixed seed).
fn samples(mask: &[bool], dims: [usize; 3], shrink: usize, sampling: f64) -> Vec<[usize; 3]> {
    let mut pts = pyramid::lattice_points(mask, dims, shrink);
    if sampling < 1.0 {
        let mut n = 0u64;
        pts.retain(|_| {
            n += 1;
            // the hash's first coordinate is uniform in [-0.5, 0.5)
            pyramid::hash3(n ^ 0x5A5A_5A5A_5A5A_5A5A)[0] + 0.5 < sampling
        });
    }
    pts
}

/// The data itself when every value is finite, else a copy with non-finite values set to 0.
fn finite_or_zero(data: &[f32]) -> std::borrow::Cow<'_, [f32]> {
    if data.iter().all(|v| v.is_finite()) {
        std::borrow::Cow::Borrowed(data)
    } else {
        std::borrow::Cow::Owned(
            data.iter()
                .map(|&v| if v.is_finite() { v } else { 0.0 })
                .collect(),
        )
    }
}

/// Checks of the moving image and the initial transform against a prepared fixed image;
/// returns the inverse of the moving image's affine.
fn checked_moving(
    what: &str,
    fixed: &Volume,
    moving: &Volume,
    mask: &[bool],
    init: &Matrix4<f64>,
) -> Result<Matrix4<f64>> {
    if moving.grid.is_empty() {
        return Err(Error::input(format!("{what}: the moving image is empty")));
    }
    if init.iter().any(|v| !v.is_finite())
        || init.fixed_view::<3, 3>(0, 0).determinant().abs() < 1e-12
    {
        return Err(Error::input(format!(
            "{what}: the initial transform is not finite or not invertible"
        )));
    }
    let Some(minv) = moving.grid.affine.try_inverse() else {
        return Err(Error::input(format!(
            "{what}: the moving image's affine is singular; fix the NIfTI header"
        )));
    };
    let (inside, total) = overlap(fixed, moving, mask, &(minv * init));
    if total > 0 && (inside as f64) < MIN_OVERLAP * total as f64 {
        return Err(Error::input(format!(
            "{what}: the images do not overlap: only {:.1} % of the fixed image's mask falls inside the \
             moving image under the initial transform (at least {:.0} % is needed); check both \
             images' affines (same scanner space?) or give an initial transform",
            100.0 * inside as f64 / total as f64,
            100.0 * MIN_OVERLAP
        )));
    }
    Ok(minv)
}

/// Least fraction of the fixed mask that must map inside the moving image. Without overlap
/// every metric is flat, and the optimiser returns its starting point as if it had converged.
const MIN_OVERLAP: f64 = 0.05;

/// How many of (a regular subsample of at most ~50 000) mask voxels map inside the moving
/// grid under `to_moving_voxel` (fixed world → moving voxel), and how many were tested.
fn overlap(
    fixed: &Volume,
    moving: &Volume,
    mask: &[bool],
    to_moving_voxel: &Matrix4<f64>,
) -> (usize, usize) {
    let n = mask.iter().filter(|&&m| m).count();
    let step = (n / 50_000).max(1);
    let d = moving.grid.dims;
    let (mut inside, mut total) = (0, 0);
    for idx in (0..mask.len()).filter(|&i| mask[i]).step_by(step) {
        let [i, j, k] = fixed.grid.ijk(idx);
        let x = fixed.grid.world([i as f64, j as f64, k as f64]);
        let y = to_moving_voxel.transform_point(&x.into());
        total += 1;
        if (0..3).all(|a| y[a] > -0.5 && y[a] < d[a] as f64 - 0.5) {
            inside += 1;
        }
    }
    (inside, total)
}
