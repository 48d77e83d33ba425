//! Metrics: how well the moving image, seen through a transform, matches the fixed image over
//! the fixed samples the driver prepared for one pyramid level.
//!
//! The contract follows ITK v4's `ImageToImageMetricv4::GetValueAndDerivative`: a cost to
//! minimise and its derivative with respect to the parameters of the transform's increment
//! ([`Increment`]), so any gradient-based optimiser can drive any metric. Two implementations:
//!
//! - [`least_squares::LeastSquares`]: mean squares after a fitted intensity scale and offset
//!   (same contrast: a model prediction against an acquisition). It also exposes its normal
//!   equations, which is what the Gauss–Newton optimiser uses.
//! - [`mutual_information::MutualInformation`]: Mattes mutual information (any monotone or
//!   non-monotone intensity relation: b=0 against diffusion-weighted contrast).
//!
//! Both store the image Jacobian of the increment family's *row kind* (rigid rows for rigid,
//! affine rows for affine and the eddy-current model) and reduce the affine rows with the
//! increment's basis ([`Increment::affine_basis`]), so every metric serves every transform.

pub mod least_squares;
pub mod mutual_information;

pub use least_squares::{FixedSamples, LeastSquares, MovingImage};
pub use mutual_information::{MiFixed, MiSettings, MutualInformation};

use super::transform::Increment;
use nalgebra::{DMatrix, DVector, Matrix4};

/// A registration metric at one pyramid level (ITK v4's metric interface).
pub trait Metric: Sync {
    /// The cost at `t` (fixed world → moving world; lower is better) and its derivative with
    /// respect to the parameters `p` of `inc`, composed forward (`T·Δ(p)`), at `p = 0`.
    /// `inc` must be an increment of the family the metric was built for, about its centre.
    fn value_and_derivative(&self, t: &Matrix4<f64>, inc: &Increment) -> (f64, DVector<f64>);
}

/// Derivative with respect to the family's parameters from one with respect to the row kind's
/// parameters (`rows.len()` values): the same vector for rigid and affine, `Bᵀ·g` for the
/// eddy-current model whose rows are affine ones.
pub(crate) fn reduce(rows: &[f64], inc: &Increment) -> DVector<f64> {
    let g = DVector::from_column_slice(rows);
    if inc.kind.row_kind() == inc.kind {
        return g;
    }
    let b: DMatrix<f64> = inc.affine_basis();
    b.transpose() * g
}
