use crate::cli::PredictArgs;
use crate::{Error, Result};

pub fn run(_args: &PredictArgs) -> Result<()> {
    Err(Error::runtime("`predict` is not implemented yet"))
}
