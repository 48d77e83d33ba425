//! `nifreeze-rs simulate`: write a simulated DWI series with known motion to a folder, in the
//! layout of the shared phantoms (dwi.nii.gz int16, dwi.bval/.bvec FSL, dwi.b MRtrix,
//! brainmask.nii.gz, truth.tsv, phantom.json, optionally clean.nii.gz). With artefacts
//! (`--ec`, `--dropout`, `--drift`) also artefacts.json (the schema of
//! ../shared/phantoms/bench_artefacts) and truth_rigid.tsv; truth.tsv then holds the full
//! per-volume maps (head motion and eddy-current distortion together).

use nalgebra::Matrix4;
use nifreeze::image::Series;
use nifreeze::io::atomic::{create_dir, write_text};
use nifreeze::io::gradients::ras_to_fsl;
use nifreeze::io::nifti::{write_mask, write_series, write_series_as, DataType};
use nifreeze::simulate::{protocol::parse_shells, simulate, PhaseEncoding, SimParams, Simulation};
use nifreeze::{Error, Result};
use serde_json::json;
use std::fmt::Write as _;
use std::time::Instant;

use crate::cli::exit_codes;
use clap::Args;
use std::path::PathBuf;

// ---- the command's options ----

pub const HELP: &str = concat!(
    "Examples:
  nifreeze-rs simulate --out phantom --seed 7
  nifreeze-rs simulate --out ph --shells 1000:30 --b0 3 --voxel-size 2 --max-rot 6 --clean
  nifreeze-rs simulate --out ph --ec 1 --pe-dir j- --dropout 0.1 --drift 5 --clean

Writes dwi.nii.gz (int16), dwi.bval/.bvec (FSL), dwi.b (MRtrix), brainmask.nii.gz,
truth.tsv (per volume: the true RAS reference->volume matrix m00..m33 and its parameters),
phantom.json, and clean.nii.gz with --clean. The same --seed gives the same bytes.
With --ec/--dropout/--drift, truth.tsv holds the full map (head motion, then the eddy-current
distortion), truth_rigid.tsv the head motion alone, and artefacts.json (the schema of
../shared/phantoms/bench_artefacts) the dropout slices, the drift and the rigid truth.

",
    exit_codes!()
);

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Output folder (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Random seed: the same seed writes the same bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Shells as b:count pairs.
    #[arg(long, default_value = "1000:32,2000:32")]
    pub shells: String,
    /// Number of b=0 volumes.
    #[arg(long, default_value_t = 6)]
    pub b0: usize,
    /// Voxel size in mm.
    #[arg(long, default_value_t = 2.5)]
    pub voxel_size: f64,
    /// Signal-to-noise ratio of the b=0 white-matter signal.
    #[arg(long, default_value_t = 25.0)]
    pub snr: f64,
    /// Largest rotation about any axis, degrees.
    #[arg(long, default_value_t = 3.0)]
    pub max_rot: f64,
    /// Largest translation along any axis, mm.
    #[arg(long, default_value_t = 3.0)]
    pub max_trans: f64,
    /// Tilt the acquisition grid by this many degrees (oblique slices; tests unseen geometry).
    #[arg(
        long,
        value_name = "DEG",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub oblique: f64,
    /// Store the image with the x axis flipped (det < 0, LAS-like, as many scanners export).
    #[arg(long)]
    pub flip_x: bool,
    /// Also write clean.nii.gz: the same volumes unmoved and noise-free (float32), without
    /// eddy currents, dropouts or drift.
    #[arg(long)]
    pub clean: bool,
    /// Eddy-current strength S: each diffusion-weighted volume is displaced along the
    /// phase-encode axis by a field linear in scanner position, proportional to b and mixed by
    /// the gradient direction; at S = 1 and b = 1000 the field displaces by about 1.4 mm per
    /// 100 mm from the isocentre (RMS per axis) plus a ~0.4 mm shift, which gives 0.6-0.8 mm
    /// median displacement over the brain on a 1000/2000 protocol (like
    /// ../shared/phantoms/bench_artefacts: 0.67 mm). Displacements scale linearly with S. 0 = none.
    #[arg(long, value_name = "S", default_value_t = 0.0)]
    pub ec: f64,
    /// Phase-encode direction (BIDS PhaseEncodingDirection): i, i-, j, j-, k or k-.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "j",
        allow_hyphen_values = true
    )]
    pub pe_dir: String,
    /// Fraction of the diffusion-weighted volumes with signal dropouts: 1-3 interleaved
    /// slices (third voxel axis) keep 5-40 % of their signal. Listed in artefacts.json.
    #[arg(long, value_name = "FRAC", default_value_t = 0.0)]
    pub dropout: f64,
    /// Signal drift over acquisition order, per cent lost by the last volume (linear plus
    /// quadratic decline). Listed per volume in artefacts.json.
    #[arg(long, value_name = "PCT", default_value_t = 0.0)]
    pub drift: f64,
    /// Coil shading amplitude (log scale): the series is multiplied by exp(S·f), f a smooth
    /// field of unit scale fixed in the scanner (the head moves inside it); 0.12 gives about
    /// ±12 %. 0 = no shading.
    #[arg(long, value_name = "S", default_value_t = 0.12)]
    pub shading: f64,
}

/// `-0` prints as `0`: outputs stay byte-identical whatever the sign of a zero.
fn z(v: f64) -> f64 {
    v + 0.0
}

pub fn run(args: &SimulateArgs) -> Result<()> {
    let start = Instant::now();
    let shells = parse_shells(&args.shells).map_err(|e| Error::input(format!("--shells: {e}")))?;
    let pe = PhaseEncoding::parse(&args.pe_dir).ok_or_else(|| {
        Error::input(format!(
            "--pe-dir `{}` is not a phase-encode direction: use i, i-, j, j-, k or k-",
            args.pe_dir
        ))
    })?;
    let params = SimParams {
        seed: args.seed,
        shells: shells.clone(),
        n_b0: args.b0,
        voxel_size: args.voxel_size,
        snr: args.snr,
        max_rot: args.max_rot,
        max_trans: args.max_trans,
        oblique: args.oblique,
        flip_x: args.flip_x,
        clean: args.clean,
        ec: args.ec,
        pe,
        dropout: args.dropout,
        drift: args.drift,
        shading: args.shading,
    };
    let sim = simulate(&params)?;
    let simulated = start.elapsed().as_secs_f64();
    create_dir(&args.out)?;
    let out = |name: &str| args.out.join(name);

    let series = Series::new(sim.grid.clone(), sim.n_volumes, sim.data.clone());
    write_series_as(&out("dwi.nii.gz"), &series, None, DataType::I16)?;
    write_mask(&out("brainmask.nii.gz"), &sim.mask, None)?;
    if let Some(clean) = &sim.clean {
        let c = Series::new(sim.grid.clone(), sim.n_volumes, clean.clone());
        write_series(&out("clean.nii.gz"), &c, None)?;
    }
    write_text(&out("dwi.bval"), &bval_text(&sim))?;
    write_text(&out("dwi.bvec"), &bvec_text(&sim))?;
    write_text(&out("dwi.b"), &mrtrix_text(&sim))?;
    let artefacts = args.ec > 0.0 || args.dropout > 0.0 || args.drift > 0.0;
    let rigid: Vec<Matrix4<f64>> = sim.motions.iter().map(|m| m.matrix).collect();
    write_text(&out("truth.tsv"), &truth_text(&sim, &sim.full_truth()))?;
    if artefacts {
        write_text(&out("truth_rigid.tsv"), &truth_text(&sim, &rigid))?;
        write_text(&out("artefacts.json"), &artefacts_json(&sim, &pe))?;
    } else {
        for stale in ["truth_rigid.tsv", "artefacts.json"] {
            nifreeze::io::atomic::remove_stale(&out(stale))?;
        }
    }
    let shells_s: Vec<String> = shells.iter().map(|(b, n)| format!("{b}:{n}")).collect();
    let max_rot = sim
        .motions
        .iter()
        .flat_map(|m| m.params[3..].iter())
        .fold(0f64, |a, v| a.max(v.abs()));
    let max_tr = sim
        .motions
        .iter()
        .flat_map(|m| m.params[..3].iter())
        .fold(0f64, |a, v| a.max(v.abs()));
    let d = sim.grid.dims;
    let affine: Vec<Vec<f64>> = (0..4)
        .map(|r| (0..4).map(|c| sim.grid.affine[(r, c)]).collect())
        .collect();
    let meta = json!({
        "generator": format!("nifreeze-rs {} simulate", env!("CARGO_PKG_VERSION")),
        "seed": args.seed,
        "voxel_size": args.voxel_size,
        "shells": shells_s.join(","),
        "n_b0": args.b0,
        "snr": args.snr,
        "noise_sigma": sim.sigma,
        "max_rot": args.max_rot,
        "max_trans": args.max_trans,
        "oblique": args.oblique,
        "flip_x": args.flip_x,
        "dtype": "int16",
        "write_clean": args.clean,
        "ec": args.ec,
        "pe_dir": pe.name(),
        "dropout": args.dropout,
        "drift": args.drift,
        "shading": args.shading,
        "shape": [d[0], d[1], d[2], sim.n_volumes],
        "affine": affine,
        "brain_mask_voxels": sim.mask.count(),
        "center_of_rotation_ras": [sim.centre.x, sim.centre.y, sim.centre.z],
        "max_abs_rot_deg": max_rot,
        "max_abs_trans_mm": max_tr,
        "convention": "T_k maps reference-head RAS points to volume-k RAS points: moved_k(T_k x) = clean_k(x)",
        "anatomy": "nifreeze-rs tissue template derived from the MNI ICBM152 2009 nonlinear-symmetric tissue maps (Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute, McGill University), per-seed pose/scale/warp",
    });
    let text = serde_json::to_string_pretty(&meta).expect("JSON of plain values") + "\n";
    write_text(&out("phantom.json"), &text)?;
    super::console::stderr_line(&format!(
        "simulate: {}x{}x{}x{} at {} mm, {} brain voxels, motion up to {:.2} deg / {:.2} mm -> {} (simulated in {:.1} s, written in {:.1} s)",
        d[0],
        d[1],
        d[2],
        sim.n_volumes,
        args.voxel_size,
        sim.mask.count(),
        max_rot,
        max_tr,
        args.out.display(),
        simulated,
        start.elapsed().as_secs_f64() - simulated
    ));
    Ok(())
}

fn bval_text(sim: &Simulation) -> String {
    let v: Vec<String> = sim
        .gradients
        .bvals
        .iter()
        .map(|b| format!("{}", b.round() as i64))
        .collect();
    v.join(" ") + "\n"
}

/// FSL b-vectors: image axes, x flipped when det(affine) > 0 (see conventions).
fn bvec_text(sim: &Simulation) -> String {
    let rows: Vec<[f64; 3]> = sim
        .gradients
        .bvecs
        .iter()
        .map(|&g| ras_to_fsl(&sim.grid, g))
        .collect();
    let mut s = String::new();
    for a in 0..3 {
        let line: Vec<String> = rows.iter().map(|r| format!("{:.8}", z(r[a]))).collect();
        s += &line.join(" ");
        s.push('\n');
    }
    s
}

/// MRtrix b-table: `x y z b` per volume, scanner RAS.
fn mrtrix_text(sim: &Simulation) -> String {
    let mut s = String::new();
    for (g, b) in sim.gradients.bvecs.iter().zip(&sim.gradients.bvals) {
        let _ = writeln!(
            s,
            "{:.8} {:.8} {:.8} {}",
            z(g[0]),
            z(g[1]),
            z(g[2]),
            b.round() as i64
        );
    }
    s
}

/// artefacts.json with the keys of ../shared/phantoms/bench_artefacts (pe_axis_world,
/// dropouts: volume -> [[slice, remaining fraction], ...], drift, rigid_truth row-major 4×4
/// per volume, note) plus the phase-encode name and the eddy-current coefficients.
fn artefacts_json(sim: &Simulation, pe: &PhaseEncoding) -> String {
    let pe_world = pe.world(&sim.grid.affine);
    let dropouts: serde_json::Map<String, serde_json::Value> = sim
        .dropouts
        .iter()
        .map(|(v, sl)| {
            let rows: Vec<serde_json::Value> = sl.iter().map(|&(s, f)| json!([s, f])).collect();
            (v.to_string(), serde_json::Value::Array(rows))
        })
        .collect();
    let flat = |m: &Matrix4<f64>| -> Vec<f64> { (0..16).map(|e| z(m[(e / 4, e % 4)])).collect() };
    let rigid: Vec<Vec<f64>> = sim.motions.iter().map(|m| flat(&m.matrix)).collect();
    let eddy = sim.eddy.as_ref().map(|e| {
        json!({
            "strength": e.strength,
            "field_gradients_per_gradient_axis_mm_per_mm_at_b1000": (0..3).map(|i| (0..3).map(|j| e.m[(i, j)]).collect::<Vec<_>>()).collect::<Vec<_>>(),
            "constant_mm_per_gradient_axis_at_b1000": [e.c.x, e.c.y, e.c.z],
            "isocentre_ras": [0.0, 0.0, 0.0],
            "distortion": sim.distortions.iter().map(flat).collect::<Vec<_>>(),
        })
    });
    let v = json!({
        "pe_axis_world": [z(pe_world.x), z(pe_world.y), z(pe_world.z)],
        "pe_dir": pe.name(),
        "dropouts": dropouts,
        "drift": sim.drift,
        "rigid_truth": rigid,
        "eddy_currents": eddy,
        "note": "truth.tsv matrices include the eddy-current affine (D_k T_k, D_k = the `distortion`                  matrices: physical scanner point -> acquired position); rigid_truth and                  truth_rigid.tsv hold T_k alone; dropout slices index the third voxel axis",
    });
    serde_json::to_string_pretty(&v).expect("JSON of plain values") + "\n"
}

/// truth.tsv in the format of the shared phantoms: the rigid parameters, then `matrices`
/// (the full maps, or the rigid ones for truth_rigid.tsv).
fn truth_text(sim: &Simulation, matrices: &[Matrix4<f64>]) -> String {
    let mut s = String::from("index\tbvalue\ttx\tty\ttz\trx\try\trz");
    for i in 0..4 {
        for j in 0..4 {
            let _ = write!(s, "\tm{i}{j}");
        }
    }
    s.push('\n');
    for (k, (m, full)) in sim.motions.iter().zip(matrices).enumerate() {
        let _ = write!(s, "{k}\t{}", sim.gradients.bvals[k].round() as i64);
        for p in m.params {
            let _ = write!(s, "\t{:.6}", z(p));
        }
        for i in 0..4 {
            for j in 0..4 {
                let _ = write!(s, "\t{}", z(full[(i, j)]));
            }
        }
        s.push('\n');
    }
    s
}
