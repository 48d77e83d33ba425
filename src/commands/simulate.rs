use crate::cli::SimulateArgs;
use crate::{Error, Result};

pub fn run(_args: &SimulateArgs) -> Result<()> {
    Err(Error::runtime("`simulate` is not implemented yet"))
}
