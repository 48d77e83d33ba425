//! Stage 5: the shell link.

use super::dataset::{realign_subset, Dataset};
use super::{Progress, Run};
use crate::image::Volume;
use crate::registration::{register, RegistrationConfig};
use crate::Result;
use nalgebra::Matrix4;

/// Tie the diffusion-weighted shells to the b=0 reference frame (FSL eddy's "post-eddy
/// alignment of shells"). Volumes registered to model predictions agree with each other far
/// better than with the b=0 reference, but a whole shell can sit a little off the reference
/// (the per-volume mutual information of the bootstrap is biased by ~0.08 mm on the bench
/// phantom, and the model passes keep a shell's frame). So each shell's realigned mean — sharp
/// and with little noise — is registered once more by mutual information: the lowest shell to
/// the reference, every higher shell to the next lower one. The corrections are composed into
/// the shell's transforms. Between shells the contrasts differ too (CSF and grey/white matter
/// fade at different rates), and MI beat least squares with a global intensity scale on every
/// phantom measured with the true motion (`benches/link.rs`: 0.015 vs 0.031 mm on the shared
/// bench phantom, 0.05–0.11 vs 0.08–0.15 mm on simulated ones).
pub fn link_shells(run: &Run, data: &mut Dataset, reference: &Volume) -> Result<()> {
    if data.shells.is_empty() {
        return Ok(());
    }
    let progress = run.progress;
    // Progress in shells: each takes a resampling of its volumes and one registration.
    let total = data.shells.len();
    progress(&Progress {
        stage: "shell link",
        done: 0,
        total,
    });
    let series = data.working();
    // Each mean is summed in volume order from a few realigned volumes at a time (never a
    // realigned copy of the shell: half the series on a two-shell protocol).
    let batch = 2 * rayon::current_num_threads().max(1);
    let means: Vec<Volume> = data
        .shells
        .iter()
        .map(|sh| {
            let mut acc = vec![0f64; series.grid.len()];
            for ks in sh.indices.chunks(batch) {
                let aligned = realign_subset(series, ks, &data.transforms);
                for k in 0..aligned.n_volumes {
                    acc.iter_mut()
                        .zip(aligned.volume(k).iter())
                        .for_each(|(a, &v)| *a += v as f64);
                }
            }
            let n = sh.indices.len() as f64;
            Volume::new(
                series.grid.clone(),
                acc.iter().map(|&a| (a / n) as f32).collect(),
            )
        })
        .collect();
    let id = Matrix4::identity();
    let mi = RegistrationConfig::mutual_information();
    let mask = Some(data.mask);
    let mut link = register(reference, &means[0], mask, &id, &mi)?.matrix;
    for (s, sh) in data.shells.iter().enumerate() {
        if s > 0 {
            link = register(&means[s - 1], &means[s], mask, &id, &mi)?.matrix * link;
        }
        for &k in &sh.indices {
            data.transforms[k] *= link;
        }
        progress(&Progress {
            stage: "shell link",
            done: s + 1,
            total,
        });
    }
    Ok(())
}
