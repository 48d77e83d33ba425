//! Checks of the input voxel data before any model or registration sees them.
//!
//! One policy for values no diffusion signal can take, applied once at load:
//! - a NaN or infinite voxel, or a finite one beyond [`IMPLAUSIBLE_FACTOR`] × the series'
//!   99.9th percentile of |value| (a 3e38 spike), is set to 0 — "no signal", like the space
//!   outside the field of view — and reported as one warning with the counts. Left in, one such
//!   voxel poisons every smoothed image, histogram and model fit it touches (a NaN made the
//!   mutual-information path index out of range; a +Inf volume made every fit crawl).
//! - a volume with no usable signal (every voxel non-finite, or constant, e.g. all zero) is
//!   refused: registering it is meaningless, and it degrades the model fitted to the others.
//! - a series whose non-zero voxels are mostly negative (a negative `scl_slope`) is refused:
//!   diffusion signal is a magnitude.
//!
//! The registration functions also treat non-finite voxels as 0 on their own, for library
//! callers that skip this check.

use crate::image::{Mask, Series};
use crate::{Error, Result};
use rayon::prelude::*;

/// A finite voxel whose magnitude exceeds this many times the series' 99.9th percentile of
/// |value| is treated as corrupt. Real magnitude data stay within ~10× of that percentile
/// (bright vessels, fat, CSF at b=0); 1000× leaves a wide margin.
pub const IMPLAUSIBLE_FACTOR: f64 = 1000.0;

/// What [`clean_series`] changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CleanReport {
    /// NaN or ±Inf voxels set to 0, per volume.
    pub non_finite: Vec<usize>,
    /// Finite voxels beyond the plausibility limit set to 0, per volume.
    pub implausible: Vec<usize>,
    /// The plausibility limit used (|value| above it is corrupt); `None` when the series has
    /// no non-zero finite value.
    pub limit: Option<f64>,
}

impl CleanReport {
    /// One warning line describing the cleaning, or `None` when nothing changed.
    pub fn warning(&self) -> Option<String> {
        let nf: usize = self.non_finite.iter().sum();
        let im: usize = self.implausible.iter().sum();
        if nf + im == 0 {
            return None;
        }
        let vols = |c: &[usize]| {
            let v: Vec<String> = c
                .iter()
                .enumerate()
                .filter(|(_, &n)| n > 0)
                .map(|(k, _)| k.to_string())
                .collect();
            if v.len() > 8 {
                format!("{} volumes", v.len())
            } else {
                format!(
                    "volume{} {}",
                    if v.len() > 1 { "s" } else { "" },
                    v.join(", ")
                )
            }
        };
        let mut parts = Vec::new();
        if nf > 0 {
            parts.push(format!(
                "{nf} voxel{} NaN or infinite ({})",
                if nf > 1 { "s are" } else { " is" },
                vols(&self.non_finite)
            ));
        }
        if im > 0 {
            parts.push(format!(
                "{im} voxel{} implausibly large (|value| > {:.4e}, {IMPLAUSIBLE_FACTOR} × the 99.9th percentile; {})",
                if im > 1 { "s are" } else { " is" },
                self.limit.unwrap_or(f64::NAN),
                vols(&self.implausible)
            ));
        }
        Some(format!(
            "{}; set to 0 (no signal) before estimation",
            parts.join(" and ")
        ))
    }
}

/// 99.9th percentile of |v| over the finite non-zero voxels (a deterministic subsample of
/// at most ~1M voxels), or `None` when there is none.
fn p999_abs(series: &Series) -> Option<f64> {
    let n = series.grid.len();
    let total = n * series.n_volumes;
    let step = (total / 1_000_000).max(1);
    // the same samples, gathered in parallel (the percentile does not depend on their order)
    let mut v: Vec<f32> = (0..total.div_ceil(step))
        .into_par_iter()
        .map(|s| series.get(s * step / n, s * step % n))
        .filter(|x| x.is_finite() && *x != 0.0)
        .map(|x| x.abs())
        .collect();
    if v.is_empty() {
        return None;
    }
    let k = ((v.len() - 1) as f64 * 0.999).round() as usize;
    let (_, p, _) = v.select_nth_unstable_by(k, |a, b| a.total_cmp(b));
    Some(*p as f64)
}

/// Set non-finite and implausibly large voxels to 0 (see the module doc), in place.
pub fn clean_series(series: &mut Series) -> CleanReport {
    let limit = p999_abs(series).map(|p| p * IMPLAUSIBLE_FACTOR);
    let n = series.n_volumes;
    let mut rep = CleanReport {
        non_finite: vec![0; n],
        implausible: vec![0; n],
        limit,
    };
    let bad = |x: f32| !x.is_finite() || limit.is_some_and(|l| (x as f64).abs() > l);
    // every volume read once, in parallel; written only when something must change (a
    // volume kept as integers stays so)
    let dirty: Vec<bool> = (0..n)
        .into_par_iter()
        .map(|k| series.volume(k).iter().any(|&x| bad(x)))
        .collect();
    for k in (0..n).filter(|&k| dirty[k]) {
        for x in series.volume_mut(k) {
            if !x.is_finite() {
                *x = 0.0;
                rep.non_finite[k] += 1;
            } else if limit.is_some_and(|l| (*x as f64).abs() > l) {
                *x = 0.0;
                rep.implausible[k] += 1;
            }
        }
    }
    rep
}

/// Refuse a series that holds a volume without signal or mostly negative values (after
/// [`clean_series`]). `bvals` names each volume's b-value in messages; `what` the series.
pub fn check_signal(
    series: &Series,
    report: &CleanReport,
    bvals: &[f64],
    what: &str,
) -> Result<()> {
    let b = |k: usize| bvals.get(k).map_or(String::new(), |b| format!(" (b={b})"));
    // What is checked of each volume, read once and in parallel: whether it is constant
    // (and its first value), and its negative and non-zero voxels; judged below in order.
    let seen: Vec<(bool, f32, usize, usize)> = (0..series.n_volumes)
        .into_par_iter()
        .map(|k| {
            let v = series.volume(k);
            let first = v.first().copied().unwrap_or(0.0);
            let (neg, nonzero) = v.iter().fold((0usize, 0usize), |(n, z), &x| {
                (n + (x < 0.0) as usize, z + (x != 0.0) as usize)
            });
            (v.iter().all(|&x| x == first), first, neg, nonzero)
        })
        .collect();
    let voxels = series.grid.len();
    for (k, &(constant, first, _, _)) in seen.iter().enumerate() {
        if voxels > 0 && report.non_finite.get(k) == Some(&voxels) {
            return Err(Error::input(format!(
                "{what}: volume {k}{} holds no finite value (every voxel is NaN or infinite): \
                 remove it from the series and its gradient table",
                b(k)
            )));
        }
        if constant {
            return Err(Error::input(format!(
                "{what}: volume {k}{} has no signal (every voxel is {first}): \
                 remove it from the series and its gradient table",
                b(k)
            )));
        }
    }
    let (neg, nonzero) = seen
        .iter()
        .fold((0, 0), |(a, b), &(_, _, c, d)| (a + c, b + d));
    if neg * 2 > nonzero {
        return Err(Error::input(format!(
            "{what}: {neg} of its {nonzero} non-zero voxels are negative; diffusion signal is a \
             magnitude — check the header's scl_slope/scl_inter and the data type"
        )));
    }
    Ok(())
}

/// Mean of the voxelwise mean of `volumes` inside `mask` and over the whole grid.
pub fn mask_signal(series: &Series, volumes: &[usize], mask: &Mask) -> (f64, f64) {
    let (mut inside, mut n_in, mut all) = (0.0f64, 0usize, 0.0f64);
    for &k in volumes {
        for (x, &m) in series.volume(k).iter().zip(&mask.data) {
            all += *x as f64;
            if m {
                inside += *x as f64;
                n_in += 1;
            }
        }
    }
    let n_all = (volumes.len() * series.grid.len()).max(1);
    (inside / n_in.max(1) as f64, all / n_all as f64)
}

/// Refuse a mask that covers no more signal than the image as a whole: a brain mask holds
/// the brightest tissue, so its mean must exceed the mean over the whole field of view (air
/// included). A mask in the air, or from another subject or orientation, fails this.
pub fn check_mask_signal(
    series: &Series,
    volumes: &[usize],
    mask: &Mask,
    what: &str,
) -> Result<()> {
    let (inside, all) = mask_signal(series, volumes, mask);
    if inside <= all {
        return Err(Error::input(format!(
            "the mask {what} covers no signal: the mean intensity inside it ({inside:.4}) is not above \
             the mean over the whole image ({all:.4}); give the brain mask of this series \
             (same subject and grid), or leave --mask out to compute one"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Grid;
    use nalgebra::Matrix4;

    fn series(n: usize, f: impl Fn(usize, usize) -> f32) -> Series {
        let grid = Grid::new([10, 10, 10], Matrix4::identity());
        let data = (0..n)
            .flat_map(|k| (0..1000).map(move |i| (k, i)))
            .map(|(k, i)| f(k, i))
            .collect();
        Series::new(grid, n, data)
    }

    #[test]
    fn nan_inf_and_spikes_are_zeroed_and_counted() {
        let mut s = series(3, |_, i| 100.0 + (i % 17) as f32);
        s.volume_mut(1)[5] = f32::NAN;
        s.volume_mut(2)[7] = f32::INFINITY;
        s.volume_mut(2)[8] = 3e38;
        let r = clean_series(&mut s);
        assert_eq!(r.non_finite, vec![0, 1, 1]);
        assert_eq!(r.implausible, vec![0, 0, 1]);
        // the limit is 1000 × the 99.9th percentile of 100..116
        assert!((r.limit.unwrap() - 116_000.0).abs() < 1e-9);
        assert!(s.samples().all(|x| x.is_finite() && x < 117.0));
        assert_eq!(s.volume(1)[5], 0.0);
        let w = r.warning().unwrap();
        assert!(
            w.contains("2 voxels are NaN or infinite (volumes 1, 2)"),
            "{w}"
        );
        assert!(w.contains("1 voxel is implausibly large"), "{w}");
        check_signal(&s, &r, &[0.0, 1000.0, 1000.0], "s").unwrap();
    }

    #[test]
    fn clean_data_is_untouched() {
        let mut s = series(2, |k, i| (k * 1000 + i) as f32);
        let before: Vec<f32> = s.samples().collect();
        let r = clean_series(&mut s);
        assert_eq!(s.samples().collect::<Vec<_>>(), before);
        assert!(r.warning().is_none());
    }

    #[test]
    fn empty_non_finite_and_negative_series_are_refused() {
        let mut s = series(2, |k, i| if k == 1 { f32::INFINITY } else { i as f32 });
        let r = clean_series(&mut s);
        let e = check_signal(&s, &r, &[0.0, 1000.0], "s").unwrap_err();
        assert!(
            e.to_string()
                .contains("volume 1 (b=1000) holds no finite value"),
            "{e}"
        );

        let mut s = series(2, |k, i| if k == 0 { 0.0 } else { i as f32 });
        let r = clean_series(&mut s);
        let e = check_signal(&s, &r, &[0.0, 1000.0], "s").unwrap_err();
        assert!(
            e.to_string().contains("volume 0 (b=0) has no signal"),
            "{e}"
        );

        let mut s = series(2, |_, i| -(i as f32) - 1.0);
        let r = clean_series(&mut s);
        let e = check_signal(&s, &r, &[0.0, 1000.0], "s").unwrap_err();
        assert!(
            e.to_string()
                .contains("2000 of its 2000 non-zero voxels are negative"),
            "{e}"
        );
    }

    #[test]
    fn a_mask_in_the_air_is_refused() {
        // bright cube in the middle, dark elsewhere
        let s = series(1, |_, i| {
            let (x, y, z) = (i % 10, (i / 10) % 10, i / 100);
            if (3..7).contains(&x) && (3..7).contains(&y) && (3..7).contains(&z) {
                100.0
            } else {
                1.0
            }
        });
        let grid = s.grid.clone();
        let brain = Mask {
            grid: grid.clone(),
            data: (0..1000).map(|i| s.get(0, i) > 50.0).collect(),
        };
        let air = Mask {
            grid,
            data: (0..1000).map(|i| s.get(0, i) < 50.0).collect(),
        };
        check_mask_signal(&s, &[0], &brain, "m").unwrap();
        let e = check_mask_signal(&s, &[0], &air, "m").unwrap_err();
        assert!(e.to_string().contains("covers no signal"), "{e}");
    }
}
