//! The outlier stage of a model pass: slices whose signal falls far below their prediction
//! (signal dropouts, [`crate::outliers`]), their replacement by the prediction, and the
//! registration mask that leaves them out.

use super::dataset::{expand, resample_at};
use super::passes::Predictions;
use super::{par_volumes, Dataset};
use crate::image::{Grid, Mask, Series};
use crate::mask::dilate;
use crate::outliers::{detect, slice_sums_at, OutlierConfig, OutlierTable, SliceSums};
use crate::registration::interpolate::trilinear;
use crate::registration::{resample, Interpolation, RegistrationConfig};
use nalgebra::Matrix4;

/// What the outlier stage found: the table, and for every volume with outlier slices the
/// prediction brought into that volume's acquired space (to replace the slices).
#[derive(Clone, Debug)]
pub struct OutlierStage {
    pub table: OutlierTable,
    /// (volume, its prediction in acquired space; 0 outside the fitted region), on the scale
    /// the series stores its samples ([`Series::volume_mut`]: before any gain).
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

/// The brain mask brought into a volume's acquired space as the outlier stage reads it: the
/// voxels `z` where the mask, interpolated trilinearly (as 0/1), is at least 0.5 at `T⁻¹z` —
/// what `resample(mask, grid, T⁻¹, Linear) >= 0.5` gives, voxel for voxel. Only points
/// whose eight neighbours are neither all outside nor all inside the mask are interpolated:
/// elsewhere the interpolated value is exactly 0 (out) or 1 up to rounding (in). The brain's
/// boundary is a thin shell of the grid, so this costs little more than mapping each voxel.
struct AcquiredMask<'g> {
    grid: &'g Grid,
    /// The mask as 0/1 samples (what the trilinear interpolation reads).
    values: Vec<f32>,
    /// Per voxel `(i, j, k)`: whether the 2×2×2 block of voxels `i..=i+1` (… clamped to the
    /// grid) that trilinear interpolation reads from there is all outside (0), all inside (2)
    /// or mixed (1).
    block: Vec<u8>,
    /// The mask's bounding box, per axis (first, last voxel); empty mask: (1, 0).
    bbox: [(usize, usize); 3],
}

impl<'g> AcquiredMask<'g> {
    /// `mask` on `grid` (the series' grid: the resampling's source and target).
    fn new(mask: &Mask, grid: &'g Grid) -> Self {
        let [nx, ny, nz] = grid.dims;
        let values: Vec<f32> = mask.data.iter().map(|&b| f32::from(u8::from(b))).collect();
        let mut block = vec![0u8; grid.len()];
        for k in 0..nz {
            let ks = [k, (k + 1).min(nz - 1)];
            for j in 0..ny {
                let js = [j, (j + 1).min(ny - 1)];
                for i in 0..nx {
                    let is = [i, (i + 1).min(nx - 1)];
                    let mut inside = 0;
                    for &c in &ks {
                        for &b in &js {
                            for &a in &is {
                                inside += usize::from(mask.data[a + nx * (b + ny * c)]);
                            }
                        }
                    }
                    block[i + nx * (j + ny * k)] = match inside {
                        0 => 0,
                        8 => 2,
                        _ => 1,
                    };
                }
            }
        }
        let mut bbox = [(usize::MAX, 0); 3];
        for l in mask.indices() {
            for (b, c) in bbox.iter_mut().zip(grid.ijk(l)) {
                *b = (b.0.min(c), b.1.max(c));
            }
        }
        if bbox[0].0 == usize::MAX {
            bbox = [(1, 0); 3];
        }
        AcquiredMask {
            grid,
            values,
            block,
            bbox,
        }
    }

    /// The acquired-space voxels (ascending) of a volume whose reference → acquired
    /// transform has the inverse `inv` (acquired → reference).
    fn voxels(&self, inv: &Matrix4<f64>) -> Vec<usize> {
        let grid = self.grid;
        let dims = grid.dims;
        // `resample`'s voxel-to-voxel matrix, with the same operations
        let v = grid
            .affine
            .try_inverse()
            .expect("series affine is invertible (checked on reading)")
            * inv
            * grid.affine;
        let mut out = Vec::new();
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                let row = (j + dims[1] * k) * dims[0];
                // Along the row the point moves by v's first column. That sum drifts from
                // `resample`'s own product by rounding only (~1e-13 voxel): it decides every
                // point farther than `MARGIN` from a boundary of the decision (the domain's
                // edge, an integer where the 2×2×2 block changes) whose block is all in or all
                // out; every other point gets the exact product and, if needed, the
                // interpolation.
                let base = v * nalgebra::Vector4::new(0.0, j as f64, k as f64, 1.0);
                let base = [base.x, base.y, base.z];
                let step = [v[(0, 0)], v[(1, 0)], v[(2, 0)]];
                for i in self.row_span(&v, j, k) {
                    let q = [0, 1, 2].map(|a| base[a] + i as f64 * step[a]);
                    let inside = match self.quick(q) {
                        Some(b) => b,
                        None => {
                            let p = v * nalgebra::Vector4::new(i as f64, j as f64, k as f64, 1.0);
                            self.inside_at([p.x, p.y, p.z])
                        }
                    };
                    if inside {
                        out.push(row + i);
                    }
                }
            }
        }
        out
    }

    /// [`AcquiredMask::inside_at`] at `q` when `q` is within rounding (far less than
    /// `MARGIN`) of the exact point, no integer lies that close to it (where the 2×2×2 block
    /// changes), it lies in `[0, n - 1)` along every axis (inside the domain, no clamping)
    /// and its block is all in or all out; None when the exact point must decide.
    #[inline(always)]
    fn quick(&self, q: [f64; 3]) -> Option<bool> {
        const MARGIN: f64 = 1e-6;
        let dims = self.grid.dims;
        let mut ok = true;
        let mut c = [0usize; 3];
        for a in 0..3 {
            // q + 1 > 0 wherever this can say yes: truncation is floor(q) + 1 there
            // (signed conversions: the unsigned ones cost several instructions each)
            let f = (q[a] + 1.0) as i64;
            let t = q[a] + 1.0 - f as f64;
            ok &= t > MARGIN && t < 1.0 - MARGIN && f >= 1 && f < dims[a] as i64;
            c[a] = f.wrapping_sub(1) as usize;
        }
        if !ok {
            return None;
        }
        match self.block[c[0] + dims[0] * (c[1] + dims[1] * c[2])] {
            0 => Some(false),
            2 => Some(true),
            _ => None,
        }
    }

    /// The voxels `i` of row `(j, k)` that `v` may map next to the mask: every other one
    /// maps where the 2×2×2 blocks hold no mask voxel. `v·(i, j, k)` is affine in `i`; the
    /// span is widened by two voxels on each side, far more than rounding moves a point.
    fn row_span(&self, v: &Matrix4<f64>, j: usize, k: usize) -> std::ops::Range<usize> {
        let nx = self.grid.dims[0];
        let (mut lo, mut hi) = (0.0f64, (nx - 1) as f64);
        for a in 0..3 {
            // a block at corner c holds mask voxels only for c in [bbox_lo - 1, bbox_hi],
            // and the corner of q is floor(q) (clamped): q in [bbox_lo - 1, bbox_hi + 1)
            let (b_lo, b_hi) = (self.bbox[a].0 as f64 - 1.0, self.bbox[a].1 as f64 + 1.0);
            let base = v[(a, 1)] * j as f64 + v[(a, 2)] * k as f64 + v[(a, 3)];
            let slope = v[(a, 0)];
            if slope.abs() < 1e-12 {
                if base < b_lo - 1.0 || base > b_hi + 1.0 {
                    return 0..0;
                }
                continue;
            }
            let (t0, t1) = ((b_lo - base) / slope, (b_hi - base) / slope);
            lo = lo.max(t0.min(t1) - 2.0);
            hi = hi.min(t0.max(t1) + 2.0);
        }
        if lo.is_nan() || hi.is_nan() || lo > hi {
            return 0..0;
        }
        (lo.ceil() as usize)..((hi.floor() as usize) + 1).min(nx)
    }

    /// Whether the trilinear interpolation of the mask at voxel coordinate `q`, rounded to
    /// float32 as `resample` stores it, is at least 0.5.
    #[inline]
    fn inside_at(&self, q: [f64; 3]) -> bool {
        let dims = self.grid.dims;
        // `trilinear`'s domain: 0 outside
        if !(0..3).all(|a| q[a] >= -0.5 && q[a] <= dims[a] as f64 - 0.5) {
            return false;
        }
        // its lower corner
        let mut c = [0usize; 3];
        for a in 0..3 {
            let n = dims[a];
            let i = q[a].clamp(0.0, (n - 1) as f64) as usize;
            c[a] = if i + 1 >= n { n - 1 } else { i };
        }
        match self.block[c[0] + dims[0] * (c[1] + dims[1] * c[2])] {
            0 => false,
            2 => true,
            _ => trilinear(&self.values, dims, q) as f32 >= 0.5,
        }
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
    let mask_acq = AcquiredMask::new(mask, grid);
    // The prediction of volume h brought into its acquired space: T⁻¹z is the reference
    // point that acquired point z shows.
    let acquired = |h: usize, i: usize| -> Option<Vec<f32>> {
        let pred = predictions[i].as_ref()?;
        let inv = transforms[h].try_inverse()?;
        let pred = expand(grid, voxels, &pred.values);
        let mut acq = resample(&pred, grid, &inv, Interpolation::CubicBSpline).data;
        // kept as the series stores its samples (before its gain: the coil shading divided
        // out), so that writing them into the series as read from the file is right too
        if let Some(g) = series.gain() {
            acq.iter_mut().zip(g).for_each(|(p, &g)| *p /= g);
        }
        Some(acq)
    };
    // Slice sums of every volume first, over the mask brought into the volume's acquired
    // space, from the prediction at those voxels only (all that the sums read); the
    // (whole-volume) predictions in acquired space are made for the few volumes found to
    // have outlier slices only.
    let per = par_volumes(&data.order, None, |i, h| {
        let pred = predictions[i].as_ref()?;
        let inv = transforms[h].try_inverse()?;
        let at = mask_acq.voxels(&inv);
        let pred = expand(grid, voxels, &pred.values);
        let pred_acq = resample_at(&pred.data, grid, &inv, &at);
        let observed: Vec<f32> = at.iter().map(|&l| series.get(h, l)).collect();
        Some(slice_sums_at(
            &observed,
            &pred_acq,
            &at,
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
    use crate::image::Volume;

    /// The acquired-space mask is `resample(mask, Linear) >= 0.5` voxel for voxel (the
    /// definition it replaces), for rotations and shifts, on an oblique anisotropic grid
    /// with the mask touching two faces, including transforms that put mask points exactly
    /// on voxel boundaries; and the slice sums at its voxels are those of the whole grid.
    #[test]
    fn acquired_mask_is_the_thresholded_linear_resampling() {
        let affine = nalgebra::Rotation3::from_euler_angles(0.2, -0.1, 0.3).to_homogeneous()
            * Matrix4::new_nonuniform_scaling(&nalgebra::Vector3::new(2.0, 2.5, 3.0));
        let grid = Grid::new([23, 19, 14], affine);
        let mask = Mask {
            grid: grid.clone(),
            data: (0..grid.len())
                .map(|l| {
                    let [i, j, k] = grid.ijk(l);
                    let d = |x: usize, c: f64, r: f64| (x as f64 - c) / r;
                    let (x, y, z) = (d(i, 11.0, 9.0), d(j, 3.0, 8.0), d(k, 13.0, 9.0));
                    x * x + y * y + z * z < 1.0 + 0.2 * ((i * 7 + j * 3) % 5) as f64
                })
                .collect(),
        };
        let mask_f = Volume::new(
            grid.clone(),
            mask.data.iter().map(|&b| f32::from(u8::from(b))).collect(),
        );
        let acquired = AcquiredMask::new(&mask, &grid);
        let mut transforms = vec![Matrix4::identity()];
        for (n, (rx, ry, rz, t)) in [
            (0.0, 0.0, 0.0, [2.0, 0.0, 3.0]),
            (0.03, -0.02, 0.05, [0.4, -0.7, 1.1]),
            (-0.2, 0.1, 0.25, [-3.0, 5.0, 0.5]),
            (0.0, 0.0, std::f64::consts::FRAC_PI_2, [0.0, 0.0, 0.0]),
        ]
        .into_iter()
        .enumerate()
        {
            // rotation about the grid's centre, then the shift
            let c = grid.center_world();
            let m = Matrix4::new_translation(&(c + nalgebra::Vector3::from(t)))
                * nalgebra::Rotation3::from_euler_angles(rx, ry, rz).to_homogeneous()
                * Matrix4::new_translation(&-c);
            transforms.push(m);
            // shifts by whole and half voxels in the voxel frame
            let shift = affine
                * Matrix4::new_translation(&nalgebra::Vector3::new(n as f64 * 0.5, 1.0, -0.5))
                * affine.try_inverse().unwrap();
            transforms.push(shift);
        }
        let observed: Vec<f32> = (0..grid.len()).map(|l| (l % 97) as f32 * 1.5).collect();
        let predicted: Vec<f32> = (0..grid.len()).map(|l| (l % 89) as f32 + 0.25).collect();
        for (n, inv) in transforms.iter().enumerate() {
            let want: Vec<bool> = resample(&mask_f, &grid, inv, Interpolation::Linear)
                .data
                .iter()
                .map(|&v| v >= 0.5)
                .collect();
            let at = acquired.voxels(inv);
            let got: Vec<bool> = {
                let mut g = vec![false; grid.len()];
                at.iter().for_each(|&l| g[l] = true);
                g
            };
            assert!(want.iter().filter(|&&b| b).count() > 500, "transform {n}");
            assert_eq!(got, want, "transform {n}");
            for axis in 0..3 {
                let whole =
                    crate::outliers::slice_sums(&observed, &predicted, &want, grid.dims, axis);
                let obs: Vec<f32> = at.iter().map(|&l| observed[l]).collect();
                let pred: Vec<f32> = at.iter().map(|&l| predicted[l]).collect();
                assert_eq!(slice_sums_at(&obs, &pred, &at, grid.dims, axis), whole);
            }
        }
    }

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
