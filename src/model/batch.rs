//! Leave-one-out predictions of many volumes, the fitted voxels taken a batch at a time.
//!
//! Why: [`LovoEngine`] stores the log-signals of every fitted voxel in f64 (twice the float32
//! snapshot it is built from) for as long as it predicts; with every held-out volume's
//! prediction held as well, that was the run's memory peak (UK Biobank size: series 350 MiB +
//! snapshot 115 + log-signals 225 + predictions 110). Each voxel's fits depend on that voxel's
//! samples only (S0 is its own b=0 median), so engines built on disjoint voxel batches give the
//! same numbers, bit for bit, as one engine on all of them; only one batch's log-signals exist
//! at a time. The exception is S0 from the percentile of all masked data (`ignore_b0`, or no
//! b=0 volume): one batch then.

use super::{LovoEngine, Model};
use crate::image::{Mask, MaskedSeries};
use crate::io::gradients::GradientTable;
use crate::Result;
use rayon::prelude::*;

/// The fitted voxels are split into this many batches (fewer when small, see
/// [`MIN_BATCH_VOXELS`]): one batch's log-signals are a quarter of the float32 snapshot. Each
/// batch repeats the per-fold set-up (a pseudo-inverse per held-out volume): on the bench
/// design 64 pseudo-inverses of 65×22, a few milliseconds each.
const BATCHES: usize = 8;
/// Batches are not made smaller than this (the per-fold set-up would dominate).
const MIN_BATCH_VOXELS: usize = 16_384;

/// The prediction of each of `volumes` (diffusion-weighted 4-D indices) fitted on all other
/// diffusion-weighted volumes of `data`, at `data`'s voxels (0 where a voxel is not fitted):
/// the numbers of `model.leave_one_out(data, …).predict(h)` read at `data.voxels()`, as
/// float32. `mask` must hold exactly `data`'s voxels.
pub fn predict_masked(
    model: &Model,
    data: &MaskedSeries,
    gradients: &GradientTable,
    mask: &Mask,
    volumes: &[usize],
) -> Result<Vec<Vec<f32>>> {
    let voxels = data.voxels();
    let nv = voxels.len();
    let (b0_threshold, options) = model.settings();
    let global_s0 = options.ignore_b0 || gradients.b0_indices(b0_threshold).is_empty();
    let batch = if global_s0 {
        nv.max(1)
    } else {
        nv.div_ceil(BATCHES).max(MIN_BATCH_VOXELS)
    };
    let mut out: Vec<Vec<f32>> = volumes.iter().map(|_| vec![0f32; nv]).collect();
    if nv == 0 || batch >= nv {
        // one batch: the engine on the data as given
        let e = model.leave_one_out(data, gradients, mask)?;
        fill(&e, voxels, 0, volumes, &mut out)?;
        return Ok(out);
    }
    let grid = &data.grid;
    for start in (0..nv).step_by(batch) {
        let end = (start + batch).min(nv);
        let part = &voxels[start..end];
        let vols: Vec<Vec<f32>> = (0..data.n_volumes)
            .map(|k| data.volume(k)[start..end].to_vec())
            .collect();
        let sub = MaskedSeries::from_volumes(grid.clone(), part.to_vec(), &vols);
        drop(vols);
        let mut sub_mask = vec![false; grid.len()];
        for &l in part {
            sub_mask[l] = true;
        }
        let sub_mask = Mask {
            grid: grid.clone(),
            data: sub_mask,
        };
        let e = model.leave_one_out(&sub, gradients, &sub_mask)?;
        drop(sub);
        fill(&e, part, start, volumes, &mut out)?;
    }
    Ok(out)
}

/// Predict every volume with `e` (fitted at a subset of `part`, ascending) and write the
/// values into `out[v][offset + position in part]`.
fn fill(
    e: &LovoEngine,
    part: &[usize],
    offset: usize,
    volumes: &[usize],
    out: &mut [Vec<f32>],
) -> Result<()> {
    // where each fitted voxel sits in `part` (both ascending)
    let fitted = e.voxel_indices();
    let mut pos = Vec::with_capacity(fitted.len());
    let mut i = 0;
    for &l in fitted {
        while part[i] != l {
            i += 1;
        }
        pos.push(offset + i);
    }
    let values = e.predict_many(volumes)?;
    out.par_iter_mut().zip(values).for_each(|(o, vals)| {
        for (&p, &v) in pos.iter().zip(&vals) {
            o[p] = v as f32;
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Grid;
    use crate::model::ModelKind;
    use nalgebra::Matrix4;

    /// Batches give the bytes of one engine over all voxels, DTI and DKI, with voxels that
    /// are not fitted (S0 = 0) among them; with `ignore_b0` (one global S0) too.
    #[test]
    fn batches_match_one_engine() {
        let dims = [64, 48, 30];
        let grid = Grid::new(dims, Matrix4::identity());
        let mut seed = 11u64;
        let mut rnd = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        // 3 b=0, then b=1000 and b=2000 shells of 12 directions each
        let mut bvals = vec![0.0; 3];
        let mut bvecs = vec![[0.0; 3]; 3];
        for b in [1000.0, 2000.0] {
            for _ in 0..12 {
                let v = [rnd() - 0.5, rnd() - 0.5, rnd() - 0.5];
                let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
                bvals.push(b);
                bvecs.push([v[0] / n, v[1] / n, v[2] / n]);
            }
        }
        let table = GradientTable { bvals, bvecs };
        let n = grid.len();
        // every second voxel of the box's middle, so batches see gaps
        let voxels: Vec<usize> = (0..n).filter(|&l| l % 2 == 0 && l > n / 10).collect();
        let vols: Vec<Vec<f32>> = (0..table.len())
            .map(|k| {
                voxels
                    .iter()
                    .map(|&l| {
                        let s0 = if l % 97 == 0 {
                            0.0
                        } else {
                            400.0 + 50.0 * rnd()
                        };
                        let b = table.bvals[k] / 1000.0;
                        let g = table.bvecs[k];
                        let d = 0.7 + 0.5 * g[0] * g[0] + 0.2 * (l % 7) as f64 / 7.0;
                        (s0 * (-b * d + 0.15 * b * b).exp() * (1.0 + 0.05 * (rnd() - 0.5))) as f32
                    })
                    .collect()
            })
            .collect();
        let data = MaskedSeries::from_volumes(grid.clone(), voxels.clone(), &vols);
        let mut m = vec![false; n];
        for &l in &voxels {
            m[l] = true;
        }
        let mask = Mask { grid, data: m };
        assert!(
            voxels.len() > 2 * MIN_BATCH_VOXELS,
            "the test needs several batches"
        );
        let volumes: Vec<usize> = vec![3, 9, 15, 26];
        for kind in [ModelKind::Dti, ModelKind::Dki] {
            for ignore_b0 in [false, true] {
                let model = Model::new(kind).ignore_b0(ignore_b0).s0_sample(true);
                let got = predict_masked(&model, &data, &table, &mask, &volumes).unwrap();
                let e = model.leave_one_out(&data, &table, &mask).unwrap();
                for (v, &h) in volumes.iter().enumerate() {
                    let full = e.predict(h).unwrap();
                    let want: Vec<f32> = voxels.iter().map(|&l| full.data[l]).collect();
                    assert!(want.iter().any(|&x| x > 0.0));
                    assert_eq!(want.contains(&0.0), !ignore_b0);
                    assert!(
                        got[v]
                            .iter()
                            .zip(&want)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{kind:?} ignore_b0={ignore_b0} volume {h}"
                    );
                }
            }
        }
    }
}
