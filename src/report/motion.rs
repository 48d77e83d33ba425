//! Motion parameters and QC metrics of RAS reference→moving transforms.
//!
//! Conventions (../shared/notes/conventions.md): T_k maps reference-head points to volume-k
//! points. Parameters are reported about a centre c (the volume centre): translations are
//! where c goes, t_c = A·c + t − c, and rotations are Euler angles of the rotation R with
//! R = Rz(rz)·Ry(ry)·Rx(rx) — rotations about the fixed RAS x, then y, then z axes
//! (scipy's extrinsic `"xyz"`). That convention reproduces the shared phantoms' truth.tsv
//! (rx ry rz against m00…m33) to its printed precision (5e-7°) on all 97 volumes.
//! For an affine T the rotation is the orthogonal factor of the polar decomposition.

use crate::{Error, Result};
use nalgebra::{Matrix3, Matrix4, Vector3};
use serde::{Deserialize, Serialize};

/// Radius of the sphere in Jenkinson's RMS deviation (FSL rmsdiff / mcflirt): 80 mm.
pub const RMS_RADIUS_MM: f64 = 80.0;

/// Head radius that turns rotations into millimetres in Power's FD: 50 mm.
pub const FD_RADIUS_MM: f64 = 50.0;

/// The orthogonal factor U·Vᵀ of the polar decomposition M = (U·Vᵀ)·(V·Σ·Vᵀ): the rotation
/// closest to M in the Frobenius norm. Equals M for a rotation; keeps det's sign, so a
/// reflection stays a reflection (needed for image axes stored LAS).
pub fn polar_rotation(m: &Matrix3<f64>) -> Matrix3<f64> {
    // A rotation already: skip the iteration so exact inputs stay exact.
    if (m.transpose() * m - Matrix3::identity()).abs().max() < 1e-12 {
        return *m;
    }
    // Newton's iteration X ← (X + X⁻ᵀ)/2 converges quadratically to the orthogonal polar
    // factor for any non-singular M, to full f64 precision (nalgebra's SVD stops ~1e-11 short).
    let mut x = *m;
    for _ in 0..100 {
        let Some(inv) = x.try_inverse() else {
            break;
        };
        let next = (x + inv.transpose()) * 0.5;
        let change = (next - x).abs().max();
        x = next;
        if change < 1e-15 {
            return x;
        }
    }
    // Singular or not converged: fall back to the SVD.
    let svd = m.svd(true, true);
    match (svd.u, svd.v_t) {
        (Some(u), Some(vt)) => u * vt,
        _ => Matrix3::identity(),
    }
}

/// Euler angles (rx, ry, rz) in radians with R = Rz(rz)·Ry(ry)·Rx(rx).
fn euler_xyz(r: &Matrix3<f64>) -> [f64; 3] {
    let cy = (r[(0, 0)] * r[(0, 0)] + r[(1, 0)] * r[(1, 0)]).sqrt();
    let ry = (-r[(2, 0)]).atan2(cy);
    if cy > 1e-9 {
        [r[(2, 1)].atan2(r[(2, 2)]), ry, r[(1, 0)].atan2(r[(0, 0)])]
    } else {
        // Gimbal lock (|ry| = 90°): only rx ∓ rz is defined; put it all in rx.
        [(-r[(1, 2)]).atan2(r[(1, 1)]), ry, 0.0]
    }
}

/// Rigid parameters of `t` about `centre`: [tx, ty, tz] in mm (t_c = A·c + t − c, the
/// displacement of the centre) and [rx, ry, rz] in degrees (R = Rz·Ry·Rx, see module docs).
pub fn rigid_parameters(t: &Matrix4<f64>, centre: &Vector3<f64>) -> [f64; 6] {
    let a = t.fixed_view::<3, 3>(0, 0).into_owned();
    let tr = Vector3::new(t[(0, 3)], t[(1, 3)], t[(2, 3)]);
    let tc = a * centre + tr - centre;
    let e = euler_xyz(&polar_rotation(&a));
    [
        tc.x,
        tc.y,
        tc.z,
        e[0].to_degrees(),
        e[1].to_degrees(),
        e[2].to_degrees(),
    ]
}

/// Power's framewise displacement of consecutive parameter sets (tx ty tz mm, rx ry rz deg):
/// FD_k = Σ|Δt| + 50 mm · Σ|Δθ| (θ in radians), FD_0 = 0.
pub fn framewise_displacement(params: &[[f64; 6]]) -> Vec<f64> {
    let mut fd = vec![0.0; params.len()];
    for k in 1..params.len() {
        let (p, q) = (&params[k - 1], &params[k]);
        let trans: f64 = (0..3).map(|i| (q[i] - p[i]).abs()).sum();
        let rot: f64 = (3..6).map(|i| (q[i] - p[i]).to_radians().abs()).sum();
        fd[k] = trans + FD_RADIUS_MM * rot;
    }
    fd
}

/// Jenkinson's RMS deviation between two affines over a sphere of radius `radius` mm about
/// `centre` (FSL rmsdiff): M = T1·T2⁻¹ − I, A = M[:3,:3], t = M[:3,3] + A·c,
/// RMS = sqrt(tᵀt + R²/5 · tr(AᵀA)). `None` when T2 is singular.
pub fn rms_deviation(
    t1: &Matrix4<f64>,
    t2: &Matrix4<f64>,
    centre: &Vector3<f64>,
    radius: f64,
) -> Option<f64> {
    let m = t1 * t2.try_inverse()? - Matrix4::identity();
    let a = m.fixed_view::<3, 3>(0, 0).into_owned();
    let t = Vector3::new(m[(0, 3)], m[(1, 3)], m[(2, 3)]) + a * centre;
    Some((t.dot(&t) + radius * radius / 5.0 * (a.transpose() * a).trace()).sqrt())
}

/// One volume's motion summary (a row of motion.tsv without the matrix, and of summary.json).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MotionRow {
    /// Position in the 4-D series.
    pub index: usize,
    /// b-value (s/mm²).
    pub bvalue: f64,
    /// tx ty tz (mm) and rx ry rz (deg) about the volume centre.
    pub params: [f64; 6],
    /// Power's framewise displacement from the previous volume (mm); 0 for the first.
    pub fd: f64,
    /// Jenkinson RMS deviation from the identity (mm).
    pub rms_abs: f64,
    /// Jenkinson RMS deviation from the previous volume (mm); 0 for the first.
    pub rms_rel: f64,
}

/// Motion rows of a series: parameters about `centre`, FD and RMS in 4-D order.
/// `transforms` and `bvals` have one entry per volume.
pub fn motion_rows(
    transforms: &[Matrix4<f64>],
    bvals: &[f64],
    centre: &Vector3<f64>,
) -> Vec<MotionRow> {
    assert_eq!(transforms.len(), bvals.len(), "one b-value per transform");
    let params: Vec<[f64; 6]> = transforms
        .iter()
        .map(|t| rigid_parameters(t, centre))
        .collect();
    let fd = framewise_displacement(&params);
    let id = Matrix4::identity();
    (0..transforms.len())
        .map(|k| MotionRow {
            index: k,
            bvalue: bvals[k],
            params: params[k],
            fd: fd[k],
            rms_abs: rms_deviation(&transforms[k], &id, centre, RMS_RADIUS_MM).unwrap_or(f64::NAN),
            rms_rel: if k == 0 {
                0.0
            } else {
                rms_deviation(&transforms[k], &transforms[k - 1], centre, RMS_RADIUS_MM)
                    .unwrap_or(f64::NAN)
            },
        })
        .collect()
}

/// Column names of motion.tsv, in order.
pub fn motion_tsv_header() -> Vec<String> {
    let mut h: Vec<String> = [
        "index", "bvalue", "tx", "ty", "tz", "rx", "ry", "rz", "fd", "rms_abs", "rms_rel",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for r in 0..4 {
        for c in 0..4 {
            h.push(format!("m{r}{c}"));
        }
    }
    h
}

/// motion.tsv: a header row, then one tab-separated row per volume. Parameters, FD and RMS
/// are fixed-point with 6 decimals (µm / µdeg: for reading); the b-value and m00…m33 use the
/// shortest text that parses back to the identical f64 ([`super::fmt_exact`]), so the
/// matrices in motion.tsv equal the transform files bit for bit. Lines end with `\n`.
pub fn motion_tsv(rows: &[MotionRow], transforms: &[Matrix4<f64>]) -> String {
    assert_eq!(rows.len(), transforms.len(), "one transform per row");
    let mut s = motion_tsv_header().join("\t");
    s.push('\n');
    for (row, t) in rows.iter().zip(transforms) {
        let mut f: Vec<String> = vec![row.index.to_string(), super::fmt_exact(row.bvalue)];
        for p in row.params {
            f.push(fixed6(p));
        }
        for v in [row.fd, row.rms_abs, row.rms_rel] {
            f.push(fixed6(v));
        }
        for r in 0..4 {
            for c in 0..4 {
                f.push(super::fmt_exact(t[(r, c)]));
            }
        }
        s.push_str(&f.join("\t"));
        s.push('\n');
    }
    s
}

/// Names (with units) of the eddy-current columns motion.tsv gains with the eddy model: the
/// field's constant displacement along the phase-encode axis (mm) and its gradient in scanner
/// RAS (mm of displacement per metre of position).
pub const EDDY_COLUMNS: [&str; 4] = [
    "ec_const_mm",
    "ec_grad_x_mm_per_m",
    "ec_grad_y_mm_per_m",
    "ec_grad_z_mm_per_m",
];

/// [`motion_tsv`] plus, with the eddy-current model, its parameters per volume as the
/// [`EDDY_COLUMNS`] after m33 (fixed-point, 6 decimals).
pub fn motion_tsv_eddy(
    rows: &[MotionRow],
    transforms: &[Matrix4<f64>],
    eddy: Option<&[crate::registration::eddy::EddyParams]>,
) -> String {
    let base = motion_tsv(rows, transforms);
    let Some(eddy) = eddy else {
        return base;
    };
    assert_eq!(eddy.len(), rows.len(), "one eddy parameter set per row");
    let mut s = String::with_capacity(base.len() + 60 * rows.len());
    for (n, line) in base.lines().enumerate() {
        s.push_str(line);
        if n == 0 {
            for c in EDDY_COLUMNS {
                s.push('\t');
                s.push_str(c);
            }
        } else {
            let p = &eddy[n - 1];
            for v in [
                p.constant,
                1e3 * p.gradient.x,
                1e3 * p.gradient.y,
                1e3 * p.gradient.z,
            ] {
                s.push('\t');
                s.push_str(&fixed6(v));
            }
        }
        s.push('\n');
    }
    s
}

/// `{:.6}` without a negative zero.
fn fixed6(x: f64) -> String {
    let s = format!("{x:.6}");
    if s == "-0.000000" {
        "0.000000".into()
    } else {
        s
    }
}

/// The matrices of a motion table (motion.tsv or the phantoms' truth.tsv): columns found by
/// their header names m00…m33, in row order. Errors name the line and the problem.
pub fn read_motion_tsv(text: &str) -> Result<Vec<Matrix4<f64>>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| Error::input("motion table is empty: expected a header row with m00…m33"))?
        .split('\t')
        .map(str::trim)
        .collect();
    let mut cols = [0usize; 16];
    for r in 0..4 {
        for c in 0..4 {
            let name = format!("m{r}{c}");
            cols[4 * r + c] = header.iter().position(|h| *h == name).ok_or_else(|| {
                Error::input(format!("motion table has no column '{name}' in its header"))
            })?;
        }
    }
    let mut out = Vec::new();
    for (n, line) in lines.enumerate() {
        let f: Vec<&str> = line.split('\t').map(str::trim).collect();
        let mut m = Matrix4::zeros();
        for (i, &col) in cols.iter().enumerate() {
            let v: f64 = f.get(col).and_then(|s| s.parse().ok()).ok_or_else(|| {
                Error::input(format!(
                    "motion table row {}: column {} is missing or not a number",
                    n + 1,
                    header[col]
                ))
            })?;
            m[(i / 4, i % 4)] = v;
        }
        out.push(m);
    }
    Ok(out)
}
