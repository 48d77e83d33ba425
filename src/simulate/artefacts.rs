//! Scanner artefacts added on top of head motion: eddy-current distortion, slice dropouts and
//! signal drift (`simulate --ec --pe-dir --dropout --drift`).
//!
//! **Eddy currents.** Each diffusion gradient leaves an off-resonance field that is linear in
//! *scanner* position (FSL eddy's first-order model) and that displaces the image along the
//! phase-encode axis only. The field of a volume is the sum of the fields left by the three
//! gradient axes, weighted by the gradient direction g and proportional to b:
//!
//!   d(y) = s · (b / 1000) · (gᵀ M (y − iso) + gᵀ c)      (mm, along the phase-encode vector)
//!
//! with a per-subject 3×3 matrix M (row i: the field gradient left by gradient axis i — mostly
//! along that same axis, as the self-terms dominate in real scanners) and a 3-vector c (the
//! constant B0 shift each axis leaves), drawn once per seed; iso is the scanner isocentre (the
//! RAS origin); s is `--ec`. The map from a physical scanner point to where the acquired
//! image shows it is D(y) = y + d(y)·e_pe: an affine, so D·T_k (T_k the head motion) is the
//! full per-volume truth. The field is fixed in the scanner; the head moves inside it. The
//! acquired intensity carries the Jacobian of the displacement (signal is conserved, so a
//! stretched region is dimmer): acquired(z) = physical(D⁻¹ z) / (1 + ∂d/∂pe).
//!
//! **Dropouts** (signal lost to bulk motion during the diffusion encoding): in a fraction of
//! the diffusion-weighted volumes, 1–3 interleaved slices (every second slice along the third
//! voxel axis, the usual slice axis) keep only 5–40 % of their signal.
//!
//! **Drift**: the signal scales by a smooth, slowly accelerating decline over acquisition
//! order (Vos et al. 2017 find linear-to-quadratic drifts of a few per cent).

use super::rng::Rng;
use nalgebra::{Matrix3, Matrix4, Vector3};

/// Phase-encode direction as BIDS names it: a voxel axis and a sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhaseEncoding {
    /// Voxel axis 0 (i), 1 (j) or 2 (k).
    pub axis: usize,
    /// +1 or −1 (the `-` suffix).
    pub sign: i8,
}

impl PhaseEncoding {
    /// Parse `i`, `i-`, `j`, `j-`, `k`, `k-` (BIDS `PhaseEncodingDirection`).
    pub fn parse(s: &str) -> Option<Self> {
        let (axis, rest) = match s.as_bytes().first()? {
            b'i' => (0, &s[1..]),
            b'j' => (1, &s[1..]),
            b'k' => (2, &s[1..]),
            _ => return None,
        };
        let sign = match rest {
            "" => 1,
            "-" => -1,
            _ => return None,
        };
        Some(PhaseEncoding { axis, sign })
    }

    pub fn name(&self) -> String {
        let a = ["i", "j", "k"][self.axis];
        if self.sign < 0 {
            format!("{a}-")
        } else {
            a.to_string()
        }
    }

    /// Unit world (RAS) vector of the phase-encode direction on a grid with this affine.
    pub fn world(&self, affine: &Matrix4<f64>) -> Vector3<f64> {
        let c: Vector3<f64> = affine.fixed_view::<3, 1>(0, self.axis).into();
        c.normalize() * self.sign as f64
    }
}

/// The per-subject eddy-current coefficients (see the module doc).
#[derive(Clone, Debug)]
pub struct EddyField {
    /// Strength s (`--ec`).
    pub strength: f64,
    /// Field gradients per gradient axis (rows), mm of displacement per mm at b=1000, s=1.
    pub m: Matrix3<f64>,
    /// Constant displacement per gradient axis, mm at b=1000, s=1.
    pub c: Vector3<f64>,
    /// Unit phase-encode vector (world).
    pub pe: Vector3<f64>,
}

/// RMS of the self-terms of M at s=1 (mm per mm): 1.4 % — a 1.4 mm displacement 100 mm from
/// the isocentre, like the per-volume scalings of ±1–2 % seen at b=1000 on bench_artefacts.
/// With [`CONSTANT_MM`] this gives, over seeds 1–6 on the default 1000/2000 protocol, a median
/// displacement over the brain of 0.61–0.83 mm (bench_artefacts: 0.67 mm) and a worst
/// per-volume mean of 1.4–1.9 mm (bench_artefacts: 1.8 mm).
const SELF_TERM: f64 = 0.014;
/// RMS of the cross-terms of M relative to the self-terms.
const CROSS_TERM: f64 = 0.5;
/// RMS of the constant term at s=1, mm (bench_artefacts: ±0.1–0.4 mm at b=1000).
const CONSTANT_MM: f64 = 0.4;

impl EddyField {
    pub fn random(rng: &mut Rng, strength: f64, pe: Vector3<f64>) -> Self {
        let mut m = Matrix3::zeros();
        for i in 0..3 {
            for j in 0..3 {
                let sd = if i == j {
                    SELF_TERM
                } else {
                    SELF_TERM * CROSS_TERM
                };
                m[(i, j)] = sd * rng.normal();
            }
        }
        let c = Vector3::new(rng.normal(), rng.normal(), rng.normal());
        // Every subject gets the same overall strength (only the pattern is random), so
        // `--ec` means the same displacement size for every seed: M and c are scaled to their
        // expected norms.
        let m_norm = SELF_TERM * (3.0 + 6.0 * CROSS_TERM * CROSS_TERM).sqrt();
        let m = m * (m_norm / m.norm().max(1e-12));
        let c = c * (CONSTANT_MM * 3f64.sqrt() / c.norm().max(1e-12));
        EddyField { strength, m, c, pe }
    }

    /// The displacement field of one volume: (gradient of d in mm/mm, constant in mm), d(y) =
    /// a·y + d0 with y in scanner RAS mm (isocentre at the origin).
    pub fn coefficients(&self, b: f64, g: [f64; 3]) -> (Vector3<f64>, f64) {
        let g = Vector3::from(g);
        let scale = self.strength * b / 1000.0;
        ((self.m.transpose() * g) * scale, g.dot(&self.c) * scale)
    }

    /// D: physical scanner point → where the acquired image shows it (affine).
    pub fn distortion(&self, b: f64, g: [f64; 3]) -> Matrix4<f64> {
        let (a, d0) = self.coefficients(b, g);
        let mut m = Matrix4::identity();
        let lin = Matrix3::identity() + self.pe * a.transpose();
        m.fixed_view_mut::<3, 3>(0, 0).copy_from(&lin);
        m.fixed_view_mut::<3, 1>(0, 3).copy_from(&(self.pe * d0));
        m
    }

    /// Intensity factor of the acquired image: 1 / det(∂D/∂y) = 1 / (1 + ∂d/∂pe).
    pub fn jacobian_factor(&self, b: f64, g: [f64; 3]) -> f64 {
        let (a, _) = self.coefficients(b, g);
        1.0 / (1.0 + a.dot(&self.pe))
    }
}

/// Dropout slices per volume: `(volume, [(slice, remaining fraction)])`, volumes ascending.
pub type Dropouts = Vec<(usize, Vec<(usize, f64)>)>;

/// Pick round(`frac` × |dw|) diffusion-weighted volumes and, in each, 1–3 interleaved slices
/// (spacing 2) whose every slice holds at least half the largest slice brain count
/// (`slice_brain` per slice along the third axis), each at 5–40 % of its signal.
pub fn dropouts(rng: &mut Rng, dw: &[usize], frac: f64, slice_brain: &[usize]) -> Dropouts {
    let n = (frac * dw.len() as f64).round() as usize;
    let n = n.min(dw.len());
    let biggest = slice_brain.iter().copied().max().unwrap_or(0);
    let candidates: Vec<usize> = (0..slice_brain.len())
        .filter(|&s| biggest > 0 && 2 * slice_brain[s] >= biggest)
        .collect();
    if n == 0 || candidates.is_empty() {
        return Vec::new();
    }
    // Partial Fisher–Yates: n distinct volumes.
    let mut pool = dw.to_vec();
    for i in 0..n {
        let last = pool.len() - 1;
        let j = i + (rng.uniform() * (pool.len() - i) as f64) as usize;
        pool.swap(i, j.min(last));
    }
    let mut chosen: Vec<usize> = pool[..n].to_vec();
    chosen.sort_unstable();
    chosen
        .into_iter()
        .map(|v| {
            let count = 1 + (rng.uniform() * 3.0) as usize;
            let start = candidates[(rng.uniform() * candidates.len() as f64) as usize];
            let slices = (0..count.min(3))
                .map(|i| start + 2 * i)
                .filter(|s| candidates.contains(s))
                .map(|s| (s, rng.range(0.05, 0.40)))
                .collect();
            (v, slices)
        })
        .collect()
}

/// Multiplicative drift per volume over acquisition order: 1 at the first volume, 1 − pct/100
/// at the last, along a mix of a linear and a quadratic decline (the quadratic share drawn
/// per seed in [0.2, 0.6]).
pub fn drift(rng: &mut Rng, n: usize, pct: f64) -> Vec<f64> {
    let q = rng.range(0.2, 0.6);
    (0..n)
        .map(|k| {
            let t = if n > 1 {
                k as f64 / (n - 1) as f64
            } else {
                0.0
            };
            1.0 - pct / 100.0 * ((1.0 - q) * t + q * t * t)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_encoding_names_round_trip() {
        for s in ["i", "i-", "j", "j-", "k", "k-"] {
            assert_eq!(PhaseEncoding::parse(s).unwrap().name(), s);
        }
        assert!(PhaseEncoding::parse("x").is_none());
        assert!(PhaseEncoding::parse("j+").is_none());
        assert!(PhaseEncoding::parse("").is_none());
        let pe = PhaseEncoding::parse("j-").unwrap();
        let a = Matrix4::new_scaling(2.5);
        assert_eq!(pe.world(&a), Vector3::new(0.0, -1.0, 0.0));
    }

    /// D moves points along the phase-encode vector only, by d(y) computed independently.
    #[test]
    fn distortion_is_a_shift_along_pe() {
        let pe = Vector3::new(0.0, 1.0, 0.0);
        let f = EddyField::random(&mut Rng::new(3), 1.0, pe);
        let g = [0.6, 0.0, 0.8];
        let d = f.distortion(2000.0, g);
        let y = Vector3::new(30.0, -40.0, 20.0);
        let moved = (d * y.push(1.0)).xyz();
        let gv = Vector3::from(g);
        let expect = 2.0 * (gv.dot(&(f.m * y)) + gv.dot(&f.c));
        assert!((moved.x - y.x).abs() < 1e-12 && (moved.z - y.z).abs() < 1e-12);
        assert!((moved.y - y.y - expect).abs() < 1e-12);
        // Jacobian: det of the linear part
        let det = d.fixed_view::<3, 3>(0, 0).determinant();
        assert!((f.jacobian_factor(2000.0, g) * det - 1.0).abs() < 1e-12);
        // b = 0: no distortion
        assert_eq!(f.distortion(0.0, [0.0; 3]), Matrix4::identity());
    }

    #[test]
    fn dropouts_and_drift() {
        let dw: Vec<usize> = (1..51).collect();
        let mut brain = vec![0usize; 40];
        for (s, b) in brain.iter_mut().enumerate().take(30).skip(10) {
            *b = 100 + s;
        }
        let d = dropouts(&mut Rng::new(1), &dw, 0.1, &brain);
        assert_eq!(d.len(), 5);
        for (v, sl) in &d {
            assert!(dw.contains(v));
            assert!(!sl.is_empty() && sl.len() <= 3);
            for w in sl.windows(2) {
                assert_eq!(w[1].0, w[0].0 + 2);
            }
            for &(s, f) in sl {
                assert!((10..30).contains(&s));
                assert!((0.05..0.40).contains(&f));
            }
        }
        let dr = drift(&mut Rng::new(1), 11, 5.0);
        assert_eq!(dr[0], 1.0);
        assert!((dr[10] - 0.95).abs() < 1e-12);
        assert!(dr.windows(2).all(|w| w[1] < w[0]));
    }
}
