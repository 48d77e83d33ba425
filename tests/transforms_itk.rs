//! ITK text and ANTs .mat transform files: exact round trips and files written by
//! nitransforms (tests/data/registration, made by make_refs.py).

use nalgebra::{Matrix4, Rotation3, Vector3};
use nifreeze::io::transforms::{
    ants_mat_bytes, itk_text, parse_itk, read_ants_mat, read_any, read_itk, write_ants_mat,
    write_itk,
};
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/registration")
        .join(name)
}

fn refs() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(data("refs.json")).unwrap()).unwrap()
}

fn mat(v: &serde_json::Value) -> Matrix4<f64> {
    let rows: Vec<f64> = v
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
        .collect();
    Matrix4::from_row_slice(&rows)
}

fn samples() -> Vec<Matrix4<f64>> {
    let mut out = vec![Matrix4::identity()];
    for (k, s) in [0.1f64, -0.37, 1.3e-7, 2.9].iter().enumerate() {
        let r = Rotation3::from_euler_angles(0.03 * s, -0.02 * k as f64, 0.011 / s);
        let mut m = Matrix4::identity();
        m.fixed_view_mut::<3, 3>(0, 0)
            .copy_from(&(r.matrix() * (1.0 + 0.01 * s)));
        m.fixed_view_mut::<3, 1>(0, 3)
            .copy_from(&Vector3::new(s * 3.1, -1.0 / 3.0, 1e-12 * s));
        out.push(m);
    }
    out
}

#[test]
fn itk_round_trip_is_bit_exact_single_and_multi() {
    let dir = tempfile::tempdir().unwrap();
    let ms = samples();
    let p = dir.path().join("all.tfm");
    write_itk(&p, &ms).unwrap();
    assert_eq!(read_itk(&p).unwrap(), ms);
    let text = std::fs::read_to_string(&p).unwrap();
    assert_eq!(text.matches("#Insight Transform File V1.0").count(), 1);
    assert_eq!(
        text.matches("Transform: AffineTransform_double_3_3")
            .count(),
        ms.len()
    );
    assert!(text.contains("#Transform 4"));
    let one = dir.path().join("one.tfm");
    write_itk(&one, &ms[1..2]).unwrap();
    assert_eq!(read_any(&one).unwrap(), vec![ms[1]]);
}

#[test]
fn itk_text_uses_lps() {
    // a pure +1 mm RAS x translation is -1 in LPS; y likewise, z unchanged
    let mut m = Matrix4::identity();
    m[(0, 3)] = 1.0;
    m[(1, 3)] = 2.0;
    m[(2, 3)] = 3.0;
    let t = itk_text(&[m]);
    assert!(t.contains("Parameters: 1 0 0 0 1 0 0 0 1 -1 -2 3\n"), "{t}");
}

#[test]
fn reads_nitransforms_itk_and_mat_files() {
    let r = refs();
    let m = mat(&r["matrix_ras"]);
    // nitransforms writes float precision text (6 significant digits)
    let t = read_itk(&data("nitransforms_affine.tfm")).unwrap();
    assert_eq!(t.len(), 1);
    assert!((t[0] - m).abs().max() < 1e-5, "{}", t[0] - m);
    // its .mat stores the parameters as doubles and the centre as single precision
    let a = read_ants_mat(&data("nitransforms_affine.mat")).unwrap();
    assert!((a - m).abs().max() < 1e-12);
}

#[test]
fn reads_centred_matrix_offset_like_nitransforms() {
    let r = refs();
    let expected = mat(&r["centred_read_by_nitransforms"]);
    let t = read_itk(&data("centred_matrixoffset.tfm")).unwrap();
    // nitransforms parses ITK text as float32
    assert!((t[0] - expected).abs().max() < 1e-5, "{}", t[0] - expected);
    assert!((t[0] - mat(&r["matrix_ras"])).abs().max() < 1e-12);
}

#[test]
fn ants_mat_round_trip_and_layout() {
    let dir = tempfile::tempdir().unwrap();
    for m in samples() {
        let p = dir.path().join("x.mat");
        write_ants_mat(&p, &m).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 193);
        assert_eq!(read_ants_mat(&p).unwrap(), m);
        assert_eq!(read_any(&p).unwrap(), vec![m]);
    }
    let b = ants_mat_bytes(&Matrix4::identity());
    assert_eq!(
        &b[0..20],
        &[0, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 27, 0, 0, 0]
    );
    assert_eq!(&b[20..47], b"AffineTransform_double_3_3\0");
}

#[test]
fn malformed_files_are_input_errors() {
    let bad = [
        "",
        "hello",
        "#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\nParameters: 1 0 0\nFixedParameters: 0 0 0\n",
        "#Insight Transform File V1.0\nTransform: BSplineTransform_double_3_3\nParameters: 1\n",
        "#Insight Transform File V1.0\nTransform: AffineTransform_double_3_3\nParameters: 1 0 0 0 1 0 0 0 1 0 0 x\n",
        "#Insight Transform File V1.0\nTransform: AffineTransform_double_3_3\nParameters: 1 0 0 0 1 0 0 0 1 0 0 nan\n",
        "#Insight Transform File V1.0\n",
    ];
    for b in bad {
        match parse_itk(b, "test") {
            Err(nifreeze::Error::Input(_)) => {}
            other => panic!("{b:?} gave {other:?}"),
        }
    }
    assert!(nifreeze::io::transforms::parse_ants_mat(&[0u8; 10], "t").is_err());
    assert!(nifreeze::io::transforms::parse_ants_mat(
        &ants_mat_bytes(&Matrix4::identity())[..100],
        "t"
    )
    .is_err());
}
