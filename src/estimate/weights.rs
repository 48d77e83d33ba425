//! Registration weights from the model's residuals: where a shell's volumes differ most from
//! their leave-one-out predictions, a registration to those predictions trusts them least.
//!
//! Why: a tensor cannot represent the b=2000 signal's angular structure (fourth-order, where
//! fibres cross) nor its curvature across b-values, so a DTI prediction is wrong by a few per
//! cent in a pattern fixed to the anatomy. Least squares reads such a pattern as motion. The
//! maximum-likelihood registration weighs every voxel by the inverse variance of
//! `acquired − predicted` there — noise and misfit together — and that variance is measured
//! by the residuals of the shell's other volumes, which share the misfit. With the simulator's
//! noise at SNR 1000 (misfit only), DTI's b=2000 volumes went from 0.039 to 0.020 mm median
//! error (DKI: 0.016); at SNR 25 the three dropout phantoms went from 0.030–0.033 to
//! 0.027–0.030 mm overall (benches/README.md, "Residual weights"). DKI, whose residuals are
//! noise, lost 1–4 % with them: only DTI uses them ([`weighs_residuals`]).

use super::passes::Prediction;
use crate::image::MaskedSeries;
use crate::io::gradients::Shell;
use crate::model::ModelKind;
use crate::registration::pyramid::gaussian_smooth;
use rayon::prelude::*;
use std::sync::Arc;

/// Whether `kind`'s registrations are weighted by its residuals (see the module doc).
pub fn weighs_residuals(kind: ModelKind) -> bool {
    kind == ModelKind::Dti
}

/// Fewest predicted volumes a shell needs for its residual variance to be estimated.
const MIN_VOLUMES: usize = 6;

/// Smoothing of the variance map (voxels): a median of ~30 squared residuals is known to
/// ±25 %; averaging over a voxel's neighbourhood brings that under 10 % while keeping
/// anatomical detail. 1 and 2 voxels measured the same (d12/d13 DTI within 0.0004 mm).
const SMOOTHING_VOXELS: f64 = 1.0;

/// Smallest variance, as a fraction of the shell's median: keeps a voxel whose residuals all
/// vanish (a constant region, the replaced predictions of a dropout) from taking all the
/// weight. 0.05, 0.25 and 0.5 measured the same.
const FLOOR: f64 = 0.05;

/// Median of χ²₁ (the square of a standard normal): `median(e²) / MEDIAN_CHI2_1` estimates the
/// variance of `e` whatever a few samples hold (a dropout slice, a misregistered volume).
const MEDIAN_CHI2_1: f64 = 0.454_936_4;

/// Each shell's weight per fitted voxel, normalised to a median of 1: the inverse of the
/// robust variance of `snapshot − prediction` over the shell's predicted volumes, smoothed.
/// `held[h]`: volume h's prediction at `snapshot`'s voxels (None: not predicted). Returns the
/// weights of each volume (4-D index), shared by the volumes of a shell; None for volumes
/// without a prediction or in shells of fewer than [`MIN_VOLUMES`] predicted volumes.
pub fn shell_weights(
    snapshot: &MaskedSeries,
    held: &[Option<Prediction>],
    shells: &[Shell],
) -> Vec<Option<Arc<Vec<f32>>>> {
    let mut out = vec![None; held.len()];
    for shell in shells {
        let members: Vec<(usize, &Prediction)> = shell
            .indices
            .iter()
            .filter_map(|&h| held[h].as_ref().map(|p| (h, p)))
            .collect();
        if members.len() < MIN_VOLUMES {
            continue;
        }
        let var = residual_variance(snapshot, &members);
        let w = Arc::new(inverse_normalised(&smoothed(snapshot, &var)));
        for &(h, _) in &members {
            out[h] = Some(w.clone());
        }
    }
    out
}

/// Robust variance of `acquired − predicted` per held voxel over `members`.
fn residual_variance(snapshot: &MaskedSeries, members: &[(usize, &Prediction)]) -> Vec<f64> {
    let n = snapshot.voxels().len();
    (0..n)
        .into_par_iter()
        .with_min_len(1024)
        .map_init(
            || Vec::with_capacity(members.len()),
            |e2, l| {
                e2.clear();
                e2.extend(members.iter().map(|&(h, p)| {
                    let e = snapshot.volume(h)[l] as f64 - p.values[l] as f64;
                    e * e
                }));
                let m = e2.len() / 2;
                let (_, median, _) = e2.select_nth_unstable_by(m, f64::total_cmp);
                *median / MEDIAN_CHI2_1
            },
        )
        .collect()
}

/// `values` (at the held voxels) smoothed by a Gaussian of [`SMOOTHING_VOXELS`] inside the
/// held region only (normalised convolution: voxels outside neither give nor take).
fn smoothed(snapshot: &MaskedSeries, values: &[f64]) -> Vec<f64> {
    let grid = &snapshot.grid;
    let (mut num, mut den) = (vec![0f32; grid.len()], vec![0f32; grid.len()]);
    for (&l, &v) in snapshot.voxels().iter().zip(values) {
        num[l] = v as f32;
        den[l] = 1.0;
    }
    let sigma = [SMOOTHING_VOXELS; 3];
    let (num, den) = (
        gaussian_smooth(&num, grid.dims, sigma),
        gaussian_smooth(&den, grid.dims, sigma),
    );
    snapshot
        .voxels()
        .iter()
        .map(|&l| num[l] as f64 / (den[l] as f64).max(1e-6))
        .collect()
}

/// `1 / max(v, FLOOR · median v)` (0 where v is not a number), divided by its median.
fn inverse_normalised(var: &[f64]) -> Vec<f32> {
    let median = |v: &[f64]| {
        let mut s = v.to_vec();
        let m = s.len() / 2;
        *s.select_nth_unstable_by(m, f64::total_cmp).1
    };
    let floor = (FLOOR * median(var)).max(f64::MIN_POSITIVE);
    // a voxel whose residuals are not numbers says nothing: no weight
    let w: Vec<f64> = var
        .iter()
        .map(|&v| if v.is_nan() { 0.0 } else { 1.0 / v.max(floor) })
        .collect();
    let m = median(&w);
    if !(m > 0.0 && m.is_finite()) {
        // most residuals unusable: equal weights, as without this stage
        return vec![1.0; var.len()];
    }
    w.iter().map(|&x| (x / m) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Grid;
    use nalgebra::Matrix4;

    /// Residuals drawn with a known standard deviation per voxel: the weights follow
    /// 1 / variance, normalised, within the sampling error of ~40 volumes.
    #[test]
    fn weights_are_the_inverse_residual_variance() {
        let grid = Grid::new([12, 12, 12], Matrix4::identity());
        let voxels: Vec<usize> = (0..grid.len()).collect();
        // left half σ = 10, right half σ = 20 (variance ratio 4)
        let sd = |l: usize| if grid.ijk(l)[0] < 6 { 10.0 } else { 20.0 };
        let n_vol = 41;
        let mut state = 12345u64;
        let mut normal = || {
            // Box–Muller from a 64-bit LCG: independent of the code under test
            let mut u = || {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
            };
            let (a, b) = (u(), u());
            (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()
        };
        let volumes: Vec<Vec<f32>> = (0..n_vol)
            .map(|_| {
                voxels
                    .iter()
                    .map(|&l| (500.0 + sd(l) * normal()) as f32)
                    .collect()
            })
            .collect();
        let snapshot = MaskedSeries::from_volumes(grid.clone(), voxels.clone(), &volumes);
        let held: Vec<Option<Prediction>> = (0..n_vol)
            .map(|_| {
                Some(Prediction {
                    values: vec![500.0; voxels.len()],
                    replaced: 0,
                    weights: None,
                })
            })
            .collect();
        let shell = Shell {
            bvalue: 1000.0,
            indices: (0..n_vol).collect(),
        };
        let all = shell_weights(&snapshot, &held, &[shell]);
        let w = all[0].as_ref().expect("weighted");
        // one map for the whole shell
        assert!(all
            .iter()
            .all(|x| x.as_ref().is_some_and(|x| Arc::ptr_eq(x, w))));
        // a shell too small for a variance gets none
        let small = Shell {
            bvalue: 2000.0,
            indices: (0..MIN_VOLUMES - 1).collect(),
        };
        assert!(shell_weights(&snapshot, &held, &[small])
            .iter()
            .all(Option::is_none));
        // away from the boundary between the halves (the smoothing mixes 1–2 voxels there)
        let mean_of = |lo: usize, hi: usize| {
            let sel: Vec<f64> = voxels
                .iter()
                .filter(|&&l| (lo..hi).contains(&grid.ijk(l)[0]))
                .map(|&l| w[l] as f64)
                .collect();
            sel.iter().sum::<f64>() / sel.len() as f64
        };
        let (low_noise, high_noise) = (mean_of(0, 4), mean_of(8, 12));
        let ratio = low_noise / high_noise;
        assert!(
            (ratio - 4.0).abs() < 0.4,
            "weight ratio {ratio}, expected 4"
        );
    }
}
