//! Loading what every command starts from: a DWI series with its gradient table.

use super::console::warn;
use super::resources;
use crate::cli::GradientArgs;
use nifreeze::data_check;
use nifreeze::image::{Grid, Series};
use nifreeze::io::bids::{read_phase_encoding, sidecar_json, PhaseEncoding};
use nifreeze::io::gradients::{self, LoadedGradients};
use nifreeze::io::nifti::{self, NiftiMeta};
use nifreeze::{Error, Result};
use std::path::Path;

pub struct DwiInput {
    pub series: Series,
    pub meta: NiftiMeta,
    pub gradients: LoadedGradients,
    /// Every warning printed while loading (gradients, data cleaning), for summary.json.
    pub warnings: Vec<String>,
}

/// The header of a DWI series and its gradients, without reading the voxel data.
pub struct DwiHeader {
    pub grid: Grid,
    pub n_volumes: usize,
    pub meta: NiftiMeta,
    pub gradients: LoadedGradients,
}

fn check_4d(path: &Path, meta: &NiftiMeta, n_volumes: usize) -> Result<()> {
    if meta.dims.len() < 4 || n_volumes < 2 {
        return Err(Error::input(format!(
            "{} is a 3-D image; a 4-D diffusion series (one volume per gradient) is expected",
            path.display()
        )));
    }
    Ok(())
}

fn check_threshold(args: &GradientArgs) -> Result<()> {
    if !(args.b0_threshold.is_finite() && args.b0_threshold >= 0.0) {
        return Err(Error::input("--b0-threshold must be a non-negative number"));
    }
    Ok(())
}

/// Read the header and gradients of a 4-D DWI series (nothing of the voxel data is read:
/// `info` on a huge file costs nothing).
pub fn load_dwi_header(path: &Path, args: &GradientArgs) -> Result<DwiHeader> {
    let meta = nifti::read_meta(path)?;
    let (grid, n_volumes) = nifti::series_shape(path, &meta)?;
    check_4d(path, &meta, n_volumes)?;
    check_threshold(args)?;
    let gradients = gradients::load(path, args, &grid, n_volumes)?;
    for w in &gradients.warnings {
        warn(w);
    }
    Ok(DwiHeader {
        grid,
        n_volumes,
        meta,
        gradients,
    })
}

/// Read a 4-D DWI series and its gradients, and clean and check its voxel data
/// ([`data_check`]); warnings go to stderr and into [`DwiInput::warnings`]. `plan` is what
/// the command holds at once (its peak, measured: [`resources::MemoryPlan`]), `threads`
/// its workers, `cap` a memory limit the user set (`--max-memory`): a run that cannot fit is
/// refused before the data are read.
pub fn load_dwi(
    path: &Path,
    args: &GradientArgs,
    plan: resources::MemoryPlan,
    threads: usize,
    cap: Option<u64>,
) -> Result<DwiInput> {
    // header and gradients first: a wrong table is reported before the data are read
    let header = load_dwi_header(path, args)?;
    nifti::check_data_size(path)?;
    resources::check_memory(
        &format!("reading and processing {}", path.display()),
        nifti::series_f32_bytes(&header.meta),
        header.n_volumes,
        plan,
        threads,
        cap,
    )?;
    let (mut series, meta) = nifti::read_series(path)?;
    let gradients = header.gradients;
    let mut warnings = gradients.warnings.clone();
    let report = data_check::clean_series(&mut series);
    if let Some(w) = report.warning() {
        let w = format!("{}: {w}", path.display());
        warn(&w);
        warnings.push(w);
    }
    data_check::check_signal(
        &series,
        &report,
        &gradients.table.bvals,
        &path.display().to_string(),
    )
    .map_err(|e| match e {
        Error::Input(m) if meta.scl_slope.is_finite() && meta.scl_slope < 0.0 => {
            Error::input(format!("{m} (its scl_slope is {})", meta.scl_slope))
        }
        e => e,
    })?;
    Ok(DwiInput {
        series,
        meta,
        gradients,
        warnings,
    })
}

/// The phase-encode direction of `dwi`: the one given, else the BIDS sidecar's, else `j` with
/// a warning. Returns it with where it came from (for summary.json).
pub fn phase_encoding(given: Option<PhaseEncoding>, dwi: &Path) -> Result<(PhaseEncoding, String)> {
    if let Some(p) = given {
        return Ok((p, "--pe-dir".into()));
    }
    if let Some(p) = read_phase_encoding(dwi)? {
        return Ok((p, format!("sidecar {}", sidecar_json(dwi).display())));
    }
    warn(&format!(
        "no phase-encode direction given and no PhaseEncodingDirection in {}: \
         assuming j (give --pe-dir if the series was phase-encoded along another axis)",
        sidecar_json(dwi).display()
    ));
    Ok((
        PhaseEncoding {
            axis: 1,
            reversed: false,
        },
        "default (j)".into(),
    ))
}
