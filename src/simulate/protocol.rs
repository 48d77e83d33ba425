//! The acquisition protocol: shells, gradient directions and the order of volumes.
//!
//! Like a scanner protocol: b=0 volumes spread through the series (volume 0 is one), shells
//! interleaved, directions of each shell spread evenly over the sphere (electrostatic
//! repulsion with antipodal symmetry), nominal b-values jittered by a few s/mm².

use super::rng::Rng;

/// Parse `b:count[,b:count...]`, e.g. `1000:32,2000:32`.
pub fn parse_shells(s: &str) -> Result<Vec<(f64, usize)>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (b, n) = part
            .split_once(':')
            .ok_or_else(|| format!("shell `{part}` is not b:count (e.g. 1000:32)"))?;
        let b: f64 = b
            .trim()
            .parse()
            .map_err(|_| format!("shell `{part}`: bad b-value"))?;
        let n: usize = n
            .trim()
            .parse()
            .map_err(|_| format!("shell `{part}`: bad count"))?;
        if !(b > 50.0 && b <= 10000.0) {
            return Err(format!("shell `{part}`: b must be in (50, 10000] s/mm²"));
        }
        if n == 0 {
            return Err(format!("shell `{part}`: count must be at least 1"));
        }
        out.push((b, n));
    }
    if out.is_empty() {
        return Err("no shells given (e.g. --shells 1000:32,2000:32)".into());
    }
    Ok(out)
}

/// `n` directions spread over the sphere, treating ±g as the same (they give the same
/// diffusion signal): 300 steps of repulsion between all points and their antipodes.
pub fn directions(n: usize, rng: &mut Rng) -> Vec<[f64; 3]> {
    let mut p: Vec<[f64; 3]> = (0..n).map(|_| rng.unit_vector()).collect();
    if n < 2 {
        return p;
    }
    let step = 0.1 / (n as f64).sqrt();
    for _ in 0..300 {
        let mut f = vec![[0f64; 3]; n];
        for i in 0..n {
            for j in 0..n {
                if i == j {
                    continue;
                }
                for sign in [1.0, -1.0] {
                    let d = [
                        p[i][0] - sign * p[j][0],
                        p[i][1] - sign * p[j][1],
                        p[i][2] - sign * p[j][2],
                    ];
                    let r2 = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).max(1e-6);
                    let inv = 1.0 / (r2 * r2.sqrt());
                    for a in 0..3 {
                        f[i][a] += d[a] * inv;
                    }
                }
            }
        }
        for i in 0..n {
            let fn_ = (f[i][0].powi(2) + f[i][1].powi(2) + f[i][2].powi(2))
                .sqrt()
                .max(1e-12);
            let mut q = [0f64; 3];
            for a in 0..3 {
                q[a] = p[i][a] + step * f[i][a] / fn_;
            }
            let qn = (q[0] * q[0] + q[1] * q[1] + q[2] * q[2]).sqrt();
            p[i] = [q[0] / qn, q[1] / qn, q[2] / qn];
        }
    }
    // Scanners list directions in one hemisphere half of the time; keep the sign random.
    p.into_iter()
        .map(|v| {
            if rng.uniform() < 0.5 {
                [-v[0], -v[1], -v[2]]
            } else {
                v
            }
        })
        .collect()
}

/// b-values (s/mm²) and scanner-RAS unit directions (zero for b=0) in acquisition order.
pub fn schedule(shells: &[(f64, usize)], n_b0: usize, rng: &mut Rng) -> (Vec<f64>, Vec<[f64; 3]>) {
    let dirs: Vec<Vec<[f64; 3]>> = shells.iter().map(|&(_, n)| directions(n, rng)).collect();
    // interleave shells: round-robin by direction index
    let mut dw = Vec::new();
    let most = shells.iter().map(|s| s.1).max().unwrap_or(0);
    // `i` is the direction index across shells (`dirs[s][i]`): a column, not one slice
    #[allow(clippy::needless_range_loop)]
    for i in 0..most {
        for (s, &(b, n)) in shells.iter().enumerate() {
            if i < n {
                let jitter = (rng.range(-5.0, 5.0)).round();
                dw.push((b + jitter, dirs[s][i]));
            }
        }
    }
    let total = dw.len() + n_b0;
    let b0_at: Vec<usize> = (0..n_b0).map(|j| j * total / n_b0.max(1)).collect();
    let mut bvals = Vec::with_capacity(total);
    let mut bvecs = Vec::with_capacity(total);
    let mut it = dw.into_iter();
    for v in 0..total {
        if b0_at.contains(&v) {
            bvals.push(0.0);
            bvecs.push([0.0; 3]);
        } else {
            let (b, g) = it.next().expect("counted");
            bvals.push(b);
            bvecs.push(g);
        }
    }
    (bvals, bvecs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shells_parse_and_reject() {
        assert_eq!(
            parse_shells("1000:32, 2000:16").unwrap(),
            vec![(1000.0, 32), (2000.0, 16)]
        );
        assert!(parse_shells("1000").is_err());
        assert!(parse_shells("1000:0").is_err());
        assert!(parse_shells("x:3").is_err());
        assert!(parse_shells("").is_err());
    }

    #[test]
    fn directions_are_spread() {
        let d = directions(32, &mut Rng::new(1));
        // smallest angle between any two axes (±): for 32 well-spread axes it is > 15°
        let mut min_angle: f64 = 90.0;
        for i in 0..d.len() {
            for j in 0..i {
                let c = (d[i][0] * d[j][0] + d[i][1] * d[j][1] + d[i][2] * d[j][2]).abs();
                min_angle = min_angle.min(c.min(1.0).acos().to_degrees());
            }
        }
        assert!(min_angle > 15.0, "{min_angle}");
    }

    #[test]
    fn schedule_layout() {
        let (b, g) = schedule(&[(1000.0, 4), (2000.0, 4)], 3, &mut Rng::new(2));
        assert_eq!(b.len(), 11);
        assert_eq!(b[0], 0.0);
        assert_eq!(b.iter().filter(|&&x| x == 0.0).count(), 3);
        assert!(b
            .iter()
            .all(|&x| x == 0.0 || (x - 1000.0).abs() <= 5.0 || (x - 2000.0).abs() <= 5.0));
        assert!(g
            .iter()
            .zip(&b)
            .all(|(v, &x)| (x == 0.0) == (v == &[0.0; 3])));
    }
}
