//! Linear transform files: ITK text (`.tfm`/`.txt`, one or several transforms), ANTs'
//! MATLAB v4 `.mat`, and X5 (HDF5, nitransforms' format: all volumes in one file).
//!
//! In memory a transform is a 4×4 RAS matrix mapping reference (fixed) points to moving points
//! (conventions.md). ITK stores the same map in LPS: `T_lps = L·T_ras·L`, `L = diag(-1,-1,1,1)`,
//! as a 3×3 matrix `M`, a translation `t` and a centre `c` (`y = M(x − c) + c + t`). We write
//! `c = 0`, and full f64 precision (shortest round-trip decimal), so a written file reads back
//! bit-identically.

use crate::image::Grid;
use crate::io::atomic::{write_atomic, write_text};
use crate::{Error, Result};
use nalgebra::{Matrix3, Matrix4, Vector3};
use std::path::Path;

const ITK_BANNER: &str = "#Insight Transform File V1.0";
const ANTS_NAME: &str = "AffineTransform_double_3_3";

fn ras_lps(m: &Matrix4<f64>) -> Matrix4<f64> {
    let l = Matrix4::from_diagonal(&nalgebra::Vector4::new(-1.0, -1.0, 1.0, 1.0));
    l * m * l
}

/// ITK parameters (12) and fixed parameters (centre, 3) → RAS matrix.
fn from_itk_params(p: &[f64], centre: &[f64]) -> Matrix4<f64> {
    let m = Matrix3::new(p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]);
    let c = Vector3::new(centre[0], centre[1], centre[2]);
    let off = Vector3::new(p[9], p[10], p[11]) + c - m * c;
    let mut lps = Matrix4::identity();
    lps.fixed_view_mut::<3, 3>(0, 0).copy_from(&m);
    lps[(0, 3)] = off.x;
    lps[(1, 3)] = off.y;
    lps[(2, 3)] = off.z;
    ras_lps(&lps)
}

/// RAS matrix → ITK parameters (12), centre 0.
fn to_itk_params(m: &Matrix4<f64>) -> [f64; 12] {
    let lps = ras_lps(m);
    let mut p = [0.0; 12];
    for i in 0..3 {
        for j in 0..3 {
            p[3 * i + j] = lps[(i, j)];
        }
        p[9 + i] = lps[(i, 3)];
    }
    p
}

/// Shortest decimal that parses back to the same f64; exponent form only for extreme values.
fn fmt_f64(v: f64) -> String {
    let v = v + 0.0; // no "-0"
    if v == 0.0 {
        "0".into()
    } else if (1e-5..1e16).contains(&v.abs()) {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

/// Render transforms as ITK text (one `#Transform i` block each).
pub fn itk_text(transforms: &[Matrix4<f64>]) -> String {
    let mut s = String::from(ITK_BANNER);
    s.push('\n');
    for (i, m) in transforms.iter().enumerate() {
        let p = to_itk_params(m);
        let params: Vec<String> = p.iter().map(|&v| fmt_f64(v)).collect();
        s.push_str(&format!(
            "#Transform {i}\nTransform: AffineTransform_double_3_3\nParameters: {}\nFixedParameters: 0 0 0\n",
            params.join(" ")
        ));
    }
    s
}

/// Write one or several transforms (RAS reference→moving) to an ITK text file, atomically.
pub fn write_itk(path: &Path, transforms: &[Matrix4<f64>]) -> Result<()> {
    if transforms.is_empty() {
        return Err(Error::runtime("write_itk: no transform to write"));
    }
    write_text(path, &itk_text(transforms))
}

/// Text from a file, fit for a one-line message: invisible characters escaped, at most 60
/// characters.
fn shown(t: &str) -> String {
    let e: String = t.escape_debug().collect();
    if e.chars().count() > 60 {
        format!("{}…", e.chars().take(60).collect::<String>())
    } else {
        e
    }
}

/// Parse ITK text transforms (affine types; composite headers are skipped).
pub fn parse_itk(text: &str, origin: &str) -> Result<Vec<Matrix4<f64>>> {
    let bad = |msg: String| Error::input(format!("{origin}: {msg}"));
    let mut out = Vec::new();
    let mut kind: Option<String> = None;
    let mut params: Option<Vec<f64>> = None;
    let mut fixed: Option<Vec<f64>> = None;
    let nums = |rest: &str, what: &str| -> Result<Vec<f64>> {
        rest.split_whitespace()
            .map(|t| {
                t.parse::<f64>()
                    .map_err(|_| bad(format!("cannot read number '{}' in {what}", shown(t))))
            })
            .collect()
    };
    let mut flush = |kind: &mut Option<String>,
                     params: &mut Option<Vec<f64>>,
                     fixed: &mut Option<Vec<f64>>|
     -> Result<()> {
        if let Some(k) = kind.take() {
            let p = params.take();
            let f = fixed.take();
            if k.starts_with("CompositeTransform") {
                return Ok(());
            }
            let affine = ["AffineTransform_", "MatrixOffsetTransformBase_"]
                .iter()
                .any(|pre| k.starts_with(pre))
                && k.ends_with("_3_3");
            if !affine {
                return Err(bad(format!(
                    "unsupported transform type {}; only 3-D affine transforms (AffineTransform_double_3_3) are read",
                    shown(&k)
                )));
            }
            let p = p.ok_or_else(|| bad(format!("transform {k} has no Parameters line")))?;
            if p.len() != 12 {
                return Err(bad(format!(
                    "transform {k} has {} parameters, expected 12",
                    p.len()
                )));
            }
            let f = f.unwrap_or_else(|| vec![0.0; 3]);
            if f.len() != 3 {
                return Err(bad(format!(
                    "transform {k} has {} fixed parameters, expected 3",
                    f.len()
                )));
            }
            if p.iter().chain(f.iter()).any(|v| !v.is_finite()) {
                return Err(bad(format!("transform {k} holds non-finite numbers")));
            }
            out.push(from_itk_params(&p, &f));
        } else if params.is_some() {
            return Err(bad("Parameters line without a Transform line".into()));
        }
        Ok(())
    };
    let mut seen_banner = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with("#Insight Transform File") {
            seen_banner = true;
            continue;
        }
        if line.starts_with("#Transform") || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("Transform:") {
            flush(&mut kind, &mut params, &mut fixed)?;
            kind = Some(rest.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("Parameters:") {
            params = Some(nums(rest, "Parameters")?);
        } else if let Some(rest) = line.strip_prefix("FixedParameters:") {
            fixed = Some(nums(rest, "FixedParameters")?);
        } else {
            return Err(bad(format!(
                "unexpected line '{}' (not an ITK text transform?)",
                shown(line)
            )));
        }
    }
    flush(&mut kind, &mut params, &mut fixed)?;
    if !seen_banner {
        return Err(bad(
            "not an ITK text transform file (no '#Insight Transform File' line)".into(),
        ));
    }
    if out.is_empty() {
        return Err(bad("no affine transform found".into()));
    }
    Ok(out)
}

/// Read all transforms of an ITK text file as RAS reference→moving matrices.
pub fn read_itk(path: &Path) -> Result<Vec<Matrix4<f64>>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::input(format!("cannot read transform {}: {e}", path.display())))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    parse_itk(text, &path.display().to_string())
}

fn mat_var(buf: &mut Vec<u8>, name: &str, values: &[f64]) {
    for h in [0i32, values.len() as i32, 1, 0, name.len() as i32 + 1] {
        buf.extend_from_slice(&h.to_le_bytes());
    }
    buf.extend_from_slice(name.as_bytes());
    buf.push(0);
    for v in values {
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

/// ANTs `.mat` bytes (MATLAB v4, little-endian doubles) of one transform.
pub fn ants_mat_bytes(m: &Matrix4<f64>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(193);
    mat_var(&mut buf, ANTS_NAME, &to_itk_params(m));
    mat_var(&mut buf, "fixed", &[0.0; 3]);
    buf
}

/// Write one transform as an ANTs `.mat` file (what antsRegistration writes), atomically.
pub fn write_ants_mat(path: &Path, m: &Matrix4<f64>) -> Result<()> {
    let bytes = ants_mat_bytes(m);
    write_atomic(path, |w| w.write_all(&bytes))
}

/// Parse ANTs `.mat` bytes (MATLAB v4; double or single precision, either byte order).
pub fn parse_ants_mat(bytes: &[u8], origin: &str) -> Result<Matrix4<f64>> {
    let bad = |msg: &str| Error::input(format!("{origin}: {msg} (not an ANTs .mat transform?)"));
    let mut pos = 0;
    let mut params = None;
    let mut fixed = None;
    while pos < bytes.len() {
        if bytes.len() < pos + 20 {
            return Err(bad("truncated MATLAB v4 header"));
        }
        let raw = |k: usize, be: bool| {
            let b: [u8; 4] = bytes[pos + 4 * k..pos + 4 * k + 4].try_into().unwrap();
            if be {
                i32::from_be_bytes(b)
            } else {
                i32::from_le_bytes(b)
            }
        };
        // the type word is < 5000 in the file's own byte order
        let be = !(0..5000).contains(&raw(0, false));
        let ty = raw(0, be);
        let (rows, cols, imag, namlen) = (raw(1, be), raw(2, be), raw(3, be), raw(4, be));
        if !(0..5000).contains(&ty)
            || rows < 0
            || cols < 0
            || imag != 0
            || !(1..1000).contains(&namlen)
        {
            return Err(bad("unsupported MATLAB v4 variable"));
        }
        let prec = (ty / 10) % 10;
        let size = match prec {
            0 => 8,
            1 => 4,
            _ => {
                return Err(bad(
                    "only double or single precision variables are supported",
                ))
            }
        };
        // rows, cols and namlen come from the file: checked arithmetic, and the data must
        // lie inside the bytes we have (a crafted 2^31 × 2^31 header is just truncated)
        let end = (rows as usize)
            .checked_mul(cols as usize)
            .and_then(|n| n.checked_mul(size))
            .and_then(|len| (pos + 20 + namlen as usize).checked_add(len));
        let start = pos + 20 + namlen as usize;
        let end = match end {
            Some(e) if e <= bytes.len() => e,
            _ => return Err(bad("truncated MATLAB v4 data")),
        };
        let name = String::from_utf8_lossy(&bytes[pos + 20..start])
            .trim_end_matches('\0')
            .to_string();
        let vals: Vec<f64> = bytes[start..end]
            .chunks_exact(size)
            .map(|c| match (size, be) {
                (8, false) => f64::from_le_bytes(c.try_into().unwrap()),
                (8, true) => f64::from_be_bytes(c.try_into().unwrap()),
                (_, false) => f32::from_le_bytes(c.try_into().unwrap()) as f64,
                (_, true) => f32::from_be_bytes(c.try_into().unwrap()) as f64,
            })
            .collect();
        if name.starts_with("AffineTransform") || name.starts_with("MatrixOffsetTransformBase") {
            if vals.len() != 12 {
                return Err(bad("affine variable must hold 12 values"));
            }
            params = Some(vals);
        } else if name == "fixed" || name == "center" {
            if vals.len() != 3 {
                return Err(bad("'fixed' variable must hold 3 values"));
            }
            fixed = Some(vals);
        }
        pos = end;
    }
    let p = params.ok_or_else(|| bad("no AffineTransform variable"))?;
    let f = fixed.unwrap_or_else(|| vec![0.0; 3]);
    if p.iter().chain(f.iter()).any(|v| !v.is_finite()) {
        return Err(bad("non-finite numbers"));
    }
    Ok(from_itk_params(&p, &f))
}

/// Read an ANTs `.mat` transform as a RAS reference→moving matrix.
pub fn read_ants_mat(path: &Path) -> Result<Matrix4<f64>> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::input(format!("cannot read transform {}: {e}", path.display())))?;
    parse_ants_mat(&bytes, &path.display().to_string())
}

/// Read a transform file by extension: `.mat` (ANTs), `.x5`/`.h5` (X5) or ITK text (anything
/// else). Returns every transform the file holds.
pub fn read_any(path: &Path) -> Result<Vec<Matrix4<f64>>> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "mat" => Ok(vec![read_ants_mat(path)?]),
        "x5" | "h5" => read_x5(path),
        _ => read_itk(path),
    }
}

/// X5 bytes: one linear transform group holding every matrix (`ArrayLength` = N), RAS
/// reference→moving, with the reference grid as its domain when given (conventions.md).
/// String attributes are variable-length: nitransforms rejects fixed-length ones.
pub fn x5_bytes(transforms: &[Matrix4<f64>], reference: Option<&Grid>) -> Result<Vec<u8>> {
    use hdf5_pure::{AttrValue, FileBuilder};
    let n = transforms.len();
    let mut data = Vec::with_capacity(16 * n);
    for m in transforms {
        for i in 0..4 {
            for j in 0..4 {
                data.push(m[(i, j)]);
            }
        }
    }
    // one transform is stored as a plain 4×4 (what nitransforms writes and expects)
    let shape: &[u64] = if n == 1 { &[4, 4] } else { &[n as u64, 4, 4] };
    let mut b = FileBuilder::new();
    b.set_attr("Format", AttrValue::VarLenString("X5".into()));
    b.set_attr("Version", AttrValue::U16(1));
    let mut tg = b.create_group("TransformGroup");
    let mut g = tg.create_group("0");
    g.set_attr("Type", AttrValue::VarLenString("linear".into()));
    g.set_attr("SubType", AttrValue::VarLenString("affine".into()));
    g.set_attr("Representation", AttrValue::VarLenString("matrix".into()));
    g.set_attr("ArrayLength", AttrValue::I64(n as i64));
    g.set_attr(
        "Metadata",
        AttrValue::VarLenString(format!(
            "{{\"WrittenBy\": \"nifreeze-rs {}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
    );
    g.create_dataset("Transform")
        .with_f64_data(&data)
        .with_shape(shape);
    g.create_dataset("DimensionKinds")
        .with_ascii_strings(&["space", "space", "space", "space", "vector"])
        .map_err(|e| Error::runtime(format!("X5: {e}")))?;
    if let Some(grid) = reference {
        let mut d = g.create_group("Domain");
        d.create_dataset("Grid").with_u8_data(&[1]).with_shape(&[]);
        d.create_dataset("Size")
            .with_i64_data(&grid.dims.map(|v| v as i64));
        let a: Vec<f64> = (0..16).map(|k| grid.affine[(k / 4, k % 4)]).collect();
        d.create_dataset("Mapping")
            .with_f64_data(&a)
            .with_shape(&[4, 4]);
        g.add_group(d.finish());
    }
    tg.add_group(g.finish());
    b.add_group(tg.finish());
    b.finish()
        .map_err(|e| Error::runtime(format!("X5: cannot encode the file: {e}")))
}

/// Write every transform into one X5 file, atomically.
pub fn write_x5(path: &Path, transforms: &[Matrix4<f64>], reference: Option<&Grid>) -> Result<()> {
    if transforms.is_empty() {
        return Err(Error::runtime("write_x5: no transform to write"));
    }
    let bytes = x5_bytes(transforms, reference)?;
    write_atomic(path, |w| w.write_all(&bytes))
}

/// Read the linear transforms of an X5 file (first transform group) as RAS matrices.
pub fn read_x5(path: &Path) -> Result<Vec<Matrix4<f64>>> {
    let bad = |msg: String| Error::input(format!("{}: {msg}", path.display()));
    let bytes = std::fs::read(path)
        .map_err(|e| Error::input(format!("cannot read transform {}: {e}", path.display())))?;
    let f =
        hdf5_pure::File::from_bytes(bytes).map_err(|e| bad(format!("not an HDF5 file ({e})")))?;
    let ds = f
        .dataset("TransformGroup/0/Transform")
        .map_err(|_| bad("no TransformGroup/0/Transform dataset (not an X5 file?)".into()))?;
    let shape = ds.shape().map_err(|e| bad(e.to_string()))?;
    let v = ds.read_f64().map_err(|e| bad(e.to_string()))?;
    let ok = matches!(shape.as_slice(), [_, 4, 4] | [4, 4]);
    if !ok || v.len() % 16 != 0 || v.is_empty() {
        return Err(bad(format!(
            "Transform has shape {shape:?}, expected (N, 4, 4)"
        )));
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(bad("Transform holds non-finite numbers".into()));
    }
    Ok(v.chunks_exact(16).map(Matrix4::from_row_slice).collect())
}
