//! Stage 5: the shell link.

use super::dataset::{realign_subset, Dataset};
use super::{shading, Progress, Run};
use crate::image::{Mask, Volume};
use crate::registration::{prepare, RegistrationConfig};
use crate::Result;
use nalgebra::Matrix4;
use rayon::prelude::*;

/// Tie the diffusion-weighted shells to the b=0 reference frame (FSL eddy's "post-eddy
/// alignment of shells"). Volumes registered to model predictions agree with each other far
/// better than with the b=0 reference, but a whole shell can sit a little off the reference
/// (the per-volume mutual information of the bootstrap is biased by ~0.08 mm on the bench
/// phantom, and the model passes keep a shell's frame). So each shell is realigned once more,
/// its mean and its spread over directions summed, and the lowest shell's mean — sharp and
/// with little noise — is registered to the reference, the other shells to the lowest through
/// their spread ([`shell_links`]); the correction is composed into each shell's transforms.
///
/// Measured with the true motion (`benches/link.rs`, 2026-12-03), error of the b=1000 / b=2000
/// link straight to the b=0 mean (mm, dilated mask only: before the two masks below), MI of the means as they are → with the shading divided
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
    // Each shell's mean and spread are summed in volume order from a few realigned volumes at
    // a time (never a realigned copy of the shell: half the series on a two-shell protocol).
    let batch = 2 * rayon::current_num_threads().max(1);
    let images: Vec<ShellImage> = data
        .shells
        .iter()
        .map(|sh| {
            let mut sum = vec![0f64; series.grid.len()];
            let mut squares = vec![0f64; series.grid.len()];
            for ks in sh.indices.chunks(batch) {
                let aligned = realign_subset(series, ks, &data.transforms);
                for k in 0..aligned.n_volumes {
                    for ((a, q), &v) in sum
                        .iter_mut()
                        .zip(squares.iter_mut())
                        .zip(aligned.volume(k).iter())
                    {
                        let v = v as f64;
                        *a += v;
                        *q += v * v;
                    }
                }
            }
            let n = sh.indices.len() as f64;
            let mean: Vec<f64> = sum.iter().map(|&a| a / n).collect();
            let spread = squares
                .iter()
                .zip(&mean)
                .map(|(&q, &m)| (q / n - m * m).max(0.0).sqrt() as f32)
                .collect();
            ShellImage {
                mean: Volume::new(
                    series.grid.clone(),
                    mean.iter().map(|&m| m as f32).collect(),
                ),
                spread: Volume::new(series.grid.clone(), spread),
                volumes: sh.indices.len(),
            }
        })
        .collect();
    let links = shell_links(reference, &images, data.mask)?;
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

/// One diffusion-weighted shell realigned into the reference frame: what the link reads.
pub struct ShellImage {
    /// The mean of the shell's realigned volumes.
    pub mean: Volume,
    /// Their standard deviation per voxel: the signal's spread over gradient directions
    /// (anisotropy, sharp along white-matter tracts) plus the noise.
    pub spread: Volume,
    /// How many volumes the shell has.
    pub volumes: usize,
}

/// Fewest volumes for a shell's spread over directions to be a map worth registering (a few
/// directions already show the tracts; one shows nothing). Shells with fewer are linked
/// straight to the b=0 reference.
pub const MIN_SPREAD_VOLUMES: usize = 6;

/// The link of each shell (ascending b, as [`crate::io::gradients::shells`] lists them): the
/// correction (reference → shell frame) composed into its volumes' transforms.
///
/// The lowest shell with at least [`MIN_SPREAD_VOLUMES`] volumes is the anchor: its mean is
/// registered to the b=0 reference across contrasts ([`links_to_b0`]). Every other such shell
/// is registered to the anchor through the maps of their spread over directions, a contrast
/// the shells share (the tracts' anisotropy, the same anatomy at every b), by mutual
/// information; its link is that registration composed after the anchor's. Shells with fewer
/// volumes are linked straight to the reference.
///
/// Why: the scorer, and any user comparing volumes, sees the shells' offsets from *each other*
/// far more than from the few b=0 volumes, and two cross-contrast links carry two biases in
/// the same direction but of different size (b=2000 about twice b=1000 on our simulator).
/// Measured with the true motion (`benches/link.rs`, LINK_ANISO, 2026-12-03 seventh session),
/// error of the b=2000 shell relative to the b=1000 shell (mm): both linked to b=0 (the
/// two-mask links) → through the spread maps: own d11 0.042 → 0.013, d12 0.029 → 0.014, d13
/// 0.064 → 0.025, UKB-size 0.028 → 0.006, d11 at SNR 1000 0.027 → 0.009; shared bench 0.014 →
/// 0.003, bench_artefacts 0.023 → 0.013. Least squares on the spread maps instead (a fitted
/// scale and offset) was worse on bench_artefacts (0.051: eddy-current residue scales with b)
/// and d13 (0.053); the means of the two shells by mutual information 0.015–0.100.
pub fn shell_links(
    reference: &Volume,
    shells: &[ShellImage],
    mask: &Mask,
) -> Result<Vec<Matrix4<f64>>> {
    let anchor = shells.iter().position(|s| s.volumes >= MIN_SPREAD_VOLUMES);
    let direct: Vec<usize> = (0..shells.len())
        .filter(|&s| Some(s) == anchor || shells[s].volumes < MIN_SPREAD_VOLUMES)
        .collect();
    let means: Vec<&Volume> = shells.iter().map(|s| &s.mean).collect();
    let to_b0 = links_of(reference, &means, &direct, mask)?;
    let mut links = vec![Matrix4::identity(); shells.len()];
    for (&s, l) in direct.iter().zip(to_b0) {
        links[s] = l;
    }
    let Some(a) = anchor else {
        return Ok(links);
    };
    // Every shell starts within a fraction of a voxel of the anchor: the finest level alone.
    let cfg = RegistrationConfig::mutual_information().refinement();
    let fixed = prepare(&shells[a].spread, Some(mask), &cfg)?;
    let id = Matrix4::identity();
    let others: Vec<usize> = (0..shells.len()).filter(|s| !direct.contains(s)).collect();
    let relative: Vec<Matrix4<f64>> = others
        .par_iter()
        .map(|&s| Ok(fixed.register(&shells[s].spread, &id)?.matrix))
        .collect::<Result<_>>()?;
    for (&s, r) in others.iter().zip(relative) {
        links[s] = r * links[a];
    }
    Ok(links)
}

/// The link of each mean straight to the b=0 reference: the correction (reference → shell
/// mean) that registers the shell's realigned mean to the b=0 reference by mutual information,
/// after dividing the coil shading out of all of them ([`shading`]: fixed in the scanner, so about the same in every realigned
/// mean; estimated from the reference and the means together). Each shell is registered twice,
/// inside the brain `mask` dilated as [`RegistrationConfig::mutual_information`] does and
/// inside the brain mask alone, and the link is the rigid transform halfway between the two
/// ([`mean_rigid`]).
///
/// Why two masks: mutual information between contrasts keeps a bias even with the shading
/// gone, and where the mask's edge lies decides its direction. Measured with the true motion
/// (`benches/link.rs`, LINK_ERODE, 2026-12-03, shift of the brain centroid along z of the
/// b=1000 / b=2000 link, mm): simulated seeds 11, 12, 13 with the dilated mask −0.051 / −0.085,
/// −0.041 / −0.061, −0.042 / −0.077; with the brain mask +0.076 / +0.071, +0.034 / +0.032,
/// +0.025 / −0.004 (eroded masks +0.02 to +0.12: the bias is not the outer edge alone); the
/// shared phantoms' links are small either way. Whole runs, median / worst (mm; `estimate -j 2
/// --mask --no-resample`): own seeds 11–13 with dropouts and drift, DTI, 0.0416 / 0.0799 →
/// 0.0381 / 0.0760, 0.0378 / 0.0926 → 0.0373 / 0.0775, 0.0494 / 0.1097 → 0.0501 / 0.1085;
/// own `--ec 1` seed 21 with `--transform eddy` 0.0653 / 0.0938 → 0.0553 / 0.0832; shared bench
/// DTI 0.0231 / 0.0598 → 0.0210 / 0.0640. benches/README.md, "The shell link: two masks".
///
/// Only the finest level (σ = 0, full resolution) of [`RegistrationConfig::mutual_information`]:
/// `estimate -j 2 --no-resample`, median / worst (mm), three levels → finest only (2026-12-03,
/// fifth session): shared bench DTI 0.0215 / 0.0476 and DKI 0.0195 / 0.0469 both ways; own
/// d11–d13 (DKI) 0.0289 / 0.0711 → 0.0289 / 0.0709, 0.0313 / 0.0865 and 0.0356 / 0.0724
/// unchanged; UKB-size DKI 0.0297 / 0.0735 → 0.0297 / 0.0734. Link CPU on the bench DTI run
/// 4.2 → 3.0 s.
pub fn links_to_b0(reference: &Volume, means: &[Volume], mask: &Mask) -> Result<Vec<Matrix4<f64>>> {
    let means: Vec<&Volume> = means.iter().collect();
    let all: Vec<usize> = (0..means.len()).collect();
    links_of(reference, &means, &all, mask)
}

/// [`links_to_b0`] of the means listed in `which` only, the shading still estimated from the
/// reference and every mean (the same field, and the same links, as linking them all).
fn links_of(
    reference: &Volume,
    means: &[&Volume],
    which: &[usize],
    mask: &Mask,
) -> Result<Vec<Matrix4<f64>>> {
    let channels: Vec<&Volume> = std::iter::once(reference)
        .chain(means.iter().copied())
        .collect();
    let flat = shading::estimate(&channels, mask);
    let flatten = |v: &Volume| match &flat {
        Some(sh) => sh.correct_volume(v),
        None => v.clone(),
    };
    let reference = flatten(reference);
    let id = Matrix4::identity();
    // Every shell starts within a fraction of a voxel of the reference (the bootstrap put each
    // volume there): the finest level alone, as the model passes do. The coarse levels only
    // widen the capture range; dropping them left every phantom's result within 0.0002 mm
    // (see the doc comment) and took 1.2 of the link's 4.2 CPU s on the bench.
    let dilated = RegistrationConfig::mutual_information().refinement();
    let brain = RegistrationConfig {
        mask_dilation: 0,
        ..dilated.clone()
    };
    // The reference's side of each mask's registration is prepared once for every shell (the
    // same bits as `register`). The registrations are independent and each is bit-identical
    // for any thread count: they run side by side, so the cores stay busy through the coarse
    // levels' short sums.
    let (dilated, brain) = rayon::join(
        || prepare(&reference, Some(mask), &dilated),
        || prepare(&reference, Some(mask), &brain),
    );
    let (dilated, brain) = (dilated?, brain?);
    which
        .par_iter()
        .map(|&s| {
            let m = flatten(means[s]);
            let (a, b) = rayon::join(|| dilated.register(&m, &id), || brain.register(&m, &id));
            Ok(mean_rigid(&a?.matrix, &b?.matrix))
        })
        .collect()
}

/// The rigid transform halfway between two nearby rigid transforms: the mean of the two
/// matrices, its linear part projected back onto the nearest rotation (SVD, U Vᵀ).
pub fn mean_rigid(a: &Matrix4<f64>, b: &Matrix4<f64>) -> Matrix4<f64> {
    let m = (a + b) / 2.0;
    let svd = m.fixed_view::<3, 3>(0, 0).into_owned().svd(true, true);
    let (u, vt) = (svd.u.expect("u requested"), svd.v_t.expect("v_t requested"));
    let mut out = m;
    out.fixed_view_mut::<3, 3>(0, 0).copy_from(&(u * vt));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::{Rotation3, Vector3};

    fn rigid(axis: Vector3<f64>, deg: f64, t: Vector3<f64>) -> Matrix4<f64> {
        let mut m =
            Rotation3::from_axis_angle(&nalgebra::Unit::new_normalize(axis), deg.to_radians())
                .to_homogeneous();
        m.fixed_view_mut::<3, 1>(0, 3).copy_from(&t);
        m
    }

    #[test]
    fn mean_rigid_is_halfway_and_rigid() {
        // about one axis the halfway rotation is the half angle, whatever the translations
        let z = Vector3::z();
        let a = rigid(z, 0.2, Vector3::new(0.1, -0.05, 0.02));
        let b = rigid(z, -0.1, Vector3::new(-0.03, 0.07, 0.06));
        let m = mean_rigid(&a, &b);
        let want = rigid(z, 0.05, Vector3::new(0.035, 0.01, 0.04));
        assert!((m - want).abs().max() < 1e-12, "{m} vs {want}");
        // two different axes: still a rotation (orthonormal, det 1), symmetric in its inputs
        let c = rigid(
            Vector3::new(1.0, 2.0, 0.5),
            0.3,
            Vector3::new(0.2, 0.0, -0.1),
        );
        let m = mean_rigid(&a, &c);
        let r = m.fixed_view::<3, 3>(0, 0).into_owned();
        assert!(
            (r.transpose() * r - nalgebra::Matrix3::identity())
                .abs()
                .max()
                < 1e-12
        );
        assert!((r.determinant() - 1.0).abs() < 1e-12);
        assert!((m - mean_rigid(&c, &a)).abs().max() < 1e-15);
        // halfway between a rotation and its inverse: no rotation (exactly), and the
        // translations cancel to first order: (t - Rᵀt) / 2 is about |θ| |t| / 2 = 0.0006 mm
        let mid = mean_rigid(&c, &c.try_inverse().unwrap());
        let r = mid.fixed_view::<3, 3>(0, 0).into_owned();
        assert!(
            (r - nalgebra::Matrix3::identity()).abs().max() < 1e-12,
            "{mid}"
        );
        let t = mid.fixed_view::<3, 1>(0, 3).norm();
        assert!(t < 1e-3 && t > 1e-4, "{t}");
    }
}
