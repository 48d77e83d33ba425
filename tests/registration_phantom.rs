//! Registration on the mini phantom (data/sample, a copy of ../shared/phantoms/mini):
//! known transforms applied to the noise-free volumes, and the acquired (moved, noisy)
//! volumes against their clean counterparts with the simulator's truth.tsv.

mod common;
use common::mean_error;

use nalgebra::{Matrix4, Vector3};
use nifreeze::image::{Mask, Series, Volume};
use nifreeze::io::nifti::{read_mask, read_series};
use nifreeze::registration::{register, resample, Interpolation, RegistrationConfig};
use std::path::PathBuf;

fn truth() -> Vec<Matrix4<f64>> {
    common::read_truth(sample("truth.tsv"))
}

fn sample(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data/sample")
        .join(name)
}

fn load() -> (Series, Series, Mask) {
    let (clean, _) = read_series(&sample("clean.nii.gz")).unwrap();
    let (dwi, _) = read_series(&sample("dwi.nii.gz")).unwrap();
    let mask = read_mask(&sample("brainmask.nii.gz"), &clean.grid).unwrap();
    (clean, dwi, mask)
}

/// Affine with a final smoothing of 1 voxel. A target made by resampling a sharp 4 mm image
/// carries a sub-voxel-phase-dependent interpolation blur; a 2 % scale sweeps that phase across
/// the brain and biases the scale parameters (measured: 0.19 mm with σ = 0, 0.12 mm with the
/// default σ = 0.5, 0.007 mm with σ = 1). Real acquisitions prefer σ = 0.5 (README of the bench).
fn affine_smooth() -> RegistrationConfig {
    let mut c = RegistrationConfig::affine();
    c.levels.last_mut().unwrap().sigma = 1.0;
    c
}

#[test]
fn recovers_known_transforms_on_noise_free_phantom_volumes() {
    let (clean, _, mask) = load();
    let c = clean.grid.center_world();
    // b=0 and b≈2000 volumes (the weakest contrast)
    for (k, truth, cfg) in [
        (
            0,
            common::rigid([2.0, -1.5, 2.5], [1.5, -2.0, 1.0], c),
            RegistrationConfig::rigid(),
        ),
        (
            2,
            common::rigid([-3.0, 2.0, 1.0], [-1.0, 2.5, -2.0], c),
            RegistrationConfig::rigid(),
        ),
        (
            9,
            common::rigid([1.0, 1.0, -2.0], [0.5, 1.0, 2.0], c)
                * Matrix4::new_nonuniform_scaling(&Vector3::new(1.02, 0.99, 1.01)),
            affine_smooth(),
        ),
    ] {
        let fixed = clean.to_volume(k);
        // moving(T x) = fixed(x)  ⇔  moving = fixed resampled through T⁻¹
        let moving = resample(
            &fixed,
            &clean.grid,
            &truth.try_inverse().unwrap(),
            Interpolation::CubicBSpline,
        );
        let r = register(&fixed, &moving, Some(&mask), &Matrix4::identity(), &cfg).unwrap();
        let e = mean_error(&r.matrix, &truth, &mask);
        assert!(e <= 0.02, "volume {k}: error {e} mm");
        // round trip: resampling the moving image back through the estimate is as close to
        // the fixed image as resampling it back through the truth (two cubic interpolations
        // of 4 mm data lose detail either way), and far closer than no correction
        let rms = |v: &Volume| {
            let idx = mask.indices();
            (idx.iter()
                .map(|&i| (v.data[i] - fixed.data[i]).powi(2) as f64)
                .sum::<f64>()
                / idx.len() as f64)
                .sqrt()
        };
        let back = rms(&resample(
            &moving,
            &clean.grid,
            &r.matrix,
            Interpolation::CubicBSpline,
        ));
        let ideal = rms(&resample(
            &moving,
            &clean.grid,
            &truth,
            Interpolation::CubicBSpline,
        ));
        assert!(
            back <= 1.01 * ideal,
            "volume {k}: round trip rms {back} vs {ideal} through the truth"
        );
        assert!(
            back < 0.3 * rms(&moving),
            "volume {k}: {back} vs {}",
            rms(&moving)
        );
    }
}

#[test]
fn acquired_volumes_match_the_simulation_truth() {
    // Acceptance of issue 4 on data/sample: every noisy moved volume to its clean counterpart.
    // ANTs (Mattes, full resolution) on the same data: median 0.059 mm, worst 0.108 mm.
    let (clean, dwi, mask) = load();
    let truth = truth();
    let mut errs: Vec<f64> = (0..dwi.n_volumes)
        .map(|k| {
            let r = register(
                &clean.to_volume(k),
                &dwi.to_volume(k),
                Some(&mask),
                &Matrix4::identity(),
                &RegistrationConfig::rigid(),
            )
            .unwrap();
            mean_error(&r.matrix, &truth[k], &mask)
        })
        .collect();
    errs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = errs[errs.len() / 2];
    let worst = errs[errs.len() - 1];
    assert!(median <= 0.04, "median error {median} mm");
    assert!(worst <= 0.10, "worst error {worst} mm");
}
