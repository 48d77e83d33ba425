//! Transforms: the parameterised increments the optimiser searches over.
//!
//! A registration result is a plain 4×4 RAS matrix `T` (reference/fixed point → moving point,
//! conventions.md). The optimiser never stores Euler angles: it composes small increments
//! `Δ(p)` onto `T` (inverse-compositional update `T ← T·Δ⁻¹`), so parameters only ever
//! describe a motion close to identity, where every parameterisation is well conditioned and
//! there is no gimbal lock. Increments act about a centre `c` (the fixed image's mask
//! centroid): rotations about a far-away world origin would couple rotation and translation
//! and slow Gauss–Newton down.
//!
//! Every family here is a subset of the affine maps, and its increments' Jacobian at `p = 0`
//! is a fixed linear combination of the affine one ([`Increment::affine_basis`]). So one
//! least-squares driver serves all of them: it builds the affine design once per level and
//! reduces it to the family's parameters with that basis (see [`super::optimize`]).

use nalgebra::{DMatrix, DVector, Matrix3, Matrix4, Vector3};

/// Which family of transforms is searched.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TransformKind {
    /// 6 parameters: rotation (3, radians, about the centre) then translation (3, mm).
    Rigid,
    /// 12 parameters: the 3×3 linear part minus identity (row-major) then translation.
    Affine,
    /// Head motion plus a linear eddy-current field (FSL eddy's `--flm linear`): the full map
    /// `y = p + d(p)·e` with `p = M·x` (`M` rigid: the head moves in the scanner) and the
    /// displacement `d(p) = c₀ + gᵀ(p − c)` along the scanner's phase-encode axis `e` (unit,
    /// world RAS, `pe`). The field is fixed in the scanner, so it acts after the head motion.
    /// The full map is affine; see [`super::eddy`] for its parameters. The constant `c₀` is
    /// a translation along `e`, indistinguishable from head translation in one volume, so
    /// the registration searches 9 parameters (6 rigid + the 3 field gradients) and `c₀` is
    /// separated from head motion across volumes ([`super::eddy`]).
    Eddy { pe: [f64; 3] },
}

impl TransformKind {
    /// Number of parameters of an increment.
    pub fn n_params(self) -> usize {
        match self {
            TransformKind::Rigid => 6,
            TransformKind::Affine => 12,
            TransformKind::Eddy { .. } => 9,
        }
    }

    /// The family whose Jacobian rows the metric stores: the eddy model's rows are affine ones,
    /// reduced each iteration (its increment basis depends on the current estimate).
    pub fn row_kind(self) -> TransformKind {
        match self {
            TransformKind::Rigid => TransformKind::Rigid,
            TransformKind::Affine | TransformKind::Eddy { .. } => TransformKind::Affine,
        }
    }

    /// Derivatives of a scalar image `F(Δ(p)·x)` with respect to `p` at `p = 0`, given the
    /// image's world gradient `g` at `x` and `d = x − c`. Writes `n_params` values into `out`.
    /// Rigid and affine only (the eddy increments depend on the current map: [`Increment`]).
    #[inline]
    pub fn jacobian_row(self, g: &Vector3<f64>, d: &Vector3<f64>, out: &mut [f64]) {
        match self {
            TransformKind::Eddy { .. } => unreachable!("eddy rows are affine rows (row_kind)"),
            TransformKind::Rigid => {
                // ∂(R(ω)d)/∂ω_i = e_i × d  ⇒  g·(e_i × d) = (d × g)_i
                let r = d.cross(g);
                out[0] = r.x;
                out[1] = r.y;
                out[2] = r.z;
                out[3] = g.x;
                out[4] = g.y;
                out[5] = g.z;
            }
            TransformKind::Affine => {
                for i in 0..3 {
                    for j in 0..3 {
                        out[3 * i + j] = g[i] * d[j];
                    }
                }
                out[9] = g.x;
                out[10] = g.y;
                out[11] = g.z;
            }
        }
    }

    /// The increment `Δ(p)` as a 4×4 matrix acting about centre `c`. Rigid and affine only
    /// (see [`Increment`] for every family).
    pub fn increment(self, p: &[f64], c: &Vector3<f64>) -> Matrix4<f64> {
        let (lin, t) = match self {
            TransformKind::Eddy { .. } => unreachable!("eddy increments need an Increment"),
            TransformKind::Rigid => (
                rotation_exp(&Vector3::new(p[0], p[1], p[2])),
                Vector3::new(p[3], p[4], p[5]),
            ),
            TransformKind::Affine => {
                let mut m = Matrix3::identity();
                for i in 0..3 {
                    for j in 0..3 {
                        m[(i, j)] += p[3 * i + j];
                    }
                }
                (m, Vector3::new(p[9], p[10], p[11]))
            }
        };
        about_centre(&lin, &t, c)
    }
}

/// The increments of one Gauss–Newton iteration: a family, its centre and, for the eddy
/// model, the direction `u` in the fixed (reference) frame that the current map sends along
/// the scanner's phase-encode axis. An eddy increment is a rigid increment followed by a
/// shear along `u`: `Δ(p)·x = S·R(ω)(x − c) + c + t` with `S = I + u·wᵀ`, parameters
/// `p = (ω, t, w)`. Composed as `T·Δ⁻¹`, the shear along `u` becomes one along `T·u = e` in
/// scanner space: the update stays inside the eddy family (to first order in the rotation
/// of the same step; [`super::eddy::EddyModel::project`] removes the rest).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Increment {
    pub kind: TransformKind,
    pub centre: Vector3<f64>,
    /// Fixed-frame shear direction (unit); unused except by the eddy model.
    pub shear: Vector3<f64>,
}

impl Increment {
    /// The increments about `centre` for a search currently at `current` (fixed → moving).
    pub fn at(kind: TransformKind, centre: Vector3<f64>, current: &Matrix4<f64>) -> Increment {
        let shear = match kind {
            TransformKind::Eddy { pe } => {
                let l = current.fixed_view::<3, 3>(0, 0).into_owned();
                let e = Vector3::from(pe);
                let u = l.try_inverse().map(|li| li * e).unwrap_or(e);
                u / u.norm()
            }
            _ => Vector3::zeros(),
        };
        Increment {
            kind,
            centre,
            shear,
        }
    }

    pub fn n_params(&self) -> usize {
        self.kind.n_params()
    }

    /// `Δ(p)` as a 4×4 matrix.
    pub fn matrix(&self, p: &[f64]) -> Matrix4<f64> {
        match self.kind {
            TransformKind::Eddy { .. } => {
                let r = rotation_exp(&Vector3::new(p[0], p[1], p[2]));
                let w = Vector3::new(p[6], p[7], p[8]);
                let s = Matrix3::identity() + self.shear * w.transpose();
                about_centre(&(s * r), &Vector3::new(p[3], p[4], p[5]), &self.centre)
            }
            k => k.increment(p, &self.centre),
        }
    }

    /// `∂a/∂p` at `p = 0`, where `a` are the 12 affine coordinates of [`TransformKind::Affine`]
    /// (entries of `L − I` row-major, then the translation): 12 × `n_params`. The image
    /// Jacobian of this family is the affine Jacobian row times this matrix.
    pub fn affine_basis(&self) -> DMatrix<f64> {
        let n = self.n_params();
        let mut b = DMatrix::zeros(12, n);
        match self.kind {
            TransformKind::Affine => b.fill_with_identity(),
            TransformKind::Rigid | TransformKind::Eddy { .. } => {
                // ∂R(ω)/∂ω_k at 0 is the cross-product matrix [e_k]×
                for (k, (i, j)) in [(1usize, 2usize), (2, 0), (0, 1)].into_iter().enumerate() {
                    b[(3 * i + j, k)] = -1.0;
                    b[(3 * j + i, k)] = 1.0;
                }
                for k in 0..3 {
                    b[(9 + k, 3 + k)] = 1.0;
                }
                if matches!(self.kind, TransformKind::Eddy { .. }) {
                    // ∂(u·wᵀ)/∂w_j: column j of L − I is u
                    for j in 0..3 {
                        for i in 0..3 {
                            b[(3 * i + j, 6 + j)] = self.shear[i];
                        }
                    }
                }
            }
        }
        b
    }

    /// Root-mean-square displacement (mm) of the sample points caused by a unit change of each
    /// parameter: ITK's `RegistrationParameterScalesFromPhysicalShift`, with the RMS over the
    /// mask instead of the largest shift at the domain's corners (a corner far from the brain
    /// would over-weight rotations). `second_moment` is `E[(x − c)(x − c)ᵀ]` over the samples,
    /// with `c` their mean (this increment's centre): for a column `(A, t)` of the affine basis
    /// the mean squared shift is `tr(A·Σ·Aᵀ) + |t|²`. Translations get 1; a rotation about an
    /// axis gets the RMS distance from that axis (≈ 45–50 mm for a brain).
    pub fn physical_shift_scales(&self, second_moment: &Matrix3<f64>) -> DVector<f64> {
        let b = self.affine_basis();
        DVector::from_iterator(
            self.n_params(),
            (0..self.n_params()).map(|k| {
                let a = Matrix3::from_fn(|i, j| b[(3 * i + j, k)]);
                let t = Vector3::new(b[(9, k)], b[(10, k)], b[(11, k)]);
                ((a * second_moment * a.transpose()).trace() + t.norm_squared())
                    .max(0.0)
                    .sqrt()
                    .max(1e-6)
            }),
        )
    }
}

/// `x ↦ L(x − c) + c + t` as a 4×4 matrix.
pub fn about_centre(lin: &Matrix3<f64>, t: &Vector3<f64>, c: &Vector3<f64>) -> Matrix4<f64> {
    let mut m = Matrix4::identity();
    m.fixed_view_mut::<3, 3>(0, 0).copy_from(lin);
    let off = c - lin * c + t;
    m[(0, 3)] = off.x;
    m[(1, 3)] = off.y;
    m[(2, 3)] = off.z;
    m
}

/// Rotation matrix of the rotation vector `w` (axis·angle, radians), Rodrigues' formula.
pub fn rotation_exp(w: &Vector3<f64>) -> Matrix3<f64> {
    let th2 = w.norm_squared();
    let k = Matrix3::new(0.0, -w.z, w.y, w.z, 0.0, -w.x, -w.y, w.x, 0.0);
    // Taylor forms below 1e-8 rad² keep full precision for the tiny final increments.
    let (a, b) = if th2 < 1e-8 {
        (1.0 - th2 / 6.0, 0.5 - th2 / 24.0)
    } else {
        let th = th2.sqrt();
        (th.sin() / th, (1.0 - th.cos()) / th2)
    };
    Matrix3::identity() + k * a + k * k * b
}

/// Nearest rotation to `m` (polar decomposition via SVD); used to keep rigid estimates exactly
/// rigid after many compositions.
pub fn nearest_rotation(m: &Matrix3<f64>) -> Matrix3<f64> {
    let svd = m.svd(true, true);
    let (u, vt) = (svd.u.unwrap(), svd.v_t.unwrap());
    let mut r = u * vt;
    if r.determinant() < 0.0 {
        let mut u2 = u;
        u2.column_mut(2).neg_mut();
        r = u2 * vt;
    }
    r
}

/// Largest displacement `|A·x − x|` over the corners of an axis-aligned box: for an affine map
/// the displacement is convex in `x`, so the box corners bound it over every point inside.
pub fn max_corner_displacement(a: &Matrix4<f64>, lo: &Vector3<f64>, hi: &Vector3<f64>) -> f64 {
    let mut worst: f64 = 0.0;
    for m in 0..8 {
        let x = Vector3::new(
            if m & 1 == 0 { lo.x } else { hi.x },
            if m & 2 == 0 { lo.y } else { hi.y },
            if m & 4 == 0 { lo.z } else { hi.z },
        );
        let y = a.fixed_view::<3, 3>(0, 0) * x + a.fixed_view::<3, 1>(0, 3);
        worst = worst.max((y - x).norm());
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rodrigues_matches_axis_angle() {
        let w = Vector3::new(0.1, -0.2, 0.3);
        let r = rotation_exp(&w);
        let aa = nalgebra::Rotation3::from_scaled_axis(w);
        assert!((r - aa.matrix()).abs().max() < 1e-14);
        let tiny = Vector3::new(1e-6, 2e-6, -3e-6);
        let r = rotation_exp(&tiny);
        let aa = nalgebra::Rotation3::from_scaled_axis(tiny);
        assert!((r - aa.matrix()).abs().max() < 1e-15);
    }

    #[test]
    fn jacobian_matches_finite_differences() {
        // g·∂Δ(p)x/∂p by central differences of the increment itself.
        let c = Vector3::new(3.0, -10.0, 20.0);
        let x = Vector3::new(40.0, 5.0, -7.0);
        let g = Vector3::new(0.3, -1.2, 0.7);
        for kind in [TransformKind::Rigid, TransformKind::Affine] {
            let n = kind.n_params();
            let mut row = vec![0.0; n];
            kind.jacobian_row(&g, &(x - c), &mut row);
            for k in 0..n {
                let h = 1e-6;
                let mut p = vec![0.0; n];
                p[k] = h;
                let xp = kind.increment(&p, &c).transform_point(&x.into());
                p[k] = -h;
                let xm = kind.increment(&p, &c).transform_point(&x.into());
                let fd = g.dot(&((xp - xm) / (2.0 * h)));
                assert!(
                    (fd - row[k]).abs() < 1e-6,
                    "{kind:?} param {k}: {fd} vs {}",
                    row[k]
                );
            }
        }
    }

    #[test]
    fn increment_basis_matches_finite_differences_for_every_family() {
        // ∂(Δ(p)x)/∂p from the basis (affine Jacobian · B) against central differences of
        // the increment matrix, for each family, at a point away from the centre.
        let c = Vector3::new(3.0, -10.0, 20.0);
        let x = Vector3::new(40.0, 5.0, -7.0);
        let current = TransformKind::Rigid.increment(&[0.05, -0.02, 0.03, 1.0, 2.0, -1.0], &c);
        let pe = Vector3::new(0.2, 0.9, -0.1).normalize();
        for kind in [
            TransformKind::Rigid,
            TransformKind::Affine,
            TransformKind::Eddy { pe: pe.into() },
        ] {
            let inc = Increment::at(kind, c, &current);
            let b = inc.affine_basis();
            let n = inc.n_params();
            let d = x - c;
            for k in 0..n {
                // affine Jacobian of the mapped point: ∂y_i/∂a_(3i+j) = d_j, ∂y_i/∂a_(9+i) = 1
                let mut analytic = Vector3::zeros();
                for i in 0..3 {
                    for j in 0..3 {
                        analytic[i] += b[(3 * i + j, k)] * d[j];
                    }
                    analytic[i] += b[(9 + i, k)];
                }
                let h = 1e-6;
                let mut p = vec![0.0; n];
                p[k] = h;
                let xp = inc.matrix(&p).transform_point(&x.into());
                p[k] = -h;
                let xm = inc.matrix(&p).transform_point(&x.into());
                let fd = (xp - xm) / (2.0 * h);
                assert!(
                    (fd - analytic).norm() < 1e-6,
                    "{kind:?} param {k}: {fd} vs {analytic}"
                );
            }
        }
    }

    #[test]
    fn eddy_increment_composed_on_the_current_map_shears_along_the_scanner_axis() {
        // T·Δ(w)⁻¹ must differ from T only by a displacement along the scanner PE axis e.
        let c = Vector3::new(0.0, -20.0, 10.0);
        let t = TransformKind::Rigid.increment(&[0.04, 0.03, -0.05, 1.0, -2.0, 0.5], &c);
        let e = Vector3::new(0.0, 1.0, 0.0);
        let inc = Increment::at(TransformKind::Eddy { pe: e.into() }, c, &t);
        let delta = inc.matrix(&[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.01, -0.02, 0.015]);
        let tn = t * delta.try_inverse().unwrap();
        for x in [
            Vector3::new(50.0, 0.0, 0.0),
            Vector3::new(-30.0, 40.0, 20.0),
            Vector3::new(0.0, -60.0, -30.0),
        ] {
            let a = t.transform_point(&x.into());
            let b = tn.transform_point(&x.into());
            let d = b - a;
            assert!((d - e * e.dot(&d)).norm() < 1e-12, "{d}");
        }
    }
}
