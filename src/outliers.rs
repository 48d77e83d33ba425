//! Outlier slices: signal dropouts found by comparing every acquired slice with the model's
//! prediction (FSL eddy's `--repol` criterion, made robust).
//!
//! Subject motion during the diffusion-encoding gradients wipes out the signal of whole
//! slices. For every diffusion-weighted volume the estimate loop already has a prediction from
//! all the other volumes; brought into the acquired volume's own space (so that slices are
//! the slices the scanner acquired), the mean over a slice's brain voxels of the observed
//! signal is compared with that of the prediction: r = observed / predicted − 1. A dropout
//! makes r strongly negative. Model misfit makes r vary too, differently per slice (partial
//! volume at the brain's top and bottom) and per shell, so each (shell, slice) is standardised
//! across the shell's volumes with the median and the MAD (robust: a few dropouts must not
//! inflate the spread that judges them; eddy uses mean and standard deviation). The score is
//! z = (r − median) / (1.4826 · MAD); slices with z < −threshold that also lost at least 10 %
//! beyond the median (r − median < −0.1, [`MIN_SIGNAL_LOSS`]) are outliers.
//!
//! Two measured refinements (4 mm phantom, 32 DW volumes, 10 dropout slices, DTI):
//! - the slice's r minus the mean r of its two neighbouring slices is what is standardised:
//!   model misfit varies smoothly across slices, a dropout hits single slices (interleaved
//!   acquisition puts neighbours at different times). Largest false score −3.7 with, −4.6
//!   without (2 false positives at −4);
//! - the estimate loop refits the model with the first round's outliers replaced and judges
//!   again (see `estimate::outlier_stage`): dropouts of other volumes distort every
//!   prediction of their slices, which hid a 13 % slice at −4.4 and faked others at −7.
//!
//! Slices with little brain are not judged (eddy: 250 voxels at its usual ~2 mm; here the
//! same area, 1000 mm², in voxels of the series). A volume with most of its judged slices out,
//! or with (almost) no signal where the prediction has some, is broken as a whole: all its
//! judged slices are outliers.

use crate::stats;

/// Settings of the detection.
#[derive(Clone, Debug, PartialEq)]
pub struct OutlierConfig {
    /// Robust standard deviations below the shell's typical slice (a positive number; eddy's
    /// `--ol_nstd` 4).
    pub threshold: f64,
    /// Voxel axis along which slices were acquired (0, 1, 2).
    pub slice_axis: usize,
    /// Fewest brain voxels for a slice to be judged.
    pub min_voxels: usize,
}

/// Brain area of a slice below which it is not judged: eddy's 250 voxels at 2 mm.
pub const MIN_SLICE_AREA_MM2: f64 = 1000.0;

/// Default threshold. eddy's `--ol_nstd` is 4, but on clean 4 mm phantoms with 12–16 volumes
/// per shell clean slices reached −4.3 (a median/MAD over so few volumes has heavier tails),
/// while dropouts keeping ≤ 40 % of their signal scored −15 to −135.
pub const DEFAULT_THRESHOLD: f64 = 6.0;

/// Scale floor, as a fraction of the shell's median slice MAD: a slice whose few judged
/// volumes happen to agree closely must not turn tiny differences into large scores
/// (measured on the 4 mm sample: 0.5 → clean slices down to −4.3, 1.0 → −3.5).
const SCALE_FLOOR: f64 = 1.0;

/// Score a slice by its difference from the mean of its two neighbours (see [`detect`]).
const NEIGHBOUR_CONTRAST: bool = true;

/// Least signal a slice must have lost, beyond its shell's typical slice (in the same relative
/// units as the score's numerator, r − median), to be an outlier whatever its score. Slices at
/// the brain's top and bottom tip are judged only in the volumes whose motion brings enough
/// brain into them, and there r moves by percents with a few hundredths of a millimetre of
/// residual misregistration (the brain fraction changes by ~100 % over one slice): on
/// simulated seed 11 (2.5 mm, computed mask) such a slice scored −7.6 and −9.4 (DKI, DTI)
/// with a loss of a few per cent, while the true dropouts (≤ 40 % of the signal left) lost
/// 60–95 % and scored −70 to −320. A slice that lost under 10 % is not worth replacing by a
/// prediction that is itself good to a few per cent.
const MIN_SIGNAL_LOSS: f64 = 0.1;

/// A volume whose observed brain signal is below this fraction of the predicted one is broken.
const BROKEN_SIGNAL: f64 = 0.1;

impl OutlierConfig {
    /// Defaults for a series: `min_voxels` from [`MIN_SLICE_AREA_MM2`] and the in-plane voxel
    /// size (voxel sizes in mm along the three axes).
    pub fn for_grid(voxel_sizes: [f64; 3], slice_axis: usize) -> Self {
        let area: f64 = (0..3)
            .filter(|&a| a != slice_axis)
            .map(|a| voxel_sizes[a])
            .product();
        OutlierConfig {
            threshold: DEFAULT_THRESHOLD,
            slice_axis,
            min_voxels: (MIN_SLICE_AREA_MM2 / area.max(1e-6)).ceil().max(1.0) as usize,
        }
    }
}

/// Observed and predicted slice sums over brain voxels of one volume.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SliceSums {
    pub observed: Vec<f64>,
    pub predicted: Vec<f64>,
    pub voxels: Vec<usize>,
}

impl SliceSums {
    fn zeros(slices: usize) -> SliceSums {
        SliceSums {
            observed: vec![0.0; slices],
            predicted: vec![0.0; slices],
            voxels: vec![0; slices],
        }
    }

    /// One voxel of slice `sl`.
    #[inline]
    fn add(&mut self, sl: usize, observed: f32, predicted: f32) {
        self.observed[sl] += observed as f64;
        self.predicted[sl] += predicted as f64;
        self.voxels[sl] += 1;
    }
}

/// Slice sums of `observed` and `predicted` over `mask` (all on one grid of `dims`, x fastest).
pub fn slice_sums(
    observed: &[f32],
    predicted: &[f32],
    mask: &[bool],
    dims: [usize; 3],
    axis: usize,
) -> SliceSums {
    let mut s = SliceSums::zeros(dims[axis]);
    let mut idx = 0;
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                if mask[idx] {
                    s.add([i, j, k][axis], observed[idx], predicted[idx]);
                }
                idx += 1;
            }
        }
    }
    s
}

/// [`slice_sums`] with the mask given as its voxels `at` (ascending linear indices) and
/// `observed`, `predicted` at those voxels only: the same sums, added in the same order.
pub fn slice_sums_at(
    observed: &[f32],
    predicted: &[f32],
    at: &[usize],
    dims: [usize; 3],
    axis: usize,
) -> SliceSums {
    let mut s = SliceSums::zeros(dims[axis]);
    for ((&l, &o), &p) in at.iter().zip(observed).zip(predicted) {
        let sl = [
            l % dims[0],
            (l / dims[0]) % dims[1],
            l / (dims[0] * dims[1]),
        ][axis];
        s.add(sl, o, p);
    }
    s
}

/// One outlier slice (a row of outliers.tsv).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct OutlierRow {
    /// 0-based 4-D volume index.
    pub volume: usize,
    /// 0-based voxel slice index along the slice axis.
    pub slice: usize,
    pub bvalue: f64,
    /// Robust z-score (negative: signal below the prediction).
    pub score: f64,
    /// Whether the slice was replaced by its prediction in the corrected series.
    pub replaced: bool,
}

/// Everything the detection found: outlier rows plus the full volume × slice score matrix
/// (what eddy writes as `.eddy_outlier_n_stdev_map`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OutlierTable {
    pub slice_axis: usize,
    pub n_slices: usize,
    pub threshold: f64,
    /// Outlier slices, by volume then slice.
    pub rows: Vec<OutlierRow>,
    /// `scores[volume][slice]`: z-score, 0 where not judged (b=0 volumes, slices with little
    /// brain).
    pub scores: Vec<Vec<f64>>,
    /// Volumes judged broken as a whole.
    pub broken_volumes: Vec<usize>,
}

impl OutlierTable {
    /// The outlier slices of `volume`.
    pub fn slices_of(&self, volume: usize) -> Vec<usize> {
        self.rows
            .iter()
            .filter(|r| r.volume == volume)
            .map(|r| r.slice)
            .collect()
    }

    /// Whether (volume, slice) is an outlier (eddy's `.eddy_outlier_map` entry).
    pub fn is_outlier(&self, volume: usize, slice: usize) -> bool {
        self.rows
            .iter()
            .any(|r| r.volume == volume && r.slice == slice)
    }

    /// outliers.tsv: header `volume slice bvalue score replaced`, tab-separated, 0-based.
    pub fn tsv(&self) -> String {
        let mut s = String::from("volume\tslice\tbvalue\tscore\treplaced\n");
        for r in &self.rows {
            s += &format!(
                "{}\t{}\t{}\t{:.3}\t{}\n",
                r.volume,
                r.slice,
                r.bvalue.round() as i64,
                r.score + 0.0,
                u8::from(r.replaced)
            );
        }
        s
    }
}

/// Detect outlier slices. `sums[v]` are the slice sums of volume v (None: not judged, e.g.
/// b=0 volumes); `shells` groups volume indices whose slices are standardised together;
/// `bvals` gives each volume's b-value for the table.
pub fn detect(
    sums: &[Option<SliceSums>],
    shells: &[Vec<usize>],
    bvals: &[f64],
    cfg: &OutlierConfig,
) -> OutlierTable {
    let n_slices = sums
        .iter()
        .flatten()
        .map(|s| s.voxels.len())
        .max()
        .unwrap_or(0);
    let mut scores = vec![vec![0.0; n_slices]; sums.len()];
    let mut flagged = vec![Vec::<(usize, f64)>::new(); sums.len()];
    let mut broken = Vec::new();
    let judged = |s: &SliceSums, sl: usize| s.voxels[sl] >= cfg.min_voxels && s.predicted[sl] > 0.0;
    // r per (volume, slice): the relative difference of the slice mean from the prediction
    let ratio = |v: usize, sl: usize| -> Option<f64> {
        let s = sums[v].as_ref()?;
        (sl < s.voxels.len() && judged(s, sl)).then(|| s.observed[sl] / s.predicted[sl] - 1.0)
    };
    // ... minus the mean of its neighbours' (when judged): the model's misfit varies smoothly
    // across slices, while a dropout hits single slices (interleaved acquisition puts
    // neighbouring slices at different times). See the module doc for what this bought.
    let contrast = |v: usize, sl: usize| -> Option<f64> {
        let r = ratio(v, sl)?;
        if !NEIGHBOUR_CONTRAST {
            return Some(r);
        }
        let nb: Vec<f64> = [sl.checked_sub(1), Some(sl + 1)]
            .into_iter()
            .flatten()
            .filter_map(|n| ratio(v, n))
            .collect();
        if nb.is_empty() {
            Some(r)
        } else {
            Some(r - nb.iter().sum::<f64>() / nb.len() as f64)
        }
    };
    for shell in shells {
        let ratio = contrast;
        let mut centre = vec![0.0; n_slices];
        let mut scale = vec![0.0; n_slices];
        // (crate::stats::median: a slice judged in no volume has no centre, NaN, and is
        // never scored; only judged slices, with finite ratios, are)
        for sl in 0..n_slices {
            let mut r: Vec<f64> = shell.iter().filter_map(|&v| ratio(v, sl)).collect();
            let m = stats::median(&mut r);
            let mut dev: Vec<f64> = r.iter().map(|x| (x - m).abs()).collect();
            centre[sl] = m;
            scale[sl] = 1.4826 * stats::median(&mut dev);
        }
        let mut positive: Vec<f64> = scale.iter().copied().filter(|&s| s > 0.0).collect();
        // no positive scale: NaN, and `max` below keeps the slice's own scale (0)
        let floor = SCALE_FLOOR * stats::median(&mut positive);
        for &v in shell {
            let Some(s) = sums[v].as_ref() else { continue };
            let mut n_judged = 0;
            for sl in 0..n_slices.min(s.voxels.len()) {
                let Some(r) = ratio(v, sl) else { continue };
                n_judged += 1;
                let sd = scale[sl].max(floor);
                let z = if sd > 0.0 { (r - centre[sl]) / sd } else { 0.0 };
                scores[v][sl] = z;
                if z < -cfg.threshold && r - centre[sl] < -MIN_SIGNAL_LOSS {
                    flagged[v].push((sl, z));
                }
            }
            let (obs, pred): (f64, f64) = (s.observed.iter().sum(), s.predicted.iter().sum());
            let dead = pred > 0.0 && obs < BROKEN_SIGNAL * pred;
            if n_judged > 0 && (dead || 2 * flagged[v].len() > n_judged) {
                broken.push(v);
                flagged[v] = (0..n_slices.min(s.voxels.len()))
                    .filter(|&sl| judged(s, sl))
                    .map(|sl| (sl, scores[v][sl]))
                    .collect();
            }
        }
    }
    broken.sort_unstable();
    let rows = flagged
        .iter()
        .enumerate()
        .flat_map(|(v, f)| {
            f.iter().map(move |&(slice, score)| OutlierRow {
                volume: v,
                slice,
                bvalue: bvals[v],
                score,
                replaced: false,
            })
        })
        .collect();
    OutlierTable {
        slice_axis: cfg.slice_axis,
        n_slices,
        threshold: cfg.threshold,
        rows,
        scores,
        broken_volumes: broken,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy shell: 12 volumes × 6 slices of 100 voxels; model misfit up to ±5 %, smooth across
    /// slices and different per volume, plus ±0.4 % slice noise; volume 3 loses 70 % of slice
    /// 2, volume 7 is all zero.
    fn toy() -> Vec<Option<SliceSums>> {
        (0..12)
            .map(|v| {
                let mut s = SliceSums {
                    observed: vec![0.0; 6],
                    predicted: vec![0.0; 6],
                    voxels: vec![100; 6],
                };
                for sl in 0..6 {
                    let hash = ((v * 31 + sl * 17) as u64 * 2_654_435_761) % 1000;
                    let noise = 0.004 * (hash as f64 / 500.0 - 1.0);
                    let misfit = 0.05 * (v as f64 + 0.3 * sl as f64).sin() + noise;
                    s.predicted[sl] = 100.0 * 500.0;
                    s.observed[sl] = s.predicted[sl] * (1.0 + misfit);
                }
                if v == 3 {
                    s.observed[2] *= 0.3;
                }
                if v == 7 {
                    s.observed = vec![0.0; 6];
                }
                s.voxels[5] = 10; // too little brain to judge
                Some(s)
            })
            .collect()
    }

    #[test]
    fn finds_the_dropout_and_the_broken_volume() {
        let cfg = OutlierConfig {
            threshold: 4.0,
            slice_axis: 2,
            min_voxels: 50,
        };
        let mut sums = toy();
        sums.push(None); // a b=0 volume
        let shell: Vec<usize> = (0..12).collect();
        let mut b = vec![1000.0; 12];
        b.push(0.0);
        let t = detect(&sums, &[shell], &b, &cfg);
        assert_eq!(t.broken_volumes, vec![7]);
        assert_eq!(t.slices_of(3), vec![2]);
        assert_eq!(t.slices_of(7), vec![0, 1, 2, 3, 4]);
        assert_eq!(t.rows.len(), 6);
        // the score of the dropout: r ≈ -0.7 against a spread of about half a per cent
        assert!(t.scores[3][2] < -20.0, "{}", t.scores[3][2]);
        assert_eq!(t.scores[3][5], 0.0); // not judged
        assert_eq!(t.scores[12], vec![0.0; 6]);
        assert!(t.is_outlier(3, 2) && !t.is_outlier(3, 1));
        let tsv = t.tsv();
        assert!(tsv.starts_with("volume\tslice\tbvalue\tscore\treplaced\n3\t2\t1000\t-"));
        assert_eq!(tsv.lines().count(), 7);
    }

    #[test]
    fn clean_data_give_no_outliers() {
        let mut sums = toy();
        sums[3] = sums[2].clone();
        sums[7] = sums[6].clone();
        let cfg = OutlierConfig::for_grid([2.0, 2.0, 2.0], 2);
        assert_eq!(cfg.min_voxels, 250);
        let cfg = OutlierConfig {
            min_voxels: 50,
            ..cfg
        };
        let t = detect(&sums, &[(0..12).collect()], &[1000.0; 12], &cfg);
        assert!(t.rows.is_empty(), "{:?}", t.rows);
        assert!(t.scores.iter().flatten().all(|z| z.abs() < 4.0));
    }

    /// A slice far outside its spread in units of the spread but with a small loss (an edge
    /// slice whose few volumes agree closely) is not an outlier; the same slice losing half
    /// its signal is.
    #[test]
    fn a_small_loss_is_not_an_outlier_whatever_its_score() {
        let cfg = OutlierConfig {
            threshold: 4.0,
            slice_axis: 2,
            min_voxels: 50,
        };
        let shell: Vec<usize> = (0..12).collect();
        for (keep, flagged) in [(0.96, false), (0.5, true)] {
            let mut sums = toy();
            sums[3] = sums[2].clone();
            sums[7] = sums[6].clone();
            sums[4].as_mut().unwrap().observed[2] *= keep;
            let t = detect(&sums, std::slice::from_ref(&shell), &[1000.0; 12], &cfg);
            assert!(
                t.scores[4][2] < -cfg.threshold,
                "keep {keep}: {}",
                t.scores[4][2]
            );
            assert_eq!(t.is_outlier(4, 2), flagged, "keep {keep}: {:?}", t.rows);
        }
    }

    #[test]
    fn slice_sums_follow_the_axis() {
        let dims = [2, 3, 4];
        let obs: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let pred = vec![1.0f32; 24];
        let mut mask = vec![true; 24];
        mask[0] = false;
        let s = slice_sums(&obs, &pred, &mask, dims, 1);
        // slice j=0 holds x + 6z for x in 0..2, z in 0..4, minus voxel 0
        let want: f64 = (0..4)
            .flat_map(|z| (0..2).map(move |x| (x + 6 * z) as f64))
            .sum();
        assert_eq!(s.observed[0], want);
        assert_eq!(s.voxels, vec![7, 8, 8]);
        assert_eq!(s.predicted[1], 8.0);
    }
}
