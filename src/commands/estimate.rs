use super::input::load_dwi;
use crate::cli::EstimateArgs;
use crate::io::gradients::check_usable;
use crate::{Error, Result};

pub fn run(args: &EstimateArgs) -> Result<()> {
    let dwi = load_dwi(&args.dwi, &args.gradients)?;
    check_usable(&dwi.gradients.table, args.gradients.b0_threshold, args.gradients.ignore_b0)?;
    Err(Error::runtime("`estimate` is not implemented yet"))
}
