//! `nifreeze-rs estimate`: validate, load, mask, run the pipeline, write every output.
//!
//! [`run`] reads top-down: the arguments become a validated [`EstimateConfig`] (the one
//! validation point, `config.rs`) and the output folder is settled
//! ([`EstimateOutputs::prepare`]) before any work; then the series is loaded, its gradients
//! checked against the configuration, the brain mask found, the configuration completed from
//! the series' grid, [`estimate`] run, and [`EstimateOutputs::write`] writes everything.

pub mod args;
mod config;
mod output;

use super::input::{load_dwi, DwiInput};
use super::progress::Reporter;
use args::EstimateArgs;
use nifreeze::estimate::{estimate, median_volume, EstimateConfig, MotionEstimate, Progress};
use nifreeze::image::Mask;
use nifreeze::io::nifti;
use nifreeze::timing::Timeline;
use nifreeze::{Error, Result};
use output::{EstimateOutputs, Finished};
use std::time::Instant;

pub fn run(args: &EstimateArgs) -> Result<()> {
    let started = Instant::now();
    let reporter = Reporter::new(args.quiet);
    let probe = super::resources::usage;
    let timeline = Timeline::with_probe(&probe);

    // Arguments are validated once, into the configuration; then every path clash, the lock
    // and an earlier complete run are settled; all before any work.
    let mut cfg = EstimateConfig::try_from(args)?;
    let pool = super::resources::thread_pool(args.threads.n)?;
    let out = EstimateOutputs::prepare(args)?;

    let t = timeline.mark();
    let dwi = load_dwi(
        &args.dwi,
        &args.gradients,
        super::resources::ESTIMATE_MEMORY,
        pool.current_num_threads(),
        args.max_memory,
    )?;
    let mut warnings = cfg.check_gradients(&dwi.gradients.table)?;
    for w in &warnings {
        super::console::warn(w);
    }
    if let Some((_, source)) = out.pe.as_ref().filter(|(_, s)| s.starts_with("default")) {
        // already printed by phase_encoding; kept for summary.json
        warnings.push(format!(
            "phase-encode direction: {source}, nothing said otherwise"
        ));
    }
    reporter.message(&format!(
        "{}: {}x{}x{} voxels, {} volumes; gradients from {}",
        args.dwi.display(),
        dwi.series.grid.dims[0],
        dwi.series.grid.dims[1],
        dwi.series.grid.dims[2],
        dwi.series.n_volumes,
        dwi.gradients.source
    ));
    let mask = brain_mask(args, &dwi, &pool, &reporter)?;
    timeline.record("load + brain mask", t);
    // Outlier slices follow the acquisition's slice axis (BIDS sidecar, else the third voxel
    // axis); the eddy-current model's phase-encode direction needs the grid.
    let grid = &dwi.series.grid;
    cfg.complete_for_grid(
        grid,
        nifreeze::io::bids::slice_encoding_axis(&args.dwi).unwrap_or(2),
        out.pe.as_ref().map(|(p, _)| p.world(grid)),
    );

    let progress = |p: &Progress| reporter.update(p.stage, p.done, p.total);
    let mut result = pool.install(|| {
        estimate(
            &dwi.series,
            &dwi.gradients.table,
            &mask,
            &cfg,
            &progress,
            &timeline,
        )
    })?;
    let repol = args.repol && !args.no_resample;
    warnings.extend(report_findings(args, &dwi, &mut result, repol, &reporter));
    // Every warning of the run, the loader's first (gradients, then data cleaning).
    warnings.splice(0..0, dwi.warnings.iter().cloned());
    let finished = Finished {
        args,
        cfg: &cfg,
        dwi: &dwi,
        mask: &mask,
        result: &result,
        warnings,
        repol,
        started,
    };
    out.write(finished, &timeline, &pool, &reporter)
}

/// The brain mask: `--mask` (on the series' grid, brighter than the image on average), else
/// computed from the median b=0 (the median of the diffusion-weighted volumes without b=0).
fn brain_mask(
    args: &EstimateArgs,
    dwi: &DwiInput,
    pool: &rayon::ThreadPool,
    reporter: &Reporter,
) -> Result<Mask> {
    let (table, thr) = (&dwi.gradients.table, args.gradients.b0_threshold);
    let b0 = table.b0_indices(thr);
    let idx = if b0.is_empty() {
        table.dw_indices(thr)
    } else {
        b0
    };
    let mask = match &args.mask {
        Some(m) => {
            let mask = nifti::read_mask(m, &dwi.series.grid)?;
            nifreeze::data_check::check_mask_signal(
                &dwi.series,
                &idx,
                &mask,
                &m.display().to_string(),
            )?;
            mask
        }
        None => {
            let reference = pool.install(|| median_volume(&dwi.series, &idx));
            let m = nifreeze::mask::brain_mask(&reference);
            reporter.message(&format!(
                "automatic brain mask: {} voxels (written to brainmask.nii.gz)",
                m.count()
            ));
            m
        }
    };
    if mask.count() < 100 {
        return Err(Error::input(format!(
            "the brain mask has only {} voxels; check the mask (or give one with --mask)",
            mask.count()
        )));
    }
    Ok(mask)
}

/// Tell the user what the run found besides motion (signal drift, outlier slices); marks the
/// outlier slices as replaced with `--repol`. Returns the warnings for summary.json.
fn report_findings(
    args: &EstimateArgs,
    dwi: &DwiInput,
    result: &mut MotionEstimate,
    repol: bool,
    reporter: &Reporter,
) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(d) = &result.drift {
        reporter.message(&format!(
            "signal drift from the b=0 volumes: {:+.2} % over the series ({}, residual {:.2} %){}",
            d.percent,
            if d.order == 2 { "quadratic" } else { "linear" },
            d.residual_percent,
            if args.drift_correct {
                "; corrected"
            } else {
                ""
            }
        ));
    }
    if let Some(o) = result.outliers.as_mut() {
        for r in o.table.rows.iter_mut() {
            r.replaced = repol;
        }
        if !o.table.rows.is_empty() {
            let mut vols: Vec<usize> = o.table.rows.iter().map(|r| r.volume).collect();
            vols.dedup();
            let w = format!(
                "{} outlier slices (signal dropouts) in {} of {} diffusion-weighted volumes, {} volumes broken as a whole; {}; see outliers.tsv",
                o.table.rows.len(),
                vols.len(),
                dwi.gradients.table.dw_indices(args.gradients.b0_threshold).len(),
                o.table.broken_volumes.len(),
                if repol {
                    "replaced by their prediction in dwi_corrected (--repol)"
                } else {
                    "kept in dwi_corrected (replace them with --repol)"
                }
            );
            super::console::warn(&w);
            warnings.push(w);
        }
    }
    warnings
}
