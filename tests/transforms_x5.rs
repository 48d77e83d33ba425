//! X5 (HDF5) transform files: exact round trip through our writer/reader, and a file written
//! by nitransforms (tests/data/registration/make_refs.py).

use nalgebra::{Matrix4, Rotation3};
use nifreeze::image::Grid;
use nifreeze::io::transforms::{read_any, read_x5, write_x5};
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/registration")
        .join(name)
}

#[test]
fn x5_round_trip_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let ms: Vec<Matrix4<f64>> = (0..5)
        .map(|k| {
            let mut m = Rotation3::from_euler_angles(0.01 * k as f64, -0.02, 0.003 * k as f64)
                .to_homogeneous();
            m[(0, 3)] = 1.0 / 3.0 + k as f64;
            m[(2, 1)] += 1e-3;
            m
        })
        .collect();
    let grid = Grid::new([45, 54, 45], Matrix4::new_scaling(4.0));
    let p = dir.path().join("t.x5");
    write_x5(&p, &ms, Some(&grid)).unwrap();
    assert_eq!(read_x5(&p).unwrap(), ms);
    assert_eq!(read_any(&p).unwrap(), ms);
    // HDF5 signature
    assert_eq!(&std::fs::read(&p).unwrap()[..8], b"\x89HDF\r\n\x1a\n");
    let q = dir.path().join("no_domain.x5");
    write_x5(&q, &ms[..1], None).unwrap();
    assert_eq!(read_x5(&q).unwrap(), ms[..1].to_vec());
}

#[test]
fn reads_x5_written_by_nitransforms() {
    let refs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data("refs.json")).unwrap()).unwrap();
    let m: Vec<f64> = refs["matrix_ras"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
        .collect();
    let t = read_x5(&data("nitransforms_series.x5")).unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t[0], Matrix4::identity());
    assert!((t[1] - Matrix4::from_row_slice(&m)).abs().max() < 1e-15);
}

#[test]
fn non_x5_files_are_input_errors() {
    for f in ["nitransforms_affine.tfm", "refs.json"] {
        match read_x5(&data(f)) {
            Err(nifreeze::Error::Input(_)) => {}
            other => panic!("{f}: {other:?}"),
        }
    }
}
