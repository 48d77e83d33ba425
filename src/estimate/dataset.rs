//! [`Dataset`]: what every stage of the pipeline reads and updates — the series, its gradients,
//! the brain mask, the processing order and every volume's current transform — and the
//! resampling helpers that realign it.

use super::outlier_stage::OutlierStage;
use super::{par_volumes, EstimateConfig, MotionEstimate, Order, VolumeDiagnostics};
use crate::drift::Drift;
use crate::image::{Grid, Mask, MaskedSeries, Series, Volume};
use crate::io::gradients::{shells, GradientTable, Shell};
use crate::mask::dilate;
use crate::registration::eddy::{split_constant, EddyModel};
use crate::registration::interpolate::BSpline;
use crate::registration::{resample, Interpolation};
use crate::stats;
use nalgebra::Matrix4;
use rayon::prelude::*;

/// One series under estimation: its data (as read, drift-corrected, outlier slices replaced),
/// gradients, brain mask, the volumes' roles and order, and every volume's current transform
/// (reference → volume) with its diagnostics.
pub struct Dataset<'a> {
    /// The series as read: the b=0 alignment, the drift fit and the bootstrap read it.
    original: &'a Series,
    /// The series divided by the drift curve (`--drift-correct`); the model passes read it.
    corrected: Option<Series>,
    /// The model passes' series with outlier slices replaced by their prediction, once found.
    cleaned: Option<Series>,
    pub table: &'a GradientTable,
    pub mask: &'a Mask,
    /// 4-D indices of the b=0 volumes.
    pub b0: Vec<usize>,
    /// 4-D indices of the diffusion-weighted volumes.
    pub dw: Vec<usize>,
    pub shells: Vec<Shell>,
    /// The diffusion-weighted volumes in processing order.
    pub order: Vec<usize>,
    /// Each 4-D volume's current transform (identity until a stage estimates it).
    pub transforms: Vec<Matrix4<f64>>,
    pub diagnostics: Vec<VolumeDiagnostics>,
    /// Outlier slices found by the latest model pass.
    pub outliers: Option<OutlierStage>,
}

/// Where the model is fitted: the brain mask dilated a little beyond the registration mask,
/// so that the prediction covers the (dilated) registration mask and brain edges, which carry
/// most of the alignment signal.
pub struct FitRegion {
    pub mask: Mask,
    /// Its voxels (ascending grid indices): predictions are held at these only.
    pub voxels: Vec<usize>,
}

impl<'a> Dataset<'a> {
    pub fn new(
        series: &'a Series,
        table: &'a GradientTable,
        mask: &'a Mask,
        cfg: &EstimateConfig,
    ) -> Self {
        let n = series.n_volumes;
        let dw = table.dw_indices(cfg.b0_threshold);
        let order = processing_order(cfg.order, &dw, &table.bvals, cfg.seed);
        Dataset {
            original: series,
            corrected: None,
            cleaned: None,
            table,
            mask,
            b0: table.b0_indices(cfg.b0_threshold),
            dw,
            shells: shells(table, cfg.b0_threshold),
            order,
            transforms: vec![Matrix4::identity(); n],
            diagnostics: vec![VolumeDiagnostics::default(); n],
            outliers: None,
        }
    }

    pub fn has_b0(&self) -> bool {
        !self.b0.is_empty()
    }

    pub fn grid(&self) -> &Grid {
        &self.original.grid
    }

    /// The series as read.
    pub fn original(&self) -> &'a Series {
        self.original
    }

    /// The series the model passes start from: drift-corrected when asked, else as read.
    pub fn base(&self) -> &Series {
        self.corrected.as_ref().unwrap_or(self.original)
    }

    /// What the model passes fit and register: [`Dataset::base`] with outlier slices replaced
    /// by their prediction once some are found.
    pub fn working(&self) -> &Series {
        self.cleaned.as_ref().unwrap_or_else(|| self.base())
    }

    /// From now on the model passes read the series divided by `drift`.
    pub fn correct_drift(&mut self, drift: &Drift) {
        self.corrected = Some(drift_corrected(self.original, drift));
    }

    /// Keep the outlier slices a pass found; the working series replaces them.
    pub fn set_outliers(&mut self, found: OutlierStage) {
        let cleaned = match found.cleaned(self.base()) {
            std::borrow::Cow::Owned(s) => Some(s),
            std::borrow::Cow::Borrowed(_) => None,
        };
        self.cleaned = cleaned;
        self.outliers = Some(found);
    }

    /// The model's fit region for this configuration.
    pub fn fit_region(&self, cfg: &EstimateConfig) -> FitRegion {
        let mask = dilate(self.mask, cfg.registration.mask_dilation + 1);
        let voxels = mask.indices();
        FitRegion { mask, voxels }
    }

    /// The result: transforms with an exact bottom row, and with the eddy-current model each
    /// volume's parameters.
    pub fn finish(
        mut self,
        reference: Volume,
        eddy: Option<EddyModel>,
        drift: Option<Drift>,
        b0_threshold: f64,
    ) -> MotionEstimate {
        // Products of registrations can leave the affine's bottom row 1 ulp off (m33 =
        // 1.000000000000001); it is 0 0 0 1 by definition, and motion.tsv and X5 print it.
        for t in &mut self.transforms {
            t.set_row(3, &nalgebra::RowVector4::new(0.0, 0.0, 0.0, 1.0));
        }
        let table = self.table;
        let eddy = eddy.map(|m| {
            let directions: Vec<[f64; 3]> = (0..self.original.n_volumes)
                .map(|k| {
                    let s = if table.bvals[k] > b0_threshold {
                        table.bvals[k] / 1000.0
                    } else {
                        0.0
                    };
                    table.bvecs[k].map(|v| v * s)
                })
                .collect();
            let params = split_constant(&m, &self.transforms, &directions);
            (m, params)
        });
        MotionEstimate {
            transforms: self.transforms,
            diagnostics: self.diagnostics,
            reference,
            eddy,
            outliers: self.outliers,
            drift,
            shading: None,
        }
    }
}

/// `series` with volume k divided by the drift curve at k.
pub fn drift_corrected(series: &Series, drift: &Drift) -> Series {
    let mut out = series.clone();
    for k in 0..series.n_volumes {
        let f = drift.scale[k];
        if f > 0.0 && f.is_finite() {
            let inv = (1.0 / f) as f32;
            out.volume_mut(k).iter_mut().for_each(|v| *v *= inv);
        }
    }
    out
}

/// The processing order of the diffusion-weighted volumes `dw` (4-D indices).
pub fn processing_order(order: Order, dw: &[usize], bvals: &[f64], seed: u64) -> Vec<usize> {
    match order {
        Order::Linear => dw.to_vec(),
        Order::Bvalue => {
            let mut v = dw.to_vec();
            v.sort_by(|&a, &b| bvals[a].total_cmp(&bvals[b]).then(a.cmp(&b)));
            v
        }
        Order::Random => {
            let mut v = dw.to_vec();
            let mut rng = SplitMix64(seed);
            for i in (1..v.len()).rev() {
                let j = (rng.next() % (i as u64 + 1)) as usize;
                v.swap(i, j);
            }
            v
        }
        // nifreeze's centre-out order: middle, one below, one above, …
        Order::Centralsym => {
            let n = dw.len();
            let upper = &dw[n / 2..];
            let lower: Vec<usize> = dw[..n / 2].iter().rev().copied().collect();
            let mut v = Vec::with_capacity(n);
            for i in 0..upper.len().max(lower.len()) {
                v.extend(upper.get(i));
                v.extend(lower.get(i));
            }
            v
        }
    }
}

/// A small, well-mixed PRNG (Steele et al.'s SplitMix64): enough for shuffling, and
/// reproducible across platforms and crate versions.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Voxelwise median of the given volumes ([`stats::voxelwise_median`]).
pub fn median_volume(series: &Series, indices: &[usize]) -> Volume {
    let m = stats::voxelwise_median(series.grid.len(), indices, |k, l| series.get(k, l) as f64);
    Volume::new(series.grid.clone(), m.iter().map(|&v| v as f32).collect())
}

/// Each volume of `series` resampled into the reference frame with its transform:
/// `out_k(x) = series_k(T_k x)`. Always from the given (original) data: never cumulative.
pub fn realign(series: &Series, transforms: &[Matrix4<f64>], interp: Interpolation) -> Series {
    let all: Vec<usize> = (0..series.n_volumes).collect();
    let vols = par_volumes(&all, None, |_, k| {
        realign_volume(series, k, &transforms[k], interp)
    });
    Series::from_volumes(series.grid.clone(), &vols)
}

/// Volume `k` of [`realign`] alone (the same numbers), for callers that stream the volumes.
pub fn realign_volume(
    series: &Series,
    k: usize,
    transform: &Matrix4<f64>,
    interp: Interpolation,
) -> Vec<f32> {
    if *transform == Matrix4::identity() {
        series.volume(k).to_vec()
    } else {
        resample(&series.to_volume(k), &series.grid, transform, interp).data
    }
}

/// The volumes `idx` of `series`, each resampled with its transform (cubic B-spline, also
/// for an identity transform), as a series of `idx.len()` volumes.
pub fn realign_subset(series: &Series, idx: &[usize], transforms: &[Matrix4<f64>]) -> Series {
    let vols = par_volumes(idx, None, |_, k| {
        resample(
            &series.to_volume(k),
            &series.grid,
            &transforms[k],
            Interpolation::CubicBSpline,
        )
        .data
    });
    Series::from_volumes(series.grid.clone(), &vols)
}

/// [`realign`] at `voxels` only (ascending grid indices): the same numbers there, computed
/// the same way, for the model fits, which read nothing else.
pub fn realign_at(series: &Series, transforms: &[Matrix4<f64>], voxels: &[usize]) -> MaskedSeries {
    MaskedSeries::from_fn(
        series.grid.clone(),
        voxels.to_vec(),
        series.n_volumes,
        |k, out| {
            if transforms[k] == Matrix4::identity() {
                for (o, &l) in out.iter_mut().zip(voxels) {
                    *o = series.get(k, l);
                }
            } else {
                resample_into(&series.volume(k), &series.grid, &transforms[k], voxels, out)
            }
        },
    )
}

/// `volume(T·x)` at the centres `x` of `voxels` (cubic B-spline): [`resample`]'s arithmetic
/// (the same voxel-to-voxel matrix, the same spline), evaluated at those voxels only.
pub(crate) fn resample_at(
    volume: &[f32],
    grid: &Grid,
    t: &Matrix4<f64>,
    voxels: &[usize],
) -> Vec<f32> {
    let mut out = vec![0f32; voxels.len()];
    resample_into(volume, grid, t, voxels, &mut out);
    out
}

/// [`resample_at`] into `out` (one value per voxel).
fn resample_into(volume: &[f32], grid: &Grid, t: &Matrix4<f64>, voxels: &[usize], out: &mut [f32]) {
    let inv = grid
        .affine
        .try_inverse()
        .expect("series affine is invertible (checked on reading)");
    let v = inv * t * grid.affine;
    let spline = BSpline::new(volume, grid.dims);
    out.par_chunks_mut(4096)
        .zip(voxels.par_chunks(4096))
        .for_each(|(o, ls)| {
            let point = |n: usize| {
                let [i, j, k] = grid.ijk(ls[n]);
                let p = v * nalgebra::Vector4::new(i as f64, j as f64, k as f64, 1.0);
                [p.x, p.y, p.z]
            };
            spline.values_with(ls.len(), point, |n, val| o[n] = val as f32);
        });
}

/// A prediction held at the fitted voxels only, back on the whole grid (0 elsewhere, as the
/// model predicts there).
pub fn expand(grid: &Grid, voxels: &[usize], values: &[f32]) -> Volume {
    let mut out = vec![0f32; grid.len()];
    for (&l, &v) in voxels.iter().zip(values) {
        out[l] = v;
    }
    Volume::new(grid.clone(), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_permutations_and_centralsym_matches_nifreeze() {
        let dw: Vec<usize> = (10..15).collect();
        let b = vec![0.0; 15];
        // nifreeze's centralsym_iterator(5) yields 2, 1, 3, 0, 4.
        assert_eq!(
            processing_order(Order::Centralsym, &dw, &b, 0),
            vec![12, 11, 13, 10, 14]
        );
        assert_eq!(processing_order(Order::Linear, &dw, &b, 0), dw);
        let r1 = processing_order(Order::Random, &dw, &b, 42);
        assert_eq!(r1, processing_order(Order::Random, &dw, &b, 42), "seeded");
        let mut sorted = r1.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, dw);
        let mut bv = vec![0.0; 15];
        bv[10..15].copy_from_slice(&[2000.0, 1000.0, 3000.0, 1000.0, 2000.0]);
        assert_eq!(
            processing_order(Order::Bvalue, &dw, &bv, 0),
            vec![11, 13, 10, 14, 12]
        );
    }

    #[test]
    fn realigning_at_some_voxels_gives_the_whole_grid_numbers_there() {
        // a smooth volume with some texture, moved by a small rigid transform
        let grid = Grid::new(
            [9, 8, 7],
            Matrix4::new(
                2.0, 0.0, 0.0, -8.0, 0.0, 2.5, 0.0, -9.0, 0.0, 0.0, 3.0, -9.0, 0.0, 0.0, 0.0, 1.0,
            ),
        );
        let n = grid.len();
        let vol = |s: f32| -> Vec<f32> {
            (0..n)
                .map(|l| {
                    let [i, j, k] = grid.ijk(l);
                    s * (i as f32 * 0.7).sin() + (j * k) as f32 * 0.3 + (l % 5) as f32
                })
                .collect()
        };
        let series = Series::from_volumes(grid.clone(), &[vol(1.0), vol(-2.0)]);
        let mut r = nalgebra::Rotation3::from_euler_angles(0.05, -0.03, 0.04).to_homogeneous();
        r[(0, 3)] = 0.6;
        r[(1, 3)] = -0.4;
        r[(2, 3)] = 0.3;
        let ts = [Matrix4::identity(), r];
        let full = realign(&series, &ts, Interpolation::CubicBSpline);
        let voxels: Vec<usize> = (0..n).filter(|l| l % 3 != 1).collect();
        let part = realign_at(&series, &ts, &voxels);
        for k in 0..2 {
            for (i, &l) in voxels.iter().enumerate() {
                assert_eq!(
                    part.volume(k)[i].to_bits(),
                    full.volume(k)[l].to_bits(),
                    "volume {k}, voxel {l}"
                );
            }
        }
        assert_ne!(
            full.volume(1),
            series.volume(1),
            "the transform moved the volume"
        );
    }
}
