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
mod downdate;
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

/// How each leave-one-out fold is fitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FoldFit {
    /// Every fold fitted from scratch, its WLS weights from its own OLS fit: nifreeze's and
    /// DIPY's numbers.
    Refit,
    /// One fit per voxel on every column, each fold derived by a rank-one downdate of it
    /// (`downdate`): the refit's numbers for OLS; for WLS the weights come from the
    /// OLS fit on all columns instead of the fold's. About ten times cheaper.
    Downdate,
}

/// Least-squares flavour of the log-linear fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FitMethod {
    /// DIPY's two-pass WLS: OLS, then weights = (OLS-predicted signal)².
    Wls,
    /// Ordinary least squares on the log-signal.
    Ols,
}
