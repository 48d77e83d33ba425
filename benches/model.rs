//! Seconds per leave-one-out fold on ../shared/phantoms/bench (122k mask voxels, 64 DW volumes):
//! DTI and DKI, WLS, fast engine with -j 1 and -j 2, next to the plain per-voxel route.
//! Run: `cargo bench --bench model` (skips when ../shared is missing).
//! Optional env: MODEL_BENCH_FOLDS (default 3), MODEL_BENCH_PLAIN=0 to skip the plain route.

use nifreeze::io::gradients::GradientArgs;
use nifreeze::io::{gradients, nifti};
use nifreeze::model::{FitMethod, Model, ModelKind};
use std::path::Path;
use std::time::Instant;

/// CPU seconds used by this process so far (user + system, all threads; Linux only, else 0):
/// on a shared machine wall time depends on the other load, CPU time much less.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // fields after the ")" of the command name; utime and stime are fields 14 and 15
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/phantoms/bench");
    let dwi = dir.join("dwi.nii.gz");
    if !dwi.is_file() {
        eprintln!("model bench: {} not found, skipping", dwi.display());
        return;
    }
    let folds: usize = std::env::var("MODEL_BENCH_FOLDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let plain = std::env::var("MODEL_BENCH_PLAIN")
        .map(|v| v != "0")
        .unwrap_or(true);
    let t = Instant::now();
    let (series, _) = nifti::read_series(&dwi).expect("read dwi");
    let args = GradientArgs {
        b0_threshold: 50.0,
        ..Default::default()
    };
    let g = gradients::load(&dwi, &args, &series.grid, series.n_volumes).expect("gradients");
    let mask = nifti::read_mask(&dir.join("brainmask.nii.gz"), &series.grid).expect("mask");
    println!(
        "bench phantom: {:?} x {} volumes, {} mask voxels, read in {:.2} s",
        series.grid.dims,
        series.n_volumes,
        mask.count(),
        t.elapsed().as_secs_f64()
    );
    // MODEL_BENCH_ONLY=dti|dki restricts the run to one model.
    let only = std::env::var("MODEL_BENCH_ONLY")
        .unwrap_or_default()
        .to_lowercase();
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    for (kind, name) in [(ModelKind::Dti, "DTI"), (ModelKind::Dki, "DKI")] {
        if !only.is_empty() && only != name.to_lowercase() {
            continue;
        }
        for method in [FitMethod::Wls, FitMethod::Ols] {
            let mut per_j = Vec::new();
            for j in [1usize, 2] {
                pool(j).install(|| {
                    let t = Instant::now();
                    let e = Model::new(kind).fit_method(method).leave_one_out(&series, &g.table, &mask)
                        .expect("engine");
                    let t_new = t.elapsed().as_secs_f64();
                    let dw = e.dw_indices().to_vec();
                    let t = Instant::now();
                    let c0 = cpu_seconds();
                    for f in 0..folds {
                        let k = dw[(f * 17) % dw.len()];
                        std::hint::black_box(e.predict(k).expect("predict"));
                    }
                    let s = t.elapsed().as_secs_f64() / folds as f64;
                    let cpu = (cpu_seconds() - c0) / folds as f64;
                    println!(
                        "{name} {method:?} -j {j}: {s:.4} s/fold wall, {cpu:.3} CPU-s/fold (engine build {t_new:.3} s, {} voxels)",
                        e.n_voxels()
                    );
                    per_j.push(s);
                });
            }
            if plain && method == FitMethod::Wls {
                pool(1).install(|| {
                    let e = Model::new(kind).fit_method(method).leave_one_out(&series, &g.table, &mask)
                        .expect("engine");
                    let k = e.dw_indices()[0];
                    let t = Instant::now();
                    let p = e.predict_values_plain(k).expect("plain");
                    let s = t.elapsed().as_secs_f64();
                    let f = e.predict_values(k).expect("fast");
                    let mut worst = 0.0f64;
                    for (a, b) in f.iter().zip(&p) {
                        if b.is_finite() && *b != 0.0 {
                            worst = worst.max((a - b).abs() / b.abs());
                        }
                    }
                    println!(
                        "{name} {method:?} plain per-voxel -j 1: {s:.3} s/fold; fast/plain speed-up: {:.1}x (-j 1), {:.1}x (-j 2); max rel diff fast vs plain {worst:.2e}",
                        s / per_j[0],
                        s / per_j[1]
                    );
                });
            }
        }
    }
}
