//! One simulated subject's head in its reference position: tissue fractions and fibre
//! directions on a 2 mm lattice in head (reference RAS) coordinates.
//!
//! The subject is the template under a random pose (a few degrees, a few mm), a random
//! per-axis scale (±5 %) and a smooth random warp (≈2 mm), so different seeds give different
//! brains. Fibres follow a hand-drawn anatomical layout (left–right near the corpus callosum,
//! superior–inferior in the corona radiata, anterior–posterior laterally) perturbed by smooth
//! random fields, with patches of a second, crossing population.
//!
//! The lattice is the *analytic* anatomy the simulator evaluates at moved fine-grid points;
//! it is never resampled with the estimator's interpolator.

use super::field::SmoothField;
use super::rng::Rng;
use super::template::Template;
use nalgebra::{Matrix3, Rotation3, Vector3};
use rayon::prelude::*;

/// Tissue at a point: fractions (WM, GM, CSF, scalp), primary and crossing fibre vectors
/// (not normalised after interpolation) and the crossing population's share of WM.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Node {
    pub frac: [f32; 4],
    pub n1: [f32; 3],
    pub n2: [f32; 3],
    pub w2: f32,
}

impl Node {
    fn axpy(&mut self, w: f32, o: &Node) {
        for m in 0..4 {
            self.frac[m] += w * o.frac[m];
        }
        for m in 0..3 {
            self.n1[m] += w * o.n1[m];
            self.n2[m] += w * o.n2[m];
        }
        self.w2 += w * o.w2;
    }

    fn is_empty(&self) -> bool {
        self.frac == [0.0; 4]
    }
}

pub struct Anatomy {
    /// Head-space position of lattice node (0, 0, 0), mm.
    pub origin: Vector3<f64>,
    /// Lattice spacing, mm.
    pub spacing: f64,
    pub dims: [usize; 3],
    nodes: Vec<Node>,
}

/// Lattice spacing in mm: fine enough for the 4 mm template and the smooth fields.
const SPACING: f64 = 2.0;

impl Anatomy {
    pub fn build(template: &Template, rng: &mut Rng) -> Anatomy {
        let (lo, hi) = template.bounds();
        let centre = (lo + hi) / 2.0;
        let margin = Vector3::repeat(12.0);
        let origin = lo - margin;
        let ext = hi - lo + 2.0 * margin;
        let dims = [
            (ext.x / SPACING).ceil() as usize + 1,
            (ext.y / SPACING).ceil() as usize + 1,
            (ext.z / SPACING).ceil() as usize + 1,
        ];

        // Subject: pose, scale, warp (head point x -> template point p).
        let deg = std::f64::consts::PI / 180.0;
        let pose = Rotation3::from_euler_angles(
            rng.range(-4.0, 4.0) * deg,
            rng.range(-2.0, 2.0) * deg,
            rng.range(-3.0, 3.0) * deg,
        );
        let shift = Vector3::new(
            rng.range(-3.0, 3.0),
            rng.range(-3.0, 3.0),
            rng.range(-3.0, 3.0),
        );
        let scale = Vector3::new(
            rng.range(0.95, 1.05),
            rng.range(0.95, 1.05),
            rng.range(0.95, 1.05),
        );
        let to_template: Matrix3<f64> =
            Matrix3::from_diagonal(&scale.map(|s| 1.0 / s)) * pose.matrix().transpose();
        let warp = [
            SmoothField::random(rng, 6, 50.0, 120.0),
            SmoothField::random(rng, 6, 50.0, 120.0),
            SmoothField::random(rng, 6, 50.0, 120.0),
        ];
        let warp_mm = 2.0;
        let pert = [
            SmoothField::random(rng, 8, 30.0, 90.0),
            SmoothField::random(rng, 8, 30.0, 90.0),
            SmoothField::random(rng, 8, 30.0, 90.0),
        ];
        let cross = [
            SmoothField::random(rng, 8, 40.0, 120.0),
            SmoothField::random(rng, 8, 40.0, 120.0),
            SmoothField::random(rng, 8, 40.0, 120.0),
        ];
        let patch = SmoothField::random(rng, 8, 30.0, 80.0);
        // Head frame <- template frame for vectors.
        let rot_back: Matrix3<f64> = *pose.matrix();

        let plane = dims[0] * dims[1];
        let mut nodes = vec![Node::default(); plane * dims[2]];
        nodes
            .par_chunks_mut(plane)
            .enumerate()
            .for_each(|(k, slab)| {
                for j in 0..dims[1] {
                    for i in 0..dims[0] {
                        let x = origin + Vector3::new(i as f64, j as f64, k as f64) * SPACING;
                        let mut p = centre + to_template * (x - centre - shift);
                        p += Vector3::new(warp[0].eval(&p), warp[1].eval(&p), warp[2].eval(&p))
                            * warp_mm;
                        let f = template.sample(&p);
                        if f == [0.0; 4] {
                            continue;
                        }
                        let mut node = Node {
                            frac: sharpen(f),
                            ..Node::default()
                        };
                        if node.frac[0] > 0.0 {
                            let v1 = fibre_layout(&p)
                                + 0.45
                                    * Vector3::new(
                                        pert[0].eval(&p),
                                        pert[1].eval(&p),
                                        pert[2].eval(&p),
                                    );
                            let v2 = Vector3::new(
                                cross[0].eval(&p),
                                cross[1].eval(&p),
                                cross[2].eval(&p),
                            );
                            let v1 = rot_back * v1;
                            let v2 = rot_back * v2;
                            node.n1 = [v1.x as f32, v1.y as f32, v1.z as f32];
                            node.n2 = [v2.x as f32, v2.y as f32, v2.z as f32];
                            // Crossing share 0..0.45 in patches covering about a third of WM.
                            let s = ((patch.eval(&p) - 0.3) / 0.8).clamp(0.0, 1.0);
                            node.w2 = (0.45 * s * s * (3.0 - 2.0 * s)) as f32;
                        }
                        slab[i + dims[0] * j] = node;
                    }
                }
            });
        Anatomy {
            origin,
            spacing: SPACING,
            dims,
            nodes,
        }
    }

    /// Trilinear interpolation at lattice coordinates `u` (node units). Returns `None`
    /// outside the head (all eight neighbours empty or outside the lattice).
    #[inline]
    pub fn sample(&self, u: [f64; 3]) -> Option<Node> {
        let f = [u[0].floor(), u[1].floor(), u[2].floor()];
        if f[0] < 0.0 || f[1] < 0.0 || f[2] < 0.0 {
            return None;
        }
        let (i, j, k) = (f[0] as usize, f[1] as usize, f[2] as usize);
        if i + 1 >= self.dims[0] || j + 1 >= self.dims[1] || k + 1 >= self.dims[2] {
            return None;
        }
        let t = [
            (u[0] - f[0]) as f32,
            (u[1] - f[1]) as f32,
            (u[2] - f[2]) as f32,
        ];
        let base = i + self.dims[0] * (j + self.dims[1] * k);
        let sx = 1;
        let sy = self.dims[0];
        let sz = self.dims[0] * self.dims[1];
        let mut out = Node::default();
        let mut any = false;
        for (dz, wz) in [(0, 1.0 - t[2]), (sz, t[2])] {
            for (dy, wy) in [(0, 1.0 - t[1]), (sy, t[1])] {
                for (dx, wx) in [(0, 1.0 - t[0]), (sx, t[0])] {
                    let n = &self.nodes[base + dz + dy + dx];
                    if !n.is_empty() {
                        out.axpy(wx * wy * wz, n);
                        any = true;
                    }
                }
            }
        }
        any.then_some(out)
    }
}

/// Crisper WM/GM boundaries than the 4 mm template gives: raise WM and GM shares to a
/// power and renormalise within the parenchyma (CSF and scalp unchanged).
fn sharpen(f: [f32; 4]) -> [f32; 4] {
    let par = f[0] + f[1];
    if par <= 0.0 {
        return f;
    }
    let (a, b) = (f[0].powf(1.6), f[1].powf(1.6));
    let s = a + b;
    [par * a / s, par * b / s, f[2], f[3]]
}

/// A coarse anatomical fibre layout in template (MNI-like) coordinates, mm.
fn fibre_layout(p: &Vector3<f64>) -> Vector3<f64> {
    let g = |v: f64, c: f64, w: f64| (-((v - c) / w).powi(2)).exp();
    // corpus callosum: left-right near the midline above the ventricles
    let lr = g(p.x, 0.0, 18.0) * g(p.z, 18.0, 14.0) * g(p.y, -10.0, 45.0);
    // corona radiata / corticospinal: superior-inferior, paramedian
    let si = g(p.x.abs(), 25.0, 14.0) * g(p.y, -15.0, 35.0);
    // longitudinal association bundles: anterior-posterior, lateral
    let ap = g(p.x.abs(), 40.0, 10.0) + 0.5 * g(p.z, -10.0, 15.0);
    Vector3::new(1.2 * lr + 0.15, 0.9 * ap + 0.1, si + 0.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_is_deterministic_and_brain_sized() {
        let t = Template::embedded().unwrap();
        let a = Anatomy::build(&t, &mut Rng::new(3));
        let b = Anatomy::build(&t, &mut Rng::new(3));
        assert!(a.nodes == b.nodes);
        let c = Anatomy::build(&t, &mut Rng::new(4));
        assert!(a.nodes != c.nodes);
        let vol: f64 = a
            .nodes
            .iter()
            .map(|n| (n.frac[0] + n.frac[1] + n.frac[2]) as f64)
            .sum::<f64>()
            * 8.0
            / 1e6;
        assert!(vol > 1.4 && vol < 2.3, "brain volume {vol} L");
        let wm: f64 = a.nodes.iter().map(|n| n.frac[0] as f64).sum::<f64>() * 8.0 / 1e6;
        assert!(wm > 0.3 && wm < 0.9, "wm volume {wm} L");
    }
}
