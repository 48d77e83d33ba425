//! The compact tissue template shipped in `data/template/tissue.nii.gz`: white matter, grey
//! matter, CSF and scalp volume fractions on a 4 mm RAS grid, derived from the MNI ICBM152
//! 2009 tissue maps (provenance and licence in `data/template/`). It is embedded in the binary
//! so `simulate` works from any folder; a minimal NIfTI-1 parser reads exactly that file.

use flate2::read::GzDecoder;
use nalgebra::{Matrix4, Vector3, Vector4};
use std::io::Read;

static TEMPLATE_GZ: &[u8] = include_bytes!("../../data/template/tissue.nii.gz");

/// Number of tissue maps: WM, GM, CSF, scalp.
pub const N_MAPS: usize = 4;

/// Tissue fractions on a regular grid, sampled at any world point.
pub struct Template {
    pub dims: [usize; 3],
    /// Voxel -> RAS mm.
    pub affine: Matrix4<f64>,
    inv: Matrix4<f64>,
    /// Voxel-major: `N_MAPS` fractions per voxel, x fastest.
    data: Vec<[f32; N_MAPS]>,
}

fn i16_at(b: &[u8], o: usize) -> i16 {
    i16::from_le_bytes([b[o], b[o + 1]])
}
fn f32_at(b: &[u8], o: usize) -> f32 {
    f32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

impl Template {
    /// Decode the embedded template. It is a fixed file checked by the tests, so a failure
    /// here is a build defect, reported as a message rather than a panic.
    pub fn embedded() -> Result<Template, String> {
        let mut raw = Vec::new();
        GzDecoder::new(TEMPLATE_GZ)
            .read_to_end(&mut raw)
            .map_err(|e| format!("embedded tissue template is corrupt: {e}"))?;
        Self::parse(&raw)
    }

    fn parse(b: &[u8]) -> Result<Template, String> {
        let bad = |w: &str| Err(format!("embedded tissue template: {w}"));
        if b.len() < 352 || i32::from_le_bytes([b[0], b[1], b[2], b[3]]) != 348 {
            return bad("not a little-endian NIfTI-1 file");
        }
        let dim: Vec<i16> = (0..8).map(|i| i16_at(b, 40 + 2 * i)).collect();
        if dim[0] != 4 || dim[4] as usize != N_MAPS || i16_at(b, 70) != 2 {
            return bad("expected a 4-D uint8 image with 4 maps");
        }
        if i16_at(b, 254) <= 0 {
            return bad("no sform");
        }
        let mut affine = Matrix4::identity();
        for r in 0..3 {
            for c in 0..4 {
                affine[(r, c)] = f32_at(b, 280 + 16 * r + 4 * c) as f64;
            }
        }
        let off = (f32_at(b, 108) as usize).max(352);
        let dims = [dim[1] as usize, dim[2] as usize, dim[3] as usize];
        let nv = dims[0] * dims[1] * dims[2];
        if b.len() < off + nv * N_MAPS {
            return bad("truncated data");
        }
        let mut data = vec![[0f32; N_MAPS]; nv];
        for m in 0..N_MAPS {
            for (v, d) in data.iter_mut().enumerate() {
                d[m] = b[off + m * nv + v] as f32 / 250.0;
            }
        }
        let inv = affine
            .try_inverse()
            .ok_or("embedded tissue template: singular affine")?;
        Ok(Template {
            dims,
            affine,
            inv,
            data,
        })
    }

    /// World-space bounding box (min, max corners of the voxel centres).
    pub fn bounds(&self) -> (Vector3<f64>, Vector3<f64>) {
        let mut lo = Vector3::repeat(f64::INFINITY);
        let mut hi = Vector3::repeat(f64::NEG_INFINITY);
        for &i in &[0.0, self.dims[0] as f64 - 1.0] {
            for &j in &[0.0, self.dims[1] as f64 - 1.0] {
                for &k in &[0.0, self.dims[2] as f64 - 1.0] {
                    let p = self.affine * Vector4::new(i, j, k, 1.0);
                    let p = p.xyz();
                    lo = lo.inf(&p);
                    hi = hi.sup(&p);
                }
            }
        }
        (lo, hi)
    }

    fn at(&self, i: isize, j: isize, k: isize) -> [f32; N_MAPS] {
        if i < 0
            || j < 0
            || k < 0
            || i as usize >= self.dims[0]
            || j as usize >= self.dims[1]
            || k as usize >= self.dims[2]
        {
            return [0.0; N_MAPS];
        }
        self.data[i as usize + self.dims[0] * (j as usize + self.dims[1] * k as usize)]
    }

    /// Tissue fractions at a world point: Catmull–Rom tricubic interpolation (smooth and
    /// interpolating, so the coarse template does not show trilinear facets), clamped to [0, 1].
    pub fn sample(&self, p: &Vector3<f64>) -> [f32; N_MAPS] {
        let u = self.inv * Vector4::new(p.x, p.y, p.z, 1.0);
        let f = [u.x.floor(), u.y.floor(), u.z.floor()];
        let t = [u.x - f[0], u.y - f[1], u.z - f[2]];
        let w = [cr_weights(t[0]), cr_weights(t[1]), cr_weights(t[2])];
        let b = [f[0] as isize - 1, f[1] as isize - 1, f[2] as isize - 1];
        let mut acc = [0f64; N_MAPS];
        for (c, wc) in w[2].iter().enumerate() {
            for (bb, wb) in w[1].iter().enumerate() {
                for (a, wa) in w[0].iter().enumerate() {
                    let v = self.at(b[0] + a as isize, b[1] + bb as isize, b[2] + c as isize);
                    let ww = wa * wb * wc;
                    for m in 0..N_MAPS {
                        acc[m] += ww * v[m] as f64;
                    }
                }
            }
        }
        acc.map(|x| x.clamp(0.0, 1.0) as f32)
    }
}

/// Catmull–Rom weights for the 4 samples around a fractional position t in [0, 1).
fn cr_weights(t: f64) -> [f64; 4] {
    let t2 = t * t;
    let t3 = t2 * t;
    [
        0.5 * (-t3 + 2.0 * t2 - t),
        0.5 * (3.0 * t3 - 5.0 * t2 + 2.0),
        0.5 * (-3.0 * t3 + 4.0 * t2 + t),
        0.5 * (t3 - t2),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_template_decodes() {
        let t = Template::embedded().unwrap();
        assert_eq!(t.dims, [45, 54, 45]);
        assert!((t.affine[(0, 0)] - 4.0).abs() < 1e-6);
        // Voxel centres reproduce the stored values exactly (interpolating kernel).
        let p = t.affine * Vector4::new(22.0, 30.0, 25.0, 1.0);
        let s = t.sample(&p.xyz());
        let d = t.at(22, 30, 25);
        for m in 0..N_MAPS {
            assert!((s[m] - d[m]).abs() < 1e-5);
        }
        // Brain in the middle, nothing in the corner.
        let c = t.sample(&Vector3::new(0.0, -20.0, 10.0));
        assert!(c[0] + c[1] + c[2] > 0.9, "{c:?}");
        assert_eq!(t.sample(&Vector3::new(-87.0, -126.0, -77.0)), [0.0; 4]);
        let total: f32 = t.data.iter().map(|v| v[0] + v[1] + v[2]).sum();
        // ~1.9 L of brain + CSF at 64 mm³ per voxel.
        let litres = total as f64 * 64.0 / 1e6;
        assert!(litres > 1.5 && litres < 2.1, "{litres}");
    }
}
