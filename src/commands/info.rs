use crate::cli::InfoArgs;
use crate::{Error, Result};

pub fn run(_args: &InfoArgs) -> Result<()> {
    Err(Error::runtime("`info` is not implemented yet"))
}
