//! Least squares with a fitted intensity scale and offset, in inverse-compositional form.
//!
//! The fixed image is a model prediction and the moving image an acquisition of the same
//! contrast, so we model `M(T·x) ≈ a·F(Δ·x) + b` over fixed sample points `x`. Linearising the
//! increment at identity gives `M(T·x) ≈ a·F(x) + b + G(x)·q` with `G = ∇F·∂(Δx)/∂p` and
//! `q = a·p`: a problem *linear* in `(a, b, q)` whose design matrix `X = [F, 1, G]` depends on
//! the fixed image only. `XᵀX` is therefore built once per pyramid level and each iteration
//! costs one interpolation of the moving image per sample plus `Xᵀw` (Baker & Matthews'
//! inverse-compositional algorithm with a linear appearance model). Because the gradient is
//! taken from the smooth prediction rather than the noisy acquisition, the noise of the
//! moving image does not correlate with the Jacobian and does not bias the fixed point.
//!
//! Sums run over fixed chunks of samples reduced in chunk order, so results are bit-identical
//! for any number of rayon threads.

use super::Metric;
use crate::registration::interpolate::{trilinear, BSpline};
use crate::registration::transform::{Increment, TransformKind};
use nalgebra::{DMatrix, DVector, Matrix4, Vector3};
use rayon::prelude::*;

/// Samples per chunk of the ordered parallel reduction (fixed: results never depend on it
/// varying with the thread count).
const CHUNK: usize = 2048;
/// Maximum width of a design row: F, 1 and 12 affine parameters.
const MAXW: usize = 14;

/// The moving image as seen by the metric at one pyramid level.
pub enum MovingImage {
    Linear { data: Vec<f32>, dims: [usize; 3] },
    Cubic(BSpline),
}

impl MovingImage {
    #[inline]
    pub fn value(&self, p: [f64; 3]) -> f64 {
        match self {
            MovingImage::Linear { data, dims } => trilinear(data, *dims, p),
            MovingImage::Cubic(s) => s.value(p),
        }
    }
}

/// Fixed-image samples of one level with their design rows `[F, 1, G…]` and `XᵀX`.
pub struct FixedSamples {
    /// The family searched; rows hold the Jacobian of `kind.row_kind()`.
    pub kind: TransformKind,
    /// Fixed voxel coordinates of the samples.
    pub vox: Vec<[f64; 3]>,
    /// Row-major design matrix, `width` values per sample.
    pub rows: Vec<f64>,
    pub width: usize,
    /// `XᵀX`, `width × width`.
    pub normal: DMatrix<f64>,
    /// Square roots of the samples' weights (None: all 1). Rows are stored scaled by them,
    /// and each interpolated moving value is scaled by its sample's, so every sum below is
    /// the weighted one.
    pub root_weights: Option<Vec<f64>>,
}

/// Sufficient statistics of one metric evaluation: `Xᵀw` and `Σw²`.
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub xtw: Vec<f64>,
    pub sww: f64,
}

impl FixedSamples {
    /// Build the samples from the (smoothed) fixed image at voxel points `pts`.
    /// `affine` is the fixed grid's voxel→world matrix, `centre` the increment centre (world).
    /// `weights` (on the fixed grid, ≥ 0; None: all 1): each sample's squared residual counts
    /// that many times. Every row is scaled by the square root of its sample's weight (and so,
    /// in [`FixedSamples::evaluate`], is every moving value), so each sum is the weighted one;
    /// `XᵀX` is built once, from the scaled rows.
    #[allow(clippy::too_many_arguments)] // one level's inputs, assembled by the driver only
    pub fn new(
        fixed: &[f32],
        dims: [usize; 3],
        affine: &Matrix4<f64>,
        pts: &[[usize; 3]],
        kind: TransformKind,
        centre: &Vector3<f64>,
        spline_gradient: bool,
        weights: Option<&[f32]>,
    ) -> Self {
        let spline = spline_gradient.then(|| BSpline::new(fixed, dims));
        // the eddy model's rows are affine rows, reduced per iteration by the optimiser
        let row_kind = kind.row_kind();
        let width = row_kind.n_params() + 2;
        let a3 = affine.fixed_view::<3, 3>(0, 0).into_owned();
        let inv_t = a3
            .try_inverse()
            .expect("fixed affine is invertible")
            .transpose();
        let nx = dims[0];
        let plane = nx * dims[1];
        let at = |i: usize, j: usize, k: usize| fixed[i + nx * j + plane * k] as f64;
        let mut rows = Vec::with_capacity(pts.len() * width);
        let mut vox = Vec::with_capacity(pts.len());
        let mut jac = [0.0; 12];
        for &[i, j, k] in pts {
            let (gx, gy, gz) = if let Some(sp) = &spline {
                // derivative of the cubic spline through the samples: consistent with the
                // cubic interpolation of the moving image, so Gauss–Newton converges faster
                let g = sp.gradient_at_node(i, j, k);
                (g[0], g[1], g[2])
            } else {
                // central differences (one-sided at the border), per voxel index
                let d = |lo: f64, hi: f64, span: f64| (hi - lo) / span;
                let gx = {
                    let (l, h) = (i.saturating_sub(1), (i + 1).min(dims[0] - 1));
                    d(at(l, j, k), at(h, j, k), (h - l).max(1) as f64)
                };
                let gy = {
                    let (l, h) = (j.saturating_sub(1), (j + 1).min(dims[1] - 1));
                    d(at(i, l, k), at(i, h, k), (h - l).max(1) as f64)
                };
                let gz = {
                    let (l, h) = (k.saturating_sub(1), (k + 1).min(dims[2] - 1));
                    d(at(i, j, l), at(i, j, h), (h - l).max(1) as f64)
                };
                (gx, gy, gz)
            };
            let g = inv_t * Vector3::new(gx, gy, gz);
            let p = [i as f64, j as f64, k as f64];
            let x = affine.fixed_view::<3, 3>(0, 0) * Vector3::new(p[0], p[1], p[2])
                + affine.fixed_view::<3, 1>(0, 3);
            row_kind.jacobian_row(&g, &(x - centre), &mut jac);
            rows.push(at(i, j, k));
            rows.push(1.0);
            rows.extend_from_slice(&jac[..row_kind.n_params()]);
            vox.push(p);
        }
        let root_weights = weights.map(|w| {
            let root: Vec<f64> = pts
                .iter()
                .map(|&[i, j, k]| (w[i + nx * j + plane * k].max(0.0) as f64).sqrt())
                .collect();
            for (row, &r) in rows.chunks_exact_mut(width).zip(&root) {
                for x in row {
                    *x *= r;
                }
            }
            root
        });
        let normal = normal_matrix(&rows, width);
        FixedSamples {
            kind,
            vox,
            rows,
            width,
            normal,
            root_weights,
        }
    }

    pub fn len(&self) -> usize {
        self.vox.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vox.is_empty()
    }

    /// Interpolate the moving image at `v·p` for every sample (`v`: fixed voxel → moving voxel)
    /// and accumulate `Xᵀw`, `Σw²`.
    pub fn evaluate(&self, moving: &MovingImage, v: &Matrix4<f64>) -> Evaluation {
        let w = self.width;
        let m: [[f64; 4]; 3] = [
            [v[(0, 0)], v[(0, 1)], v[(0, 2)], v[(0, 3)]],
            [v[(1, 0)], v[(1, 1)], v[(1, 2)], v[(1, 3)]],
            [v[(2, 0)], v[(2, 1)], v[(2, 2)], v[(2, 3)]],
        ];
        let partial: Vec<[f64; MAXW + 1]> = self
            .vox
            .par_chunks(CHUNK)
            .zip(self.rows.par_chunks(CHUNK * w))
            .enumerate()
            .map(|(c, (vox, rows))| {
                let rw = self
                    .root_weights
                    .as_ref()
                    .map(|r| &r[c * CHUNK..(c * CHUNK + vox.len())]);
                let mut acc = [0.0f64; MAXW + 1];
                let point = |n: usize| {
                    let p = &vox[n];
                    [
                        m[0][0] * p[0] + m[0][1] * p[1] + m[0][2] * p[2] + m[0][3],
                        m[1][0] * p[0] + m[1][1] * p[1] + m[1][2] * p[2] + m[1][3],
                        m[2][0] * p[0] + m[2][1] * p[1] + m[2][2] * p[2] + m[2][3],
                    ]
                };
                let mut add = |n: usize, val: f64| {
                    let val = match rw {
                        Some(rw) => val * rw[n],
                        None => val,
                    };
                    let r = &rows[n * w..(n + 1) * w];
                    for a in 0..w {
                        acc[a] += r[a] * val;
                    }
                    acc[MAXW] += val * val;
                };
                match moving {
                    MovingImage::Cubic(s) => s.values_with(vox.len(), point, add),
                    MovingImage::Linear { data, dims } => {
                        for n in 0..vox.len() {
                            add(n, trilinear(data, *dims, point(n)));
                        }
                    }
                }
                acc
            })
            .collect();
        let mut xtw = vec![0.0; w];
        let mut sww = 0.0;
        for acc in &partial {
            for a in 0..w {
                xtw[a] += acc[a];
            }
            sww += acc[MAXW];
        }
        Evaluation { xtw, sww }
    }

    /// Normalised correlation between the fixed samples and the interpolated moving values.
    pub fn correlation(&self, e: &Evaluation) -> f64 {
        let n = self.normal[(1, 1)];
        let (sf, sff) = (self.normal[(0, 1)], self.normal[(0, 0)]);
        let (sw, sfw) = (e.xtw[1], e.xtw[0]);
        let cov = sfw - sf * sw / n;
        let vf = sff - sf * sf / n;
        let vw = e.sww - sw * sw / n;
        if vf <= 0.0 || vw <= 0.0 {
            return 0.0;
        }
        cov / (vf * vw).sqrt()
    }
}

/// `XᵀX` of row-major `rows` (`width` values each), with the same ordered chunk reduction as
/// the evaluations.
fn normal_matrix(rows: &[f64], width: usize) -> DMatrix<f64> {
    let partial: Vec<Vec<f64>> = rows
        .par_chunks(CHUNK * width)
        .map(|chunk| {
            let mut h = vec![0.0; width * width];
            gram(chunk, width, &mut h);
            h
        })
        .collect();
    let mut normal = DMatrix::zeros(width, width);
    for h in &partial {
        for a in 0..width {
            for b in a..width {
                normal[(a, b)] += h[a * width + b];
            }
        }
    }
    for a in 0..width {
        for b in 0..a {
            normal[(a, b)] = normal[(b, a)];
        }
    }
    normal
}

/// Add `Σ r·rᵀ` over the rows of `chunk` (`width` values each, in order) into `h` (row-major
/// `width × width`; only the upper triangle is read by the caller).
///
/// Every entry is the same ordered sum of the same products as a plain triangular loop (no
/// fused multiply-add), so the result is the same bits; the full square with the width known
/// at compile time lets the compiler vectorise it (with AVX2 where the CPU has it). The eddy
/// model's 14-wide affine rows made this loop ~2.5 % of a bench eddy run.
fn gram(chunk: &[f64], width: usize, h: &mut [f64]) {
    #[inline(always)]
    fn body<const W: usize>(chunk: &[f64], h: &mut [f64]) {
        let h = &mut h[..W * W];
        for r in chunk.chunks_exact(W) {
            let r: &[f64; W] = r.try_into().expect("W values");
            for (a, row) in h.chunks_exact_mut(W).enumerate() {
                let ra = r[a];
                for (hb, &rb) in row.iter_mut().zip(r) {
                    *hb += ra * rb;
                }
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn body_avx2<const W: usize>(chunk: &[f64], h: &mut [f64]) {
        body::<W>(chunk, h)
    }
    fn dispatch<const W: usize>(chunk: &[f64], h: &mut [f64]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { body_avx2::<W>(chunk, h) };
        }
        body::<W>(chunk, h)
    }
    match width {
        8 => dispatch::<8>(chunk, h),
        14 => dispatch::<14>(chunk, h),
        _ => {
            for r in chunk.chunks_exact(width) {
                for a in 0..width {
                    let ra = r[a];
                    for b in a..width {
                        h[a * width + b] += ra * r[b];
                    }
                }
            }
        }
    }
}

/// The least-squares metric of one level: fixed samples, the moving interpolant and the maps
/// between the grids. What [`super::super::optimize::gauss_newton`] iterates on.
pub struct LeastSquares<'a> {
    /// Prepared once per level of the fixed image (shared by every moving image).
    pub samples: &'a FixedSamples,
    pub moving: MovingImage,
    /// Fixed voxel → world.
    pub fixed_affine: Matrix4<f64>,
    /// World → moving voxel.
    pub moving_inv_affine: Matrix4<f64>,
}

impl LeastSquares<'_> {
    /// Sufficient statistics and the normalised correlation at `t` (fixed world → moving
    /// world).
    pub fn evaluate(&self, t: &Matrix4<f64>) -> (Evaluation, f64) {
        let v = self.moving_inv_affine * t * self.fixed_affine;
        let e = self.samples.evaluate(&self.moving, &v);
        let r = self.samples.correlation(&e);
        (e, r)
    }
}

impl Metric for LeastSquares<'_> {
    /// Mean squared residual `r = M(T·x) − a·F(x) − b` after the best scale `a` and offset
    /// `b`, and its derivative. The derivative is the inverse-compositional one: near the
    /// optimum `M(T·Δ(p)·x) ≈ a·F(Δ(p)·x) + b`, so `∂r/∂p ≈ a·G` with `G` the fixed image's
    /// stored Jacobian rows. Exact at alignment and free (no moving-image gradient); far from
    /// it a descent direction, not the exact slope.
    fn value_and_derivative(&self, t: &Matrix4<f64>, inc: &Increment) -> (f64, DVector<f64>) {
        let (e, _) = self.evaluate(t);
        let nm = &self.samples.normal;
        let (n, sf, sff) = (nm[(1, 1)], nm[(0, 1)], nm[(0, 0)]);
        let (sw, sfw) = (e.xtw[1], e.xtw[0]);
        let vf = sff - sf * sf / n;
        let a = if vf > 0.0 {
            (sfw - sf * sw / n) / vf
        } else {
            0.0
        };
        let b = (sw - a * sf) / n;
        let value =
            (e.sww - 2.0 * a * sfw - 2.0 * b * sw + a * a * sff + 2.0 * a * b * sf + b * b * n) / n;
        let w = self.samples.width;
        let rows: Vec<f64> = (2..w)
            .map(|k| 2.0 * a * (e.xtw[k] - a * nm[(k, 0)] - b * nm[(k, 1)]) / n)
            .collect();
        (value.max(0.0), super::reduce(&rows, inc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorised Gram sum is the plain triangular loop, bit for bit, for both widths.
    #[test]
    fn gram_is_the_plain_triangular_sum() {
        for width in [8usize, 14] {
            let rows: Vec<f64> = (0..(37 * width) as u64)
                .map(|n| crate::registration::pyramid::hash3(n)[0] * 1e3 + 1.0 / (n as f64 + 3.0))
                .collect();
            let mut h = vec![0.0; width * width];
            gram(&rows, width, &mut h);
            let mut plain = vec![0.0; width * width];
            for r in rows.chunks_exact(width) {
                for a in 0..width {
                    for b in a..width {
                        plain[a * width + b] += r[a] * r[b];
                    }
                }
            }
            for a in 0..width {
                for b in a..width {
                    assert_eq!(h[a * width + b].to_bits(), plain[a * width + b].to_bits());
                }
            }
        }
    }
}
