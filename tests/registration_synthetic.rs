//! Registration on analytic volumes: the moving image is sampled from the same continuous
//! object moved by a known transform, so the truth is exact and independent of our resampler.

mod common;
use common::{mean_error, rigid};

use nalgebra::{Matrix3, Matrix4, Rotation3, Vector3};
use nifreeze::image::{Grid, Mask, Volume};
use nifreeze::registration::{register, RegistrationConfig, TransformKind};

/// A smooth head-like object (RAS mm): an ellipsoidal "brain" with a soft edge, a darker
/// core and a few off-centre blobs that break every symmetry.
fn object(p: &Vector3<f64>) -> f64 {
    let q = Vector3::new(p.x / 48.0, (p.y + 5.0) / 56.0, (p.z - 5.0) / 44.0);
    let r = q.norm();
    let brain = 0.5 * (1.0 - ((r - 1.0) / 0.08).tanh());
    let blob =
        |c: Vector3<f64>, s: f64, a: f64| a * (-(p - c).norm_squared() / (2.0 * s * s)).exp();
    100.0 * brain - 40.0 * (-(q.norm_squared()) / 0.1).exp() * brain
        + blob(Vector3::new(20.0, 15.0, 10.0), 8.0, 60.0)
        + blob(Vector3::new(-25.0, -20.0, 0.0), 10.0, 45.0)
        + blob(Vector3::new(5.0, -30.0, 25.0), 7.0, -30.0)
        + blob(Vector3::new(-10.0, 30.0, -20.0), 9.0, 35.0)
}

fn sample(grid: &Grid, f: impl Fn(&Vector3<f64>) -> f64) -> Volume {
    let mut data = Vec::with_capacity(grid.len());
    for k in 0..grid.dims[2] {
        for j in 0..grid.dims[1] {
            for i in 0..grid.dims[0] {
                data.push(f(&grid.world([i as f64, j as f64, k as f64])) as f32);
            }
        }
    }
    Volume::new(grid.clone(), data)
}

/// Grid of `dims` voxels of size `vs` with a rotated (oblique) and optionally x-flipped
/// affine, centred on the world origin.
fn grid(dims: [usize; 3], vs: f64, rot_deg: [f64; 3], flip_x: bool) -> Grid {
    grid_aniso(dims, [vs; 3], rot_deg, flip_x)
}

fn grid_aniso(dims: [usize; 3], vs: [f64; 3], rot_deg: [f64; 3], flip_x: bool) -> Grid {
    let r = Rotation3::from_euler_angles(
        rot_deg[0].to_radians(),
        rot_deg[1].to_radians(),
        rot_deg[2].to_radians(),
    );
    let s = Matrix3::from_diagonal(&Vector3::new(
        if flip_x { -vs[0] } else { vs[0] },
        vs[1],
        vs[2],
    ));
    let lin = r.matrix() * s;
    let half = Vector3::new(
        dims[0] as f64 - 1.0,
        dims[1] as f64 - 1.0,
        dims[2] as f64 - 1.0,
    ) / 2.0;
    let off = -lin * half;
    let mut a = Matrix4::identity();
    a.fixed_view_mut::<3, 3>(0, 0).copy_from(&lin);
    a[(0, 3)] = off.x;
    a[(1, 3)] = off.y;
    a[(2, 3)] = off.z;
    Grid::new(dims, a)
}

fn mask_of(v: &Volume) -> Mask {
    Mask {
        grid: v.grid.clone(),
        data: v.data.iter().map(|&x| x > 30.0).collect(),
    }
}

/// Mean displacement (mm) between two transforms over the mask voxels.
/// moving(T x) = fixed(x): the moving image samples the object at T⁻¹ y.
fn moved(grid: &Grid, t: &Matrix4<f64>) -> Volume {
    let inv = t.try_inverse().unwrap();
    sample(grid, |y| object(&inv.transform_point(&(*y).into()).coords))
}

/// The usual fixed image: the object on a 48×56×46 grid of 2.5 mm voxels, and its mask.
fn standard_fixed() -> (Grid, Volume, Mask) {
    let g = grid([48, 56, 46], 2.5, [0.0; 3], false);
    let f = sample(&g, object);
    let m = mask_of(&f);
    (g, f, m)
}

/// Register `mv` to `f` from the identity; the mean error (mm) of the result against `truth`.
fn error_from_identity(
    f: &Volume,
    mv: &Volume,
    m: &Mask,
    cfg: &RegistrationConfig,
    truth: &Matrix4<f64>,
) -> f64 {
    let r = register(f, mv, Some(m), &Matrix4::identity(), cfg).unwrap();
    mean_error(&r.matrix, truth, m)
}

#[test]
fn identical_images_give_identity() {
    let (_, f, m) = standard_fixed();
    let r = register(
        &f,
        &f,
        Some(&m),
        &Matrix4::identity(),
        &RegistrationConfig::default(),
    )
    .unwrap();
    assert!(
        mean_error(&r.matrix, &Matrix4::identity(), &m) < 1e-6,
        "{}",
        r.matrix
    );
    assert!(r.metric > 0.999_999);
}

#[test]
fn recovers_rigid_motion_up_to_6_degrees_6_mm() {
    let (g, f, m) = standard_fixed();
    for (rot, t) in [
        ([3.0, -2.0, 1.5], [2.0, -1.0, 2.5]),
        ([-6.0, 5.0, 6.0], [6.0, -6.0, 5.0]),
    ] {
        let truth = common::rigid(rot, t, [0.0, -20.0, 10.0]);
        let mv = moved(&g, &truth);
        let e = error_from_identity(&f, &mv, &m, &RegistrationConfig::rigid(), &truth);
        assert!(e <= 0.02, "rigid {rot:?} {t:?}: error {e} mm");
    }
}

#[test]
fn recovers_affine_motion() {
    let (g, f, m) = standard_fixed();
    let mut truth = common::rigid([2.0, 1.0, -2.5], [1.5, 2.0, -1.0], [0.0, 0.0, 0.0]);
    let shear = Matrix4::new(
        1.03, 0.02, 0.0, 0.0, 0.0, 0.98, -0.015, 0.0, 0.01, 0.0, 1.02, 0.0, 0.0, 0.0, 0.0, 1.0,
    );
    truth *= shear;
    let mv = moved(&g, &truth);
    let e = error_from_identity(&f, &mv, &m, &RegistrationConfig::affine(), &truth);
    assert!(e <= 0.02, "affine error {e} mm");
    // rigid cannot represent it: the rigid result must be clearly worse (the test can fail)
    assert!(error_from_identity(&f, &mv, &m, &RegistrationConfig::rigid(), &truth) > 0.3);
}

#[test]
fn oblique_and_flipped_grids_in_world_space() {
    // fixed: oblique det>0 grid; moving: another obliquity, x flipped (det<0), other voxel size
    let gf = grid([48, 56, 46], 2.5, [8.0, -5.0, 12.0], false);
    let gm = grid([44, 52, 42], 2.75, [-6.0, 10.0, -4.0], true);
    assert!(gf.affine.determinant() > 0.0 && gm.affine.determinant() < 0.0);
    let f = sample(&gf, object);
    let m = mask_of(&f);
    let truth = common::rigid([2.5, -3.0, 2.0], [-2.0, 1.5, 3.0], [0.0, -20.0, 10.0]);
    let mv = moved(&gm, &truth);
    let e = error_from_identity(&f, &mv, &m, &RegistrationConfig::rigid(), &truth);
    assert!(e <= 0.02, "oblique error {e} mm");
}

#[test]
fn starts_from_the_initial_transform_and_is_thread_count_invariant() {
    let (g, f, m) = standard_fixed();
    let truth = common::rigid([4.0, -3.0, 2.0], [3.0, 2.0, -4.0], [0.0, 0.0, 0.0]);
    let mv = moved(&g, &truth);
    // an initialisation close to the truth converges to the same answer
    let init = common::rigid([3.5, -2.5, 2.0], [2.5, 2.0, -3.5], [0.0, 0.0, 0.0]);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| register(&f, &mv, Some(&m), &init, &RegistrationConfig::rigid()).unwrap())
    };
    let (r1, r2) = (run(1), run(2));
    assert_eq!(
        r1.matrix, r2.matrix,
        "results differ between 1 and 2 threads"
    );
    assert_eq!(r1.iterations, r2.iterations);
    assert!(mean_error(&r1.matrix, &truth, &m) <= 0.02);
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let g = grid([20, 20, 20], 2.5, [0.0; 3], false);
    let f = sample(&g, object);
    let empty = Mask {
        grid: g.clone(),
        data: vec![false; g.len()],
    };
    assert!(register(
        &f,
        &f,
        Some(&empty),
        &Matrix4::identity(),
        &RegistrationConfig::default()
    )
    .is_err());
    let flat = Volume::new(g.clone(), vec![1.0; g.len()]);
    assert!(register(
        &flat,
        &f,
        None,
        &Matrix4::identity(),
        &RegistrationConfig::default()
    )
    .is_err());
    let sing = Matrix4::zeros();
    assert!(register(&f, &f, None, &sing, &RegistrationConfig::default()).is_err());
    let other = Mask {
        grid: grid([10, 10, 10], 2.5, [0.0; 3], false),
        data: vec![true; 1000],
    };
    assert!(register(
        &f,
        &f,
        Some(&other),
        &Matrix4::identity(),
        &RegistrationConfig::default()
    )
    .is_err());
    let _ = TransformKind::Affine.n_params();
}

#[test]
fn non_finite_voxels_count_as_zero() {
    // NaN / inf far from the brain must not change the answer; inside they act like 0
    let (g, f, m) = standard_fixed();
    let truth = common::rigid([2.0, -1.0, 1.0], [1.0, 1.5, -1.0], [0.0, 0.0, 0.0]);
    let mv = moved(&g, &truth);
    let clean = register(
        &f,
        &mv,
        Some(&m),
        &Matrix4::identity(),
        &RegistrationConfig::rigid(),
    )
    .unwrap();
    let (mut f2, mut mv2) = (f.clone(), mv.clone());
    f2.data[0] = f32::NAN;
    mv2.data[1] = f32::INFINITY;
    let r = register(
        &f2,
        &mv2,
        Some(&m),
        &Matrix4::identity(),
        &RegistrationConfig::rigid(),
    )
    .unwrap();
    assert!(r.matrix.iter().all(|v| v.is_finite()));
    assert_eq!(r.matrix, clean.matrix);
}

#[test]
fn anisotropic_moving_voxels() {
    // 2.5 mm isotropic fixed; moving with 2 × 2 × 3.5 mm voxels, oblique: smoothing is set in
    // millimetres per axis, so both images are blurred alike
    let gf = grid([48, 56, 46], 2.5, [0.0; 3], false);
    let gm = grid_aniso([60, 70, 34], [2.0, 2.0, 3.5], [4.0, 0.0, -7.0], false);
    let f = sample(&gf, object);
    let m = mask_of(&f);
    let truth = common::rigid([-2.0, 3.0, 1.0], [2.0, -1.0, 1.5], [0.0, -20.0, 10.0]);
    let mv = moved(&gm, &truth);
    let e = error_from_identity(&f, &mv, &m, &RegistrationConfig::rigid(), &truth);
    assert!(e <= 0.02, "anisotropic error {e} mm");
}

/// The eddy-current model: head motion plus a field linear in scanner position displacing the
/// image along the phase-encode axis (voxel j of an oblique grid). The moving image samples the
/// object through the known full map, with the intensity change of the stretch (the field's
/// Jacobian), so the truth is exact.
#[test]
fn eddy_model_recovers_motion_and_a_linear_field_along_the_phase_encode_axis() {
    use nifreeze::registration::eddy::{EddyModel, EddyParams};
    let g = grid([48, 56, 46], 2.5, [8.0, -5.0, 12.0], false);
    let f = sample(&g, object);
    let m = mask_of(&f);
    // PE along voxel j, in scanner RAS
    let col = g.affine.fixed_view::<3, 1>(0, 1).into_owned();
    let pe = col / col.norm();
    let model = EddyModel::new(pe, Vector3::new(0.0, -5.0, 5.0));
    let truth_params = EddyParams {
        rigid: common::rigid([2.0, -1.5, 1.0], [1.0, -0.8, 1.5], [0.0, -20.0, 10.0]),
        constant: 0.7,
        gradient: Vector3::new(0.012, -0.02, 0.009),
    };
    let truth = model.compose(&truth_params);
    let det = model.jacobian_determinant(&truth_params);
    let inv = truth.try_inverse().unwrap();
    let mv = sample(&g, |y| {
        object(&inv.transform_point(&(*y).into()).coords) / det
    });
    let eddy = register(
        &f,
        &mv,
        Some(&m),
        &Matrix4::identity(),
        &RegistrationConfig::eddy(pe.into()),
    )
    .unwrap();
    let rigid_only = register(
        &f,
        &mv,
        Some(&m),
        &Matrix4::identity(),
        &RegistrationConfig::rigid(),
    )
    .unwrap();
    let e_eddy = mean_error(&eddy.matrix, &truth, &m);
    let e_rigid = mean_error(&rigid_only.matrix, &truth, &m);
    eprintln!("eddy-current map: eddy model {e_eddy:.4} mm, rigid {e_rigid:.4} mm");
    assert!(e_eddy < 0.02, "{e_eddy}");
    assert!(e_rigid > 0.3, "the distortion is not rigid: {e_rigid}");
    // the result stays in the family: its decomposition recomposes it exactly, the rigid
    // part is a rotation, and it recovers the field gradient
    let p = model.decompose(&eddy.matrix, 0.7);
    assert!((model.compose(&p) - eddy.matrix).abs().max() < 1e-9);
    let r = p.rigid.fixed_view::<3, 3>(0, 0).into_owned();
    assert!((r.transpose() * r - Matrix3::identity()).abs().max() < 1e-12);
    assert!(
        (p.gradient - truth_params.gradient).norm() < 5e-4,
        "{} vs {}",
        p.gradient,
        truth_params.gradient
    );
}

#[test]
fn eddy_model_refuses_a_missing_phase_encode_direction() {
    let g = grid([24, 28, 23], 5.0, [0.0; 3], false);
    let f = sample(&g, object);
    let err = register(
        &f,
        &f,
        None,
        &Matrix4::identity(),
        &RegistrationConfig::eddy([f64::NAN; 3]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("phase-encode"), "{err}");
}

/// The least-squares metric's value and derivative (the interface BFGS-type optimisers use):
/// near alignment its inverse-compositional derivative agrees with central differences of its
/// value, for every family, and the value is zero-residual invariant to intensity scale and
/// offset.
#[test]
fn least_squares_metric_derivative_matches_finite_differences() {
    use nifreeze::registration::metric::{FixedSamples, LeastSquares, Metric, MovingImage};
    use nifreeze::registration::{interpolate::BSpline, pyramid, transform::Increment};
    let g = grid([40, 46, 38], 3.0, [4.0, -3.0, 2.0], false);
    let f = sample(&g, object);
    let m = mask_of(&f);
    let c = [2.0, -3.0, 4.0];
    let truth = common::rigid([0.3, -0.2, 0.25], [0.2, -0.15, 0.1], c);
    // moving = 1.7·object(T⁻¹y) + 12: a different gain and offset
    let inv = truth.try_inverse().unwrap();
    let mv = sample(&g, |y| {
        1.7 * object(&inv.transform_point(&(*y).into()).coords) + 12.0
    });
    let dims = g.dims;
    let pts = pyramid::lattice_points(&m.data, dims, 1);
    let centre = Vector3::from(c);
    let minv = g.affine.try_inverse().unwrap();
    for kind in [
        TransformKind::Rigid,
        TransformKind::Affine,
        TransformKind::Eddy {
            pe: [0.0, 1.0, 0.0],
        },
    ] {
        let ls = LeastSquares {
            samples: &FixedSamples::new(&f.data, dims, &g.affine, &pts, kind, &centre, true, None),
            moving: MovingImage::Cubic(BSpline::new(&mv.data, dims)),
            fixed_affine: g.affine,
            moving_inv_affine: minv,
        };
        // at the truth the residual after scale and offset is (nearly) zero
        let at_truth = ls.value_and_derivative(&truth, &Increment::at(kind, centre, &truth));
        let t = Matrix4::identity();
        let inc = Increment::at(kind, centre, &t);
        let (v, _) = ls.value_and_derivative(&t, &inc);
        assert!(at_truth.0 < 1e-3 * v, "{kind:?}: {} vs {v}", at_truth.0);
        // scale each parameter to ~1 mm of shift so one tolerance fits all
        let sm = nalgebra::Matrix3::from_diagonal_element(40.0f64.powi(2));
        let scales = inc.physical_shift_scales(&sm);
        let (dq, fd) = common::scaled_derivatives(&ls, &t, &inc, &scales);
        let big = fd.iter().map(|v| v.abs()).fold(0.0, f64::max);
        for k in 0..fd.len() {
            assert!(
                (dq[k] - fd[k]).abs() < 0.1 * big,
                "{kind:?} parameter {k}: {} vs finite difference {}",
                dq[k],
                fd[k]
            );
        }
    }
}

#[test]
fn refinement_from_a_near_start_matches_the_full_pyramid() {
    // what the estimate loop's passes do: start within a fraction of a voxel, finest level only
    let g = grid([48, 56, 46], 2.5, [0.0; 3], false);
    let f = sample(&g, object);
    let m = mask_of(&f);
    let truth = rigid([2.0, -1.5, 1.0], [1.5, -2.0, 1.0], [0.0, -20.0, 10.0]);
    let mv = moved(&g, &truth);
    let start = truth * rigid([0.3, -0.2, 0.25], [0.4, 0.3, -0.35], [0.0; 3]);
    assert!(mean_error(&start, &truth, &m) > 0.4);
    let full = RegistrationConfig::rigid();
    let fine = full.refinement();
    assert_eq!(fine.levels.len(), 1);
    assert_eq!(fine.levels[0], *full.levels.last().unwrap());
    let a = register(&f, &mv, Some(&m), &start, &full).unwrap();
    let b = register(&f, &mv, Some(&m), &start, &fine).unwrap();
    let (ea, eb) = (
        mean_error(&a.matrix, &truth, &m),
        mean_error(&b.matrix, &truth, &m),
    );
    assert!(ea <= 0.02 && eb <= 0.02, "full {ea} mm, refinement {eb} mm");
    assert!(mean_error(&a.matrix, &b.matrix, &m) < 0.005);
    assert!(
        b.iterations < a.iterations,
        "{} vs {}",
        b.iterations,
        a.iterations
    );
}

/// Weights per fixed voxel (`prepare_weighted`): equal weights give the unweighted result bit
/// for bit; a region of the fixed image that is wrong (a prediction's misfit: here a blob the
/// moving object does not have) biases the unweighted estimate, and weighting that region
/// down removes the bias.
#[test]
fn weights_keep_a_wrong_region_of_the_fixed_image_out() {
    use nifreeze::registration::{prepare, prepare_weighted, sampling};
    use std::borrow::Cow;
    let g = grid([48, 56, 46], 2.5, [0.0; 3], false);
    let c = Vector3::new(22.0, -10.0, 12.0);
    // the misfit: a bright blob at the brain's edge, in the fixed image only
    let wrong = |p: &Vector3<f64>| 60.0 * (-(p - c).norm_squared() / (2.0 * 6.0 * 6.0)).exp();
    let f = sample(&g, |p| object(p) + wrong(p));
    let m = mask_of(&sample(&g, object));
    let truth = common::rigid([1.0, -0.5, 0.8], [0.7, -0.4, 0.5], [0.0, -20.0, 10.0]);
    let mv = moved(&g, &truth);
    let cfg = RegistrationConfig::rigid();
    let s = sampling(&g, Some(&m), &cfg).unwrap();
    let run = |w: Option<&[f32]>| {
        prepare_weighted(&f, Cow::Borrowed(&s), w)
            .unwrap()
            .register(&mv, &Matrix4::identity())
            .unwrap()
    };
    let plain = prepare(&f, Some(&m), &cfg)
        .unwrap()
        .register(&mv, &Matrix4::identity())
        .unwrap();
    let ones = vec![1f32; g.len()];
    assert_eq!(
        run(Some(&ones)).matrix,
        plain.matrix,
        "equal weights, other bits"
    );
    // the inverse variance of the misfit plus unit noise
    let down: Vec<f32> = (0..g.len())
        .map(|l| {
            let [i, j, k] = g.ijk(l);
            let e = wrong(&g.world([i as f64, j as f64, k as f64]));
            (1.0 / (1.0 + e * e)) as f32
        })
        .collect();
    let (e_plain, e_weighted) = (
        mean_error(&plain.matrix, &truth, &m),
        mean_error(&run(Some(&down)).matrix, &truth, &m),
    );
    assert!(
        e_plain > 0.05,
        "the wrong region should bias the plain estimate: {e_plain} mm"
    );
    eprintln!("plain {e_plain} mm, weighted {e_weighted} mm");
    assert!(
        e_weighted < 0.2 * e_plain && e_weighted < 0.03,
        "weighted {e_weighted} mm against plain {e_plain} mm"
    );
}
