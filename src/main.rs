//! The `nifreeze-rs` binary: parse, run, map errors to exit codes (0 ok, 2 bad input, 1 failure).

use clap::Parser;
use nifreeze::cli::Cli;

fn main() {
    // A bug must still end in one readable line and a non-zero exit, never a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("nifreeze-rs: internal error: {msg}{at} (please report this)");
    }));
    let cli = Cli::parse();
    let code = match std::panic::catch_unwind(|| nifreeze::commands::run(cli)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            eprintln!("nifreeze-rs: error: {e}");
            e.exit_code()
        }
        Err(_) => 1,
    };
    std::process::exit(code);
}
