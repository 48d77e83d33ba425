use crate::cli::CompareArgs;
use crate::{Error, Result};

pub fn run(_args: &CompareArgs) -> Result<()> {
    Err(Error::runtime("`compare` is not implemented yet"))
}
