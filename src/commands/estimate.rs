use crate::cli::EstimateArgs;
use crate::{Error, Result};

pub fn run(_args: &EstimateArgs) -> Result<()> {
    Err(Error::runtime("`estimate` is not implemented yet"))
}
