//! NIfTI-1 input and output (.nii and .nii.gz), written by hand for full control.
//!
//! Why not the `nifti` crate for reading: it panics on some header quirks (pixdim[0] not ±1),
//! applies a NaN scl_slope to every voxel, and picks gzip by file name only. Reading the
//! 348-byte header ourselves lets every malformed file end in one readable error instead.
//! (The crate is still used in tests as an independent reader to cross-check this one.)
//!
//! Geometry follows nibabel: the "best" affine is the sform if sform_code > 0, else the
//! qform if qform_code > 0, else a centred diagonal zoom affine with x flipped.

use crate::image::{Grid, Integers, Mask, Series, Volume};
use crate::io::atomic::write_atomic;
use crate::{Error, Result};
use flate2::write::GzEncoder;
use flate2::Compression;
use nalgebra::{Matrix3, Matrix4};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

const HEADER_SIZE: usize = 348;
const NIFTI2_HEADER_SIZE: i32 = 540;
/// Data start for single-file NIfTI: header plus the 4-byte extension flag.
const VOX_OFFSET: usize = 352;
/// gzip level for outputs written whole; with zlib-rs level 6 is fast and compresses noisy
/// floats well (level 1 expands them: ../shared/notes/rust-crates.md). Streamed series use
/// the run-length strategy instead ([`super::gzip`]).
const GZIP_LEVEL: u32 = 6;
/// Voxels decoded per read while loading a series (a few MB of raw bytes at a time).
const READ_CHUNK_VOXELS: usize = 1 << 20;

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

    /// nibabel's quaternion check (`fillpositive` with `quaternion_threshold`): the
    /// implied a² = 1 − (b² + c² + d²), computed in float32 as nibabel does, may be slightly
    /// negative (rounding) but not below −3 float32 epsilons; else the quaternion is not a
    /// rotation and nibabel refuses the header.
    fn qform_a2(&self) -> f32 {
        let [b, c, d] = self.quatern;
        1.0 - (b * b + c * c + d * d)
    }

    fn qform_affine(&self) -> Matrix4<f64> {
        let [b, c, d] = self.quatern.map(|v| v as f64);
        let a2 = self.qform_a2();
        let a = if a2 < 0.0 { 0.0 } else { (a2 as f64).sqrt() };
        // nibabel's quat2mat: the quaternion is normalised, so a tiny excess length (a² a
        // rounding error below 0) still gives an exact rotation.
        let nq = a * a + b * b + c * c + d * d;
        let r = if nq < f64::EPSILON {
            Matrix3::identity()
        } else {
            let s = 2.0 / nq;
            let (x, y, z) = (b * s, c * s, d * s);
            let (wx, wy, wz) = (a * x, a * y, a * z);
            let (xx, xy, xz) = (b * x, b * y, b * z);
            let (yy, yz, zz) = (c * y, c * z, d * z);
            Matrix3::new(
                1.0 - (yy + zz),
                xy - wz,
                xz + wy,
                xy + wz,
                1.0 - (xx + zz),
                yz - wx,
                xz - wy,
                yz + wx,
                1.0 - (xx + yy),
            )
        };
        // qfac lives in pixdim[0]; nibabel sets anything but exactly -1 or 1 to 1.
        let qfac = if self.pixdim[0] == -1.0 { -1.0 } else { 1.0 };
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

    /// Spatial voxel sizes from pixdim as nibabel fixes them on load: a negative size is
    /// taken as its absolute value, a zero size as 1; NaN stays NaN (the affine is then
    /// not finite and the header is refused, where nibabel would return a NaN affine).
    fn zooms(&self) -> [f64; 3] {
        let f = |v: f32| {
            if v == 0.0 {
                1.0
            } else {
                (v as f64).abs()
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
        for (c, &zc) in zooms.iter().enumerate() {
            let z = if zc > 0.0 { zc } else { 1.0 };
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

/// Largest vox_offset accepted: NIfTI extensions are kilobytes to a few megabytes; a larger
/// offset would make us skip (and, for gzip, decompress) that much before the first voxel.
const MAX_VOX_OFFSET: usize = 256 << 20;

/// The decompressed bytes of a gzip file, member after member (`gzip` concatenations are
/// one stream). After the last member, anything that is not another gzip member — the zero
/// padding some tools append, or other trailing bytes — ends the stream, as for `gzip -t`
/// (which warns) and nibabel (which reads only the bytes the header asks for).
struct GzMembers<R: BufRead> {
    dec: Option<flate2::bufread::GzDecoder<R>>,
}

impl<R: BufRead> Read for GzMembers<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let Some(dec) = self.dec.as_mut() else {
                return Ok(0);
            };
            let n = dec.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // this member is complete (its CRC was checked); does another one follow?
            let mut inner = self
                .dec
                .take()
                .map(|d| d.into_inner())
                .expect("decoder present");
            let next = inner.fill_buf()?;
            if next.len() >= 2 && next[0] == 0x1f && next[1] == 0x8b {
                self.dec = Some(flate2::bufread::GzDecoder::new(inner));
            } else {
                return Ok(0);
            }
        }
    }
}

/// Read until `buf` is full or the stream ends; returns the bytes read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// An open NIfTI file as a byte stream, gunzipped when the content is gzip (by magic bytes,
/// not by name), plus whether it is compressed.
fn open_stream(path: &Path) -> Result<(Box<dyn Read>, bool)> {
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::input(format!("{}: no such file", path.display())),
        _ => fail(path, e),
    })?;
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(fail(path, "it is a directory"));
    }
    let mut r = BufReader::with_capacity(1 << 16, file);
    let head = r.fill_buf().map_err(|e| fail(path, e))?;
    if head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b {
        let dec = flate2::bufread::GzDecoder::new(r);
        Ok((Box::new(GzMembers { dec: Some(dec) }), true))
    } else {
        Ok((Box::new(r), false))
    }
}

fn stream_error(path: &Path, gz: bool, e: std::io::Error) -> Error {
    if gz {
        fail(
            path,
            format!("the gzip stream is truncated or corrupt ({e})"),
        )
    } else {
        fail(path, e)
    }
}

/// Open `path` and parse its header; the stream is left just after the 348 header bytes.
fn open_header(path: &Path) -> Result<(Header, Box<dyn Read>, bool)> {
    let (mut r, gz) = open_stream(path)?;
    let mut buf = [0u8; HEADER_SIZE];
    let got = read_full(&mut r, &mut buf).map_err(|e| stream_error(path, gz, e))?;
    let h = parse_header(path, &buf[..got])?;
    Ok((h, r, gz))
}

/// The header of a NIfTI-1 file, reading (and decompressing) nothing beyond it.
pub fn read_meta(path: &Path) -> Result<NiftiMeta> {
    Ok(open_header(path)?.0.meta)
}

/// Number of voxels of the series a header describes (dims 1-4; higher dims must be 1).
fn series_dims(path: &Path, m: &NiftiMeta) -> Result<[usize; 4]> {
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
    Ok(d)
}

/// The grid and number of volumes a header describes, without reading voxel data.
pub fn series_shape(path: &Path, m: &NiftiMeta) -> Result<(Grid, usize)> {
    let d = series_dims(path, m)?;
    Ok((Grid::new([d[0], d[1], d[2]], m.best_affine()), d[3]))
}

/// Bytes of one float32 copy of the series the header describes (for memory estimates).
pub fn series_f32_bytes(m: &NiftiMeta) -> u64 {
    m.dims
        .iter()
        .take(4)
        .fold(4u64, |acc, &d| acc.saturating_mul(d as u64))
}

/// Reserve room for `n` more elements, or a one-line error when memory runs out.
fn reserve<T>(v: &mut Vec<T>, n: usize, path: &Path) -> Result<()> {
    crate::alloc_guard::fallible(|| v.try_reserve_exact(n)).map_err(|_| {
        Error::runtime(format!(
            "not enough memory to read {}: its voxel data needs {:.0} MB",
            path.display(),
            (n as f64) * std::mem::size_of::<T>() as f64 / 1e6
        ))
    })
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
    if vox_offset as f64 > MAX_VOX_OFFSET as f64 {
        return Err(fail(
            path,
            format!("vox_offset {vox_offset} is implausibly large (extensions above {} MB are not read)", MAX_VOX_OFFSET >> 20),
        ));
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
    if meta.sform_code <= 0 && meta.qform_code > 0 && meta.qform_a2() < -3.0 * f32::EPSILON {
        let [b, c, d] = meta.quatern;
        return Err(fail(
            path,
            format!(
                "its qform quaternion (b, c, d) = ({b}, {c}, {d}) is longer than 1, so it is not a \
                 rotation (nibabel refuses it too); fix quatern_b/c/d or set an sform"
            ),
        ));
    }
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

/// Decode voxels of `dt` into `out` (f32) with the scaling applied (in f64 for exactness).
fn decode(bytes: &[u8], dt: DataType, le: bool, slope: f64, inter: f64, out: &mut [f32]) {
    macro_rules! conv {
        ($t:ty, $sz:expr) => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact($sz)) {
                let a: [u8; $sz] = c.try_into().expect("chunk of the type's size");
                let v = if le {
                    <$t>::from_le_bytes(a)
                } else {
                    <$t>::from_be_bytes(a)
                };
                *o = (v as f64 * slope + inter) as f32;
            }
        };
    }
    match dt {
        DataType::U8 => {
            for (o, &v) in out.iter_mut().zip(bytes) {
                *o = (v as f64 * slope + inter) as f32;
            }
        }
        DataType::I8 => {
            for (o, &v) in out.iter_mut().zip(bytes) {
                *o = ((v as i8) as f64 * slope + inter) as f32;
            }
        }
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

/// Open `path`, parse its header and position the stream at the first voxel. Returns the
/// header, the stream, whether it is gzip, the series dims, the voxel count and the bytes of
/// voxel data the header asks for (checked arithmetic: a crafted header cannot overflow).
#[allow(clippy::type_complexity)]
fn open_data(path: &Path) -> Result<(Header, Box<dyn Read>, bool, [usize; 4], usize, usize)> {
    let (h, mut r, gz) = open_header(path)?;
    let m = &h.meta;
    let d = series_dims(path, m)?;
    let too_big = || fail(path, format!("its dimensions {:?} are too large", m.dims));
    let n = d
        .iter()
        .try_fold(1usize, |acc, &v| acc.checked_mul(v))
        .ok_or_else(too_big)?;
    let need = n.checked_mul(m.datatype.bytes()).ok_or_else(too_big)?;
    check_file_can_hold(path, &h, gz, need as u64)?;
    let skip = (h.vox_offset - HEADER_SIZE) as u64;
    let skipped = std::io::copy(&mut (&mut r).take(skip), &mut std::io::sink())
        .map_err(|e| stream_error(path, gz, e))?;
    if skipped < skip {
        return Err(fail(
            path,
            format!(
                "the file is truncated: it ends before its vox_offset ({})",
                h.vox_offset
            ),
        ));
    }
    Ok((h, r, gz, d, n, need))
}

/// Deflate cannot compress better than about 1032:1 (a 258-byte match coded in 2 bits), so a
/// gzip file of `c` bytes inflates to at most this many bytes (with room for gzip framing).
fn gzip_inflate_bound(compressed: u64) -> u64 {
    compressed.saturating_mul(1032).saturating_add(1 << 20)
}

/// Refuse, before any buffer is reserved, a file that cannot hold the voxel data its header
/// promises: an uncompressed file by its length, a gzip file by the deflate ratio bound. A
/// header claiming terabytes in a small file is bad input (exit 2), not a lack of memory.
fn check_file_can_hold(path: &Path, h: &Header, gz: bool, need: u64) -> Result<()> {
    let Ok(len) = std::fs::metadata(path).map(|md| md.len()) else {
        return Ok(()); // not a regular file (a pipe): the reader finds any truncation
    };
    let have = if gz {
        gzip_inflate_bound(len)
    } else {
        len.saturating_sub(h.vox_offset as u64)
    };
    if have < need {
        let what = if gz {
            format!(
                "the header promises {need} bytes of voxel data, more than a {len}-byte gzip \
                 file can hold (deflate compresses at most ~1032:1); the file is truncated or \
                 its header is wrong"
            )
        } else {
            format!("the file is truncated: {need} bytes of voxel data expected, {have} found")
        };
        return Err(fail(path, what));
    }
    Ok(())
}

/// Check that `path` can hold the voxel data its header describes, reading only the header
/// (see [`check_file_can_hold`]); for estimates of memory made before the data are read.
pub fn check_data_size(path: &Path) -> Result<()> {
    let (h, _r, gz) = open_header(path)?;
    let d = series_dims(path, &h.meta)?;
    let need = d
        .iter()
        .chain(std::iter::once(&h.meta.datatype.bytes()))
        .try_fold(1u64, |acc, &v| acc.checked_mul(v as u64))
        .unwrap_or(u64::MAX);
    check_file_can_hold(path, &h, gz, need)
}

/// After `got` of `need` voxel bytes were read: refuse a short file, and for gzip read on to
/// the end of the member so its CRC is checked — but never more than a small tail: a stream
/// longer than the header says is not decompressed further.
fn finish_data(path: &Path, r: &mut dyn Read, gz: bool, got: usize, need: usize) -> Result<()> {
    if got < need {
        let what = if gz {
            "the gzip stream is truncated"
        } else {
            "the file is truncated"
        };
        return Err(fail(
            path,
            format!("{what}: {need} bytes of voxel data expected, {got} found"),
        ));
    }
    if gz {
        let mut tail = [0u8; 4096];
        read_full(r, &mut tail).map_err(|e| stream_error(path, gz, e))?;
    }
    Ok(())
}

/// Check that the file holds all the voxel data its header promises (and, for gzip, that
/// the stream is intact), streaming through it without keeping it: `info` stays cheap in
/// memory on any file, and still refuses a truncated one.
pub fn verify_data(path: &Path) -> Result<()> {
    let (_, mut r, gz, _, _, need) = open_data(path)?;
    let got = std::io::copy(&mut (&mut r).take(need as u64), &mut std::io::sink())
        .map_err(|e| stream_error(path, gz, e))? as usize;
    finish_data(path, &mut r, gz, got, need)
}

/// Read any 3-D or 4-D NIfTI-1 image as a series (a 3-D image is a series of one volume).
///
/// Bounded: the header is parsed first, and exactly the bytes it says the data needs are read
/// (decompressed) — a stream that inflates to more (a "gzip bomb", or trailing padding) is
/// never read further. Buffers are allocated fallibly, so a series too large for the memory
/// limit is a one-line error.
pub fn read_series(path: &Path) -> Result<(Series, NiftiMeta)> {
    let (h, mut r, gz, d, n, need) = open_data(path)?;
    let m = &h.meta;
    // A zero or non-finite slope means "no scaling" (NIfTI standard; nibabel writes NaN).
    let slope_ok = m.scl_slope.is_finite() && m.scl_slope != 0.0;
    let slope = if slope_ok { m.scl_slope as f64 } else { 1.0 };
    let inter = if slope_ok && m.scl_inter.is_finite() {
        m.scl_inter as f64
    } else {
        0.0
    };
    let grid = Grid::new([d[0], d[1], d[2]], m.best_affine());
    let (dt, le) = (m.datatype, h.little_endian);
    let size = dt.bytes();
    // 8- and 16-bit integers stay integers (half the memory of float32; see `Series`).
    let integers = match dt {
        DataType::U8 | DataType::I8 | DataType::I16 => Some(Integers::I16(read_integers(
            path,
            &mut r,
            gz,
            n,
            need,
            dt,
            le,
            |v| v as i16,
        )?)),
        DataType::U16 => Some(Integers::U16(read_integers(
            path,
            &mut r,
            gz,
            n,
            need,
            dt,
            le,
            |v| v as u16,
        )?)),
        _ => None,
    };
    if let Some(raw) = integers {
        return Ok((Series::from_integers(grid, d[3], raw, slope, inter), h.meta));
    }
    // Decoded chunk by chunk into the float32 buffer: the raw bytes are never held whole (an
    // int16 series would need 1.5× its float32 size while loading). Reserved, not
    // zero-filled: a header that claims gigabytes the stream does not hold touches only the
    // pages actually read before the truncation is reported.
    let mut data: Vec<f32> = Vec::new();
    reserve(&mut data, n, path)?;
    read_chunks(path, &mut r, gz, n, need, size, |bytes| {
        let start = data.len();
        data.resize(start + bytes.len() / size, 0.0);
        decode(bytes, dt, le, slope, inter, &mut data[start..]);
    })?;
    drop(r);
    Ok((Series::new(grid, d[3], data), h.meta))
}

/// Stream the `n` samples of `size` bytes each that the header asks for (`need` bytes), a
/// chunk at a time, handing each chunk's bytes to `take`; then [`finish_data`] checks the
/// stream's end. The one read loop of [`read_series`], whichever type it keeps.
fn read_chunks(
    path: &Path,
    r: &mut dyn Read,
    gz: bool,
    n: usize,
    need: usize,
    size: usize,
    mut take: impl FnMut(&[u8]),
) -> Result<()> {
    let mut buf = vec![0u8; READ_CHUNK_VOXELS.min(n.max(1)) * size];
    let (mut done, mut got) = (0, 0);
    while done < n {
        let count = READ_CHUNK_VOXELS.min(n - done);
        let want = count * size;
        let g = read_full(r, &mut buf[..want]).map_err(|e| stream_error(path, gz, e))?;
        got += g;
        if g < want {
            break;
        }
        take(&buf[..want]);
        done += count;
    }
    finish_data(path, r, gz, got, need)
}

/// The voxel data of an 8- or 16-bit integer file as `T` (`cast` of each sample read as i32),
/// chunk by chunk, bounded like [`read_series`].
#[allow(clippy::too_many_arguments)]
fn read_integers<T>(
    path: &Path,
    r: &mut dyn Read,
    gz: bool,
    n: usize,
    need: usize,
    dt: DataType,
    le: bool,
    cast: impl Fn(i32) -> T,
) -> Result<Vec<T>> {
    let mut data: Vec<T> = Vec::new();
    reserve(&mut data, n, path)?;
    read_chunks(path, r, gz, n, need, dt.bytes(), |bytes| match dt {
        DataType::U8 => data.extend(bytes.iter().map(|&b| cast(b as i32))),
        DataType::I8 => data.extend(bytes.iter().map(|&b| cast(b as i8 as i32))),
        DataType::I16 => data.extend(bytes.chunks_exact(2).map(|c| {
            let a = [c[0], c[1]];
            cast(if le {
                i16::from_le_bytes(a)
            } else {
                i16::from_be_bytes(a)
            } as i32)
        })),
        DataType::U16 => data.extend(bytes.chunks_exact(2).map(|c| {
            let a = [c[0], c[1]];
            cast(if le {
                u16::from_le_bytes(a)
            } else {
                u16::from_be_bytes(a)
            } as i32)
        })),
        _ => unreachable!("8- and 16-bit integer types only"),
    })?;
    Ok(data)
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
    let data = s.volume(0).into_owned();
    Ok((Volume::new(s.grid, data), meta))
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
    for p in pixdim.iter_mut().skip(dims.len() + 1) {
        *p = p.max(0.0);
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
    let data: Vec<f32> = (0..s.n_volumes)
        .flat_map(|k| s.volume(k).into_owned())
        .collect();
    write_raw(
        path,
        &s.grid,
        &[d[0], d[1], d[2], s.n_volumes],
        &data,
        meta,
        dt,
    )
}

/// Write a 4-D series as float32.
pub fn write_series(path: &Path, s: &Series, meta: Option<&NiftiMeta>) -> Result<()> {
    write_series_as(path, s, meta, DataType::F32)
}

/// Write a 4-D float32 series of `n_volumes` volumes on `grid` without ever holding it:
/// `volume(k)` makes volume k. Volumes are made, encoded and (for .gz) compressed a few at a
/// time in parallel on the current rayon pool, and written in order, so memory stays at a few
/// volumes and compression uses every worker. Each volume is its own gzip block
/// ([`super::gzip`]): the file's bytes do not depend on the number of threads.
pub fn write_series_streamed(
    path: &Path,
    grid: &Grid,
    n_volumes: usize,
    meta: Option<&NiftiMeta>,
    volume: &(dyn Fn(usize) -> Vec<f32> + Sync),
) -> Result<()> {
    use rayon::prelude::*;
    let dt = DataType::F32;
    let meta = match meta {
        Some(m) => m.for_grid(grid),
        None => NiftiMeta::from_grid(grid),
    };
    let d = grid.dims;
    let header = header_bytes(&meta, &[d[0], d[1], d[2], n_volumes], dt)?;
    let gz = path.to_string_lossy().ends_with(".gz");
    // Batch size changes memory and scheduling only, never the bytes.
    let batch = 2 * rayon::current_num_threads().max(1);
    let encoded = |k: usize| -> Vec<u8> {
        let v = volume(k);
        let mut bytes = if k == 0 { header.clone() } else { Vec::new() };
        encode(&v, dt, &mut bytes);
        bytes
    };
    write_atomic(path, |w| {
        if n_volumes == 0 {
            return Err(std::io::Error::other("a series without volumes"));
        }
        let batches = (0..n_volumes)
            .step_by(batch)
            .map(|s| (s..(s + batch).min(n_volumes)).collect::<Vec<usize>>());
        if gz {
            let mut out = super::gzip::GzipBlocks::new(w)?;
            for ks in batches {
                let done: Vec<std::io::Result<super::gzip::Block>> = ks
                    .par_iter()
                    .map(|&k| super::gzip::deflate_block(&encoded(k), k + 1 == n_volumes))
                    .collect();
                for block in done {
                    out.push(&block?)?;
                }
            }
            out.finish()
        } else {
            for ks in batches {
                let done: Vec<Vec<u8>> = ks.par_iter().map(|&k| encoded(k)).collect();
                for bytes in done {
                    w.write_all(&bytes)?;
                }
            }
            Ok(())
        }
    })
}

/// Write a mask as uint8 (1 inside, 0 outside).
pub fn write_mask(path: &Path, m: &Mask, meta: Option<&NiftiMeta>) -> Result<()> {
    let data: Vec<f32> = m.data.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
    write_raw(path, &m.grid, &m.grid.dims, &data, meta, DataType::U8)
}
