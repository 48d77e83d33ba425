//! Interpolators: image values (and gradients) at fractional voxel coordinates.
//!
//! Two kernels: trilinear (8 taps, cheap, used at coarse pyramid levels) and cubic B-spline
//! (64 taps after a recursive prefilter, Unser 1993). The B-spline is exact for cubic
//! polynomials and does not blur at sub-voxel shifts, which is what lets the final level of a
//! registration reach a few hundredths of a millimetre: trilinear interpolation smooths the
//! moving image by a shift-dependent amount, which biases the optimum towards the voxel grid.
//!
//! Domain: a point is inside the image when every voxel coordinate lies within
//! `[-0.5, n - 0.5]` (the voxels' own extent); outside values are 0, as in ITK/ANTs.
//! Inside, trilinear clamps to the edge voxel and the B-spline uses mirror boundaries.

/// Cubic B-spline interpolant of a 3-D image: prefiltered coefficients on the image grid.
#[derive(Clone, Debug)]
pub struct BSpline {
    dims: [usize; 3],
    coef: Vec<f64>,
}

/// Pole of the cubic B-spline prefilter.
const Z: f64 = -0.267_949_192_431_122_7; // sqrt(3) - 2

impl BSpline {
    /// Prefilter `data` (x fastest) so that the spline interpolates the samples exactly.
    pub fn new(data: &[f32], dims: [usize; 3]) -> Self {
        let [nx, ny, nz] = dims;
        let plane = nx * ny;
        let mut coef: Vec<f64> = vec![0.0; data.len()];
        // Along y and z whole rows / planes are filtered at once (the recursion runs over
        // rows, the inner loops over contiguous memory). The x lines are contiguous, so one
        // line alone would be one serial recursion: each plane is transposed into a buffer
        // where its x lines are the lanes, filtered the same way, and transposed back. Each
        // line gets the same operations in the same order: the same bits as line by line
        // (`prefilter_by_lines` in the tests), several times faster.
        if nx > 1 && plane > 0 {
            let mut buf = vec![0.0f64; plane];
            for (src, dst) in data.chunks_exact(plane).zip(coef.chunks_exact_mut(plane)) {
                for (j, row) in src.chunks_exact(nx).enumerate() {
                    for (i, &v) in row.iter().enumerate() {
                        buf[i * ny + j] = v as f64;
                    }
                }
                prefilter_lanes(&mut buf, nx, ny);
                for (j, row) in dst.chunks_exact_mut(nx).enumerate() {
                    for (i, o) in row.iter_mut().enumerate() {
                        *o = buf[i * ny + j];
                    }
                }
            }
        } else {
            coef.iter_mut().zip(data).for_each(|(c, &v)| *c = v as f64);
        }
        if ny > 1 {
            for slab in coef.chunks_exact_mut(nx * ny) {
                prefilter_lanes(slab, ny, nx);
            }
        }
        if nz > 1 {
            prefilter_lanes(&mut coef, nz, nx * ny);
        }
        BSpline { dims, coef }
    }

    /// Interpolated value at voxel coordinate `p` (0 outside the image).
    #[inline]
    pub fn value(&self, p: [f64; 3]) -> f64 {
        if !inside(p, self.dims) {
            return 0.0;
        }
        let (ix, wx) = taps(p[0], self.dims[0]);
        let (iy, wy) = taps(p[1], self.dims[1]);
        let (iz, wz) = taps(p[2], self.dims[2]);
        let nx = self.dims[0];
        let plane = nx * self.dims[1];
        let mut s = 0.0;
        for c in 0..4 {
            let zoff = iz[c] * plane;
            let mut sy = 0.0;
            for b in 0..4 {
                let row = &self.coef[zoff + iy[b] * nx..];
                let sx = wx[0] * row[ix[0]]
                    + wx[1] * row[ix[1]]
                    + wx[2] * row[ix[2]]
                    + wx[3] * row[ix[3]];
                sy += wy[b] * sx;
            }
            s += wz[c] * sy;
        }
        s
    }

    /// Gradient (per voxel index unit) at the grid node `(i, j, k)`. At a node the cubic
    /// B-spline weights are (1/6, 2/3, 1/6) and the derivative weights (−1/2, 0, 1/2), so
    /// 27 coefficients suffice instead of the 64 of [`value_gradient`](Self::value_gradient).
    pub fn gradient_at_node(&self, i: usize, j: usize, k: usize) -> [f64; 3] {
        const W: [f64; 3] = [1.0 / 6.0, 2.0 / 3.0, 1.0 / 6.0];
        const D: [f64; 3] = [-0.5, 0.0, 0.5];
        let [nx, ny, nz] = self.dims;
        let ix = [mirror(i as isize - 1, nx), i, mirror(i as isize + 1, nx)];
        let iy = [mirror(j as isize - 1, ny), j, mirror(j as isize + 1, ny)];
        let iz = [mirror(k as isize - 1, nz), k, mirror(k as isize + 1, nz)];
        let plane = nx * ny;
        let (mut gx, mut gy, mut gz) = (0.0, 0.0, 0.0);
        for c in 0..3 {
            for b in 0..3 {
                let row = &self.coef[iz[c] * plane + iy[b] * nx..];
                let (r0, r1, r2) = (row[ix[0]], row[ix[1]], row[ix[2]]);
                let sx = W[0] * r0 + W[1] * r1 + W[2] * r2;
                gx += W[c] * W[b] * 0.5 * (r2 - r0);
                gy += W[c] * D[b] * sx;
                gz += D[c] * W[b] * sx;
            }
        }
        [gx, gy, gz]
    }

    /// Value and gradient (per voxel index unit) at voxel coordinate `p`; zeros outside.
    pub fn value_gradient(&self, p: [f64; 3]) -> (f64, [f64; 3]) {
        if !inside(p, self.dims) {
            return (0.0, [0.0; 3]);
        }
        let (ix, wx, dx) = taps_d(p[0], self.dims[0]);
        let (iy, wy, dy) = taps_d(p[1], self.dims[1]);
        let (iz, wz, dz) = taps_d(p[2], self.dims[2]);
        let nx = self.dims[0];
        let plane = nx * self.dims[1];
        let (mut v, mut gx, mut gy, mut gz) = (0.0, 0.0, 0.0, 0.0);
        for c in 0..4 {
            let zoff = iz[c] * plane;
            for b in 0..4 {
                let row = &self.coef[zoff + iy[b] * nx..];
                let (mut sx, mut sdx) = (0.0, 0.0);
                for a in 0..4 {
                    let q = row[ix[a]];
                    sx += wx[a] * q;
                    sdx += dx[a] * q;
                }
                v += wz[c] * wy[b] * sx;
                gx += wz[c] * wy[b] * sdx;
                gy += wz[c] * dy[b] * sx;
                gz += dz[c] * wy[b] * sx;
            }
        }
        (v, [gx, gy, gz])
    }
}

/// Trilinear interpolation of `data` at voxel coordinate `p` (0 outside the image).
#[inline]
pub fn trilinear(data: &[f32], dims: [usize; 3], p: [f64; 3]) -> f64 {
    if !inside(p, dims) {
        return 0.0;
    }
    let mut i0 = [0usize; 3];
    let mut i1 = [0usize; 3];
    let mut f = [0.0f64; 3];
    for a in 0..3 {
        let n = dims[a];
        let x = p[a].clamp(0.0, (n - 1) as f64);
        let i = x as usize; // x ≥ 0: truncation is floor (and avoids a libm call)
        let fl = i as f64;
        if i + 1 >= n {
            i0[a] = n - 1;
            i1[a] = n - 1;
            f[a] = 0.0;
        } else {
            i0[a] = i;
            i1[a] = i + 1;
            f[a] = x - fl;
        }
    }
    let nx = dims[0];
    let plane = nx * dims[1];
    let at = |i: usize, j: usize, k: usize| data[i + nx * j + plane * k] as f64;
    let c00 = at(i0[0], i0[1], i0[2]) * (1.0 - f[0]) + at(i1[0], i0[1], i0[2]) * f[0];
    let c10 = at(i0[0], i1[1], i0[2]) * (1.0 - f[0]) + at(i1[0], i1[1], i0[2]) * f[0];
    let c01 = at(i0[0], i0[1], i1[2]) * (1.0 - f[0]) + at(i1[0], i0[1], i1[2]) * f[0];
    let c11 = at(i0[0], i1[1], i1[2]) * (1.0 - f[0]) + at(i1[0], i1[1], i1[2]) * f[0];
    let c0 = c00 * (1.0 - f[1]) + c10 * f[1];
    let c1 = c01 * (1.0 - f[1]) + c11 * f[1];
    c0 * (1.0 - f[2]) + c1 * f[2]
}

#[inline]
fn inside(p: [f64; 3], dims: [usize; 3]) -> bool {
    (0..3).all(|a| p[a] >= -0.5 && p[a] <= dims[a] as f64 - 0.5)
}

/// Mirror an index into `[0, n)` (whole-sample symmetric extension, matching the prefilter).
#[inline]
fn mirror(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let mut r = i.rem_euclid(period);
    if r >= n as isize {
        r = period - r;
    }
    r as usize
}

#[inline]
fn tap_indices(x: f64, n: usize) -> ([usize; 4], f64) {
    // callers guarantee x ≥ -0.5, so truncation of x + 1 is floor(x) + 1 (no libm call)
    let i = (x + 1.0) as isize - 1;
    let t = x - i as f64;
    let idx = if i >= 1 && i + 2 < n as isize {
        let u = i as usize;
        [u - 1, u, u + 1, u + 2]
    } else {
        [
            mirror(i - 1, n),
            mirror(i, n),
            mirror(i + 1, n),
            mirror(i + 2, n),
        ]
    };
    (idx, t)
}

#[inline]
fn weights(t: f64) -> [f64; 4] {
    let t2 = t * t;
    let t3 = t2 * t;
    let u = 1.0 - t;
    [
        u * u * u / 6.0,
        (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0,
        (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0,
        t3 / 6.0,
    ]
}

#[inline]
fn taps(x: f64, n: usize) -> ([usize; 4], [f64; 4]) {
    let (idx, t) = tap_indices(x, n);
    (idx, weights(t))
}

#[inline]
fn taps_d(x: f64, n: usize) -> ([usize; 4], [f64; 4], [f64; 4]) {
    let (idx, t) = tap_indices(x, n);
    let u = 1.0 - t;
    let d = [
        -0.5 * u * u,
        (3.0 * t * t - 4.0 * t) / 2.0,
        (-3.0 * t * t + 2.0 * t + 1.0) / 2.0,
        0.5 * t * t,
    ];
    (idx, weights(t), d)
}

/// Rows `dst` (mutable) and `src` of a block of `lane`-long rows, `dst != src`.
#[inline]
fn two_rows(c: &mut [f64], dst: usize, src: usize, lane: usize) -> (&mut [f64], &[f64]) {
    if dst < src {
        let (h, t) = c.split_at_mut(src * lane);
        (&mut h[dst * lane..(dst + 1) * lane], &t[..lane])
    } else {
        let (h, t) = c.split_at_mut(dst * lane);
        (&mut t[..lane], &h[src * lane..(src + 1) * lane])
    }
}

/// In-place cubic B-spline prefilter along the first index of `c` seen as `n` rows of `lane`
/// values (every column is one line), mirror boundaries (Unser 1993; Thévenaz et al. 2000).
fn prefilter_lanes(c: &mut [f64], n: usize, lane: usize) {
    if n < 2 {
        return;
    }
    let lambda = (1.0 - Z) * (1.0 - 1.0 / Z);
    c.iter_mut().for_each(|v| *v *= lambda);
    // causal initialisation: truncated sum when the line is long enough for z^k to vanish
    let horizon = 40usize; // |z|^40 ≈ 1e-23
    if n > horizon {
        let mut zk = Z;
        for k in 1..horizon {
            let (r0, rk) = two_rows(c, 0, k, lane);
            r0.iter_mut().zip(rk).for_each(|(a, b)| *a += zk * b);
            zk *= Z;
        }
    } else {
        let zn = Z.powi(n as i32 - 1);
        let iz = 1.0 / Z;
        let mut z2n = zn * zn * iz;
        let mut zk = Z;
        let mut acc: Vec<f64> = c[..lane].to_vec();
        let last = &c[(n - 1) * lane..n * lane];
        acc.iter_mut().zip(last).for_each(|(a, b)| *a += zn * b);
        for k in 1..n - 1 {
            let w = zk + z2n;
            acc.iter_mut()
                .zip(&c[k * lane..(k + 1) * lane])
                .for_each(|(a, b)| *a += w * b);
            zk *= Z;
            z2n *= iz;
        }
        let norm = 1.0 / (1.0 - zn * zn);
        c[..lane]
            .iter_mut()
            .zip(&acc)
            .for_each(|(a, b)| *a = b * norm);
    }
    for k in 1..n {
        let (rk, rp) = two_rows(c, k, k - 1, lane);
        rk.iter_mut().zip(rp).for_each(|(a, b)| *a += Z * b);
    }
    let f = Z / (Z * Z - 1.0);
    {
        let (rl, rp) = two_rows(c, n - 1, n - 2, lane);
        rl.iter_mut()
            .zip(rp)
            .for_each(|(a, b)| *a = f * (Z * b + *a));
    }
    for k in (0..n - 1).rev() {
        let (rk, rn) = two_rows(c, k, k + 1, lane);
        rk.iter_mut().zip(rn).for_each(|(a, b)| *a = Z * (b - *a));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_image(dims: [usize; 3], f: impl Fn(f64, f64, f64) -> f64) -> Vec<f32> {
        let mut v = Vec::new();
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    v.push(f(i as f64, j as f64, k as f64) as f32);
                }
            }
        }
        v
    }

    #[test]
    fn bspline_interpolates_samples() {
        let dims = [9, 7, 50];
        let data = test_image(dims, |x, y, z| {
            (x * 0.7).sin() + (y * 1.3).cos() * (z * 0.2).sin()
        });
        let s = BSpline::new(&data, dims);
        for (idx, &d) in data.iter().enumerate() {
            let i = idx % 9;
            let j = (idx / 9) % 7;
            let k = idx / 63;
            let v = s.value([i as f64, j as f64, k as f64]);
            assert!((v - d as f64).abs() < 1e-5, "{v} vs {d}");
        }
    }

    #[test]
    fn bspline_reproduces_quadratics_and_gradient() {
        // Interior values of a quadratic are reproduced exactly (cubic B-splines span P3; the
        // mirror boundary only disturbs a few voxels near the edges for non-symmetric data).
        let dims = [30, 30, 30];
        let f = |x: f64, y: f64, z: f64| {
            0.01 * (x - 14.5).powi(2) + 0.5 * y - 0.02 * (z - 14.5) * (y - 10.0)
        };
        let data = test_image(dims, f);
        let s = BSpline::new(&data, dims);
        let p = [13.3, 14.7, 15.1];
        let (v, g) = s.value_gradient(p);
        assert!((v - f(p[0], p[1], p[2])).abs() < 1e-4);
        assert!((g[0] - 0.02 * (p[0] - 14.5)).abs() < 1e-4);
        assert!((g[1] - (0.5 - 0.02 * (p[2] - 14.5))).abs() < 1e-4);
        assert!((g[2] + 0.02 * (p[1] - 10.0)).abs() < 1e-4);
        assert!((s.value(p) - v).abs() < 1e-12);
        // the node shortcut equals the general formula, including at mirrored borders
        for q in [[0usize, 0, 0], [29, 13, 7], [5, 29, 0], [14, 14, 14]] {
            let a = s.gradient_at_node(q[0], q[1], q[2]);
            let (_, b) = s.value_gradient([q[0] as f64, q[1] as f64, q[2] as f64]);
            for t in 0..3 {
                assert!((a[t] - b[t]).abs() < 1e-12, "{q:?}: {a:?} vs {b:?}");
            }
        }
    }

    /// The coefficients the straightforward way: every x line filtered alone.
    fn prefilter_by_lines(data: &[f32], dims: [usize; 3]) -> Vec<f64> {
        let mut coef: Vec<f64> = data.iter().map(|&v| v as f64).collect();
        let [nx, ny, nz] = dims;
        if nx > 1 {
            for l in coef.chunks_exact_mut(nx) {
                prefilter_lanes(l, nx, 1);
            }
        }
        if ny > 1 {
            for slab in coef.chunks_exact_mut(nx * ny) {
                prefilter_lanes(slab, ny, nx);
            }
        }
        if nz > 1 {
            prefilter_lanes(&mut coef, nz, nx * ny);
        }
        coef
    }

    #[test]
    fn transposed_x_lines_give_the_bits_of_line_by_line() {
        // short lines (closed-form start) and long ones (truncated start), odd sizes
        for dims in [[9, 7, 5], [50, 3, 4], [45, 41, 2], [1, 6, 5], [7, 1, 3]] {
            let data = test_image(dims, |x, y, z| {
                (x * 0.7).sin() * 100.0 + (y * 1.3).cos() * (z * 0.2).sin() + x * y
            });
            let want = prefilter_by_lines(&data, dims);
            let got = BSpline::new(&data, dims).coef;
            assert_eq!(want.len(), got.len());
            for (a, b) in want.iter().zip(&got) {
                assert_eq!(a.to_bits(), b.to_bits(), "{dims:?}");
            }
        }
    }

    #[test]
    fn trilinear_is_exact_for_linear_and_zero_outside() {
        let dims = [5, 6, 7];
        let data = test_image(dims, |x, y, z| 1.0 + 2.0 * x - y + 0.5 * z);
        let p = [1.25, 3.5, 4.75];
        let v = trilinear(&data, dims, p);
        assert!((v - (1.0 + 2.5 - 3.5 + 2.375)).abs() < 1e-5);
        assert_eq!(trilinear(&data, dims, [-0.6, 1.0, 1.0]), 0.0);
        assert_eq!(BSpline::new(&data, dims).value([1.0, 5.6, 1.0]), 0.0);
    }
}
