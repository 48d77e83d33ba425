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

use std::ops::Range;

/// Cubic B-spline interpolant of a 3-D image: prefiltered coefficients on the image grid.
#[derive(Clone, Debug)]
pub struct BSpline {
    dims: [usize; 3],
    coef: Vec<f64>,
    /// The AVX2 build of the tap sums can run here (the same operations in the same order as
    /// the portable one: the same bits on every CPU).
    avx2: bool,
    /// For the AVX2 interior path: the upper edges `n - 0.5` of the domain (x, y, z, and 0
    /// for the unused lane), the largest interior tap index `n - 3` (taps `i-1..=i+2` all
    /// inside the image without mirroring), and the offsets `k·plane + j·nx` of the 16 rows
    /// of taps (`[k][j]`) from the first one.
    hi: [f64; 4],
    last: [i32; 4],
    rel: [[usize; 4]; 4],
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
        //
        // Cache-friendlier, with the same operations on every value in the same order: each
        // axis's first step (scaling by λ) is done while copying into the buffer (x) or back
        // out of it (y); a plane is filtered along y right after x, while it is in cache; and
        // z runs over strips of columns small enough to stay in cache through its four passes
        // instead of streaming the whole volume four times.
        let lambda = (1.0 - Z) * (1.0 - 1.0 / Z);
        let y_scale = if ny > 1 { lambda } else { 1.0 };
        if nx > 1 && plane > 0 {
            let mut buf = vec![0.0f64; plane];
            for (src, dst) in data.chunks_exact(plane).zip(coef.chunks_exact_mut(plane)) {
                for (j, row) in src.chunks_exact(nx).enumerate() {
                    for (i, &v) in row.iter().enumerate() {
                        buf[i * ny + j] = v as f64 * lambda;
                    }
                }
                prefilter_columns(&mut buf, nx, ny, 0..ny, false);
                for (j, row) in dst.chunks_exact_mut(nx).enumerate() {
                    for (i, o) in row.iter_mut().enumerate() {
                        // (× 1.0 when there is no y pass: the same value)
                        *o = buf[i * ny + j] * y_scale;
                    }
                }
                if ny > 1 {
                    prefilter_columns(dst, ny, nx, 0..nx, false);
                }
            }
        } else {
            coef.iter_mut().zip(data).for_each(|(c, &v)| *c = v as f64);
            if ny > 1 {
                for slab in coef.chunks_exact_mut(plane) {
                    prefilter_lanes(slab, ny, nx);
                }
            }
        }
        if nz > 1 {
            // 64 columns × nz rows of f64: 36 KB at nz = 71
            const STRIP: usize = 64;
            for start in (0..plane).step_by(STRIP) {
                prefilter_columns(
                    &mut coef,
                    nz,
                    plane,
                    start..(start + STRIP).min(plane),
                    true,
                );
            }
        }
        let last = dims.map(|n| i32::try_from(n).map_or(i32::MIN, |n| n - 3));
        let mut rel = [[0; 4]; 4];
        for (k, r) in rel.iter_mut().enumerate() {
            for (j, o) in r.iter_mut().enumerate() {
                *o = k * plane + j * nx;
            }
        }
        BSpline {
            dims,
            coef,
            avx2: has_avx2(),
            hi: [
                dims[0] as f64 - 0.5,
                dims[1] as f64 - 0.5,
                dims[2] as f64 - 0.5,
                0.0,
            ],
            last: [last[0], last[1], last[2], 0],
            rel,
        }
    }

    /// Interpolated value at voxel coordinate `p` (0 outside the image).
    ///
    /// Summed along z and y first, four x taps at a time (the x taps of a row are contiguous
    /// in memory away from the border), then across x; with AVX2 (when the CPU has it) the
    /// four taps are one register, with the same operations in the same order: the same bits.
    #[inline]
    pub fn value(&self, p: [f64; 3]) -> f64 {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: `avx2` is set only where the CPU has AVX2.
            return unsafe { self.value_avx2(p) };
        }
        self.value_body(p, false)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn value_avx2(&self, p: [f64; 3]) -> f64 {
        self.value_located(avx2::locate(self, p), p)
    }

    #[inline(always)]
    fn value_body(&self, p: [f64; 3], avx: bool) -> f64 {
        if !inside(p, self.dims) {
            return 0.0;
        }
        let (ix, tx) = tap_indices(p[0], self.dims[0]);
        let (iy, ty) = tap_indices(p[1], self.dims[1]);
        let (iz, tz) = tap_indices(p[2], self.dims[2]);
        let (wx, wy, wz) = (weights(tx), weights(ty), weights(tz));
        if !contiguous(&ix) {
            let gather = |o: usize| ix.map(|i| self.coef[o + i]);
            return dot4(
                &wx,
                &smooth_sum(&self.row_starts(0, &iy, &iz), &wy, &wz, gather),
            );
        }
        let rows = self.row_starts(ix[0], &iy, &iz);
        #[cfg(target_arch = "x86_64")]
        if avx {
            // SAFETY: only reached from `value_avx2` (loads are bounds-checked)
            return unsafe { avx2::value(&self.coef, &rows, &wx, &wy, &wz) };
        }
        let _ = avx;
        dot4(
            &wx,
            &smooth_sum(&rows, &wy, &wz, |o| row4(&self.coef[o..o + 4])),
        )
    }

    /// `sink(m, self.value(point(m)))` for `m` in `0..n`, in order: the same values as
    /// [`value`](Self::value), with the AVX2 path inlined into one loop (no call and no
    /// feature check per point, and consecutive points overlap in the CPU).
    #[inline]
    pub fn values_with(
        &self,
        n: usize,
        point: impl Fn(usize) -> [f64; 3],
        mut sink: impl FnMut(usize, f64),
    ) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: `avx2` is set only where the CPU has AVX2.
            return unsafe { self.values_with_avx2(n, point, sink) };
        }
        for m in 0..n {
            sink(m, self.value_body(point(m), false));
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn values_with_avx2(
        &self,
        n: usize,
        point: impl Fn(usize) -> [f64; 3],
        mut sink: impl FnMut(usize, f64),
    ) {
        const N: usize = 4;
        let mut m = 0;
        while m + N <= n {
            let mut p = [[0.0; 3]; N];
            let mut at = [avx2::Located::Outside; N];
            for q in 0..N {
                p[q] = point(m + q);
                at[q] = avx2::locate(self, p[q]);
            }
            if let Some((base, t)) = avx2::all_interior(&at) {
                for (q, v) in avx2::values_interior::<N>(self, base, t)
                    .into_iter()
                    .enumerate()
                {
                    sink(m + q, v);
                }
            } else {
                for (q, (at, p)) in at.into_iter().zip(p).enumerate() {
                    sink(m + q, self.value_located(at, p));
                }
            }
            m += N;
        }
        for m in m..n {
            let p = point(m);
            sink(m, self.value_located(avx2::locate(self, p), p));
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn value_located(&self, at: avx2::Located, p: [f64; 3]) -> f64 {
        match at {
            avx2::Located::Interior(base, t) => avx2::values_interior::<1>(self, [base], [t])[0],
            avx2::Located::Outside => 0.0,
            avx2::Located::Border => self.value_body(p, true),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn value_gradient_if_inside(
        &self,
        at: avx2::Located,
        p: [f64; 3],
    ) -> Option<(f64, [f64; 3])> {
        match at {
            avx2::Located::Outside => None,
            _ => Some(self.value_gradient_located(at, p)),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn value_gradient_located(&self, at: avx2::Located, p: [f64; 3]) -> (f64, [f64; 3]) {
        match at {
            avx2::Located::Interior(base, t) => {
                let [v, gx, gy, gz] = avx2::value_gradients_interior::<1>(self, [base], [t])[0];
                (v, [gx, gy, gz])
            }
            avx2::Located::Outside => (0.0, [0.0; 3]),
            avx2::Located::Border => self.value_gradient_body(p, true),
        }
    }

    /// `sink(m, Some(self.value_gradient(point(m))))` for `m` in `0..n`, in order, or
    /// `sink(m, None)` where `point(m)` is outside the image (as
    /// [`values_with`](Self::values_with)).
    #[inline]
    pub fn value_gradients_with(
        &self,
        n: usize,
        point: impl Fn(usize) -> [f64; 3],
        mut sink: impl FnMut(usize, Option<(f64, [f64; 3])>),
    ) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: `avx2` is set only where the CPU has AVX2.
            return unsafe { self.value_gradients_with_avx2(n, point, sink) };
        }
        for m in 0..n {
            let p = point(m);
            sink(
                m,
                inside(p, self.dims).then(|| self.value_gradient_body(p, false)),
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn value_gradients_with_avx2(
        &self,
        n: usize,
        point: impl Fn(usize) -> [f64; 3],
        mut sink: impl FnMut(usize, Option<(f64, [f64; 3])>),
    ) {
        const N: usize = 2;
        let mut m = 0;
        while m + N <= n {
            let mut p = [[0.0; 3]; N];
            let mut at = [avx2::Located::Outside; N];
            for q in 0..N {
                p[q] = point(m + q);
                at[q] = avx2::locate(self, p[q]);
            }
            if let Some((base, t)) = avx2::all_interior(&at) {
                let vg = avx2::value_gradients_interior::<N>(self, base, t);
                for (q, [v, gx, gy, gz]) in vg.into_iter().enumerate() {
                    sink(m + q, Some((v, [gx, gy, gz])));
                }
            } else {
                for (q, (at, p)) in at.into_iter().zip(p).enumerate() {
                    sink(m + q, self.value_gradient_if_inside(at, p));
                }
            }
            m += N;
        }
        for m in m..n {
            let p = point(m);
            sink(m, self.value_gradient_if_inside(avx2::locate(self, p), p));
        }
    }

    /// Offsets in `coef` of the 16 rows `(iy[j], iz[k])` (`[k][j]`), plus `x0`.
    #[inline(always)]
    fn row_starts(&self, x0: usize, iy: &[usize; 4], iz: &[usize; 4]) -> [[usize; 4]; 4] {
        let nx = self.dims[0];
        let plane = nx * self.dims[1];
        let mut rows = [[0; 4]; 4];
        for (r, &z) in rows.iter_mut().zip(iz) {
            for (o, &y) in r.iter_mut().zip(iy) {
                *o = z * plane + y * nx + x0;
            }
        }
        rows
    }

    /// Gradient (per voxel index unit) at the grid node `(i, j, k)`. At a node the cubic
    /// B-spline weights are (1/6, 2/3, 1/6) and the derivative weights (−1/2, 0, 1/2), so
    /// 27 coefficients suffice instead of the 64 of [`value_gradient`](Self::value_gradient).
    pub fn gradient_at_node(&self, i: usize, j: usize, k: usize) -> [f64; 3] {
        const W: [f64; 3] = [1.0 / 6.0, 2.0 / 3.0, 1.0 / 6.0];
        const D: [f64; 3] = [-0.5, 0.0, 0.5];
        let [nx, ny, nz] = self.dims;
        // neighbours, mirrored at the border (no division away from it)
        let around = |i: usize, n: usize| {
            if i >= 1 && i + 1 < n {
                [i - 1, i, i + 1]
            } else {
                [mirror(i as isize - 1, n), i, mirror(i as isize + 1, n)]
            }
        };
        let (ix, iy, iz) = (around(i, nx), around(j, ny), around(k, nz));
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
    /// Summed like [`value`](Self::value): along y (weights and their derivatives) and z
    /// first, four x taps at a time.
    #[inline]
    pub fn value_gradient(&self, p: [f64; 3]) -> (f64, [f64; 3]) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: `avx2` is set only where the CPU has AVX2.
            return unsafe { self.value_gradient_avx2(p) };
        }
        self.value_gradient_body(p, false)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn value_gradient_avx2(&self, p: [f64; 3]) -> (f64, [f64; 3]) {
        self.value_gradient_located(avx2::locate(self, p), p)
    }

    #[inline(always)]
    fn value_gradient_body(&self, p: [f64; 3], avx: bool) -> (f64, [f64; 3]) {
        if !inside(p, self.dims) {
            return (0.0, [0.0; 3]);
        }
        let (ix, tx) = tap_indices(p[0], self.dims[0]);
        let (iy, ty) = tap_indices(p[1], self.dims[1]);
        let (iz, tz) = tap_indices(p[2], self.dims[2]);
        let (wx, dx) = (weights(tx), derivatives(tx));
        let (wy, dy) = (weights(ty), derivatives(ty));
        let (wz, dz) = (weights(tz), derivatives(tz));
        let w = [wy, dy, wz, dz];
        let [a, b, c] = if contiguous(&ix) {
            let rows = self.row_starts(ix[0], &iy, &iz);
            #[cfg(target_arch = "x86_64")]
            if avx {
                // SAFETY: only reached from `value_gradient_avx2` (loads are bounds-checked)
                let [v, gx, gy, gz] =
                    unsafe { avx2::value_gradient(&self.coef, &rows, &[wx, dx], &w) };
                return (v, [gx, gy, gz]);
            }
            gradient_sums(&rows, &w, |o| row4(&self.coef[o..o + 4]))
        } else {
            gradient_sums(&self.row_starts(0, &iy, &iz), &w, |o| {
                ix.map(|i| self.coef[o + i])
            })
        };
        let _ = avx;
        (dot4(&wx, &a), [dot4(&dx, &a), dot4(&wx, &b), dot4(&wx, &c)])
    }
}

/// `Σ_k wz_k Σ_j wy_j row(rows[k][j])`, four x taps at a time.
#[inline(always)]
fn smooth_sum(
    rows: &[[usize; 4]; 4],
    wy: &[f64; 4],
    wz: &[f64; 4],
    row: impl Fn(usize) -> [f64; 4],
) -> [f64; 4] {
    let mut acc = [0.0; 4];
    for (rk, &wk) in rows.iter().zip(wz) {
        let mut ya = [0.0; 4];
        for (&o, &wj) in rk.iter().zip(wy) {
            axpy4(&mut ya, wj, &row(o));
        }
        axpy4(&mut acc, wk, &ya);
    }
    acc
}

/// The four-tap sums behind [`BSpline::value_gradient`], `w = [wy, dy, wz, dz]`:
/// `Σ wz wy row`, `Σ wz dy row` and `Σ dz wy row`.
#[inline(always)]
fn gradient_sums(
    rows: &[[usize; 4]; 4],
    w: &[[f64; 4]; 4],
    row: impl Fn(usize) -> [f64; 4],
) -> [[f64; 4]; 3] {
    let [wy, dy, wz, dz] = w;
    let (mut a, mut b, mut c) = ([0.0; 4], [0.0; 4], [0.0; 4]);
    for (k, rk) in rows.iter().enumerate() {
        let (mut ya, mut yd) = ([0.0; 4], [0.0; 4]);
        for (j, &o) in rk.iter().enumerate() {
            let r = row(o);
            axpy4(&mut ya, wy[j], &r);
            axpy4(&mut yd, dy[j], &r);
        }
        axpy4(&mut a, wz[k], &ya);
        axpy4(&mut b, wz[k], &yd);
        axpy4(&mut c, dz[k], &ya);
    }
    [a, b, c]
}

/// [`BSpline::value`] and [`BSpline::value_gradient`] at four contiguous x taps, one AVX2
/// register per four taps: the same multiplications and additions in the same order as
/// [`smooth_sum`], [`gradient_sums`] and [`dot4`] (no fused multiply-add), so the same bits.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn load(coef: &[f64], o: usize) -> __m256d {
        _mm256_loadu_pd(coef[o..o + 4].as_ptr())
    }

    #[inline(always)]
    unsafe fn axpy(acc: __m256d, a: f64, x: __m256d) -> __m256d {
        _mm256_add_pd(acc, _mm256_mul_pd(_mm256_set1_pd(a), x))
    }

    /// The sums `(p0 + p1) + (p2 + p3)` of four vectors `p, q, r, s` (as [`super::dot4`]).
    #[inline(always)]
    unsafe fn sums4(p: __m256d, q: __m256d, r: __m256d, s: __m256d) -> [f64; 4] {
        // hadd: [p0+p1, q0+q1, p2+p3, q2+q3] and [r0+r1, s0+s1, r2+r3, s2+s3]
        let t0 = _mm256_hadd_pd(p, q);
        let t1 = _mm256_hadd_pd(r, s);
        let swap = _mm256_permute2f128_pd(t0, t1, 0x21); // [p2+p3, q2+q3, r0+r1, s0+s1]
        let keep = _mm256_blend_pd(t0, t1, 0b1100); // [p0+p1, q0+q1, r2+r3, s2+s3]
        let mut o = [0.0; 4];
        _mm256_storeu_pd(o.as_mut_ptr(), _mm256_add_pd(keep, swap));
        o
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    pub unsafe fn value(
        coef: &[f64],
        rows: &[[usize; 4]; 4],
        wx: &[f64; 4],
        wy: &[f64; 4],
        wz: &[f64; 4],
    ) -> f64 {
        let mut acc = _mm256_setzero_pd();
        for (rk, &wk) in rows.iter().zip(wz) {
            let mut ya = _mm256_setzero_pd();
            for (&o, &wj) in rk.iter().zip(wy) {
                ya = axpy(ya, wj, load(coef, o));
            }
            acc = axpy(acc, wk, ya);
        }
        let p = _mm256_mul_pd(_mm256_loadu_pd(wx.as_ptr()), acc);
        sums4(p, p, p, p)[0]
    }

    /// Value and gradient: `x = [wx, dx]`, `w = [wy, dy, wz, dz]`.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub unsafe fn value_gradient(
        coef: &[f64],
        rows: &[[usize; 4]; 4],
        x: &[[f64; 4]; 2],
        w: &[[f64; 4]; 4],
    ) -> [f64; 4] {
        let [wy, dy, wz, dz] = w;
        let (mut a, mut b, mut c) = (
            _mm256_setzero_pd(),
            _mm256_setzero_pd(),
            _mm256_setzero_pd(),
        );
        for (k, rk) in rows.iter().enumerate() {
            let (mut ya, mut yd) = (_mm256_setzero_pd(), _mm256_setzero_pd());
            for (j, &o) in rk.iter().enumerate() {
                let r = load(coef, o);
                ya = axpy(ya, wy[j], r);
                yd = axpy(yd, dy[j], r);
            }
            a = axpy(a, wz[k], ya);
            b = axpy(b, wz[k], yd);
            c = axpy(c, dz[k], ya);
        }
        let wx = _mm256_loadu_pd(x[0].as_ptr());
        let dx = _mm256_loadu_pd(x[1].as_ptr());
        sums4(
            _mm256_mul_pd(wx, a),
            _mm256_mul_pd(dx, a),
            _mm256_mul_pd(wx, b),
            _mm256_mul_pd(wx, c),
        )
    }

    /// Where a point falls: outside the image (value 0), near a border (some taps mirrored:
    /// the general path), or inside with all 64 taps in the image: the offset in `coef` of
    /// its first tap and the fractional parts `t` (lanes x, y, z, unused).
    #[derive(Clone, Copy)]
    pub enum Located {
        Outside,
        Border,
        Interior(usize, __m256d),
    }

    /// [`super::inside`] and [`super::tap_indices`] for the three axes at once (one lane
    /// each): the same comparisons, the same truncation `(x + 1) as int - 1` and the same
    /// `t = x - i`, so the same bits.
    #[inline(always)]
    pub unsafe fn locate(s: &super::BSpline, p: [f64; 3]) -> Located {
        let x = _mm256_set_pd(0.0, p[2], p[1], p[0]);
        let ge = _mm256_cmp_pd::<_CMP_GE_OQ>(x, _mm256_set1_pd(-0.5));
        let le = _mm256_cmp_pd::<_CMP_LE_OQ>(x, _mm256_loadu_pd(s.hi.as_ptr()));
        if _mm256_movemask_pd(_mm256_and_pd(ge, le)) != 0b1111 {
            return Located::Outside;
        }
        // inside: x + 1 ≥ 0.5, so truncation is floor, and it fits an i32 (n does)
        let i = _mm_sub_epi32(
            _mm256_cvttpd_epi32(_mm256_add_pd(x, _mm256_set1_pd(1.0))),
            _mm_set1_epi32(1),
        );
        // interior along an axis: 1 ≤ i ≤ n - 3 (the unused lane has i = 0 ≤ 0)
        let last = _mm_loadu_si128(s.last.as_ptr().cast());
        let low = _mm_cmpgt_epi32(_mm_set1_epi32(1), i);
        let high = _mm_cmpgt_epi32(i, last);
        if _mm_movemask_ps(_mm_castsi128_ps(_mm_or_si128(low, high))) & 0b0111 != 0 {
            return Located::Border;
        }
        let t = _mm256_sub_pd(x, _mm256_cvtepi32_pd(i));
        let [nx, ny, _] = s.dims;
        let (ix, iy, iz) = (
            _mm_extract_epi32::<0>(i) as usize,
            _mm_extract_epi32::<1>(i) as usize,
            _mm_extract_epi32::<2>(i) as usize,
        );
        Located::Interior((iz - 1) * nx * ny + (iy - 1) * nx + (ix - 1), t)
    }

    /// The first taps and fractional parts of `N` points when all are interior (AVX2 code
    /// only).
    #[inline(always)]
    pub unsafe fn all_interior<const N: usize>(
        at: &[Located; N],
    ) -> Option<([usize; N], [__m256d; N])> {
        let mut base = [0; N];
        let mut t = [_mm256_setzero_pd(); N];
        for (q, a) in at.iter().enumerate() {
            match a {
                Located::Interior(b, u) => (base[q], t[q]) = (*b, *u),
                _ => return None,
            }
        }
        Some((base, t))
    }

    /// [`super::weights`] of the three axes at once, by tap: `w[j]` holds tap `j`'s weight
    /// along x, y, z (lanes). The same operations in the same order: the same bits.
    #[inline(always)]
    unsafe fn weights(t: __m256d) -> [__m256d; 4] {
        let c = _mm256_set1_pd;
        let sixth = c(1.0 / 6.0);
        let t2 = _mm256_mul_pd(t, t);
        let t3 = _mm256_mul_pd(t2, t);
        let u = _mm256_sub_pd(c(1.0), t);
        let (mul, add, sub) = (_mm256_mul_pd, _mm256_add_pd, _mm256_sub_pd);
        [
            mul(mul(mul(u, u), u), sixth),
            mul(add(sub(mul(c(3.0), t3), mul(c(6.0), t2)), c(4.0)), sixth),
            mul(
                add(
                    add(add(mul(c(-3.0), t3), mul(c(3.0), t2)), mul(c(3.0), t)),
                    c(1.0),
                ),
                sixth,
            ),
            mul(t3, sixth),
        ]
    }

    /// [`super::derivatives`] of the three axes at once, by tap (as [`weights`]).
    #[inline(always)]
    unsafe fn derivatives(t: __m256d) -> [__m256d; 4] {
        let c = _mm256_set1_pd;
        let (mul, add, sub) = (_mm256_mul_pd, _mm256_add_pd, _mm256_sub_pd);
        let u = sub(c(1.0), t);
        [
            mul(mul(c(-0.5), u), u),
            mul(sub(mul(mul(c(3.0), t), t), mul(c(4.0), t)), c(0.5)),
            mul(
                add(add(mul(mul(c(-3.0), t), t), mul(c(2.0), t)), c(1.0)),
                c(0.5),
            ),
            mul(mul(c(0.5), t), t),
        ]
    }

    /// The x lanes of four by-tap vectors: `[w[0].x, w[1].x, w[2].x, w[3].x]`.
    #[inline(always)]
    unsafe fn x_lanes(w: &[__m256d; 4]) -> __m256d {
        let a = _mm256_unpacklo_pd(w[0], w[1]); // [w0.x, w1.x, w0.z, w1.z]
        let b = _mm256_unpacklo_pd(w[2], w[3]); // [w2.x, w3.x, w2.z, w3.z]
        _mm256_permute2f128_pd::<0x20>(a, b)
    }

    /// Lane y (1) or z (2) of `w` in every lane.
    #[inline(always)]
    unsafe fn lane_y(w: __m256d) -> __m256d {
        _mm256_permute4x64_pd::<0b0101_0101>(w)
    }
    #[inline(always)]
    unsafe fn lane_z(w: __m256d) -> __m256d {
        _mm256_permute4x64_pd::<0b1010_1010>(w)
    }

    /// The four x taps of row `[k][j]` of an interior point.
    #[inline(always)]
    unsafe fn tap_row(s: &super::BSpline, base: usize, k: usize, j: usize) -> __m256d {
        // SAFETY (caller): `base` comes from `locate` (Interior): every tap is in `coef`
        _mm256_loadu_pd(s.coef.as_ptr().add(base + s.rel[k][j]))
    }

    /// `(p0 + p1) + (p2 + p3)`, as [`super::dot4`] and [`sums4`]`(p, p, p, p)[0]`.
    #[inline(always)]
    unsafe fn sum(p: __m256d) -> f64 {
        let h = _mm256_hadd_pd(p, p); // [p0+p1, p0+p1, p2+p3, p2+p3]
        _mm_cvtsd_f64(_mm_add_pd(
            _mm256_castpd256_pd128(h),
            _mm256_extractf128_pd::<1>(h),
        ))
    }

    /// [`value`] at `N` interior points at once (`base`, `t` from [`locate`]): for each point
    /// the same weights, the same taps and the same sums in the same order as the general
    /// path; only the indexing is cheaper, and the `N` points' sums are interleaved so that
    /// their long chains of additions overlap in the CPU.
    ///
    /// One difference that leaves every bit unchanged: the y sums start from their first
    /// product instead of `0 + product`. The two differ only in the sign of a zero sum, and a
    /// signed zero cannot change the z sum it then enters: that sum starts from +0, so it is
    /// never −0, and adding ±0 to anything but −0 leaves it unchanged.
    // points `p`, taps `j`, `k` index several arrays each: indices read as the sums do
    #[allow(clippy::needless_range_loop)]
    #[inline]
    #[target_feature(enable = "avx2")]
    pub unsafe fn values_interior<const N: usize>(
        s: &super::BSpline,
        base: [usize; N],
        t: [__m256d; N],
    ) -> [f64; N] {
        for &b in &base {
            debug_assert!(b + s.rel[3][3] + 4 <= s.coef.len());
        }
        let mut w = [[_mm256_setzero_pd(); 4]; N];
        for p in 0..N {
            w[p] = weights(t[p]);
        }
        let mut acc = [_mm256_setzero_pd(); N];
        for k in 0..4 {
            let mut ya = [_mm256_setzero_pd(); N];
            for j in 0..4 {
                for p in 0..N {
                    let wr = _mm256_mul_pd(lane_y(w[p][j]), tap_row(s, base[p], k, j));
                    ya[p] = if j == 0 { wr } else { _mm256_add_pd(ya[p], wr) };
                }
            }
            for p in 0..N {
                acc[p] = _mm256_add_pd(acc[p], _mm256_mul_pd(lane_z(w[p][k]), ya[p]));
            }
        }
        let mut prod = [_mm256_setzero_pd(); N];
        for p in 0..N {
            prod[p] = _mm256_mul_pd(x_lanes(&w[p]), acc[p]);
        }
        let mut out = [0.0; N];
        if N == 4 {
            out.copy_from_slice(&sums4(prod[0], prod[1 % N], prod[2 % N], prod[3 % N])[..N]);
        } else {
            for p in 0..N {
                out[p] = sum(prod[p]);
            }
        }
        out
    }

    /// [`value_gradient`] at `N` interior points at once, as [`values_interior`]: for each
    /// point `[value, ∂x, ∂y, ∂z]`.
    // points `p`, taps `j`, `k` index several arrays each: indices read as the sums do
    #[allow(clippy::needless_range_loop)]
    #[inline]
    #[target_feature(enable = "avx2")]
    pub unsafe fn value_gradients_interior<const N: usize>(
        s: &super::BSpline,
        base: [usize; N],
        t: [__m256d; N],
    ) -> [[f64; 4]; N] {
        for &b in &base {
            debug_assert!(b + s.rel[3][3] + 4 <= s.coef.len());
        }
        let mut w = [[_mm256_setzero_pd(); 4]; N];
        let mut d = w;
        for p in 0..N {
            w[p] = weights(t[p]);
            d[p] = derivatives(t[p]);
        }
        let zero = [_mm256_setzero_pd(); N];
        let (mut a, mut b, mut c) = (zero, zero, zero);
        for k in 0..4 {
            let (mut ya, mut yd) = (zero, zero);
            for j in 0..4 {
                for p in 0..N {
                    let r = tap_row(s, base[p], k, j);
                    let (wr, dr) = (
                        _mm256_mul_pd(lane_y(w[p][j]), r),
                        _mm256_mul_pd(lane_y(d[p][j]), r),
                    );
                    // the first product alone (see `values_interior`)
                    (ya[p], yd[p]) = if j == 0 {
                        (wr, dr)
                    } else {
                        (_mm256_add_pd(ya[p], wr), _mm256_add_pd(yd[p], dr))
                    };
                }
            }
            for p in 0..N {
                a[p] = _mm256_add_pd(a[p], _mm256_mul_pd(lane_z(w[p][k]), ya[p]));
                b[p] = _mm256_add_pd(b[p], _mm256_mul_pd(lane_z(w[p][k]), yd[p]));
                c[p] = _mm256_add_pd(c[p], _mm256_mul_pd(lane_z(d[p][k]), ya[p]));
            }
        }
        let mut out = [[0.0; 4]; N];
        for p in 0..N {
            let (wx, dx) = (x_lanes(&w[p]), x_lanes(&d[p]));
            out[p] = sums4(
                _mm256_mul_pd(wx, a[p]),
                _mm256_mul_pd(dx, a[p]),
                _mm256_mul_pd(wx, b[p]),
                _mm256_mul_pd(wx, c[p]),
            );
        }
        out
    }
}

/// True when the AVX2 build of the tap sums can run here.
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

/// Four values from a slice of exactly four.
#[inline(always)]
fn row4(s: &[f64]) -> [f64; 4] {
    [s[0], s[1], s[2], s[3]]
}

/// `acc += a · x`, lane by lane.
#[inline(always)]
fn axpy4(acc: &mut [f64; 4], a: f64, x: &[f64; 4]) {
    for (s, v) in acc.iter_mut().zip(x) {
        *s += a * v;
    }
}

#[inline(always)]
fn dot4(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    (a[0] * b[0] + a[1] * b[1]) + (a[2] * b[2] + a[3] * b[3])
}

/// Whether four tap indices are consecutive (always so away from the border).
#[inline(always)]
fn contiguous(i: &[usize; 4]) -> bool {
    i[1] == i[0] + 1 && i[2] == i[0] + 2 && i[3] == i[0] + 3
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

/// Cubic B-spline weights of the taps `i-1..=i+2` at `x = i + t`. Also the Parzen window of
/// the Mattes mutual information (over histogram bins instead of voxels).
#[inline]
pub(crate) fn weights(t: f64) -> [f64; 4] {
    const SIXTH: f64 = 1.0 / 6.0;
    let t2 = t * t;
    let t3 = t2 * t;
    let u = 1.0 - t;
    [
        u * u * u * SIXTH,
        (3.0 * t3 - 6.0 * t2 + 4.0) * SIXTH,
        (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) * SIXTH,
        t3 * SIXTH,
    ]
}

/// Derivatives of [`weights`] with respect to `x`.
#[inline]
pub(crate) fn derivatives(t: f64) -> [f64; 4] {
    let u = 1.0 - t;
    [
        -0.5 * u * u,
        (3.0 * t * t - 4.0 * t) * 0.5,
        (-3.0 * t * t + 2.0 * t + 1.0) * 0.5,
        0.5 * t * t,
    ]
}

/// Columns `cols` of rows `dst` (mutable) and `src` of a block of rows `stride` apart,
/// `dst != src`.
#[inline]
fn two_rows<'a>(
    c: &'a mut [f64],
    dst: usize,
    src: usize,
    stride: usize,
    cols: &Range<usize>,
) -> (&'a mut [f64], &'a [f64]) {
    let (d, s, w) = (
        dst * stride + cols.start,
        src * stride + cols.start,
        cols.len(),
    );
    if dst < src {
        let (h, t) = c.split_at_mut(s);
        (&mut h[d..d + w], &t[..w])
    } else {
        let (h, t) = c.split_at_mut(d);
        (&mut t[..w], &h[s..s + w])
    }
}

/// In-place cubic B-spline prefilter along the first index of `c` seen as `n` rows of `lane`
/// values (every column is one line), mirror boundaries (Unser 1993; Thévenaz et al. 2000).
fn prefilter_lanes(c: &mut [f64], n: usize, lane: usize) {
    prefilter_columns(c, n, lane, 0..lane, true);
}

/// [`prefilter_lanes`] of the columns `cols` of `n` rows `stride` apart; `scale`: start by
/// multiplying by the gain λ (else the caller has). Every column gets the same operations in
/// the same order whatever the block of columns it is filtered with.
fn prefilter_columns(c: &mut [f64], n: usize, stride: usize, cols: Range<usize>, scale: bool) {
    if n < 2 {
        return;
    }
    let row = |k: usize| k * stride + cols.start..k * stride + cols.end;
    if scale {
        let lambda = (1.0 - Z) * (1.0 - 1.0 / Z);
        for k in 0..n {
            c[row(k)].iter_mut().for_each(|v| *v *= lambda);
        }
    }
    // causal initialisation: truncated sum when the line is long enough for z^k to vanish
    let horizon = 40usize; // |z|^40 ≈ 1e-23
    if n > horizon {
        let mut zk = Z;
        for k in 1..horizon {
            let (r0, rk) = two_rows(c, 0, k, stride, &cols);
            r0.iter_mut().zip(rk).for_each(|(a, b)| *a += zk * b);
            zk *= Z;
        }
    } else {
        let zn = Z.powi(n as i32 - 1);
        let iz = 1.0 / Z;
        let mut z2n = zn * zn * iz;
        let mut zk = Z;
        let mut acc: Vec<f64> = c[row(0)].to_vec();
        acc.iter_mut()
            .zip(&c[row(n - 1)])
            .for_each(|(a, b)| *a += zn * b);
        for k in 1..n - 1 {
            let w = zk + z2n;
            acc.iter_mut()
                .zip(&c[row(k)])
                .for_each(|(a, b)| *a += w * b);
            zk *= Z;
            z2n *= iz;
        }
        let norm = 1.0 / (1.0 - zn * zn);
        c[row(0)]
            .iter_mut()
            .zip(&acc)
            .for_each(|(a, b)| *a = b * norm);
    }
    for k in 1..n {
        let (rk, rp) = two_rows(c, k, k - 1, stride, &cols);
        rk.iter_mut().zip(rp).for_each(|(a, b)| *a += Z * b);
    }
    let f = Z / (Z * Z - 1.0);
    {
        let (rl, rp) = two_rows(c, n - 1, n - 2, stride, &cols);
        rl.iter_mut()
            .zip(rp)
            .for_each(|(a, b)| *a = f * (Z * b + *a));
    }
    for k in (0..n - 1).rev() {
        let (rk, rn) = two_rows(c, k, k + 1, stride, &cols);
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
        // (planes wider than one z strip, with long z lines: [9, 8, 50], [20, 7, 45])
        for dims in [
            [9, 7, 5],
            [50, 3, 4],
            [45, 41, 2],
            [1, 6, 5],
            [7, 1, 3],
            [9, 8, 50],
            [20, 7, 45],
            [1, 70, 43],
            [66, 1, 41],
        ] {
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
    fn avx2_and_portable_sums_give_the_same_bits() {
        // every kind of point: interior, mirrored borders, just outside
        let dims = [23, 17, 12];
        let data = test_image(dims, |x, y, z| {
            (x * 0.7).sin() * 50.0 + (y * 0.3).cos() * z + x * y * 0.1
        });
        let s = BSpline::new(&data, dims);
        for n in 0..20_000u64 {
            let u = crate::registration::pyramid::hash3(n);
            let p = [0, 1, 2].map(|a| (u[a] + 0.5) * (dims[a] as f64 + 1.0) - 1.0);
            let v = s.value_body(p, false);
            let (w, g) = s.value_gradient_body(p, false);
            assert_eq!(v.to_bits(), w.to_bits(), "{p:?}");
            // on a CPU with AVX2 this compares the two builds; elsewhere both are portable
            assert_eq!(s.value(p).to_bits(), v.to_bits(), "{p:?}");
            let (w2, g2) = s.value_gradient(p);
            assert_eq!(w2.to_bits(), w.to_bits(), "{p:?}");
            assert_eq!(g2.map(f64::to_bits), g.map(f64::to_bits), "{p:?}");
        }
    }

    #[test]
    fn batched_points_give_the_bits_of_one_at_a_time() {
        // runs of interior points (the interleaved path) mixed with border and outside
        // points, and a tail shorter than a group
        let dims = [23, 17, 12];
        let data = test_image(dims, |x, y, z| {
            (x * 0.7).sin() * 50.0 + (y * 0.3).cos() * z - x * y * 0.1
        });
        let s = BSpline::new(&data, dims);
        let pts: Vec<[f64; 3]> = (0..20_003u64)
            .map(|n| {
                let u = crate::registration::pyramid::hash3(n);
                // mostly interior, every few points anywhere (border, outside)
                let spread = if n % 7 == 3 { 1.2 } else { 0.6 };
                [0, 1, 2].map(|a| (0.5 + spread * u[a]) * (dims[a] as f64 - 1.0))
            })
            .collect();
        let mut seen = 0;
        s.values_with(
            pts.len(),
            |m| pts[m],
            |m, v| {
                assert_eq!(m, seen, "in order");
                seen += 1;
                assert_eq!(
                    v.to_bits(),
                    s.value_body(pts[m], false).to_bits(),
                    "{:?}",
                    pts[m]
                );
            },
        );
        assert_eq!(seen, pts.len());
        let (mut seen, mut outside) = (0, 0);
        s.value_gradients_with(
            pts.len(),
            |m| pts[m],
            |m, vg| {
                assert_eq!(m, seen, "in order");
                seen += 1;
                let p = pts[m];
                let want = s.value_gradient_body(p, false);
                match vg {
                    Some((v, g)) => {
                        assert!(inside(p, dims), "{p:?}");
                        assert_eq!(v.to_bits(), want.0.to_bits(), "{p:?}");
                        assert_eq!(g.map(f64::to_bits), want.1.map(f64::to_bits), "{p:?}");
                    }
                    None => {
                        assert!(!inside(p, dims), "{p:?}");
                        outside += 1;
                    }
                }
            },
        );
        assert_eq!(seen, pts.len());
        assert!(outside > 100 && outside < 2000, "{outside} outside");
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
