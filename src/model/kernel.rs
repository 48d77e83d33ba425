//! The per-fold least-squares fits of a group of [`LANES`] voxels at once.
//!
//! Every voxel of a fold shares the design, the OLS pseudo-inverse and the moment matrix; only
//! the log-signals and the WLS weights differ. So voxels are processed in groups of `LANES`,
//! stored lane-interleaved (`[f64; LANES]` per scalar), and every step — OLS coefficients, OLS
//! prediction, weights, moments, normal matrix, Cholesky, triangular solves — runs on all
//! lanes in lock-step. Each lane does exactly the scalar operations of one voxel in a fixed
//! order (no FMA contraction, no reassociation), so a voxel's result does not depend on its
//! lane, its group, the chunking or the CPU features: the AVX2 build of the same code gives
//! bit-identical numbers to the baseline build, just more lanes per instruction.

/// Voxels per group. Eight lanes are two AVX2 registers per scalar: every broadcast of a
/// shared matrix entry serves eight voxels, and twice as many independent add chains hide
/// the add latency. Measured on the bench design (DKI, 65 columns, one fold of 40 000
/// voxels, one thread; `examples`-style timing, three runs each): 4 lanes 0.133–0.155 s,
/// 8 lanes 0.109–0.122 s. (Tried and slower: eight rows per matrix-vector block, +10 %, and
/// a right-looking Cholesky, +35 %; AVX-512 with 8 lanes was no faster than AVX2.)
pub const LANES: usize = 8;
/// One scalar per lane.
pub type Lanes = [f64; LANES];
type V = Lanes;

/// [`FoldData::h`] when no column is held out: the fit on every column, from which
/// [`super::downdate`] derives each fold.
pub const NO_HELD_OUT: usize = usize::MAX;

/// What a fold shares across voxels.
pub struct FoldData<'a> {
    /// Number of columns (DW volumes, plus the S0 sample for DKI).
    pub nc: usize,
    /// Held-out column (weight 0).
    pub h: usize,
    /// OLS pseudo-inverse, `p × nc`, column `h` zero.
    pub pinv: &'a [f64],
    /// Design matrix, `nc × p` (ms/µm²).
    pub x: &'a [f64],
    /// Design matrix transposed, `p × nc`.
    pub xt: &'a [f64],
    /// Moment matrix transposed, `n_moments × nc`.
    pub qt: &'a [f64],
    /// Upper triangle of the normal matrix from moments: (moment index, factor), row-major.
    pub entries: &'a [(usize, f64)],
    /// WLS (true) or OLS.
    pub wls: bool,
    /// Cholesky pivots below this fraction of their diagonal entry mark the voxel as
    /// ill-conditioned (solved by SVD by the caller).
    pub pivot_tol: f64,
}

/// Reusable buffers for one worker.
pub struct Scratch {
    y: Vec<V>,
    w: Vec<V>,
    wy: Vec<V>,
    mom: Vec<V>,
    a: Vec<V>,
}

impl Scratch {
    pub fn new(nc: usize, n_moments: usize, p: usize) -> Self {
        Scratch {
            y: vec![[0.0; LANES]; nc],
            w: vec![[0.0; LANES]; nc],
            wy: vec![[0.0; LANES]; nc],
            mom: vec![[0.0; LANES]; n_moments],
            a: vec![[0.0; LANES]; p * p],
        }
    }
}

/// Result of one group: coefficients per lane, the relative WLS weights (for the SVD fallback)
/// are left in the scratch, `bad[l]` marks lanes whose normal matrix was too ill-conditioned.
pub struct GroupFit<const P: usize> {
    pub beta: [[f64; P]; LANES],
    pub bad: [bool; LANES],
}

impl Scratch {
    /// Relative WLS weight of column `c` for lane `l` (valid after a WLS [`fit_group`]).
    pub fn weight(&self, c: usize, l: usize) -> f64 {
        self.w[c][l]
    }

    /// The relative WLS weights of every column (valid after a WLS [`fit_group`]).
    pub fn weights(&self) -> &[Lanes] {
        &self.w
    }

    /// The lane-interleaved log-signals of the last group.
    pub fn log_signals(&self) -> &[Lanes] {
        &self.y
    }

    /// The lower Cholesky factor of the weighted normal matrix, `factor()[i * P + j]` for
    /// i ≥ j (valid after a WLS [`fit_group`], for lanes not marked bad).
    pub fn factor(&self) -> &[Lanes] {
        &self.a
    }
}

/// Which build of the kernel may run here. Only [`Isa::detect`] and [`Isa::baseline`] make
/// one, so safe code reaches the AVX2 build only on a CPU that has AVX2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Isa {
    avx2: bool,
}

impl Isa {
    /// The best build this CPU runs (AVX2 where the CPU has it).
    pub fn detect() -> Self {
        Isa { avx2: has_avx2() }
    }

    /// The baseline build, on any CPU (the tests compare both builds).
    #[cfg(test)]
    pub fn baseline() -> Self {
        Isa { avx2: false }
    }

    /// True when this is the AVX2 build.
    pub fn avx2(self) -> bool {
        self.avx2
    }
}

/// Fit `g ≤ LANES` voxels whose log-signals are `y` (voxel-major, `nc` per voxel).
pub fn fit_group<const P: usize>(
    fd: &FoldData,
    y: &[f64],
    g: usize,
    sc: &mut Scratch,
    isa: Isa,
) -> GroupFit<P> {
    #[cfg(target_arch = "x86_64")]
    {
        if isa.avx2 {
            // SAFETY: an `Isa` with `avx2` set is made only by `Isa::detect` on a CPU that
            // has AVX2.
            return unsafe { fit_group_avx2::<P>(fd, y, g, sc) };
        }
    }
    let _ = isa;
    fit_group_body::<P>(fd, y, g, sc)
}

/// True when the AVX2 build of the kernel can run here.
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fit_group_avx2<const P: usize>(
    fd: &FoldData,
    y: &[f64],
    g: usize,
    sc: &mut Scratch,
) -> GroupFit<P> {
    fit_group_body::<P>(fd, y, g, sc)
}

#[inline(always)]
fn fit_group_body<const P: usize>(
    fd: &FoldData,
    y: &[f64],
    g: usize,
    sc: &mut Scratch,
) -> GroupFit<P> {
    let nc = fd.nc;
    // Lane-interleave the log-signals; idle lanes repeat voxel 0 (finite, results unused).
    for c in 0..nc {
        let mut v = [0.0; LANES];
        for (l, v) in v.iter_mut().enumerate() {
            let src = if l < g { l } else { 0 };
            *v = y[src * nc + c];
        }
        sc.y[c] = v;
    }
    // OLS coefficients: β_j = Σ_c pinv[j][c] · y_c.
    let mut beta = [[0.0f64; LANES]; P];
    matvec(&fd.pinv[..P * nc], &sc.y[..nc], &mut beta);
    let mut bad = [false; LANES];
    if fd.wls {
        // OLS log-prediction F_c = Σ_j x[c][j] β_j; weights w_c = exp(2 (F_c − max F)), 0 at h.
        matvec(&fd.x[..nc * P], &beta, &mut sc.w[..nc]);
        let mut fmax = [f64::NEG_INFINITY; LANES];
        for c in 0..nc {
            if c != fd.h {
                for (f, &w) in fmax.iter_mut().zip(&sc.w[c]) {
                    *f = f.max(w);
                }
            }
        }
        for c in 0..nc {
            let mut w = [0.0; LANES];
            for l in 0..LANES {
                w[l] = exp_nonpositive(2.0 * (sc.w[c][l] - fmax[l]));
            }
            if c == fd.h {
                w = [0.0; LANES];
            }
            sc.w[c] = w;
            let yc = sc.y[c];
            let mut wy = [0.0; LANES];
            for l in 0..LANES {
                wy[l] = w[l] * yc[l];
            }
            sc.wy[c] = wy;
        }
        // Moments m_k = Σ_c q[c][k] w_c, right-hand side r_j = Σ_c x[c][j] w_c y_c.
        let nm = sc.mom.len();
        matvec(&fd.qt[..nm * nc], &sc.w[..nc], &mut sc.mom);
        let mut rhs = [[0.0f64; LANES]; P];
        matvec(&fd.xt[..P * nc], &sc.wy[..nc], &mut rhs);
        // Normal matrix (lower triangle, a[i*P + j], i ≥ j) from the moments.
        let mut e = 0;
        for j in 0..P {
            for k in j..P {
                let (idx, f) = fd.entries[e];
                let m = sc.mom[idx];
                let mut v = [0.0; LANES];
                for l in 0..LANES {
                    v[l] = f * m[l];
                }
                sc.a[k * P + j] = v;
                e += 1;
            }
        }
        // Cholesky, all lanes in lock-step.
        let a = &mut sc.a;
        for j in 0..P {
            let mut d = a[j * P + j];
            for k in 0..j {
                let ajk = a[j * P + k];
                for l in 0..LANES {
                    d[l] -= ajk[l] * ajk[l];
                }
            }
            let diag = a[j * P + j];
            let mut inv = [0.0; LANES];
            for l in 0..LANES {
                let ok = d[l] > fd.pivot_tol * diag[l];
                bad[l] |= !ok;
                let dl = if ok { d[l] } else { 1.0 };
                let s = dl.sqrt();
                d[l] = s;
                inv[l] = 1.0 / s;
            }
            a[j * P + j] = d;
            for i in j + 1..P {
                let mut s = a[i * P + j];
                for k in 0..j {
                    let aik = a[i * P + k];
                    let ajk = a[j * P + k];
                    for l in 0..LANES {
                        s[l] -= aik[l] * ajk[l];
                    }
                }
                for l in 0..LANES {
                    s[l] *= inv[l];
                }
                a[i * P + j] = s;
            }
        }
        // L z = r, then Lᵀ β = z.
        solve_lower(a, &mut rhs);
        solve_upper(a, &mut rhs);
        beta = rhs;
    }
    let mut out = [[0.0f64; P]; LANES];
    for j in 0..P {
        for l in 0..LANES {
            out[l][j] = beta[j][l];
        }
    }
    GroupFit { beta: out, bad }
}

/// `L z = v` in place on every lane (forward substitution, row by row: `s = v_i; s -= l_ik·z_k,
/// k = 0..i; s /= l_ii`), with `L` the lower Cholesky factor `a[i * P + j]` (i ≥ j).
#[inline(always)]
pub fn solve_lower<const P: usize>(a: &[V], v: &mut [V; P]) {
    for i in 0..P {
        let mut s = v[i];
        for k in 0..i {
            let aik = a[i * P + k];
            for l in 0..LANES {
                s[l] -= aik[l] * v[k][l];
            }
        }
        let aii = a[i * P + i];
        for l in 0..LANES {
            s[l] /= aii[l];
        }
        v[i] = s;
    }
}

/// `Lᵀ z = v` in place on every lane (back substitution, last row first), `L` as in
/// [`solve_lower`].
#[inline(always)]
pub fn solve_upper<const P: usize>(a: &[V], v: &mut [V; P]) {
    for i in (0..P).rev() {
        let mut s = v[i];
        for k in i + 1..P {
            let aki = a[k * P + i];
            for l in 0..LANES {
                s[l] -= aki[l] * v[k][l];
            }
        }
        let aii = a[i * P + i];
        for l in 0..LANES {
            s[l] /= aii[l];
        }
        v[i] = s;
    }
}

/// `out[r] = Σ_c rows[r][c] · vecs[c]` for each row of the row-major `rows` (`out.len()` rows of
/// `vecs.len()` columns), lane-wise, summed in order of c. Four rows at a time so that four
/// independent accumulator chains hide the add latency; each output's sum order is the same
/// either way.
#[inline(always)]
fn matvec(rows: &[f64], vecs: &[V], out: &mut [V]) {
    let n = vecs.len();
    let nr = out.len();
    let mut r = 0;
    while r + 4 <= nr {
        let (r0, r1, r2, r3) = (
            &rows[r * n..(r + 1) * n],
            &rows[(r + 1) * n..(r + 2) * n],
            &rows[(r + 2) * n..(r + 3) * n],
            &rows[(r + 3) * n..(r + 4) * n],
        );
        let mut a0 = [0.0; LANES];
        let mut a1 = [0.0; LANES];
        let mut a2 = [0.0; LANES];
        let mut a3 = [0.0; LANES];
        for c in 0..n {
            let v = vecs[c];
            let (q0, q1, q2, q3) = (r0[c], r1[c], r2[c], r3[c]);
            for l in 0..LANES {
                a0[l] += q0 * v[l];
                a1[l] += q1 * v[l];
                a2[l] += q2 * v[l];
                a3[l] += q3 * v[l];
            }
        }
        out[r] = a0;
        out[r + 1] = a1;
        out[r + 2] = a2;
        out[r + 3] = a3;
        r += 4;
    }
    while r < nr {
        let row = &rows[r * n..(r + 1) * n];
        let mut a = [0.0; LANES];
        for c in 0..n {
            let v = vecs[c];
            let q = row[c];
            for l in 0..LANES {
                a[l] += q * v[l];
            }
        }
        out[r] = a;
        r += 1;
    }
}

/// `exp(x)` for `x ≤ 0`, branch-free so that it vectorises: Cody–Waite reduction by ln 2,
/// degree-13 Taylor polynomial on |r| ≤ ln2/2 (truncation < 1e-17), exponent by bit
/// arithmetic. Relative error within a few ulps; results below e^-708 (irrelevant as WLS
/// weights relative to the largest, which is 1) are flushed to 0.
#[inline(always)]
pub fn exp_nonpositive(x: f64) -> f64 {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    const LN2_HI: f64 = 0.6931471803691238; // 0x3fe62e42fee00000
    const LN2_LO: f64 = 1.9082149292705877e-10; // 0x3dea39ef35793c76
    const MAGIC: f64 = 6_755_399_441_055_744.0; // 1.5·2^52
    let underflow = x < -708.0;
    let xc = if underflow { -708.0 } else { x };
    let t = xc * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    // Horner for Σ_{k=0}^{13} r^k / k!
    let mut p = 1.0 / 6_227_020_800.0;
    p = p * r + 1.0 / 479_001_600.0;
    p = p * r + 1.0 / 39_916_800.0;
    p = p * r + 1.0 / 3_628_800.0;
    p = p * r + 1.0 / 362_880.0;
    p = p * r + 1.0 / 40_320.0;
    p = p * r + 1.0 / 5_040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    let ni = t.to_bits().wrapping_sub(MAGIC.to_bits()); // n as two's complement
    let scale = f64::from_bits(ni.wrapping_add(1023) << 52);
    let v = p * scale;
    if underflow {
        0.0
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0.0f64;
        let mut x = 0.0f64;
        while x > -708.0 {
            let e = x.exp();
            let got = exp_nonpositive(x);
            worst = worst.max((got - e).abs() / e);
            x -= 0.0137;
        }
        assert!(worst < 4.0 * f64::EPSILON, "{worst:e}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-800.0), 0.0);
        assert_eq!(exp_nonpositive(f64::NEG_INFINITY), 0.0);
    }
}

#[cfg(test)]
mod group_tests {
    use super::*;
    use crate::model::design::{self, MomentMap};
    use crate::model::{linalg, ModelKind};
    use nalgebra::DMatrix;

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 11) as f64 / (1u64 << 53) as f64
    }

    /// One voxel's WLS fit the straightforward way, in the order the kernel documents:
    /// sums over columns in column order, the normal matrix from the moments, a left-looking
    /// Cholesky (`s = a_ij; s -= l_ik·l_jk, k = 0..j; s /= l_jj`), forward and back
    /// substitution row by row. Returns the coefficients and whether a pivot was too small.
    fn reference_fit(fd: &FoldData, y: &[f64], p: usize) -> (Vec<f64>, bool) {
        let nc = fd.nc;
        let dot = |row: &[f64], v: &[f64]| {
            let mut acc = 0.0;
            for c in 0..v.len() {
                acc += row[c] * v[c];
            }
            acc
        };
        let ols: Vec<f64> = (0..p)
            .map(|j| dot(&fd.pinv[j * nc..(j + 1) * nc], y))
            .collect();
        let f: Vec<f64> = (0..nc)
            .map(|c| dot(&fd.x[c * p..(c + 1) * p], &ols))
            .collect();
        let fmax = (0..nc)
            .filter(|&c| c != fd.h)
            .map(|c| f[c])
            .fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = (0..nc)
            .map(|c| {
                if c == fd.h {
                    0.0
                } else {
                    exp_nonpositive(2.0 * (f[c] - fmax))
                }
            })
            .collect();
        let wy: Vec<f64> = (0..nc).map(|c| w[c] * y[c]).collect();
        let nm = fd.qt.len() / nc;
        let mom: Vec<f64> = (0..nm)
            .map(|k| dot(&fd.qt[k * nc..(k + 1) * nc], &w))
            .collect();
        let mut r: Vec<f64> = (0..p)
            .map(|j| dot(&fd.xt[j * nc..(j + 1) * nc], &wy))
            .collect();
        let mut a = vec![0.0; p * p];
        let mut e = 0;
        for j in 0..p {
            for k in j..p {
                let (idx, fac) = fd.entries[e];
                a[k * p + j] = fac * mom[idx];
                e += 1;
            }
        }
        let mut bad = false;
        for j in 0..p {
            let mut d = a[j * p + j];
            for k in 0..j {
                d -= a[j * p + k] * a[j * p + k];
            }
            let ok = d > fd.pivot_tol * a[j * p + j];
            bad |= !ok;
            let s = if ok { d } else { 1.0 }.sqrt();
            a[j * p + j] = s;
            for i in j + 1..p {
                let mut v = a[i * p + j];
                for k in 0..j {
                    v -= a[i * p + k] * a[j * p + k];
                }
                a[i * p + j] = v * (1.0 / s);
            }
        }
        for i in 0..p {
            let mut v = r[i];
            for k in 0..i {
                v -= a[i * p + k] * r[k];
            }
            r[i] = v / a[i * p + i];
        }
        for i in (0..p).rev() {
            let mut v = r[i];
            for k in i + 1..p {
                v -= a[k * p + i] * r[k];
            }
            r[i] = v / a[i * p + i];
        }
        (r, bad)
    }

    /// The AVX2 and baseline builds agree bit for bit, lanes are independent of each other,
    /// and the WLS solution equals an SVD solve of the weighted problem.
    #[test]
    fn builds_and_lanes_agree() {
        let mut seed = 5u64;
        let cols = design::columns(ModelKind::Dki);
        let p = cols.len();
        let map = MomentMap::new(&cols);
        let nc = 50;
        let mut x = Vec::new();
        let mut q = Vec::new();
        for c in 0..nc {
            let b = if c == nc - 1 {
                0.0
            } else {
                [1.0, 2.0, 3.0][c % 3]
            };
            let v = [
                lcg(&mut seed) - 0.5,
                lcg(&mut seed) - 0.5,
                lcg(&mut seed) - 0.5,
            ];
            let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
            let g = [v[0] / n, v[1] / n, v[2] / n];
            x.extend(design::row(&cols, b, g));
            q.extend(map.row(b, g));
        }
        let h = 7;
        let nm = map.keys.len();
        let mut xt = vec![0.0; p * nc];
        let mut qt = vec![0.0; nm * nc];
        for c in 0..nc {
            for j in 0..p {
                xt[j * nc + c] = x[c * p + j];
            }
            for k in 0..nm {
                qt[k * nc + c] = q[c * nm + k];
            }
        }
        let train: Vec<usize> = (0..nc).filter(|&c| c != h).collect();
        let xm = DMatrix::from_fn(train.len(), p, |r, j| x[train[r] * p + j]);
        let pi = linalg::pinv(&xm, 1e-15);
        let mut pinv = vec![0.0; p * nc];
        for j in 0..p {
            for (r, &c) in train.iter().enumerate() {
                pinv[j * nc + c] = pi[(j, r)];
            }
        }
        let fd = FoldData {
            nc,
            h,
            pinv: &pinv,
            x: &x,
            xt: &xt,
            qt: &qt,
            entries: &map.entries,
            wls: true,
            pivot_tol: 1e-12,
        };
        let y: Vec<f64> = (0..LANES * nc).map(|_| 5.0 + lcg(&mut seed)).collect();
        let mut sc = Scratch::new(nc, nm, p);
        let a = fit_group::<22>(&fd, &y, LANES, &mut sc, Isa::baseline());
        // the lock-step kernel does each voxel's scalar arithmetic in the textbook order
        // (sums in column order, left-looking Cholesky, substitutions row by row): the same
        // bits as one voxel fitted alone, whatever the number of lanes
        for l in 0..LANES {
            let (want, bad) = reference_fit(&fd, &y[l * nc..(l + 1) * nc], p);
            assert!(!bad && !a.bad[l]);
            for (j, w) in want.iter().enumerate().take(p) {
                assert_eq!(a.beta[l][j].to_bits(), w.to_bits(), "lane {l} coef {j}");
            }
        }
        if Isa::detect().avx2() {
            let b = fit_group::<22>(&fd, &y, LANES, &mut sc, Isa::detect());
            for l in 0..LANES {
                for j in 0..p {
                    assert_eq!(a.beta[l][j].to_bits(), b.beta[l][j].to_bits());
                }
            }
        }
        for l in 0..LANES {
            // the same voxel alone in a group gives the same bits
            let one = fit_group::<22>(&fd, &y[l * nc..(l + 1) * nc], 1, &mut sc, Isa::baseline());
            assert!(!one.bad[0]);
            for j in 0..p {
                assert_eq!(a.beta[l][j].to_bits(), one.beta[0][j].to_bits());
            }
            // and equals DIPY's recipe: w = exp(X β_ols), β = pinv(diag(w) X) (w ∘ y)
            let yv = &y[l * nc..(l + 1) * nc];
            let ols: Vec<f64> = (0..p)
                .map(|j| (0..nc).map(|c| pinv[j * nc + c] * yv[c]).sum())
                .collect();
            let w: Vec<f64> = train
                .iter()
                .map(|&c| (0..p).map(|j| x[c * p + j] * ols[j]).sum::<f64>().exp())
                .collect();
            let aw = DMatrix::from_fn(train.len(), p, |r, j| w[r] * x[train[r] * p + j]);
            let bw = nalgebra::DVector::from_fn(train.len(), |r, _| w[r] * yv[train[r]]);
            let want = linalg::pinv(&aw, 1e-15) * bw;
            for j in 0..p {
                assert!(
                    (a.beta[l][j] - want[j]).abs() <= 1e-9 * want.amax(),
                    "lane {l} coef {j}: {} vs {}",
                    a.beta[l][j],
                    want[j]
                );
            }
        }
    }
}
