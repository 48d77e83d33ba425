//! The four DIPY 1.12.1 reference variants (DTI/DKI × WLS/OLS) on tests/data/lovo44:
//! every mask voxel, including the zero-sample and the very noisy voxel, within 1e-6 relative.

use nifreeze::io::gradients::GradientArgs;
use nifreeze::io::{gradients, nifti};
use nifreeze::model::{FitMethod, Model, ModelKind};
use std::path::{Path, PathBuf};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/lovo44")
        .join(name)
}

fn read_f64_4d(path: &Path) -> (Vec<f64>, [usize; 4]) {
    use ::nifti::{IntoNdArray, NiftiObject, ReaderOptions};
    let obj = ReaderOptions::new().read_file(path).unwrap();
    let arr = obj.into_volume().into_ndarray::<f64>().unwrap();
    let s = arr.shape().to_vec();
    let dims = [s[0], s[1], s[2], s[3]];
    let mut out = vec![0.0; arr.len()];
    for t in 0..dims[3] {
        for z in 0..dims[2] {
            for y in 0..dims[1] {
                for x in 0..dims[0] {
                    out[x + dims[0] * (y + dims[1] * (z + dims[2] * t))] = arr[[x, y, z, t]];
                }
            }
        }
    }
    (out, dims)
}

fn load() -> (
    nifreeze::image::Series,
    gradients::GradientTable,
    nifreeze::image::Mask,
) {
    let (series, _) = nifti::read_series(&data("dwi.nii.gz")).unwrap();
    let args = GradientArgs {
        bval: Some(data("dwi.bval")),
        bvec: Some(data("dwi.bvec")),
        grad: None,
        fslgrad: None,
        b0_threshold: 50.0,
        ignore_b0: false,
    };
    let g = gradients::load(&data("dwi.nii.gz"), &args, &series.grid, series.n_volumes).unwrap();
    let mask = nifti::read_mask(&data("brainmask.nii.gz"), &series.grid).unwrap();
    (series, g.table, mask)
}

fn heldout() -> Vec<usize> {
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data("manifest.json")).unwrap()).unwrap();
    let pos: Vec<usize> = m["heldout_dw_positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let idx = m["dw_volume_4d_index"].as_array().unwrap();
    pos.iter()
        .map(|&p| idx[p].as_u64().unwrap() as usize)
        .collect()
}

fn check(kind: ModelKind, method: FitMethod, file: &str) {
    let (series, table, mask) = load();
    let engine = Model::new(kind)
        .fit_method(method)
        .leave_one_out(&series, &table, &mask)
        .unwrap();
    assert_eq!(
        engine.n_voxels(),
        mask.count(),
        "every mask voxel has S0 > 0 here"
    );
    let (gold, dims) = read_f64_4d(&data(file));
    let nvox = series.grid.len();
    let held = heldout();
    assert_eq!(dims[3], held.len());
    let mut worst = 0.0f64;
    for (j, &k) in held.iter().enumerate() {
        let vals = engine.predict_values(k).unwrap();
        let vol = engine.predict(k).unwrap();
        let g = &gold[j * nvox..(j + 1) * nvox];
        let mut inside = vec![false; nvox];
        for (&l, &v) in engine.voxel_indices().iter().zip(&vals) {
            inside[l] = true;
            assert!(g[l] > 0.0, "reference is positive in the mask");
            let rel = (v - g[l]).abs() / g[l].abs();
            worst = worst.max(rel);
            assert!(
                rel <= 1e-6,
                "{file} volume {k} voxel {l}: {v} vs {} (rel {rel:e})",
                g[l]
            );
            // the f32 volume holds the same numbers
            assert!(((vol.data[l] as f64) - v).abs() <= 1e-7 * v.abs());
        }
        for l in 0..nvox {
            if !inside[l] {
                assert_eq!(g[l], 0.0);
                assert_eq!(vol.data[l], 0.0);
            }
        }
    }
    eprintln!("{file}: max relative error {worst:e}");
}

#[test]
fn golden_dti_wls() {
    check(ModelKind::Dti, FitMethod::Wls, "pred_dti_wls.nii.gz");
}

#[test]
fn golden_dti_ols() {
    check(ModelKind::Dti, FitMethod::Ols, "pred_dti_ols.nii.gz");
}

#[test]
fn golden_dki_wls() {
    check(ModelKind::Dki, FitMethod::Wls, "pred_dki_wls.nii.gz");
}

#[test]
fn golden_dki_ols() {
    check(ModelKind::Dki, FitMethod::Ols, "pred_dki_ols.nii.gz");
}

/// The plain per-voxel route (SVD pseudo-inverse, literal eigen-decomposition) agrees too.
#[test]
fn golden_plain_path() {
    let (series, table, mask) = load();
    for (kind, method, file) in [
        (ModelKind::Dti, FitMethod::Wls, "pred_dti_wls.nii.gz"),
        (ModelKind::Dki, FitMethod::Wls, "pred_dki_wls.nii.gz"),
    ] {
        let engine = Model::new(kind)
            .fit_method(method)
            .leave_one_out(&series, &table, &mask)
            .unwrap();
        let (gold, _) = read_f64_4d(&data(file));
        let nvox = series.grid.len();
        for (j, &k) in heldout().iter().enumerate() {
            let vals = engine.predict_values_plain(k).unwrap();
            for (&l, &v) in engine.voxel_indices().iter().zip(&vals) {
                let g = gold[j * nvox + l];
                assert!((v - g).abs() <= 1e-6 * g, "{file} {k} {l}: {v} vs {g}");
            }
        }
    }
}
