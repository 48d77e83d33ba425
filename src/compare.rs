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
                    if n.is_multiple_of(7) {
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

/// Slices at or below this remaining signal fraction must be found (issue 11's bar; every
/// dropout the simulators write is at 5–40 %).
pub const DROPOUT_MAX_FRACTION: f64 = 0.40;

/// Detection of dropout slices scored against the simulator's list.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DetectionScore {
    /// True dropout slices with remaining signal ≤ the fraction judged (the recall base).
    pub true_dropouts: usize,
    /// Of those, how many the outlier list reports.
    pub found: usize,
    /// Slices the outlier list reports.
    pub reported: usize,
    /// Reported slices that are true dropouts (any fraction).
    pub correct: usize,
    pub recall: f64,
    pub precision: f64,
    /// Missed (volume, slice, remaining fraction).
    pub missed: Vec<(usize, usize, f64)>,
    /// Reported slices that are not dropouts (volume, slice).
    pub false_positives: Vec<(usize, usize)>,
}

/// Score reported outlier slices (volume, slice) against the true dropouts (volume, slice,
/// remaining fraction). Recall counts dropouts with fraction ≤ `max_fraction`; precision
/// counts every reported slice that is a true dropout of any depth. An empty base scores 1.
pub fn score_detection(
    truth: &[(usize, usize, f64)],
    reported: &[(usize, usize)],
    max_fraction: f64,
) -> DetectionScore {
    let is_reported = |v: usize, s: usize| reported.contains(&(v, s));
    let judged: Vec<&(usize, usize, f64)> = truth.iter().filter(|d| d.2 <= max_fraction).collect();
    let missed: Vec<(usize, usize, f64)> = judged
        .iter()
        .filter(|d| !is_reported(d.0, d.1))
        .map(|d| **d)
        .collect();
    let found = judged.len() - missed.len();
    let false_positives: Vec<(usize, usize)> = reported
        .iter()
        .filter(|r| !truth.iter().any(|d| (d.0, d.1) == **r))
        .copied()
        .collect();
    let correct = reported.len() - false_positives.len();
    let ratio = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    DetectionScore {
        true_dropouts: judged.len(),
        found,
        reported: reported.len(),
        correct,
        recall: ratio(found, judged.len()),
        precision: ratio(correct, reported.len()),
        missed,
        false_positives,
    }
}

/// The true dropouts of an artefacts.json (`dropouts`: volume → [[slice, fraction], …], the
/// schema of ../shared/phantoms/bench_artefacts and of `simulate`), sorted.
pub fn parse_dropouts(text: &str, what: &str) -> Result<Vec<(usize, usize, f64)>> {
    let bad = |m: &str| Error::input(format!("{what}: {m}"));
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(&format!("not JSON ({e})")))?;
    let drops = v
        .get("dropouts")
        .and_then(|d| d.as_object())
        .ok_or_else(|| bad("no `dropouts` object (volume -> [[slice, fraction], ...])"))?;
    let mut out = Vec::new();
    for (vol, slices) in drops {
        let vol: usize = vol
            .parse()
            .map_err(|_| bad(&format!("dropout key `{vol}` is not a volume index")))?;
        let list = slices
            .as_array()
            .ok_or_else(|| bad(&format!("dropouts of volume {vol} are not a list")))?;
        for pair in list {
            let s = pair.get(0).and_then(|x| x.as_u64());
            let f = pair.get(1).and_then(|x| x.as_f64());
            match (s, f) {
                (Some(s), Some(f)) => out.push((vol, s as usize, f)),
                _ => {
                    return Err(bad(&format!(
                        "dropout of volume {vol} is not [slice, fraction]: {pair}"
                    )))
                }
            }
        }
    }
    out.sort_by_key(|a| (a.0, a.1));
    Ok(out)
}

/// The (volume, slice) rows of an outliers.tsv (columns found by header name).
pub fn parse_outlier_slices(text: &str, what: &str) -> Result<Vec<(usize, usize)>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().ok_or_else(|| {
        Error::input(format!(
            "{what} is empty: expected a header `volume slice bvalue score replaced`"
        ))
    })?;
    let cols: Vec<&str> = header.split('\t').map(str::trim).collect();
    let col = |name: &str| {
        cols.iter().position(|h| *h == name).ok_or_else(|| {
            Error::input(format!(
                "{what} has no column `{name}`: expected the outliers.tsv of `estimate` \
                 (volume slice bvalue score replaced)"
            ))
        })
    };
    let (cv, cs) = (col("volume")?, col("slice")?);
    let mut out = Vec::new();
    for (row, line) in lines.enumerate() {
        let f: Vec<&str> = line.split('\t').map(str::trim).collect();
        let get = |c: usize| f.get(c).and_then(|x| x.parse::<usize>().ok());
        match (get(cv), get(cs)) {
            (Some(v), Some(s)) => out.push((v, s)),
            _ => {
                return Err(Error::input(format!(
                    "{what}, data row {}: volume and slice must be whole numbers",
                    row + 1
                )))
            }
        }
    }
    Ok(out)
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

    #[test]
    fn detection_precision_and_recall() {
        // three judged dropouts, one too faint a loss to count for recall (0.6)
        let truth = [(1, 10, 0.1), (1, 12, 0.3), (5, 20, 0.6), (7, 3, 0.4)];
        let reported = [(1, 10), (5, 20), (9, 9)];
        let d = score_detection(&truth, &reported, DROPOUT_MAX_FRACTION);
        assert_eq!(
            (d.true_dropouts, d.found, d.reported, d.correct),
            (3, 1, 3, 2)
        );
        assert!((d.recall - 1.0 / 3.0).abs() < 1e-15);
        assert!((d.precision - 2.0 / 3.0).abs() < 1e-15);
        assert_eq!(d.missed, vec![(1, 12, 0.3), (7, 3, 0.4)]);
        assert_eq!(d.false_positives, vec![(9, 9)]);
        let none = score_detection(&[], &[], 0.4);
        assert_eq!((none.recall, none.precision), (1.0, 1.0));
    }

    #[test]
    fn artefact_and_outlier_files_parse() {
        let a = r#"{"dropouts": {"25": [[36, 0.2], [38, 0.1]], "1": [[38, 0.28]]}}"#;
        assert_eq!(
            parse_dropouts(a, "a").unwrap(),
            vec![(1, 38, 0.28), (25, 36, 0.2), (25, 38, 0.1)]
        );
        assert!(matches!(parse_dropouts("{}", "a"), Err(Error::Input(_))));
        assert!(matches!(
            parse_dropouts(r#"{"dropouts": {"x": []}}"#, "a"),
            Err(Error::Input(_))
        ));
        let o = "volume\tslice\tbvalue\tscore\treplaced\n3\t17\t1000\t-7.5\t1\n";
        assert_eq!(parse_outlier_slices(o, "o").unwrap(), vec![(3, 17)]);
        assert!(matches!(
            parse_outlier_slices("a\tb\n", "o"),
            Err(Error::Input(_))
        ));
    }
}
