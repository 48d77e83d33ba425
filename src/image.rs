//! In-memory images: a voxel grid with its world (RAS mm) affine, and 3-D / 4-D data on it.
//!
//! Data are stored as `f32` in NIfTI (Fortran) order — x fastest, then y, then z, then volume —
//! so a 3-D volume of a series is one contiguous slice. Scanner data are int16, so `f32` holds
//! them exactly at half the memory of `f64`; numerics promote to `f64` where it matters.

use nalgebra::{Matrix4, Vector3};

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
        assert!(voxels.windows(2).all(|w| w[0] < w[1]), "voxels must ascend");
        assert!(voxels.last().is_none_or(|&l| l < grid.len()));
        assert!(voxels.len() < u32::MAX as usize);
        let mut position = vec![u32::MAX; grid.len()];
        for (i, &l) in voxels.iter().enumerate() {
            position[l] = i as u32;
        }
        let mut data = Vec::with_capacity(voxels.len() * volumes.len());
        for v in volumes {
            assert_eq!(v.len(), voxels.len());
            data.extend_from_slice(v);
        }
        MaskedSeries {
            grid,
            n_volumes: volumes.len(),
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

/// A 4-D series of volumes on one grid, volume-major (each volume contiguous).
#[derive(Clone, Debug)]
pub struct Series {
    pub grid: Grid,
    pub n_volumes: usize,
    pub data: Vec<f32>,
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
            data,
        }
    }

    /// Volume `v` as a slice.
    pub fn volume(&self, v: usize) -> &[f32] {
        let n = self.grid.len();
        &self.data[v * n..(v + 1) * n]
    }

    pub fn volume_mut(&mut self, v: usize) -> &mut [f32] {
        let n = self.grid.len();
        &mut self.data[v * n..(v + 1) * n]
    }

    /// Volume `v` as an owned [`Volume`].
    pub fn to_volume(&self, v: usize) -> Volume {
        Volume::new(self.grid.clone(), self.volume(v).to_vec())
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
