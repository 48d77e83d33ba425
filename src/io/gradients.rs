//! Gradient tables: FSL bval/bvec, MRtrix b-tables, BIDS sidecar discovery.
//!
//! Internally there is one representation: unit vectors in scanner RAS and b in s/mm².

/// One row per 4-D volume: unit gradient direction in scanner RAS (zero for b=0) and b (s/mm²).
#[derive(Clone, Debug, PartialEq)]
pub struct GradientTable {
    pub bvecs: Vec<[f64; 3]>,
    pub bvals: Vec<f64>,
}

impl GradientTable {
    pub fn len(&self) -> usize {
        self.bvals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bvals.is_empty()
    }

    /// Indices of the b=0 volumes (b ≤ threshold).
    pub fn b0_indices(&self, threshold: f64) -> Vec<usize> {
        (0..self.len()).filter(|&i| self.bvals[i] <= threshold).collect()
    }

    /// Indices of the diffusion-weighted volumes (b > threshold).
    pub fn dw_indices(&self, threshold: f64) -> Vec<usize> {
        (0..self.len()).filter(|&i| self.bvals[i] > threshold).collect()
    }
}
