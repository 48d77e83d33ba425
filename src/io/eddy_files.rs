//! The files FSL eddy writes that downstream tools read (QSIPrep, eddy_quad, MRtrix's
//! dwifslpreproc): `.eddy_parameters`, `.eddy_movement_rms`, `.eddy_restricted_movement_rms`,
//! `.eddy_rotated_bvecs`, and with a slice-outlier table `.eddy_outlier_map`,
//! `.eddy_outlier_n_stdev_map` (and `.eddy_outlier_n_sqr_stdev_map`).
//!
//! eddy's conventions (read in FSL's eddy and topup sources; ../shared/notes/eddy.md):
//! - Coordinates are FSL's "scaled mm": voxel index × voxel size, with the first axis reversed
//!   (`(nx − 1 − i)·dx`) when the image affine has a positive determinant. Axes follow the
//!   voxel axes, so they are not RAS: on a LAS image eddy's +x is our −x.
//! - A volume's movement matrix M (eddy's `ForwardMovementMatrix`) maps a point of the model
//!   (reference) to where it is in the scan — eddy resamples a corrected scan as
//!   `scan(M·x)` — so M = S·T·S⁻¹ with T our RAS reference→volume matrix and S the
//!   world → scaled-mm map.
//! - Parameters (`TOPUP::MovePar2Matrix`): `tx ty tz rx ry rz`, translations in mm and
//!   rotations in radians; M = [R, (I − R)·c + t] with c = ((n − 1)·voxel size)/2 the grid
//!   centre and R = Rx·Ry·Rz built by FSL's `make_rot`, whose rotation about an axis by θ is
//!   the right-handed rotation by −θ. Equivalently Rᵀ = Rz(rz)·Ry(ry)·Rx(rx) in the usual
//!   right-handed convention, and the angles come back by FSL's `rotmat2euler`.
//! - Files are written like `MISCMATHS::write_ascii_matrix`: fixed point, 10 decimals, each
//!   number followed by two spaces, one row per line.
//!
//! Everything here except [`write_all`] is pure: values in, text out.

use crate::image::{Grid, Mask};
use crate::io::atomic::write_text;
use crate::io::gradients::{ras_to_fsl, GradientTable};
use crate::report::polar_rotation;
use crate::{Error, Result};
use nalgebra::{Matrix3, Matrix4, Vector3, Vector4};
use std::path::{Path, PathBuf};

/// Eddy-current columns written after the six movement columns when none are estimated: eddy's
/// default (`--flm quadratic`) layout — 3 linear, 6 quadratic terms and the field offset —
/// all zero, so that readers expecting eddy's usual 16 columns find them.
pub const DEFAULT_EC_COLUMNS: usize = 10;

/// Header line of `.eddy_outlier_map`, as eddy writes it (readers skip one line).
pub const OUTLIER_MAP_HEADER: &str =
    "One row per scan, one column per slice. Outlier: 1, Non-outlier: 0";

/// Header line of the two standard-deviation maps, as eddy writes it.
pub const STDEV_MAP_HEADER: &str = "One row per scan, one column per slice. b0s set to zero";

/// Per volume × slice outlier judgement (slices along the third voxel axis, as eddy's).
#[derive(Clone, Debug, Default)]
pub struct SliceOutliers {
    /// `flags[volume][slice]`: the slice was judged an outlier.
    pub flags: Vec<Vec<bool>>,
    /// Standard deviations by which the slice's mean difference to the prediction is off.
    pub n_stdev: Vec<Vec<f64>>,
    /// The same for the root of the mean squared difference, when computed.
    pub n_sqr_stdev: Option<Vec<Vec<f64>>>,
}

/// What the eddy-style files are made of. `transforms` are RAS reference→volume matrices (one
/// per volume); `ec_terms`, when given, one row of eddy-current terms per volume (written
/// after the six movement columns, in the caller's units and order); `outliers`, when given,
/// adds the outlier maps.
pub struct EddyInputs<'a> {
    pub transforms: &'a [Matrix4<f64>],
    pub grid: &'a Grid,
    pub mask: &'a Mask,
    /// Gradient table of the corrected series (b-vectors already rotated, scanner RAS).
    pub rotated: &'a GradientTable,
    /// Voxel axis (0, 1, 2 = i, j, k) of the phase encoding: the translation left out of the
    /// restricted RMS.
    pub pe_axis: usize,
    pub ec_terms: Option<&'a [Vec<f64>]>,
    pub outliers: Option<&'a SliceOutliers>,
}

/// World (RAS mm) → FSL scaled-mm coordinates of `grid`: S = V·A⁻¹, V the voxel → scaled-mm
/// map (voxel sizes, first axis reversed when det(A) > 0).
pub fn fsl_from_world(grid: &Grid) -> Matrix4<f64> {
    let z = grid.voxel_sizes();
    let mut v = Matrix4::from_diagonal(&Vector4::new(z[0], z[1], z[2], 1.0));
    if grid.affine.fixed_view::<3, 3>(0, 0).determinant() > 0.0 {
        v[(0, 0)] = -z[0];
        v[(0, 3)] = (grid.dims[0] as f64 - 1.0) * z[0];
    }
    v * grid.affine.try_inverse().unwrap_or_else(Matrix4::identity)
}

/// Centre of the grid in scaled mm, ((n − 1)·voxel size)/2: eddy's centre of rotation.
pub fn fsl_centre(grid: &Grid) -> Vector3<f64> {
    let z = grid.voxel_sizes();
    Vector3::from_fn(|i, _| (grid.dims[i] as f64 - 1.0) * z[i] / 2.0)
}

/// eddy's movement matrix (scaled mm, model → scan) of a RAS reference → volume matrix.
pub fn fsl_movement_matrix(t: &Matrix4<f64>, grid: &Grid) -> Matrix4<f64> {
    let s = fsl_from_world(grid);
    s * t * s.try_inverse().unwrap_or_else(Matrix4::identity)
}

/// FSL's `rotmat2euler` (R = Rx·Ry·Rz with FSL's left-handed elementary rotations).
fn fsl_euler(r: &Matrix3<f64>) -> [f64; 3] {
    let cy = (r[(0, 0)] * r[(0, 0)] + r[(0, 1)] * r[(0, 1)]).sqrt();
    if cy < 1e-9 {
        // gimbal lock: as FSL, everything in rx
        [(-r[(2, 1)]).atan2(r[(1, 1)]), (-r[(0, 2)]).atan2(0.0), 0.0]
    } else {
        [
            r[(1, 2)].atan2(r[(2, 2)]),
            (-r[(0, 2)]).atan2(cy),
            r[(0, 1)].atan2(r[(0, 0)]),
        ]
    }
}

/// eddy's six movement parameters `tx ty tz` (mm) `rx ry rz` (rad) of a RAS reference → volume
/// matrix (`TOPUP::Matrix2MovePar` of [`fsl_movement_matrix`]). For an affine the rotation is
/// the polar factor; the translations are what is left after rotating about the centre.
pub fn movement_parameters(t: &Matrix4<f64>, grid: &Grid) -> [f64; 6] {
    let m = fsl_movement_matrix(t, grid);
    let r = polar_rotation(&m.fixed_view::<3, 3>(0, 0).into_owned());
    let c = fsl_centre(grid);
    let tr = Vector3::new(m[(0, 3)], m[(1, 3)], m[(2, 3)]) - (Matrix3::identity() - r) * c;
    let a = fsl_euler(&r);
    [tr.x, tr.y, tr.z, a[0], a[1], a[2]]
}

/// The movement matrix (scaled mm) of eddy parameters: M = [R, (I − R)·c + t].
pub fn matrix_from_parameters(p: &[f64; 6], grid: &Grid) -> Matrix4<f64> {
    // FSL's elementary rotations by θ are the right-handed ones by −θ.
    let rx = nalgebra::Rotation3::from_axis_angle(&Vector3::x_axis(), -p[3]);
    let ry = nalgebra::Rotation3::from_axis_angle(&Vector3::y_axis(), -p[4]);
    let rz = nalgebra::Rotation3::from_axis_angle(&Vector3::z_axis(), -p[5]);
    let r = (rx * ry * rz).into_inner();
    let c = fsl_centre(grid);
    let t = (Matrix3::identity() - r) * c + Vector3::new(p[0], p[1], p[2]);
    let mut m = Matrix4::identity();
    m.fixed_view_mut::<3, 3>(0, 0).copy_from(&r);
    m.fixed_view_mut::<3, 1>(0, 3).copy_from(&t);
    m
}

/// A number as `write_ascii_matrix` prints it: fixed point, 10 decimals (no negative zero).
fn fmt10(x: f64) -> String {
    let s = format!("{:.10}", x + 0.0);
    if s.trim_start_matches('-')
        .bytes()
        .all(|b| b == b'0' || b == b'.')
    {
        s.trim_start_matches('-').to_string()
    } else {
        s
    }
}

/// Rows as eddy writes them: every number followed by two spaces, one row per line.
fn matrix_text<I: IntoIterator<Item = Vec<f64>>>(rows: I) -> String {
    let mut s = String::new();
    for row in rows {
        for v in row {
            s.push_str(&fmt10(v));
            s.push_str("  ");
        }
        s.push('\n');
    }
    s
}

/// The eddy-current columns of `.eddy_parameters` for the linear model of
/// [`crate::registration::eddy`], in eddy's quadratic layout (`--flm quadratic`, its default):
/// three linear terms (Hz/mm), six quadratic terms (zero here) and the field offset (Hz).
///
/// eddy's field is in Hz, a polynomial in the scan's *voxel* axes about the grid centre:
/// `f(i,j,k) = c + l₁·dx·(i − (nx−1)/2) + l₂·dy·(j − (ny−1)/2) + l₃·dz·(k − (nz−1)/2)` (FSL's
/// `LinearScanECModel::ECField`; no first-axis flip, unlike the movement parameters), and it
/// displaces the scan by `f · readout_time` voxels along the acquisition's phase-encode vector.
/// Ours displaces scanner point `s` by `d(s) = c₀ + gᵀ(s − centre)` mm along the (signed)
/// phase-encode direction, so `f(v) = d(A·v) / (readout_time · voxel size along PE)`: the sign
/// of the phase encoding cancels (it flips both the direction and eddy's PE vector).
pub fn ec_columns(
    params: &[crate::registration::eddy::EddyParams],
    model: &crate::registration::eddy::EddyModel,
    grid: &Grid,
    pe_axis: usize,
    readout_time: f64,
) -> Vec<Vec<f64>> {
    let a = grid.affine.fixed_view::<3, 3>(0, 0).into_owned();
    let z = grid.voxel_sizes();
    let hz_per_mm = 1.0 / (readout_time * z[pe_axis]);
    let centre_vox = Vector3::new(
        (grid.dims[0] as f64 - 1.0) / 2.0,
        (grid.dims[1] as f64 - 1.0) / 2.0,
        (grid.dims[2] as f64 - 1.0) / 2.0,
    );
    let centre_world = grid.world([centre_vox.x, centre_vox.y, centre_vox.z]);
    params
        .iter()
        .map(|p| {
            let mut row = vec![0.0; DEFAULT_EC_COLUMNS];
            for (ax, col) in row.iter_mut().take(3).enumerate() {
                // displacement per voxel step along axis `ax`, per mm of that step
                *col = p.gradient.dot(&a.column(ax)) / z[ax] * hz_per_mm;
            }
            row[DEFAULT_EC_COLUMNS - 1] =
                (p.constant + p.gradient.dot(&(centre_world - model.centre))) * hz_per_mm;
            row
        })
        .collect()
}

/// `.eddy_parameters`: per volume the six movement parameters, then its eddy-current terms
/// (`ec_terms`, one row per volume, all rows the same length) or [`DEFAULT_EC_COLUMNS`] zeros.
pub fn parameters_text(
    transforms: &[Matrix4<f64>],
    grid: &Grid,
    ec_terms: Option<&[Vec<f64>]>,
) -> Result<String> {
    if let Some(ec) = ec_terms {
        if ec.len() != transforms.len() || ec.iter().any(|r| r.len() != ec[0].len()) {
            return Err(Error::runtime(format!(
                "eddy parameters: {} eddy-current rows of unequal or wrong length for {} volumes",
                ec.len(),
                transforms.len()
            )));
        }
    }
    Ok(matrix_text(transforms.iter().enumerate().map(|(k, t)| {
        let mut row = movement_parameters(t, grid).to_vec();
        match ec_terms {
            Some(ec) => row.extend_from_slice(&ec[k]),
            None => row.extend(std::iter::repeat_n(0.0, DEFAULT_EC_COLUMNS)),
        }
        row
    })))
}

/// Mask voxel centres in scaled mm.
fn mask_points(mask: &Mask) -> Vec<Vector3<f64>> {
    let z = mask.grid.voxel_sizes();
    let flip = mask.grid.affine.fixed_view::<3, 3>(0, 0).determinant() > 0.0;
    let nx = mask.grid.dims[0] as f64;
    mask.indices()
        .into_iter()
        .map(|idx| {
            let [i, j, k] = mask.grid.ijk(idx);
            let i = if flip { nx - 1.0 - i as f64 } else { i as f64 };
            Vector3::new(i * z[0], j as f64 * z[1], k as f64 * z[2])
        })
        .collect()
}

/// RMS over `points` of the displacements x ↦ M_k·x − x: per volume [against the reference,
/// against the previous volume (0 for the first)] — eddy's `.eddy_movement_rms` columns.
pub fn movement_rms(matrices: &[Matrix4<f64>], points: &[Vector3<f64>]) -> Vec<[f64; 2]> {
    let n = points.len().max(1) as f64;
    let displacement = |m: &Matrix4<f64>, p: &Vector3<f64>| -> Vector3<f64> {
        m.fixed_view::<3, 3>(0, 0) * p + m.fixed_view::<3, 1>(0, 3) - p
    };
    (0..matrices.len())
        .map(|k| {
            let mut abs = 0.0;
            let mut rel = 0.0;
            for p in points {
                let d = displacement(&matrices[k], p);
                abs += d.norm_squared();
                if k > 0 {
                    rel += (d - displacement(&matrices[k - 1], p)).norm_squared();
                }
            }
            [(abs / n).sqrt(), (rel / n).sqrt()]
        })
        .collect()
}

/// `.eddy_movement_rms` and `.eddy_restricted_movement_rms` texts. The restricted one leaves
/// out the translation along the phase-encode axis `pe_axis` (confounded with the field
/// offset of the eddy-current model), as eddy does.
pub fn rms_texts(
    transforms: &[Matrix4<f64>],
    grid: &Grid,
    mask: &Mask,
    pe_axis: usize,
) -> (String, String) {
    let points = mask_points(mask);
    let full: Vec<Matrix4<f64>> = transforms
        .iter()
        .map(|t| fsl_movement_matrix(t, grid))
        .collect();
    let restricted: Vec<Matrix4<f64>> = transforms
        .iter()
        .map(|t| {
            let mut p = movement_parameters(t, grid);
            p[pe_axis.min(2)] = 0.0;
            matrix_from_parameters(&p, grid)
        })
        .collect();
    let text =
        |m: &[Matrix4<f64>]| matrix_text(movement_rms(m, &points).into_iter().map(|r| r.to_vec()));
    (text(&full), text(&restricted))
}

/// `.eddy_rotated_bvecs`: three rows (x, y, z) of FSL b-vectors of the corrected series (image
/// axes, x flipped when det > 0), unit length, b=0 rows zero.
pub fn rotated_bvecs_text(rotated: &GradientTable, grid: &Grid) -> String {
    let vecs: Vec<[f64; 3]> = rotated
        .bvecs
        .iter()
        .map(|g| {
            let b = Vector3::from(ras_to_fsl(grid, *g));
            let n = b.norm();
            if n < 1e-9 {
                [0.0; 3]
            } else {
                [b.x / n, b.y / n, b.z / n]
            }
        })
        .collect();
    matrix_text((0..3).map(|a| vecs.iter().map(|v| v[a]).collect()))
}

/// `.eddy_outlier_map`: eddy's header line, then per volume one 0/1 per slice.
pub fn outlier_map_text(outliers: &SliceOutliers) -> String {
    let mut s = format!("{OUTLIER_MAP_HEADER}\n");
    for row in &outliers.flags {
        for &f in row {
            s.push_str(if f { "1 " } else { "0 " });
        }
        s.push('\n');
    }
    s
}

/// `.eddy_outlier_n_stdev_map` / `_n_sqr_stdev_map`: header, then per volume one number per slice.
pub fn stdev_map_text(values: &[Vec<f64>]) -> String {
    let mut s = format!("{STDEV_MAP_HEADER}\n");
    for row in values {
        for &v in row {
            s.push_str(&format!("{} ", v + 0.0));
        }
        s.push('\n');
    }
    s
}

/// The file names under `prefix` (`PREFIX.eddy_parameters` …) that [`write_all`] writes for
/// these inputs, in writing order.
pub fn file_names(prefix: &Path, with_outliers: bool, with_sqr: bool) -> Vec<PathBuf> {
    let mut suffixes = vec![
        "eddy_parameters",
        "eddy_movement_rms",
        "eddy_restricted_movement_rms",
        "eddy_rotated_bvecs",
    ];
    if with_outliers {
        suffixes.extend(["eddy_outlier_map", "eddy_outlier_n_stdev_map"]);
        if with_sqr {
            suffixes.push("eddy_outlier_n_sqr_stdev_map");
        }
    }
    let base = prefix.as_os_str().to_string_lossy().into_owned();
    suffixes
        .into_iter()
        .map(|s| PathBuf::from(format!("{base}.{s}")))
        .collect()
}

/// Write every eddy-style file under `prefix`, each atomically. Returns the paths written.
pub fn write_all(prefix: &Path, inputs: &EddyInputs) -> Result<Vec<PathBuf>> {
    let sqr = inputs.outliers.and_then(|o| o.n_sqr_stdev.as_ref());
    let names = file_names(prefix, inputs.outliers.is_some(), sqr.is_some());
    let (rms, restricted) = rms_texts(inputs.transforms, inputs.grid, inputs.mask, inputs.pe_axis);
    let mut texts = vec![
        parameters_text(inputs.transforms, inputs.grid, inputs.ec_terms)?,
        rms,
        restricted,
        rotated_bvecs_text(inputs.rotated, inputs.grid),
    ];
    if let Some(o) = inputs.outliers {
        texts.push(outlier_map_text(o));
        texts.push(stdev_map_text(&o.n_stdev));
        if let Some(s) = sqr {
            texts.push(stdev_map_text(s));
        }
    }
    for (path, text) in names.iter().zip(&texts) {
        write_text(path, text)?;
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(flip: bool) -> Grid {
        let mut a = Matrix4::from_diagonal(&Vector4::new(2.0, 2.0, 2.5, 1.0));
        if flip {
            a[(0, 0)] = -2.0;
        }
        a[(0, 3)] = -40.0;
        a[(1, 3)] = -50.0;
        a[(2, 3)] = -30.0;
        Grid::new([40, 48, 30], a)
    }

    /// The columns, evaluated with eddy's own field formula and readout time, give back the
    /// displacement our model applies (computed independently, from the composed full map), at
    /// voxels spread over an oblique, flipped grid, for both signs of the phase encoding.
    #[test]
    fn ec_columns_reproduce_the_displacement_through_eddys_field_formula() {
        use crate::registration::eddy::{EddyModel, EddyParams};
        let mut g = grid(true);
        let rot = nalgebra::Rotation3::from_euler_angles(0.2, -0.1, 0.15);
        let lin = rot.matrix() * g.affine.fixed_view::<3, 3>(0, 0);
        g.affine.fixed_view_mut::<3, 3>(0, 0).copy_from(&lin);
        let g = Grid::new(g.dims, g.affine);
        let trt = 0.047;
        for reversed in [false, true] {
            let pe = crate::io::bids::PhaseEncoding { axis: 1, reversed };
            let e = pe.world(&g);
            let model = EddyModel::new(e, Vector3::new(3.0, -12.0, 7.0));
            let p = EddyParams {
                rigid: Matrix4::identity(),
                constant: 0.42,
                gradient: Vector3::new(0.004, -0.011, 0.007),
            };
            let cols = &ec_columns(&[p], &model, &g, 1, trt)[0];
            assert_eq!(cols.len(), 10);
            assert!(cols[3..9].iter().all(|&c| c == 0.0));
            let f = model.compose(&p);
            let z = g.voxel_sizes();
            for v in [
                [0.0, 0.0, 0.0],
                [39.0, 5.0, 12.0],
                [7.0, 47.0, 29.0],
                [20.0, 24.0, 3.0],
            ] {
                let s = g.world(v);
                let y = f.transform_point(&nalgebra::Point3::from(s)).coords;
                let ours = e.dot(&(y - s));
                // eddy: f(i,j,k) = c + Σ l_a·d_a·(v_a − (n_a−1)/2); shift = f·trt voxels along PE
                let mut field = cols[9];
                for ax in 0..3 {
                    field += cols[ax] * z[ax] * (v[ax] - (g.dims[ax] as f64 - 1.0) / 2.0);
                }
                let eddy_mm = field * trt * z[1];
                assert!(
                    (ours - eddy_mm).abs() < 1e-9,
                    "{ours} vs {eddy_mm} at {v:?}"
                );
            }
        }
    }

    #[test]
    fn parameters_round_trip_through_fsl_matrices() {
        for flip in [false, true] {
            let g = grid(flip);
            let p = [0.7, -1.2, 0.4, 0.03, -0.02, 0.05];
            let m = matrix_from_parameters(&p, &g);
            let s = fsl_from_world(&g);
            let t = s.try_inverse().unwrap() * m * s;
            let q = movement_parameters(&t, &g);
            for i in 0..6 {
                assert!((p[i] - q[i]).abs() < 1e-12, "{p:?} vs {q:?}");
            }
        }
    }

    #[test]
    fn numbers_are_printed_like_write_ascii_matrix() {
        assert_eq!(fmt10(-0.0), "0.0000000000");
        assert_eq!(fmt10(-1e-13), "0.0000000000");
        assert_eq!(fmt10(0.25), "0.2500000000");
        assert_eq!(
            matrix_text([vec![1.0, -2.0]]),
            "1.0000000000  -2.0000000000  \n"
        );
    }
}
