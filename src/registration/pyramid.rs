//! Multi-resolution support: Gaussian smoothing and the fixed-image sample set of each level
//! (the mask is dilated by [`crate::mask::dilate_voxels`]).
//!
//! Coarse levels smooth both images with the same physical Gaussian (σ in mm, converted per
//! axis of each grid, so images with different voxel sizes or orientations are blurred
//! alike) and sample the fixed image on every `shrink`-th voxel. The moving image is never
//! decimated — it is only interpolated — so no resampling error enters the moving side.

/// Separable Gaussian smoothing with per-axis σ in voxels (edge values replicated).
/// Axes with σ < 0.05 voxel are left alone. The kernel is truncated at 3σ (ITK's default
/// maximum error is similar). Rows and planes are combined whole along y and z so the inner
/// loops run over contiguous memory.
pub fn gaussian_smooth(data: &[f32], dims: [usize; 3], sigma_vox: [f64; 3]) -> Vec<f32> {
    let mut cur: Vec<f32> = data.to_vec();
    let [nx, ny, nz] = dims;
    let plane = nx * ny;
    for (axis, &s) in sigma_vox.iter().enumerate() {
        let n = dims[axis];
        if s < 0.05 || n < 2 {
            continue;
        }
        let k = kernel(s);
        let r = (k.len() / 2) as isize;
        let clamp = |i: isize| i.clamp(0, n as isize - 1) as usize;
        match axis {
            0 => {
                // Taps outermost, so the inner loop runs along the row and vectorises; every
                // output still sums its taps in kernel order from -0.0 (as `Iterator::sum`),
                // so the result is the same bits as a per-voxel dot product.
                let mut line = vec![0.0f32; nx + 2 * r as usize];
                for row in cur.chunks_exact_mut(nx) {
                    for (t, v) in line.iter_mut().enumerate() {
                        *v = row[clamp(t as isize - r)];
                    }
                    row.fill(-0.0);
                    for (t, &w) in k.iter().enumerate() {
                        row.iter_mut()
                            .zip(&line[t..])
                            .for_each(|(o, &v)| *o += w * v);
                    }
                }
            }
            1 => {
                let mut out = vec![0.0f32; cur.len()];
                for z in 0..nz {
                    let src = &cur[z * plane..(z + 1) * plane];
                    let dst = &mut out[z * plane..(z + 1) * plane];
                    for (j, orow) in dst.chunks_exact_mut(nx).enumerate() {
                        for (t, &w) in k.iter().enumerate() {
                            let jj = clamp(j as isize + t as isize - r);
                            let irow = &src[jj * nx..(jj + 1) * nx];
                            orow.iter_mut().zip(irow).for_each(|(o, &v)| *o += w * v);
                        }
                    }
                }
                cur = out;
            }
            _ => {
                let mut out = vec![0.0f32; cur.len()];
                for (z, oplane) in out.chunks_exact_mut(plane).enumerate() {
                    for (t, &w) in k.iter().enumerate() {
                        let zz = clamp(z as isize + t as isize - r);
                        let iplane = &cur[zz * plane..(zz + 1) * plane];
                        oplane
                            .iter_mut()
                            .zip(iplane)
                            .for_each(|(o, &v)| *o += w * v);
                    }
                }
                cur = out;
            }
        }
    }
    cur
}

/// Normalised sampled Gaussian, radius ⌈3σ⌉.
fn kernel(s: f64) -> Vec<f32> {
    let r = (3.0 * s).ceil() as isize;
    let k: Vec<f64> = (-r..=r)
        .map(|i| (-0.5 * (i as f64 / s).powi(2)).exp())
        .collect();
    let sum: f64 = k.iter().sum();
    k.iter().map(|v| (v / sum) as f32).collect()
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

/// Three numbers in [-0.5, 0.5) from a sample index (SplitMix64): fixed, thread-independent.
/// Used for the sampling fraction (which lattice samples are kept) and the MI jitter.
pub fn hash3(n: u64) -> [f64; 3] {
    let mut z = n.wrapping_mul(3).wrapping_add(0x9E37_79B9_7F4A_7C15);
    [0, 1, 2].map(|_| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut x = z;
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_smoothing_is_the_per_voxel_dot_product_bit_for_bit() {
        // the plain definition: every output is Σ_t k[t]·x[clamp(i + t − r)], summed in tap
        // order (as `Iterator::sum`), on data with both signs and edges within the radius
        let dims = [17, 3, 2];
        let data: Vec<f32> = (0..dims.iter().product::<usize>() as u64)
            .map(|n| (hash3(n)[0] * 200.0) as f32)
            .collect();
        let sigma = 1.7;
        let k = kernel(sigma);
        let r = (k.len() / 2) as isize;
        let s = gaussian_smooth(&data, dims, [sigma, 0.0, 0.0]);
        for (row_in, row_out) in data.chunks_exact(dims[0]).zip(s.chunks_exact(dims[0])) {
            for (i, &o) in row_out.iter().enumerate() {
                let want: f32 = k
                    .iter()
                    .enumerate()
                    .map(|(t, w)| {
                        let j = (i as isize + t as isize - r).clamp(0, dims[0] as isize - 1);
                        w * row_in[j as usize]
                    })
                    .sum();
                assert_eq!(o.to_bits(), want.to_bits(), "voxel {i}");
            }
        }
    }

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
}
