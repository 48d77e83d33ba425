//! Stages 1–2: the b=0 reference (and the b=0 volumes' transforms), and the signal drift.

use super::dataset::{median_volume, realign_subset, Dataset};
use super::{par_volumes, Run};
use crate::drift::Drift;
use crate::image::Volume;
use crate::registration::eddy::EddyModel;
use crate::registration::{prepare, RegistrationConfig, TransformKind};
use crate::Result;

/// Register each b=0 volume to the b=0 median twice (the second time to the median of the
/// realigned b=0s). Sets the b=0 transforms and returns the refined median: the reference
/// frame. Without b=0 volumes the reference is the median of the diffusion-weighted volumes.
/// b=0 volumes carry no eddy currents: with the eddy-current model they align rigidly.
pub fn align_b0s(run: &Run, data: &mut Dataset, eddy: Option<&EddyModel>) -> Result<Volume> {
    let series = data.original();
    if data.b0.is_empty() {
        return Ok(median_volume(series, &data.dw));
    }
    let reg = match eddy {
        Some(_) => RegistrationConfig {
            kind: TransformKind::Rigid,
            ..run.cfg.registration.clone()
        },
        None => run.cfg.registration.clone(),
    };
    let b0 = data.b0.clone();
    let mut reference = median_volume(series, &b0);
    if b0.len() < 2 {
        return Ok(reference);
    }
    // Progress counts the b=0 volumes of each round (a stage per round), not volumes × rounds.
    for round in 1..=2 {
        let stage = format!("b0 alignment {round}/2");
        // every b=0 volume of the round has the same target: its samples are prepared once
        let target = prepare(&reference, Some(data.mask), &reg)?;
        let transforms = &data.transforms;
        let results = par_volumes(&b0, Some((&stage, run.progress)), |_, k| {
            target
                .register(&series.to_volume(k), &transforms[k])
                .map(|r| r.matrix)
        });
        for (&k, r) in b0.iter().zip(results) {
            data.transforms[k] = r?;
        }
        let realigned = realign_subset(series, &b0, &data.transforms);
        let idx: Vec<usize> = (0..b0.len()).collect();
        reference = median_volume(&realigned, &idx);
    }
    Ok(reference)
}

/// Mean brain signal of each b=0 volume (realigned) against its 4-D index, fitted; None with
/// fewer than two b=0 volumes.
pub fn drift_stage(data: &Dataset) -> Option<Drift> {
    let (series, b0) = (data.original(), &data.b0);
    if b0.len() < 2 {
        return None;
    }
    let aligned = realign_subset(series, b0, &data.transforms);
    let voxels = data.mask.indices();
    let means: Vec<(usize, f64)> = b0
        .iter()
        .enumerate()
        .map(|(i, &k)| {
            let v = aligned.volume(i);
            let sum: f64 = voxels.iter().map(|&x| v[x] as f64).sum();
            (k, sum / voxels.len().max(1) as f64)
        })
        .collect();
    crate::drift::fit(&means, series.n_volumes)
}
