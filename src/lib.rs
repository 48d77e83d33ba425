//! nifreeze-rs: leave-one-volume-out head-motion estimation for diffusion MRI.
//!
//! Data flow, top-down: `io` loads a series and its gradients, `mask` finds the brain,
//! `model` predicts each held-out volume from the others, `registration` aligns the volume
//! to its prediction, `estimate` runs that loop and `report` summarises it. Numerical
//! modules never touch the command line or the file system; the binary's `cli` and `commands`
//! (src/main.rs, not part of the library) join them to the command line.

pub mod alloc_guard;
pub mod compare;
pub mod data_check;
pub mod drift;
pub mod error;
pub mod estimate;
pub mod image;
pub mod io;
pub mod mask;
pub mod model;
pub mod outliers;
pub mod registration;
pub mod report;
pub mod simulate;
pub mod stats;
pub mod timing;

pub use error::{Error, Result};
