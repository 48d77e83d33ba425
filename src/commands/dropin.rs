//! Outputs for existing pipelines (`estimate --eddy-outputs`): where they go and what they are
//! made of. Planned before any work (paths checked against the inputs), written after the
//! native outputs.

use super::estimate::args::EstimateArgs;
use nalgebra::Matrix4;
use nifreeze::image::{Grid, Mask};
use nifreeze::io::bids;
use nifreeze::io::eddy_files::{self, EddyInputs, SliceOutliers};
use nifreeze::io::gradients::GradientTable;
use nifreeze::io::output::OutputFolder;
use nifreeze::{Error, Result};
use std::path::PathBuf;

/// Where the eddy-style files go and the phase-encode axis of their restricted RMS.
pub struct EddyPlan {
    pub prefix: PathBuf,
    pub pe_axis: usize,
    /// Total readout time (s) with `--transform eddy`: converts the field to eddy's Hz.
    pub readout_time: Option<f64>,
}

/// Resolve `--eddy-outputs`: a relative prefix lies in the output folder; its folder must
/// exist and no file written may be an input. The phase-encode axis comes from the series'
/// JSON sidecar (`PhaseEncodingDirection`); without one, `j` is assumed with a warning.
/// `model_pe_axis` is the axis the eddy-current model already resolved (with its own warning),
/// when `--transform eddy`.
pub fn plan_eddy(
    args: &EstimateArgs,
    out: &OutputFolder,
    model_pe_axis: Option<usize>,
) -> Result<Option<EddyPlan>> {
    let Some(given) = &args.eddy_outputs else {
        return Ok(None);
    };
    let prefix = out.dir().join(given);
    let bad_name = prefix
        .file_name()
        .map(|n| n.to_string_lossy().is_empty())
        .unwrap_or(true)
        || given.as_os_str().to_string_lossy().ends_with('/');
    if bad_name {
        return Err(Error::input(format!(
            "--eddy-outputs {} must end in a file-name prefix (e.g. hmc/eddy gives hmc/eddy.eddy_parameters)",
            given.display()
        )));
    }
    let parent = prefix.parent().map(PathBuf::from).unwrap_or_default();
    if !parent.as_os_str().is_empty() && !parent.is_dir() {
        return Err(Error::input(format!(
            "--eddy-outputs: folder {} does not exist; create it or choose another prefix",
            parent.display()
        )));
    }
    for f in eddy_files::file_names(&prefix, true, true) {
        out.check_external(&f)?;
    }
    let pe_axis = match model_pe_axis
        .or(args.pe_dir.map(|p| p.axis))
        .or_else(|| bids::phase_encoding_axis(&args.dwi))
    {
        Some(a) => a,
        None => {
            super::console::warn(&format!(
                "no PhaseEncodingDirection in {}; \
                 .eddy_restricted_movement_rms leaves out translation along j",
                bids::sidecar_json(&args.dwi).display()
            ));
            1
        }
    };
    // eddy writes the eddy-current field in Hz: displacement / readout time. Refused up front
    // rather than written with a guessed time (a wrong scale would look like a real result).
    let readout_time = match args.transform {
        crate::cli::TransformChoice::Eddy => match args.readout_time {
            Some(t) => Some(t),
            None => Some(bids::read_total_readout_time(&args.dwi)?.ok_or_else(|| {
                Error::input(format!(
                    "--eddy-outputs with --transform eddy writes the eddy-current field in Hz, \
                     which needs the total readout time: none in {}; give --readout-time SECONDS",
                    bids::sidecar_json(&args.dwi).display()
                ))
            })?),
        },
        _ => None,
    };
    Ok(Some(EddyPlan {
        prefix,
        pe_axis,
        readout_time,
    }))
}

/// Write the eddy-style files. `ec_terms` (one row per volume) and `outliers` are passed on
/// when the run estimated them; without them the eddy-current columns are zero and the
/// outlier maps are not written.
#[allow(clippy::too_many_arguments)]
pub fn write_eddy(
    plan: &EddyPlan,
    transforms: &[Matrix4<f64>],
    grid: &Grid,
    mask: &Mask,
    rotated: &GradientTable,
    ec_terms: Option<&[Vec<f64>]>,
    outliers: Option<&SliceOutliers>,
) -> Result<Vec<PathBuf>> {
    eddy_files::write_all(
        &plan.prefix,
        &EddyInputs {
            transforms,
            grid,
            mask,
            rotated,
            pe_axis: plan.pe_axis,
            ec_terms,
            outliers,
        },
    )
}

/// Where `--bids-derivatives` writes, and under which names.
pub struct BidsPlan {
    pub root: PathBuf,
    pub entities: bids::Entities,
}

/// Resolve `--bids-derivatives DIR`: the series must have a BIDS name (its entities name the
/// outputs) and no file written may be an input.
pub fn plan_bids(args: &EstimateArgs, out: &OutputFolder) -> Result<Option<BidsPlan>> {
    let Some(root) = &args.bids_derivatives else {
        return Ok(None);
    };
    let entities = bids::Entities::parse(&args.dwi).map_err(|why| {
        Error::input(format!(
            "--bids-derivatives names its files after the input's BIDS entities: {why}; \
             rename the series (e.g. sub-01_ses-1_dwi.nii.gz) or drop --bids-derivatives"
        ))
    })?;
    let folder = entities.folder(root, "dwi");
    for (name, _) in bids::derivative_files(&entities) {
        out.check_external(&folder.join(name))?;
    }
    out.check_external(&root.join("dataset_description.json"))?;
    Ok(Some(BidsPlan {
        root: root.clone(),
        entities,
    }))
}

/// What each motion.tsv column holds, for the BIDS sidecar of `_desc-hmc_motion.tsv`.
fn motion_columns() -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    let mut col = |name: &str, desc: &str, units: Option<&str>| {
        let mut v = serde_json::json!({ "Description": desc });
        if let Some(u) = units {
            v["Units"] = u.into();
        }
        m.insert(name.to_string(), v);
    };
    col("index", "position of the volume in the 4-D series", None);
    col("bvalue", "b-value", Some("s/mm^2"));
    for a in ["x", "y", "z"] {
        col(
            &format!("t{a}"),
            &format!("translation of the volume centre along RAS {a}"),
            Some("mm"),
        );
        col(
            &format!("r{a}"),
            &format!("rotation about RAS {a} (R = Rz·Ry·Rx) about the volume centre"),
            Some("degree"),
        );
    }
    col(
        "fd",
        "framewise displacement (Power 2012, 50 mm head radius) from the previous volume",
        Some("mm"),
    );
    col(
        "rms_abs",
        "RMS displacement over an 80 mm sphere (Jenkinson) from the reference",
        Some("mm"),
    );
    col(
        "rms_rel",
        "RMS displacement over an 80 mm sphere (Jenkinson) from the previous volume",
        Some("mm"),
    );
    for r in 0..4 {
        for c in 0..4 {
            col(
                &format!("m{r}{c}"),
                "element of the 4x4 RAS matrix mapping reference points (mm) to volume points",
                None,
            );
        }
    }
    m
}

/// Write the BIDS derivatives: copies of the native outputs in `native` (the --out folder)
/// under BIDS names, their JSON sidecars, and dataset_description.json when the folder has
/// none (an existing one, e.g. shared by other subjects, is left as it is).
pub fn write_bids(plan: &BidsPlan, native: &std::path::Path, dwi: &std::path::Path) -> Result<()> {
    use nifreeze::io::atomic::{write_atomic, write_text};
    let folder = plan.entities.folder(&plan.root, "dwi");
    std::fs::create_dir_all(&folder)
        .map_err(|e| Error::runtime(format!("cannot create folder {}: {e}", folder.display())))?;
    let json = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    for (name, source) in bids::derivative_files(&plan.entities) {
        let path = folder.join(&name);
        match source {
            Some(src) => {
                let from = native.join(src);
                write_atomic(&path, |w| {
                    let mut f = std::fs::File::open(&from)?;
                    std::io::copy(&mut f, w).map(|_| ())
                })?;
            }
            None if name.ends_with("_dwi.json") => {
                // The source's own metadata (phase encoding, readout time …) stays true of
                // the corrected series; the fields below say what was done.
                let mut v: serde_json::Value = std::fs::read_to_string(bids::sidecar_json(dwi))
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .filter(|v: &serde_json::Value| v.is_object())
                    .unwrap_or_else(|| serde_json::json!({}));
                v["Description"] = "Head-motion corrected: every volume resampled once onto the \
                    b=0 reference (cubic B-spline); b-vectors rotated"
                    .into();
                v["SkullStripped"] = false.into();
                write_text(&path, &json(&v))?;
            }
            None => {
                let mut v = serde_json::Value::Object(motion_columns());
                v["Description"] = "Per-volume head motion estimated by nifreeze-rs".into();
                write_text(&path, &json(&v))?;
            }
        }
    }
    let description = plan.root.join("dataset_description.json");
    if !description.exists() {
        let v = serde_json::json!({
            "Name": "nifreeze-rs head-motion correction",
            "BIDSVersion": "1.10.0",
            "DatasetType": "derivative",
            "GeneratedBy": [{
                "Name": "nifreeze-rs",
                "Version": env!("CARGO_PKG_VERSION"),
                "Description": "leave-one-volume-out head-motion estimation for diffusion MRI"
            }]
        });
        write_text(&description, &json(&v))?;
    }
    Ok(())
}

/// The series' name for the report title: its file name without `.nii[.gz]`, after its
/// folder's name when the file name alone says little (no BIDS entity, e.g. `dwi`).
pub fn series_title(dwi: &std::path::Path) -> String {
    let stem = bids::series_stem(dwi);
    if stem.contains('-') {
        return stem;
    }
    match dwi
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().and_then(|d| d.file_name()).map(|n| n.to_owned()))
    {
        Some(dir) => format!("{}/{stem}", dir.to_string_lossy()),
        None => stem,
    }
}

/// The date shown in the report: today (UTC), or the day of `SOURCE_DATE_EPOCH` when set (the
/// reproducible-builds convention), so that reruns can give identical bytes.
pub fn report_date() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
    nifreeze::report::utc_date(secs)
}
