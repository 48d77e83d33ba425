//! Multi-resolution support: Gaussian smoothing, mask dilation and the fixed-image sample set
//! of each level.
//!
//! Coarse levels smooth both images with the same physical Gaussian (σ in mm, converted per
//! axis of each grid, so images with different voxel sizes or orientations are blurred
//! alike) and sample the fixed image on every `shrink`-th voxel. The moving image is never
//! decimated — it is only interpolated — so no resampling error enters the moving side.

/// Separable Gaussian smoothing with per-axis σ in voxels (edge values replicated).
/// Axes with σ < 0.05 voxel are left alone.
pub fn gaussian_smooth(data: &[f32], dims: [usize; 3], sigma_vox: [f64; 3]) -> Vec<f32> {
    let mut cur: Vec<f32> = data.to_vec();
    let strides = [1, dims[0], dims[0] * dims[1]];
    for axis in 0..3 {
        let s = sigma_vox[axis];
        let n = dims[axis];
        if s < 0.05 || n < 2 {
            continue;
        }
        let r = (4.0 * s).ceil() as isize;
        let mut k: Vec<f64> = (-r..=r)
            .map(|i| (-0.5 * (i as f64 / s).powi(2)).exp())
            .collect();
        let sum: f64 = k.iter().sum();
        k.iter_mut().for_each(|v| *v /= sum);
        let stride = strides[axis];
        let mut out = vec![0.0f32; cur.len()];
        let mut line = vec![0.0f64; n];
        // iterate over all lines along `axis`
        let (o1, o2) = match axis {
            0 => ((dims[1], strides[1]), (dims[2], strides[2])),
            1 => ((dims[0], strides[0]), (dims[2], strides[2])),
            _ => ((dims[0], strides[0]), (dims[1], strides[1])),
        };
        for b in 0..o2.0 {
            for a in 0..o1.0 {
                let base = a * o1.1 + b * o2.1;
                for (i, v) in line.iter_mut().enumerate() {
                    *v = cur[base + i * stride] as f64;
                }
                for i in 0..n as isize {
                    let mut acc = 0.0;
                    for (t, w) in k.iter().enumerate() {
                        let j = (i + t as isize - r).clamp(0, n as isize - 1) as usize;
                        acc += w * line[j];
                    }
                    out[base + i as usize * stride] = acc as f32;
                }
            }
        }
        cur = out;
    }
    cur
}

/// Binary dilation by `r` voxels with a 6-connected structuring element applied `r` times.
pub fn dilate(mask: &[bool], dims: [usize; 3], r: usize) -> Vec<bool> {
    let mut cur = mask.to_vec();
    let [nx, ny, nz] = dims;
    for _ in 0..r {
        let mut out = cur.clone();
        for k in 0..nz {
            for j in 0..ny {
                for i in 0..nx {
                    let idx = i + nx * (j + ny * k);
                    if cur[idx] {
                        continue;
                    }
                    let hit = (i > 0 && cur[idx - 1])
                        || (i + 1 < nx && cur[idx + 1])
                        || (j > 0 && cur[idx - nx])
                        || (j + 1 < ny && cur[idx + nx])
                        || (k > 0 && cur[idx - nx * ny])
                        || (k + 1 < nz && cur[idx + nx * ny]);
                    if hit {
                        out[idx] = true;
                    }
                }
            }
        }
        cur = out;
    }
    cur
}

/// Voxel indices (ascending linear order) of mask voxels on the `shrink` lattice. The lattice
/// is centred on the grid so that coarse samples are spread symmetrically.
pub fn lattice_points(mask: &[bool], dims: [usize; 3], shrink: usize) -> Vec<[usize; 3]> {
    let s = shrink.max(1);
    let off: Vec<usize> = dims.iter().map(|&n| ((n - 1) % s) / 2).collect();
    let mut pts = Vec::new();
    for k in (off[2]..dims[2]).step_by(s) {
        for j in (off[1]..dims[1]).step_by(s) {
            for i in (off[0]..dims[0]).step_by(s) {
                if mask[i + dims[0] * (j + dims[1] * k)] {
                    pts.push([i, j, k]);
                }
            }
        }
    }
    pts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothing_preserves_constants_and_mass() {
        let dims = [20, 21, 22];
        let n = dims.iter().product();
        let c = vec![3.5f32; n];
        let s = gaussian_smooth(&c, dims, [1.5, 0.0, 2.0]);
        assert!(s.iter().all(|&v| (v - 3.5).abs() < 1e-5));
        let mut d = vec![0f32; n];
        d[10 + 20 * (10 + 21 * 11)] = 1.0;
        let s = gaussian_smooth(&d, dims, [1.0, 1.0, 1.0]);
        let mass: f64 = s.iter().map(|&v| v as f64).sum();
        assert!((mass - 1.0).abs() < 1e-5);
        // second moment along x equals σ² (discrete Gaussian, σ = 1: within 1 %)
        let mut m2 = 0.0;
        for (idx, &v) in s.iter().enumerate() {
            let i = (idx % 20) as f64 - 10.0;
            m2 += v as f64 * i * i;
        }
        assert!((m2 - 1.0).abs() < 0.01, "{m2}");
    }

    #[test]
    fn dilation_grows_by_faces() {
        let dims = [5, 5, 5];
        let mut m = vec![false; 125];
        m[2 + 5 * (2 + 5 * 2)] = true;
        assert_eq!(dilate(&m, dims, 1).iter().filter(|&&b| b).count(), 7);
        assert_eq!(dilate(&m, dims, 2).iter().filter(|&&b| b).count(), 25);
    }
}
