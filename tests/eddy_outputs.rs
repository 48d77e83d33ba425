//! `estimate --eddy-outputs`: the FSL eddy files parse with a small reader written here from
//! FSL's definitions (not the library's), and agree with motion.tsv:
//! - `.eddy_parameters`: 16 columns (6 movement + eddy's 10 eddy-current terms, zero for a
//!   rigid model); translations in mm and rotations in radians in FSL's scaled-mm frame
//!   (voxel index × voxel size, x reversed when det > 0); the movement matrix
//!   M = [R, (I − R)c + t] with R = Rx·Ry·Rz of FSL's make_rot (rotation by −θ), c the grid
//!   centre, maps reference points to volume points, so S⁻¹·M·S is motion.tsv's matrix;
//! - `.eddy_movement_rms`: RMS over the brain mask of |T x − x|, absolute and relative;
//!   `.eddy_restricted_movement_rms`: the same without the phase-encode (j) translation;
//! - `.eddy_rotated_bvecs`: the original FSL b-vectors rotated by Rᵀ.

use nalgebra::{Matrix3, Matrix4, Vector3, Vector4};
use nifreeze::image::{Grid, Mask};
use nifreeze::io::eddy_files;
use nifreeze::io::nifti;
use nifreeze::report::read_motion_tsv;
use std::path::Path;
use std::process::Command;

fn numbers(path: &Path, skip: usize) -> Vec<Vec<f64>> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .skip(skip)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect()
}

/// FSL's elementary rotation about `axis` by `theta` (make_rot: the right-handed one by −θ).
fn fsl_rot(axis: usize, theta: f64) -> Matrix3<f64> {
    let (c, s) = (theta.cos(), theta.sin());
    let (a, b) = ((axis + 1) % 3, (axis + 2) % 3);
    let mut r = Matrix3::identity();
    r[(a, a)] = c;
    r[(b, b)] = c;
    r[(a, b)] = s;
    r[(b, a)] = -s;
    r
}

/// FSL scaled mm from world: diag(voxel sizes), x reversed when det > 0, times A⁻¹.
fn scaled_mm(grid: &Grid) -> Matrix4<f64> {
    let a = grid.affine;
    let z: Vec<f64> = (0..3).map(|c| a.fixed_view::<3, 1>(0, c).norm()).collect();
    let mut v = Matrix4::from_diagonal(&Vector4::new(z[0], z[1], z[2], 1.0));
    if a.fixed_view::<3, 3>(0, 0).determinant() > 0.0 {
        v[(0, 0)] = -z[0];
        v[(0, 3)] = (grid.dims[0] - 1) as f64 * z[0];
    }
    v * a.try_inverse().unwrap()
}

/// The RAS matrix of one row of eddy parameters.
fn ras_matrix(p: &[f64], grid: &Grid) -> Matrix4<f64> {
    let r = fsl_rot(0, p[3]) * fsl_rot(1, p[4]) * fsl_rot(2, p[5]);
    let a = grid.affine;
    let c = Vector3::from_fn(|i, _| {
        (grid.dims[i] - 1) as f64 * a.fixed_view::<3, 1>(0, i).norm() / 2.0
    });
    let t = (Matrix3::identity() - r) * c + Vector3::new(p[0], p[1], p[2]);
    let mut m = Matrix4::identity();
    m.fixed_view_mut::<3, 3>(0, 0).copy_from(&r);
    m.fixed_view_mut::<3, 1>(0, 3).copy_from(&t);
    let s = scaled_mm(grid);
    s.try_inverse().unwrap() * m * s
}

fn rms(points: &[Vector3<f64>], f: impl Fn(&Vector3<f64>) -> Vector3<f64>) -> f64 {
    (points.iter().map(|p| f(p).norm_squared()).sum::<f64>() / points.len() as f64).sqrt()
}

fn apply(m: &Matrix4<f64>, p: &Vector3<f64>) -> Vector3<f64> {
    m.fixed_view::<3, 3>(0, 0) * p + m.fixed_view::<3, 1>(0, 3)
}

#[test]
fn eddy_files_of_the_sample_agree_with_motion_tsv() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hmc");
    let run = Command::new(env!("CARGO_BIN_EXE_nifreeze-rs"))
        .args([
            "estimate",
            "data/sample/dwi.nii.gz",
            "-j",
            "2",
            "-q",
            "--out",
        ])
        .arg(&out)
        .args(["--eddy-outputs", "eddy"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{log}");
    assert!(log.contains("no PhaseEncodingDirection"), "{log}");

    let motion =
        read_motion_tsv(&std::fs::read_to_string(out.join("motion.tsv")).unwrap()).unwrap();
    let n = motion.len();
    let (series, _) = nifti::read_series(Path::new("data/sample/dwi.nii.gz")).unwrap();
    let grid = series.grid.clone();

    // .eddy_parameters
    let params = numbers(&out.join("eddy.eddy_parameters"), 0);
    assert_eq!(params.len(), n);
    for (k, p) in params.iter().enumerate() {
        assert_eq!(
            p.len(),
            16,
            "volume {k}: 6 movement + 10 eddy-current columns"
        );
        assert!(
            p[6..].iter().all(|&v| v == 0.0),
            "rigid model: no eddy-current terms"
        );
        assert!(
            p[3..6].iter().all(|r| r.abs() < 0.2),
            "rotations in radians: {p:?}"
        );
        let m = ras_matrix(p, &grid);
        let d = (m - motion[k]).abs().max();
        assert!(
            d < 1e-7,
            "volume {k}: eddy parameters give a matrix {d} off motion.tsv"
        );
    }
    // The sample moves by up to ~3 mm: the parameters are not all (near) zero.
    assert!(params.iter().any(|p| p[..3].iter().any(|t| t.abs() > 0.5)));

    // .eddy_movement_rms and the restricted one, over the brain mask used.
    let mask = nifti::read_mask(&out.join("brainmask.nii.gz"), &grid).unwrap();
    let points: Vec<Vector3<f64>> = mask
        .indices()
        .into_iter()
        .map(|i| {
            let [x, y, z] = grid.ijk(i);
            grid.world([x as f64, y as f64, z as f64])
        })
        .collect();
    let rms_file = numbers(&out.join("eddy.eddy_movement_rms"), 0);
    let restricted = numbers(&out.join("eddy.eddy_restricted_movement_rms"), 0);
    assert_eq!((rms_file.len(), restricted.len()), (n, n));
    for k in 0..n {
        let abs = rms(&points, |p| apply(&motion[k], p) - p);
        let rel = if k == 0 {
            0.0
        } else {
            rms(&points, |p| apply(&motion[k], p) - apply(&motion[k - 1], p))
        };
        assert!(
            (rms_file[k][0] - abs).abs() < 1e-6,
            "volume {k}: {} vs {abs}",
            rms_file[k][0]
        );
        assert!(
            (rms_file[k][1] - rel).abs() < 1e-6,
            "volume {k}: {} vs {rel}",
            rms_file[k][1]
        );
        let mut p = params[k].clone();
        p[1] = 0.0; // no translation along j (the assumed phase encoding)
        let m = ras_matrix(&p, &grid);
        let r_abs = rms(&points, |q| apply(&m, q) - q);
        assert!((restricted[k][0] - r_abs).abs() < 1e-6, "volume {k}");
        assert!(restricted[k][0] <= rms_file[k][0] + 1e-9 || params[k][1].abs() < 1e-3);
    }

    // .eddy_rotated_bvecs: the input FSL b-vectors rotated by Rᵀ (R of the parameters).
    let bvecs = numbers(&out.join("eddy.eddy_rotated_bvecs"), 0);
    let original = numbers(Path::new("data/sample/dwi.bvec"), 0);
    assert_eq!(bvecs.len(), 3);
    for k in 0..n {
        let b = Vector3::new(original[0][k], original[1][k], original[2][k]);
        let got = Vector3::new(bvecs[0][k], bvecs[1][k], bvecs[2][k]);
        if b.norm() < 1e-6 {
            assert!(got.norm() < 1e-9);
            continue;
        }
        let p = &params[k];
        let r = fsl_rot(0, p[3]) * fsl_rot(1, p[4]) * fsl_rot(2, p[5]);
        let want = (r.transpose() * b).normalize();
        assert!(
            (got - want).norm() < 1e-6,
            "volume {k}: {got:?} vs {want:?}"
        );
    }
    // Outlier detection runs on every model estimate: the clean sample has no outlier, so
    // the map has eddy's header, one row per volume and one 0 per slice.
    let map = std::fs::read_to_string(out.join("eddy.eddy_outlier_map")).unwrap();
    let rows: Vec<&str> = map.lines().skip(1).collect();
    assert_eq!(rows.len(), params.len());
    assert!(
        rows.iter().all(|r| r.split_whitespace().all(|v| v == "0")),
        "{map}"
    );
}

#[test]
fn a_las_grid_and_an_i_phase_encoding() {
    // det < 0 (no x reversal in scaled mm), a pure translation along the first voxel axis:
    // with phase encoding along i the restricted RMS is zero, the full one the shift.
    let mut a = Matrix4::from_diagonal(&Vector4::new(-2.0, 2.0, 2.0, 1.0));
    a[(0, 3)] = 40.0;
    let grid = Grid::new([20, 22, 18], a);
    let mask = Mask {
        grid: grid.clone(),
        data: vec![true; grid.len()],
    };
    let mut t = Matrix4::identity();
    t[(0, 3)] = 0.8; // 0.8 mm towards R: +i on a LAS grid is towards L, so eddy's tx = −0.8
    let transforms = [Matrix4::identity(), t];
    let text = eddy_files::parameters_text(&transforms, &grid, None).unwrap();
    let rows: Vec<Vec<f64>> = text
        .lines()
        .map(|l| l.split_whitespace().map(|v| v.parse().unwrap()).collect())
        .collect();
    assert!((rows[1][0] + 0.8).abs() < 1e-10, "{:?}", rows[1]);
    assert!(rows[1][1..].iter().all(|v| v.abs() < 1e-10));
    assert!((ras_matrix(&rows[1], &grid) - t).abs().max() < 1e-10);
    let (full, restricted) = eddy_files::rms_texts(&transforms, &grid, &mask, 0);
    let last = |s: &str| -> Vec<f64> {
        s.lines()
            .last()
            .unwrap()
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    };
    assert!((last(&full)[0] - 0.8).abs() < 1e-9 && (last(&full)[1] - 0.8).abs() < 1e-9);
    assert!(last(&restricted)[0].abs() < 1e-9);
    let (_, restricted_j) = eddy_files::rms_texts(&transforms, &grid, &mask, 1);
    assert!((last(&restricted_j)[0] - 0.8).abs() < 1e-9);
}

#[test]
fn outlier_maps_have_eddys_header_and_shape() {
    let o = eddy_files::SliceOutliers {
        flags: vec![vec![false, true, false], vec![false; 3]],
        n_stdev: vec![vec![0.0, -5.5, 1.0], vec![0.25, 0.0, 0.0]],
        n_sqr_stdev: None,
    };
    let map = eddy_files::outlier_map_text(&o);
    let mut lines = map.lines();
    assert_eq!(
        lines.next().unwrap(),
        "One row per scan, one column per slice. Outlier: 1, Non-outlier: 0"
    );
    let rows: Vec<Vec<u8>> = lines
        .map(|l| l.split_whitespace().map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows, vec![vec![0, 1, 0], vec![0, 0, 0]]);
    let sd = eddy_files::stdev_map_text(&o.n_stdev);
    let vals: Vec<Vec<f64>> = sd
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(vals, o.n_stdev);
}

/// `--transform eddy --eddy-outputs`: the eddy-current columns, read with eddy's own field
/// formula (`LinearScanECModel::ECField`: Hz, a polynomial in the scan's voxel axes about the
/// grid centre, displacing by field × readout time voxels along the phase-encode vector), give
/// the displacement of motion.tsv's full map. The full map F is motion.tsv's m00…m33 and the
/// head motion M comes from the movement columns, so F·M⁻¹ is the scanner-side distortion,
/// whose displacement along the phase encoding must equal eddy's field × time × voxel size.
/// Without a readout time (no `TotalReadoutTime`, no `--readout-time`) the run is refused
/// before any work: eddy's Hz cannot be written without it.
#[test]
fn eddy_current_columns_follow_eddys_field_formula() {
    let tmp = tempfile::tempdir().unwrap();
    for ext in ["nii.gz", "bval", "bvec"] {
        std::fs::copy(
            format!("data/sample/dwi.{ext}"),
            tmp.path().join(format!("sub-01_dwi.{ext}")),
        )
        .unwrap();
    }
    let sidecar = tmp.path().join("sub-01_dwi.json");
    std::fs::write(&sidecar, r#"{"PhaseEncodingDirection": "j-"}"#).unwrap();
    let dwi = tmp.path().join("sub-01_dwi.nii.gz");
    let run = |out: &Path, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_nifreeze-rs"))
            .arg("estimate")
            .arg(&dwi)
            .args(["-j", "2", "-q", "--transform", "eddy", "--no-resample"])
            .args(["--eddy-outputs", "eddy", "--out"])
            .arg(out)
            .args(extra)
            .output()
            .unwrap()
    };
    let refused = run(&tmp.path().join("no_trt"), &[]);
    let log = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{log}");
    assert!(
        log.contains("--readout-time") && log.contains("sub-01_dwi.json"),
        "{log}"
    );
    assert!(!tmp.path().join("no_trt").join("motion.tsv").exists());

    let trt = 0.062;
    let out = tmp.path().join("hmc");
    let r = run(&out, &["--readout-time", &trt.to_string()]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let full = read_motion_tsv(&std::fs::read_to_string(out.join("motion.tsv")).unwrap()).unwrap();
    let (series, _) = nifti::read_series(&dwi).unwrap();
    let grid = series.grid.clone();
    let z: Vec<f64> = (0..3)
        .map(|c| grid.affine.fixed_view::<3, 1>(0, c).norm())
        .collect();
    // j- : the phase-encode direction is minus the second voxel axis, in world coordinates
    let e = -grid.affine.fixed_view::<3, 1>(0, 1).into_owned() / z[1];
    let params = numbers(&out.join("eddy.eddy_parameters"), 0);
    assert_eq!(params.len(), full.len());
    let mut largest: f64 = 0.0;
    for (k, p) in params.iter().enumerate() {
        assert_eq!(p.len(), 16);
        assert!(
            p[9..15].iter().all(|&q| q == 0.0),
            "linear model: no quadratic terms"
        );
        let m = ras_matrix(p, &grid);
        let s_map = full[k] * m.try_inverse().unwrap();
        for v in [[2.0, 3.0, 1.0], [40.0, 10.0, 20.0], [15.0, 45.0, 8.0]] {
            let s = apply(&grid.affine, &Vector3::new(v[0], v[1], v[2]));
            let ours = e.dot(&(apply(&s_map, &s) - s));
            let mut field = p[15];
            for ax in 0..3 {
                field += p[6 + ax] * z[ax] * (v[ax] - (grid.dims[ax] - 1) as f64 / 2.0);
            }
            let eddy_mm = field * trt * z[1];
            assert!(
                (ours - eddy_mm).abs() < 1e-6,
                "volume {k} voxel {v:?}: full map {ours} mm, eddy's field {eddy_mm} mm"
            );
            largest = largest.max(ours.abs());
        }
    }
    // the sample has no eddy currents, but the fitted field is not identically zero
    assert!(largest > 1e-4, "{largest}");
}
