//! Command runners: each turns parsed CLI arguments into library calls and file outputs.
//! This is the only layer that touches both the CLI and the file system.

mod compare;
pub mod console;
mod dropin;
mod estimate;
mod estimate_config;
mod estimate_output;
mod info;
mod input;
mod predict;
mod progress;
mod register;
pub mod resources;
mod simulate;

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
