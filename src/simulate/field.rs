//! Smooth random scalar fields (a few random plane waves). Used for the subject's anatomical
//! warp, the fibre-orientation perturbation, crossing-fibre patches and the coil bias field:
//! all must be smooth over centimetres and reproducible from the seed.

use super::rng::Rng;
use nalgebra::Vector3;

#[derive(Clone, Debug)]
pub struct SmoothField {
    /// (wave vector rad/mm, phase rad, amplitude)
    modes: Vec<(Vector3<f64>, f64, f64)>,
}

impl SmoothField {
    /// `n` plane waves with wavelengths uniform in [lambda_min, lambda_max] mm, random
    /// directions and phases, scaled so the field has unit standard deviation.
    pub fn random(rng: &mut Rng, n: usize, lambda_min: f64, lambda_max: f64) -> Self {
        let amp = (2.0 / n as f64).sqrt();
        let modes = (0..n)
            .map(|_| {
                let d = rng.unit_vector();
                let lambda = rng.range(lambda_min, lambda_max);
                let k = std::f64::consts::TAU / lambda;
                let w = Vector3::new(d[0], d[1], d[2]) * k;
                (w, rng.range(0.0, std::f64::consts::TAU), amp)
            })
            .collect();
        SmoothField { modes }
    }

    pub fn eval(&self, p: &Vector3<f64>) -> f64 {
        self.modes
            .iter()
            .map(|(w, ph, a)| a * (w.dot(p) + ph).cos())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_variance_and_smooth() {
        let mut rng = Rng::new(7);
        let f = SmoothField::random(&mut rng, 12, 40.0, 80.0);
        let (mut s, mut s2, mut n) = (0.0, 0.0, 0.0);
        let mut maxstep: f64 = 0.0;
        for i in 0..60 {
            for j in 0..60 {
                let p = Vector3::new(i as f64 * 3.0, j as f64 * 3.0, 5.0);
                let v = f.eval(&p);
                s += v;
                s2 += v * v;
                n += 1.0;
                let q = p + Vector3::new(1.0, 0.0, 0.0);
                maxstep = maxstep.max((f.eval(&q) - v).abs());
            }
        }
        let var = s2 / n - (s / n) * (s / n);
        assert!(var > 0.4 && var < 1.8, "{var}");
        // gradient bounded by sum |a| k: under 0.5 per mm for wavelengths >= 40 mm
        assert!(maxstep < 0.5, "{maxstep}");
    }
}
