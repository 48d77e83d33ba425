//! Brain-mask accuracy and speed on the shared phantoms: the median of the b=0 volumes
//! (b ≤ 50) goes through `mask::brain_mask_with` for a sweep of parameters; Dice against the
//! phantom's true brain mask and wall time are printed. Skips when ../shared is missing.
//!
//!     cargo bench --bench mask

use nalgebra::Matrix4;
use nifreeze::image::{Grid, Mask, Volume};
use nifreeze::mask::{self, Connectivity, MaskParams};
use nifti::{IntoNdArray, NiftiObject, ReaderOptions};
use std::path::Path;
use std::time::Instant;

/// (grid, volume-major data, n volumes) via the independent `nifti` crate.
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
    let data: Vec<f32> = arr.reversed_axes().iter().copied().collect();
    (Grid::new(dims, a), data, nt)
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/phantoms");
    if !root.exists() {
        println!("../shared/phantoms not found: skipping");
        return;
    }
    for ph in ["mini", "bench"] {
        let dir = root.join(ph);
        let (grid, data, nt) = read(&dir.join("dwi.nii.gz"));
        let bvals: Vec<f64> = std::fs::read_to_string(dir.join("dwi.bval"))
            .unwrap()
            .split_whitespace()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(bvals.len(), nt);
        let n = grid.len();
        let b0s: Vec<usize> = (0..nt).filter(|&v| bvals[v] <= 50.0).collect();
        let med: Vec<f32> = (0..n)
            .map(|i| {
                let mut s: Vec<f32> = b0s.iter().map(|&v| data[v * n + i]).collect();
                s.sort_by(|a, b| a.total_cmp(b));
                let m = s.len();
                if m % 2 == 1 {
                    s[m / 2]
                } else {
                    0.5 * (s[m / 2 - 1] + s[m / 2])
                }
            })
            .collect();
        let b0 = Volume::new(grid.clone(), med);
        let (tg, tdata, _) = read(&dir.join("brainmask.nii.gz"));
        let truth = Mask {
            grid: tg,
            data: tdata.iter().map(|&v| v > 0.0).collect(),
        };
        println!(
            "{ph}: {:?} voxel {:?} mm, true mask {} voxels",
            grid.dims,
            grid.voxel_sizes(),
            truth.count()
        );
        let mut sweep = vec![MaskParams::default()];
        for r in [0.0, 2.5, 5.0, 8.0, 10.0] {
            for np in [1, 2, 4] {
                sweep.push(MaskParams {
                    median_radius_mm: r,
                    numpass: np,
                    nbins: 256,
                    connectivity: Connectivity::Six,
                });
            }
        }
        for (i, p) in sweep.iter().enumerate() {
            let t = Instant::now();
            let m = mask::brain_mask_with(&b0, p);
            let dt = t.elapsed().as_secs_f64();
            let fp = m
                .data
                .iter()
                .zip(&truth.data)
                .filter(|(&a, &b)| a && !b)
                .count();
            let fnn = m
                .data
                .iter()
                .zip(&truth.data)
                .filter(|(&a, &b)| !a && b)
                .count();
            println!(
                "  {} r={:>4} mm pass={} {:?}: {} voxels, FP {fp}, FN {fnn}, Dice {:.4}, {:.3} s",
                if i == 0 { "DEFAULT" } else { "       " },
                p.median_radius_mm,
                p.numpass,
                p.connectivity,
                m.count(),
                mask::dice(&m, &truth),
                dt
            );
        }
    }
}
