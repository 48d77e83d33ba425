//! Rigid head-motion trajectories and their parameterisation.
//!
//! Parameters follow `truth.tsv` of the shared phantoms: translations (mm) of the rotation
//! centre and extrinsic x-y-z Euler angles (degrees), R = Rz·Ry·Rx, about the brain centroid c:
//! T x = R (x − c) + c + t. T maps reference-head points to where they are in volume k.

use super::rng::Rng;
use nalgebra::{Matrix3, Matrix4, Vector3};

#[derive(Clone, Debug, PartialEq)]
pub struct Motion {
    /// tx, ty, tz (mm), rx, ry, rz (degrees).
    pub params: [f64; 6],
    /// RAS reference -> volume-k 4×4.
    pub matrix: Matrix4<f64>,
}

/// R = Rz(rz)·Ry(ry)·Rx(rx), angles in degrees.
pub fn rotation(rx: f64, ry: f64, rz: f64) -> Matrix3<f64> {
    let (sx, cx) = rx.to_radians().sin_cos();
    let (sy, cy) = ry.to_radians().sin_cos();
    let (sz, cz) = rz.to_radians().sin_cos();
    let rxm = Matrix3::new(1.0, 0.0, 0.0, 0.0, cx, -sx, 0.0, sx, cx);
    let rym = Matrix3::new(cy, 0.0, sy, 0.0, 1.0, 0.0, -sy, 0.0, cy);
    let rzm = Matrix3::new(cz, -sz, 0.0, sz, cz, 0.0, 0.0, 0.0, 1.0);
    rzm * rym * rxm
}

impl Motion {
    pub fn new(params: [f64; 6], centre: &Vector3<f64>) -> Motion {
        let r = rotation(params[3], params[4], params[5]);
        let t = Vector3::new(params[0], params[1], params[2]) + centre - r * centre;
        let mut m = Matrix4::identity();
        m.fixed_view_mut::<3, 3>(0, 0).copy_from(&r);
        m.fixed_view_mut::<3, 1>(0, 3).copy_from(&t);
        Motion { params, matrix: m }
    }

    pub fn rotation(&self) -> Matrix3<f64> {
        self.matrix.fixed_view::<3, 3>(0, 0).into()
    }
}

/// A smooth drift (random walk with momentum, like a subject slowly sinking and turning)
/// plus rare sudden jerks that return, scaled so each parameter's largest excursion is
/// 50–100 % of its limit. Volume 0 is the reference: identity.
pub fn trajectory(
    rng: &mut Rng,
    n: usize,
    max_rot: f64,
    max_trans: f64,
    centre: &Vector3<f64>,
) -> Vec<Motion> {
    let mut tracks = vec![[0f64; 6]; n];
    // `p` is a column (parameter) of the row-per-volume `tracks`: no iterator walks columns
    #[allow(clippy::needless_range_loop)]
    for p in 0..6 {
        let mut v = 0.0;
        let mut x: f64 = 0.0;
        let mut raw = vec![0.0; n];
        for r in raw.iter_mut().skip(1) {
            v = 0.85 * v + rng.normal();
            x += v;
            *r = x;
        }
        // jerks: about one volume in 40, a brief displacement of ~40 % of the drift range
        let drift = raw.iter().fold(1f64, |m, v| m.max(v.abs()));
        for r in raw.iter_mut().skip(1) {
            if rng.uniform() < 0.025 {
                *r += rng.normal() * 0.4 * drift;
            }
        }
        let peak = raw.iter().fold(0f64, |m, v| m.max(v.abs()));
        let limit = if p < 3 { max_trans } else { max_rot };
        let scale = if peak > 0.0 {
            limit * rng.range(0.5, 1.0) / peak
        } else {
            0.0
        };
        for (k, r) in raw.iter().enumerate() {
            tracks[k][p] = (r * scale).clamp(-limit, limit);
        }
    }
    tracks.into_iter().map(|p| Motion::new(p, centre)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared bench phantom's volume 60 (truth.tsv): parameters -> matrix must match.
    #[test]
    fn matches_shared_truth_convention() {
        let c = Vector3::new(0.0, -21.733443974989413, 9.831935751375184);
        let m = Motion::new(
            [0.051882, -1.909147, 0.499684, -2.47539, 0.393491, 1.113199],
            &c,
        );
        // m03 m13 m23 recomputed by scipy from the bench truth row (R·c + t − c = params).
        let r = m.rotation();
        let back = r * c + m.matrix.fixed_view::<3, 1>(0, 3) - c;
        assert!((back - Vector3::new(0.051882, -1.909147, 0.499684)).norm() < 1e-9);
        // scipy Rotation.from_euler('xyz', [-2.47539, 0.393491, 1.113199], degrees=True)
        let expect = Matrix3::new(
            0.9997877, -0.0197062, 0.0060209, 0.0194273, 0.9988725, 0.0433154, -0.0068677,
            -0.0431892, 0.9990433,
        );
        assert!((r - expect).abs().max() < 2e-6, "{r}");
    }

    #[test]
    fn trajectory_limits() {
        let c = Vector3::zeros();
        let t = trajectory(&mut Rng::new(5), 70, 3.0, 2.0, &c);
        assert_eq!(t[0].matrix, Matrix4::identity());
        for m in &t {
            for p in 0..3 {
                assert!(m.params[p].abs() <= 2.0 + 1e-12);
                assert!(m.params[p + 3].abs() <= 3.0 + 1e-12);
            }
        }
        let peak = t.iter().map(|m| m.params[3].abs()).fold(0.0, f64::max);
        assert!(peak >= 1.5, "{peak}");
    }
}
