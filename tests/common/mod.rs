//! Helpers shared by the integration tests, built on the library's own readers and scorer
//! (`report::read_motion_tsv`, `compare::score`) instead of copies of them.

#![allow(dead_code)] // each test crate uses a subset

use nalgebra::{DVector, Matrix4, Vector3};
use nifreeze::compare::score;
use nifreeze::image::Mask;
use nifreeze::report::read_motion_tsv;
use std::path::{Path, PathBuf};

/// `simulate` options of a small phantom (5 mm, 2 b=0 + 2 × 6 volumes): seconds to make.
pub const SMALL_PHANTOM: [&str; 6] = [
    "--voxel-size",
    "5",
    "--shells",
    "1000:6,2000:6",
    "--b0",
    "2",
];

/// The true per-volume matrices (m00..m33 columns) of a truth.tsv.
pub fn read_truth(path: impl AsRef<Path>) -> Vec<Matrix4<f64>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    read_motion_tsv(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A rigid transform: rotation `rot_deg` (x, y, z Euler angles, degrees) about the centre `c`
/// (RAS mm), then translation `t` (mm).
pub fn rigid(rot_deg: [f64; 3], t: [f64; 3], c: impl Into<Vector3<f64>>) -> Matrix4<f64> {
    let r = nalgebra::Rotation3::from_euler_angles(
        rot_deg[0].to_radians(),
        rot_deg[1].to_radians(),
        rot_deg[2].to_radians(),
    );
    nifreeze::registration::transform::about_centre(r.matrix(), &Vector3::from(t), &c.into())
}

/// Every voxel centre of the mask (RAS mm).
pub fn mask_points(m: &Mask) -> Vec<Vector3<f64>> {
    m.indices()
        .into_iter()
        .map(|i| {
            let [x, y, z] = m.grid.ijk(i);
            m.grid.world([x as f64, y as f64, z as f64])
        })
        .collect()
}

/// Mean displacement (mm) between two transforms over every mask voxel: `compare::score`'s
/// raw per-volume error with `b` as the truth.
pub fn mean_error(a: &Matrix4<f64>, b: &Matrix4<f64>, m: &Mask) -> f64 {
    score(&[*b], &[*a], &mask_points(m))
        .expect("invertible truth, non-empty mask")
        .per_volume_raw_mean_mm[0]
}

/// Every file under `dir`, recursively, sorted (to compare two output folders file by file).
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(files(&p));
        } else {
            v.push(p);
        }
    }
    v.sort();
    v
}

/// Every output of run folders `a` and `b` but summary.json (timings, command line) is
/// byte-identical, and both hold the same files.
pub fn assert_same_outputs(a: &Path, b: &Path) {
    let (fa, fb) = (files(a), files(b));
    let names = |f: &[PathBuf], root: &Path| -> Vec<PathBuf> {
        f.iter()
            .map(|p| p.strip_prefix(root).unwrap().to_path_buf())
            .collect()
    };
    assert_eq!(names(&fa, a), names(&fb, b));
    for (x, y) in fa.iter().zip(&fb) {
        if x.file_name().unwrap() == "summary.json" {
            continue;
        }
        assert!(
            std::fs::read(x).unwrap() == std::fs::read(y).unwrap(),
            "{} differs between the two runs",
            x.display()
        );
    }
}

/// The bundled sample copied into `dir` under a BIDS name (`sub-01_dwi.nii.gz`, `.bval`,
/// `.bvec`) with `sidecar` as its JSON sidecar; returns the series' path.
pub fn bids_sample(dir: &Path, sidecar: &str) -> PathBuf {
    for ext in ["nii.gz", "bval", "bvec"] {
        std::fs::copy(
            format!("data/sample/dwi.{ext}"),
            dir.join(format!("sub-01_dwi.{ext}")),
        )
        .unwrap();
    }
    std::fs::write(dir.join("sub-01_dwi.json"), sidecar).unwrap();
    dir.join("sub-01_dwi.nii.gz")
}

/// A registration metric's derivative at `t` and central differences of its value, both in
/// parameters scaled so that a unit moves the samples by about 1 mm (`scales`: mm per unit of
/// each increment parameter), so one relative tolerance fits every parameter.
/// Returns (analytic, finite differences).
pub fn scaled_derivatives(
    metric: &dyn nifreeze::registration::metric::Metric,
    t: &Matrix4<f64>,
    inc: &nifreeze::registration::transform::Increment,
    scales: &DVector<f64>,
) -> (Vec<f64>, Vec<f64>) {
    let n = inc.n_params();
    let (_, d) = metric.value_and_derivative(t, inc);
    let h = 1e-3; // mm of shift
    let fd = (0..n)
        .map(|k| {
            let mut p = vec![0.0; n];
            p[k] = h / scales[k];
            let (vp, _) = metric.value_and_derivative(&(t * inc.matrix(&p)), inc);
            p[k] = -h / scales[k];
            let (vm, _) = metric.value_and_derivative(&(t * inc.matrix(&p)), inc);
            (vp - vm) / (2.0 * h)
        })
        .collect();
    ((0..n).map(|k| d[k] / scales[k]).collect(), fd)
}
