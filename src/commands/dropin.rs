//! Outputs for existing pipelines (`estimate --eddy-outputs`): where they go and what they are
//! made of. Planned before any work (paths checked against the inputs), written after the
//! native outputs.

use crate::cli::EstimateArgs;
use crate::image::{Grid, Mask};
use crate::io::bids;
use crate::io::eddy_files::{self, EddyInputs, SliceOutliers};
use crate::io::gradients::GradientTable;
use crate::io::output::OutputFolder;
use crate::{Error, Result};
use nalgebra::Matrix4;
use std::path::PathBuf;

/// Where the eddy-style files go and the phase-encode axis of their restricted RMS.
pub struct EddyPlan {
    pub prefix: PathBuf,
    pub pe_axis: usize,
}

/// Resolve `--eddy-outputs`: a relative prefix lies in the output folder; its folder must
/// exist and no file written may be an input. The phase-encode axis comes from the series'
/// JSON sidecar (`PhaseEncodingDirection`); without one, `j` is assumed with a warning.
pub fn plan_eddy(args: &EstimateArgs, out: &OutputFolder) -> Result<Option<EddyPlan>> {
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
    let pe_axis = match bids::phase_encoding_axis(&args.dwi) {
        Some(a) => a,
        None => {
            eprintln!(
                "nifreeze-rs: warning: no PhaseEncodingDirection in {}; \
                 .eddy_restricted_movement_rms leaves out translation along j",
                bids::sidecar_json(&args.dwi).display()
            );
            1
        }
    };
    Ok(Some(EddyPlan { prefix, pe_axis }))
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
