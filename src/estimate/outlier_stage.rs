//! The outlier stage of a model pass: slices whose signal falls far below their prediction
//! (signal dropouts, [`crate::outliers`]), their replacement by the prediction, and the
//! registration mask that leaves them out.

use super::dataset::{expand, resample_at};
use super::passes::Predictions;
use super::{par_volumes, Dataset};
use crate::image::{Mask, Series, Volume};
use crate::mask::dilate;
use crate::outliers::{detect, slice_sums, OutlierConfig, OutlierTable, SliceSums};
use crate::registration::{resample, Interpolation, RegistrationConfig};
use nalgebra::Matrix4;

/// What the outlier stage found: the table, and for every volume with outlier slices the
/// prediction brought into that volume's acquired space (to replace the slices).
#[derive(Clone, Debug)]
pub struct OutlierStage {
    pub table: OutlierTable,
    /// (volume, its prediction in acquired space; 0 outside the fitted region).
    pub replacements: Vec<(usize, Vec<f32>)>,
    /// The grid the slices index.
    pub grid: crate::image::Grid,
}

/// How far (in slices) around an outlier slice fixed-space points are left out of the
/// registration cost: the slice itself and half of each neighbour, which the cubic B-spline
/// and the pyramid's smoothing mix in.
const EXCLUDE_HALF_WIDTH: f64 = 1.5;

impl OutlierStage {
    /// `series` with every outlier slice replaced by its prediction where the prediction
    /// exists (inside the fitted region); the original when there are no outliers.
    pub fn cleaned<'a>(&self, series: &'a Series) -> std::borrow::Cow<'a, Series> {
        if self.replacements.is_empty() {
            return std::borrow::Cow::Borrowed(series);
        }
        let mut out = series.clone();
        for (v, pred) in &self.replacements {
            self.replace_slices(*v, out.volume_mut(*v), pred);
        }
        std::borrow::Cow::Owned(out)
    }

    /// Volume `v`'s outlier slices in `vol` (acquired space) replaced by `pred_acq` (its
    /// prediction in acquired space) where the prediction exists (> 0: inside the fitted region).
    fn replace_slices(&self, v: usize, vol: &mut [f32], pred_acq: &[f32]) {
        let slices = self.table.slices_of(v);
        let dims = self.grid.dims;
        let axis = self.table.slice_axis;
        for (idx, (o, &p)) in vol.iter_mut().zip(pred_acq).enumerate() {
            let ijk = [
                idx % dims[0],
                (idx / dims[0]) % dims[1],
                idx / (dims[0] * dims[1]),
            ];
            if p > 0.0 && slices.contains(&ijk[axis]) {
                *o = p;
            }
        }
    }

    /// The registration mask of volume `h` without the fixed-space points that `t` maps onto
    /// (or next to) its outlier slices, already dilated, with the matching configuration
    /// (no further dilation). None when `h` has no outlier slices.
    pub fn excluded_mask(
        &self,
        h: usize,
        mask: &Mask,
        t: &Matrix4<f64>,
        reg: &RegistrationConfig,
    ) -> Option<(Mask, RegistrationConfig)> {
        let slices = self.table.slices_of(h);
        if slices.is_empty() {
            return None;
        }
        let mut m = dilate(mask, reg.mask_dilation);
        let to_voxel = self.grid.affine.try_inverse()? * t * mask.grid.affine;
        let axis = self.table.slice_axis;
        let dims = mask.grid.dims;
        // slice coordinate (acquired space) of a fixed-space point
        let coord = |idx: usize| -> f64 {
            let [i, j, k] = [
                idx % dims[0],
                (idx / dims[0]) % dims[1],
                idx / (dims[0] * dims[1]),
            ];
            (to_voxel * nalgebra::Vector4::new(i as f64, j as f64, k as f64, 1.0))[axis]
        };
        for (idx, inside) in m.data.iter_mut().enumerate() {
            if !*inside {
                continue;
            }
            let s = coord(idx);
            if slices
                .iter()
                .any(|&sl| (s - sl as f64).abs() < EXCLUDE_HALF_WIDTH)
            {
                *inside = false;
            }
        }
        let cfg = RegistrationConfig {
            mask_dilation: 0,
            ..reg.clone()
        };
        Some((m, cfg))
    }
}

/// Outlier detection for one pass: each diffusion-weighted volume's prediction (reference
/// frame, held at `voxels`) is brought into the volume's acquired space with the current
/// estimate, and slice means of the (drift-corrected) data are compared with it over the brain
/// mask (mapped the same way); see [`crate::outliers`].
pub fn outlier_stage(
    data: &Dataset,
    predictions: &Predictions,
    voxels: &[usize],
    cfg: &OutlierConfig,
) -> OutlierStage {
    let series = data.base();
    let (table, transforms, mask) = (data.table, &data.transforms, data.mask);
    let grid = &series.grid;
    let mask_f = Volume::new(
        grid.clone(),
        mask.data.iter().map(|&b| f32::from(u8::from(b))).collect(),
    );
    // The prediction of volume h brought into its acquired space: T⁻¹z is the reference
    // point that acquired point z shows.
    let acquired = |h: usize, i: usize| -> Option<Vec<f32>> {
        let pred = predictions[i].as_ref()?;
        let inv = transforms[h].try_inverse()?;
        let pred = expand(grid, voxels, &pred.values);
        Some(resample(&pred, grid, &inv, Interpolation::CubicBSpline).data)
    };
    // The same, at the voxels of `m_acq` only (0 elsewhere): all that the slice sums read.
    let acquired_in = |h: usize, i: usize, m_acq: &[bool]| -> Option<Vec<f32>> {
        let pred = predictions[i].as_ref()?;
        let inv = transforms[h].try_inverse()?;
        let pred = expand(grid, voxels, &pred.values);
        let at: Vec<usize> = (0..grid.len()).filter(|&l| m_acq[l]).collect();
        let mut out = vec![0f32; grid.len()];
        for (&l, v) in at.iter().zip(resample_at(&pred.data, grid, &inv, &at)) {
            out[l] = v;
        }
        Some(out)
    };
    // Slice sums of every volume first; the (whole-volume) predictions in acquired space are
    // not kept, but made again for the few volumes found to have outlier slices.
    let per = par_volumes(&data.order, None, |i, h| {
        let inv = transforms[h].try_inverse()?;
        let m_acq: Vec<bool> = resample(&mask_f, grid, &inv, Interpolation::Linear)
            .data
            .iter()
            .map(|&v| v >= 0.5)
            .collect();
        let pred_acq = acquired_in(h, i, &m_acq)?;
        Some(slice_sums(
            &series.volume(h),
            &pred_acq,
            &m_acq,
            grid.dims,
            cfg.slice_axis,
        ))
    });
    let mut sums: Vec<Option<SliceSums>> = vec![None; series.n_volumes];
    for (&h, s) in data.order.iter().zip(per) {
        sums[h] = s;
    }
    let shells: Vec<Vec<usize>> = data.shells.iter().map(|s| s.indices.clone()).collect();
    let found = detect(&sums, &shells, &table.bvals, cfg);
    let flagged: Vec<usize> = data
        .order
        .iter()
        .copied()
        .filter(|&h| found.rows.iter().any(|r| r.volume == h))
        .collect();
    let position = |h: usize| data.order.iter().position(|&k| k == h);
    let replacements = par_volumes(&flagged, None, |_, h| Some((h, acquired(h, position(h)?)?)))
        .into_iter()
        .flatten()
        .collect();
    OutlierStage {
        table: found,
        replacements,
        grid: grid.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Grid;

    /// The registration mask leaves out the band around an outlier slice in acquired space,
    /// nothing else, and follows the volume's transform.
    #[test]
    fn outlier_band_is_left_out_in_acquired_space() {
        let grid = Grid::new([6, 5, 20], Matrix4::identity());
        let mask = Mask {
            grid: grid.clone(),
            data: (0..grid.len())
                .map(|i| (2..18).contains(&(i / 30)))
                .collect(),
        };
        let stage = OutlierStage {
            table: OutlierTable {
                slice_axis: 2,
                n_slices: 20,
                rows: vec![crate::outliers::OutlierRow {
                    volume: 1,
                    slice: 4,
                    bvalue: 1000.0,
                    score: -20.0,
                    replaced: false,
                }],
                ..Default::default()
            },
            replacements: vec![],
            grid: grid.clone(),
        };
        let reg = RegistrationConfig {
            mask_dilation: 0,
            ..RegistrationConfig::rigid()
        };
        assert!(stage
            .excluded_mask(0, &mask, &Matrix4::identity(), &reg)
            .is_none());
        let (m, cfg) = stage
            .excluded_mask(1, &mask, &Matrix4::identity(), &reg)
            .unwrap();
        assert_eq!(cfg.mask_dilation, 0);
        // mask slices 2..=17: band |z − 4| < 1.5
        let kept: Vec<usize> = (0..20).filter(|&z| m.data[z * 30]).collect();
        let expected: Vec<usize> = (2..18).filter(|z| ![3, 4, 5].contains(z)).collect();
        assert_eq!(kept, expected);
        // a volume moved by 2 slices along z: the band follows the acquired slices
        let mut t = Matrix4::identity();
        t[(2, 3)] = 2.0;
        let (m, _) = stage.excluded_mask(1, &mask, &t, &reg).unwrap();
        let kept: Vec<usize> = (0..20).filter(|&z| m.data[z * 30]).collect();
        // acquired s = z + 2: |s − 4| < 1.5 → z 1..=3
        let expected: Vec<usize> = (2..18).filter(|z| ![2, 3].contains(z)).collect();
        assert_eq!(kept, expected);
    }
}
