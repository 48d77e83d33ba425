//! Small statistics shared by every module, with one NaN policy.
//!
//! **NaN policy:** NaN values are missing measurements and are ignored (numpy's `nanmedian`);
//! a sample with no value left has no median (NaN). ±∞ are ordinary values (an infinite
//! sample stays visible instead of being silently dropped).

/// The median of `v` (numpy semantics: the mean of the two middle values for an even count),
/// ignoring NaN; NaN when `v` holds no other value. Reorders `v`.
pub fn median(v: &mut [f64]) -> f64 {
    // NaN sorts last under total_cmp (positive NaN; negative NaN first): count and skip both.
    v.sort_unstable_by(|a, b| a.total_cmp(b));
    let first = v.iter().position(|x| !x.is_nan()).unwrap_or(v.len());
    let last = v.iter().rposition(|x| !x.is_nan()).map_or(first, |i| i + 1);
    let s = &v[first..last.max(first)];
    let n = s.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => s[n / 2],
        _ => 0.5 * (s[n / 2 - 1] + s[n / 2]),
    }
}

/// The [`median`] of every voxel over `samples`: `get(sample, voxel)` reads one value.
/// Voxels are processed in parallel, in chunks (the result does not depend on the chunking).
pub fn voxelwise_median(
    n_voxels: usize,
    samples: &[usize],
    get: impl Fn(usize, usize) -> f64 + Sync,
) -> Vec<f64> {
    use rayon::prelude::*;
    const CHUNK: usize = 4096;
    let mut out = vec![0.0f64; n_voxels];
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut buf = Vec::with_capacity(samples.len());
            for (i, o) in chunk.iter_mut().enumerate() {
                let l = c * CHUNK + i;
                buf.clear();
                buf.extend(samples.iter().map(|&k| get(k, l)));
                *o = median(&mut buf);
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn follows_numpy_nanmedian() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut [f64::NAN, 4.0, -f64::NAN, 1.0, 3.0]), 3.0);
        assert_eq!(median(&mut [f64::INFINITY, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [f64::INFINITY, 1.0]), f64::INFINITY);
        assert!(median(&mut []).is_nan());
        assert!(median(&mut [f64::NAN, f64::NAN]).is_nan());
    }
}
