//! The resampler against scipy.ndimage.map_coordinates (tests/data/registration/make_refs.py):
//! cubic B-spline with mirror boundaries and trilinear with edge clamping, on an oblique grid.

use nalgebra::Matrix4;
use nifreeze::image::{Grid, Volume};
use nifreeze::registration::{resample, Interpolation};

fn arr(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn mat(v: &serde_json::Value) -> Matrix4<f64> {
    let rows: Vec<f64> = v.as_array().unwrap().iter().flat_map(arr).collect();
    Matrix4::from_row_slice(&rows)
}

#[test]
fn matches_scipy_map_coordinates() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/registration/refs.json"
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let d = arr(&r["dims"]);
    let grid = Grid::new(
        [d[0] as usize, d[1] as usize, d[2] as usize],
        mat(&r["grid_affine"]),
    );
    let vol = Volume::new(
        grid.clone(),
        arr(&r["volume_xfastest"])
            .iter()
            .map(|&v| v as f32)
            .collect(),
    );
    let t = mat(&r["transform"]);
    let inside: Vec<bool> = r["inside_xfastest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_bool().unwrap())
        .collect();
    assert!(
        inside.iter().filter(|&&b| b).count() > 500,
        "reference must exercise the interior"
    );
    assert!(
        inside.iter().any(|&b| !b),
        "reference must exercise the outside"
    );
    for (interp, key) in [
        (Interpolation::CubicBSpline, "cubic_xfastest"),
        (Interpolation::Linear, "linear_xfastest"),
    ] {
        let expect = arr(&r[key]);
        let out = resample(&vol, &grid, &t, interp);
        for i in 0..expect.len() {
            let want = if inside[i] { expect[i] } else { 0.0 };
            // f32 output of values ~100
            assert!(
                (out.data[i] as f64 - want).abs() < 2e-4,
                "{interp:?} voxel {i}: {} vs {want}",
                out.data[i]
            );
        }
    }
}

#[test]
fn identity_resampling_reproduces_the_image() {
    let grid = Grid::new([7, 6, 5], Matrix4::new_scaling(2.0));
    let data: Vec<f32> = (0..grid.len()).map(|i| ((i * 37) % 101) as f32).collect();
    let vol = Volume::new(grid.clone(), data.clone());
    for interp in [Interpolation::CubicBSpline, Interpolation::Linear] {
        let out = resample(&vol, &grid, &Matrix4::identity(), interp);
        for (a, b) in out.data.iter().zip(&data) {
            assert!((a - b).abs() < 1e-3);
        }
    }
}
