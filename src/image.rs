//! In-memory images: a voxel grid with its world (RAS mm) affine, and 3-D / 4-D data on it.
//!
//! Data are stored in NIfTI (Fortran) order — x fastest, then y, then z — as `f32`, except a
//! series read from 16-bit integers, which keeps them (see [`Series`]); numerics promote to
//! `f64` where it matters.

use nalgebra::{Matrix4, Vector3};
use std::borrow::Cow;

/// A voxel grid: its size and the affine mapping voxel indices (i, j, k) to RAS+ millimetres.
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    pub dims: [usize; 3],
    pub affine: Matrix4<f64>,
}

impl Grid {
    pub fn new(dims: [usize; 3], affine: Matrix4<f64>) -> Self {
        Grid { dims, affine }
    }

    /// Number of voxels in one volume.
    pub fn len(&self) -> usize {
        self.dims[0] * self.dims[1] * self.dims[2]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Linear index of voxel (i, j, k), x fastest.
    #[inline]
    pub fn index(&self, i: usize, j: usize, k: usize) -> usize {
        i + self.dims[0] * (j + self.dims[1] * k)
    }

    /// Voxel (i, j, k) of a linear index.
    #[inline]
    pub fn ijk(&self, idx: usize) -> [usize; 3] {
        let i = idx % self.dims[0];
        let r = idx / self.dims[0];
        [i, r % self.dims[1], r / self.dims[1]]
    }

    /// Voxel sizes in mm: the column norms of the affine's linear part.
    pub fn voxel_sizes(&self) -> [f64; 3] {
        let m = self.affine.fixed_view::<3, 3>(0, 0);
        [m.column(0).norm(), m.column(1).norm(), m.column(2).norm()]
    }

    /// World position (RAS mm) of a (possibly fractional) voxel coordinate.
    pub fn world(&self, ijk: [f64; 3]) -> Vector3<f64> {
        let p = self.affine * nalgebra::Vector4::new(ijk[0], ijk[1], ijk[2], 1.0);
        Vector3::new(p.x, p.y, p.z)
    }

    /// World position of the grid centre, A·((dim−1)/2): the centre about which rigid motion
    /// parameters are reported (see conventions: parameters about the world origin mix
    /// rotation into translation).
    pub fn center_world(&self) -> Vector3<f64> {
        self.world([
            (self.dims[0] as f64 - 1.0) / 2.0,
            (self.dims[1] as f64 - 1.0) / 2.0,
            (self.dims[2] as f64 - 1.0) / 2.0,
        ])
    }

    /// True when both grids have the same size and affines within `tol_mm`.
    pub fn matches(&self, other: &Grid, tol_mm: f64) -> bool {
        self.dims == other.dims
            && (self.affine - other.affine)
                .iter()
                .all(|d| d.abs() <= tol_mm)
    }
}

/// One 3-D image.
#[derive(Clone, Debug)]
pub struct Volume {
    pub grid: Grid,
    pub data: Vec<f32>,
}

impl Volume {
    pub fn new(grid: Grid, data: Vec<f32>) -> Self {
        assert_eq!(
            grid.len(),
            data.len(),
            "volume data does not match its grid"
        );
        Volume { grid, data }
    }

    pub fn zeros(grid: Grid) -> Self {
        let n = grid.len();
        Volume {
            grid,
            data: vec![0.0; n],
        }
    }
}

/// A series known only at some voxels: volume-major, `voxels.len()` values per volume.
///
/// Why: the model fits read a series only inside the (dilated) brain mask, a third of the grid
/// or less; holding the realigned snapshot they fit at those voxels only saves most of a
/// whole float32 copy of the series, and the time to resample the rest.
#[derive(Clone, Debug)]
pub struct MaskedSeries {
    pub grid: Grid,
    pub n_volumes: usize,
    /// Linear grid indices, ascending.
    voxels: Vec<usize>,
    /// Position of each grid voxel in `voxels` (`u32::MAX`: not held).
    position: Vec<u32>,
    data: Vec<f32>,
}

impl MaskedSeries {
    /// `volumes[k][i]` is volume k at grid voxel `voxels[i]` (ascending, distinct, in the grid).
    pub fn from_volumes(grid: Grid, voxels: Vec<usize>, volumes: &[Vec<f32>]) -> Self {
        for v in volumes {
            assert_eq!(v.len(), voxels.len());
        }
        Self::from_fn(grid, voxels, volumes.len(), |k, out| {
            out.copy_from_slice(&volumes[k])
        })
    }

    /// `n_volumes` volumes at `voxels` (ascending, distinct, in the grid), volume `k` written
    /// by `fill(k, values)` in parallel straight into the series' one buffer.
    ///
    /// Why (rather than building every volume as its own vector and copying them in, as the
    /// snapshot did): that held the snapshot twice at once, and the per-volume vectors,
    /// allocated by the worker threads and freed on the main one, stayed resident in the
    /// workers' malloc arenas for the rest of the run (the UKB-size run's peak grew from the
    /// first model pass to the second).
    pub fn from_fn(
        grid: Grid,
        voxels: Vec<usize>,
        n_volumes: usize,
        fill: impl Fn(usize, &mut [f32]) + Sync + Send,
    ) -> Self {
        use rayon::prelude::*;
        assert!(voxels.windows(2).all(|w| w[0] < w[1]), "voxels must ascend");
        assert!(voxels.last().is_none_or(|&l| l < grid.len()));
        assert!(voxels.len() < u32::MAX as usize);
        let mut position = vec![u32::MAX; grid.len()];
        for (i, &l) in voxels.iter().enumerate() {
            position[l] = i as u32;
        }
        let n = voxels.len();
        let mut data = vec![0f32; n * n_volumes];
        if n > 0 {
            data.par_chunks_mut(n)
                .enumerate()
                .for_each(|(k, v)| fill(k, v));
        }
        MaskedSeries {
            grid,
            n_volumes,
            voxels,
            position,
            data,
        }
    }

    /// The grid voxels held, ascending.
    pub fn voxels(&self) -> &[usize] {
        &self.voxels
    }

    /// Volume `k` at the held voxels (in [`MaskedSeries::voxels`] order).
    pub fn volume(&self, k: usize) -> &[f32] {
        let n = self.voxels.len();
        &self.data[k * n..(k + 1) * n]
    }

    /// The series of volumes `keep` (in that order), at the same voxels.
    pub fn select(&self, keep: &[usize]) -> MaskedSeries {
        let n = self.voxels.len();
        let mut data = Vec::with_capacity(n * keep.len());
        for &k in keep {
            data.extend_from_slice(self.volume(k));
        }
        MaskedSeries {
            grid: self.grid.clone(),
            n_volumes: keep.len(),
            voxels: self.voxels.clone(),
            position: self.position.clone(),
            data,
        }
    }

    /// Volume `k` at grid voxel `l`; 0 where the voxel is not held.
    #[inline]
    pub fn get(&self, k: usize, l: usize) -> f32 {
        match self.position[l] {
            u32::MAX => 0.0,
            i => self.data[k * self.voxels.len() + i as usize],
        }
    }
}

/// A 4-D series of volumes on one grid, each volume contiguous (x fastest).
///
/// Volumes are kept as the file stored them: float32, or 16-bit integers with the header's
/// scaling, decoded to float32 whenever a volume is read ([`Series::volume`]). Why: the series
/// is the largest thing a run holds — an HCP-size series is 4.2 GB as float32 — and scanners
/// write int16, so keeping the integers halves it at the cost of decoding a volume per read
/// (a few milliseconds, against the registration that reads it). The values read are the
/// float32 numbers a float32 series would hold, bit for bit. A volume that is written
/// ([`Series::volume_mut`]) becomes float32.
///
/// A series may carry a **gain**: one factor per voxel of the grid that multiplies every value
/// read, whatever the volume ([`Series::with_gain`]; the estimate divides the coil shading out
/// this way). The samples are shared (`Arc`) between a series and its copies, so a series
/// with a gain costs one volume of memory, not another series; writing a copy
/// ([`Series::volume_mut`]) adds the written volume (integer series) or copies the samples
/// (float32 series).
#[derive(Clone, Debug)]
pub struct Series {
    pub grid: Grid,
    pub n_volumes: usize,
    stored: std::sync::Arc<Stored>,
    gain: Option<std::sync::Arc<Vec<f32>>>,
}

/// The samples as stored: float32, or 16-bit integers (volume-major) with the volumes
/// written since as float32. The integers are shared (`Arc`) even between copies whose written
/// volumes differ: writing one volume of a series that shares its samples (the estimate's
/// outlier-cleaned working series) copies the list of written volumes, not the series (an
/// HCP-size run that found one outlier slice peaked at 8.3 GB with the copy, 6.4 GB without).
/// A float32 series is still copied whole on its first write.
#[derive(Clone, Debug)]
enum Stored {
    F32(Vec<f32>),
    Integers {
        raw: std::sync::Arc<Integers>,
        slope: f64,
        inter: f64,
        written: Vec<Option<Vec<f32>>>,
    },
}

/// 16-bit samples of a whole series, volume-major: what [`Series::from_integers`] keeps.
#[derive(Clone, Debug)]
pub enum Integers {
    I16(Vec<i16>),
    U16(Vec<u16>),
}

impl Integers {
    fn len(&self) -> usize {
        match self {
            Integers::I16(v) => v.len(),
            Integers::U16(v) => v.len(),
        }
    }

    /// Sample `i` as `raw · slope + inter` in f64, rounded to f32 (as the NIfTI reader
    /// decodes).
    #[inline]
    fn decode(&self, i: usize, slope: f64, inter: f64) -> f32 {
        let r = match self {
            Integers::I16(v) => v[i] as f64,
            Integers::U16(v) => v[i] as f64,
        };
        (r * slope + inter) as f32
    }
}

impl Series {
    pub fn new(grid: Grid, n_volumes: usize, data: Vec<f32>) -> Self {
        assert_eq!(
            grid.len() * n_volumes,
            data.len(),
            "series data does not match its grid"
        );
        Series {
            grid,
            n_volumes,
            stored: std::sync::Arc::new(Stored::F32(data)),
            gain: None,
        }
    }

    /// A series kept as 16-bit integers (volume-major, `grid.len()` per volume) whose values
    /// are `raw · slope + inter`.
    pub fn from_integers(
        grid: Grid,
        n_volumes: usize,
        raw: Integers,
        slope: f64,
        inter: f64,
    ) -> Self {
        assert_eq!(
            grid.len() * n_volumes,
            raw.len(),
            "series data does not match its grid"
        );
        Series {
            grid,
            n_volumes,
            stored: std::sync::Arc::new(Stored::Integers {
                raw: std::sync::Arc::new(raw),
                slope,
                inter,
                written: vec![None; n_volumes],
            }),
            gain: None,
        }
    }

    /// The same samples read through a per-voxel `gain` (`grid.len()` factors, composed with
    /// any gain already there): value read = stored value · gain. Shares the samples.
    pub fn with_gain(&self, gain: &[f32]) -> Series {
        assert_eq!(gain.len(), self.grid.len(), "gain does not match the grid");
        let gain = match &self.gain {
            Some(g) => g.iter().zip(gain).map(|(a, b)| a * b).collect(),
            None => gain.to_vec(),
        };
        Series {
            grid: self.grid.clone(),
            n_volumes: self.n_volumes,
            stored: self.stored.clone(),
            gain: Some(std::sync::Arc::new(gain)),
        }
    }

    /// The per-voxel gain every read goes through (None: values are read as stored).
    pub fn gain(&self) -> Option<&[f32]> {
        self.gain.as_deref().map(|g| g.as_slice())
    }

    /// Volume `v` as stored, before the gain.
    fn stored_volume(&self, v: usize) -> Cow<'_, [f32]> {
        let n = self.grid.len();
        match &*self.stored {
            Stored::F32(d) => Cow::Borrowed(&d[v * n..(v + 1) * n]),
            Stored::Integers {
                raw,
                slope,
                inter,
                written,
            } => match &written[v] {
                Some(w) => Cow::Borrowed(w),
                None => Cow::Owned(
                    (v * n..(v + 1) * n)
                        .map(|i| raw.decode(i, *slope, *inter))
                        .collect(),
                ),
            },
        }
    }

    /// Volume `v`'s samples (decoded when kept as integers, times the gain if any).
    pub fn volume(&self, v: usize) -> Cow<'_, [f32]> {
        match (self.stored_volume(v), &self.gain) {
            (stored, None) => stored,
            (Cow::Owned(mut d), Some(g)) => {
                d.iter_mut().zip(g.iter()).for_each(|(x, g)| *x *= g);
                Cow::Owned(d)
            }
            (Cow::Borrowed(d), Some(g)) => {
                Cow::Owned(d.iter().zip(g.iter()).map(|(x, g)| x * g).collect())
            }
        }
    }

    /// Sample `l` (linear voxel index) of volume `v`.
    #[inline]
    pub fn get(&self, v: usize, l: usize) -> f32 {
        let n = self.grid.len();
        let x = match &*self.stored {
            Stored::F32(d) => d[v * n + l],
            Stored::Integers {
                raw,
                slope,
                inter,
                written,
            } => match &written[v] {
                Some(w) => w[l],
                None => raw.decode(v * n + l, *slope, *inter),
            },
        };
        match &self.gain {
            None => x,
            Some(g) => x * g[l],
        }
    }

    /// Volume `v` for writing (kept as float32 from now on), **as stored**: before the gain
    /// ([`Series::with_gain`]), which multiplies what is written here too. Copies the samples
    /// first when another series shares them.
    pub fn volume_mut(&mut self, v: usize) -> &mut [f32] {
        let n = self.grid.len();
        if let Stored::Integers { written, .. } = &*self.stored {
            if written[v].is_none() {
                let decoded = self.stored_volume(v).into_owned();
                if let Stored::Integers { written, .. } = std::sync::Arc::make_mut(&mut self.stored)
                {
                    written[v] = Some(decoded);
                }
            }
        }
        match std::sync::Arc::make_mut(&mut self.stored) {
            Stored::F32(d) => &mut d[v * n..(v + 1) * n],
            Stored::Integers { written, .. } => {
                written[v].as_mut().expect("decoded above").as_mut_slice()
            }
        }
    }

    /// Every sample, volume after volume.
    pub fn samples(&self) -> impl Iterator<Item = f32> + '_ {
        (0..self.n_volumes).flat_map(move |k| (0..self.grid.len()).map(move |l| self.get(k, l)))
    }

    /// Every sample as float32, volume-major (a copy).
    pub fn to_f32(&self) -> Vec<f32> {
        self.samples().collect()
    }

    /// Bytes the samples take in memory.
    pub fn stored_bytes(&self) -> usize {
        let gain = self.gain.as_ref().map_or(0, |g| g.len() * 4);
        gain + match &*self.stored {
            Stored::F32(d) => d.len() * 4,
            Stored::Integers { raw, written, .. } => {
                raw.len() * 2 + written.iter().flatten().map(|w| w.len() * 4).sum::<usize>()
            }
        }
    }

    /// Volume `v` as an owned [`Volume`].
    pub fn to_volume(&self, v: usize) -> Volume {
        Volume::new(self.grid.clone(), self.volume(v).into_owned())
    }

    /// Build a series from volumes that share one grid.
    pub fn from_volumes(grid: Grid, volumes: &[Vec<f32>]) -> Self {
        let mut data = Vec::with_capacity(grid.len() * volumes.len());
        for v in volumes {
            assert_eq!(v.len(), grid.len());
            data.extend_from_slice(v);
        }
        Series::new(grid, volumes.len(), data)
    }
}

/// A binary mask on a grid.
#[derive(Clone, Debug)]
pub struct Mask {
    pub grid: Grid,
    pub data: Vec<bool>,
}

impl Mask {
    pub fn count(&self) -> usize {
        self.data.iter().filter(|&&b| b).count()
    }

    /// Linear indices of the voxels inside the mask, ascending.
    pub fn indices(&self) -> Vec<usize> {
        self.data
            .iter()
            .enumerate()
            .filter(|(_, &b)| b)
            .map(|(i, _)| i)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Grid {
        Grid::new([3, 1, 1], Matrix4::identity())
    }

    /// Filled in place, volume by volume, a masked series holds what the same volumes
    /// copied in would (and reads 0 off its voxels).
    #[test]
    fn a_masked_series_filled_in_place_equals_one_built_from_volumes() {
        let g = Grid::new([4, 3, 2], Matrix4::identity());
        let voxels = vec![1, 5, 6, 17, 23];
        let value = |k: usize, l: usize| (100 * k + l) as f32 * 0.5;
        let vols: Vec<Vec<f32>> = (0..7)
            .map(|k| voxels.iter().map(|&l| value(k, l)).collect())
            .collect();
        let copied = MaskedSeries::from_volumes(g.clone(), voxels.clone(), &vols);
        let filled = MaskedSeries::from_fn(g, voxels.clone(), 7, |k, out| {
            for (o, &l) in out.iter_mut().zip(&voxels) {
                *o = value(k, l);
            }
        });
        assert_eq!(filled.n_volumes, 7);
        for k in 0..7 {
            assert_eq!(filled.volume(k), copied.volume(k));
            assert_eq!(filled.get(k, 17), value(k, 17));
            assert_eq!(filled.get(k, 2), 0.0);
        }
    }

    /// A gain multiplies every read, shares the samples until one copy is written, and what is
    /// written through `volume_mut` is on the stored scale (the gain multiplies it too).
    #[test]
    fn a_gain_multiplies_every_read_and_shares_the_samples() {
        let ints = Series::from_integers(
            grid(),
            2,
            Integers::I16(vec![10, 20, 30, 40, 50, 60]),
            0.5,
            1.0,
        );
        let floats = Series::new(grid(), 2, vec![6.0, 11.0, 16.0, 21.0, 26.0, 31.0]);
        for s in [ints, floats] {
            let g = s.with_gain(&[1.0, 0.5, 2.0]);
            assert_eq!(&*g.volume(1), &[21.0, 13.0, 62.0]);
            assert_eq!(g.get(0, 2), 32.0);
            assert_eq!(g.to_f32(), vec![6.0, 5.5, 32.0, 21.0, 13.0, 62.0]);
            assert_eq!(g.gain(), Some(&[1.0, 0.5, 2.0][..]));
            // gains compose
            assert_eq!(
                &*g.with_gain(&[2.0, 2.0, 0.25]).volume(0),
                &[12.0, 11.0, 8.0]
            );
            // writing one copy leaves the other (and the original) as they were
            let mut w = g.clone();
            w.volume_mut(0)[1] = 100.0;
            assert_eq!(&*w.volume(0), &[6.0, 50.0, 32.0]);
            assert_eq!(&*g.volume(0), &[6.0, 5.5, 32.0]);
            assert_eq!(&*s.volume(0), &[6.0, 11.0, 16.0]);
            assert_eq!(s.gain(), None);
        }
    }

    /// Writing one volume of a copy of an integer series keeps the integers shared: the copy
    /// holds one float32 volume more, not a second series.
    #[test]
    fn writing_a_copy_of_an_integer_series_shares_its_integers() {
        let s = Series::from_integers(grid(), 2, Integers::I16(vec![1, 2, 3, 4, 5, 6]), 1.0, 0.0);
        let mut w = s.clone();
        w.volume_mut(1)[0] = 9.0;
        let raw = |x: &Series| match &*x.stored {
            Stored::Integers { raw, .. } => std::sync::Arc::as_ptr(raw),
            Stored::F32(_) => panic!("integers expected"),
        };
        assert!(!std::sync::Arc::ptr_eq(&s.stored, &w.stored));
        assert_eq!(raw(&s), raw(&w));
        assert_eq!(w.to_f32(), vec![1.0, 2.0, 3.0, 9.0, 5.0, 6.0]);
        assert_eq!(s.to_f32(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        // bytes: the shared integers plus the one written volume
        assert_eq!(w.stored_bytes(), 6 * 2 + 3 * 4);
    }
}
