//! Loading what every command starts from: a DWI series with its gradient table.

use crate::cli::GradientArgs;
use crate::image::Series;
use crate::io::bids::{read_phase_encoding, sidecar_json, PhaseEncoding};
use crate::io::gradients::{self, LoadedGradients};
use crate::io::nifti::{self, NiftiMeta};
use crate::{Error, Result};
use std::path::Path;

pub struct DwiInput {
    pub series: Series,
    pub meta: NiftiMeta,
    pub gradients: LoadedGradients,
}

/// Read a 4-D DWI series and its gradients; warnings go to stderr.
pub fn load_dwi(path: &Path, args: &GradientArgs) -> Result<DwiInput> {
    let (series, meta) = nifti::read_series(path)?;
    if meta.dims.len() < 4 || series.n_volumes < 2 {
        return Err(Error::input(format!(
            "{} is a 3-D image; a 4-D diffusion series (one volume per gradient) is expected",
            path.display()
        )));
    }
    if !(args.b0_threshold.is_finite() && args.b0_threshold >= 0.0) {
        return Err(Error::input("--b0-threshold must be a non-negative number"));
    }
    let gradients = gradients::load(path, args, &series.grid, series.n_volumes)?;
    for w in &gradients.warnings {
        eprintln!("nifreeze-rs: warning: {w}");
    }
    Ok(DwiInput {
        series,
        meta,
        gradients,
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
    eprintln!(
        "nifreeze-rs: warning: no phase-encode direction given and no PhaseEncodingDirection in {}: \
         assuming j (give --pe-dir if the series was phase-encoded along another axis)",
        sidecar_json(dwi).display()
    );
    Ok((
        PhaseEncoding {
            axis: 1,
            reversed: false,
        },
        "default (j)".into(),
    ))
}
