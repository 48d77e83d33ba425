use crate::cli::RegisterArgs;
use crate::{Error, Result};

pub fn run(_args: &RegisterArgs) -> Result<()> {
    Err(Error::runtime("`register` is not implemented yet"))
}
