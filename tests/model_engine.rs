//! Engine properties: determinism across threads and chunk sizes, fast path vs the plain
//! per-voxel path, exact recovery of noise-free DTI/DKI signals, input errors, S0 rules.

use nalgebra::{Matrix3, Matrix4, Rotation3, Vector3};
use nifreeze::image::{Grid, Mask, Series};
use nifreeze::io::gradients::GradientArgs;
use nifreeze::io::gradients::{self, GradientTable};
use nifreeze::io::nifti;
use nifreeze::model::{F64Series, FitMethod, Model, ModelKind};
use nifreeze::Error;
use std::path::{Path, PathBuf};

fn root(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn load(dir: &str, mask: &str) -> (Series, GradientTable, Mask) {
    let dwi = root(dir).join("dwi.nii.gz");
    let (series, _) = nifti::read_series(&dwi).unwrap();
    let args = GradientArgs {
        b0_threshold: 50.0,
        ..Default::default()
    };
    let g = gradients::load(&dwi, &args, &series.grid, series.n_volumes).unwrap();
    let mask = nifti::read_mask(&root(dir).join(mask), &series.grid).unwrap();
    (series, g.table, mask)
}

fn with_threads<T: Send>(n: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
        .install(f)
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn identical_for_any_threads_and_chunks() {
    let (series, table, mask) = load("data/sample", "brainmask.nii.gz");
    for kind in [ModelKind::Dti, ModelKind::Dki] {
        for method in [FitMethod::Wls, FitMethod::Ols] {
            let e = Model::new(kind)
                .fit_method(method)
                .leave_one_out(&series, &table, &mask)
                .unwrap();
            let k = e.dw_indices()[4];
            let reference = with_threads(1, || bits(&e.predict_values(k).unwrap()));
            assert!(reference.iter().any(|&b| f64::from_bits(b) > 0.0));
            for threads in [1, 2, 4] {
                for chunk in [1, 3, 64, 1000, 1 << 20] {
                    let e2 = Model::new(kind)
                        .fit_method(method)
                        .chunk_size(chunk)
                        .leave_one_out(&series, &table, &mask)
                        .unwrap();
                    let got = with_threads(threads, || bits(&e2.predict_values(k).unwrap()));
                    assert!(
                        got == reference,
                        "{kind:?} {method:?}: -j {threads} chunk {chunk} differs"
                    );
                }
            }
            // and the f32 volume is the same too
            let v1 = with_threads(1, || e.predict(k).unwrap());
            let e7 = Model::new(kind)
                .fit_method(method)
                .chunk_size(7)
                .leave_one_out(&series, &table, &mask)
                .unwrap();
            let v4 = with_threads(4, || e7.predict(k).unwrap());
            assert!(v1
                .data
                .iter()
                .zip(&v4.data)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }
}

#[test]
fn fast_path_matches_plain_path() {
    let (series, table, mask) = load("data/sample", "brainmask.nii.gz");
    for kind in [ModelKind::Dti, ModelKind::Dki] {
        for method in [FitMethod::Wls, FitMethod::Ols] {
            let e = Model::new(kind)
                .fit_method(method)
                .leave_one_out(&series, &table, &mask)
                .unwrap();
            let k = e.dw_indices()[e.dw_indices().len() - 2];
            let fast = e.predict_values(k).unwrap();
            let plain = e.predict_values_plain(k).unwrap();
            let mut worst = 0.0f64;
            for (a, b) in fast.iter().zip(&plain) {
                assert!(a.is_finite() && b.is_finite());
                worst = worst.max((a - b).abs() / b.abs());
            }
            eprintln!("{kind:?} {method:?}: fast vs plain max relative difference {worst:e}");
            assert!(worst <= 1e-9, "{kind:?} {method:?}: {worst:e}");
        }
    }
}

/// Fibonacci-sphere directions, rotated so that shells do not share directions.
fn directions(n: usize, twist: f64) -> Vec<[f64; 3]> {
    let r = Rotation3::from_euler_angles(twist, 0.5 * twist, -0.3 * twist);
    (0..n)
        .map(|i| {
            let z = 1.0 - (2.0 * i as f64 + 1.0) / n as f64;
            let phi = i as f64 * std::f64::consts::PI * (3.0 - 5f64.sqrt());
            let s = (1.0 - z * z).sqrt();
            let v = r * Vector3::new(s * phi.cos(), s * phi.sin(), z);
            [v.x, v.y, v.z]
        })
        .collect()
}

struct Synthetic {
    grid: Grid,
    table: GradientTable,
    data: Vec<f64>,
    truth: Vec<f64>, // volume-major noise-free signals (same as data)
}

/// Noise-free signals: ln S = ln S0 − b nᵀDn + b² MD² /6 · Σ n_i n_j n_k n_l W_ijkl
/// (`kurtosis` false: the DTI model alone). Computed with full tensor sums, independently of
/// the engine's design matrices.
fn synthetic(kurtosis: bool) -> Synthetic {
    let mut table = GradientTable {
        bvecs: vec![[0.0; 3], [0.0; 3]],
        bvals: vec![0.0, 0.0],
    };
    for (b, n, tw) in [(1000.0, 30, 0.3), (2000.0, 30, 1.1), (3000.0, 12, 2.0)] {
        for d in directions(n, tw) {
            table.bvals.push(b);
            table.bvecs.push(d);
        }
    }
    let nvol = table.len();
    let nv = 60;
    let grid = Grid::new([nv, 1, 1], Matrix4::identity());
    let mut data = vec![0.0; nv * nvol];
    let mut seed = 11u64;
    let mut rnd = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    for v in 0..nv {
        let s0 = 200.0 + 3000.0 * rnd();
        let evals = [
            (0.3 + 2.2 * rnd()) * 1e-3,
            (0.3 + 1.0 * rnd()) * 1e-3,
            (0.2 + 0.8 * rnd()) * 1e-3,
        ];
        let r = Rotation3::from_euler_angles(6.0 * rnd(), 6.0 * rnd(), 6.0 * rnd()).into_inner();
        let d: Matrix3<f64> =
            r * Matrix3::from_diagonal(&Vector3::new(evals[0], evals[1], evals[2])) * r.transpose();
        let md = d.trace() / 3.0;
        // kurtosis tensor: isotropic part plus a random fully symmetric perturbation
        let kiso = 0.3 + 0.8 * rnd();
        let mut pert = [[[[0.0f64; 3]; 3]; 3]; 3];
        let unique: Vec<f64> = (0..15).map(|_| 0.15 * (rnd() - 0.5)).collect();
        let mut u = 0;
        let mut seen = std::collections::HashMap::new();
        #[allow(clippy::needless_range_loop)] // the four indices of a tensor entry, symmetric
        for i in 0..3 {
            for j in 0..3 {
                for k in 0..3 {
                    for l in 0..3 {
                        let mut key = [i, j, k, l];
                        key.sort();
                        let val = *seen.entry(key).or_insert_with(|| {
                            u += 1;
                            unique[u - 1]
                        });
                        let delta = |a: usize, b: usize| if a == b { 1.0 } else { 0.0 };
                        let iso = kiso / 3.0
                            * (delta(i, j) * delta(k, l)
                                + delta(i, k) * delta(j, l)
                                + delta(i, l) * delta(j, k));
                        pert[i][j][k][l] = iso + val;
                    }
                }
            }
        }
        for vol in 0..nvol {
            let b = table.bvals[vol];
            let n = table.bvecs[vol];
            let mut adc = 0.0;
            let mut w = 0.0;
            for i in 0..3 {
                for j in 0..3 {
                    adc += n[i] * n[j] * d[(i, j)];
                    for k in 0..3 {
                        for l in 0..3 {
                            w += n[i] * n[j] * n[k] * n[l] * pert[i][j][k][l];
                        }
                    }
                }
            }
            let k_term = if kurtosis {
                b * b * md * md / 6.0 * w
            } else {
                0.0
            };
            data[vol * nv + v] = s0 * (-b * adc + k_term).exp();
        }
    }
    Synthetic {
        grid,
        table,
        truth: data.clone(),
        data,
    }
}

fn check_synthetic(kind: ModelKind) {
    let s = synthetic(kind == ModelKind::Dki);
    let mask = Mask {
        grid: s.grid.clone(),
        data: vec![true; s.grid.len()],
    };
    let nv = s.grid.len();
    for method in [FitMethod::Wls, FitMethod::Ols] {
        let data = F64Series::new(&s.grid, s.table.len(), &s.data).unwrap();
        let e = Model::new(kind)
            .fit_method(method)
            .leave_one_out(&data, &s.table, &mask)
            .unwrap();
        assert_eq!(e.n_voxels(), nv);
        let mut worst = 0.0f64;
        for &k in e.dw_indices() {
            let p = e.predict_values(k).unwrap();
            for (pv, &t) in p.iter().zip(&s.truth[k * nv..(k + 1) * nv]) {
                worst = worst.max((pv - t).abs() / t);
            }
        }
        eprintln!("{kind:?} {method:?}: noise-free max relative error {worst:e}");
        assert!(worst <= 1e-9, "{kind:?} {method:?}: {worst:e}");
    }
}

#[test]
fn noise_free_dti_is_recovered() {
    check_synthetic(ModelKind::Dti);
}

#[test]
fn noise_free_dki_is_recovered() {
    check_synthetic(ModelKind::Dki);
}

fn select(series: &Series, table: &GradientTable, keep: &[usize]) -> (Series, GradientTable) {
    let vols: Vec<Vec<f32>> = keep.iter().map(|&k| series.volume(k).to_vec()).collect();
    (
        Series::from_volumes(series.grid.clone(), &vols),
        GradientTable {
            bvecs: keep.iter().map(|&k| table.bvecs[k]).collect(),
            bvals: keep.iter().map(|&k| table.bvals[k]).collect(),
        },
    )
}

#[test]
fn dki_on_single_shell_is_an_input_error() {
    let (series, table, mask) = load("tests/data/lovo44", "brainmask.nii.gz");
    let keep: Vec<usize> = (0..table.len())
        .filter(|&k| table.bvals[k] < 1500.0)
        .collect();
    let (s1, t1) = select(&series, &table, &keep);
    match Model::new(ModelKind::Dki)
        .fit_method(FitMethod::Wls)
        .leave_one_out(&s1, &t1, &mask)
    {
        Err(Error::Input(m)) => assert!(m.contains("two non-zero"), "{m}"),
        Err(e) => panic!("wrong error kind: {e}"),
        Ok(_) => panic!("DKI on single-shell data must fail"),
    }
    // DTI on the same data is fine
    let e = Model::new(ModelKind::Dti)
        .fit_method(FitMethod::Wls)
        .leave_one_out(&s1, &t1, &mask)
        .unwrap();
    let v = e.predict(e.dw_indices()[0]).unwrap();
    assert!(v.data.iter().any(|&x| x > 0.0));
}

#[test]
fn only_diffusion_weighted_volumes_can_be_predicted() {
    let (series, table, mask) = load("tests/data/lovo44", "brainmask.nii.gz");
    let e = Model::new(ModelKind::Dti)
        .fit_method(FitMethod::Ols)
        .leave_one_out(&series, &table, &mask)
        .unwrap();
    for bad in [0usize, 21, 42, 43, 1000] {
        match e.predict(bad) {
            Err(Error::Input(m)) => assert!(m.contains(&format!("volume {bad}")), "{m}"),
            other => panic!(
                "volume {bad}: expected an input error, got {:?}",
                other.map(|_| ())
            ),
        }
    }
    assert!(e.predict(1).is_ok());
}

#[test]
fn s0_rules() {
    let (series, table, mask) = load("tests/data/lovo44", "brainmask.nii.gz");
    // median b0 (volumes 0, 21, 42) over the whole grid
    let e = Model::new(ModelKind::Dti)
        .fit_method(FitMethod::Wls)
        .leave_one_out(&series, &table, &mask)
        .unwrap();
    let s0 = e.s0();
    for l in [0usize, 17, 250, 479] {
        let mut v = [
            series.volume(0)[l],
            series.volume(21)[l],
            series.volume(42)[l],
        ];
        v.sort_by(|a, b| a.total_cmp(b));
        assert_eq!(s0.data[l], v[1]);
    }
    // without b=0 volumes: round(98th percentile of the masked DW data) = 1322 (numpy)
    let dw: Vec<usize> = table.dw_indices(50.0);
    let (s1, t1) = select(&series, &table, &dw);
    let e = Model::new(ModelKind::Dti)
        .fit_method(FitMethod::Wls)
        .leave_one_out(&s1, &t1, &mask)
        .unwrap();
    assert_eq!(e.n_voxels(), mask.count());
    let l = mask.indices()[0];
    assert_eq!(e.s0().data[l], 1322.0);
    let e = Model::new(ModelKind::Dti)
        .fit_method(FitMethod::Wls)
        .ignore_b0(true)
        .leave_one_out(&series, &table, &mask)
        .unwrap();
    assert_eq!(e.s0().data[l], 1322.0);
    // DKI without b=0 still works (the percentile S0 is its b=0 sample)
    let e = Model::new(ModelKind::Dki)
        .fit_method(FitMethod::Wls)
        .leave_one_out(&s1, &t1, &mask)
        .unwrap();
    let p = e.predict_values(e.dw_indices()[0]).unwrap();
    assert!(p.iter().all(|x| x.is_finite() && *x > 0.0));
}

#[test]
fn voxels_with_tiny_s0_are_left_out() {
    let (mut series, table, mask) = load("tests/data/lovo44", "brainmask.nii.gz");
    let l = mask.indices()[5];
    for k in [0usize, 21, 42] {
        series.volume_mut(k)[l] = 0.0;
    }
    let e = Model::new(ModelKind::Dki)
        .fit_method(FitMethod::Wls)
        .leave_one_out(&series, &table, &mask)
        .unwrap();
    assert_eq!(e.n_voxels(), mask.count() - 1);
    let v = e.predict(3).unwrap();
    assert_eq!(v.data[l], 0.0);
    assert!(v.data[mask.indices()[6]] > 0.0);
}
