//! DIPY 1.12.1 predictions on mini-phantom voxels where the eigenvalue clipping changes the
//! result and where DKI fits explode (tests/data/model_extra), all four variants.

use nalgebra::Matrix4;
use nifreeze::image::{Grid, Mask, Series};
use nifreeze::io::gradients::GradientTable;
use nifreeze::model::{FitMethod, Model, ModelKind};

fn load() -> (Series, GradientTable, Mask, serde_json::Value) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/model_extra/model_extra.json"
    );
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let f = |v: &serde_json::Value| v.as_f64().unwrap();
    let bvals: Vec<f64> = j["bvals"].as_array().unwrap().iter().map(f).collect();
    let bvecs: Vec<[f64; 3]> = j["bvecs_ras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| [f(&r[0]), f(&r[1]), f(&r[2])])
        .collect();
    let sig = j["signals"].as_array().unwrap();
    let nvox = sig.len();
    let nvol = bvals.len();
    let grid = Grid::new([nvox, 1, 1], Matrix4::identity());
    let mut data = vec![0.0f32; nvox * nvol];
    for (v, row) in sig.iter().enumerate() {
        for (k, s) in row.as_array().unwrap().iter().enumerate() {
            data[k * nvox + v] = f(s) as f32;
        }
    }
    let series = Series::new(grid.clone(), nvol, data);
    let mask = Mask {
        grid,
        data: vec![true; nvox],
    };
    (series, GradientTable { bvecs, bvals }, mask, j)
}

fn check(kind: ModelKind, method: FitMethod, key: &str) {
    let (series, table, mask, j) = load();
    let e = Model::new(kind)
        .fit_method(method)
        .leave_one_out(&series, &table, &mask)
        .unwrap();
    assert_eq!(
        e.n_voxels(),
        series.grid.len() - 1,
        "the all-zero voxel is not fitted"
    );
    let mut worst = 0.0f64;
    for (h, k) in j["heldout"].as_array().unwrap().iter().enumerate() {
        let k = k.as_u64().unwrap() as usize;
        let want: Vec<f64> = j["pred"][key][h]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let got = e.predict_values(k).unwrap();
        let plain = e.predict_values_plain(k).unwrap();
        let vol = e.predict(k).unwrap();
        assert_eq!(vol.data[series.grid.len() - 1], 0.0);
        for (i, &l) in e.voxel_indices().iter().enumerate() {
            let rel = (got[i] - want[l]).abs() / want[l].abs();
            worst = worst.max(rel);
            assert!(
                rel <= 1e-8,
                "{key} vol {k} voxel {l}: {} vs DIPY {}",
                got[i],
                want[l]
            );
            let relp = (plain[i] - want[l]).abs() / want[l].abs();
            assert!(
                relp <= 1e-8,
                "{key} plain vol {k} voxel {l}: {} vs DIPY {}",
                plain[i],
                want[l]
            );
        }
    }
    eprintln!("{key}: max relative error vs DIPY {worst:e}");
}

#[test]
fn clipped_dti_wls() {
    check(ModelKind::Dti, FitMethod::Wls, "dti_wls");
}

#[test]
fn clipped_dti_ols() {
    check(ModelKind::Dti, FitMethod::Ols, "dti_ols");
}

#[test]
fn clipped_dki_wls() {
    check(ModelKind::Dki, FitMethod::Wls, "dki_wls");
}

#[test]
fn clipped_dki_ols() {
    check(ModelKind::Dki, FitMethod::Ols, "dki_ols");
}
