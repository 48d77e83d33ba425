//! Simulated diffusion MRI series with known rigid head motion, for tests, benchmarks and
//! pipeline regression checks (`nifreeze-rs simulate`).
//!
//! Anatomy comes from a compact tissue template (MNI ICBM152 2009 derived, see
//! `data/template/`) deformed per subject; white matter is stick + zeppelin along a smooth
//! fibre field, grey matter bi-exponential, CSF free water, plus a scalp ring. Each volume is
//! evaluated on a grid twice as fine as the output, *at the moved positions* — the analytic
//! anatomy is sampled directly, never resampled with the estimator's interpolator — then
//! block-averaged, multiplied by a smooth coil bias field (fixed in the scanner), and Rician
//! noise is added. Data are rounded to int16 like scanner output.
//!
//! Conventions match the shared phantoms: T_k maps reference-head RAS points to volume-k
//! points, moved_k(T_k x) = clean_k(x); volume 0 is the reference (identity). The gradient
//! table is in scanner RAS (the scanner plays it in its own frame), so a rotated head sees
//! g_head = R_kᵀ g.

mod anatomy;
pub mod artefacts;
mod field;
pub mod motion;
pub mod protocol;
mod rng;
mod signal;
mod template;

use crate::image::{Grid, Mask};
use crate::io::gradients::GradientTable;
use crate::{Error, Result};
use anatomy::Anatomy;
use artefacts::{Dropouts, EddyField};
use field::SmoothField;
use nalgebra::{Matrix3, Matrix4, Vector3, Vector4};
use rayon::prelude::*;
use rng::Rng;
use signal::Acquisition;

pub use artefacts::PhaseEncoding;
pub use motion::Motion;

impl Simulation {
    /// Full per-volume map (reference-head point -> where the acquired volume shows it):
    /// eddy-current distortion after head motion, D_k·T_k.
    pub fn full_truth(&self) -> Vec<Matrix4<f64>> {
        self.motions
            .iter()
            .zip(&self.distortions)
            .map(|(m, d)| d * m.matrix)
            .collect()
    }
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimParams {
    pub seed: u64,
    /// (b in s/mm², number of directions) per shell.
    pub shells: Vec<(f64, usize)>,
    pub n_b0: usize,
    pub voxel_size: f64,
    /// b=0 white-matter signal over the noise standard deviation (0 = no noise).
    pub snr: f64,
    pub max_rot: f64,
    pub max_trans: f64,
    /// Tilt of the acquisition grid, degrees (about x, and half of it about z).
    pub oblique: f64,
    /// Store the image with a flipped x axis (det < 0, radiological like many exports).
    pub flip_x: bool,
    /// Also return the unmoved, noise-free series.
    pub clean: bool,
    /// Eddy-current strength (see [`artefacts`]; 0 = none).
    pub ec: f64,
    /// Phase-encode direction (the axis eddy currents displace along).
    pub pe: PhaseEncoding,
    /// Fraction of diffusion-weighted volumes with dropout slices.
    pub dropout: f64,
    /// Signal drift over the series, per cent.
    pub drift: f64,
    /// Amplitude of the coil shading (log scale: the field is exp(shading·f), f a smooth
    /// field of unit scale, fixed in the scanner); 0 = none.
    pub shading: f64,
}

impl Default for SimParams {
    fn default() -> Self {
        SimParams {
            seed: 1,
            shells: vec![(1000.0, 32), (2000.0, 32)],
            n_b0: 6,
            voxel_size: 2.5,
            snr: 25.0,
            max_rot: 3.0,
            max_trans: 3.0,
            oblique: 0.0,
            flip_x: false,
            clean: false,
            ec: 0.0,
            pe: PhaseEncoding { axis: 1, sign: 1 },
            dropout: 0.0,
            drift: 0.0,
            shading: 0.12,
        }
    }
}

/// A simulated series and everything known about it.
pub struct Simulation {
    pub grid: Grid,
    pub n_volumes: usize,
    /// Volume-major, x fastest; whole numbers in the int16 range.
    pub data: Vec<f32>,
    /// The same volumes unmoved and noise-free (bias field included), when asked for.
    pub clean: Option<Vec<f32>>,
    pub gradients: GradientTable,
    pub mask: Mask,
    pub motions: Vec<Motion>,
    /// Per volume, the eddy-current distortion D_k (physical scanner point -> where the
    /// acquired image shows it); identity without `ec`. The full truth is D_k·T_k.
    pub distortions: Vec<Matrix4<f64>>,
    /// The eddy-current coefficients, when simulated.
    pub eddy: Option<EddyField>,
    /// Dropout slices (third voxel axis) and their remaining signal fraction.
    pub dropouts: Dropouts,
    /// Multiplicative signal drift per volume.
    pub drift: Vec<f64>,
    /// Brain centroid (RAS mm): the centre of the motion parameters.
    pub centre: Vector3<f64>,
    /// Standard deviation of the Gaussian noise in each channel.
    pub sigma: f64,
}

// Independent random streams (see rng::Rng::stream).
const STREAM_SUBJECT: u64 = 1;
const STREAM_PROTOCOL: u64 = 2;
const STREAM_MOTION: u64 = 3;
const STREAM_BIAS: u64 = 4;
const STREAM_NOISE: u64 = 5;
const STREAM_EDDY: u64 = 6;
const STREAM_DROPOUT: u64 = 7;
const STREAM_DRIFT: u64 = 8;

/// Sub-voxel offsets of the 2× finer grid (voxel units).
const SUB: [f64; 2] = [-0.25, 0.25];

pub fn simulate(p: &SimParams) -> Result<Simulation> {
    check(p)?;
    let template = template::Template::embedded().map_err(Error::runtime)?;
    let anatomy = Anatomy::build(&template, &mut Rng::stream(p.seed, STREAM_SUBJECT, 0));
    let (lo, hi) = template.bounds();
    let grid = acquisition_grid(&lo, &hi, p.voxel_size, p.oblique, p.flip_x);
    let (bvals, bvecs) = protocol::schedule(
        &p.shells,
        p.n_b0,
        &mut Rng::stream(p.seed, STREAM_PROTOCOL, 0),
    );
    let n_volumes = bvals.len();

    // Reference brain: mask where the block-averaged brain fraction is at least one half.
    let identity = Matrix4::identity();
    let lattice = lattice_map(&anatomy, &identity, &grid);
    let brain: Vec<f32> = par_voxels(&grid, |i, j, k| {
        fine_average(&lattice, i, j, k, |n| {
            (n.frac[0] + n.frac[1] + n.frac[2]) as f64
        }) as f32
    });
    let mask = Mask {
        grid: grid.clone(),
        data: brain.iter().map(|&b| b >= 0.5).collect(),
    };
    let count = mask.count();
    if count == 0 {
        return Err(Error::input(
            "the simulated brain mask is empty: use a voxel size of at most ~20 mm",
        ));
    }
    let mut centre = Vector3::zeros();
    for idx in mask.indices() {
        let [i, j, k] = grid.ijk(idx);
        centre += grid.world([i as f64, j as f64, k as f64]);
    }
    centre /= count as f64;

    let motions = motion::trajectory(
        &mut Rng::stream(p.seed, STREAM_MOTION, 0),
        n_volumes,
        p.max_rot,
        p.max_trans,
        &centre,
    );

    // Coil bias: smooth, ±~12 % at the default shading, fixed in the scanner frame.
    let bias_field = SmoothField::random(&mut Rng::stream(p.seed, STREAM_BIAS, 0), 6, 150.0, 300.0);
    let bias: Vec<f32> = par_voxels(&grid, |i, j, k| {
        let y = grid.world([i as f64, j as f64, k as f64]);
        (p.shading * bias_field.eval(&y)).exp() as f32
    });

    let dw: Vec<usize> = (0..n_volumes).filter(|&k| bvals[k] > 0.0).collect();
    let eddy = (p.ec > 0.0).then(|| {
        EddyField::random(
            &mut Rng::stream(p.seed, STREAM_EDDY, 0),
            p.ec,
            p.pe.world(&grid.affine),
        )
    });
    let distortions: Vec<Matrix4<f64>> = (0..n_volumes)
        .map(|k| match &eddy {
            Some(e) if bvals[k] > 0.0 => e.distortion(bvals[k], bvecs[k]),
            _ => identity,
        })
        .collect();
    let slice_brain: Vec<usize> = (0..grid.dims[2])
        .map(|kk| {
            let n = grid.dims[0] * grid.dims[1];
            mask.data[kk * n..(kk + 1) * n]
                .iter()
                .filter(|&&b| b)
                .count()
        })
        .collect();
    let dropouts = artefacts::dropouts(
        &mut Rng::stream(p.seed, STREAM_DROPOUT, 0),
        &dw,
        p.dropout,
        &slice_brain,
    );
    let drift = if p.drift > 0.0 {
        artefacts::drift(
            &mut Rng::stream(p.seed, STREAM_DRIFT, 0),
            n_volumes,
            p.drift,
        )
    } else {
        vec![1.0; n_volumes]
    };

    let sigma = if p.snr > 0.0 {
        signal::PD_WM / p.snr
    } else {
        0.0
    };
    let volume = |k: usize, moved: bool| -> Vec<f32> {
        let (t, rot) = if moved {
            (distortions[k] * motions[k].matrix, motions[k].rotation())
        } else {
            (identity, Matrix3::identity())
        };
        // Eddy currents displace the signal, coil shading included (it belongs to the
        // physical point D⁻¹z), and the Jacobian conserves the signal; the dropout and drift
        // scale what the scanner records, before the (unchanged) thermal noise.
        let distorted = moved && distortions[k] != identity;
        let dinv = distortions[k]
            .try_inverse()
            .expect("eddy-current maps are invertible");
        let mut gain = 1.0;
        let mut slice_gain = vec![1.0f64; grid.dims[2]];
        if moved {
            gain = drift[k];
            if let Some(e) = &eddy {
                if bvals[k] > 0.0 {
                    gain *= e.jacobian_factor(bvals[k], bvecs[k]);
                }
            }
            if let Some((_, sl)) = dropouts.iter().find(|(v, _)| *v == k) {
                for &(s, f) in sl {
                    slice_gain[s] = f;
                }
            }
        }
        let g = Vector3::from(bvecs[k]);
        let gh = rot.transpose() * g;
        let acq = Acquisition::new(bvals[k], [gh.x, gh.y, gh.z]);
        let tinv = t.try_inverse().expect("rigid transforms are invertible");
        let lattice = lattice_map(&anatomy, &tinv, &grid);
        let mut out: Vec<f32> = Vec::with_capacity(grid.len());
        for kk in 0..grid.dims[2] {
            for j in 0..grid.dims[1] {
                for i in 0..grid.dims[0] {
                    let s = fine_average(&lattice, i, j, kk, |n| acq.signal(n));
                    let shade = if distorted {
                        let z = grid.world([i as f64, j as f64, kk as f64]);
                        let y = (dinv * z.push(1.0)).xyz();
                        (p.shading * bias_field.eval(&y)).exp()
                    } else {
                        bias[grid.index(i, j, kk)] as f64
                    };
                    out.push((s * shade * gain * slice_gain[kk]) as f32);
                }
            }
        }
        if moved {
            let mut rng = Rng::stream(p.seed, STREAM_NOISE, k as u64);
            for v in out.iter_mut() {
                let (a, b) = if sigma > 0.0 {
                    (*v as f64 + sigma * rng.normal(), sigma * rng.normal())
                } else {
                    (*v as f64, 0.0)
                };
                *v = (a * a + b * b).sqrt().round().clamp(0.0, 32767.0) as f32;
            }
        }
        out
    };
    let vols: Vec<Vec<f32>> = (0..n_volumes)
        .into_par_iter()
        .map(|k| volume(k, true))
        .collect();
    let clean = p.clean.then(|| {
        let c: Vec<Vec<f32>> = (0..n_volumes)
            .into_par_iter()
            .map(|k| volume(k, false))
            .collect();
        c.concat()
    });

    Ok(Simulation {
        grid,
        n_volumes,
        data: vols.concat(),
        clean,
        gradients: GradientTable { bvecs, bvals },
        mask,
        motions,
        distortions,
        eddy,
        dropouts,
        drift,
        centre,
        sigma,
    })
}

fn check(p: &SimParams) -> Result<()> {
    let bad = |m: String| Err(Error::input(m));
    if !(p.voxel_size >= 0.5 && p.voxel_size <= 20.0) {
        return bad(format!(
            "--voxel-size {} is outside [0.5, 20] mm",
            p.voxel_size
        ));
    }
    if !(p.snr >= 0.0 && p.snr.is_finite()) {
        return bad(format!(
            "--snr {} must be a non-negative number (0 = no noise)",
            p.snr
        ));
    }
    if !(0.0..=30.0).contains(&p.max_rot) {
        return bad(format!(
            "--max-rot {} must be within [0, 30] degrees",
            p.max_rot
        ));
    }
    if !(0.0..=30.0).contains(&p.max_trans) {
        return bad(format!(
            "--max-trans {} must be within [0, 30] mm",
            p.max_trans
        ));
    }
    if !(-45.0..=45.0).contains(&p.oblique) {
        return bad(format!(
            "--oblique {} must be within [-45, 45] degrees",
            p.oblique
        ));
    }
    if p.shells.is_empty() {
        return bad("at least one shell is needed".into());
    }
    if !(0.0..=10.0).contains(&p.ec) {
        return bad(format!(
            "--ec {} must be within [0, 10] (1 = typical eddy currents)",
            p.ec
        ));
    }
    if !(0.0..=1.0).contains(&p.shading) {
        return bad(format!(
            "--shading {} must be within [0, 1] (0.12 = about ±12 %)",
            p.shading
        ));
    }
    if !(0.0..=1.0).contains(&p.dropout) {
        return bad(format!(
            "--dropout {} must be a fraction of the diffusion-weighted volumes in [0, 1]",
            p.dropout
        ));
    }
    if !(0.0..=50.0).contains(&p.drift) {
        return bad(format!(
            "--drift {} must be a percentage within [0, 50]",
            p.drift
        ));
    }
    if p.shells.iter().map(|s| s.1).sum::<usize>() + p.n_b0 > 2000 {
        return bad("more than 2000 volumes requested".into());
    }
    Ok(())
}

/// The acquisition grid: covers the template's field of view (tilted by `oblique`), voxel
/// centre of the grid at the field-of-view centre.
fn acquisition_grid(
    lo: &Vector3<f64>,
    hi: &Vector3<f64>,
    vs: f64,
    oblique: f64,
    flip_x: bool,
) -> Grid {
    let rot = motion::rotation(oblique, 0.0, oblique / 2.0);
    let ext = hi - lo + Vector3::repeat(4.0);
    // extent of the rotated box along the grid axes
    let ext_g = rot.transpose().abs() * ext;
    let dims = [
        (ext_g.x / vs).ceil().max(1.0) as usize,
        (ext_g.y / vs).ceil().max(1.0) as usize,
        (ext_g.z / vs).ceil().max(1.0) as usize,
    ];
    let flip = Matrix3::from_diagonal(&Vector3::new(if flip_x { -1.0 } else { 1.0 }, 1.0, 1.0));
    let lin = rot * flip * vs;
    let half = Vector3::new(
        (dims[0] as f64 - 1.0) / 2.0,
        (dims[1] as f64 - 1.0) / 2.0,
        (dims[2] as f64 - 1.0) / 2.0,
    );
    let centre = (lo + hi) / 2.0;
    let t = centre - lin * half;
    let mut a = Matrix4::identity();
    a.fixed_view_mut::<3, 3>(0, 0).copy_from(&lin);
    a.fixed_view_mut::<3, 1>(0, 3).copy_from(&t);
    Grid::new(dims, a)
}

/// Output-voxel coordinates -> lattice coordinates of the head points seen there:
/// lattice⁻¹ · T⁻¹ · A, with `tinv` = T⁻¹ (scanner point -> reference-head point).
struct LatticeMap<'a> {
    anatomy: &'a Anatomy,
    m: Matrix4<f64>,
    /// The eight sub-voxel offsets in lattice units.
    sub: [[f64; 3]; 8],
}

fn lattice_map<'a>(anatomy: &'a Anatomy, tinv: &Matrix4<f64>, grid: &Grid) -> LatticeMap<'a> {
    let h = anatomy.spacing;
    let mut to_lat = Matrix4::identity() / h;
    to_lat[(3, 3)] = 1.0;
    let o = -anatomy.origin / h;
    to_lat.fixed_view_mut::<3, 1>(0, 3).copy_from(&o);
    let m = to_lat * tinv * grid.affine;
    let mut sub = [[0f64; 3]; 8];
    let mut s = 0;
    for c in SUB {
        for b in SUB {
            for a in SUB {
                let d = m * Vector4::new(a, b, c, 0.0);
                sub[s] = [d.x, d.y, d.z];
                s += 1;
            }
        }
    }
    LatticeMap { anatomy, m, sub }
}

/// Mean of `f` over the 2×2×2 fine points of output voxel (i, j, k) (0 outside the head).
#[inline]
fn fine_average<F: Fn(&anatomy::Node) -> f64>(
    l: &LatticeMap,
    i: usize,
    j: usize,
    k: usize,
    f: F,
) -> f64 {
    let c = l.m * Vector4::new(i as f64, j as f64, k as f64, 1.0);
    let mut acc = 0.0;
    for d in &l.sub {
        if let Some(n) = l.anatomy.sample([c.x + d[0], c.y + d[1], c.z + d[2]]) {
            acc += f(&n);
        }
    }
    acc / 8.0
}

/// Evaluate `f` at every voxel of `grid` (x fastest), slices in parallel.
fn par_voxels<F: Fn(usize, usize, usize) -> f32 + Sync>(grid: &Grid, f: F) -> Vec<f32> {
    let [nx, ny, nz] = grid.dims;
    let mut out = vec![0f32; grid.len()];
    out.par_chunks_mut(nx * ny)
        .enumerate()
        .for_each(|(k, slab)| {
            for j in 0..ny {
                for i in 0..nx {
                    slab[i + nx * j] = f(i, j, k);
                }
            }
        });
    let _ = nz;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SimParams {
        SimParams {
            shells: vec![(1000.0, 4), (2000.0, 4)],
            n_b0: 2,
            voxel_size: 6.0,
            ..SimParams::default()
        }
    }

    #[test]
    fn deterministic_and_sane() {
        let a = simulate(&small()).unwrap();
        let b = simulate(&small()).unwrap();
        assert_eq!(a.data, b.data);
        assert_eq!(a.n_volumes, 10);
        assert_eq!(a.motions[0].matrix, Matrix4::identity());
        let n = a.grid.len();
        // b=0 brain median around the white/grey matter proton density
        let mut b0: Vec<f32> = a.mask.indices().iter().map(|&i| a.data[i]).collect();
        b0.sort_by(|x, y| x.partial_cmp(y).unwrap());
        let med = b0[b0.len() / 2];
        assert!(med > 900.0 && med < 1600.0, "{med}");
        // diffusion weighting attenuates
        let k = a.gradients.bvals.iter().position(|&b| b > 1500.0).unwrap();
        let dw: f64 = a
            .mask
            .indices()
            .iter()
            .map(|&i| a.data[k * n + i] as f64)
            .sum();
        let s0: f64 = a.mask.indices().iter().map(|&i| a.data[i] as f64).sum();
        assert!(dw / s0 > 0.15 && dw / s0 < 0.45, "{}", dw / s0);
        let c = simulate(&SimParams { seed: 2, ..small() }).unwrap();
        assert_ne!(a.data, c.data);
    }

    #[test]
    fn oblique_flipped_grid() {
        let s = simulate(&SimParams {
            oblique: 15.0,
            flip_x: true,
            ..small()
        })
        .unwrap();
        let det = s.grid.affine.fixed_view::<3, 3>(0, 0).determinant();
        assert!(det < 0.0);
        let sizes = s.grid.voxel_sizes();
        assert!((sizes[0] - 6.0).abs() < 1e-9 && (sizes[2] - 6.0).abs() < 1e-9);
        let plain = simulate(&small()).unwrap();
        // same subject, so about the same brain volume
        let r = s.mask.count() as f64 / plain.mask.count() as f64;
        assert!((r - 1.0).abs() < 0.05, "{r}");
        // same brain centroid (grid-independent up to partial voluming)
        assert!(
            (s.centre - plain.centre).norm() < 2.0,
            "{} {}",
            s.centre,
            plain.centre
        );
    }

    /// The full truth D_k·T_k explains the acquired eddy-current-distorted volume: pulling
    /// the acquired volume back through it (and undoing the Jacobian) reproduces the clean
    /// volume far better than the head motion alone does.
    #[test]
    fn eddy_current_truth_explains_the_data() {
        use crate::image::Volume;
        use crate::registration::{resample, Interpolation};
        let p = SimParams {
            snr: 0.0,
            ec: 5.0,
            clean: true,
            ..small()
        };
        let s = simulate(&p).unwrap();
        let clean = s.clean.as_ref().unwrap();
        let n = s.grid.len();
        let inner = crate::mask::erode(&s.mask, 1);
        let full = s.full_truth();
        let (mut sum_truth, mut sum_rigid, mut checked) = (0.0, 0.0, 0);
        for k in (0..s.n_volumes).filter(|&k| s.gradients.bvals[k] > 0.0) {
            let acquired = Volume::new(s.grid.clone(), s.data[k * n..(k + 1) * n].to_vec());
            let c = &clean[k * n..(k + 1) * n];
            let err = |t: &Matrix4<f64>, scale: f64| -> f64 {
                let r = resample(&acquired, &s.grid, t, Interpolation::CubicBSpline);
                let (mut e, mut m) = (0.0, 0.0);
                for i in inner.indices() {
                    e += (r.data[i] as f64 * scale - c[i] as f64).powi(2);
                    m += c[i] as f64;
                }
                let cnt = inner.count() as f64;
                (e / cnt).sqrt() / (m / cnt)
            };
            let det = s.distortions[k].fixed_view::<3, 3>(0, 0).determinant();
            let with_truth = err(&full[k], det);
            let rigid_only = err(&s.motions[k].matrix, 1.0);
            assert!(with_truth < 0.1, "volume {k}: {with_truth}");
            assert!(
                with_truth < rigid_only,
                "volume {k}: {with_truth} vs {rigid_only}"
            );
            sum_truth += with_truth;
            sum_rigid += rigid_only;
            checked += 1;
        }
        assert_eq!(checked, 8);
        assert!(sum_truth < 0.5 * sum_rigid, "{sum_truth} vs {sum_rigid}");
    }

    /// Without motion or noise, a dropout slice holds its fraction of the clean signal times
    /// the drift, and other slices the drift alone.
    #[test]
    fn dropout_and_drift_scale_the_signal() {
        let p = SimParams {
            snr: 0.0,
            max_rot: 0.0,
            max_trans: 0.0,
            dropout: 0.5,
            drift: 10.0,
            clean: true,
            ..small()
        };
        let s = simulate(&p).unwrap();
        assert_eq!(s.dropouts.len(), 4);
        let clean = s.clean.as_ref().unwrap();
        let [nx, ny, nz] = s.grid.dims;
        let n = s.grid.len();
        for k in 0..s.n_volumes {
            let lost: Vec<(usize, f64)> = s
                .dropouts
                .iter()
                .find(|(v, _)| *v == k)
                .map(|(_, sl)| sl.clone())
                .unwrap_or_default();
            for z in 0..nz {
                let (mut a, mut b) = (0.0, 0.0);
                for i in z * nx * ny..(z + 1) * nx * ny {
                    if s.mask.data[i] {
                        a += s.data[k * n + i] as f64;
                        b += clean[k * n + i] as f64;
                    }
                }
                if b < 1e4 {
                    continue;
                }
                let f = lost.iter().find(|d| d.0 == z).map_or(1.0, |d| d.1);
                let want = f * s.drift[k];
                assert!(
                    (a / b - want).abs() < 0.01 * want + 1e-3,
                    "{k} {z}: {} vs {want}",
                    a / b
                );
            }
        }
        assert!((s.drift[s.n_volumes - 1] - 0.9).abs() < 1e-12);
    }
}
