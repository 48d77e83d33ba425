//! Leave-one-out predictions from one fit per voxel: every fold by a rank-one downdate.
//!
//! Why: the leave-one-out engine fits each voxel once per held-out volume, and every fold
//! rebuilds the voxel's weighted normal matrix and its Cholesky factor (≈ 7 000 flops per
//! voxel and fold for DKI on 65 columns). Yet fold h differs from the fit on all columns by
//! one row. With `A = Xᵀ W X` and `β` the weighted fit on every column, `u = A⁻¹ x_h`,
//! `ℓ = w_h x_hᵀ u` (the leverage of column h) and `r = y_h − x_h·β`, the fit without h is
//!
//! ```text
//!     β₍₋ₕ₎ = β − u · w_h r / (1 − ℓ)        (Sherman–Morrison)
//! ```
//!
//! so a fold costs two triangular solves with the voxel's one Cholesky factor (≈ P² flops)
//! plus the prediction itself: the model stage becomes about ten times cheaper.
//!
//! What it changes: the formula is exact for fixed weights. OLS has none, so an OLS downdate
//! is the refit up to rounding. DIPY's WLS takes its weights from an OLS fit of the same
//! samples, i.e. fold h's weights come from an OLS fit without column h; here they come from
//! the OLS fit on all columns. The held-out sample moves the weights of the others by
//! O(ℓ · r), a second-order effect on the fitted coefficients; `tests/model_downdate.rs`
//! bounds the difference from the refit on noisy phantoms, and benches/README.md records
//! the motion estimates both ways.
//!
//! A voxel whose normal matrix is too ill-conditioned for a Cholesky factor, or a fold whose
//! held-out column carries nearly all the information on some coefficient (1 − ℓ below
//! [`MIN_FREE`]), is left to the caller to refit exactly (the `refit` flags).

use super::kernel::{self, FoldData, Isa, Lanes, Scratch, LANES};
use super::tensor::log_prediction;

/// Below this, `1 − ℓ` is too small for the downdate to be trusted (the division would
/// amplify rounding by `1 / (1 − ℓ)`); such a fold is refitted.
pub const MIN_FREE: f64 = 1e-6;

/// One held-out column and what its prediction shares across voxels.
pub struct Held {
    /// Column of the design held out.
    pub col: usize,
    /// Eigenvalue floor of the fold's prediction (µm²/ms, see [`super::tensor`]).
    pub thr: f64,
    /// OLS only: `(XᵀX)⁻¹ x_h` and its leverage `x_hᵀ (XᵀX)⁻¹ x_h`, the same for every voxel.
    pub ols: Option<(Vec<f64>, f64)>,
    /// WLS only: how far the held-out sample moves the OLS fit that gives the weights. Row
    /// h of the OLS hat matrix (`x_hᵀ X⁺`, one entry per column) gives the OLS residual of
    /// the sample; `gain` (`max_c |x_cᵀ (XᵀX)⁻¹ x_h| / (1 − leverage)`) turns it into the
    /// largest change of any other column's OLS log-prediction when h is left out.
    pub weight_shift: Option<(Vec<f64>, f64)>,
}

/// Largest change of a WLS weight's log (twice the OLS log-prediction's change) by which the
/// all-column weights may differ from the fold's before the fold is refitted instead: the
/// downdate is exact for the all-column weights, and weights within a factor e of the fold's
/// give nearly the fold's fit. Measured (tests/model_downdate.rs, the raw moving sample, DTI):
/// without the bound the worst prediction was 36× the refit's, with it 1.9× (374 of 713 232
/// folds refitted); on aligned data 27 of 4.2 million folds are refitted.
pub const MAX_LOG_WEIGHT_SHIFT: f64 = 1.0;

/// What every group of voxels shares: the fit on all columns and the folds to derive.
pub struct Downdates<'a> {
    /// The fit on every column ([`FoldData::h`] = [`kernel::NO_HELD_OUT`], the
    /// pseudo-inverse of the whole design).
    pub full: FoldData<'a>,
    /// The folds wanted, in output order.
    pub held: &'a [Held],
}

/// Predict every fold of `dd.held` for `s0.len() ≤ LANES` voxels whose log-signals are `y`
/// (voxel-major) and whose S0 is `s0`: `out[v * n_folds + f]` for voxel v of the group.
/// `refit[v * n_folds + f]` is set where the downdate cannot serve that fold (its `out`
/// entry is then left as it was).
pub fn predict_group<const P: usize>(
    dd: &Downdates,
    y: &[f64],
    s0: &[f64],
    sc: &mut Scratch,
    isa: Isa,
    out: &mut [f64],
    refit: &mut [bool],
) {
    let g = s0.len();
    let fit = kernel::fit_group::<P>(&dd.full, y, g, sc, isa);
    let mut beta = [[0.0f64; LANES]; P];
    for (l, b) in fit.beta.iter().enumerate() {
        for j in 0..P {
            beta[j][l] = b[j];
        }
    }
    let nf = dd.held.len();
    let x = dd.full.x;
    for (f, held) in dd.held.iter().enumerate() {
        let h = held.col;
        let xh = &x[h * P..(h + 1) * P];
        let yh = sc.log_signals()[h];
        // residual of the held-out sample under the full fit
        let mut r = yh;
        for (j, &xj) in xh.iter().enumerate() {
            for l in 0..LANES {
                r[l] -= xj * beta[j][l];
            }
        }
        // u = A⁻¹ x_h, its leverage, and the shift's scale c = w_h r / (1 − ℓ)
        let (u, scale): ([Lanes; P], Lanes) = match &held.ols {
            Some((u, lev)) => {
                let mut ul = [[0.0; LANES]; P];
                for j in 0..P {
                    ul[j] = [u[j]; LANES];
                }
                let free = 1.0 - lev;
                let mut c = [0.0; LANES];
                for l in 0..LANES {
                    c[l] = if free > MIN_FREE {
                        r[l] / free
                    } else {
                        f64::NAN
                    };
                }
                (ul, c)
            }
            None => {
                let w = sc.weights()[h];
                // the fold's own OLS fit would move the weights by up to exp(±shift)
                let mut shift = [0.0; LANES];
                if let Some((hat, gain)) = &held.weight_shift {
                    let ys = sc.log_signals();
                    let mut r_ols = yh;
                    for (c, &hc) in hat.iter().enumerate() {
                        for l in 0..LANES {
                            r_ols[l] -= hc * ys[c][l];
                        }
                    }
                    for l in 0..LANES {
                        shift[l] = 2.0 * gain * r_ols[l].abs();
                    }
                }
                let (u, q) = solve_both(isa, sc.factor(), xh);
                let mut c = [0.0; LANES];
                for l in 0..LANES {
                    let free = 1.0 - w[l] * q[l];
                    c[l] = if free > MIN_FREE && !fit.bad[l] && shift[l] <= MAX_LOG_WEIGHT_SHIFT {
                        w[l] * r[l] / free
                    } else {
                        f64::NAN
                    };
                }
                (u, c)
            }
        };
        for l in 0..g {
            let i = l * nf + f;
            if scale[l].is_nan() {
                refit[i] = true;
                continue;
            }
            let mut b = [0.0f64; P];
            for j in 0..P {
                b[j] = beta[j][l] - scale[l] * u[j][l];
            }
            out[i] = log_prediction(&b, xh, s0[l], held.thr).exp();
        }
    }
}

/// `u = A⁻¹ x` and `q = xᵀ A⁻¹ x = ‖L⁻¹ x‖²` on every lane, from the lower Cholesky factor
/// `L` of `A` (`factor[i * P + j]`, i ≥ j) and a shared vector `x`.
fn solve_both<const P: usize>(isa: Isa, factor: &[Lanes], x: &[f64]) -> ([Lanes; P], Lanes) {
    #[cfg(target_arch = "x86_64")]
    {
        if isa.avx2() {
            // SAFETY: an `Isa` reports AVX2 only when made by `Isa::detect` on a CPU that
            // has it.
            return unsafe { solve_both_avx2::<P>(factor, x) };
        }
    }
    let _ = isa;
    solve_both_body::<P>(factor, x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn solve_both_avx2<const P: usize>(factor: &[Lanes], x: &[f64]) -> ([Lanes; P], Lanes) {
    solve_both_body::<P>(factor, x)
}

#[inline(always)]
fn solve_both_body<const P: usize>(a: &[Lanes], x: &[f64]) -> ([Lanes; P], Lanes) {
    let mut z = [[0.0f64; LANES]; P];
    for (zi, &xi) in z.iter_mut().zip(x) {
        *zi = [xi; LANES];
    }
    kernel::solve_lower(a, &mut z);
    let mut q = [0.0f64; LANES];
    for zi in &z {
        for l in 0..LANES {
            q[l] += zi[l] * zi[l];
        }
    }
    kernel::solve_upper(a, &mut z);
    (z, q)
}
