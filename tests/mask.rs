//! Brain mask: recovery of known shapes, morphology, the median filter against scipy, and
//! Dice against the sample phantom's true brain mask.

use nalgebra::Matrix4;
use nifreeze::image::{Grid, Mask, Volume};
use nifreeze::mask::{self, Connectivity};
use nifti::{IntoNdArray, NiftiObject, ReaderOptions};
use std::path::Path;

fn grid(dims: [usize; 3], vox: f64) -> Grid {
    let mut a = Matrix4::identity();
    for d in 0..3 {
        a[(d, d)] = vox;
    }
    Grid::new(dims, a)
}

/// Deterministic uniform noise in [-1, 1) (splitmix64), so the tests need no RNG crate.
fn noise(seed: &mut u64) -> f64 {
    *seed = seed.wrapping_add(0x9E3779B97F4A7C15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

fn ball(g: &Grid, c: [f64; 3], r: f64) -> Mask {
    let data = (0..g.len())
        .map(|idx| {
            let [i, j, k] = g.ijk(idx);
            let d2 =
                (i as f64 - c[0]).powi(2) + (j as f64 - c[1]).powi(2) + (k as f64 - c[2]).powi(2);
            d2 <= r * r
        })
        .collect();
    Mask {
        grid: g.clone(),
        data,
    }
}

#[test]
fn noisy_sphere_is_recovered() {
    let g = grid([40, 44, 36], 2.0);
    let truth = ball(&g, [19.5, 21.0, 17.0], 13.0);
    let mut s = 7u64;
    // Brain 1000 ± 150, background 30 ± 30, a few bright background outliers.
    let data: Vec<f32> = truth
        .data
        .iter()
        .map(|&b| {
            let base = if b {
                1000.0 + 150.0 * noise(&mut s)
            } else {
                30.0 + 30.0 * noise(&mut s)
            };
            let spike = if !b && noise(&mut s) > 0.995 {
                1500.0
            } else {
                0.0
            };
            (base + spike) as f32
        })
        .collect();
    let m = mask::brain_mask(&Volume::new(g, data));
    let d = mask::dice(&m, &truth);
    // A box median (here 7 voxels wide) trims a convex surface by a fraction of a voxel:
    // measured Dice 0.968; everything lost lies in the outer 2-voxel shell.
    assert!(d > 0.96, "Dice {d}");
    let core = mask::erode(&truth, 2);
    assert!(core.indices().iter().all(|&i| m.data[i]), "interior lost");
    // Isolated bright outliers must not survive (largest component only).
    let near = mask::dilate(&truth, 2);
    let far = m.indices().iter().filter(|&&i| !near.data[i]).count();
    assert_eq!(far, 0);
}

#[test]
fn constant_volume_gives_empty_mask() {
    let g = grid([8, 8, 8], 2.0);
    let m = mask::brain_mask(&Volume::new(g, vec![5.0; 512]));
    assert_eq!(m.count(), 0);
}

#[test]
fn holes_are_filled_and_border_background_kept() {
    let g = grid([20, 20, 20], 1.0);
    let outer = ball(&g, [10.0, 10.0, 10.0], 8.0);
    let inner = ball(&g, [10.0, 10.0, 10.0], 3.0);
    let shell = Mask {
        grid: g.clone(),
        data: outer
            .data
            .iter()
            .zip(&inner.data)
            .map(|(&o, &i)| o && !i)
            .collect(),
    };
    assert!(shell.count() < outer.count());
    let filled = mask::fill_holes(&shell);
    assert_eq!(filled.data, outer.data);

    // A cup open to the border (a tunnel from the cavity to the edge) is not a hole.
    let mut open = shell.clone();
    for i in 10..20 {
        for r in [9usize, 10, 11] {
            open.data[g.index(i, r, 10)] = false;
        }
    }
    let f = mask::fill_holes(&open);
    assert!(
        !f.data[g.index(10, 10, 10)],
        "cavity connected to the border must stay empty"
    );
}

#[test]
fn largest_component_keeps_the_biggest_blob() {
    let g = grid([30, 20, 20], 1.0);
    let big = ball(&g, [8.0, 10.0, 10.0], 6.0);
    let small = ball(&g, [23.0, 10.0, 10.0], 3.0);
    let both = Mask {
        grid: g.clone(),
        data: big
            .data
            .iter()
            .zip(&small.data)
            .map(|(&a, &b)| a || b)
            .collect(),
    };
    let l = mask::largest_component(&both, Connectivity::Six);
    assert_eq!(l.data, big.data);

    // Two voxels touching only at a corner: one component with 26-, two with 6-connectivity.
    let mut diag = Mask {
        grid: g.clone(),
        data: vec![false; g.len()],
    };
    for (i, j, k) in [(5, 5, 5), (6, 6, 6), (7, 7, 7), (20, 5, 5), (21, 5, 5)] {
        diag.data[g.index(i, j, k)] = true;
    }
    assert_eq!(
        mask::largest_component(&diag, Connectivity::TwentySix).count(),
        3
    );
    assert_eq!(mask::largest_component(&diag, Connectivity::Six).count(), 2);
}

#[test]
fn dilate_and_erode_use_the_six_connected_cross() {
    let g = grid([9, 9, 9], 1.0);
    let mut m = Mask {
        grid: g.clone(),
        data: vec![false; g.len()],
    };
    m.data[g.index(4, 4, 4)] = true;
    // One step: the cross (7 voxels); two steps: the L1 ball of radius 2 (25 voxels).
    assert_eq!(mask::dilate(&m, 1).count(), 7);
    assert_eq!(mask::dilate(&m, 2).count(), 25);
    assert_eq!(mask::dilate(&m, 0).data, m.data);
    // Erosion undoes the dilation of a single voxel.
    assert_eq!(mask::erode(&mask::dilate(&m, 2), 2).data, m.data);
    // A full volume erodes from the border (outside counts as background).
    let full = Mask {
        grid: g.clone(),
        data: vec![true; g.len()],
    };
    assert_eq!(mask::erode(&full, 1).count(), 7 * 7 * 7);
}

/// scipy 1.x reference: `median_filter(a, size=…, mode='reflect')` with
/// `a[i,j,k] = (7i + 13j + 29k + ijk) % 17` on a 5×4×3 grid, flattened in Fortran order.
#[test]
fn median_filter_matches_scipy_reflect() {
    let dims = [5, 4, 3];
    let mut a = vec![0f32; 60];
    for k in 0..3 {
        for j in 0..4 {
            for i in 0..5 {
                a[i + 5 * (j + 4 * k)] = ((7 * i + 13 * j + 29 * k + i * j * k) % 17) as f32;
            }
        }
    }
    let size3: [f32; 60] = [
        7., 8., 7., 9., 7., 9., 9., 9., 7., 6., 9., 8., 10., 7., 7., 5., 5., 10., 6., 9., 7., 7.,
        9., 7., 6., 9., 8., 10., 7., 6., 9., 8., 10., 6., 7., 9., 6., 9., 6., 9., 7., 7., 11., 6.,
        6., 10., 7., 11., 6., 6., 10., 8., 10., 6., 9., 10., 8., 8., 6., 9.,
    ];
    let size531: [f32; 60] = [
        7., 4., 7., 7., 7., 9., 9., 7., 7., 7., 9., 9., 9., 7., 7., 9., 9., 9., 12., 9., 9., 12.,
        9., 6., 9., 8., 9., 8., 6., 7., 8., 8., 7., 6., 6., 4., 4., 6., 6., 6., 7., 7., 7., 5., 5.,
        10., 10., 9., 9., 9., 10., 10., 9., 9., 9., 10., 10., 9., 9., 9.,
    ];
    assert_eq!(mask::median_filter(&a, dims, [1, 1, 1]), size3.to_vec());
    assert_eq!(mask::median_filter(&a, dims, [2, 1, 0]), size531.to_vec());
}

#[test]
fn otsu_splits_two_clusters() {
    let mut v = vec![100f32; 600];
    v.extend(vec![1000f32; 400]);
    v.push(f32::NAN); // ignored
    let t = mask::otsu_threshold(&v, 256).unwrap();
    assert!(t > 100.0 && t < 1000.0, "threshold {t}");
    assert!(mask::otsu_threshold(&[3.0; 10], 256).is_none());
}

/// Read a NIfTI file with the independent `nifti` crate: grid (sform) and volume-major data.
fn read(path: &Path) -> (Grid, Vec<f32>, usize) {
    let obj = ReaderOptions::new().read_file(path).expect("read nifti");
    let h = obj.header().clone();
    let dims = [h.dim[1] as usize, h.dim[2] as usize, h.dim[3] as usize];
    let nt = if h.dim[0] >= 4 {
        h.dim[4].max(1) as usize
    } else {
        1
    };
    let mut a = Matrix4::identity();
    for c in 0..4 {
        a[(0, c)] = h.srow_x[c] as f64;
        a[(1, c)] = h.srow_y[c] as f64;
        a[(2, c)] = h.srow_z[c] as f64;
    }
    let arr = obj.into_volume().into_ndarray::<f32>().expect("ndarray");
    (
        Grid::new(dims, a),
        arr.reversed_axes().iter().copied().collect(),
        nt,
    )
}

/// On the mini phantom (data/sample), the mask of the b=0 median against the true brain mask.
/// Measured (benches/mask.rs): Dice 0.978 with the defaults; DIPY median_otsu(r=2, 1 pass)
/// gives 0.975 and its defaults (r=4, 4 passes) 0.852 at this 4 mm resolution.
#[test]
fn sample_phantom_dice() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample");
    let (g, data, nt) = read(&dir.join("dwi.nii.gz"));
    let bvals: Vec<f64> = std::fs::read_to_string(dir.join("dwi.bval"))
        .unwrap()
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(bvals.len(), nt);
    let n = g.len();
    let b0s: Vec<usize> = (0..nt).filter(|&v| bvals[v] <= 50.0).collect();
    assert_eq!(b0s.len(), 3);
    let med: Vec<f32> = (0..n)
        .map(|i| {
            let mut s: Vec<f32> = b0s.iter().map(|&v| data[v * n + i]).collect();
            s.sort_by(|a, b| a.total_cmp(b));
            s[1]
        })
        .collect();
    let m = mask::brain_mask(&Volume::new(g.clone(), med));
    let (_, t, _) = read(&dir.join("brainmask.nii.gz"));
    let truth = Mask {
        grid: g,
        data: t.iter().map(|&v| v > 0.0).collect(),
    };
    assert_eq!(truth.count(), 29718);
    let d = mask::dice(&m, &truth);
    assert!(d > 0.97, "Dice {d}");
    // The scalp ring is excluded: nothing more than 2 voxels outside the true brain.
    let near = mask::dilate(&truth, 2);
    assert_eq!(m.indices().iter().filter(|&&i| !near.data[i]).count(), 0);
}
