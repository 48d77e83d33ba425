//! Small dense decompositions we need to be exact to rounding: a one-sided Jacobi SVD (for
//! pseudo-inverses) and a cyclic Jacobi eigen-solver for 3×3 symmetric tensors.
//!
//! Why hand-written: nalgebra 0.33's SVD returned a least-squares solution wrong in the third
//! digit for an ordinary 64×22 weighted DKI system from the bench phantom (singular values
//! right, vectors not), and its 3×3 `symmetric_eigen` rebuilds random tensors only to ~1e-8.
//! Jacobi methods are simple and accurate to a few ulps, which is what matching DIPY (LAPACK)
//! needs; the matrices here are small.

use nalgebra::DMatrix;

/// Thin SVD `a = U Σ Vᵀ` by one-sided Jacobi rotations on the columns (Hestenes).
/// Returns (U: m×n, σ: n, V: n×n), σ not sorted.
pub fn svd(a: &DMatrix<f64>) -> (DMatrix<f64>, Vec<f64>, DMatrix<f64>) {
    let (m, n) = a.shape();
    let mut u = a.clone();
    let mut v = DMatrix::<f64>::identity(n, n);
    let eps = f64::EPSILON;
    for _sweep in 0..80 {
        let mut rotated = false;
        for i in 0..n {
            for j in i + 1..n {
                let (mut alpha, mut beta, mut gamma) = (0.0, 0.0, 0.0);
                {
                    let ci = u.column(i);
                    let cj = u.column(j);
                    for r in 0..m {
                        alpha += ci[r] * ci[r];
                        beta += cj[r] * cj[r];
                        gamma += ci[r] * cj[r];
                    }
                }
                if gamma == 0.0 || gamma.abs() <= eps * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                for r in 0..m {
                    let x = u[(r, i)];
                    let y = u[(r, j)];
                    u[(r, i)] = c * x - s * y;
                    u[(r, j)] = s * x + c * y;
                }
                for r in 0..n {
                    let x = v[(r, i)];
                    let y = v[(r, j)];
                    v[(r, i)] = c * x - s * y;
                    v[(r, j)] = s * x + c * y;
                }
            }
        }
        if !rotated {
            break;
        }
    }
    let mut sigma = vec![0.0; n];
    for (k, sigma_k) in sigma.iter_mut().enumerate() {
        let s = u.column(k).norm();
        *sigma_k = s;
        if s > 0.0 {
            u.column_mut(k).scale_mut(1.0 / s);
        }
    }
    (u, sigma, v)
}

/// Singular values of `a`, descending.
pub fn singular_values(a: &DMatrix<f64>) -> Vec<f64> {
    let (_, mut s, _) = svd(a);
    s.sort_by(|x, y| y.total_cmp(x));
    s
}

/// numpy-style pseudo-inverse (`n × m`): singular values ≤ `rcond · σ_max` are dropped.
pub fn pinv(a: &DMatrix<f64>, rcond: f64) -> DMatrix<f64> {
    let (m, n) = a.shape();
    let (u, s, v) = svd(a);
    let smax = s.iter().cloned().fold(0.0, f64::max);
    let cut = rcond * smax;
    let mut out = DMatrix::zeros(n, m);
    for k in 0..n {
        if s[k] > cut {
            let inv = 1.0 / s[k];
            for r in 0..n {
                let vk = v[(r, k)] * inv;
                for c in 0..m {
                    out[(r, c)] += vk * u[(c, k)];
                }
            }
        }
    }
    out
}

/// Eigen-decomposition of a symmetric 3×3 matrix by cyclic Jacobi rotations.
/// Returns (eigenvalues, eigenvectors as columns `vecs[row][col]`), unsorted.
pub fn eigh3(m: [[f64; 3]; 3]) -> ([f64; 3], [[f64; 3]; 3]) {
    let mut a = m;
    let mut v = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    for _sweep in 0..50 {
        let off = a[0][1] * a[0][1] + a[0][2] * a[0][2] + a[1][2] * a[1][2];
        let diag = a[0][0] * a[0][0] + a[1][1] * a[1][1] + a[2][2] * a[2][2];
        if off == 0.0 || off <= f64::EPSILON * f64::EPSILON * 1e-4 * diag {
            break;
        }
        for (p, q) in [(0usize, 1usize), (0, 2), (1, 2)] {
            let apq = a[p][q];
            if apq == 0.0 {
                continue;
            }
            let theta = (a[q][q] - a[p][p]) / (2.0 * apq);
            let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
            let t = if theta == 0.0 { 1.0 } else { t };
            let c = 1.0 / (t * t + 1.0).sqrt();
            let s = t * c;
            // A' = Jᵀ A J with J the rotation in the (p, q) plane.
            for row in a.iter_mut() {
                let akp = row[p];
                let akq = row[q];
                row[p] = c * akp - s * akq;
                row[q] = s * akp + c * akq;
            }
            #[allow(clippy::needless_range_loop)] // rows p and q are updated together, by column
            for k in 0..3 {
                let apk = a[p][k];
                let aqk = a[q][k];
                a[p][k] = c * apk - s * aqk;
                a[q][k] = s * apk + c * aqk;
            }
            a[p][q] = 0.0;
            a[q][p] = 0.0;
            for row in v.iter_mut() {
                let vp = row[p];
                let vq = row[q];
                row[p] = c * vp - s * vq;
                row[q] = s * vp + c * vq;
            }
        }
    }
    ([a[0][0], a[1][1], a[2][2]], v)
}

/// The transpose of a row-major `rows × cols` matrix (row-major `cols × rows`).
pub fn transpose(m: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut t = vec![0.0; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = m[r * cols + c];
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64) - 0.5
    }

    #[test]
    fn eigh3_rebuilds_to_rounding() {
        let mut seed = 7u64;
        let mut worst: f64 = 0.0;
        for scale in [1.0, 1e-3, 1e-9] {
            for _ in 0..20000 {
                let d = [
                    1.0 + scale * lcg(&mut seed),
                    scale * lcg(&mut seed),
                    1.0 + scale * lcg(&mut seed),
                    scale * lcg(&mut seed),
                    scale * lcg(&mut seed),
                    1.0 + scale * lcg(&mut seed),
                ];
                let m = [[d[0], d[1], d[3]], [d[1], d[2], d[4]], [d[3], d[4], d[5]]];
                let (w, v) = eigh3(m);
                for r in 0..3 {
                    for c in 0..3 {
                        let mut s = 0.0;
                        for k in 0..3 {
                            s += v[r][k] * w[k] * v[c][k];
                        }
                        worst = worst.max((s - m[r][c]).abs());
                    }
                }
            }
        }
        assert!(worst < 1e-14, "rebuild error {worst:e}");
    }

    #[test]
    fn pinv_solves_least_squares() {
        let mut seed = 3u64;
        for _ in 0..50 {
            let a = DMatrix::from_fn(40, 12, |i, j| {
                lcg(&mut seed) * (1.0 + j as f64) * (1.0 + i as f64 / 5.0)
            });
            let x = nalgebra::DVector::from_fn(12, |_, _| lcg(&mut seed));
            let b = &a * &x;
            let got = pinv(&a, 1e-15) * b;
            assert!((got - x).amax() < 1e-12);
        }
        // rank-deficient: minimum-norm solution
        let a = DMatrix::from_row_slice(3, 2, &[1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
        let p = pinv(&a, 1e-15);
        let want = DMatrix::from_row_slice(2, 3, &[1.0, 2.0, 3.0, 1.0, 2.0, 3.0]) / 28.0;
        assert!((p - want).amax() < 1e-15);
    }
}
