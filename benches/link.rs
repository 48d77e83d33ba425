//! Shell-link accuracy in isolation: every volume of a phantom is realigned with its TRUE
//! transform (b-vectors rotated), so each shell's realigned mean is, by construction, in the
//! reference frame and the right link is the identity. Prints, per shell, the error (mean
//! displacement over the brain mask, mm) of each way of linking that shell to the rest:
//! - `mi-b0`: mutual information of the shell mean to the b=0 mean (cross-contrast), with
//!   the default dilated mask and with the brain mask alone;
//! - `ls-prev` / `mi-prev`: least squares / mutual information of the shell mean to the next
//!   lower shell's mean;
//! - `model`: least squares of the shell mean to the mean of the model's predictions of the
//!   shell's volumes from a fit that leaves the whole shell out (same contrast by design).
//!
//! - `shading removed`: the same after dividing the coil shading (estimated from the b=0 and
//!   shell means, `estimate::shading`) out of every mean; `mi-b0` there is what `estimate`
//!   uses since 2026-12-03 (every shell to the b=0 mean).
//!
//! Each figure is followed by the displacement of the brain centroid (RAS mm): the errors on
//! simulated phantoms are mostly along z. This bounds what the final shell link of
//! `estimate` can reach (before 2026-12-03 it used `mi-b0` for the lowest shell and `mi-prev`
//! above it). Measured (2026-12-01): shared bench phantom: mi-b0
//! 0.018 mm, mi-prev 0.015 mm (ls-prev 0.031); simulated phantoms, whose coil shading is fixed
//! in the scanner: mi-b0 0.05–0.07 mm, mi-prev 0.05–0.11 mm (ls-prev 0.08–0.15); the model
//! route was worse almost everywhere (0.07–0.22 mm: a DTI fit extrapolated across shells
//! mispredicts the contrast).
//!
//! - `symmetric`, `dilation 1/2/8`: shading removed, the mean of the forward and inverted link,
//!   and other dilations of the registration mask (none better across phantoms, 2026-12-03).
//!
//! - LINK_ANISO=1: each shell against the lowest through the maps of their spread over
//!   directions (sd of the shell's volumes): least squares, mutual information, and what
//!   `estimate` links now ([`shell_links`]) against both shells straight to b=0.
//!
//! `cargo bench --bench link -- PHANTOM_DIR [...]` (folders as written by `nifreeze-rs
//! simulate`, or ../shared/phantoms/NAME); env LINK_MODEL=dti|dki (default dti),
//! LINK_SKIP_MODEL=1 skips the slow `model` route. LINK_ERODE=-4,0,2 prints only the two-mask
//! link straight to b=0 ([`links_to_b0`]) and the shading-removed MI link with each listed mask
//! (negative: the brain mask dilated by the registration by that many voxels; 0 or more: the
//! brain mask eroded by that many voxels, no dilation); benches/README.md "The shell link: two
//! masks".

use nalgebra::Matrix4;
use nifreeze::estimate::{links_to_b0, shell_links, ShellImage};
use nifreeze::image::{Mask, Series, Volume};
use nifreeze::io::gradients::{read_mrtrix, shells, GradientTable};
use nifreeze::io::nifti::{read_mask, read_series};
use nifreeze::model::{FitMethod, Model, ModelKind};
use nifreeze::registration::{register, resample, Interpolation, RegistrationConfig};
use nifreeze::report::rotate_bvecs;
use std::path::Path;

/// The phantom's true motion (truth.tsv), read by the library's motion-table reader.
fn truth(path: &Path) -> Vec<Matrix4<f64>> {
    nifreeze::report::read_motion_tsv(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn mean_error(a: &Matrix4<f64>, m: &Mask) -> f64 {
    let idx = m.indices();
    idx.iter()
        .map(|&i| {
            let [x, y, z] = m.grid.ijk(i);
            let p = m.grid.world([x as f64, y as f64, z as f64]);
            let q = a.transform_point(&p.into()).coords;
            (q - p).norm()
        })
        .sum::<f64>()
        / idx.len() as f64
}

/// Displacement of the brain centroid (RAS mm): the direction of an error.
fn shift(a: &Matrix4<f64>, m: &Mask) -> nalgebra::Vector3<f64> {
    let idx = m.indices();
    let mut c = nalgebra::Vector3::zeros();
    for &i in &idx {
        let [x, y, z] = m.grid.ijk(i);
        c += m.grid.world([x as f64, y as f64, z as f64]);
    }
    c /= idx.len().max(1) as f64;
    a.transform_point(&c.into()).coords - c
}

fn mean_of(s: &Series, idx: &[usize]) -> Volume {
    let mut acc = vec![0f64; s.grid.len()];
    for &k in idx {
        for (a, &v) in acc.iter_mut().zip(s.volume(k).iter()) {
            *a += v as f64;
        }
    }
    Volume::new(
        s.grid.clone(),
        acc.iter().map(|a| (a / idx.len() as f64) as f32).collect(),
    )
}

fn run(dir: &Path, kind: ModelKind) {
    let (s, _) = read_series(&dir.join("dwi.nii.gz")).unwrap();
    let mask = read_mask(&dir.join("brainmask.nii.gz"), &s.grid).unwrap();
    let t = truth(&dir.join("truth.tsv"));
    let (bvals, bvecs) = read_mrtrix(&dir.join("dwi.b"), s.n_volumes).unwrap();
    let table = rotate_bvecs(&GradientTable { bvecs, bvals }, &t);
    let vols: Vec<Vec<f32>> = (0..s.n_volumes)
        .map(|k| resample(&s.to_volume(k), &s.grid, &t[k], Interpolation::CubicBSpline).data)
        .collect();
    let data = Series::from_volumes(s.grid.clone(), &vols);
    let b0 = table.b0_indices(50.0);
    let reference = mean_of(&data, &b0);
    let sh = shells(&table, 50.0);
    let means: Vec<Volume> = sh.iter().map(|x| mean_of(&data, &x.indices)).collect();
    let fit_mask = nifreeze::mask::dilate(&mask, 2);
    let id = Matrix4::identity();
    let reg = RegistrationConfig::rigid();
    if std::env::var("LINK_ANISO").is_ok() {
        aniso(dir, &data, &reference, &means, &sh, &mask);
        return;
    }
    if let Ok(list) = std::env::var("LINK_ERODE") {
        let channels: Vec<&Volume> = std::iter::once(&reference).chain(means.iter()).collect();
        let shade = nifreeze::estimate::shading::estimate(&channels, &mask).unwrap();
        let flat = |v: &Volume| shade.correct_volume(v);
        for (i, shell) in sh.iter().enumerate() {
            // what `estimate` uses: the mean of the links with the dilated and the brain mask
            let report = |what: &str, l: &Matrix4<f64>| {
                let dd = shift(l, &mask);
                println!(
                    "{} shell b={:.0}: {what} {:.4} mm ({:+.3} {:+.3} {:+.3})",
                    dir.display(),
                    shell.bvalue,
                    mean_error(l, &mask),
                    dd.x,
                    dd.y,
                    dd.z
                );
            };
            let l = links_to_b0(&reference, &means[i..=i], &mask).unwrap()[0];
            report("estimate's link", &l);
            for e in list
                .split(',')
                .filter(|e| !e.is_empty())
                .map(|e| e.parse::<i64>().unwrap())
            {
                // e < 0: dilation -e of the brain mask by the registration; e >= 0: the brain
                // mask eroded by e voxels, no dilation
                let (m, d) = if e < 0 {
                    (mask.clone(), (-e) as usize)
                } else {
                    (nifreeze::mask::erode(&mask, e as usize), 0)
                };
                let cfg = RegistrationConfig {
                    mask_dilation: d,
                    ..RegistrationConfig::mutual_information()
                };
                let l = register(&flat(&reference), &flat(&means[i]), Some(&m), &id, &cfg)
                    .unwrap()
                    .matrix;
                report(&format!("mask {e}:"), &l);
            }
        }
        return;
    }
    for (i, shell) in sh.iter().enumerate() {
        let mi = register(
            &reference,
            &means[i],
            Some(&mask),
            &id,
            &RegistrationConfig::mutual_information(),
        )
        .unwrap()
        .matrix;
        let brain_only = RegistrationConfig {
            mask_dilation: 0,
            ..RegistrationConfig::mutual_information()
        };
        let mi0 = register(&reference, &means[i], Some(&mask), &id, &brain_only)
            .unwrap()
            .matrix;
        let mi_prev = (i > 0).then(|| {
            register(
                &means[i - 1],
                &means[i],
                Some(&mask),
                &id,
                &RegistrationConfig::mutual_information(),
            )
            .unwrap()
            .matrix
        });
        let prev = (i > 0).then(|| {
            register(&means[i - 1], &means[i], Some(&mask), &id, &reg)
                .unwrap()
                .matrix
        });
        let model = (std::env::var("LINK_SKIP_MODEL").is_err()).then(|| {
            // Leave-shell-out: the series without this shell plus one placeholder volume whose
            // gradient is set, in turn, to each gradient of the shell.
            let keep: Vec<usize> = (0..s.n_volumes)
                .filter(|k| !shell.indices.contains(k))
                .collect();
            let mut sub: Vec<Vec<f32>> = keep.iter().map(|&k| vols[k].clone()).collect();
            sub.push(vols[shell.indices[0]].clone());
            let sub = Series::from_volumes(s.grid.clone(), &sub);
            let h = keep.len();
            let mut acc = vec![0f64; s.grid.len()];
            for &k in &shell.indices {
                let mut g = GradientTable {
                    bvecs: keep.iter().map(|&j| table.bvecs[j]).collect(),
                    bvals: keep.iter().map(|&j| table.bvals[j]).collect(),
                };
                g.bvecs.push(table.bvecs[k]);
                g.bvals.push(table.bvals[k]);
                let kind_here = if kind == ModelKind::Dki && shells(&g, 50.0).len() < 3 {
                    ModelKind::Dti
                } else {
                    kind
                };
                let e = Model::new(kind_here)
                    .fit_method(FitMethod::Wls)
                    .s0_sample(true)
                    .leave_one_out(&sub, &g, &fit_mask)
                    .unwrap();
                let p = e.predict(h).unwrap();
                for (a, &v) in acc.iter_mut().zip(&p.data) {
                    *a += if v.is_finite() {
                        v.clamp(0.0, 1e5) as f64
                    } else {
                        0.0
                    };
                }
            }
            let pred = Volume::new(
                s.grid.clone(),
                acc.iter()
                    .map(|a| (a / shell.indices.len() as f64) as f32)
                    .collect(),
            );
            register(&pred, &means[i], Some(&mask), &id, &reg)
                .unwrap()
                .matrix
        });
        // The same links with the coil shading (estimated from the b=0 and shell means) divided out.
        let channels: Vec<&Volume> = std::iter::once(&reference).chain(means.iter()).collect();
        let shade = nifreeze::estimate::shading::estimate(&channels, &mask).unwrap();
        let flat = |v: &Volume| shade.correct_volume(v);
        let mi_sh = register(
            &flat(&reference),
            &flat(&means[i]),
            Some(&mask),
            &id,
            &RegistrationConfig::mutual_information(),
        )
        .unwrap()
        .matrix;
        // ... and the other way round (the b=0 mean moving, the shell mean fixed), inverted
        let mi_inv_sh = register(
            &flat(&means[i]),
            &flat(&reference),
            Some(&mask),
            &id,
            &RegistrationConfig::mutual_information(),
        )
        .unwrap()
        .matrix
        .try_inverse()
        .unwrap();
        let brain_sh = register(
            &flat(&reference),
            &flat(&means[i]),
            Some(&mask),
            &id,
            &brain_only,
        )
        .unwrap()
        .matrix;
        // the mean of the forward and the inverted link (first order: the mask sits on the
        // fixed image, so a bias it causes changes side with the roles)
        let symmetric = (mi_sh + mi_inv_sh) / 2.0;
        let dilated = |d: usize| {
            let cfg = RegistrationConfig {
                mask_dilation: d,
                ..RegistrationConfig::mutual_information()
            };
            register(&flat(&reference), &flat(&means[i]), Some(&mask), &id, &cfg)
                .unwrap()
                .matrix
        };
        let (dil1, dil2, dil8) = (dilated(1), dilated(2), dilated(8));
        let mi_prev_sh = (i > 0).then(|| {
            register(
                &flat(&means[i - 1]),
                &flat(&means[i]),
                Some(&mask),
                &id,
                &RegistrationConfig::mutual_information(),
            )
            .unwrap()
            .matrix
        });
        let fmt = |m: Option<Matrix4<f64>>| {
            m.map(|p| {
                let d = shift(&p, &mask);
                format!(
                    "{:.4} mm ({:+.3} {:+.3} {:+.3})",
                    mean_error(&p, &mask),
                    d.x,
                    d.y,
                    d.z
                )
            })
            .unwrap_or("-".into())
        };
        println!(
            "{} shell b={:.0}: mi-b0 {}, mi-b0 brain-only {}, ls-prev {}, mi-prev {}, model {}; shading removed: mi-b0 {}, mi-b0 inverted {}, mi-b0 brain-only {}, mi-prev {}; symmetric {}, dilation 1 {}, 2 {}, 8 {}",
            dir.display(),
            shell.bvalue,
            fmt(Some(mi)),
            fmt(Some(mi0)),
            fmt(prev),
            fmt(mi_prev),
            fmt(model),
            fmt(Some(mi_sh)),
            fmt(Some(mi_inv_sh)),
            fmt(Some(brain_sh)),
            fmt(mi_prev_sh),
            fmt(Some(symmetric)),
            fmt(Some(dil1)),
            fmt(Some(dil2)),
            fmt(Some(dil8))
        );
    }
}

/// Scratch: link the shells to each other through their directional spread (sd over the
/// shell's volumes), a contrast every shell shares.
fn aniso(
    dir: &Path,
    data: &Series,
    reference: &Volume,
    means: &[Volume],
    sh: &[nifreeze::io::gradients::Shell],
    mask: &Mask,
) {
    let id = Matrix4::identity();
    let sd: Vec<Volume> = sh
        .iter()
        .zip(means)
        .map(|(x, m)| {
            let mut acc = vec![0f64; data.grid.len()];
            for &k in &x.indices {
                for ((a, &v), &mu) in acc.iter_mut().zip(data.volume(k).iter()).zip(m.data.iter()) {
                    let d = (v - mu) as f64;
                    *a += d * d;
                }
            }
            let n = x.indices.len() as f64;
            Volume::new(
                data.grid.clone(),
                acc.iter().map(|a| (a / n).sqrt() as f32).collect(),
            )
        })
        .collect();
    let links = links_to_b0(reference, means, mask).unwrap();
    let images: Vec<ShellImage> = sh
        .iter()
        .zip(means)
        .zip(&sd)
        .map(|((x, m), v)| ShellImage {
            mean: m.clone(),
            spread: v.clone(),
            volumes: x.indices.len(),
        })
        .collect();
    let new = shell_links(reference, &images, mask).unwrap();
    let fmt = |p: &Matrix4<f64>| {
        let d = shift(p, mask);
        format!(
            "{:.4} mm ({:+.3} {:+.3} {:+.3})",
            mean_error(p, mask),
            d.x,
            d.y,
            d.z
        )
    };
    for (i, x) in sh.iter().enumerate() {
        println!(
            "{} b={:.0}: straight to b=0 (two masks) {}; estimate's link {}",
            dir.display(),
            x.bvalue,
            fmt(&links[i]),
            fmt(&new[i])
        );
    }
    let ls = RegistrationConfig::rigid();
    let ls0 = RegistrationConfig {
        mask_dilation: 0,
        ..RegistrationConfig::rigid()
    };
    let mi = RegistrationConfig::mutual_information();
    for i in 1..sh.len() {
        let rel = links[0].try_inverse().unwrap() * links[i];
        let spread = |cfg: &RegistrationConfig| {
            register(&sd[0], &sd[i], Some(mask), &id, cfg)
                .unwrap()
                .matrix
        };
        let (a, a0, b, f) = (
            spread(&ls),
            spread(&ls0),
            spread(&mi),
            spread(&mi.refinement()),
        );
        let c = register(&means[0], &means[i], Some(mask), &id, &mi)
            .unwrap()
            .matrix;
        let mi0 = RegistrationConfig {
            mask_dilation: 0,
            ..mi.refinement()
        };
        let g = spread(&mi0);
        println!(
            "   sd MI finest {}; sd MI finest brain {}",
            fmt(&f),
            fmt(&g)
        );
        println!(
            "{} b={:.0} vs b={:.0}: both straight to b=0, relative {}; estimate's relative {}; sd LS {}; sd LS brain {}; sd MI {}; mean MI {}",
            dir.display(),
            sh[i].bvalue,
            sh[0].bvalue,
            fmt(&rel),
            fmt(&(new[0].try_inverse().unwrap() * new[i])),
            fmt(&a),
            fmt(&a0),
            fmt(&b),
            fmt(&c)
        );
    }
}

fn main() {
    let kind = match std::env::var("LINK_MODEL").as_deref() {
        Ok("dki") => ModelKind::Dki,
        _ => ModelKind::Dti,
    };
    for dir in std::env::args().skip(1).filter(|a| !a.starts_with("--")) {
        run(Path::new(&dir), kind);
    }
}
