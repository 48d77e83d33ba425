//! Accuracy of estimated per-volume transforms against a known truth, computed exactly as
//! `../shared/tools/score.py` does, so CI regression checks and the reference scorer agree.
//!
//! Error of volume k = mean over brain points x of |E_k x − T_k G x|, where G is one rigid
//! transform common to all volumes (Kabsch fit of T_k⁻¹ E_k x ≈ G x over all k and x): a
//! motion estimate's reference frame is arbitrary, so a constant offset is not an error.
//! Points are every 7th brain-mask voxel centre in C order (the order of numpy's argwhere
//! over an [i, j, k] array: k fastest).

use crate::image::Mask;
use crate::{Error, Result};
use nalgebra::{Matrix3, Matrix4, Vector3, Vector4};

/// Every 7th mask voxel centre (RAS mm), in numpy argwhere (C) order.
pub fn sample_points(mask: &Mask) -> Vec<Vector3<f64>> {
    let [nx, ny, nz] = mask.grid.dims;
    let mut pts = Vec::new();
    let mut n = 0usize;
    for i in 0..nx {
        for j in 0..ny {
            for k in 0..nz {
                if mask.data[mask.grid.index(i, j, k)] {
                    if n % 7 == 0 {
                        pts.push(mask.grid.world([i as f64, j as f64, k as f64]));
                    }
                    n += 1;
                }
            }
        }
    }
    pts
}

/// Parse a TSV (or CSV) with columns m00..m33 (found by header name) into 4×4 matrices.
/// `what` names the file in messages.
pub fn parse_matrices(text: &str, what: &str) -> Result<Vec<Matrix4<f64>>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines
        .next()
        .ok_or_else(|| Error::input(format!("{what} is empty: expected a header with m00..m33")))?;
    let sep = if header.contains('\t') { '\t' } else { ',' };
    let cols: Vec<&str> = header.split(sep).map(str::trim).collect();
    let mut idx = [0usize; 16];
    for r in 0..4 {
        for c in 0..4 {
            let name = format!("m{r}{c}");
            idx[4 * r + c] = cols.iter().position(|h| *h == name).ok_or_else(|| {
                Error::input(format!(
                    "{what} has no column `{name}`: expected a TSV with columns m00..m33 \
                     (RAS reference-to-moving matrices, like truth.tsv or motion.tsv)"
                ))
            })?;
        }
    }
    let mut out = Vec::new();
    for (row, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(sep).map(str::trim).collect();
        let mut m = Matrix4::zeros();
        for (e, &col) in idx.iter().enumerate() {
            let v: f64 = f
                .get(col)
                .and_then(|s| s.parse().ok())
                .filter(|v: &f64| v.is_finite())
                .ok_or_else(|| {
                    Error::input(format!(
                        "{what}, data row {}: column {} is missing or not a finite number",
                        row + 1,
                        cols[col]
                    ))
                })?;
            m[(e / 4, e % 4)] = v;
        }
        out.push(m);
    }
    if out.is_empty() {
        return Err(Error::input(format!("{what} has a header but no rows")));
    }
    Ok(out)
}

/// Scores, named like score.py's JSON.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Score {
    pub volumes: usize,
    pub points: usize,
    pub true_motion_mean_mm: f64,
    /// Per-volume mean aligned error (mm).
    pub per_volume_aligned_mean_mm: Vec<f64>,
    /// Per-volume mean raw error (no global frame removed).
    pub per_volume_raw_mean_mm: Vec<f64>,
    /// Per-volume mean true displacement.
    pub per_volume_true_motion_mm: Vec<f64>,
    pub aligned_median_mm: f64,
    pub aligned_p95_mm: f64,
    pub aligned_worst_volume_mm: f64,
    /// Largest single-point aligned error.
    pub aligned_max_mm: f64,
    pub raw_median_mm: f64,
    pub raw_max_mm: f64,
    pub global_offset_mm: f64,
}

fn apply(m: &Matrix4<f64>, x: &Vector3<f64>) -> Vector3<f64> {
    (m * Vector4::new(x.x, x.y, x.z, 1.0)).xyz()
}

/// Rigid G minimising Σ|G x − y|² (Kabsch with reflection guard, as score.py).
fn kabsch(x: &[Vector3<f64>], y: &[Vector3<f64>]) -> Matrix4<f64> {
    let n = x.len() as f64;
    let cx = x.iter().sum::<Vector3<f64>>() / n;
    let cy = y.iter().sum::<Vector3<f64>>() / n;
    let mut h = Matrix3::zeros();
    for (a, b) in x.iter().zip(y) {
        h += (a - cx) * (b - cy).transpose();
    }
    let svd = h.svd(true, true);
    let (u, vt) = (svd.u.expect("u requested"), svd.v_t.expect("v_t requested"));
    let d = (vt.transpose() * u.transpose()).determinant().signum();
    let r = vt.transpose() * Matrix3::from_diagonal(&Vector3::new(1.0, 1.0, d)) * u.transpose();
    let mut g = Matrix4::identity();
    g.fixed_view_mut::<3, 3>(0, 0).copy_from(&r);
    g.fixed_view_mut::<3, 1>(0, 3).copy_from(&(cy - r * cx));
    g
}

/// numpy.percentile with linear interpolation.
pub fn percentile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let pos = q / 100.0 * (s.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(s.len() - 1);
    s[lo] + (pos - lo as f64) * (s[hi] - s[lo])
}

pub fn score(
    truth: &[Matrix4<f64>],
    est: &[Matrix4<f64>],
    points: &[Vector3<f64>],
) -> Result<Score> {
    if truth.len() != est.len() {
        return Err(Error::input(format!(
            "the estimate has {} transforms but the truth has {}: they must describe the same volumes",
            est.len(),
            truth.len()
        )));
    }
    if points.is_empty() {
        return Err(Error::input(
            "the mask is empty: no brain points to displace",
        ));
    }
    let mut xs = Vec::with_capacity(points.len() * truth.len());
    let mut ys = Vec::with_capacity(points.len() * truth.len());
    for (t, e) in truth.iter().zip(est) {
        let ti = t
            .try_inverse()
            .ok_or_else(|| Error::input("a truth matrix is singular"))?;
        let m = ti * e;
        for x in points {
            xs.push(*x);
            ys.push(apply(&m, x));
        }
    }
    let g = kabsch(&xs, &ys);
    let np = points.len() as f64;
    // (A − B) x for homogeneous points: only the top three rows matter.
    let diff = |a: &Matrix4<f64>, b: &Matrix4<f64>| -> Matrix4<f64> { a - b };
    let lin = |d: &Matrix4<f64>, x: &Vector3<f64>| -> f64 {
        (d.fixed_view::<3, 3>(0, 0) * x + d.fixed_view::<3, 1>(0, 3)).norm()
    };
    let mut al = Vec::new();
    let mut raw = Vec::new();
    let mut mag = Vec::new();
    let mut worst_point: f64 = 0.0;
    let id = Matrix4::identity();
    for (t, e) in truth.iter().zip(est) {
        let da = diff(e, &(t * g));
        let dr = diff(e, t);
        let dm = diff(t, &id);
        let (mut sa, mut sr, mut sm) = (0.0, 0.0, 0.0);
        for x in points {
            let a = lin(&da, x);
            worst_point = worst_point.max(a);
            sa += a;
            sr += lin(&dr, x);
            sm += lin(&dm, x);
        }
        al.push(sa / np);
        raw.push(sr / np);
        mag.push(sm / np);
    }
    let dg = diff(&g, &id);
    let offset = points.iter().map(|x| lin(&dg, x)).sum::<f64>() / np;
    Ok(Score {
        volumes: truth.len(),
        points: points.len(),
        true_motion_mean_mm: mag.iter().sum::<f64>() / mag.len() as f64,
        aligned_median_mm: percentile(&al, 50.0),
        aligned_p95_mm: percentile(&al, 95.0),
        aligned_worst_volume_mm: al.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
        aligned_max_mm: worst_point,
        raw_median_mm: percentile(&raw, 50.0),
        raw_max_mm: raw.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
        global_offset_mm: offset,
        per_volume_aligned_mean_mm: al,
        per_volume_raw_mean_mm: raw,
        per_volume_true_motion_mm: mag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Grid;

    fn rigid(angle_deg: f64, t: [f64; 3]) -> Matrix4<f64> {
        let r = nalgebra::Rotation3::from_euler_angles(angle_deg.to_radians(), 0.0, 0.0);
        let mut m = Matrix4::identity();
        m.fixed_view_mut::<3, 3>(0, 0).copy_from(r.matrix());
        m.fixed_view_mut::<3, 1>(0, 3).copy_from(&Vector3::from(t));
        m
    }

    #[test]
    fn global_frame_is_not_an_error() {
        let grid = Grid::new([10, 10, 10], Matrix4::new_scaling(2.0));
        let mut data = vec![false; 1000];
        data[300..700].fill(true);
        let pts = sample_points(&Mask { grid, data });
        assert_eq!(pts.len(), 58); // ceil(400 / 7)
        let truth: Vec<_> = (0..5)
            .map(|k| rigid(k as f64, [k as f64 * 0.3, 0.0, 0.1]))
            .collect();
        let g = rigid(2.0, [1.0, -0.5, 0.2]);
        let est: Vec<_> = truth.iter().map(|t| t * g).collect();
        let s = score(&truth, &est, &pts).unwrap();
        assert!(s.aligned_worst_volume_mm < 1e-9, "{s:?}");
        assert!(s.raw_median_mm > 0.5);
        assert!(s.global_offset_mm > 0.5);
        assert!((percentile(&[1.0, 2.0, 3.0, 4.0], 50.0) - 2.5).abs() < 1e-15);
        assert!((percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 95.0) - 4.8).abs() < 1e-12);
    }

    #[test]
    fn parse_errors_are_input_errors() {
        assert!(matches!(
            parse_matrices("a\tb\n1\t2\n", "x.tsv"),
            Err(Error::Input(_))
        ));
        let hdr: Vec<String> = (0..16).map(|e| format!("m{}{}", e / 4, e % 4)).collect();
        let t = format!("{}\n{}\n", hdr.join("\t"), vec!["1"; 16].join("\t"));
        assert_eq!(parse_matrices(&t, "x").unwrap().len(), 1);
        let bad = format!("{}\n{}\tnan\n", hdr.join("\t"), vec!["1"; 15].join("\t"));
        assert!(matches!(parse_matrices(&bad, "x"), Err(Error::Input(_))));
    }
}
