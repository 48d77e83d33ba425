//! The one registration driver (ITK's `ImageRegistrationMethodv4`): checks and cleans the
//! inputs, dilates the mask, and runs the pyramid — per level it smooths both images, chooses
//! the fixed samples, builds the metric and hands it to the metric's optimiser with
//! parameter scales from physical shift. Metrics and optimisers never see a file, a mask
//! policy or a pyramid.

use super::metric::{
    mutual_information, FixedSamples, LeastSquares, MovingImage, MutualInformation,
};
use super::optimize::{self, LevelSettings};
use super::transform::{nearest_rotation, Increment};
use super::{
    eddy, interpolate, pyramid, MetricKind, RegistrationConfig, RegistrationResult, TransformKind,
};
use crate::image::{Mask, Volume};
use crate::{Error, Result};
use nalgebra::{Matrix3, Matrix4, Vector3};

/// The region the metric is evaluated over, in fixed world coordinates: the dilated mask's
/// centroid (the increments' centre), bounding box (convergence tests) and second moment
/// (parameter scales).
struct Domain {
    centre: Vector3<f64>,
    lo: Vector3<f64>,
    hi: Vector3<f64>,
    second_moment: Matrix3<f64>,
}

impl Domain {
    fn new(fixed: &Volume, pts: &[[usize; 3]]) -> Domain {
        let world: Vec<Vector3<f64>> = pts
            .iter()
            .map(|p| fixed.grid.world([p[0] as f64, p[1] as f64, p[2] as f64]))
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
/// information.
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
    let what = match cfg.metric {
        MetricKind::LeastSquares => "registration",
        MetricKind::MutualInformation(_) => "mutual-information registration",
    };
    let fdims = fixed.grid.dims;
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
    let (mask0, minv) = checked_inputs(what, fixed, moving, fixed_mask, init)?;
    let mask = crate::mask::dilate_voxels(&mask0, fdims, cfg.mask_dilation);
    let np = cfg.kind.n_params();
    let min_samples = match cfg.metric {
        MetricKind::LeastSquares => 10 * (np + 2),
        MetricKind::MutualInformation(_) => mutual_information::MIN_SAMPLES,
    };
    let all = pyramid::lattice_points(&mask, fdims, 1);
    if all.len() < min_samples {
        return Err(Error::input(format!(
            "{what}: the mask holds {} voxels, too few to register (at least {min_samples}); check the mask",
            all.len()
        )));
    }
    let domain = Domain::new(fixed, &all);
    let centre = domain.centre;

    // Non-finite voxels (e.g. an ill-posed model prediction) would poison every sum (and
    // index outside a histogram): they count as 0, like the space outside the image.
    let fixed_data = finite_or_zero(&fixed.data);
    let moving_data = finite_or_zero(&moving.data);
    let fvs = fixed.grid.voxel_sizes();
    let mvs = moving.grid.voxel_sizes();
    let mean_fvs = (fvs[0] + fvs[1] + fvs[2]) / 3.0;
    let a = fixed.grid.affine;
    let settings = LevelSettings {
        kind: cfg.kind,
        centre,
        lo: domain.lo,
        hi: domain.hi,
        max_iterations: cfg.max_iterations,
        tol_mm: cfg.tol_mm,
    };
    let mut t = *init;
    let mut iterations = 0;
    let mut metric = None;
    for level in &cfg.levels {
        let pts = samples(&mask, fdims, level.shrink, cfg.sampling);
        if pts.len() < min_samples {
            continue; // too coarse for this mask: finer levels take over
        }
        let sigma_mm = level.sigma * mean_fvs;
        let fsig = [sigma_mm / fvs[0], sigma_mm / fvs[1], sigma_mm / fvs[2]];
        let msig = [sigma_mm / mvs[0], sigma_mm / mvs[1], sigma_mm / mvs[2]];
        let fdata = pyramid::gaussian_smooth(&fixed_data, fdims, fsig);
        let mdata = pyramid::gaussian_smooth(&moving_data, moving.grid.dims, msig);
        let out = match &cfg.metric {
            MetricKind::LeastSquares => {
                let samples =
                    FixedSamples::new(&fdata, fdims, &a, &pts, cfg.kind, &centre, level.cubic);
                let mov = if level.cubic {
                    MovingImage::Cubic(interpolate::BSpline::new(&mdata, moving.grid.dims))
                } else {
                    MovingImage::Linear {
                        data: mdata,
                        dims: moving.grid.dims,
                    }
                };
                let ls = LeastSquares {
                    samples,
                    moving: mov,
                    fixed_affine: a,
                    moving_inv_affine: minv,
                };
                // Gauss–Newton is invariant to parameter scaling: no scales needed
                optimize::gauss_newton(&ls, &settings, 0.1 * mean_fvs, &t)?
            }
            MetricKind::MutualInformation(mi) => {
                let m = MutualInformation::new(
                    &fixed.grid,
                    &fdata,
                    &pts,
                    level.shrink,
                    &moving.grid,
                    &mdata,
                    &minv,
                    &t,
                    &centre,
                    cfg.kind,
                    mi,
                )?;
                let scales = Increment::at(cfg.kind, centre, &t)
                    .physical_shift_scales(&domain.second_moment);
                // first step: half a (coarse) voxel, at least 0.5 mm
                let step0 = (0.5 * mean_fvs * level.shrink as f64).max(0.5);
                let mut o = optimize::bfgs(&m, &settings, &scales, step0, &t);
                o.value = -o.value; // report the MI, not the cost
                o
            }
        };
        t = out.transform;
        if let TransformKind::Eddy { pe } = cfg.kind {
            // each update keeps the map in the family only to first order: project it back
            t = eddy::EddyModel::new(Vector3::from(pe), centre).project(&t);
        }
        iterations += out.iterations;
        metric = Some(out.value);
    }
    let Some(metric) = metric else {
        return Err(Error::input(format!(
            "{what}: the mask is too small for every pyramid level (each needs {min_samples} samples); check the mask or add a finer level"
        )));
    };
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

/// Checks shared by every registration method; returns the fixed mask (all true without one)
/// and the inverse of the moving image's affine. `what` names the method in messages.
pub(crate) fn checked_inputs(
    what: &str,
    fixed: &Volume,
    moving: &Volume,
    fixed_mask: Option<&Mask>,
    init: &Matrix4<f64>,
) -> Result<(Vec<bool>, Matrix4<f64>)> {
    if fixed.grid.is_empty() || moving.grid.is_empty() {
        return Err(Error::input(format!(
            "{what}: the fixed or moving image is empty"
        )));
    }
    if init.iter().any(|v| !v.is_finite())
        || init.fixed_view::<3, 3>(0, 0).determinant().abs() < 1e-12
    {
        return Err(Error::input(format!(
            "{what}: the initial transform is not finite or not invertible"
        )));
    }
    let (Some(_), Some(minv)) = (
        fixed.grid.affine.try_inverse(),
        moving.grid.affine.try_inverse(),
    ) else {
        return Err(Error::input(format!(
            "{what}: an image affine is singular; fix the NIfTI header"
        )));
    };
    let mask = match fixed_mask {
        Some(m) if m.grid.dims != fixed.grid.dims => {
            return Err(Error::input(format!(
                "{what}: mask size {:?} does not match the fixed image {:?}",
                m.grid.dims, fixed.grid.dims
            )))
        }
        Some(m) => m.data.clone(),
        None => vec![true; fixed.grid.len()],
    };
    let (inside, total) = overlap(fixed, moving, &mask, &(minv * init));
    if total > 0 && (inside as f64) < MIN_OVERLAP * total as f64 {
        return Err(Error::input(format!(
            "{what}: the images do not overlap: only {:.1} % of the fixed image's mask falls inside the \
             moving image under the initial transform (at least {:.0} % is needed); check both \
             images' affines (same scanner space?) or give an initial transform",
            100.0 * inside as f64 / total as f64,
            100.0 * MIN_OVERLAP
        )));
    }
    Ok((mask, minv))
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
