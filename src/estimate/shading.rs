//! Coil shading (receive-bias field): a smooth multiplicative field fixed in the scanner,
//! estimated from the b=0 volumes and divided out of what the registrations compare.
//!
//! Every acquired volume is the anatomy times the same scanner-fixed field B(y); the head
//! moves inside it. Registered and averaged, the shell means and the b=0 mean all carry (about)
//! the same B, so the field does not move anything by itself, but it spreads each tissue over a
//! band of intensities whose width depends on the contrast (b=0: bright CSF; b=2000: dark CSF),
//! and a cross-contrast metric such as mutual information finds its optimum off the true
//! alignment. Measured with the true motion (`cargo bench --bench link`): with a ±12 %
//! scanner-fixed shading the b=0 → b=1000 link moved by 0.08 mm and b=1000 → b=2000 by
//! 0.09 mm; on the same phantom without shading by 0.06 and 0.02 mm.
//!
//! The estimate is the classic segmentation-based one (as FSL FAST and SPM do, with a
//! polynomial instead of their DCT / B-spline bases): the log b=0 signal inside the (eroded)
//! brain mask is a few tissue classes plus a smooth polynomial field; classes (1-D k-means on
//! the log signal with the current field removed) and the field (weighted least squares on
//! what the classes leave, partial-volume voxels down-weighted) are alternated. Because the
//! field is fixed in the scanner, dividing the *acquired* volumes by it is exact whatever the
//! head's motion.

use crate::image::{Mask, Series, Volume};
use crate::io::gradients::Shell;
use nalgebra::{DMatrix, DVector, Vector3};
use rayon::prelude::*;

/// Polynomial degree of the log-field: 3 (20 terms). A field whose features are 150–300 mm
/// long is represented over a ~150 mm brain to 0.5 % (degree 2: 1.3 %, degree 4: 0.1 %), but
/// the higher the degree, the more of the anatomy's own slow variation (cortex bright, white
/// matter dark on b=0) the fit takes for shading: measured against a simulator's true field,
/// correlation 0.97 at degree 3 against 0.95 at degree 4 (multi-channel, 5 classes).
pub const DEGREE: usize = 3;
/// Tissue classes in the joint signal of all channels: white matter, grey matter, CSF and
/// their partial-volume mixtures. Measured against the true field (seed 11, degree 3):
/// 3 classes correlation 0.956, 4: 0.973, 5: 0.975, 6: 0.982; with the b=0 channel alone
/// at most 0.87 (grey and white matter overlap once the field is there).
const CLASSES: usize = 5;
/// Alternations of classification and field fit.
const ITERATIONS: usize = 12;
/// The fit samples every `SUBSAMPLE`-th voxel along each axis (see [`estimate`]).
const SUBSAMPLE: usize = 2;
/// Largest |log field| kept (a factor e^0.7 ≈ 2): beyond it the fit is extrapolating.
const MAX_LOG: f64 = 0.7;

/// A smooth multiplicative field on a grid (mean 1 over the brain).
#[derive(Clone, Debug)]
pub struct Shading {
    pub field: Volume,
}

impl Shading {
    /// `v` divided by the field.
    pub fn correct(&self, v: &[f32]) -> Vec<f32> {
        v.iter()
            .zip(&self.field.data)
            .map(|(&x, &b)| x / b)
            .collect()
    }

    /// A volume divided by the field (same grid).
    pub fn correct_volume(&self, v: &Volume) -> Volume {
        Volume::new(v.grid.clone(), self.correct(&v.data))
    }

    /// 1 / field, voxel by voxel: the gain that divides the field out of a series
    /// ([`Series::with_gain`]).
    pub fn inverse(&self) -> Vec<f32> {
        self.field.data.iter().map(|&b| 1.0 / b).collect()
    }
}

/// The coil shading of a series as acquired, for the estimate's first stage: [`estimate`] on
/// the voxelwise median of the b=0 volumes `b0` and the plain mean of each shell's volumes,
/// neither realigned. The field is fixed in the scanner, so these are in its frame whatever the
/// head does; the motion only blurs the anatomy they show, which the smooth field does not
/// care about (seed 13 below: correlation with the simulator's true field 0.976).
///
/// Why divide it out of everything, not only the shell link: a field that stays put while the
/// head moves is part of every volume's image, so each registration (b=0 to b=0, bootstrap,
/// volume to prediction) trades a little alignment of the anatomy for alignment of the
/// shading, in proportion to how far the volume moved from its target. On own phantoms
/// (`simulate --dropout 0.1 --drift 5`, ±12 % shading) the b=0 volumes' residual error
/// followed their true translation (correlation 0.94 along y with tz, seed 13).
///
/// Measured, `estimate -j 2 --no-resample`, median / worst mm before → after (2026-12-03,
/// fourth session, main df3b96b): own seeds 11–13 with dropouts and drift, DKI 0.0324 / 0.0734
/// → 0.0289 / 0.0711, 0.0355 / 0.0856 → 0.0313 / 0.0865, 0.0445 / 0.0912 → 0.0356 / 0.0724
/// (DTI gains 0.004–0.005 in median); own `--ec 1` seeds 21–25 with `--transform eddy`: mean
/// median 0.0639 → 0.0626 (two seeds worse, three better), every worst ≤ 0.18 (was up to
/// 0.20); shared bench DTI 0.0203 / 0.0472 → 0.0215 / 0.0476, DKI 0.0215 / 0.0556 →
/// 0.0195 / 0.0469; bench_artefacts eddy DTI 0.0508 / 0.1651 → 0.0504 / 0.1523, DKI
/// 0.0717 / 0.2315 → 0.0703 / 0.2291 (its bias field moves with the head: nothing
/// scanner-fixed to remove, and nothing lost). Cost 0.7 CPU s on the bench. See
/// benches/README.md, "Coil shading divided out of the series".
pub fn of_series(series: &Series, b0: &[usize], shells: &[Shell], mask: &Mask) -> Option<Shading> {
    let mut channels = Vec::with_capacity(shells.len() + 1);
    if !b0.is_empty() {
        channels.push(crate::estimate::median_volume(series, b0));
    }
    let grid = &series.grid;
    channels.extend(
        shells
            .par_iter()
            .map(|sh| {
                let mut acc = vec![0f64; grid.len()];
                for &k in &sh.indices {
                    acc.iter_mut()
                        .zip(series.volume(k).iter())
                        .for_each(|(a, &v)| *a += v as f64);
                }
                let n = sh.indices.len().max(1) as f64;
                Volume::new(grid.clone(), acc.iter().map(|&a| (a / n) as f32).collect())
            })
            .collect::<Vec<_>>(),
    );
    let refs: Vec<&Volume> = channels.iter().collect();
    estimate(&refs, mask)
}

/// Monomials x^a y^b z^c, a + b + c ≤ degree.
fn exponents(degree: usize) -> Vec<[usize; 3]> {
    let mut e = Vec::new();
    for a in 0..=degree {
        for b in 0..=degree - a {
            for c in 0..=degree - a - b {
                e.push([a, b, c]);
            }
        }
    }
    e
}

fn basis(u: &Vector3<f64>, exps: &[[usize; 3]], out: &mut [f64]) {
    for (o, e) in out.iter_mut().zip(exps) {
        *o = u.x.powi(e[0] as i32) * u.y.powi(e[1] as i32) * u.z.powi(e[2] as i32);
    }
}

/// k-means (Lloyd) on points of `dim` coordinates (row-major), started from the points at
/// the (j + ½)/k quantiles of the first coordinate; returns the centres (row-major).
fn kmeans(points: &[f64], dim: usize, k: usize) -> Vec<f64> {
    let n = points.len() / dim;
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| points[a * dim].total_cmp(&points[b * dim]));
    let mut c: Vec<f64> = (0..k)
        .flat_map(|j| {
            let i = order[((j as f64 + 0.5) / k as f64 * (n - 1) as f64) as usize];
            points[i * dim..(i + 1) * dim].to_vec()
        })
        .collect();
    for _ in 0..30 {
        // the assignments in parallel, the sums in point order: the same bits for any
        // thread count (and as a plain loop)
        let class = classify(points, &c, dim);
        let mut sum = vec![0.0; k * dim];
        let mut cnt = vec![0usize; k];
        for (p, &j) in points.chunks(dim).zip(&class) {
            cnt[j] += 1;
            for (s, v) in sum[j * dim..(j + 1) * dim].iter_mut().zip(p) {
                *s += v;
            }
        }
        let mut next = c.clone();
        for j in 0..k {
            if cnt[j] > 0 {
                for d in 0..dim {
                    next[j * dim + d] = sum[j * dim + d] / cnt[j] as f64;
                }
            }
        }
        let moved = next.iter().zip(&c).any(|(a, b)| (a - b).abs() > 1e-9);
        c = next;
        if !moved {
            break;
        }
    }
    c
}

/// The nearest centre of every point (row-major `points`, `dim` coordinates each).
fn classify(points: &[f64], centres: &[f64], dim: usize) -> Vec<usize> {
    points
        .par_chunks(dim * 1024)
        .flat_map_iter(|block| block.chunks(dim).map(|p| nearest(centres, dim, p)))
        .collect()
}

fn nearest(c: &[f64], dim: usize, p: &[f64]) -> usize {
    let d2 = |j: usize| -> f64 {
        c[j * dim..(j + 1) * dim]
            .iter()
            .zip(p)
            .map(|(a, b)| (a - b) * (a - b))
            .sum()
    };
    let mut best = 0;
    for j in 1..c.len() / dim {
        if d2(j) < d2(best) {
            best = j;
        }
    }
    best
}

/// Estimate the shading shared by `channels` (volumes on one grid in one frame: the b=0 mean
/// and, when available, each shell's realigned mean — several contrasts separate the tissues
/// far better than the b=0 alone) inside `mask`. None when the mask is too small to fit the
/// field or the fit is singular.
pub fn estimate(channels: &[&Volume], mask: &Mask) -> Option<Shading> {
    let grid = &channels.first()?.grid;
    let dim = channels.len();
    let inner = crate::mask::erode(mask, 1);
    // every other voxel along each axis: a smooth 20-term field needs far fewer samples than
    // a brain has, and the k-means and normal equations ran 12 times over all of them
    let idx: Vec<usize> = inner
        .indices()
        .into_iter()
        .filter(|&i| grid.ijk(i).iter().all(|c| c % SUBSAMPLE == 0))
        .filter(|&i| {
            channels
                .iter()
                .all(|v| v.data[i] > 0.0 && v.data[i].is_finite())
        })
        .collect();
    let exps = exponents(DEGREE);
    if idx.len() < 50 * exps.len() {
        return None;
    }
    // normalised coordinates: the brain's bounding box mapped to [-1, 1] per axis
    let pts: Vec<Vector3<f64>> = idx
        .iter()
        .map(|&i| {
            let [x, y, z] = grid.ijk(i);
            grid.world([x as f64, y as f64, z as f64])
        })
        .collect();
    let mut lo = Vector3::repeat(f64::INFINITY);
    let mut hi = Vector3::repeat(f64::NEG_INFINITY);
    for p in &pts {
        lo = lo.inf(p);
        hi = hi.sup(p);
    }
    let centre = (lo + hi) / 2.0;
    let half = ((hi - lo) / 2.0).map(|h| h.max(1.0));
    let norm = |p: &Vector3<f64>| {
        (p - centre)
            .component_div(&half)
            .map(|u| u.clamp(-1.0, 1.0))
    };
    let m = exps.len();
    let rows: Vec<f64> = pts
        .iter()
        .flat_map(|p| {
            let mut r = vec![0.0; m];
            basis(&norm(p), &exps, &mut r);
            r
        })
        .collect();
    let logs: Vec<f64> = idx
        .iter()
        .flat_map(|&i| channels.iter().map(move |v| (v.data[i] as f64).ln()))
        .collect();
    let mut field = vec![0.0; idx.len()];
    let mut coef = DVector::zeros(m);
    for _ in 0..ITERATIONS {
        // every channel carries the same field: remove it, classify the joint signal
        let r: Vec<f64> = logs
            .chunks(dim)
            .zip(&field)
            .flat_map(|(l, f)| l.iter().map(move |v| v - f))
            .collect();
        let centres = kmeans(&r, dim, CLASSES);
        let class = classify(&r, &centres, dim);
        let dist: Vec<f64> = r
            .chunks(dim)
            .zip(&class)
            .map(|(p, &j)| {
                p.iter()
                    .zip(&centres[j * dim..(j + 1) * dim])
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect();
        let mut sorted = dist.clone();
        let mad = crate::stats::median(&mut sorted).max(1e-6);
        // partial-volume voxels sit between classes: left out beyond 3 median distances
        let cut = 3.0 * mad;
        let mut ata = DMatrix::<f64>::zeros(m, m);
        let mut atb = DVector::<f64>::zeros(m);
        for n in 0..idx.len() {
            if dist[n] > cut {
                continue;
            }
            let row = &rows[n * m..(n + 1) * m];
            // target: the log signal minus its class centre, averaged over the channels
            let j = class[n];
            let t = logs[n * dim..(n + 1) * dim]
                .iter()
                .zip(&centres[j * dim..(j + 1) * dim])
                .map(|(l, c)| l - c)
                .sum::<f64>()
                / dim as f64;
            for i in 0..m {
                atb[i] += row[i] * t;
                for j in i..m {
                    ata[(i, j)] += row[i] * row[j];
                }
            }
        }
        for i in 0..m {
            for j in 0..i {
                ata[(i, j)] = ata[(j, i)];
            }
        }
        coef = ata.cholesky()?.solve(&atb);
        for (n, f) in field.iter_mut().enumerate() {
            let row = &rows[n * m..(n + 1) * m];
            *f = row.iter().zip(coef.iter()).map(|(a, b)| a * b).sum();
        }
        // the constant is shared with the class centres: keep the field's brain mean at 0
        let mean = field.iter().sum::<f64>() / field.len() as f64;
        coef[0] -= mean;
        field.iter_mut().for_each(|f| *f -= mean);
    }
    // voxel by voxel, so in parallel with the same bits
    let data: Vec<f32> = (0..grid.len())
        .into_par_iter()
        .map_init(
            || vec![0.0; m],
            |row, i| {
                let [x, y, z] = grid.ijk(i);
                let p = grid.world([x as f64, y as f64, z as f64]);
                basis(&norm(&p), &exps, row);
                let f: f64 = row.iter().zip(coef.iter()).map(|(a, b)| a * b).sum();
                f.clamp(-MAX_LOG, MAX_LOG).exp() as f32
            },
        )
        .collect();
    Some(Shading {
        field: Volume::new(grid.clone(), data),
    })
}
