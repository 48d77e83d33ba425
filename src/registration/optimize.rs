//! Optimiser: Gauss–Newton on the inverse-compositional least-squares metric, one pyramid level.
//!
//! Each iteration solves the constant normal equations `XᵀX β = Xᵀw` (Cholesky factor computed
//! once per level), turns `β = (a, b, q)` into the increment `p = q / a` and updates
//! `T ← T·Δ(p)⁻¹`. A step that lowers the normalised correlation is halved (at most three
//! times) — a cheap safeguard for large initial misalignment; near the optimum full steps are
//! always taken. The level stops when an increment moves no point of the mask's bounding box
//! by more than `tol_mm`.

use super::metric::{FixedSamples, MovingImage};
use super::transform::{max_corner_displacement, Increment};
use crate::{Error, Result};
use nalgebra::{DMatrix, DVector, Matrix4, Vector3};

/// What one level needs besides the samples.
pub struct LevelSetup<'a> {
    pub samples: &'a FixedSamples,
    pub moving: &'a MovingImage,
    /// Fixed voxel → world.
    pub fixed_affine: Matrix4<f64>,
    /// World → moving voxel.
    pub moving_inv_affine: Matrix4<f64>,
    pub centre: Vector3<f64>,
    /// World bounding box of the mask (for the convergence test).
    pub lo: Vector3<f64>,
    pub hi: Vector3<f64>,
    pub max_iterations: usize,
    pub tol_mm: f64,
    /// Steps moving no mask point more than this (mm) skip the correlation check.
    pub trust_mm: f64,
}

pub struct LevelOutcome {
    pub transform: Matrix4<f64>,
    pub iterations: usize,
    pub correlation: f64,
}

/// Run Gauss–Newton from `t0` (fixed world → moving world) at one level.
pub fn gauss_newton(s: &LevelSetup, t0: &Matrix4<f64>) -> Result<LevelOutcome> {
    let samples = s.samples;
    let kind = samples.kind;
    let np = kind.n_params();
    let flat = || {
        Error::runtime(
            "registration: the fixed image has no usable structure inside the mask \
             (flat or too few voxels); check the mask and the fixed image",
        )
    };
    // Rigid and affine rows are the family's own: one Cholesky factor per level. The eddy
    // family's basis follows the current map (its shear direction), so its rows are affine
    // ones reduced each iteration: XᵀX and Xᵀw are projected with W = diag(I₂, B).
    let reduced = kind.row_kind() != kind;
    let fixed_chol = if reduced {
        None
    } else {
        Some(samples.normal.clone().cholesky().ok_or_else(flat)?)
    };
    let solve = |t: &Matrix4<f64>, xtw: &[f64]| -> Result<(DVector<f64>, Increment)> {
        let inc = Increment::at(kind, s.centre, t);
        let rhs = DVector::from_column_slice(xtw);
        match &fixed_chol {
            Some(c) => Ok((c.solve(&rhs), inc)),
            None => {
                let b = inc.affine_basis();
                let mut w = DMatrix::zeros(samples.width, np + 2);
                w[(0, 0)] = 1.0;
                w[(1, 1)] = 1.0;
                w.view_mut((2, 2), (12, np)).copy_from(&b);
                let n = w.transpose() * &samples.normal * &w;
                let c = n.cholesky().ok_or_else(flat)?;
                Ok((c.solve(&(w.transpose() * rhs)), inc))
            }
        }
    };
    let eval = |t: &Matrix4<f64>| {
        let v = s.moving_inv_affine * t * s.fixed_affine;
        let e = samples.evaluate(s.moving, &v);
        let r = samples.correlation(&e);
        (e, r)
    };
    let mut t = *t0;
    let (mut e, mut rho) = eval(&t);
    let mut iterations = 0;
    for _ in 0..s.max_iterations {
        let (beta, inc) = solve(&t, &e.xtw)?;
        let a = beta[0];
        if !(a.is_finite() && a.abs() > 1e-12) {
            break;
        }
        let p: Vec<f64> = (0..np).map(|k| beta[2 + k] / a).collect();
        let mut step = 1.0;
        let mut accepted = None;
        loop {
            let scaled: Vec<f64> = p.iter().map(|v| v * step).collect();
            let delta = inc.matrix(&scaled);
            let inv = delta.try_inverse().unwrap_or_else(Matrix4::identity);
            let tn = t * inv;
            let (en, rn) = eval(&tn);
            // Small steps are always taken: near the optimum the correlation of a noisy
            // moving image varies with the sub-voxel interpolation weights, so it would veto
            // the last, accurate Gauss–Newton steps (measured: the fine levels then stall).
            let small = max_corner_displacement(&delta, &s.lo, &s.hi) < s.trust_mm;
            if small || rn >= rho - 1e-10 || !rho.is_finite() {
                accepted = Some((tn, en, rn, delta));
                break;
            }
            if step < 0.1 {
                break;
            }
            step *= 0.5;
        }
        let Some((tn, en, rn, delta)) = accepted else {
            break;
        };
        t = tn;
        e = en;
        rho = rn;
        iterations += 1;
        if max_corner_displacement(&delta, &s.lo, &s.hi) < s.tol_mm {
            break;
        }
    }
    Ok(LevelOutcome {
        transform: t,
        iterations,
        correlation: rho,
    })
}
