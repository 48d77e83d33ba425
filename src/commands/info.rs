//! `nifreeze-rs info`: describe a series from its header and gradients (no voxel data read).

use super::console::stdout_text;
use super::input::load_dwi_header;
use nifreeze::io::gradients::shells;
use nifreeze::io::nifti::orientation_code;
use nifreeze::Result;
use serde_json::json;
use std::fmt::Write;

use crate::cli::{exit_codes, gradients_help, GradientArgs};
use clap::Args;
use std::path::PathBuf;

// ---- the command's options ----

pub const HELP: &str = concat!(
    "Examples:
  nifreeze-rs info sub-01_dwi.nii.gz
  nifreeze-rs info dwi.nii.gz --bval dwi.bval --bvec dwi.bvec --json > dwi.json

",
    gradients_help!(),
    "\n\n",
    exit_codes!()
);

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// DWI series (.nii or .nii.gz).
    pub dwi: PathBuf,
    #[command(flatten)]
    pub gradients: GradientArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &InfoArgs) -> Result<()> {
    let dwi = load_dwi_header(&args.dwi, &args.gradients)?;
    nifreeze::io::nifti::verify_data(&args.dwi)?;
    let g = &dwi.grid;
    let table = &dwi.gradients.table;
    let thr = args.gradients.b0_threshold;
    let shells = shells(table, thr);
    let n_b0 = table.b0_indices(thr).len();
    let vs = g.voxel_sizes();
    let orient = orientation_code(&g.affine);
    let mut text = String::new();
    if args.json {
        let v = json!({
            "file": args.dwi.display().to_string(),
            "dims": [g.dims[0], g.dims[1], g.dims[2], dwi.n_volumes],
            "voxel_size_mm": vs,
            "orientation": orient,
            "affine_source": dwi.meta.affine_source(),
            "datatype": dwi.meta.datatype.name(),
            "b0_threshold": thr,
            "b0_volumes": n_b0,
            "shells": shells.iter().map(|s| json!({"bvalue": s.bvalue.round(), "count": s.indices.len()})).collect::<Vec<_>>(),
            "gradients": dwi.gradients.source,
        });
        text = serde_json::to_string_pretty(&v).expect("JSON of plain values") + "\n";
    } else {
        // writing into a String cannot fail
        let _ = writeln!(text, "file:        {}", args.dwi.display());
        let _ = writeln!(
            text,
            "dimensions:  {} x {} x {} x {}",
            g.dims[0], g.dims[1], g.dims[2], dwi.n_volumes
        );
        let _ = writeln!(
            text,
            "voxel size:  {:.4} x {:.4} x {:.4} mm",
            vs[0], vs[1], vs[2]
        );
        let _ = writeln!(
            text,
            "orientation: {orient} (from {})",
            dwi.meta.affine_source()
        );
        let _ = writeln!(text, "datatype:    {}", dwi.meta.datatype.name());
        let _ = writeln!(text, "b=0 volumes: {n_b0} (b <= {thr})");
        for s in &shells {
            let _ = writeln!(
                text,
                "shell:       b={:.0} ({} volumes)",
                s.bvalue,
                s.indices.len()
            );
        }
        let _ = writeln!(text, "gradients:   {}", dwi.gradients.source);
    }
    stdout_text(&text)
}
