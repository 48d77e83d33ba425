//! `nifreeze-rs estimate`: load, mask, run the loop, write every output atomically.

use super::input::{load_dwi, phase_encoding};
use super::progress::Reporter;
use crate::cli::{EstimateArgs, TransformChoice};
use crate::estimate::{
    drift_corrected, estimate, median_volume, realign_volume, EstimateConfig, MotionEstimate,
    Progress,
};
use crate::image::Mask;
use crate::io::eddy_files::SliceOutliers;
use crate::io::gradients;
use crate::io::output::{OutputFolder, SUMMARY};
use crate::io::{nifti, transforms};
use crate::outliers::{OutlierConfig, OutlierTable};
use crate::registration::{Interpolation, RegistrationConfig};
use crate::report;
use crate::timing::{StageRecord, Timeline};
use crate::{Error, Result};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

pub fn run(args: &EstimateArgs) -> Result<()> {
    let started = Instant::now();
    let reporter = Reporter::new(args.quiet);
    let probe = super::resources::usage;
    let timeline = Timeline::with_probe(&probe);

    // Arguments are validated once, into the configuration; then every path clash, the lock
    // and an earlier complete run are settled; all before any work.
    let mut cfg = EstimateConfig::try_from(args)?;
    let pool = super::resources::thread_pool(args.threads)?;
    let mut inputs: Vec<(&str, std::path::PathBuf)> = vec![("the DWI series", args.dwi.clone())];
    inputs.extend(gradients::input_files(&args.dwi, &args.gradients));
    if let Some(m) = &args.mask {
        inputs.push(("--mask", m.clone()));
    }
    let inputs: Vec<(&str, &Path)> = inputs.iter().map(|(r, p)| (*r, p.as_path())).collect();
    let mut out = OutputFolder::prepare(&args.out, &inputs, args.force)?;
    let pe = match args.transform {
        TransformChoice::Eddy => Some(phase_encoding(args.pe_dir, &args.dwi)?),
        _ => None,
    };
    let eddy_plan = super::dropin::plan_eddy(args, &out, pe.as_ref().map(|(p, _)| p.axis))?;
    let bids_plan = super::dropin::plan_bids(args, &out)?;

    let t = timeline.mark();
    let dwi = load_dwi(
        &args.dwi,
        &args.gradients,
        super::resources::ESTIMATE_SERIES_COPIES,
        pool.current_num_threads(),
        args.max_memory,
    )?;
    let thr = args.gradients.b0_threshold;
    let table = &dwi.gradients.table;
    let mut warnings = cfg.check_gradients(table)?;
    for w in &warnings {
        super::console::warn(w);
    }
    if let Some((_, source)) = pe.as_ref().filter(|(_, s)| s.starts_with("default")) {
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

    let mask = match &args.mask {
        Some(m) => {
            let mask = nifti::read_mask(m, &dwi.series.grid)?;
            let b0 = table.b0_indices(thr);
            let idx = if b0.is_empty() {
                table.dw_indices(thr)
            } else {
                b0
            };
            crate::data_check::check_mask_signal(
                &dwi.series,
                &idx,
                &mask,
                &m.display().to_string(),
            )?;
            mask
        }
        None => {
            let b0 = table.b0_indices(thr);
            let idx = if b0.is_empty() {
                table.dw_indices(thr)
            } else {
                b0
            };
            let reference = pool.install(|| median_volume(&dwi.series, &idx));
            let m = crate::mask::brain_mask(&reference);
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
    timeline.record("load + brain mask", t);
    // Outlier slices follow the acquisition's slice axis (BIDS sidecar, else the third voxel
    // axis); how much brain a slice needs to be judged depends on the in-plane voxel size.
    let slice_axis = crate::io::bids::slice_encoding_axis(&args.dwi).unwrap_or(2);
    cfg.outliers = cfg.outliers.map(|o| OutlierConfig {
        threshold: o.threshold,
        ..OutlierConfig::for_grid(dwi.series.grid.voxel_sizes(), slice_axis)
    });

    // The eddy-current model's phase-encode axis is a voxel axis: its scanner direction needs
    // the grid, so it is set here, once the series is read.
    if let Some((p, _)) = &pe {
        cfg.registration = RegistrationConfig::eddy(p.world(&dwi.series.grid).into());
    }
    let progress = |p: &Progress| reporter.update(p.stage, p.done, p.total);
    let mut result =
        pool.install(|| estimate(&dwi.series, table, &mask, &cfg, &progress, &timeline))?;
    let repol = args.repol && !args.no_resample;
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
                table.dw_indices(thr).len(),
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

    // ---- outputs: all atomic; summary.json last, as the mark of a complete run ----
    let t = timeline.mark();
    reporter.message("writing outputs");
    out.begin_writing(!args.no_resample)?;
    let grid = &dwi.series.grid;
    // Parameters, FD and RMS describe the head motion; the matrices are the full maps.
    let head = result.head_motion();
    let rows = report::motion_rows(&head, &table.bvals, &grid.center_world());
    let eddy_params = result.eddy.as_ref().map(|(_, p)| p.as_slice());
    out.write_text(
        "motion.tsv",
        &report::motion_tsv_eddy(&rows, &result.transforms, eddy_params),
    )?;
    transforms::write_itk(&out.path("transforms.tfm"), &result.transforms)?;
    transforms::write_x5(&out.path("transforms.x5"), &result.transforms, Some(grid))?;
    out.create_xfm_dir()?;
    for (k, m) in result.transforms.iter().enumerate() {
        transforms::write_itk(&out.xfm_path(k, "tfm"), std::slice::from_ref(m))?;
        // The same transform as ANTs writes it: antspyx inverts only files named .mat.
        transforms::write_ants_mat(&out.xfm_path(k, "mat"), m)?;
    }
    out.remove_surplus_transforms(result.transforms.len())?;
    nifti::write_mask(&out.path("brainmask.nii.gz"), &mask, Some(&dwi.meta))?;
    // gradients follow the head, not the eddy-current field (as FSL eddy rotates them)
    let rotated = report::rotate_bvecs(table, &head);
    if !args.no_resample {
        timeline.record("write outputs", t);
        let t_corrected = timeline.mark();
        reporter.message("resampling and writing the corrected series");
        // --repol: outlier slices replaced by their prediction before the one resampling.
        let base = match (&result.drift, args.drift_correct) {
            (Some(d), true) => std::borrow::Cow::Owned(drift_corrected(&dwi.series, d)),
            _ => std::borrow::Cow::Borrowed(&dwi.series),
        };
        let source = match (&result.outliers, repol) {
            (Some(o), true) => o.cleaned(&base),
            _ => std::borrow::Cow::Borrowed(&*base),
        };
        // Volume by volume: the corrected series is never held whole.
        let volume = |k: usize| {
            realign_volume(
                &source,
                k,
                &result.transforms[k],
                Interpolation::CubicBSpline,
            )
        };
        pool.install(|| {
            nifti::write_series_streamed(
                &out.path("dwi_corrected.nii.gz"),
                grid,
                source.n_volumes,
                Some(&dwi.meta),
                &volume,
            )
        })?;
        let (bval, bvec) = report::fsl_text(&rotated, grid);
        out.write_text("dwi_corrected.bval", &bval)?;
        out.write_text("dwi_corrected.bvec", &bvec)?;
        out.write_text("dwi_corrected.b", &report::mrtrix_text(&rotated))?;
        timeline.record("corrected series (resample + write)", t_corrected);
    }
    let t = timeline.mark();
    let outlier_maps = result
        .outliers
        .as_ref()
        .map(|o| eddy_outlier_maps(&o.table, dwi.series.n_volumes));
    if let Some(o) = &result.outliers {
        out.write_text("outliers.tsv", &o.table.tsv())?;
    }
    if let Some(plan) = &eddy_plan {
        let ec_terms = match (&result.eddy, plan.readout_time) {
            (Some((model, params)), Some(trt)) => Some(crate::io::eddy_files::ec_columns(
                params,
                model,
                grid,
                plan.pe_axis,
                trt,
            )),
            _ => None,
        };
        super::dropin::write_eddy(
            plan,
            &head,
            grid,
            &mask,
            &rotated,
            ec_terms.as_deref(),
            outlier_maps.as_ref(),
        )?;
    }
    if let Some(plan) = &bids_plan {
        super::dropin::write_bids(plan, out.dir(), &args.dwi)?;
    }
    let report_options = report::ReportOptions {
        title: &super::dropin::series_title(&args.dwi),
        date: Some(super::dropin::report_date()),
        fd_threshold: Some(args.fd_threshold),
        outliers_per_volume: result.outliers.as_ref().map(|o| {
            (0..dwi.series.n_volumes)
                .map(|k| o.table.slices_of(k).len())
                .collect()
        }),
        eddy_terms: result.eddy.as_ref().map(|(_, params)| {
            params
                .iter()
                .map(|p| [p.constant, p.gradient.x, p.gradient.y, p.gradient.z])
                .collect()
        }),
    };
    out.write_text(
        "report.svg",
        &report::svg_report_with(&report_options, &rows),
    )?;
    timeline.record("write outputs", t);
    let stages = timeline.records();
    reporter.message("time per stage: wall seconds, CPU seconds, peak memory at its end");
    for s in &stages {
        reporter.message(&format!(
            "  {:<44} {:>7.1} s {:>7} {:>8}",
            s.stage,
            s.seconds,
            s.cpu_seconds.map_or("-".into(), |c| format!("{c:.1} s")),
            s.peak_memory_mb
                .map_or("-".into(), |m| format!("{m:.0} MB"))
        ));
    }

    let mut summary = build_summary(
        args,
        &cfg,
        pe.as_ref().map(|(p, src)| (p, src.as_str(), p.world(grid))),
        &dwi.gradients.source,
        &mask,
        &rows,
        &result,
        stages,
        started,
    );
    // Every warning of the run, the gradient reader's first.
    // (the loader's: gradients, then data cleaning)
    warnings.splice(0..0, dwi.warnings.iter().cloned());
    summary.warnings = warnings;
    summary.outliers = result
        .outliers
        .as_ref()
        .map(|o| outlier_summary(&o.table, repol));
    summary.drift = result.drift.as_ref().map(|d| {
        json!({
            "order": d.order,
            "coefficients": d.coefficients,
            "percent_over_series": d.percent,
            "residual_percent": d.residual_percent,
            "corrected": args.drift_correct,
            "scale": d.scale,
        })
    });
    out.write_text(SUMMARY, &summary.to_json())?;
    reporter.message(&format!(
        "done in {:.1}s: median FD {:.3} mm, outputs in {}",
        started.elapsed().as_secs_f64(),
        crate::stats::median(&mut rows.iter().map(|r| r.fd).collect::<Vec<_>>()),
        args.out.display()
    ));
    out.finish()
}

/// The volume × slice outlier flags and scores as eddy's outlier maps.
fn eddy_outlier_maps(t: &OutlierTable, n_volumes: usize) -> SliceOutliers {
    SliceOutliers {
        flags: (0..n_volumes)
            .map(|v| (0..t.n_slices).map(|s| t.is_outlier(v, s)).collect())
            .collect(),
        n_stdev: t.scores.clone(),
        n_sqr_stdev: None,
    }
}

/// summary.json's `outliers`: counts, the settings and every outlier slice.
fn outlier_summary(t: &OutlierTable, replaced: bool) -> serde_json::Value {
    let mut vols: Vec<usize> = t.rows.iter().map(|r| r.volume).collect();
    vols.dedup();
    json!({
        "slices": t.rows.len(),
        "volumes": vols.len(),
        "broken_volumes": t.broken_volumes,
        "threshold_sd": t.threshold,
        "slice_axis": t.slice_axis,
        "replaced_in_corrected_series": replaced,
        "rows": t.rows,
    })
}

/// Everything a pipeline or a reviewer needs to know about the run, as summary.json.
#[allow(clippy::too_many_arguments)]
fn build_summary(
    args: &EstimateArgs,
    cfg: &EstimateConfig,
    pe: Option<(
        &crate::io::bids::PhaseEncoding,
        &str,
        nalgebra::Vector3<f64>,
    )>,
    gradient_source: &str,
    mask: &Mask,
    rows: &[report::MotionRow],
    result: &MotionEstimate,
    stages: Vec<StageRecord>,
    started: Instant,
) -> report::Summary {
    let g = &args.gradients;
    let mut inputs = vec![("dwi", Some(args.dwi.clone())), ("mask", args.mask.clone())];
    inputs.extend([
        ("bval", g.fsl_files().map(|(b, _)| b.clone())),
        ("bvec", g.fsl_files().map(|(_, v)| v.clone())),
        ("grad", g.grad.clone()),
    ]);
    let inputs = inputs
        .into_iter()
        .filter_map(|(role, p)| p.map(|p| (role, p)))
        .filter_map(|(role, p)| {
            let bytes = std::fs::read(&p).ok()?;
            Some(report::InputFile {
                role: role.into(),
                path: p.display().to_string(),
                bytes: bytes.len() as u64,
                fnv1a64: format!("{:016x}", report::fnv1a64(&bytes)),
            })
        })
        .collect();
    let parameters: BTreeMap<String, serde_json::Value> = [
        ("model", json!(format!("{:?}", args.model).to_lowercase())),
        (
            "fit_method",
            json!(format!("{:?}", args.fit_method).to_lowercase()),
        ),
        (
            "transform",
            json!(format!("{:?}", args.transform).to_lowercase()),
        ),
        ("order", json!(format!("{:?}", args.order).to_lowercase())),
        ("passes", json!(cfg.passes)),
        ("seed", json!(args.seed)),
        ("threads", json!(args.threads)),
        ("b0_threshold", json!(g.b0_threshold)),
        ("ignore_b0", json!(g.ignore_b0)),
        ("resample", json!(!args.no_resample)),
        ("fd_threshold_mm", json!(args.fd_threshold)),
        ("outlier_threshold", json!(args.outlier_threshold.abs())),
        ("repol", json!(args.repol)),
    ]
    .into_iter()
    .chain(pe.into_iter().flat_map(|(p, source, world)| {
        [
            ("pe_dir", json!(p.label())),
            ("pe_dir_source", json!(source)),
            ("pe_axis_world", json!([world.x, world.y, world.z])),
        ]
    }))
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    report::Summary {
        tool: "nifreeze-rs".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        command_line: std::env::args().collect(),
        parameters,
        inputs,
        gradient_source: gradient_source.into(),
        reference_frame:
            "median of the realigned b=0 volumes (the b=0 median of the original data, refined); \
            transforms map reference RAS points to volume RAS points"
                .into(),
        mask_voxels: mask.count(),
        mask_source: match &args.mask {
            Some(p) => format!("given: {}", p.display()),
            None => "computed (median-Otsu on the b=0 median)".into(),
        },
        volumes: rows.to_vec(),
        registration: result
            .diagnostics
            .iter()
            .enumerate()
            .map(|(index, d)| report::VolumeFit {
                index,
                correlation: d.correlation,
                iterations: d.iterations,
                replaced_fraction: d.replaced_fraction,
            })
            .collect(),
        motion: report::MotionStats::from_rows(rows),
        timings: stages
            .into_iter()
            .map(|s| report::StageTime {
                stage: s.stage,
                seconds: s.seconds,
                cpu_seconds: s.cpu_seconds,
                peak_memory_mb: s.peak_memory_mb,
            })
            .collect(),
        total_seconds: started.elapsed().as_secs_f64(),
        peak_memory_mb: report::peak_memory_mb(),
        warnings: Vec::new(),
        outliers: None,
        drift: None,
    }
}
