//! Diffusion signal models (DTI, DKI) and the chunked leave-one-volume-out engine.
//!
//! The numbers are DIPY 1.12.1's (`TensorModel` / `DiffusionKurtosisModel`, fit methods WLS
//! and OLS, as nifreeze's `BaseDWIModel` calls them); the route is ours: log-signals stored
//! once voxel-major, one matrix product per chunk for the OLS coefficients of all its voxels,
//! WLS normal matrices built from a handful of weighted moments, a small Cholesky per voxel.
//! See [`engine`]: a [`Model`] (options builder) owns its design; [`Model::leave_one_out`]
//! gives the leave-one-out driver [`LovoEngine`], whose [`Fit`] of each fold predicts.

pub mod batch;
pub mod design;
pub mod engine;
mod kernel;
pub mod linalg;
pub mod requirements;
pub mod tensor;

pub use engine::{Design, EngineOptions, F64Series, Fit, LovoEngine, Model, Samples};

/// Which signal model predicts the held-out volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// Diffusion tensor (7 parameters).
    Dti,
    /// Diffusion kurtosis (22 parameters); needs two non-zero shells (see [`requirements`]).
    Dki,
}

/// Least-squares flavour of the log-linear fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FitMethod {
    /// DIPY's two-pass WLS: OLS, then weights = (OLS-predicted signal)².
    Wls,
    /// Ordinary least squares on the log-signal.
    Ols,
}
