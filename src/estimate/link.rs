//! Stage 5: the shell link.

use super::dataset::{realign_subset, Dataset};
use super::{shading, Progress, Run};
use crate::image::{Mask, Volume};
use crate::registration::{register, RegistrationConfig};
use crate::Result;
use nalgebra::Matrix4;

/// Tie the diffusion-weighted shells to the b=0 reference frame (FSL eddy's "post-eddy
/// alignment of shells"). Volumes registered to model predictions agree with each other far
/// better than with the b=0 reference, but a whole shell can sit a little off the reference
/// (the per-volume mutual information of the bootstrap is biased by ~0.08 mm on the bench
/// phantom, and the model passes keep a shell's frame). So each shell's realigned mean — sharp
/// and with little noise — is registered once more by mutual information to the reference
/// ([`shell_links`]), after dividing the coil shading out of all of them, and the correction
/// is composed into the shell's transforms.
///
/// Measured with the true motion (`benches/link.rs`, 2026-12-03), error of the b=1000 / b=2000
/// link straight to the b=0 mean (mm), MI of the means as they are → with the shading divided
/// out: simulated seed 11 (a ±12 % shading fixed in the scanner) 0.079 / 0.187 → 0.055 /
/// 0.100 (the old chain b=2000 → b=1000 added 0.092 to the b=1000 error); seed 12 0.079 /
/// 0.230 → 0.050 / 0.087; shared bench 0.018 / 0.060 → 0.010 / 0.024 (chain: +0.015);
/// bench_artefacts 0.022 / 0.036 → 0.015 / 0.028. With the shading divided out, every shell straight to the b=0 reference and
/// b=2000 chained through b=1000 came out about equal (`estimate` seed 11 0.0444 / 0.080 mm
/// against 0.0434 / 0.085; bench 0.0236 / 0.0575 against 0.0227 / 0.0601); the direct link
/// is kept: one cross-contrast step per shell, nothing accumulates over shells (the chain was
/// chosen when the shading made the b=2000 → b=0 link the worst). benches/README.md, "Coil
/// shading and the shell link".
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
    let links = shell_links(reference, &means, data.mask)?;
    for (s, (sh, link)) in data.shells.iter().zip(links).enumerate() {
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

/// The link of each shell: the correction (reference → shell mean) that registers the shell's
/// realigned mean to the b=0 reference by mutual information inside the brain `mask`, after
/// dividing the coil shading out of all of them ([`shading`]: fixed in the scanner, so about
/// the same in every realigned mean; estimated from the reference and the means together).
pub fn shell_links(reference: &Volume, means: &[Volume], mask: &Mask) -> Result<Vec<Matrix4<f64>>> {
    let channels: Vec<&Volume> = std::iter::once(reference).chain(means).collect();
    let flat = shading::estimate(&channels, mask);
    let flatten = |v: &Volume| match &flat {
        Some(sh) => sh.correct_volume(v),
        None => v.clone(),
    };
    let reference = flatten(reference);
    let id = Matrix4::identity();
    let mi = RegistrationConfig::mutual_information();
    means
        .iter()
        .map(|m| Ok(register(&reference, &flatten(m), Some(mask), &id, &mi)?.matrix))
        .collect()
}
