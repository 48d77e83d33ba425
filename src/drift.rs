//! Global signal drift over acquisition order, from the b=0 volumes (Vos et al. 2017, "The
//! importance of correcting for signal drift in diffusion MRI", MRM 77:285).
//!
//! Scanners lose a few per cent of signal over a long series (gradient heating shifts the
//! frequency). The b=0 volumes, spread through the series, all measure the same thing, so
//! their mean brain signal against acquisition index shows the drift. Vos et al. fit a
//! linear or quadratic polynomial and divide every volume by it, normalised to the first
//! volume. Here: quadratic with at least four b=0 volumes, linear with two or three, none with
//! fewer (then no drift is estimated).

/// A fitted drift: signal(k) / signal(0) = 1 + a·k + b·k² (k = 4-D volume index).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Drift {
    /// Polynomial order fitted (1 or 2).
    pub order: usize,
    /// Coefficients of the normalised curve: [1, a, b] (b = 0 for a linear fit).
    pub coefficients: [f64; 3],
    /// The curve at every volume (1 at volume 0).
    pub scale: Vec<f64>,
    /// Signal change from the first to the last volume, per cent.
    pub percent: f64,
    /// RMS of the b=0 means about the fitted curve, per cent of the first volume's signal.
    pub residual_percent: f64,
}

/// Least-squares polynomial through (k, mean) of the b=0 volumes; `n_volumes` sets the length
/// of the curve. None with fewer than two b=0 volumes or a non-positive fitted start.
pub fn fit(b0: &[(usize, f64)], n_volumes: usize) -> Option<Drift> {
    if b0.len() < 2 {
        return None;
    }
    let order = if b0.len() >= 4 { 2 } else { 1 };
    let m = order + 1;
    // Normal equations in t = k / n (well conditioned), solved by Gaussian elimination.
    let scale_t = n_volumes.max(1) as f64;
    let mut a = vec![vec![0.0f64; m + 1]; m];
    for &(k, y) in b0 {
        let t = k as f64 / scale_t;
        let pows: Vec<f64> = (0..m).map(|p| t.powi(p as i32)).collect();
        for r in 0..m {
            for c in 0..m {
                a[r][c] += pows[r] * pows[c];
            }
            a[r][m] += pows[r] * y;
        }
    }
    for col in 0..m {
        let piv = (col..m).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        a.swap(col, piv);
        if a[col][col].abs() < 1e-12 {
            return None;
        }
        let pivot_row = a[col].clone();
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot_row[col];
                for (x, p) in row.iter_mut().zip(&pivot_row).skip(col) {
                    *x -= f * p;
                }
            }
        }
    }
    let c: Vec<f64> = (0..m).map(|r| a[r][m] / a[r][r]).collect();
    if c[0].is_nan() || c[0] <= 0.0 {
        return None;
    }
    let mut coefficients = [1.0, c[1] / c[0] / scale_t, 0.0];
    if order == 2 {
        coefficients[2] = c[2] / c[0] / (scale_t * scale_t);
    }
    let curve = |k: f64| coefficients[0] + coefficients[1] * k + coefficients[2] * k * k;
    let scale: Vec<f64> = (0..n_volumes).map(|k| curve(k as f64)).collect();
    let last = scale.last().copied().unwrap_or(1.0);
    let residual = (b0
        .iter()
        .map(|&(k, y)| (y / c[0] - curve(k as f64)).powi(2))
        .sum::<f64>()
        / b0.len() as f64)
        .sqrt();
    Some(Drift {
        order,
        coefficients,
        scale,
        percent: (last - 1.0) * 100.0,
        residual_percent: residual * 100.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_quadratic_drift() {
        // 70 volumes, 6 b=0 at 0, 12, 24, ...: signal 1000 (1 − 4e-4 k − 4e-6 k²)
        let truth = |k: f64| 1.0 - 4e-4 * k - 4e-6 * k * k;
        let b0: Vec<(usize, f64)> = (0..6)
            .map(|i| (i * 12, 1000.0 * truth((i * 12) as f64)))
            .collect();
        let d = fit(&b0, 70).unwrap();
        assert_eq!(d.order, 2);
        assert!(
            (d.coefficients[1] + 4e-4).abs() < 1e-12,
            "{:?}",
            d.coefficients
        );
        assert!((d.coefficients[2] + 4e-6).abs() < 1e-13);
        assert!((d.scale[69] - truth(69.0)).abs() < 1e-12);
        assert!((d.percent - (truth(69.0) - 1.0) * 100.0).abs() < 1e-9);
        assert!(d.residual_percent < 1e-9);
        // two b=0s: a line through them
        let l = fit(&[(0, 100.0), (10, 95.0)], 11).unwrap();
        assert_eq!(l.order, 1);
        assert!((l.scale[10] - 0.95).abs() < 1e-12);
        assert!(fit(&[(0, 100.0)], 5).is_none());
    }
}
