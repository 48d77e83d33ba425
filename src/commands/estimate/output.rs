//! Where `estimate` writes, and the writing: the `--out` folder ([`OutputFolder`]: path checks
//! against the inputs, the lock, stale-file clean-up), the drop-in outputs planned with it
//! (`--eddy-outputs`, `--bids-derivatives`), and every file of a finished run.

use super::args::EstimateArgs;
use crate::cli::TransformChoice;
use crate::commands::dropin::{BidsPlan, EddyPlan};
use crate::commands::input::{phase_encoding, DwiInput};
use crate::commands::progress::Reporter;
use nifreeze::estimate::{drift_corrected, realign_volume, EstimateConfig, MotionEstimate};
use nifreeze::image::Mask;
use nifreeze::io::bids::PhaseEncoding;
use nifreeze::io::eddy_files::SliceOutliers;
use nifreeze::io::gradients;
use nifreeze::io::output::{OutputFolder, SUMMARY};
use nifreeze::io::{nifti, transforms};
use nifreeze::outliers::OutlierTable;
use nifreeze::registration::Interpolation;
use nifreeze::report;
use nifreeze::timing::{StageRecord, Timeline};
use nifreeze::Result;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// The outputs of one `estimate` run, settled before any work: the locked folder, the
/// phase-encode direction of `--transform eddy` (with where it came from) and the drop-in
/// outputs' plans.
pub struct EstimateOutputs {
    folder: OutputFolder,
    pub pe: Option<(PhaseEncoding, String)>,
    eddy: Option<EddyPlan>,
    bids: Option<BidsPlan>,
}

/// What a finished run writes.
pub struct Finished<'a> {
    pub args: &'a EstimateArgs,
    pub cfg: &'a EstimateConfig,
    pub dwi: &'a DwiInput,
    pub mask: &'a Mask,
    pub result: &'a MotionEstimate,
    /// Every warning of the run (the loader's first), for summary.json.
    pub warnings: Vec<String>,
    /// Outlier slices replaced by their prediction in the corrected series (`--repol`).
    pub repol: bool,
    pub started: Instant,
}

impl EstimateOutputs {
    /// Check every output path against the inputs, lock the folder, refuse an earlier complete
    /// run (unless `--force`), and plan the drop-in outputs; see [`OutputFolder::prepare`].
    pub fn prepare(args: &EstimateArgs) -> Result<Self> {
        let mut inputs: Vec<(&str, std::path::PathBuf)> =
            vec![("the DWI series", args.dwi.clone())];
        inputs.extend(gradients::input_files(&args.dwi, &args.gradients));
        if let Some(m) = &args.mask {
            inputs.push(("--mask", m.clone()));
        }
        let inputs: Vec<(&str, &Path)> = inputs.iter().map(|(r, p)| (*r, p.as_path())).collect();
        let folder = OutputFolder::prepare(&args.out, &inputs, args.force)?;
        let pe = match args.transform {
            TransformChoice::Eddy => Some(phase_encoding(args.pe_dir, &args.dwi)?),
            _ => None,
        };
        let eddy =
            crate::commands::dropin::plan_eddy(args, &folder, pe.as_ref().map(|(p, _)| p.axis))?;
        let bids = crate::commands::dropin::plan_bids(args, &folder)?;
        Ok(EstimateOutputs {
            folder,
            pe,
            eddy,
            bids,
        })
    }

    /// Write every output (each atomically; summary.json last, as the mark of a complete run)
    /// and release the folder.
    pub fn write(
        mut self,
        run: Finished,
        timeline: &Timeline,
        pool: &rayon::ThreadPool,
        reporter: &Reporter,
    ) -> Result<()> {
        let t = timeline.mark();
        reporter.message("writing outputs");
        self.folder.begin_writing(!run.args.no_resample)?;
        // Parameters, FD and RMS describe the head motion; the matrices are the full maps.
        let head = run.result.head_motion();
        let grid = &run.dwi.series.grid;
        let rows = report::motion_rows(&head, &run.dwi.gradients.table.bvals, &grid.center_world());
        self.write_transforms(&run, &rows)?;
        // gradients follow the head, not the eddy-current field (as FSL eddy rotates them)
        let rotated = report::rotate_bvecs(&run.dwi.gradients.table, &head);
        if !run.args.no_resample {
            timeline.record("write outputs", t);
            timeline.time("corrected series (resample + write)", || {
                self.write_corrected(&run, &rotated, pool, reporter)
            })?;
        }
        let t = if run.args.no_resample {
            t
        } else {
            timeline.mark()
        };
        self.write_dropins(&run, &head, &rotated)?;
        self.write_report(&run, &rows)?;
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
        let summary = self.summary(&run, &rows, stages);
        self.folder.write_text(SUMMARY, &summary.to_json())?;
        reporter.message(&format!(
            "done in {:.1}s: median FD {:.3} mm, outputs in {}",
            run.started.elapsed().as_secs_f64(),
            nifreeze::stats::median(&mut rows.iter().map(|r| r.fd).collect::<Vec<_>>()),
            run.args.out.display()
        ));
        self.folder.finish()
    }

    /// motion.tsv, the transforms (all volumes, and one file per volume) and the mask.
    fn write_transforms(&mut self, run: &Finished, rows: &[report::MotionRow]) -> Result<()> {
        let (out, result) = (&mut self.folder, run.result);
        let grid = &run.dwi.series.grid;
        let eddy_params = result.eddy.as_ref().map(|(_, p)| p.as_slice());
        out.write_text(
            "motion.tsv",
            &report::motion_tsv_eddy(rows, &result.transforms, eddy_params),
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
        nifti::write_mask(&out.path("brainmask.nii.gz"), run.mask, Some(&run.dwi.meta))
    }

    /// dwi_corrected.nii.gz (resampled once, volume by volume) and its gradient tables.
    fn write_corrected(
        &self,
        run: &Finished,
        rotated: &gradients::GradientTable,
        pool: &rayon::ThreadPool,
        reporter: &Reporter,
    ) -> Result<()> {
        let (out, result, series) = (&self.folder, run.result, &run.dwi.series);
        let grid = &series.grid;
        reporter.message("resampling and writing the corrected series");
        // --repol: outlier slices replaced by their prediction before the one resampling.
        let base = match (&result.drift, run.args.drift_correct) {
            (Some(d), true) => std::borrow::Cow::Owned(drift_corrected(series, d)),
            _ => std::borrow::Cow::Borrowed(series),
        };
        let source = match (&result.outliers, run.repol) {
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
                Some(&run.dwi.meta),
                &volume,
            )
        })?;
        let (bval, bvec) = report::fsl_text(rotated, grid);
        out.write_text("dwi_corrected.bval", &bval)?;
        out.write_text("dwi_corrected.bvec", &bvec)?;
        out.write_text("dwi_corrected.b", &report::mrtrix_text(rotated))
    }

    /// outliers.tsv, and the drop-in outputs (`--eddy-outputs`, `--bids-derivatives`).
    fn write_dropins(
        &self,
        run: &Finished,
        head: &[nalgebra::Matrix4<f64>],
        rotated: &gradients::GradientTable,
    ) -> Result<()> {
        let (result, grid) = (run.result, &run.dwi.series.grid);
        let outlier_maps = result
            .outliers
            .as_ref()
            .map(|o| eddy_outlier_maps(&o.table, run.dwi.series.n_volumes));
        if let Some(o) = &result.outliers {
            self.folder.write_text("outliers.tsv", &o.table.tsv())?;
        }
        if let Some(plan) = &self.eddy {
            let ec_terms = match (&result.eddy, plan.readout_time) {
                (Some((model, params)), Some(trt)) => Some(nifreeze::io::eddy_files::ec_columns(
                    params,
                    model,
                    grid,
                    plan.pe_axis,
                    trt,
                )),
                _ => None,
            };
            crate::commands::dropin::write_eddy(
                plan,
                head,
                grid,
                run.mask,
                rotated,
                ec_terms.as_deref(),
                outlier_maps.as_ref(),
            )?;
        }
        if let Some(plan) = &self.bids {
            crate::commands::dropin::write_bids(plan, self.folder.dir(), &run.args.dwi)?;
        }
        Ok(())
    }

    /// report.svg.
    fn write_report(&self, run: &Finished, rows: &[report::MotionRow]) -> Result<()> {
        let (args, result, n) = (run.args, run.result, run.dwi.series.n_volumes);
        let report_options = report::ReportOptions {
            title: &crate::commands::dropin::series_title(&args.dwi),
            date: Some(crate::commands::dropin::report_date()),
            fd_threshold: Some(args.fd_threshold),
            outliers_per_volume: result
                .outliers
                .as_ref()
                .map(|o| (0..n).map(|k| o.table.slices_of(k).len()).collect()),
            eddy_terms: result.eddy.as_ref().map(|(_, params)| {
                params
                    .iter()
                    .map(|p| [p.constant, p.gradient.x, p.gradient.y, p.gradient.z])
                    .collect()
            }),
        };
        self.folder.write_text(
            "report.svg",
            &report::svg_report_with(&report_options, rows),
        )
    }

    /// summary.json's content.
    fn summary(
        &self,
        run: &Finished,
        rows: &[report::MotionRow],
        stages: Vec<StageRecord>,
    ) -> report::Summary {
        let grid = &run.dwi.series.grid;
        let result = run.result;
        let mut summary = build_summary(
            run.args,
            run.cfg,
            self.pe
                .as_ref()
                .map(|(p, src)| (p, src.as_str(), p.world(grid))),
            &run.dwi.gradients.source,
            run.mask,
            rows,
            result,
            stages,
            run.started,
        );
        summary.warnings = run.warnings.clone();
        summary.outliers = result
            .outliers
            .as_ref()
            .map(|o| outlier_summary(&o.table, run.repol));
        summary.drift = result.drift.as_ref().map(|d| {
            json!({
                "order": d.order,
                "coefficients": d.coefficients,
                "percent_over_series": d.percent,
                "residual_percent": d.residual_percent,
                "corrected": run.args.drift_correct,
                "scale": d.scale,
            })
        });
        summary
    }
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
        &nifreeze::io::bids::PhaseEncoding,
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
        ("folds", json!(format!("{:?}", args.folds).to_lowercase())),
        (
            "transform",
            json!(format!("{:?}", args.transform).to_lowercase()),
        ),
        ("order", json!(format!("{:?}", args.order).to_lowercase())),
        ("passes", json!(cfg.passes)),
        ("seed", json!(args.seed)),
        ("threads", json!(args.threads.n)),
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
