//! NIfTI-1 input and output (.nii and .nii.gz), written by hand for full control.
//!
//! Why not the `nifti` crate for reading: it panics on some header quirks (pixdim[0] not ±1),
//! applies a NaN scl_slope to every voxel, and picks gzip by file name only. Reading the
//! 348-byte header ourselves lets every malformed file end in one readable error instead.
//! (The crate is still used in tests as an independent reader to cross-check this one.)
//!
//! Geometry follows nibabel: the "best" affine is the sform if sform_code > 0, else the
//! qform if qform_code > 0, else a centred diagonal zoom affine with x flipped.

use crate::image::{Grid, Mask, Series, Volume};
use crate::io::atomic::write_atomic;
use crate::{Error, Result};
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use nalgebra::{Matrix3, Matrix4};
use std::io::{Read, Write};
use std::path::Path;

const HEADER_SIZE: usize = 348;
const NIFTI2_HEADER_SIZE: i32 = 540;
/// Data start for single-file NIfTI: header plus the 4-byte extension flag.
const VOX_OFFSET: usize = 352;
/// gzip level for outputs; with zlib-rs level 6 is fast and compresses noisy floats well
/// (level 1 expands them: ../shared/notes/rust-crates.md).
const GZIP_LEVEL: u32 = 6;

/// Voxel storage types of NIfTI-1 that we read and write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataType {
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl DataType {
    pub const ALL: [DataType; 10] = [
        DataType::U8,
        DataType::I8,
        DataType::I16,
        DataType::U16,
        DataType::I32,
        DataType::U32,
        DataType::I64,
        DataType::U64,
        DataType::F32,
        DataType::F64,
    ];

    pub fn code(self) -> i16 {
        match self {
            DataType::U8 => 2,
            DataType::I16 => 4,
            DataType::I32 => 8,
            DataType::F32 => 16,
            DataType::F64 => 64,
            DataType::I8 => 256,
            DataType::U16 => 512,
            DataType::U32 => 768,
            DataType::I64 => 1024,
            DataType::U64 => 1280,
        }
    }

    fn from_code(code: i16) -> Option<DataType> {
        DataType::ALL.iter().copied().find(|d| d.code() == code)
    }

    pub fn bytes(self) -> usize {
        match self {
            DataType::U8 | DataType::I8 => 1,
            DataType::I16 | DataType::U16 => 2,
            DataType::I32 | DataType::U32 | DataType::F32 => 4,
            DataType::I64 | DataType::U64 | DataType::F64 => 8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DataType::U8 => "uint8",
            DataType::I8 => "int8",
            DataType::I16 => "int16",
            DataType::U16 => "uint16",
            DataType::I32 => "int32",
            DataType::U32 => "uint32",
            DataType::I64 => "int64",
            DataType::U64 => "uint64",
            DataType::F32 => "float32",
            DataType::F64 => "float64",
        }
    }
}

/// Header fields we keep from an input so outputs carry the same geometry.
#[derive(Clone, Debug, PartialEq)]
pub struct NiftiMeta {
    /// All dimensions (dim[1..=dim[0]]).
    pub dims: Vec<usize>,
    pub datatype: DataType,
    pub pixdim: [f32; 8],
    pub qform_code: i16,
    pub sform_code: i16,
    pub quatern: [f32; 3],
    pub qoffset: [f32; 3],
    pub srow: [[f32; 4]; 3],
    pub xyzt_units: u8,
    pub scl_slope: f32,
    pub scl_inter: f32,
}

impl NiftiMeta {
    /// The affine nibabel would use (sform, else qform, else zooms).
    pub fn best_affine(&self) -> Matrix4<f64> {
        if self.sform_code > 0 {
            self.sform_affine()
        } else if self.qform_code > 0 {
            self.qform_affine()
        } else {
            self.base_affine()
        }
    }

    /// Which header field the geometry came from.
    pub fn affine_source(&self) -> &'static str {
        if self.sform_code > 0 {
            "sform"
        } else if self.qform_code > 0 {
            "qform"
        } else {
            "pixdim"
        }
    }

    fn sform_affine(&self) -> Matrix4<f64> {
        let mut m = Matrix4::identity();
        for r in 0..3 {
            for c in 0..4 {
                m[(r, c)] = self.srow[r][c] as f64;
            }
        }
        m
    }

    fn qform_affine(&self) -> Matrix4<f64> {
        let [b, c, d] = self.quatern.map(|v| v as f64);
        // nibabel: a = sqrt(1 - |bcd|²), with tiny negative residues treated as 0.
        let s = 1.0 - (b * b + c * c + d * d);
        let a = if s < 0.0 { 0.0 } else { s.sqrt() };
        let r = Matrix3::new(
            a * a + b * b - c * c - d * d,
            2.0 * (b * c - a * d),
            2.0 * (b * d + a * c),
            2.0 * (b * c + a * d),
            a * a + c * c - b * b - d * d,
            2.0 * (c * d - a * b),
            2.0 * (b * d - a * c),
            2.0 * (c * d + a * b),
            a * a + d * d - c * c - b * b,
        );
        // qfac lives in pixdim[0]; anything but a negative value means +1 (as nibabel fixes it).
        let qfac = if self.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        let z = self.zooms();
        let scale = Matrix3::from_diagonal(&nalgebra::Vector3::new(z[0], z[1], z[2] * qfac));
        let lin = r * scale;
        let mut m = Matrix4::identity();
        m.fixed_view_mut::<3, 3>(0, 0).copy_from(&lin);
        m[(0, 3)] = self.qoffset[0] as f64;
        m[(1, 3)] = self.qoffset[1] as f64;
        m[(2, 3)] = self.qoffset[2] as f64;
        m
    }

    fn base_affine(&self) -> Matrix4<f64> {
        let z = self.zooms();
        let mut m = Matrix4::identity();
        let diag = [-z[0], z[1], z[2]];
        for i in 0..3 {
            let n = self.dims.get(i).copied().unwrap_or(1) as f64;
            m[(i, i)] = diag[i];
            m[(i, 3)] = -(n - 1.0) / 2.0 * diag[i];
        }
        m
    }

    /// Spatial voxel sizes from pixdim (non-positive or non-finite read as 1).
    fn zooms(&self) -> [f64; 3] {
        let f = |v: f32| {
            if v.is_finite() && v > 0.0 {
                v as f64
            } else {
                1.0
            }
        };
        [f(self.pixdim[1]), f(self.pixdim[2]), f(self.pixdim[3])]
    }

    /// Header geometry for a new image on `grid`, reusing this header's fields when they
    /// describe the same grid, so an output keeps the input's sform/qform and codes.
    fn for_grid(&self, grid: &Grid) -> NiftiMeta {
        if self.dims.len() >= 3
            && self.dims[..3] == grid.dims
            && Grid::new(grid.dims, self.best_affine()).matches(grid, 1e-4)
        {
            self.clone()
        } else {
            NiftiMeta::from_grid(grid)
        }
    }

    /// Header geometry describing `grid` (sform and qform both set, code 2 = aligned).
    pub fn from_grid(grid: &Grid) -> NiftiMeta {
        let a = &grid.affine;
        let lin: Matrix3<f64> = a.fixed_view::<3, 3>(0, 0).into();
        let zooms = grid.voxel_sizes();
        let mut r = lin;
        for c in 0..3 {
            let z = if zooms[c] > 0.0 { zooms[c] } else { 1.0 };
            r.column_mut(c).scale_mut(1.0 / z);
        }
        let qfac = if r.determinant() < 0.0 {
            r.column_mut(2).neg_mut();
            -1.0f32
        } else {
            1.0
        };
        let r = polar_rotation(&r);
        let (b, c, d) = quaternion_bcd(&r);
        let mut srow = [[0f32; 4]; 3];
        for (i, row) in srow.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = a[(i, j)] as f32;
            }
        }
        NiftiMeta {
            dims: grid.dims.to_vec(),
            datatype: DataType::F32,
            pixdim: [
                qfac,
                zooms[0] as f32,
                zooms[1] as f32,
                zooms[2] as f32,
                1.0,
                1.0,
                1.0,
                1.0,
            ],
            qform_code: 2,
            sform_code: 2,
            quatern: [b as f32, c as f32, d as f32],
            qoffset: [a[(0, 3)] as f32, a[(1, 3)] as f32, a[(2, 3)] as f32],
            srow,
            xyzt_units: 2 | 8, // mm, s
            scl_slope: 1.0,
            scl_inter: 0.0,
        }
    }
}

/// Nearest rotation to `m` (polar decomposition), for sheared or slightly non-orthogonal input.
fn polar_rotation(m: &Matrix3<f64>) -> Matrix3<f64> {
    let svd = m.svd(true, true);
    match (svd.u, svd.v_t) {
        (Some(u), Some(vt)) => u * vt,
        _ => Matrix3::identity(),
    }
}

/// Quaternion (b, c, d) with a ≥ 0 of a proper rotation matrix.
fn quaternion_bcd(r: &Matrix3<f64>) -> (f64, f64, f64) {
    let q = nalgebra::UnitQuaternion::from_matrix(r);
    let s = if q.w < 0.0 { -1.0 } else { 1.0 };
    (s * q.i, s * q.j, s * q.k)
}

/// Human-readable orientation code (e.g. "RAS", "LAS") of an affine: the world axis each
/// voxel axis points along most.
pub fn orientation_code(affine: &Matrix4<f64>) -> String {
    let mut out = String::new();
    for c in 0..3 {
        let col = [affine[(0, c)], affine[(1, c)], affine[(2, c)]];
        let (axis, v) = col
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .map(|(i, v)| (i, *v))
            .unwrap_or((c, 1.0));
        let ch = match (axis, v >= 0.0) {
            (0, true) => 'R',
            (0, false) => 'L',
            (1, true) => 'A',
            (1, false) => 'P',
            (2, true) => 'S',
            _ => 'I',
        };
        out.push(ch);
    }
    out
}

/// A parsed header with its byte order and where the data starts.
struct Header {
    meta: NiftiMeta,
    little_endian: bool,
    vox_offset: usize,
}

fn fail(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::input(format!("cannot read {}: {reason}", path.display()))
}

/// Read a whole file, decompressing gzip when the content is gzip (by magic bytes, not name).
fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::input(format!("{}: no such file", path.display())),
        _ => fail(path, e),
    })?;
    if raw.len() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
        let mut out = Vec::with_capacity(raw.len() * 3);
        MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| {
                fail(
                    path,
                    format!("the gzip stream is truncated or corrupt ({e})"),
                )
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn parse_header(path: &Path, b: &[u8]) -> Result<Header> {
    if b.is_empty() {
        return Err(fail(path, "the file is empty"));
    }
    if b.len() < HEADER_SIZE {
        return Err(fail(
            path,
            format!(
                "not a NIfTI-1 file ({} bytes, a header needs {HEADER_SIZE})",
                b.len()
            ),
        ));
    }
    let le_size = i32::from_le_bytes(b[0..4].try_into().unwrap());
    let be_size = i32::from_be_bytes(b[0..4].try_into().unwrap());
    let little_endian = if le_size == HEADER_SIZE as i32 {
        true
    } else if be_size == HEADER_SIZE as i32 {
        false
    } else if le_size == NIFTI2_HEADER_SIZE || be_size == NIFTI2_HEADER_SIZE {
        return Err(fail(
            path,
            "NIfTI-2 files are not supported; convert to NIfTI-1 (e.g. nibabel Nifti1Image)",
        ));
    } else {
        return Err(fail(path, "not a NIfTI-1 file (bad header size field)"));
    };
    let i16_at = |o: usize| {
        let a = [b[o], b[o + 1]];
        if little_endian {
            i16::from_le_bytes(a)
        } else {
            i16::from_be_bytes(a)
        }
    };
    let f32_at = |o: usize| {
        let a = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        if little_endian {
            f32::from_le_bytes(a)
        } else {
            f32::from_be_bytes(a)
        }
    };
    let magic = &b[344..348];
    if magic != b"n+1\0" && magic != b"ni1\0" {
        return Err(fail(path, "not a NIfTI-1 file (missing 'n+1' magic)"));
    }
    if magic == b"ni1\0" {
        return Err(fail(
            path,
            "two-file NIfTI (.hdr/.img) is not supported; convert to a single .nii",
        ));
    }
    let ndim = i16_at(40);
    if !(1..=7).contains(&ndim) {
        return Err(fail(path, format!("invalid number of dimensions {ndim}")));
    }
    let mut dims = Vec::new();
    for i in 0..ndim as usize {
        let d = i16_at(42 + 2 * i);
        if d < 1 {
            return Err(fail(
                path,
                format!("invalid size {d} along dimension {}", i + 1),
            ));
        }
        dims.push(d as usize);
    }
    let code = i16_at(70);
    let datatype = DataType::from_code(code).ok_or_else(|| {
        let what = match code {
            32 | 1792 | 2048 => "complex",
            128 | 2304 => "RGB",
            1536 => "float128",
            _ => "unknown",
        };
        fail(
            path,
            format!(
                "unsupported datatype code {code} ({what}); convert to an integer or float type"
            ),
        )
    })?;
    let mut pixdim = [0f32; 8];
    for (i, p) in pixdim.iter_mut().enumerate() {
        *p = f32_at(76 + 4 * i);
    }
    let vox_offset = f32_at(108);
    if !vox_offset.is_finite() || vox_offset < 0.0 {
        return Err(fail(path, "invalid vox_offset"));
    }
    let vox_offset = (vox_offset as usize).max(HEADER_SIZE);
    let mut srow = [[0f32; 4]; 3];
    for (r, row) in srow.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = f32_at(280 + 16 * r + 4 * c);
        }
    }
    let meta = NiftiMeta {
        dims,
        datatype,
        pixdim,
        qform_code: i16_at(252),
        sform_code: i16_at(254),
        quatern: [f32_at(256), f32_at(260), f32_at(264)],
        qoffset: [f32_at(268), f32_at(272), f32_at(276)],
        srow,
        xyzt_units: b[123],
        scl_slope: f32_at(112),
        scl_inter: f32_at(116),
    };
    let aff = meta.best_affine();
    if aff.iter().any(|v| !v.is_finite())
        || aff.fixed_view::<3, 3>(0, 0).determinant().abs() < 1e-12
    {
        return Err(fail(
            path,
            format!(
                "its {} affine is not finite and invertible",
                meta.affine_source()
            ),
        ));
    }
    Ok(Header {
        meta,
        little_endian,
        vox_offset,
    })
}

/// Decode `n` voxels of `dt` into f32 with the scaling applied (in f64 for exactness).
fn decode(bytes: &[u8], dt: DataType, le: bool, slope: f64, inter: f64, n: usize) -> Vec<f32> {
    macro_rules! conv {
        ($t:ty, $sz:expr) => {
            bytes
                .chunks_exact($sz)
                .take(n)
                .map(|c| {
                    let a: [u8; $sz] = c.try_into().unwrap();
                    let v = if le {
                        <$t>::from_le_bytes(a)
                    } else {
                        <$t>::from_be_bytes(a)
                    };
                    (v as f64 * slope + inter) as f32
                })
                .collect()
        };
    }
    match dt {
        DataType::U8 => bytes
            .iter()
            .take(n)
            .map(|&v| (v as f64 * slope + inter) as f32)
            .collect(),
        DataType::I8 => bytes
            .iter()
            .take(n)
            .map(|&v| ((v as i8) as f64 * slope + inter) as f32)
            .collect(),
        DataType::I16 => conv!(i16, 2),
        DataType::U16 => conv!(u16, 2),
        DataType::I32 => conv!(i32, 4),
        DataType::U32 => conv!(u32, 4),
        DataType::I64 => conv!(i64, 8),
        DataType::U64 => conv!(u64, 8),
        DataType::F32 => conv!(f32, 4),
        DataType::F64 => conv!(f64, 8),
    }
}

/// Read any 3-D or 4-D NIfTI-1 image as a series (a 3-D image is a series of one volume).
pub fn read_series(path: &Path) -> Result<(Series, NiftiMeta)> {
    let bytes = read_bytes(path)?;
    let h = parse_header(path, &bytes)?;
    let m = &h.meta;
    if m.dims.len() > 4 && m.dims[4..].iter().any(|&d| d > 1) {
        return Err(fail(
            path,
            format!(
                "{}-D images are not supported (dimensions {:?})",
                m.dims.len(),
                m.dims
            ),
        ));
    }
    let mut d = [1usize; 4];
    for (i, &v) in m.dims.iter().take(4).enumerate() {
        d[i] = v;
    }
    let n = d.iter().product::<usize>();
    let need = n * m.datatype.bytes();
    let have = bytes.len().saturating_sub(h.vox_offset);
    if have < need {
        return Err(fail(
            path,
            format!("the file is truncated: {need} bytes of voxel data expected, {have} found"),
        ));
    }
    // A zero or non-finite slope means "no scaling" (NIfTI standard; nibabel writes NaN).
    let slope_ok = m.scl_slope.is_finite() && m.scl_slope != 0.0;
    let slope = if slope_ok { m.scl_slope as f64 } else { 1.0 };
    let inter = if slope_ok && m.scl_inter.is_finite() {
        m.scl_inter as f64
    } else {
        0.0
    };
    let data = decode(
        &bytes[h.vox_offset..],
        m.datatype,
        h.little_endian,
        slope,
        inter,
        n,
    );
    let grid = Grid::new([d[0], d[1], d[2]], m.best_affine());
    Ok((Series::new(grid, d[3], data), h.meta))
}

/// Read a 3-D image (a 4-D image with a single volume is accepted).
pub fn read_volume(path: &Path) -> Result<(Volume, NiftiMeta)> {
    let (s, meta) = read_series(path)?;
    if s.n_volumes != 1 {
        return Err(Error::input(format!(
            "{} is 4-D with {} volumes; a 3-D image is expected here",
            path.display(),
            s.n_volumes
        )));
    }
    Ok((Volume::new(s.grid, s.data), meta))
}

/// Read a mask (non-zero = inside) that must lie on `grid`: same size, affine within 1e-3 mm.
pub fn read_mask(path: &Path, grid: &Grid) -> Result<Mask> {
    let (v, _) = read_volume(path)?;
    if v.grid.dims != grid.dims {
        return Err(Error::input(format!(
            "mask {} has size {:?} but the image has {:?}: give a mask on the same grid",
            path.display(),
            v.grid.dims,
            grid.dims
        )));
    }
    if !v.grid.matches(grid, 1e-3) {
        return Err(Error::input(format!(
            "mask {} has a different affine from the image (beyond 1e-3 mm): give a mask on the same grid",
            path.display()
        )));
    }
    let data: Vec<bool> = v.data.iter().map(|&x| x != 0.0 && !x.is_nan()).collect();
    if !data.iter().any(|&b| b) {
        return Err(Error::input(format!("mask {} is empty", path.display())));
    }
    Ok(Mask {
        grid: grid.clone(),
        data,
    })
}

fn header_bytes(meta: &NiftiMeta, dims: &[usize], dt: DataType) -> Result<Vec<u8>> {
    let mut h = vec![0u8; VOX_OFFSET];
    let put_i16 = |h: &mut Vec<u8>, o: usize, v: i16| h[o..o + 2].copy_from_slice(&v.to_le_bytes());
    let put_f32 = |h: &mut Vec<u8>, o: usize, v: f32| h[o..o + 4].copy_from_slice(&v.to_le_bytes());
    h[0..4].copy_from_slice(&(HEADER_SIZE as i32).to_le_bytes());
    h[38] = b'r';
    put_i16(&mut h, 40, dims.len() as i16);
    for i in 0..7 {
        let d = dims.get(i).copied().unwrap_or(1);
        if d > i16::MAX as usize {
            return Err(Error::runtime(format!(
                "dimension {d} is too large for NIfTI-1"
            )));
        }
        put_i16(&mut h, 42 + 2 * i, d as i16);
    }
    put_i16(&mut h, 70, dt.code());
    put_i16(&mut h, 72, (dt.bytes() * 8) as i16);
    let mut pixdim = meta.pixdim;
    pixdim[0] = if pixdim[0] < 0.0 { -1.0 } else { 1.0 };
    for i in dims.len() + 1..8 {
        pixdim[i] = pixdim[i].max(0.0);
    }
    for (i, p) in pixdim.iter().enumerate() {
        put_f32(&mut h, 76 + 4 * i, *p);
    }
    put_f32(&mut h, 108, VOX_OFFSET as f32);
    put_f32(&mut h, 112, 1.0);
    put_f32(&mut h, 116, 0.0);
    h[123] = meta.xyzt_units;
    let descrip = b"nifreeze-rs";
    h[148..148 + descrip.len()].copy_from_slice(descrip);
    put_i16(&mut h, 252, meta.qform_code);
    put_i16(&mut h, 254, meta.sform_code);
    for i in 0..3 {
        put_f32(&mut h, 256 + 4 * i, meta.quatern[i]);
        put_f32(&mut h, 268 + 4 * i, meta.qoffset[i]);
        for c in 0..4 {
            put_f32(&mut h, 280 + 16 * i + 4 * c, meta.srow[i][c]);
        }
    }
    h[344..348].copy_from_slice(b"n+1\0");
    Ok(h)
}

fn encode(data: &[f32], dt: DataType, out: &mut Vec<u8>) {
    out.reserve(data.len() * dt.bytes());
    macro_rules! ints {
        ($t:ty) => {
            for &v in data {
                let r = (v as f64).round().clamp(<$t>::MIN as f64, <$t>::MAX as f64);
                let r = if r.is_nan() { 0.0 } else { r };
                out.extend_from_slice(&(r as $t).to_le_bytes());
            }
        };
    }
    match dt {
        DataType::U8 => ints!(u8),
        DataType::I8 => ints!(i8),
        DataType::I16 => ints!(i16),
        DataType::U16 => ints!(u16),
        DataType::I32 => ints!(i32),
        DataType::U32 => ints!(u32),
        DataType::I64 => ints!(i64),
        DataType::U64 => ints!(u64),
        DataType::F32 => data
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        DataType::F64 => data
            .iter()
            .for_each(|&v| out.extend_from_slice(&(v as f64).to_le_bytes())),
    }
}

/// Write voxel data with the given dims as NIfTI-1 (gzip when the name ends in .gz), atomically.
fn write_raw(
    path: &Path,
    grid: &Grid,
    dims: &[usize],
    data: &[f32],
    meta: Option<&NiftiMeta>,
    dt: DataType,
) -> Result<()> {
    let meta = match meta {
        Some(m) => m.for_grid(grid),
        None => NiftiMeta::from_grid(grid),
    };
    let mut bytes = header_bytes(&meta, dims, dt)?;
    encode(data, dt, &mut bytes);
    let gz = path.to_string_lossy().ends_with(".gz");
    write_atomic(path, |w| {
        if gz {
            let mut enc = GzEncoder::new(w, Compression::new(GZIP_LEVEL));
            enc.write_all(&bytes)?;
            enc.finish()?;
            Ok(())
        } else {
            w.write_all(&bytes)
        }
    })
}

/// Write a 3-D volume (float32 unless `dt` says otherwise), keeping `meta`'s geometry when it
/// describes the same grid.
pub fn write_volume_as(
    path: &Path,
    v: &Volume,
    meta: Option<&NiftiMeta>,
    dt: DataType,
) -> Result<()> {
    write_raw(path, &v.grid, &v.grid.dims, &v.data, meta, dt)
}

/// Write a 3-D volume as float32.
pub fn write_volume(path: &Path, v: &Volume, meta: Option<&NiftiMeta>) -> Result<()> {
    write_volume_as(path, v, meta, DataType::F32)
}

/// Write a 4-D series in the given datatype.
pub fn write_series_as(
    path: &Path,
    s: &Series,
    meta: Option<&NiftiMeta>,
    dt: DataType,
) -> Result<()> {
    let d = s.grid.dims;
    write_raw(
        path,
        &s.grid,
        &[d[0], d[1], d[2], s.n_volumes],
        &s.data,
        meta,
        dt,
    )
}

/// Write a 4-D series as float32.
pub fn write_series(path: &Path, s: &Series, meta: Option<&NiftiMeta>) -> Result<()> {
    write_series_as(path, s, meta, DataType::F32)
}

/// Write a mask as uint8 (1 inside, 0 outside).
pub fn write_mask(path: &Path, m: &Mask, meta: Option<&NiftiMeta>) -> Result<()> {
    let data: Vec<f32> = m.data.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
    write_raw(path, &m.grid, &m.grid.dims, &data, meta, DataType::U8)
}
