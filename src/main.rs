//! The `nifreeze-rs` binary: parse, run, map errors to exit codes (0 ok, 2 bad input, 1 failure).

mod cli;
mod commands;

use clap::Parser;
use cli::Cli;
use commands::console::{stderr_line, stdout_text};

#[global_allocator]
static ALLOC: nifreeze::alloc_guard::OneLineOnOom = nifreeze::alloc_guard::OneLineOnOom;

/// Signals whose default action would end the process without a message.
#[cfg(unix)]
fn set_signals() {
    // SIGXFSZ (a `ulimit -f` file-size limit) kills by default; ignored, the write that
    // crosses the limit fails with EFBIG and the run ends with a one-line error instead.
    // SIGPIPE stays ignored (Rust's default): a closed pipe is an EPIPE error that
    // `console::stdout_text` turns into a quiet end of the report.
    // SAFETY: installing SIG_IGN has no handler code to race with.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

#[cfg(not(unix))]
fn set_signals() {}

/// clap's usage error as one documented line: `nifreeze-rs: error: … (see --help)`.
fn usage_error(e: &clap::Error) -> String {
    // clap's first paragraph is the error (a list of missing arguments continues on indented
    // lines); usage and tips follow after a blank line
    let text = e.to_string();
    let first: Vec<&str> = text
        .lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .collect();
    let first = first.join(" ");
    let first = first.strip_prefix("error:").unwrap_or(&first).trim();
    let first = if first.is_empty() {
        "invalid command line"
    } else {
        first
    };
    format!("nifreeze-rs: error: {first} (see --help)")
}

fn main() {
    set_signals();
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
        stderr_line(&format!(
            "nifreeze-rs: internal error: {msg}{at} (please report this)"
        ));
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    match stdout_text(&e.render().to_string()) {
                        Ok(()) => 0,
                        Err(err) => {
                            stderr_line(&format!("nifreeze-rs: error: {err}"));
                            1
                        }
                    }
                }
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                | ErrorKind::MissingSubcommand => {
                    stderr_line(
                        "nifreeze-rs: error: no command given: use info, estimate, predict, \
                         register, simulate or compare (see --help)",
                    );
                    2
                }
                _ => {
                    stderr_line(&usage_error(&e));
                    2
                }
            };
            std::process::exit(code);
        }
    };
    let code = match std::panic::catch_unwind(|| commands::run(cli)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            stderr_line(&format!("nifreeze-rs: error: {e}"));
            e.exit_code()
        }
        Err(_) => 1,
    };
    std::process::exit(code);
}
