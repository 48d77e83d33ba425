//! `nifreeze-rs estimate`: load, mask, run the loop, write every output atomically.

use super::input::load_dwi;
use super::progress::Reporter;
use crate::cli::EstimateArgs;
use crate::estimate::{estimate, median_volume, realign, EstimateConfig, MotionEstimate, Progress};
use crate::image::{Mask, Series};
use crate::io::gradients;
use crate::io::output::{OutputFolder, SUMMARY};
use crate::io::{nifti, transforms};
use crate::registration::Interpolation;
use crate::report;
use crate::{Error, Result};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

pub fn run(args: &EstimateArgs) -> Result<()> {
    let started = Instant::now();
    let reporter = Reporter::new(args.quiet);
    let mut stage_seconds: Vec<(String, f64)> = Vec::new();

    // Arguments are validated once, into the configuration; then every path clash, the lock
    // and an earlier complete run are settled; all before any work.
    let cfg = EstimateConfig::try_from(args)?;
    let mut inputs: Vec<(&str, std::path::PathBuf)> = vec![("the DWI series", args.dwi.clone())];
    inputs.extend(gradients::input_files(&args.dwi, &args.gradients));
    if let Some(m) = &args.mask {
        inputs.push(("--mask", m.clone()));
    }
    let inputs: Vec<(&str, &Path)> = inputs.iter().map(|(r, p)| (*r, p.as_path())).collect();
    let mut out = OutputFolder::prepare(&args.out, &inputs, args.force)?;
    let eddy_plan = super::dropin::plan_eddy(args, &out)?;

    let t = Instant::now();
    let dwi = load_dwi(&args.dwi, &args.gradients)?;
    let thr = args.gradients.b0_threshold;
    let table = &dwi.gradients.table;
    let mut warnings = cfg.check_gradients(table)?;
    for w in &warnings {
        eprintln!("nifreeze-rs: warning: {w}");
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

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()
        .map_err(|e| {
            Error::runtime(format!("cannot start {} worker threads: {e}", args.threads))
        })?;

    let mask = match &args.mask {
        Some(m) => nifti::read_mask(m, &dwi.series.grid)?,
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
    stage_seconds.push(("load".into(), t.elapsed().as_secs_f64()));

    let progress = |p: &Progress| reporter.update(p.stage, p.done, p.total);
    let result = pool.install(|| estimate(&dwi.series, table, &mask, &cfg, &progress))?;
    stage_seconds.extend(result.stage_seconds.iter().cloned());

    // ---- outputs: all atomic; summary.json last, as the mark of a complete run ----
    let t = Instant::now();
    reporter.message("writing outputs");
    out.begin_writing(!args.no_resample)?;
    let grid = &dwi.series.grid;
    let rows = report::motion_rows(&result.transforms, &table.bvals, &grid.center_world());
    out.write_text("motion.tsv", &report::motion_tsv(&rows, &result.transforms))?;
    transforms::write_itk(&out.path("transforms.tfm"), &result.transforms)?;
    transforms::write_x5(&out.path("transforms.x5"), &result.transforms, Some(grid))?;
    out.create_xfm_dir()?;
    for (k, m) in result.transforms.iter().enumerate() {
        transforms::write_itk(&out.xfm_path(k, "tfm"), std::slice::from_ref(m))?;
    }
    out.remove_surplus_transforms(result.transforms.len())?;
    nifti::write_mask(&out.path("brainmask.nii.gz"), &mask, Some(&dwi.meta))?;
    let rotated = report::rotate_bvecs(table, &result.transforms);
    if !args.no_resample {
        reporter.message("resampling and writing the corrected series");
        let corrected: Series =
            pool.install(|| realign(&dwi.series, &result.transforms, Interpolation::CubicBSpline));
        nifti::write_series(
            &out.path("dwi_corrected.nii.gz"),
            &corrected,
            Some(&dwi.meta),
        )?;
        let (bval, bvec) = report::fsl_text(&rotated, grid);
        out.write_text("dwi_corrected.bval", &bval)?;
        out.write_text("dwi_corrected.bvec", &bvec)?;
        out.write_text("dwi_corrected.b", &report::mrtrix_text(&rotated))?;
    }
    if let Some(plan) = &eddy_plan {
        super::dropin::write_eddy(plan, &result.transforms, grid, &mask, &rotated, None, None)?;
    }
    let title = args
        .dwi
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.write_text("report.svg", &report::svg_report(&title, &rows))?;
    stage_seconds.push(("write outputs".into(), t.elapsed().as_secs_f64()));

    let mut summary = build_summary(
        args,
        &cfg,
        &dwi.gradients.source,
        &mask,
        &rows,
        &result,
        stage_seconds,
        started,
    );
    // Every warning of the run, the gradient reader's first.
    warnings.splice(0..0, dwi.gradients.warnings.iter().cloned());
    summary.warnings = warnings;
    out.write_text(SUMMARY, &summary.to_json())?;
    reporter.message(&format!(
        "done in {:.1}s: median FD {:.3} mm, outputs in {}",
        started.elapsed().as_secs_f64(),
        median(rows.iter().map(|r| r.fd).collect()),
        args.out.display()
    ));
    out.finish()
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Everything a pipeline or a reviewer needs to know about the run, as summary.json.
#[allow(clippy::too_many_arguments)]
fn build_summary(
    args: &EstimateArgs,
    cfg: &EstimateConfig,
    gradient_source: &str,
    mask: &Mask,
    rows: &[report::MotionRow],
    result: &MotionEstimate,
    stage_seconds: Vec<(String, f64)>,
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
    ]
    .into_iter()
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
        timings: stage_seconds
            .into_iter()
            .map(|(stage, seconds)| report::StageTime { stage, seconds })
            .collect(),
        total_seconds: started.elapsed().as_secs_f64(),
        peak_memory_mb: report::peak_memory_mb(),
        warnings: Vec::new(),
    }
}
