//! Resampling: the moving image seen through a transform on a target grid.
//!
//! `corrected(x) = moving(T·x)` for every voxel centre `x` of the target grid (conventions.md:
//! `T` maps reference points to moving points). Output voxels are independent, so slices are
//! computed in parallel without affecting the result.

use super::interpolate::{trilinear, BSpline};
use crate::image::{Grid, Volume};
use nalgebra::Matrix4;
use rayon::prelude::*;

/// Interpolation kernel for [`resample`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interpolation {
    /// Trilinear: fast, smooths by up to half a voxel.
    Linear,
    /// Cubic B-spline with prefilter: interpolating and sharper; use for final outputs.
    CubicBSpline,
}

/// `corrected(x) = moving(T·x)` for each voxel centre `x` of `target` (0 outside the moving
/// field of view).
pub fn resample(moving: &Volume, target: &Grid, t: &Matrix4<f64>, interp: Interpolation) -> Volume {
    let inv = moving
        .grid
        .affine
        .try_inverse()
        .expect("moving image affine must be invertible");
    let v = inv * t * target.affine;
    let dims = target.dims;
    let spline = match interp {
        Interpolation::CubicBSpline => Some(BSpline::new(&moving.data, moving.grid.dims)),
        Interpolation::Linear => None,
    };
    let plane = dims[0] * dims[1];
    let mut out = vec![0.0f32; target.len()];
    out.par_chunks_mut(plane.max(1))
        .enumerate()
        .for_each(|(k, slice)| {
            for (j, row) in slice.chunks_exact_mut(dims[0]).enumerate() {
                let point = |i: usize| {
                    let p = v * nalgebra::Vector4::new(i as f64, j as f64, k as f64, 1.0);
                    [p.x, p.y, p.z]
                };
                match &spline {
                    Some(s) => s.values_with(row.len(), point, |i, val| row[i] = val as f32),
                    None => {
                        for (i, o) in row.iter_mut().enumerate() {
                            *o = trilinear(&moving.data, moving.grid.dims, point(i)) as f32;
                        }
                    }
                }
            }
        });
    Volume::new(target.clone(), out)
}
