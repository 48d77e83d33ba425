//! Gradient tables after motion correction, and their FSL / MRtrix text.
//!
//! A corrected volume k is volume k resampled into the reference frame, so its diffusion
//! gradient, measured along g (scanner RAS) in the moved head, is g' = R_kᵀ·g in the
//! reference head (R_k the rotation of T_k; polar factor for an affine). FSL bvecs live in
//! image axes with x flipped when det(A) > 0: b = F·Dᵀ·g, D the (polar) rotation of the
//! affine's linear part, F = diag(−1, 1, 1) if det > 0 else I (conventions.md).

use super::fmt_exact;
use super::motion::polar_rotation;
use crate::image::Grid;
use crate::io::gradients::{ras_to_fsl, GradientTable};
use nalgebra::{Matrix4, Vector3};

/// Vectors shorter than this are b=0 "no direction" entries and stay exactly zero.
const ZERO_NORM: f64 = 1e-9;

fn unit_or_zero(v: Vector3<f64>) -> [f64; 3] {
    let n = v.norm();
    if n < ZERO_NORM {
        [0.0, 0.0, 0.0]
    } else {
        [v.x / n, v.y / n, v.z / n]
    }
}

/// The table of the corrected series: g'_k = R_kᵀ·g_k, renormalised; zero vectors (b=0)
/// stay zero and b-values are unchanged. One transform per volume (RAS reference→moving).
pub fn rotate_bvecs(table: &GradientTable, transforms: &[Matrix4<f64>]) -> GradientTable {
    assert_eq!(table.len(), transforms.len(), "one transform per volume");
    let bvecs = table
        .bvecs
        .iter()
        .zip(transforms)
        .map(|(g, t)| {
            let g = Vector3::from(*g);
            if g.norm() < ZERO_NORM {
                return [0.0; 3];
            }
            let r = polar_rotation(&t.fixed_view::<3, 3>(0, 0).into_owned());
            unit_or_zero(r.transpose() * g)
        })
        .collect();
    GradientTable {
        bvecs,
        bvals: table.bvals.clone(),
    }
}

/// FSL text of a table for images on `grid`: (bval, bvec). bval is one row; bvec three rows
/// (x, y, z) of N columns, b = F·Dᵀ·g renormalised (the conversion of
/// [`crate::io::gradients::ras_to_fsl`], the inverse of the reader's). Numbers use the shortest exact text;
/// each file ends with a newline.
pub fn fsl_text(table: &GradientTable, grid: &Grid) -> (String, String) {
    let vecs: Vec<[f64; 3]> = table
        .bvecs
        .iter()
        .map(|g| unit_or_zero(Vector3::from(ras_to_fsl(grid, *g))))
        .collect();
    let bval = table
        .bvals
        .iter()
        .map(|&b| fmt_exact(b))
        .collect::<Vec<_>>()
        .join(" ")
        + "\n";
    let mut bvec = String::new();
    for axis in 0..3 {
        bvec.push_str(
            &vecs
                .iter()
                .map(|v| fmt_exact(v[axis]))
                .collect::<Vec<_>>()
                .join(" "),
        );
        bvec.push('\n');
    }
    (bval, bvec)
}

/// MRtrix b-table text (`-grad`): one row `x y z b` per volume, x y z in scanner RAS.
pub fn mrtrix_text(table: &GradientTable) -> String {
    let mut s = String::new();
    for (g, b) in table.bvecs.iter().zip(&table.bvals) {
        s.push_str(&format!(
            "{} {} {} {}\n",
            fmt_exact(g[0]),
            fmt_exact(g[1]),
            fmt_exact(g[2]),
            fmt_exact(*b)
        ));
    }
    s
}
