//! Design matrices of the log-linear DTI and DKI models, in DIPY's column order and signs.
//!
//! Every column is `coef · b^k · x^a y^b z^c` with k = (a+b+c)/2, so the product of two columns
//! is again such a monomial. That lets the weighted normal matrix `Xᵀ W X` of a voxel be
//! assembled from a few *moments* `Σ_i w_i b_i^k x_i^a y_i^b z_i^c` (95 for DKI instead of the
//! 253 distinct entries of a 22×22 symmetric matrix; 22 instead of 28 for DTI), one pass over
//! the measurements per voxel group (see [`super::kernel`]).
//!
//! b is expressed in ms/µm² (b/1000) in every matrix the solvers see: in s/mm² the DKI normal
//! matrix has a condition number around 1e12 (notes/conventions.md).

use super::ModelKind;

/// One design-matrix column: `coef · b^bpow · x^e[0] · y^e[1] · z^e[2]`.
#[derive(Clone, Copy, Debug)]
pub struct Column {
    pub coef: f64,
    pub bpow: i32,
    pub exp: [i32; 3],
}

const fn col(coef: f64, bpow: i32, exp: [i32; 3]) -> Column {
    Column { coef, bpow, exp }
}

/// The six diffusion-tensor columns, DIPY order (Dxx, Dxy, Dyy, Dxz, Dyz, Dzz), signs of `-B`.
const TENSOR_COLUMNS: [Column; 6] = [
    col(-1.0, 1, [2, 0, 0]),
    col(-2.0, 1, [1, 1, 0]),
    col(-1.0, 1, [0, 2, 0]),
    col(-2.0, 1, [1, 0, 1]),
    col(-2.0, 1, [0, 1, 1]),
    col(-1.0, 1, [0, 0, 2]),
];

/// The 15 kurtosis columns of `dipy.reconst.utils.dki_design_matrix` (W1111, W2222, W3333,
/// W1112, W1113, W1222, W2223, W1333, W2333, W1122, W1133, W2233, W1123, W1223, W1233).
const KURTOSIS_COLUMNS: [Column; 15] = [
    col(1.0 / 6.0, 2, [4, 0, 0]),
    col(1.0 / 6.0, 2, [0, 4, 0]),
    col(1.0 / 6.0, 2, [0, 0, 4]),
    col(4.0 / 6.0, 2, [3, 1, 0]),
    col(4.0 / 6.0, 2, [3, 0, 1]),
    col(4.0 / 6.0, 2, [1, 3, 0]),
    col(4.0 / 6.0, 2, [0, 3, 1]),
    col(4.0 / 6.0, 2, [1, 0, 3]),
    col(4.0 / 6.0, 2, [0, 1, 3]),
    col(1.0, 2, [2, 2, 0]),
    col(1.0, 2, [2, 0, 2]),
    col(1.0, 2, [0, 2, 2]),
    col(2.0, 2, [2, 1, 1]),
    col(2.0, 2, [1, 2, 1]),
    col(2.0, 2, [1, 1, 2]),
];

/// The constant column; its coefficient is `-ln S0` (DIPY's sign convention).
const S0_COLUMN: Column = col(-1.0, 0, [0, 0, 0]);

/// Design columns of a model, in DIPY's order.
pub fn columns(kind: ModelKind) -> Vec<Column> {
    let mut c: Vec<Column> = TENSOR_COLUMNS.to_vec();
    if kind == ModelKind::Dki {
        c.extend_from_slice(&KURTOSIS_COLUMNS);
    }
    c.push(S0_COLUMN);
    c
}

/// Number of model parameters (7 for DTI, 22 for DKI).
pub fn n_params(kind: ModelKind) -> usize {
    match kind {
        ModelKind::Dti => 7,
        ModelKind::Dki => 22,
    }
}

#[inline]
fn monomial(b: f64, g: [f64; 3], bpow: i32, e: [i32; 3]) -> f64 {
    // powi(0) is 1 even for 0, so the b=0 row has only the constant term.
    b.powi(bpow) * g[0].powi(e[0]) * g[1].powi(e[1]) * g[2].powi(e[2])
}

/// One design row for gradient `g` (unit) at b-value `b` (any unit; the caller chooses).
pub fn row(cols: &[Column], b: f64, g: [f64; 3]) -> Vec<f64> {
    cols.iter()
        .map(|c| c.coef * monomial(b, g, c.bpow, c.exp))
        .collect()
}

/// How the upper triangle of `Xᵀ W X` is made from moments: entry (j, k), j ≤ k, row-major,
/// equals `factor · moment[index]`.
#[derive(Clone, Debug)]
pub struct MomentMap {
    /// (b power, exponents) of each distinct moment.
    pub keys: Vec<(i32, [i32; 3])>,
    /// For each upper-triangle entry (j ≤ k, row-major): (moment index, coef_j · coef_k).
    pub entries: Vec<(usize, f64)>,
}

impl MomentMap {
    pub fn new(cols: &[Column]) -> Self {
        let mut keys: Vec<(i32, [i32; 3])> = Vec::new();
        let mut entries = Vec::new();
        for j in 0..cols.len() {
            for k in j..cols.len() {
                let key = (
                    cols[j].bpow + cols[k].bpow,
                    [
                        cols[j].exp[0] + cols[k].exp[0],
                        cols[j].exp[1] + cols[k].exp[1],
                        cols[j].exp[2] + cols[k].exp[2],
                    ],
                );
                let idx = match keys.iter().position(|k2| *k2 == key) {
                    Some(i) => i,
                    None => {
                        keys.push(key);
                        keys.len() - 1
                    }
                };
                entries.push((idx, cols[j].coef * cols[k].coef));
            }
        }
        MomentMap { keys, entries }
    }

    /// The moment values of one measurement (b, g): one row of the moment matrix.
    pub fn row(&self, b: f64, g: [f64; 3]) -> Vec<f64> {
        self.keys
            .iter()
            .map(|&(bp, e)| monomial(b, g, bp, e))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moment_counts() {
        assert_eq!(MomentMap::new(&columns(ModelKind::Dti)).keys.len(), 22);
        assert_eq!(MomentMap::new(&columns(ModelKind::Dki)).keys.len(), 95);
    }

    #[test]
    fn moments_rebuild_outer_product() {
        for kind in [ModelKind::Dti, ModelKind::Dki] {
            let cols = columns(kind);
            let map = MomentMap::new(&cols);
            let g = [0.36f64, -0.48, 0.8];
            let b = 1.7;
            let x = row(&cols, b, g);
            let m = map.row(b, g);
            let p = cols.len();
            let mut e = 0;
            for j in 0..p {
                for k in j..p {
                    let (i, f) = map.entries[e];
                    let want = x[j] * x[k];
                    assert!((f * m[i] - want).abs() <= 1e-14 * want.abs().max(1.0));
                    e += 1;
                }
            }
        }
    }
}
