use super::input::load_dwi;
use crate::cli::InfoArgs;
use crate::io::gradients::shells;
use crate::io::nifti::orientation_code;
use crate::Result;
use serde_json::json;

pub fn run(args: &InfoArgs) -> Result<()> {
    let dwi = load_dwi(&args.dwi, &args.gradients)?;
    let g = &dwi.series.grid;
    let table = &dwi.gradients.table;
    let thr = args.gradients.b0_threshold;
    let shells = shells(table, thr);
    let n_b0 = table.b0_indices(thr).len();
    let vs = g.voxel_sizes();
    let orient = orientation_code(&g.affine);
    if args.json {
        let v = json!({
            "file": args.dwi.display().to_string(),
            "dims": [g.dims[0], g.dims[1], g.dims[2], dwi.series.n_volumes],
            "voxel_size_mm": vs,
            "orientation": orient,
            "affine_source": dwi.meta.affine_source(),
            "datatype": dwi.meta.datatype.name(),
            "b0_threshold": thr,
            "b0_volumes": n_b0,
            "shells": shells.iter().map(|s| json!({"bvalue": s.bvalue.round(), "count": s.indices.len()})).collect::<Vec<_>>(),
            "gradients": dwi.gradients.source,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).expect("JSON of plain values")
        );
    } else {
        println!("file:        {}", args.dwi.display());
        println!(
            "dimensions:  {} x {} x {} x {}",
            g.dims[0], g.dims[1], g.dims[2], dwi.series.n_volumes
        );
        println!("voxel size:  {:.4} x {:.4} x {:.4} mm", vs[0], vs[1], vs[2]);
        println!("orientation: {orient} (from {})", dwi.meta.affine_source());
        println!("datatype:    {}", dwi.meta.datatype.name());
        println!("b=0 volumes: {n_b0} (b <= {thr})");
        for s in &shells {
            println!(
                "shell:       b={:.0} ({} volumes)",
                s.bvalue,
                s.indices.len()
            );
        }
        println!("gradients:   {}", dwi.gradients.source);
    }
    Ok(())
}
