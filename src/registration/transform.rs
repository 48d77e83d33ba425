//! Transforms: the parameterised increments the optimiser searches over.
//!
//! A registration result is a plain 4×4 RAS matrix `T` (reference/fixed point → moving point,
//! conventions.md). The optimiser never stores Euler angles: it composes small increments
//! `Δ(p)` onto `T` (inverse-compositional update `T ← T·Δ⁻¹`), so parameters only ever
//! describe a motion close to identity, where every parameterisation is well conditioned and
//! there is no gimbal lock. Increments act about a centre `c` (the fixed image's mask
//! centroid): rotations about a far-away world origin would couple rotation and translation
//! and slow Gauss–Newton down.

use nalgebra::{Matrix3, Matrix4, Vector3};

/// Which family of transforms is searched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransformKind {
    /// 6 parameters: rotation (3, radians, about the centre) then translation (3, mm).
    Rigid,
    /// 12 parameters: the 3×3 linear part minus identity (row-major) then translation.
    Affine,
}

impl TransformKind {
    /// Number of parameters of an increment.
    pub fn n_params(self) -> usize {
        match self {
            TransformKind::Rigid => 6,
            TransformKind::Affine => 12,
        }
    }

    /// Derivatives of a scalar image `F(Δ(p)·x)` with respect to `p` at `p = 0`, given the
    /// image's world gradient `g` at `x` and `d = x − c`. Writes `n_params` values into `out`.
    #[inline]
    pub fn jacobian_row(self, g: &Vector3<f64>, d: &Vector3<f64>, out: &mut [f64]) {
        match self {
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

    /// The increment `Δ(p)` as a 4×4 matrix acting about centre `c`.
    pub fn increment(self, p: &[f64], c: &Vector3<f64>) -> Matrix4<f64> {
        let (lin, t) = match self {
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
}
