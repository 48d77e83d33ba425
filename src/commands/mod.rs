//! Command runners: each turns parsed CLI arguments into library calls and file outputs.
//! This is the only layer that touches both the CLI and the file system.

pub mod compare;
pub mod console;
mod dropin;
pub mod estimate;
pub mod info;
mod input;
pub mod predict;
mod progress;
pub mod register;
pub mod resources;
pub mod simulate;

use crate::cli::{Cli, Command};
use nifreeze::Result;

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info(a) => info::run(&a),
        Command::Estimate(a) => estimate::run(&a),
        Command::Predict(a) => predict::run(&a),
        Command::Register(a) => register::run(&a),
        Command::Simulate(a) => simulate::run(&a),
        Command::Compare(a) => compare::run(&a),
    }
}
