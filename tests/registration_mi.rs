//! Mutual-information registration across contrasts: b=0 reference (median of the b0s) against
//! the mean diffusion-weighted image of the mini phantom (data/sample, 4 mm), whose contrast is
//! partly inverted. Truth is either a known rigid transform applied to the DW volumes before
//! averaging (noise-free `clean.nii.gz`) or the phantom's own motion (`truth.tsv`, noisy
//! `dwi.nii.gz`, realigned with the true transforms before averaging).

mod common;
use common::mean_error;

use nalgebra::{Matrix4, Vector3};
use nifreeze::image::{Mask, Series, Volume};
use nifreeze::io::nifti::{read_mask, read_series};
use nifreeze::registration::metric::{MiFixed, MutualInformation};
use nifreeze::registration::transform::Increment;
use nifreeze::registration::{
    pyramid, register, resample, Interpolation, MetricKind, RegistrationConfig, RegistrationResult,
    TransformKind,
};
use std::path::Path;

fn truth() -> Vec<Matrix4<f64>> {
    common::read_truth("data/sample/truth.tsv")
}

fn bvals() -> Vec<f64> {
    std::fs::read_to_string("data/sample/dwi.bval")
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

/// Rows of truth.tsv: RAS reference → volume matrices.
fn load(name: &str) -> (Series, Mask) {
    let (s, _) = read_series(Path::new(&format!("data/sample/{name}"))).unwrap();
    let m = read_mask(Path::new("data/sample/brainmask.nii.gz"), &s.grid).unwrap();
    (s, m)
}

fn median_b0(s: &Series, b: &[f64]) -> Volume {
    let idx: Vec<usize> = (0..b.len()).filter(|&i| b[i] <= 50.0).collect();
    nifreeze::estimate::median_volume(s, &idx)
}

/// Mean of the volumes with b in `range`, each first resampled through `t(k)`
/// (`out_k(x) = vol_k(t(k)·x)`).
fn mean_dw(
    s: &Series,
    b: &[f64],
    range: (f64, f64),
    t: impl Fn(usize) -> Option<Matrix4<f64>>,
) -> Volume {
    let idx: Vec<usize> = (0..b.len())
        .filter(|&i| b[i] > range.0 && b[i] < range.1)
        .collect();
    let mut acc = vec![0f64; s.grid.len()];
    for &i in &idx {
        let v = s.to_volume(i);
        let v = match t(i) {
            Some(m) => resample(&v, &s.grid, &m, Interpolation::CubicBSpline),
            None => v,
        };
        for (a, x) in acc.iter_mut().zip(&v.data) {
            *a += *x as f64;
        }
    }
    let n = idx.len() as f64;
    Volume::new(s.grid.clone(), acc.iter().map(|a| (a / n) as f32).collect())
}

/// World centroid of the mask's voxels.
fn mask_centre(m: &Mask) -> Vector3<f64> {
    let points = common::mask_points(m);
    points.iter().sum::<Vector3<f64>>() / points.len() as f64
}

/// Realign every volume of `s` with its true transform: out_k(x) = s_k(T_k x).
fn realigned(s: &Series, t: &[Matrix4<f64>]) -> Series {
    let vols: Vec<Vec<f32>> = (0..s.n_volumes)
        .map(|k| resample(&s.to_volume(k), &s.grid, &t[k], Interpolation::CubicBSpline).data)
        .collect();
    Series::from_volumes(s.grid.clone(), &vols)
}

fn moving_with(s: &Series, b: &[f64], truth: &Matrix4<f64>) -> Volume {
    // moving_k(y) = s_k(truth⁻¹ y): the DW head moved by `truth`, so fixed(x) ≈ moving(truth·x)
    let inv = truth.try_inverse().unwrap();
    mean_dw(s, b, (50.0, 3000.0), |_| Some(inv))
}

/// `moving` registered to `fixed` by mutual information (default settings) from the identity.
fn mi_from_identity(fixed: &Volume, moving: &Volume, m: &Mask) -> RegistrationResult {
    register(
        fixed,
        moving,
        Some(m),
        &Matrix4::identity(),
        &RegistrationConfig::mutual_information(),
    )
    .unwrap()
}

#[test]
fn identical_images_give_identity() {
    let b = bvals();
    let (s, m) = load("clean.nii.gz");
    let fixed = median_b0(&s, &b);
    let r = register(
        &fixed,
        &fixed,
        Some(&m),
        &Matrix4::identity(),
        &RegistrationConfig::mutual_information(),
    )
    .unwrap();
    let e = mean_error(&r.matrix, &Matrix4::identity(), &m);
    assert!(e < 1e-3, "identity error {e} mm");
}

/// The Mattes metric's analytic derivative against central differences of its value, for
/// every transform family (rigid and affine rows; the eddy model's reduced affine rows), in
/// parameters scaled to about 1 mm of shift each (so one tolerance fits every parameter).
#[test]
fn analytic_gradient_matches_finite_differences() {
    let b = bvals();
    let (s, m) = load("clean.nii.gz");
    let fixed = median_b0(&s, &b);
    let moving = mean_dw(&s, &b, (50.0, 3000.0), |_| None);
    let c = mask_centre(&m);
    let t = common::rigid([1.0, 0.5, 0.0], [0.5, 0.3, -0.2], c);
    let dims = fixed.grid.dims;
    let mask = nifreeze::mask::dilate_voxels(&m.data, dims, 4);
    let pts = pyramid::lattice_points(&mask, dims, 1);
    let minv = moving.grid.affine.try_inverse().unwrap();
    // second moment of the samples about their mean, for the parameter scales
    let world: Vec<Vector3<f64>> = pts
        .iter()
        .map(|p| fixed.grid.world([p[0] as f64, p[1] as f64, p[2] as f64]))
        .collect();
    let centre = world.iter().sum::<Vector3<f64>>() / world.len() as f64;
    let sm = world
        .iter()
        .map(|x| (x - centre) * (x - centre).transpose())
        .sum::<nalgebra::Matrix3<f64>>()
        / world.len() as f64;
    let MetricKind::MutualInformation(settings) = RegistrationConfig::mutual_information().metric
    else {
        unreachable!()
    };
    for kind in [
        TransformKind::Rigid,
        TransformKind::Affine,
        TransformKind::Eddy {
            pe: [0.0, 1.0, 0.0],
        },
    ] {
        let mf = MiFixed::new(&fixed.grid, &fixed.data, &pts, 1, &settings);
        let metric = MutualInformation::new(
            &mf,
            &moving.grid,
            &moving.data,
            &minv,
            &t,
            &centre,
            kind,
            &settings,
        )
        .unwrap();
        let inc = Increment::at(kind, centre, &t);
        let scales = inc.physical_shift_scales(&sm);
        let (gq, fd) = common::scaled_derivatives(&metric, &t, &inc, &scales);
        let scale = fd.iter().map(|v| v.abs()).fold(0.0, f64::max);
        assert!(scale > 0.0);
        for k in 0..fd.len() {
            assert!(
                (gq[k] - fd[k]).abs() < 2e-3 * scale,
                "{kind:?} parameter {k}: analytic {} vs finite difference {}",
                gq[k],
                fd[k]
            );
        }
    }
}

/// The exact case: the moving image is the mean DW image with its header moved by `truth`
/// (no resampling), so the only error is the metric's own bias across contrasts (measured
/// 0.048 mm for both motions at 4 mm voxels).
#[test]
fn recovers_header_motion_across_contrasts() {
    let b = bvals();
    let (s, m) = load("clean.nii.gz");
    let fixed = median_b0(&s, &b);
    let c = mask_centre(&m);
    for (rot, tr) in [
        ([2.0, 0.0, 0.0], [1.5, 0.0, 0.0]),
        ([5.0, -3.0, 4.0], [4.0, -3.0, 2.5]),
    ] {
        let truth = common::rigid(rot, tr, c);
        let mut moving = mean_dw(&s, &b, (50.0, 3000.0), |_| None);
        moving.grid.affine = truth * moving.grid.affine;
        let r = mi_from_identity(&fixed, &moving, &m);
        let e = mean_error(&r.matrix, &truth, &m);
        eprintln!("header motion {rot:?}° {tr:?} mm: error {e:.4} mm");
        assert!(e <= 0.055, "header motion {rot:?} {tr:?}: error {e} mm");
    }
}

/// The DW volumes resampled (cubic B-spline) with a known motion before averaging: the
/// resampling smooths the moving image but not the fixed one, which biases MI a little more.
#[test]
fn recovers_resampled_motion_across_contrasts() {
    let b = bvals();
    let (s, m) = load("clean.nii.gz");
    let fixed = median_b0(&s, &b);
    let c = mask_centre(&m);
    // measured (96 bins, jitter): 0.045, 0.047, 0.058, 0.082 mm
    for (rot, tr, tol) in [
        ([2.0, -1.0, 1.5], [1.5, -1.0, 1.2], 0.06),
        ([0.0, 2.0, 0.0], [0.0, 0.0, 1.5], 0.06),
        ([0.0, 0.0, 5.0], [0.0, 4.0, 0.0], 0.075),
        ([2.0, 0.0, 0.0], [1.5, 0.0, 0.0], 0.1),
    ] {
        let truth = common::rigid(rot, tr, c);
        let moving = moving_with(&s, &b, &truth);
        let r = mi_from_identity(&fixed, &moving, &m);
        let e = mean_error(&r.matrix, &truth, &m);
        eprintln!("resampled motion {rot:?}° {tr:?} mm: error {e:.4} mm");
        assert!(e <= tol, "resampled motion {rot:?} {tr:?}: error {e} mm");
        // the result is rigid
        let r3 = r.matrix.fixed_view::<3, 3>(0, 0);
        assert!(
            (r3.transpose() * r3 - nalgebra::Matrix3::identity())
                .abs()
                .max()
                < 1e-12
        );
    }
}

/// Realistic noise: the phantom's own noisy volumes, realigned with their true motion; the
/// b0 median and the DW mean are then in the same frame (truth: identity), and a known motion
/// applied to the DW volumes on top must be recovered too.
#[test]
fn noisy_phantom_b0_to_mean_dw() {
    let b = bvals();
    let (n, m) = load("dwi.nii.gz");
    let n = realigned(&n, &truth());
    let fixed = median_b0(&n, &b);
    let c = mask_centre(&m);
    for (rot, tr) in [([0.0; 3], [0.0; 3]), ([5.0, -3.0, 4.0], [4.0, -3.0, 2.5])] {
        let truth = common::rigid(rot, tr, c);
        let moving = moving_with(&n, &b, &truth);
        let r = mi_from_identity(&fixed, &moving, &m);
        let e = mean_error(&r.matrix, &truth, &m);
        eprintln!("noisy {rot:?}° {tr:?} mm: error {e:.4} mm");
        assert!(e <= 0.13, "noisy {rot:?} {tr:?}: error {e} mm");
    }
}

#[test]
fn thread_count_invariant_and_starts_from_init() {
    let b = bvals();
    let (s, m) = load("clean.nii.gz");
    let fixed = median_b0(&s, &b);
    let c = mask_centre(&m);
    let truth = common::rigid([5.0, -3.0, 4.0], [4.0, -3.0, 2.5], c);
    let moving = moving_with(&s, &b, &truth);
    let run = |threads: usize, init: &Matrix4<f64>| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| {
                register(
                    &fixed,
                    &moving,
                    Some(&m),
                    init,
                    &RegistrationConfig::mutual_information(),
                )
            })
            .unwrap()
    };
    let a = run(1, &Matrix4::identity());
    let bb = run(3, &Matrix4::identity());
    assert_eq!(a.matrix, bb.matrix);
    assert_eq!(a.metric.to_bits(), bb.metric.to_bits());
    // starting at the answer: stays there (few iterations, same optimum within 0.01 mm)
    let s2 = run(2, &a.matrix);
    assert!(mean_error(&s2.matrix, &a.matrix, &m) < 0.01);
}

/// Sampling half of the voxels (as the estimate bootstrap does) still recovers a large known
/// motion across contrasts, close to the all-voxel answer, the same for any thread count.
#[test]
fn half_sampling_recovers_motion_and_is_deterministic() {
    let b = bvals();
    let (s, m) = load("clean.nii.gz");
    let fixed = median_b0(&s, &b);
    let truth = common::rigid([5.0, -3.0, 4.0], [4.0, -3.0, 2.5], mask_centre(&m));
    let moving = moving_with(&s, &b, &truth);
    let half = RegistrationConfig {
        sampling: 0.5,
        ..RegistrationConfig::mutual_information()
    };
    let run = |threads: usize, cfg: &RegistrationConfig| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| register(&fixed, &moving, Some(&m), &Matrix4::identity(), cfg))
            .unwrap()
    };
    let (h1, h2, all) = (
        run(1, &half),
        run(2, &half),
        run(2, &RegistrationConfig::mutual_information()),
    );
    assert_eq!(h1.matrix, h2.matrix);
    let e = mean_error(&h1.matrix, &truth, &m);
    let d = mean_error(&h1.matrix, &all.matrix, &m);
    eprintln!("half sampling: error {e:.4} mm, {d:.4} mm from the all-voxel answer");
    assert!(e <= 0.1, "half sampling: error {e} mm");
    assert!(d > 0.0, "sampling had no effect");
    for bad in [0.0, -0.5, 1.5, f64::NAN] {
        let cfg = RegistrationConfig {
            sampling: bad,
            ..RegistrationConfig::mutual_information()
        };
        assert!(register(&fixed, &moving, Some(&m), &Matrix4::identity(), &cfg).is_err());
    }
}

#[test]
fn rejects_bad_inputs() {
    let b = bvals();
    let (s, m) = load("clean.nii.gz");
    let fixed = median_b0(&s, &b);
    let mut nan = Matrix4::identity();
    nan[(0, 3)] = f64::NAN;
    assert!(register(
        &fixed,
        &fixed,
        Some(&m),
        &nan,
        &RegistrationConfig::mutual_information()
    )
    .is_err());
    let tiny = Mask {
        grid: m.grid.clone(),
        data: (0..m.data.len()).map(|i| i == m.indices()[0]).collect(),
    };
    assert!(register(
        &fixed,
        &fixed,
        Some(&tiny),
        &Matrix4::identity(),
        &RegistrationConfig::mutual_information()
    )
    .is_err());
    // the moving image far away from the fixed mask
    let far = common::rigid([0.0; 3], [1000.0, 0.0, 0.0], Vector3::zeros());
    assert!(register(
        &fixed,
        &fixed,
        Some(&m),
        &far,
        &RegistrationConfig::mutual_information()
    )
    .is_err());
}

/// A target prepared once (what the estimate bootstrap does for every volume against the b=0
/// reference) gives exactly the answers of separate `register` calls, for each moving image
/// and for both metrics.
#[test]
fn prepared_target_matches_separate_registrations() {
    let b = bvals();
    let (s, m) = load("clean.nii.gz");
    let fixed = median_b0(&s, &b);
    let c = mask_centre(&m);
    let movings: Vec<Volume> = [
        ([2.0, -1.0, 1.5], [1.5, -1.0, 1.2]),
        ([0.0, 2.0, 0.0], [0.0, 0.0, 1.5]),
    ]
    .iter()
    .map(|&(rot, tr)| moving_with(&s, &b, &common::rigid(rot, tr, c)))
    .collect();
    for cfg in [
        RegistrationConfig::mutual_information(),
        RegistrationConfig::rigid(),
    ] {
        let target = nifreeze::registration::prepare(&fixed, Some(&m), &cfg).unwrap();
        for mv in &movings {
            let a = target.register(mv, &Matrix4::identity()).unwrap();
            let r = register(&fixed, mv, Some(&m), &Matrix4::identity(), &cfg).unwrap();
            assert_eq!(a.matrix, r.matrix);
            assert_eq!(a.metric.to_bits(), r.metric.to_bits());
        }
    }
}
