//! What a leave-one-volume-out fit needs from a gradient table: the one rule, used by the
//! engine (so by `estimate` and `predict` alike) and checked by the commands before any work.
//!
//! **Possible** means every fold is identifiable: the design matrix of the rows a fold fits
//! (every diffusion-weighted volume but the held-out one, plus the S0 sample when there is
//! one) has full column rank — 7 for DTI, 22 for DKI. For DKI the rank is taken with every
//! b-value replaced by its shell's mean: b-values jittered within a shell (scanners report 995,
//! 1000, 1005) carry no information that separates diffusion from kurtosis, and would otherwise
//! make a single-shell DKI design nominally full-rank but hopelessly conditioned. (DTI keeps
//! the measured b-values: without an S0 row, as `predict` fits it, DIPY and nifreeze fit it on
//! single-shell data, whose in-shell predictions do not depend on the intercept/trace split.)
//!
//! What that means, with the S0 row `estimate` always adds: a well-sampled shell determines the
//! 15 even spherical harmonics of degree ≤ 4 of the log-signal, S0 one more; DKI's other six
//! unknowns (the diffusion/kurtosis split of degrees 0 and 2) need six more volumes on other
//! shells, in every fold — so at least 22 diffusion-weighted volumes, two shells, and e.g. 7
//! volumes beside a 30-direction shell (6 are enough for the whole series, not for the fold that
//! loses one of them). DTI needs 6 directions not on a common quadric cone, in every fold.
//!
//! **Reliable** is measured, not derived: see [`warnings`].

use super::design;
use super::linalg;
use super::ModelKind;
use crate::io::gradients::{shells, GradientTable};
use crate::{Error, Result};
use nalgebra::DMatrix;

/// Relative singular-value threshold below which a fold's design counts as rank-deficient.
const RANK_TOL: f64 = 1e-10;

/// Diffusion-weighted volumes below which DKI predictions were measured to be poor
/// registration targets (twice its 22 parameters). See [`warnings`].
pub const DKI_RELIABLE_DW_VOLUMES: usize = 44;

fn name(kind: ModelKind) -> &'static str {
    match kind {
        ModelKind::Dti => "DTI",
        ModelKind::Dki => "DKI",
    }
}

/// Refuse a gradient table on which some leave-one-out fold of `kind` is not identifiable (see
/// the module doc). `s0_sample`: S0 is appended to every fold as one b=0 row.
pub fn check(
    kind: ModelKind,
    table: &GradientTable,
    b0_threshold: f64,
    s0_sample: bool,
) -> Result<()> {
    let p = design::n_params(kind);
    let shell_list = shells(table, b0_threshold);
    let shell_text = || {
        shell_list
            .iter()
            .map(|s| format!("b≈{:.0} ({} volumes)", s.bvalue, s.indices.len()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Rows in the order of the shells, b-values replaced by their shell means.
    let mut rows: Vec<(usize, f64, [f64; 3])> = Vec::new();
    for s in &shell_list {
        for &k in &s.indices {
            let b = match kind {
                ModelKind::Dki => s.bvalue,
                ModelKind::Dti => table.bvals[k],
            };
            rows.push((k, b / 1000.0, table.bvecs[k]));
        }
    }
    let n_dw = rows.len();
    let extra = usize::from(s0_sample);
    if kind == ModelKind::Dki && shell_list.len() < 2 {
        return Err(Error::input(format!(
            "DKI needs diffusion-weighted volumes in at least two non-zero b-value shells, but the \
             series has one: {}; use --model dti",
            shell_text()
        )));
    }
    if n_dw + extra < p + 1 {
        return Err(Error::input(format!(
            "{} leave-one-out fits need at least {} diffusion-weighted volumes (b > {b0_threshold}); \
             the series has {n_dw}",
            name(kind),
            p + 1 - extra
        )));
    }
    let cols = design::columns(kind);
    let design_of = |skip: Option<usize>| {
        let mut x: Vec<f64> = Vec::with_capacity((n_dw + extra) * p);
        let mut r = 0;
        for (i, &(_, b, g)) in rows.iter().enumerate() {
            if Some(i) != skip {
                x.extend(design::row(&cols, b, g));
                r += 1;
            }
        }
        if s0_sample {
            x.extend(design::row(&cols, 0.0, [0.0; 3]));
            r += 1;
        }
        DMatrix::from_row_slice(r, p, &x)
    };
    let full_rank = |m: &DMatrix<f64>| {
        let sv = linalg::singular_values(m);
        sv[p - 1] > RANK_TOL * sv[0]
    };
    if !full_rank(&design_of(None)) {
        return Err(Error::input(format!(
            "the gradient directions do not determine a {} model (its design matrix is \
             rank-deficient; shells: {}); check the b-vectors{}",
            name(kind),
            shell_text(),
            if kind == ModelKind::Dki {
                ", or use --model dti"
            } else {
                ""
            }
        )));
    }
    for (i, &(k, _, _)) in rows.iter().enumerate() {
        if !full_rank(&design_of(Some(i))) {
            let alone = shell_list
                .iter()
                .any(|s| s.indices.len() == 1 && s.indices[0] == k);
            let why = if kind == ModelKind::Dki && alone {
                format!(
                    "it is the only volume of its shell, and the others ({}) leave fewer than two \
                     shells",
                    shell_text()
                )
            } else {
                "the remaining directions are too few or too alike".to_string()
            };
            return Err(Error::input(format!(
                "a {} fit leaving out volume {k} is not determined: {why}; acquire more \
                 directions, or use a simpler model",
                name(kind)
            )));
        }
    }
    Ok(())
}

/// Warnings for a possible fit that was measured to be unreliable.
///
/// DKI below [`DKI_RELIABLE_DW_VOLUMES`] diffusion-weighted volumes: with only a few more
/// samples than its 22 parameters per fold, leave-one-out predictions are noisy registration
/// targets. Measured on the bundled sample (24 diffusion-weighted volumes, two shells, `-j 2`,
/// median / worst per-volume error): see the README's "Model requirements".
pub fn warnings(kind: ModelKind, table: &GradientTable, b0_threshold: f64) -> Vec<String> {
    let n_dw = table.dw_indices(b0_threshold).len();
    let mut w = Vec::new();
    if kind == ModelKind::Dki && n_dw < DKI_RELIABLE_DW_VOLUMES {
        w.push(format!(
            "DKI with {n_dw} diffusion-weighted volumes (fewer than {DKI_RELIABLE_DW_VOLUMES}, twice \
             its 22 parameters): its leave-one-out predictions are noisy; measured on such data \
             it was less accurate than DTI, consider --model dti (see the README)"
        ));
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unit vectors in general position (a seeded LCG: no symmetry puts them on a common
    /// quadric, as the golden spiral of 6 points is).
    fn directions(n: usize, seed: u64) -> Vec<[f64; 3]> {
        let mut state = 0x2545_f491_4f6c_dd1d_u64 ^ seed;
        let mut uniform = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        };
        let mut out = Vec::new();
        while out.len() < n {
            let g = [uniform(), uniform(), uniform()];
            let r = (g[0] * g[0] + g[1] * g[1] + g[2] * g[2]).sqrt();
            if (0.2..=1.0).contains(&r) {
                out.push([g[0] / r, g[1] / r, g[2] / r]);
            }
        }
        out
    }

    fn table(shells: &[(f64, usize)]) -> GradientTable {
        let mut bvals = vec![0.0];
        let mut bvecs = vec![[0.0; 3]];
        for &(b, n) in shells {
            for (i, g) in directions(n, b as u64).into_iter().enumerate() {
                // Scanner-style jitter within a shell.
                bvals.push(b + (i % 3) as f64 * 5.0 - 5.0);
                bvecs.push(g);
            }
        }
        GradientTable { bvals, bvecs }
    }

    #[test]
    fn dki_needs_two_shells_in_every_fold_and_enough_rows() {
        let ok = |sh: &[(f64, usize)]| check(ModelKind::Dki, &table(sh), 50.0, true);
        // One jittered shell: nominally distinct b-values, but not two shells.
        assert!(ok(&[(1000.0, 60)])
            .unwrap_err()
            .to_string()
            .contains("has one: b≈1000"));
        // With the S0 row, one well-sampled shell determines the 15 even harmonics of degree
        // ≤ 4 (plus S0: 16 of 22); the second shell must supply the other six (the diffusion
        // part of degrees 0 and 2), in every fold: 6 volumes are enough for the whole series
        // but not for the fold that loses one of them, 7 are.
        let e = ok(&[(1000.0, 30), (2000.0, 2)]).unwrap_err().to_string();
        assert!(e.contains("rank-deficient"), "{e}");
        let e = ok(&[(1000.0, 30), (2000.0, 6)]).unwrap_err().to_string();
        assert!(e.contains("leaving out volume"), "{e}");
        assert!(ok(&[(1000.0, 30), (2000.0, 7)]).is_ok());
        // Spread over three shells.
        assert!(ok(&[(1000.0, 30), (2000.0, 4), (3000.0, 4)]).is_ok());
        // 22 parameters: 21 DW volumes + S0 is one row short of a fold.
        let e = ok(&[(1000.0, 11), (2000.0, 10)]).unwrap_err().to_string();
        assert!(e.contains("at least 22"), "{e}");
        assert!(ok(&[(1000.0, 11), (2000.0, 11)]).is_ok());
        // Without the S0 sample one more volume is needed.
        let t = table(&[(1000.0, 11), (2000.0, 11)]);
        assert!(check(ModelKind::Dki, &t, 50.0, false).is_err());
    }

    #[test]
    fn dti_needs_six_non_coplanar_directions_per_fold() {
        assert!(check(ModelKind::Dti, &table(&[(1000.0, 7)]), 50.0, true).is_ok());
        assert!(check(ModelKind::Dti, &table(&[(1000.0, 5)]), 50.0, true).is_err());
        // All directions in one plane: never determined.
        let mut t = table(&[(1000.0, 12)]);
        for (i, g) in t.bvecs.iter_mut().enumerate().skip(1) {
            let a = i as f64 * 0.5;
            *g = [a.cos(), a.sin(), 0.0];
        }
        let e = check(ModelKind::Dti, &t, 50.0, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("rank-deficient"), "{e}");
    }
}
