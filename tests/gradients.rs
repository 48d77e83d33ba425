//! Gradient tables: FSL ↔ scanner RAS on hand-checked cases, sidecar discovery, shells.

use nalgebra::{Matrix4, Vector4};
use nifreeze::image::Grid;
use nifreeze::io::gradients::GradientArgs;
use nifreeze::io::gradients::{self, fsl_to_ras, ras_to_fsl, shells};
use std::path::Path;

fn diag(x: f64, y: f64, z: f64) -> Grid {
    Grid::new(
        [10, 10, 10],
        Matrix4::from_diagonal(&Vector4::new(x, y, z, 1.0)),
    )
}

#[test]
fn fsl_vectors_by_hand() {
    // LAS storage (det<0, the FSL-native radiological case): bvec x is image x, which points left.
    let las = diag(-2.0, 2.0, 2.0);
    assert_eq!(fsl_to_ras(&las, [1.0, 0.0, 0.0]), [-1.0, 0.0, 0.0]);
    assert_eq!(fsl_to_ras(&las, [0.0, 1.0, 0.0]), [0.0, 1.0, 0.0]);
    // RAS storage (det>0): FSL flips x, so image +x (right) gets bvec x = -1.
    let ras = diag(2.0, 2.0, 2.0);
    assert_eq!(fsl_to_ras(&ras, [-1.0, 0.0, 0.0]), [1.0, 0.0, 0.0]);
    // The same physical gradient stored LAS and RAS gives the same scanner vector:
    // in both cases FSL's bvec is expressed in the radiological frame, so the numbers agree.
    let g = [0.6, 0.0, 0.8];
    let b_las = ras_to_fsl(&las, g);
    let b_ras = ras_to_fsl(&ras, g);
    assert_eq!(b_las, b_ras);
    assert_eq!(fsl_to_ras(&las, b_las), g);
    assert_eq!(fsl_to_ras(&ras, b_ras), g);
    // A 90° in-plane rotation of the voxel axes (columns: x→A, y→L).
    let mut a = Matrix4::zeros();
    a[(1, 0)] = 2.0;
    a[(0, 1)] = -2.0;
    a[(2, 2)] = 2.0;
    a[(3, 3)] = 1.0;
    let rot = Grid::new([4, 4, 4], a); // det>0
    let out = fsl_to_ras(&rot, [1.0, 0.0, 0.0]);
    // x flipped (det>0) then image x → anterior: -A = posterior.
    assert!(
        (out[0]).abs() < 1e-15 && (out[1] + 1.0).abs() < 1e-15 && out[2].abs() < 1e-15,
        "{out:?}"
    );
}

#[test]
fn fsl_and_mrtrix_tables_of_the_sample_agree() {
    // data/sample ships both: dwi.bval/.bvec (FSL) and dwi.b (MRtrix, RAS), written independently.
    let (s, _) = nifreeze::io::nifti::read_series(Path::new("data/sample/dwi.nii.gz")).unwrap();
    let dwi = Path::new("data/sample/dwi.nii.gz");
    let fsl = gradients::load(
        dwi,
        &GradientArgs {
            b0_threshold: 50.0,
            ..Default::default()
        },
        &s.grid,
        s.n_volumes,
    )
    .unwrap();
    assert!(fsl.source.contains("BIDS sidecars"), "{}", fsl.source);
    let args = GradientArgs {
        grad: Some("data/sample/dwi.b".into()),
        b0_threshold: 50.0,
        ..Default::default()
    };
    let mrt = gradients::load(dwi, &args, &s.grid, s.n_volumes).unwrap();
    assert_eq!(fsl.table.bvals, mrt.table.bvals);
    for (a, b) in fsl.table.bvecs.iter().zip(&mrt.table.bvecs) {
        for k in 0..3 {
            assert!((a[k] - b[k]).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }
    let sh = shells(&fsl.table, 50.0);
    assert_eq!(sh.len(), 2);
    assert_eq!((sh[0].indices.len(), sh[1].indices.len()), (12, 12));
    assert!((sh[0].bvalue - 1000.0).abs() < 10.0 && (sh[1].bvalue - 2000.0).abs() < 10.0);
    assert_eq!(fsl.table.b0_indices(50.0).len(), 3);
}

#[test]
fn shells_cluster_jittered_bvalues() {
    let t = gradients::GradientTable {
        bvals: vec![0.0, 5.0, 995.0, 1005.0, 2000.0, 1990.0, 3010.0, 1000.0],
        bvecs: vec![[0.0, 0.0, 1.0]; 8],
    };
    let s = shells(&t, 50.0);
    let counts: Vec<usize> = s.iter().map(|s| s.indices.len()).collect();
    assert_eq!(counts, vec![3, 2, 1]);
    assert_eq!(s[1].indices, vec![4, 5]);
    assert_eq!(t.b0_indices(50.0), vec![0, 1]);
}

#[test]
fn slightly_long_vectors_are_renormalised_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.b");
    std::fs::write(&p, "0 0 0 0\n1.05 0 0 1000\n0 1 0 1000\n0 0 1 1000\n0.7071 0.7071 0 1000\n0 0.7071 0.7071 1000\n0.7071 0 0.7071 1000\n").unwrap();
    let args = GradientArgs {
        grad: Some(p),
        b0_threshold: 50.0,
        ..Default::default()
    };
    let g = gradients::load(Path::new("x.nii"), &args, &diag(2.0, 2.0, 2.0), 7).unwrap();
    assert_eq!(g.table.bvecs[1], [1.0, 0.0, 0.0]);
    assert_eq!(g.warnings.len(), 1);
    assert!(g.warnings[0].contains("volume 1"));
}
