//! Automatic brain mask from the b=0 reference, in the spirit of DIPY's `median_otsu`.
//!
//! Steps: (1) a 3-D median filter (box window, reflected borders, repeated `numpass` times)
//! suppresses noise and thin bright structures such as the scalp; (2) an Otsu threshold on the
//! filtered volume separates tissue from background; (3) the largest 6-connected component is
//! kept (drops the scalp and other islands); (4) holes — background not connected to the
//! volume border — are filled (ventricles with dark b=0 are brain, too).
//!
//! DIPY gives the filter radius in voxels and tuned its defaults (radius 4, 4 passes) for
//! ~2 mm data. A radius in voxels means a different physical window at every resolution: at
//! 4 mm, DIPY's defaults erode the brain (Dice 0.85 on the mini phantom). Here the radius is
//! given in millimetres and converted per axis, so anisotropic voxels get the same physical
//! window along every axis. Measured on the shared phantoms (see `benches/mask.rs`).
//!
//! Pure numerics: no file I/O. Also morphological helpers used elsewhere ([`dilate`] for a
//! slightly generous registration mask, [`erode`]) and [`dice`] for tests.

use crate::image::{Mask, Volume};
use rayon::prelude::*;

/// Voxel connectivity for component labelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connectivity {
    /// Faces only (scipy's default structure).
    Six,
    /// Faces, edges and corners.
    TwentySix,
}

/// Parameters of [`brain_mask_with`].
#[derive(Clone, Debug)]
pub struct MaskParams {
    /// Half-width of the median window in mm; per axis `round(radius_mm / voxel size)` voxels.
    pub median_radius_mm: f64,
    /// Number of median-filter passes.
    pub numpass: usize,
    /// Histogram bins for the Otsu threshold (DIPY and scikit-image use 256).
    pub nbins: usize,
    /// Connectivity used to find the largest component.
    pub connectivity: Connectivity,
}

impl Default for MaskParams {
    fn default() -> Self {
        MaskParams {
            median_radius_mm: 5.0,
            numpass: 1,
            nbins: 256,
            connectivity: Connectivity::Six,
        }
    }
}

/// Brain mask of a b=0 reference volume with the default [`MaskParams`].
///
/// The result may be empty (e.g. a constant volume); callers should treat an empty mask as
/// an input problem ("pass --mask").
pub fn brain_mask(b0: &Volume) -> Mask {
    brain_mask_with(b0, &MaskParams::default())
}

/// Brain mask of a b=0 reference volume: median filter, Otsu, largest component, hole filling.
pub fn brain_mask_with(b0: &Volume, p: &MaskParams) -> Mask {
    let grid = &b0.grid;
    let vs = grid.voxel_sizes();
    let radius = [0, 1, 2].map(|a| {
        if vs[a] > 0.0 && vs[a].is_finite() {
            (p.median_radius_mm / vs[a]).round().max(0.0) as usize
        } else {
            0
        }
    });
    // Non-finite samples (float inputs) count as background.
    let mut data: Vec<f32> = b0
        .data
        .iter()
        .map(|&v| if v.is_finite() { v } else { 0.0 })
        .collect();
    for _ in 0..p.numpass {
        data = median_filter(&data, grid.dims, radius);
    }
    let empty = Mask {
        grid: grid.clone(),
        data: vec![false; grid.len()],
    };
    let Some(thr) = otsu_threshold(&data, p.nbins) else {
        return empty;
    };
    let raw = Mask {
        grid: grid.clone(),
        data: data.iter().map(|&v| v > thr).collect(),
    };
    let largest = largest_component(&raw, p.connectivity);
    fill_holes(&largest)
}

/// Reflect an out-of-range index back into `0..n` the way scipy's `mode='reflect'` does
/// (`d c b a | a b c d | d c b a`), for any offset.
#[inline]
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    if n == 1 {
        return 0;
    }
    let period = 2 * n;
    let mut m = i.rem_euclid(period);
    if m >= n {
        m = period - 1 - m;
    }
    m as usize
}

/// 3-D median filter with a (2r+1)-voxel box window per axis and reflected borders
/// (scipy.ndimage.median_filter's default mode). Window sizes are odd, so the median is the
/// middle sample. Parallel over z-slices; every voxel's result is independent of the thread
/// count.
pub fn median_filter(data: &[f32], dims: [usize; 3], radius: [usize; 3]) -> Vec<f32> {
    let [nx, ny, nz] = dims;
    assert_eq!(data.len(), nx * ny * nz);
    if radius == [0, 0, 0] {
        return data.to_vec();
    }
    let [rx, ry, rz] = radius.map(|r| r as isize);
    let win = ((2 * rx + 1) * (2 * ry + 1) * (2 * rz + 1)) as usize;
    // Precomputed reflected indices per axis: idx_a[c][o] for centre c and offset o.
    let tab = |n: usize, r: isize| -> Vec<Vec<usize>> {
        (0..n)
            .map(|c| (-r..=r).map(|o| reflect(c as isize + o, n)).collect())
            .collect()
    };
    let (tx, ty, tz) = (tab(nx, rx), tab(ny, ry), tab(nz, rz));
    // Selected as integer keys in `f32::total_cmp`'s order: the same element is the median,
    // and a plain integer comparison is cheaper than a float total order (2.5 mm bench
    // series, 125-voxel window: the filter took half a CPU second).
    let keys: Vec<u32> = data.iter().map(|&v| total_order_key(v)).collect();
    let mut out = vec![0f32; data.len()];
    out.par_chunks_mut(nx * ny)
        .enumerate()
        .for_each(|(k, slice)| {
            let mut buf: Vec<u32> = Vec::with_capacity(win);
            for j in 0..ny {
                for i in 0..nx {
                    buf.clear();
                    for &kk in &tz[k] {
                        for &jj in &ty[j] {
                            let row = nx * (jj + ny * kk);
                            for &ii in &tx[i] {
                                buf.push(keys[row + ii]);
                            }
                        }
                    }
                    let mid = win / 2;
                    let (_, m, _) = buf.select_nth_unstable(mid);
                    slice[i + nx * j] = from_total_order_key(*m);
                }
            }
        });
    out
}

/// An unsigned key whose integer order is `f32::total_cmp`'s order (sign bit flipped for
/// positives, all bits flipped for negatives).
#[inline]
fn total_order_key(v: f32) -> u32 {
    let b = v.to_bits();
    if b >> 31 == 1 {
        !b
    } else {
        b | 0x8000_0000
    }
}

#[inline]
fn from_total_order_key(k: u32) -> f32 {
    f32::from_bits(if k >> 31 == 1 { k & 0x7fff_ffff } else { !k })
}

/// Otsu's threshold over a histogram of `nbins` equal bins spanning [min, max] of the finite
/// values: the bin centre that maximises the between-class variance. Voxels strictly above it
/// are foreground (scikit-image's convention). `None` when there are no finite values or
/// they are all equal.
pub fn otsu_threshold(values: &[f32], nbins: usize) -> Option<f32> {
    let nbins = nbins.max(2);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &v in values.iter().filter(|v| v.is_finite()) {
        lo = lo.min(v as f64);
        hi = hi.max(v as f64);
    }
    if hi <= lo {
        return None;
    }
    let width = (hi - lo) / nbins as f64;
    let mut hist = vec![0f64; nbins];
    for &v in values.iter().filter(|v| v.is_finite()) {
        let b = (((v as f64 - lo) / width) as usize).min(nbins - 1);
        hist[b] += 1.0;
    }
    let centre = |b: usize| lo + (b as f64 + 0.5) * width;
    let total: f64 = hist.iter().sum();
    let total_sum: f64 = hist.iter().enumerate().map(|(b, &h)| h * centre(b)).sum();
    let (mut w1, mut s1) = (0.0, 0.0);
    let (mut best, mut best_b) = (f64::NEG_INFINITY, 0);
    for (b, &h) in hist.iter().enumerate().take(nbins - 1) {
        w1 += h;
        s1 += h * centre(b);
        let w2 = total - w1;
        if w1 == 0.0 || w2 == 0.0 {
            continue;
        }
        let d = s1 / w1 - (total_sum - s1) / w2;
        let var = w1 * w2 * d * d;
        if var > best {
            best = var;
            best_b = b;
        }
    }
    Some(centre(best_b) as f32)
}

/// Neighbour offsets for a connectivity.
fn offsets(conn: Connectivity) -> Vec<[isize; 3]> {
    let mut v = Vec::new();
    for dz in -1..=1isize {
        for dy in -1..=1isize {
            for dx in -1..=1isize {
                let n = dx.abs() + dy.abs() + dz.abs();
                if n == 0 || (conn == Connectivity::Six && n > 1) {
                    continue;
                }
                v.push([dx, dy, dz]);
            }
        }
    }
    v
}

/// Flood-fill labelling of `want`-valued voxels; returns per-voxel labels (0 = not `want`)
/// and component sizes (index = label − 1). Labels are assigned in scan order, so the result
/// is deterministic.
fn label(
    data: &[bool],
    dims: [usize; 3],
    want: bool,
    conn: Connectivity,
) -> (Vec<u32>, Vec<usize>) {
    let [nx, ny, nz] = dims;
    let offs = offsets(conn);
    let mut labels = vec![0u32; data.len()];
    let mut sizes = Vec::new();
    let mut stack = Vec::new();
    for start in 0..data.len() {
        if data[start] != want || labels[start] != 0 {
            continue;
        }
        let lab = sizes.len() as u32 + 1;
        labels[start] = lab;
        stack.push(start);
        let mut size = 0;
        while let Some(idx) = stack.pop() {
            size += 1;
            let i = (idx % nx) as isize;
            let j = ((idx / nx) % ny) as isize;
            let k = (idx / (nx * ny)) as isize;
            for o in &offs {
                let (a, b, c) = (i + o[0], j + o[1], k + o[2]);
                if a < 0
                    || b < 0
                    || c < 0
                    || a >= nx as isize
                    || b >= ny as isize
                    || c >= nz as isize
                {
                    continue;
                }
                let n = a as usize + nx * (b as usize + ny * c as usize);
                if data[n] == want && labels[n] == 0 {
                    labels[n] = lab;
                    stack.push(n);
                }
            }
        }
        sizes.push(size);
    }
    (labels, sizes)
}

/// The largest connected component of a mask (ties: the one found first in scan order).
pub fn largest_component(m: &Mask, conn: Connectivity) -> Mask {
    let (labels, sizes) = label(&m.data, m.grid.dims, true, conn);
    let mut out = Mask {
        grid: m.grid.clone(),
        data: vec![false; m.data.len()],
    };
    if sizes.is_empty() {
        return out;
    }
    let mut best = 0;
    for (l, &s) in sizes.iter().enumerate() {
        if s > sizes[best] {
            best = l;
        }
    }
    let want = best as u32 + 1;
    for (o, &l) in out.data.iter_mut().zip(&labels) {
        *o = l == want;
    }
    out
}

/// Fill holes: background voxels not 6-connected to the volume border become foreground
/// (scipy.ndimage.binary_fill_holes with its default structure).
pub fn fill_holes(m: &Mask) -> Mask {
    let [nx, ny, nz] = m.grid.dims;
    let (labels, _) = label(&m.data, m.grid.dims, false, Connectivity::Six);
    let mut outside = std::collections::BTreeSet::new();
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let border =
                    i == 0 || j == 0 || k == 0 || i == nx - 1 || j == ny - 1 || k == nz - 1;
                if border {
                    let l = labels[m.grid.index(i, j, k)];
                    if l != 0 {
                        outside.insert(l);
                    }
                }
            }
        }
    }
    Mask {
        grid: m.grid.clone(),
        data: labels
            .iter()
            .map(|&l| l == 0 || !outside.contains(&l))
            .collect(),
    }
}

/// One step of 6-connected morphology: dilation sets a voxel when it or any face neighbour is
/// set; erosion keeps a voxel only when it and all six face neighbours are set. Voxels outside
/// the volume are background (scipy's `border_value=0`), so erosion also shrinks masks that
/// touch the volume edge.
fn morph_step(m: &[bool], dims: [usize; 3], dilate: bool) -> Vec<bool> {
    let [nx, ny, nz] = dims;
    let mut out = vec![false; m.len()];
    out.par_chunks_mut(nx * ny)
        .enumerate()
        .for_each(|(k, slice)| {
            for j in 0..ny {
                for i in 0..nx {
                    let idx = i + nx * (j + ny * k);
                    let nb = [
                        (i > 0).then(|| idx - 1),
                        (i + 1 < nx).then(|| idx + 1),
                        (j > 0).then(|| idx - nx),
                        (j + 1 < ny).then(|| idx + nx),
                        (k > 0).then(|| idx - nx * ny),
                        (k + 1 < nz).then(|| idx + nx * ny),
                    ];
                    slice[i + nx * j] = if dilate {
                        m[idx] || nb.iter().any(|n| n.is_some_and(|n| m[n]))
                    } else {
                        m[idx] && nb.iter().all(|n| n.is_some_and(|n| m[n]))
                    };
                }
            }
        });
    out
}

/// Binary dilation with the 6-connected cross, repeated `iterations` times (each step grows
/// the mask by one voxel along the axes). Registration uses a slightly dilated fixed mask so
/// that the brain edge — where most of the alignment information is — stays inside it.
pub fn dilate(m: &Mask, iterations: usize) -> Mask {
    Mask {
        grid: m.grid.clone(),
        data: dilate_voxels(&m.data, m.grid.dims, iterations),
    }
}

/// [`dilate`] on a bare voxel array of size `dims` (x fastest), for callers that hold a mask
/// without its grid (the registration driver's sample mask).
pub fn dilate_voxels(m: &[bool], dims: [usize; 3], iterations: usize) -> Vec<bool> {
    let mut d = m.to_vec();
    for _ in 0..iterations {
        d = morph_step(&d, dims, true);
    }
    d
}

/// Binary erosion with the 6-connected cross, repeated `iterations` times; voxels outside
/// the volume count as background.
pub fn erode(m: &Mask, iterations: usize) -> Mask {
    let mut d = m.data.clone();
    for _ in 0..iterations {
        d = morph_step(&d, m.grid.dims, false);
    }
    Mask {
        grid: m.grid.clone(),
        data: d,
    }
}

/// Dice overlap 2|A∩B| / (|A|+|B|) of two masks of equal length (1 when both are empty).
pub fn dice(a: &Mask, b: &Mask) -> f64 {
    assert_eq!(a.data.len(), b.data.len());
    let (mut inter, mut na, mut nb) = (0usize, 0usize, 0usize);
    for (&x, &y) in a.data.iter().zip(&b.data) {
        inter += (x && y) as usize;
        na += x as usize;
        nb += y as usize;
    }
    if na + nb == 0 {
        1.0
    } else {
        2.0 * inter as f64 / (na + nb) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_order_keys_sort_as_total_cmp_and_round_trip() {
        let vals = [
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
            1.0,
            -1.0,
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            1e-45, // subnormal
            -1e-45,
            3.25,
            -1234.5,
        ];
        for &a in &vals {
            assert_eq!(
                from_total_order_key(total_order_key(a)).to_bits(),
                a.to_bits()
            );
            for &b in &vals {
                assert_eq!(
                    total_order_key(a).cmp(&total_order_key(b)),
                    a.total_cmp(&b),
                    "{a} vs {b}"
                );
            }
        }
    }
}
