//! Reading and writing files: NIfTI images, gradient tables, transforms; atomic output.

pub mod atomic;
pub mod bids;
pub mod eddy_files;
pub mod gradients;
pub mod gzip;
pub mod nifti;
pub mod output;
pub mod transforms;
