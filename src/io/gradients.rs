//! Gradient tables: FSL bval/bvec, MRtrix b-tables, BIDS sidecar discovery.
//!
//! Internally there is one representation: unit vectors in scanner RAS and b in s/mm².

/// One row per 4-D volume: unit gradient direction in scanner RAS (zero for b=0) and b (s/mm²).
#[derive(Clone, Debug, PartialEq)]
pub struct GradientTable {
    pub bvecs: Vec<[f64; 3]>,
    pub bvals: Vec<f64>,
}

impl GradientTable {
    pub fn len(&self) -> usize {
        self.bvals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bvals.is_empty()
    }

    /// Indices of the b=0 volumes (b ≤ threshold).
    pub fn b0_indices(&self, threshold: f64) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| self.bvals[i] <= threshold)
            .collect()
    }

    /// Indices of the diffusion-weighted volumes (b > threshold).
    pub fn dw_indices(&self, threshold: f64) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| self.bvals[i] > threshold)
            .collect()
    }
}

use crate::image::Grid;
use crate::{Error, Result};
use clap::Args;
use nalgebra::{Matrix3, Vector3};
use std::path::{Path, PathBuf};

/// Two b-values within this many s/mm² belong to the same shell (nifreeze's tolerance).
pub const SHELL_TOLERANCE: f64 = 100.0;
/// Fewest diffusion-weighted directions a tensor fit can use.
pub const MIN_DW_DIRECTIONS: usize = 6;

/// A gradient table as loaded, with where it came from and anything the user should know.
#[derive(Clone, Debug)]
pub struct LoadedGradients {
    pub table: GradientTable,
    /// E.g. "FSL sub-01_dwi.bval + sub-01_dwi.bvec (BIDS sidecars)".
    pub source: String,
    pub warnings: Vec<String>,
}

/// A b-value shell: mean b and the volumes in it.
#[derive(Clone, Debug, PartialEq)]
pub struct Shell {
    pub bvalue: f64,
    pub indices: Vec<usize>,
}

/// Cluster the diffusion-weighted b-values into shells: sorted b-values that lie within
/// [`SHELL_TOLERANCE`] of their shell's smallest member share a shell.
pub fn shells(table: &GradientTable, b0_threshold: f64) -> Vec<Shell> {
    let mut dw = table.dw_indices(b0_threshold);
    dw.sort_by(|&a, &b| table.bvals[a].total_cmp(&table.bvals[b]).then(a.cmp(&b)));
    let mut out: Vec<Shell> = Vec::new();
    let mut first = f64::NAN;
    for i in dw {
        let b = table.bvals[i];
        match out.last_mut() {
            Some(s) if b - first <= SHELL_TOLERANCE => s.indices.push(i),
            _ => {
                first = b;
                out.push(Shell {
                    bvalue: 0.0,
                    indices: vec![i],
                });
            }
        }
    }
    for s in &mut out {
        s.indices.sort_unstable();
        s.bvalue = s.indices.iter().map(|&i| table.bvals[i]).sum::<f64>() / s.indices.len() as f64;
    }
    out
}

/// The file name without .nii / .nii.gz, used to find BIDS sidecars.
fn sidecar_stem(dwi: &Path) -> PathBuf {
    let name = dwi
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name
        .strip_suffix(".nii.gz")
        .or_else(|| name.strip_suffix(".nii"))
        .unwrap_or(&name)
        .to_string();
    dwi.with_file_name(stem)
}

fn with_ext(stem: &Path, ext: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(ext);
    PathBuf::from(s)
}

fn read_text(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::input(format!("gradient file {} does not exist", path.display()))
        }
        _ => Error::input(format!("cannot read gradient file {}: {e}", path.display())),
    })?;
    // a UTF-8 byte-order mark (Windows editors) is not part of the first number
    Ok(text
        .strip_prefix('\u{feff}')
        .map(str::to_string)
        .unwrap_or(text))
}

/// `'tok'` for a message, naming the characters one cannot see (a byte-order mark, a
/// zero-width or non-breaking space, a control character) so the user can find them.
pub fn describe_token(t: &str) -> String {
    let hidden: Vec<String> = t
        .chars()
        .filter(|c| !c.is_ascii_graphic())
        .map(|c| {
            let name = match c {
                '\u{feff}' => " BYTE ORDER MARK",
                '\u{200b}' => " ZERO WIDTH SPACE",
                '\u{a0}' => " NO-BREAK SPACE",
                _ if c.is_control() => " control character",
                _ => "",
            };
            format!("U+{:04X}{name}", c as u32)
        })
        .collect();
    if hidden.is_empty() {
        format!("'{t}'")
    } else {
        format!(
            "'{}' (it contains the invisible character{} {})",
            t.escape_debug(),
            if hidden.len() > 1 { "s" } else { "" },
            hidden.join(", ")
        )
    }
}

/// Parse whitespace-separated numbers, one row per non-empty, non-comment line.
fn parse_rows(path: &Path, text: &str) -> Result<Vec<Vec<f64>>> {
    let mut rows = Vec::new();
    for (ln, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let row = line
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|t| !t.is_empty())
            .map(|t| {
                t.parse::<f64>().map_err(|_| {
                    Error::input(format!(
                        "{} line {}: {} is not a number",
                        path.display(),
                        ln + 1,
                        describe_token(t)
                    ))
                })
            })
            .collect::<Result<Vec<f64>>>()?;
        // non-finite values are judged per volume by `validate` (fine on a b=0 vector)
        rows.push(row);
    }
    Ok(rows)
}

/// Rotation part of a voxel-to-world affine with voxel sizes removed (polar decomposition
/// when the affine is sheared), as FSL's and MRtrix's b-vector conventions need it.
fn direction_matrix(grid: &Grid) -> Matrix3<f64> {
    let lin: Matrix3<f64> = grid.affine.fixed_view::<3, 3>(0, 0).into();
    let mut d = lin;
    for c in 0..3 {
        let n = d.column(c).norm();
        if n > 0.0 {
            d.column_mut(c).scale_mut(1.0 / n);
        }
    }
    if (d.transpose() * d - Matrix3::identity()).abs().max() > 1e-6 {
        let svd = d.svd(true, true);
        if let (Some(u), Some(vt)) = (svd.u, svd.v_t) {
            d = u * vt;
        }
    }
    d
}

/// FSL's x flip: bvecs are stored in a radiological (det<0) voxel frame.
fn fsl_flip(grid: &Grid) -> Matrix3<f64> {
    let det = grid.affine.fixed_view::<3, 3>(0, 0).determinant();
    if det > 0.0 {
        Matrix3::from_diagonal(&Vector3::new(-1.0, 1.0, 1.0))
    } else {
        Matrix3::identity()
    }
}

/// FSL image-axis b-vector → scanner RAS: g = D·F·b.
pub fn fsl_to_ras(grid: &Grid, b: [f64; 3]) -> [f64; 3] {
    let g = direction_matrix(grid) * fsl_flip(grid) * Vector3::from(b);
    [g.x, g.y, g.z]
}

/// Scanner RAS → FSL image-axis b-vector: b = F·Dᵀ·g.
pub fn ras_to_fsl(grid: &Grid, g: [f64; 3]) -> [f64; 3] {
    let b = fsl_flip(grid) * direction_matrix(grid).transpose() * Vector3::from(g);
    [b.x, b.y, b.z]
}

/// Read FSL bval + bvec files (bvec 3×N or N×3) into scanner RAS.
pub fn read_fsl(
    bval: &Path,
    bvec: &Path,
    grid: &Grid,
    n_volumes: usize,
) -> Result<(Vec<f64>, Vec<[f64; 3]>)> {
    let bvals: Vec<f64> = parse_rows(bval, &read_text(bval)?)?
        .into_iter()
        .flatten()
        .collect();
    let rows = parse_rows(bvec, &read_text(bvec)?)?;
    if bvals.len() != n_volumes {
        return Err(Error::input(format!(
            "{} has {} b-values but the series has {n_volumes} volumes",
            bval.display(),
            bvals.len()
        )));
    }
    let vecs: Vec<[f64; 3]> = if rows.len() == 3 && rows.iter().all(|r| r.len() == n_volumes) {
        (0..n_volumes)
            .map(|i| [rows[0][i], rows[1][i], rows[2][i]])
            .collect()
    } else if rows.len() == n_volumes && rows.iter().all(|r| r.len() == 3) {
        rows.iter().map(|r| [r[0], r[1], r[2]]).collect()
    } else {
        let shape = format!("{}×{}", rows.len(), rows.first().map_or(0, |r| r.len()));
        return Err(Error::input(format!(
            "{} holds a {shape} table; expected 3×{n_volumes} (or {n_volumes}×3) for {n_volumes} volumes",
            bvec.display()
        )));
    };
    Ok((
        bvals,
        vecs.into_iter().map(|b| fsl_to_ras(grid, b)).collect(),
    ))
}

/// Read an MRtrix b-table (`x y z b` per row, scanner RAS).
pub fn read_mrtrix(path: &Path, n_volumes: usize) -> Result<(Vec<f64>, Vec<[f64; 3]>)> {
    let rows = parse_rows(path, &read_text(path)?)?;
    if let Some(r) = rows.iter().find(|r| r.len() != 4) {
        return Err(Error::input(format!(
            "{}: every row must be `x y z b`, found a row with {} values",
            path.display(),
            r.len()
        )));
    }
    if rows.len() != n_volumes {
        return Err(Error::input(format!(
            "{} has {} rows but the series has {n_volumes} volumes",
            path.display(),
            rows.len()
        )));
    }
    Ok((
        rows.iter().map(|r| r[3]).collect(),
        rows.iter().map(|r| [r[0], r[1], r[2]]).collect(),
    ))
}

/// Every gradient file [`load`] may read for `dwi` with these options, with the option that
/// names it ("--grad", "--bval", "--bvec", or "gradient sidecar" for every sidecar candidate that
/// exists): what a command must never overwrite.
pub fn input_files(dwi: &Path, args: &GradientArgs) -> Vec<(&'static str, PathBuf)> {
    let mut v = Vec::new();
    if let Some(g) = &args.grad {
        v.push(("--grad", g.clone()));
    }
    if let Some(b) = &args.bval {
        v.push(("--bval", b.clone()));
    }
    if let Some(b) = &args.bvec {
        v.push(("--bvec", b.clone()));
    }
    for f in args.fslgrad.iter().flatten() {
        v.push(("--fslgrad", f.clone()));
    }
    let stem = sidecar_stem(dwi);
    for ext in [".bval", ".bvec", ".b"] {
        let p = with_ext(&stem, ext);
        if p.exists() {
            v.push(("gradient sidecar", p));
        }
    }
    v
}

/// Load the gradient table of `dwi` from the options, or from BIDS sidecars when none is given.
pub fn load(
    dwi: &Path,
    args: &GradientArgs,
    grid: &Grid,
    n_volumes: usize,
) -> Result<LoadedGradients> {
    let file = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let (bvals, vecs, source) = if let Some(grad) = &args.grad {
        let (b, v) = read_mrtrix(grad, n_volumes)?;
        (b, v, format!("MRtrix b-table {}", file(grad)))
    } else if let Some((bval, bvec)) = args.fsl_files() {
        let (b, v) = read_fsl(bval, bvec, grid, n_volumes)?;
        (b, v, format!("FSL {} + {}", file(bval), file(bvec)))
    } else {
        let stem = sidecar_stem(dwi);
        let (bval, bvec, btab) = (
            with_ext(&stem, ".bval"),
            with_ext(&stem, ".bvec"),
            with_ext(&stem, ".b"),
        );
        if bval.is_file() && bvec.is_file() {
            let (b, v) = read_fsl(&bval, &bvec, grid, n_volumes)?;
            (
                b,
                v,
                format!("FSL {} + {} (BIDS sidecars)", file(&bval), file(&bvec)),
            )
        } else if btab.is_file() {
            let (b, v) = read_mrtrix(&btab, n_volumes)?;
            (b, v, format!("MRtrix b-table {} (sidecar)", file(&btab)))
        } else {
            return Err(Error::input(format!(
                "no gradient table for {}: expected {} + {} or {} beside it; or give --bval/--bvec or --grad",
                dwi.display(),
                file(&bval),
                file(&bvec),
                file(&btab)
            )));
        }
    };
    let (table, warnings) = validate(bvals, vecs, args.b0_threshold, &source)?;
    Ok(LoadedGradients {
        table,
        source,
        warnings,
    })
}

/// Check and normalise raw b-values and RAS vectors; b=0 rows get a zero vector.
fn validate(
    bvals: Vec<f64>,
    vecs: Vec<[f64; 3]>,
    b0_threshold: f64,
    source: &str,
) -> Result<(GradientTable, Vec<String>)> {
    let mut warnings = Vec::new();
    let mut nonfinite_b0 = Vec::new();
    let mut out = Vec::with_capacity(vecs.len());
    for (i, (&b, v)) in bvals.iter().zip(&vecs).enumerate() {
        if !b.is_finite() {
            return Err(Error::input(format!(
                "{source}: volume {i} has a non-finite b-value {b}; fix the gradient file"
            )));
        }
        if b < 0.0 {
            return Err(Error::input(format!(
                "{source}: volume {i} has a negative b-value {b}; fix the gradient file"
            )));
        }
        if b <= b0_threshold {
            // A b=0 volume has no direction; some tools write `nan nan nan` for it (DIPY's
            // small_64D.bvec): accepted, and said so.
            if v.iter().any(|x| !x.is_finite()) {
                nonfinite_b0.push(i.to_string());
            }
            out.push([0.0; 3]);
            continue;
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(Error::input(format!(
                "{source}: volume {i} has b={b} but a non-finite gradient vector ({}, {}, {}); fix the table (or raise --b0-threshold if it is a b=0 volume)",
                v[0], v[1], v[2]
            )));
        }
        let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        if n == 0.0 {
            return Err(Error::input(format!(
                "{source}: volume {i} has b={b} but a zero gradient vector; fix the table (or raise --b0-threshold)"
            )));
        }
        if (n - 1.0).abs() > 0.1 {
            return Err(Error::input(format!(
                "{source}: volume {i} has a gradient vector of length {n:.3}; vectors must be unit length"
            )));
        }
        if (n - 1.0).abs() > 1e-3 {
            warnings.push(format!(
                "volume {i}: gradient vector length {n:.4} renormalised to 1"
            ));
        }
        out.push([v[0] / n, v[1] / n, v[2] / n]);
    }
    if !nonfinite_b0.is_empty() {
        warnings.push(format!(
            "{source}: b=0 volume{} {} {} a non-finite gradient vector (e.g. nan nan nan); taken as 0 (a b=0 volume has no direction)",
            if nonfinite_b0.len() > 1 { "s" } else { "" },
            nonfinite_b0.join(", "),
            if nonfinite_b0.len() > 1 { "have" } else { "has" }
        ));
    }
    Ok((GradientTable { bvecs: out, bvals }, warnings))
}

/// The rules every model needs: enough directions and (unless ignored) a b=0 reference.
pub fn check_usable(table: &GradientTable, b0_threshold: f64, ignore_b0: bool) -> Result<()> {
    let n_dw = table.dw_indices(b0_threshold).len();
    if n_dw < MIN_DW_DIRECTIONS {
        return Err(Error::input(format!(
            "only {n_dw} diffusion-weighted volumes (b > {b0_threshold}); at least {MIN_DW_DIRECTIONS} are needed"
        )));
    }
    if !ignore_b0 && table.b0_indices(b0_threshold).is_empty() {
        return Err(Error::input(format!(
            "no b=0 volume (b ≤ {b0_threshold}); give --ignore-b0 to use the 98th percentile of the data as S0, or raise --b0-threshold"
        )));
    }
    Ok(())
}

/// The gradient import options every command that reads a DWI shares (clap's option group,
/// as MRtrix's gradient import options).
/// Where the gradient table comes from. Without any of these, BIDS sidecars next to the
/// DWI file are used: `<stem>.bval` + `<stem>.bvec`, else `<stem>.b`.
#[derive(Args, Debug, Clone, Default)]
pub struct GradientArgs {
    /// FSL b-values file (use with --bvec).
    #[arg(
        long,
        visible_alias = "bvals",
        value_name = "FILE",
        requires = "bvec",
        conflicts_with_all = ["grad", "fslgrad"]
    )]
    pub bval: Option<PathBuf>,
    /// FSL b-vectors file, image axes (use with --bval).
    #[arg(
        long,
        visible_alias = "bvecs",
        value_name = "FILE",
        requires = "bval",
        conflicts_with_all = ["grad", "fslgrad"]
    )]
    pub bvec: Option<PathBuf>,
    /// FSL b-vectors and b-values files, in MRtrix's order (`-fslgrad bvecs bvals`).
    #[arg(long, num_args = 2, value_names = ["BVECS", "BVALS"], conflicts_with = "grad")]
    pub fslgrad: Option<Vec<PathBuf>>,
    /// MRtrix b-table: one row `x y z b` per volume, scanner RAS, b in s/mm².
    #[arg(long, value_name = "FILE")]
    pub grad: Option<PathBuf>,
    /// Volumes with b at or below this (s/mm²) are b=0 references.
    #[arg(long, value_name = "B", default_value_t = 50.0)]
    pub b0_threshold: f64,
    /// Allow series without b=0 volumes (S0 = 98th percentile of the masked data).
    #[arg(long)]
    pub ignore_b0: bool,
}

impl GradientArgs {
    /// The FSL (bval, bvec) pair, from --bval/--bvec or from --fslgrad (given bvecs first).
    pub fn fsl_files(&self) -> Option<(&PathBuf, &PathBuf)> {
        match (&self.bval, &self.bvec, &self.fslgrad) {
            (Some(bval), Some(bvec), _) => Some((bval, bvec)),
            (_, _, Some(pair)) if pair.len() == 2 => Some((&pair[1], &pair[0])),
            _ => None,
        }
    }
}
