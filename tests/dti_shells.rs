//! Why the estimate loop fits DTI per shell ([`nifreeze::estimate::fit_groups`]): a tensor
//! fitted across shells mispredicts the lower shell, and a registration reads that as motion.
//! Checked against the simulator's noise-free, unmoved signal (an independent reference: the
//! simulator's multi-compartment tissue model, not a tensor).

use nalgebra::Matrix4;
use nifreeze::estimate::{fit_groups, realign_at};
use nifreeze::image::{Series, Volume};
use nifreeze::io::gradients::{shells, GradientTable};
use nifreeze::mask::dilate;
use nifreeze::model::{FitMethod, Model, ModelKind};
use nifreeze::registration::{register, RegistrationConfig};
use nifreeze::simulate::{simulate, SimParams};

#[test]
fn per_shell_dti_predicts_the_lower_shell_without_the_joint_fits_bias() {
    let sim = simulate(&SimParams {
        seed: 5,
        shells: vec![(1000.0, 20), (2000.0, 20)],
        n_b0: 3,
        voxel_size: 4.0,
        snr: 0.0,
        max_rot: 0.0,
        max_trans: 0.0,
        clean: true,
        ..SimParams::default()
    })
    .unwrap();
    let n = sim.n_volumes;
    let series = Series::new(sim.grid.clone(), n, sim.clean.clone().unwrap());
    let table: &GradientTable = &sim.gradients;
    let b0 = table.b0_indices(50.0);
    let shell_list = shells(table, 50.0);
    let fit_mask = dilate(&sim.mask, 2);
    let data = realign_at(&series, &vec![Matrix4::identity(); n], &fit_mask.indices());
    let engine = |fit: &[usize]| {
        let g = GradientTable {
            bvals: fit.iter().map(|&k| table.bvals[k]).collect(),
            bvecs: fit.iter().map(|&k| table.bvecs[k]).collect(),
        };
        Model::new(ModelKind::Dti)
            .fit_method(FitMethod::Wls)
            .b0_threshold(50.0)
            .s0_sample(true)
            .leave_one_out(&data.select(fit), &g, &fit_mask)
            .unwrap()
    };
    let groups = fit_groups(ModelKind::Dti, &shell_list, &b0);
    let low = &shell_list[0];
    let own = groups
        .iter()
        .find(|g| g.predict.contains(&low.indices[0]))
        .unwrap();
    assert_eq!(
        own.fit.len(),
        b0.len() + low.indices.len(),
        "b=1000 is fitted alone"
    );
    let all: Vec<usize> = (0..n).collect();
    let (joint, alone) = (engine(&all), engine(&own.fit));
    let brain = sim.mask.indices();
    let rigid = RegistrationConfig::rigid();
    let affine = RegistrationConfig::affine();
    let (mut err_joint, mut err_alone) = (0.0, 0.0);
    for &h in low.indices.iter().take(4) {
        let truth = series.to_volume(h);
        let col = own.fit.iter().position(|&k| k == h).unwrap();
        let (pj, pa): (Volume, Volume) = (joint.predict(h).unwrap(), alone.predict(col).unwrap());
        // relative error of the prediction inside the brain
        let rel = |p: &Volume| {
            let (mut num, mut den) = (0.0, 0.0);
            for &l in &brain {
                num += (p.data[l] as f64 - truth.data[l] as f64).abs();
                den += truth.data[l] as f64;
            }
            num / den
        };
        let (rj, ra) = (rel(&pj), rel(&pa));
        assert!(
            ra < 0.7 * rj,
            "volume {h}: per-shell error {ra:.4} vs joint {rj:.4}"
        );
        // the joint prediction reads as a shrink of the anatomy, the per-shell one does not
        let scale = |p: &Volume| {
            let m = register(p, &truth, Some(&sim.mask), &Matrix4::identity(), &affine)
                .unwrap()
                .matrix;
            m.fixed_view::<3, 3>(0, 0).determinant().cbrt()
        };
        let (sj, sa) = (scale(&pj), scale(&pa));
        assert!(
            (sa - 1.0).abs() < 0.5 * (sj - 1.0).abs(),
            "volume {h}: scale {sa:.4} alone vs {sj:.4} joint"
        );
        let shift = |p: &Volume| {
            let m = register(p, &truth, Some(&sim.mask), &Matrix4::identity(), &rigid)
                .unwrap()
                .matrix;
            (m.fixed_view::<3, 1>(0, 3)).norm()
        };
        err_joint += shift(&pj);
        err_alone += shift(&pa);
    }
    assert!(
        err_alone <= err_joint,
        "rigid offsets: alone {err_alone:.4} vs joint {err_joint:.4}"
    );
}

#[test]
fn dki_and_single_shells_fit_everything_together_and_dti_splits_below_the_top_shell() {
    use nifreeze::io::gradients::Shell;
    let shell = |b: f64, idx: std::ops::Range<usize>| Shell {
        bvalue: b,
        indices: idx.collect(),
    };
    let b0 = vec![0, 1];
    let two = vec![shell(1000.0, 2..34), shell(2000.0, 34..66)];
    let g = fit_groups(ModelKind::Dki, &two, &b0);
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].fit, (0..66).collect::<Vec<_>>());
    assert_eq!(g[0].predict, (2..66).collect::<Vec<_>>());
    let g = fit_groups(ModelKind::Dti, &two, &b0);
    assert_eq!(g.len(), 2);
    assert_eq!(g[0].fit, [vec![0, 1], (2..34).collect()].concat());
    assert_eq!(g[0].predict, (2..34).collect::<Vec<_>>());
    assert_eq!(g[1].fit, (0..66).collect::<Vec<_>>());
    assert_eq!(g[1].predict, (34..66).collect::<Vec<_>>());
    let one = vec![shell(1000.0, 2..34)];
    let g = fit_groups(ModelKind::Dti, &one, &b0);
    assert_eq!((g.len(), g[0].fit.len()), (1, 34));
    // a shell too small to fit alone is predicted from the joint fit
    let small = vec![
        shell(300.0, 2..8),
        shell(1000.0, 8..40),
        shell(2000.0, 40..72),
    ];
    let g = fit_groups(ModelKind::Dti, &small, &b0);
    assert_eq!(g.len(), 2);
    assert_eq!(g[0].predict, (8..40).collect::<Vec<_>>());
    assert_eq!(
        g[1].predict,
        [(2..8).collect::<Vec<usize>>(), (40..72).collect()].concat()
    );
}
