//! The leave-one-volume-out engine: fit every mask voxel on all diffusion-weighted volumes but
//! one, predict that one.
//!
//! Semantics (nifreeze `BaseDWIModel` + DIPY 1.12.1 defaults):
//! - volumes with b ≤ `b0_threshold` are not fitted; their voxelwise median is S0, and mask
//!   voxels with S0 < 1e-5 are left out (prediction 0). Without b=0 volumes (or when told to
//!   ignore them) S0 is the 98th percentile of the masked diffusion-weighted data, rounded,
//!   for every voxel, and no voxel is left out.
//! - fold h fits all diffusion-weighted volumes but h; DKI also gets S0 as one b=0 sample
//!   (DIPY's DKI needs a b=0 row), DTI does not. Signals are clipped below at 1e-4 before the
//!   log, as DIPY does.
//! - WLS is DIPY's two-pass fit: OLS, then weights w² with w = the OLS-predicted signal.
//! - the prediction goes through DIPY's eigenvalue clipping (see [`super::tensor`]).
//!
//! Speed: the log-signals of the fitted voxels are stored once, voxel-major, so a chunk of
//! voxels is one contiguous matrix `Y` (voxels × volumes). The held-out volume is a zero column
//! of the fold's OLS pseudo-inverse and a zero weight, so every fold uses the same `Y`:
//! `B_ols = Y·P_hᵀ` is one matrix product per chunk; WLS builds each voxel's normal matrix from
//! weighted moments (`W·Q`, one product per chunk, see [`super::design`]) and solves it with a
//! small Cholesky (SVD fallback when it is too ill-conditioned). Each voxel's arithmetic does
//! not depend on which chunk it is in, so results are identical for any chunk size and thread
//! count.

use super::design::{self, Column, MomentMap};
use super::linalg;
use super::tensor::{log_prediction, log_prediction_literal, MIN_SIGNAL};
use super::{FitMethod, ModelKind};
use crate::image::{Grid, Mask, Series, Volume};
use crate::io::gradients::{shells, GradientTable};
use crate::{Error, Result};
use nalgebra::{DMatrix, DVector};
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

/// Mask voxels whose S0 is below this are not fitted (nifreeze's `DEFAULT_MIN_S0`).
pub const MIN_S0: f64 = 1e-5;
/// Percentile of the masked data used as S0 when there is no b=0 volume (nifreeze).
pub const S0_PERCENTILE: f64 = 98.0;
/// Default number of voxels per work item.
pub const DEFAULT_CHUNK: usize = 512;
/// Relative singular-value cut-off of every pseudo-inverse (numpy's `pinv` default).
const RCOND: f64 = 1e-15;
/// A Cholesky pivot below this fraction of its diagonal entry means the normal matrix is too
/// ill-conditioned for normal equations; that voxel is solved by SVD instead.
const PIVOT_TOL: f64 = 1e-12;

/// Leave-one-volume-out DTI/DKI fits of the mask voxels of one series.
pub struct LovoEngine {
    grid: Grid,
    kind: ModelKind,
    method: FitMethod,
    /// Linear grid indices of the fitted voxels, ascending.
    voxels: Vec<usize>,
    /// ln(max(signal, 1e-4)) of the fitted voxels, voxel-major, `n_cols` per voxel: the
    /// diffusion-weighted volumes in `dw` order, then (DKI) the S0 sample.
    y: Vec<f64>,
    /// S0 of each fitted voxel, used for the prediction.
    s0: Vec<f64>,
    s0_volume: Volume,
    /// 4-D indices of the diffusion-weighted volumes, in column order.
    dw: Vec<usize>,
    /// b (s/mm²) and unit gradient of each column.
    bvals: Vec<f64>,
    bvecs: Vec<[f64; 3]>,
    cols: Vec<Column>,
    /// Design matrix (ms/µm²), `n_cols × p`, row-major.
    x: Vec<f64>,
    /// Moment rows (ms/µm²), `n_cols × n_moments`, row-major.
    q: Vec<f64>,
    moments: MomentMap,
    chunk: usize,
}

/// Everything a fold shares across voxels.
struct Fold {
    /// Column held out.
    h: usize,
    /// OLS pseudo-inverse of the training rows, `p × n_cols`, column `h` zero.
    pinv: Vec<f64>,
    /// Eigenvalue floor in µm²/ms (DIPY's min_diffusivity).
    thr: f64,
    /// Design row of the held-out gradient (ms/µm²).
    x_pred: Vec<f64>,
}

impl LovoEngine {
    /// Build the engine: S0, the fitted voxels and their log-signals. Cost: one pass over the
    /// masked data (a log per sample), in parallel on the current rayon pool.
    pub fn new(
        series: &Series,
        gradients: &GradientTable,
        mask: &Mask,
        kind: ModelKind,
        method: FitMethod,
        b0_threshold: f64,
    ) -> Result<Self> {
        Self::build(series, gradients, mask, kind, method, b0_threshold, false)
    }

    /// As [`LovoEngine::new`], but S0 is the 98th percentile of the masked diffusion-weighted
    /// data even when b=0 volumes exist (nifreeze's `ignore_bzero`); b=0 volumes are still
    /// not fitted.
    pub fn new_ignoring_b0(
        series: &Series,
        gradients: &GradientTable,
        mask: &Mask,
        kind: ModelKind,
        method: FitMethod,
        b0_threshold: f64,
    ) -> Result<Self> {
        Self::build(series, gradients, mask, kind, method, b0_threshold, true)
    }

    /// Voxels per work item (results do not depend on it).
    pub fn with_chunk_size(mut self, n: usize) -> Self {
        self.chunk = n.max(1);
        self
    }

    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    pub fn method(&self) -> FitMethod {
        self.method
    }

    /// Number of fitted voxels (mask voxels with usable S0).
    pub fn n_voxels(&self) -> usize {
        self.voxels.len()
    }

    /// 4-D indices of the diffusion-weighted volumes (the ones [`LovoEngine::predict`] accepts).
    pub fn dw_indices(&self) -> &[usize] {
        &self.dw
    }

    /// S0: the voxelwise median of the b=0 volumes over the whole grid (the registration
    /// reference for b=0 volumes); without b=0 volumes, the percentile S0 inside the mask.
    pub fn s0(&self) -> Volume {
        self.s0_volume.clone()
    }

    fn build(
        series: &Series,
        gradients: &GradientTable,
        mask: &Mask,
        kind: ModelKind,
        method: FitMethod,
        b0_threshold: f64,
        ignore_b0: bool,
    ) -> Result<Self> {
        let grid = series.grid.clone();
        let nvox = grid.len();
        if gradients.len() != series.n_volumes {
            return Err(Error::input(format!(
                "the gradient table has {} rows but the series has {} volumes",
                gradients.len(),
                series.n_volumes
            )));
        }
        if mask.grid.dims != grid.dims || mask.data.len() != nvox {
            return Err(Error::input(format!(
                "the mask grid {:?} does not match the series grid {:?}",
                mask.grid.dims, grid.dims
            )));
        }
        let dw = gradients.dw_indices(b0_threshold);
        let b0 = gradients.b0_indices(b0_threshold);
        let p = design::n_params(kind);
        let extra = usize::from(kind == ModelKind::Dki);
        let name = match kind {
            ModelKind::Dti => "DTI",
            ModelKind::Dki => "DKI",
        };
        // Leave-one-out needs at least p training rows in every fold.
        if dw.len() + extra < p + 1 {
            return Err(Error::input(format!(
                "{name} leave-one-out fits need at least {} diffusion-weighted volumes (b > {b0_threshold}); the series has {}",
                p + 1 - extra,
                dw.len()
            )));
        }
        if kind == ModelKind::Dki {
            let sh = shells(gradients, b0_threshold);
            // Every fold must keep two shells: two shells of ≥ 2 volumes, or three shells.
            let ok = sh.len() >= 3 || (sh.len() == 2 && sh.iter().all(|s| s.indices.len() >= 2));
            if !ok {
                let list: Vec<String> = sh
                    .iter()
                    .map(|s| format!("b≈{:.0} ({} volumes)", s.bvalue, s.indices.len()))
                    .collect();
                return Err(Error::input(format!(
                    "DKI needs at least two non-zero b-value shells, but the series has {}: {}; use --model dti for single-shell data",
                    sh.len(),
                    list.join(", ")
                )));
            }
        }
        for &k in &dw {
            let g = gradients.bvecs[k];
            let n = (g[0] * g[0] + g[1] * g[1] + g[2] * g[2]).sqrt();
            if !gradients.bvals[k].is_finite() || !(n > 0.5 && n < 1.5) {
                return Err(Error::input(format!(
                    "volume {k}: b={} with gradient {:?} is not a usable diffusion-weighted measurement",
                    gradients.bvals[k], g
                )));
            }
        }

        // Columns: DW volumes, then the S0 sample (b = 0, no direction) for DKI.
        let mut bvals: Vec<f64> = dw.iter().map(|&k| gradients.bvals[k]).collect();
        let mut bvecs: Vec<[f64; 3]> = dw.iter().map(|&k| gradients.bvecs[k]).collect();
        if kind == ModelKind::Dki {
            bvals.push(0.0);
            bvecs.push([0.0; 3]);
        }
        let nc = bvals.len();
        let cols = design::columns(kind);
        let moments = MomentMap::new(&cols);
        let mut x = Vec::with_capacity(nc * p);
        let mut q = Vec::with_capacity(nc * moments.keys.len());
        for c in 0..nc {
            x.extend(design::row(&cols, bvals[c] / 1000.0, bvecs[c]));
            q.extend(moments.row(bvals[c] / 1000.0, bvecs[c]));
        }
        // The gradient directions must determine the model.
        let sv = linalg::singular_values(&DMatrix::from_row_slice(nc, p, &x));
        if !(sv[p - 1] > 1e-10 * sv[0]) {
            return Err(Error::input(format!(
                "the gradient directions do not determine a {name} model (design matrix is rank-deficient); check the b-vectors"
            )));
        }

        // S0 and the fitted voxels.
        let (s0_grid, voxels): (Vec<f64>, Vec<usize>) = if !b0.is_empty() && !ignore_b0 {
            let s0 = median_volumes(series, &b0);
            let vox = (0..nvox)
                .filter(|&l| mask.data[l] && s0[l].is_finite() && s0[l] >= MIN_S0)
                .collect();
            (s0, vox)
        } else {
            let vox = mask.indices();
            let c = percentile_s0(series, &dw, &vox);
            let mut s0 = vec![0.0; nvox];
            for &l in &vox {
                s0[l] = c;
            }
            let vox = if c >= MIN_S0 { vox } else { Vec::new() };
            (s0, vox)
        };
        let s0: Vec<f64> = voxels.iter().map(|&l| s0_grid[l]).collect();
        let s0_volume = Volume::new(grid.clone(), s0_grid.iter().map(|&v| v as f32).collect());

        // Voxel-major log-signals, built chunk by chunk so that reads of each volume stay local.
        const BUILD_CHUNK: usize = 256;
        let mut y = vec![0.0f64; voxels.len() * nc];
        let ndw = dw.len();
        y.par_chunks_mut(BUILD_CHUNK * nc)
            .zip(voxels.par_chunks(BUILD_CHUNK))
            .zip(s0.par_chunks(BUILD_CHUNK))
            .for_each(|((yc, vc), sc)| {
                for (c, &k) in dw.iter().enumerate() {
                    let vol = series.volume(k);
                    for (i, &l) in vc.iter().enumerate() {
                        yc[i * nc + c] = log_signal(vol[l] as f64);
                    }
                }
                if nc > ndw {
                    for (i, &s) in sc.iter().enumerate() {
                        yc[i * nc + ndw] = log_signal(s);
                    }
                }
            });

        Ok(LovoEngine {
            grid,
            kind,
            method,
            voxels,
            y,
            s0,
            s0_volume,
            dw,
            bvals,
            bvecs,
            cols,
            x,
            q,
            moments,
            chunk: DEFAULT_CHUNK,
        })
    }

    fn column_of(&self, index: usize) -> Result<usize> {
        self.dw.iter().position(|&k| k == index).ok_or_else(|| {
            Error::input(format!(
                "volume {index} is not a diffusion-weighted volume of this series (diffusion-weighted volumes: {}); b=0 volumes and out-of-range indices cannot be predicted",
                compact_list(&self.dw)
            ))
        })
    }

    fn fold(&self, h: usize) -> Fold {
        let nc = self.bvals.len();
        let p = self.cols.len();
        // DIPY's min_diffusivity = 1e-6 / -min(design in s/mm² of the fitted rows).
        let mut max_neg = f64::NEG_INFINITY;
        for c in (0..nc).filter(|&c| c != h) {
            for v in design::row(&self.cols, self.bvals[c], self.bvecs[c]) {
                max_neg = max_neg.max(-v);
            }
        }
        let thr = 1e-6 / max_neg * 1000.0; // mm²/s -> µm²/ms
        let train: Vec<usize> = (0..nc).filter(|&c| c != h).collect();
        let mut xt = DMatrix::zeros(train.len(), p);
        for (r, &c) in train.iter().enumerate() {
            for j in 0..p {
                xt[(r, j)] = self.x[c * p + j];
            }
        }
        let pi = linalg::pinv(&xt, RCOND);
        let mut pinv_full = vec![0.0; p * nc];
        for j in 0..p {
            for (r, &c) in train.iter().enumerate() {
                pinv_full[j * nc + c] = pi[(j, r)];
            }
        }
        Fold {
            h,
            pinv: pinv_full,
            thr,
            x_pred: design::row(&self.cols, self.bvals[h] / 1000.0, self.bvecs[h]),
        }
    }

    /// Prediction of 4-D volume `index` (a diffusion-weighted volume) fitted on all other
    /// diffusion-weighted volumes; zero outside the fitted voxels.
    pub fn predict(&self, index: usize) -> Result<Volume> {
        Ok(self.scatter(&self.predict_values(index)?))
    }

    /// The prediction at the fitted voxels ([`LovoEngine::voxel_indices`] order), in f64.
    pub fn predict_values(&self, index: usize) -> Result<Vec<f64>> {
        let h = self.column_of(index)?;
        let fold = self.fold(h);
        let nc = self.bvals.len();
        let mut vals = vec![0.0f64; self.voxels.len()];
        vals.par_chunks_mut(self.chunk)
            .zip(self.y.par_chunks(self.chunk * nc))
            .zip(self.s0.par_chunks(self.chunk))
            .for_each(|((out, y), s0)| match self.kind {
                ModelKind::Dti => self.chunk_fast::<7>(&fold, y, s0, out),
                ModelKind::Dki => self.chunk_fast::<22>(&fold, y, s0, out),
            });
        Ok(vals)
    }

    /// The same prediction by the straightforward route: per voxel, DIPY's pseudo-inverse
    /// solve of the weighted problem and the literal eigen-decomposition. Slow; the reference
    /// the fast path is tested and benchmarked against.
    pub fn predict_values_plain(&self, index: usize) -> Result<Vec<f64>> {
        let h = self.column_of(index)?;
        let fold = self.fold(h);
        let nc = self.bvals.len();
        let mut vals = vec![0.0f64; self.voxels.len()];
        vals.par_chunks_mut(self.chunk)
            .zip(self.y.par_chunks(self.chunk * nc))
            .zip(self.s0.par_chunks(self.chunk))
            .for_each(|((out, y), s0)| {
                for (v, o) in out.iter_mut().enumerate() {
                    *o = self.voxel_plain(&fold, &y[v * nc..(v + 1) * nc], s0[v]);
                }
            });
        Ok(vals)
    }

    /// Linear grid indices of the fitted voxels (mask voxels with usable S0), ascending.
    pub fn voxel_indices(&self) -> &[usize] {
        &self.voxels
    }

    fn scatter(&self, vals: &[f64]) -> Volume {
        let mut out = Volume::zeros(self.grid.clone());
        for (&l, &v) in self.voxels.iter().zip(vals) {
            out.data[l] = v as f32;
        }
        out
    }

    /// Fit and predict one chunk of `P`-parameter models.
    fn chunk_fast<const P: usize>(&self, fold: &Fold, y: &[f64], s0: &[f64], out: &mut [f64]) {
        let nv = s0.len();
        let nc = self.bvals.len();
        let h = fold.h;
        let ym = ArrayView2::from_shape((nv, nc), y).expect("chunk shape");
        let pinv_t = ArrayView2::from_shape((P, nc), &fold.pinv[..])
            .expect("pinv shape")
            .reversed_axes();
        let mut beta = vec![0.0f64; nv * P];
        general_mat_mul(
            1.0,
            &ym,
            &pinv_t,
            0.0,
            &mut ArrayViewMut2::from_shape((nv, P), &mut beta[..]).expect("beta shape"),
        );
        if self.method == FitMethod::Ols {
            for v in 0..nv {
                out[v] =
                    log_prediction(&beta[v * P..(v + 1) * P], &fold.x_pred, s0[v], fold.thr).exp();
            }
            return;
        }

        // WLS weights: w_i = exp(x_i·β_ols); the normal equations use w_i². Scaling all weights
        // of a voxel by one factor leaves the solution unchanged, so they are taken relative to
        // the largest (no overflow for wild OLS fits).
        let xm = ArrayView2::from_shape((nc, P), &self.x[..]).expect("design shape");
        let mut w = vec![0.0f64; nv * nc];
        general_mat_mul(
            1.0,
            &ArrayView2::from_shape((nv, P), &beta[..]).expect("beta shape"),
            &xm.t(),
            0.0,
            &mut ArrayViewMut2::from_shape((nv, nc), &mut w[..]).expect("w shape"),
        );
        let mut wy = vec![0.0f64; nv * nc];
        for v in 0..nv {
            let f = &mut w[v * nc..(v + 1) * nc];
            let mut fmax = f64::NEG_INFINITY;
            for (i, &fi) in f.iter().enumerate() {
                if i != h && fi > fmax {
                    fmax = fi;
                }
            }
            let yv = &y[v * nc..(v + 1) * nc];
            let wyv = &mut wy[v * nc..(v + 1) * nc];
            for i in 0..nc {
                let wi = if i == h {
                    0.0
                } else {
                    (2.0 * (f[i] - fmax)).exp()
                };
                f[i] = wi;
                wyv[i] = wi * yv[i];
            }
        }
        let nm = self.moments.keys.len();
        let mut mom = vec![0.0f64; nv * nm];
        general_mat_mul(
            1.0,
            &ArrayView2::from_shape((nv, nc), &w[..]).expect("w shape"),
            &ArrayView2::from_shape((nc, nm), &self.q[..]).expect("q shape"),
            0.0,
            &mut ArrayViewMut2::from_shape((nv, nm), &mut mom[..]).expect("mom shape"),
        );
        let mut rhs = vec![0.0f64; nv * P];
        general_mat_mul(
            1.0,
            &ArrayView2::from_shape((nv, nc), &wy[..]).expect("wy shape"),
            &xm,
            0.0,
            &mut ArrayViewMut2::from_shape((nv, P), &mut rhs[..]).expect("rhs shape"),
        );
        let entries = &self.moments.entries;
        for v in 0..nv {
            let m = &mom[v * nm..(v + 1) * nm];
            let mut a = [[0.0f64; P]; P];
            let mut e = 0;
            for j in 0..P {
                for k in j..P {
                    let (idx, f) = entries[e];
                    a[k][j] = f * m[idx];
                    e += 1;
                }
            }
            let mut b = [0.0f64; P];
            b.copy_from_slice(&rhs[v * P..(v + 1) * P]);
            let beta_v: [f64; P] = if cholesky_solve(&mut a, &mut b) {
                b
            } else {
                // Too ill-conditioned for normal equations: weighted least squares by SVD.
                let sw: Vec<f64> = (0..nc).map(|i| w[v * nc + i].sqrt()).collect();
                let sol = self.weighted_lstsq(h, &sw, &y[v * nc..(v + 1) * nc]);
                let mut s = [0.0f64; P];
                s.copy_from_slice(sol.as_slice());
                s
            };
            out[v] = log_prediction(&beta_v, &fold.x_pred, s0[v], fold.thr).exp();
        }
    }

    /// Solve min Σ_{i≠h} (sw_i (x_i·β - y_i))² by SVD with numpy's pinv cut-off.
    fn weighted_lstsq(&self, h: usize, sw: &[f64], y: &[f64]) -> DVector<f64> {
        let nc = self.bvals.len();
        let p = self.cols.len();
        let rows: Vec<usize> = (0..nc).filter(|&c| c != h).collect();
        let mut a = DMatrix::zeros(rows.len(), p);
        let mut b = DVector::zeros(rows.len());
        for (r, &c) in rows.iter().enumerate() {
            for j in 0..p {
                a[(r, j)] = sw[c] * self.x[c * p + j];
            }
            b[r] = sw[c] * y[c];
        }
        linalg::pinv(&a, RCOND) * b
    }

    /// One voxel, straightforwardly (DIPY's formulas and order).
    fn voxel_plain(&self, fold: &Fold, y: &[f64], s0: f64) -> f64 {
        let nc = self.bvals.len();
        let p = self.cols.len();
        let beta_ols: Vec<f64> = (0..p)
            .map(|j| (0..nc).map(|c| fold.pinv[j * nc + c] * y[c]).sum())
            .collect();
        let beta = match self.method {
            FitMethod::Ols => beta_ols,
            FitMethod::Wls => {
                let sw: Vec<f64> = (0..nc)
                    .map(|c| {
                        (0..p)
                            .map(|j| self.x[c * p + j] * beta_ols[j])
                            .sum::<f64>()
                            .exp()
                    })
                    .collect();
                self.weighted_lstsq(fold.h, &sw, y).as_slice().to_vec()
            }
        };
        log_prediction_literal(&beta, &fold.x_pred, s0, fold.thr).exp()
    }
}

#[inline]
fn log_signal(s: f64) -> f64 {
    // f64::max returns the other operand for NaN: a NaN sample counts as the minimum signal.
    s.max(MIN_SIGNAL).ln()
}

/// In-place Cholesky solve of `a·x = b` (lower triangle of `a` used; `b` becomes x).
/// Returns false when a pivot is not clearly positive.
#[inline]
fn cholesky_solve<const P: usize>(a: &mut [[f64; P]; P], b: &mut [f64; P]) -> bool {
    for j in 0..P {
        let mut d = a[j][j];
        for k in 0..j {
            d -= a[j][k] * a[j][k];
        }
        if !(d > PIVOT_TOL * a[j][j]) {
            return false;
        }
        let d = d.sqrt();
        a[j][j] = d;
        let inv = 1.0 / d;
        for i in j + 1..P {
            let mut s = a[i][j];
            for k in 0..j {
                s -= a[i][k] * a[j][k];
            }
            a[i][j] = s * inv;
        }
    }
    for i in 0..P {
        let mut s = b[i];
        for k in 0..i {
            s -= a[i][k] * b[k];
        }
        b[i] = s / a[i][i];
    }
    for i in (0..P).rev() {
        let mut s = b[i];
        for k in i + 1..P {
            s -= a[k][i] * b[k];
        }
        b[i] = s / a[i][i];
    }
    true
}

/// Voxelwise median of the given volumes (mean of the middle two for an even count, in f64).
fn median_volumes(series: &Series, vols: &[usize]) -> Vec<f64> {
    let nvox = series.grid.len();
    let mut out = vec![0.0f64; nvox];
    out.par_chunks_mut(4096).enumerate().for_each(|(ci, oc)| {
        let mut buf = vec![0.0f64; vols.len()];
        for (i, o) in oc.iter_mut().enumerate() {
            let l = ci * 4096 + i;
            for (b, &k) in buf.iter_mut().zip(vols) {
                *b = series.volume(k)[l] as f64;
            }
            *o = median(&mut buf);
        }
    });
    out
}

fn median(v: &mut [f64]) -> f64 {
    // NaN sorts last (like numpy, which returns NaN if any value is NaN: handled by callers
    // through the finiteness test on S0).
    if v.iter().any(|x| x.is_nan()) {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// nifreeze's S0 without b=0: `round(percentile(data[mask], 98))` over the diffusion-weighted
/// volumes, numpy's linear interpolation and round-half-to-even.
fn percentile_s0(series: &Series, dw: &[usize], voxels: &[usize]) -> f64 {
    let mut vals: Vec<f32> = Vec::with_capacity(dw.len() * voxels.len());
    for &k in dw {
        let vol = series.volume(k);
        vals.extend(voxels.iter().map(|&l| vol[l]).filter(|v| !v.is_nan()));
    }
    if vals.is_empty() {
        return 0.0;
    }
    let n = vals.len();
    let pos = S0_PERCENTILE / 100.0 * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let frac = pos - lo as f64;
    let (_, &mut a, rest) = vals.select_nth_unstable_by(lo, |a, b| a.total_cmp(b));
    let a = a as f64;
    let b = if lo + 1 < n {
        rest.iter().copied().fold(f32::INFINITY, f32::min) as f64
    } else {
        a
    };
    // numpy's _lerp: a + (b-a)·t, or b - (b-a)·(1-t) for t ≥ 0.5.
    let v = if frac >= 0.5 {
        b - (b - a) * (1.0 - frac)
    } else {
        a + (b - a) * frac
    };
    v.round_ties_even()
}

fn compact_list(v: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        parts.push(if j > i {
            format!("{}-{}", v[i], v[j])
        } else {
            v[i].to_string()
        });
        i = j + 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves() {
        let mut a = [[4.0, 0.0, 0.0], [2.0, 5.0, 0.0], [0.4, 1.0, 3.0]];
        let full = [[4.0, 2.0, 0.4], [2.0, 5.0, 1.0], [0.4, 1.0, 3.0]];
        let x = [1.0, -2.0, 0.5];
        let mut b = [0.0; 3];
        for i in 0..3 {
            for j in 0..3 {
                b[i] += full[i][j] * x[j];
            }
        }
        assert!(cholesky_solve(&mut a, &mut b));
        for i in 0..3 {
            assert!((b[i] - x[i]).abs() < 1e-14);
        }
        let mut s = [[1.0, 0.0], [1.0, 1.0]];
        let mut r = [1.0, 1.0];
        assert!(!cholesky_solve(&mut s, &mut r));
    }

    #[test]
    fn median_and_list() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(compact_list(&[1, 2, 3, 5, 7, 8]), "1-3,5,7-8");
    }
}
