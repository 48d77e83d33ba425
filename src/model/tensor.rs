//! From fitted coefficients to a predicted signal, the way DIPY 1.12 does it.
//!
//! DIPY never predicts from the raw least-squares tensor: it eigen-decomposes it, clips the
//! eigenvalues below at `min_diffusivity = 1e-6 / -min(design matrix in s/mm²)`, rebuilds the
//! tensor from the clipped eigenvalues and predicts from that (`decompose_tensor`,
//! `tensor_prediction`, `dki_prediction`). For DKI the kurtosis coefficients are divided by the
//! squared mean of the clipped eigenvalues and multiplied back by the squared mean diffusivity
//! of the rebuilt tensor — the same number, so the fitted kurtosis coefficients enter the
//! prediction unchanged. When no eigenvalue is below the threshold the rebuilt tensor is the
//! fitted one (to rounding), so the fast path skips the decomposition after a cheap
//! positive-definiteness test.

use super::linalg::eigh3;
use nalgebra::Matrix3;

/// DIPY's `MIN_POSITIVE_SIGNAL`: signals are clipped below at this before the log, and the DTI
/// prediction clips S0 at it too.
pub const MIN_SIGNAL: f64 = 1e-4;

/// Lower-triangular tensor elements (Dxx, Dxy, Dyy, Dxz, Dyz, Dzz) as a 3×3 matrix.
#[inline]
pub fn to_matrix(d: &[f64]) -> Matrix3<f64> {
    Matrix3::new(d[0], d[1], d[3], d[1], d[2], d[4], d[3], d[4], d[5])
}

/// True when every eigenvalue of the tensor exceeds `thr`, i.e. `D - thr·I` is positive
/// definite (tested by the LDLᵀ pivots). Clipping then changes nothing.
#[inline]
pub fn all_eigenvalues_above(d: &[f64], thr: f64) -> bool {
    let a11 = d[0] - thr;
    let a22 = d[2] - thr;
    let a33 = d[5] - thr;
    let (a21, a31, a32) = (d[1], d[3], d[4]);
    if a11 <= 0.0 {
        return false;
    }
    let l21 = a21 / a11;
    let l31 = a31 / a11;
    let d2 = a22 - l21 * a21;
    if d2 <= 0.0 {
        return false;
    }
    let l32 = (a32 - l31 * a21) / d2;
    let d3 = a33 - l31 * a31 - l32 * l32 * d2;
    d3 > 0.0
}

/// Eigenvalues (descending, clipped below at `thr`) and eigenvectors (columns) of a tensor —
/// DIPY's `decompose_tensor`.
pub fn decompose_clipped(d: &[f64], thr: f64) -> ([f64; 3], Matrix3<f64>) {
    let (w, v) = eigh3([[d[0], d[1], d[3]], [d[1], d[2], d[4]], [d[3], d[4], d[5]]]);
    let mut order = [0usize, 1, 2];
    order.sort_by(|&a, &b| w[b].total_cmp(&w[a]));
    let mut vals = [0.0; 3];
    let mut vecs = Matrix3::zeros();
    for (k, &o) in order.iter().enumerate() {
        vals[k] = w[o].max(thr);
        for r in 0..3 {
            vecs[(r, k)] = v[r][o];
        }
    }
    (vals, vecs)
}

/// The tensor rebuilt from clipped eigenvalues, `V diag(λ) Vᵀ`, in lower-triangular order.
pub fn rebuild(vals: &[f64; 3], vecs: &Matrix3<f64>) -> [f64; 6] {
    let q = vecs
        * Matrix3::from_diagonal(&nalgebra::Vector3::new(vals[0], vals[1], vals[2]))
        * vecs.transpose();
    lower_triangle(&q)
}

/// A symmetric matrix's lower triangle in DIPY's order: Dxx, Dxy, Dyy, Dxz, Dyz, Dzz.
pub fn lower_triangle(q: &Matrix3<f64>) -> [f64; 6] {
    [
        q[(0, 0)],
        q[(1, 0)],
        q[(1, 1)],
        q[(2, 0)],
        q[(2, 1)],
        q[(2, 2)],
    ]
}

/// The tensor used for prediction: unchanged when no eigenvalue needs clipping, else rebuilt.
#[inline]
pub fn clipped_tensor(d: &[f64], thr: f64) -> [f64; 6] {
    if all_eigenvalues_above(d, thr) {
        [d[0], d[1], d[2], d[3], d[4], d[5]]
    } else {
        let (vals, vecs) = decompose_clipped(d, thr);
        rebuild(&vals, &vecs)
    }
}

/// Log of the predicted signal: `x_pred · params` with the tensor part replaced by the
/// clipped tensor, plus ln S0 (DTI clips S0 at [`MIN_SIGNAL`], DKI does not — as DIPY).
///
/// `beta` holds the fitted coefficients (7 or 22), `x_pred` the design row of the predicted
/// gradient in the same units.
#[inline]
pub fn log_prediction(beta: &[f64], x_pred: &[f64], s0: f64, thr: f64) -> f64 {
    let dt = clipped_tensor(&beta[..6], thr);
    let mut t = 0.0;
    for j in 0..6 {
        t += x_pred[j] * dt[j];
    }
    let p = beta.len();
    if p == 22 {
        for j in 6..21 {
            t += x_pred[j] * beta[j];
        }
        t + s0.ln()
    } else {
        t + s0.max(MIN_SIGNAL).ln()
    }
}

/// The same prediction, step by step as DIPY writes it (always decomposes; divides and
/// multiplies the kurtosis by the mean diffusivities). The reference the fast path is tested
/// against.
pub fn log_prediction_literal(beta: &[f64], x_pred: &[f64], s0: f64, thr: f64) -> f64 {
    let (vals, vecs) = decompose_clipped(&beta[..6], thr);
    let dt = rebuild(&vals, &vecs);
    let mut t = 0.0;
    for j in 0..6 {
        t += x_pred[j] * dt[j];
    }
    if beta.len() == 22 {
        let md_square = ((vals[0] + vals[1] + vals[2]) / 3.0).powi(2);
        let md = (dt[0] + dt[2] + dt[5]) / 3.0;
        for j in 6..21 {
            let kt = if md_square != 0.0 {
                beta[j] / md_square
            } else {
                0.0
            };
            t += x_pred[j] * (kt * md * md);
        }
        t - (-s0.ln())
    } else {
        t - (-s0.max(MIN_SIGNAL).ln())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pd_test_matches_eigenvalues() {
        let cases: [[f64; 6]; 4] = [
            [1.7, 0.1, 0.4, 0.05, -0.02, 0.3],
            [1.0, 0.9, 1.0, 0.0, 0.0, 0.5],
            [1e-3, 0.0, 2e-3, 0.0, 0.0, -1e-4],
            [0.5, 0.2, 0.5, 0.2, 0.2, 0.5],
        ];
        for d in cases {
            let (ev, _) = eigh3([[d[0], d[1], d[3]], [d[1], d[2], d[4]], [d[3], d[4], d[5]]]);
            let min = ev[0].min(ev[1]).min(ev[2]);
            for thr in [0.0, 1e-6, 0.1, 0.29, 0.31] {
                assert_eq!(all_eigenvalues_above(&d, thr), min > thr, "{d:?} {thr}");
            }
        }
    }

    #[test]
    fn clipping_rebuilds() {
        // eigenvalues 2, 1, -0.5 along rotated axes
        let r = nalgebra::Rotation3::from_euler_angles(0.3, -0.7, 1.1).into_inner();
        let q = r * Matrix3::from_diagonal(&nalgebra::Vector3::new(2.0, 1.0, -0.5)) * r.transpose();
        let d = lower_triangle(&q);
        let c = clipped_tensor(&d, 0.01);
        let want =
            r * Matrix3::from_diagonal(&nalgebra::Vector3::new(2.0, 1.0, 0.01)) * r.transpose();
        let cm = to_matrix(&c);
        assert!((cm - want).abs().max() < 1e-13);
    }
}
