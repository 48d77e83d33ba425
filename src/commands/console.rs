//! Writing to the terminal without ever panicking.
//!
//! `println!`/`eprintln!` panic when the stream fails (a closed pipe, `> /dev/full`), and a
//! panic while reporting a panic aborts the process. Here instead:
//! - stderr (log lines, warnings, errors) is best effort: if it fails, the run goes on — a
//!   broken log must not lose a run that would succeed;
//! - stdout (the reports of `info` and `compare`) is the product: a write error is a one-line
//!   runtime error (exit 1), except a broken pipe (`info … | head`), which is the reader saying
//!   it has seen enough: the rest of the report is dropped quietly and the exit code is that of
//!   the command (so `compare … | head` still fails when a threshold is exceeded).

use nifreeze::{Error, Result};
use std::io::Write;

/// One line on stderr, best effort.
pub fn stderr_line(line: &str) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_all(line.as_bytes());
    let _ = e.write_all(b"\n");
    let _ = e.flush();
}

/// A `nifreeze-rs: warning: …` line on stderr.
pub fn warn(msg: &str) {
    stderr_line(&format!("nifreeze-rs: warning: {msg}"));
}

/// Was stdout closed when the process started? Rust's runtime then reopens descriptor 1 on
/// /dev/null read-write (a shell's `> /dev/null` opens it write-only), and every write
/// "succeeds": the report would be lost without a word.
#[cfg(unix)]
fn stdout_was_closed() -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: fcntl(F_GETFL) and fstat only read the descriptor's state.
    let flags = unsafe { libc::fcntl(1, libc::F_GETFL) };
    if flags < 0 || flags & libc::O_ACCMODE != libc::O_RDWR {
        return false;
    }
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat buffer.
    if unsafe { libc::fstat(1, &mut st) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)] // dev_t is not u64 on every platform
    let rdev = st.st_rdev as u64;
    std::fs::metadata("/dev/null").is_ok_and(|m| m.rdev() == rdev)
}

#[cfg(not(unix))]
fn stdout_was_closed() -> bool {
    false
}

/// Write a whole report to stdout (see the module doc for how failures end).
pub fn stdout_text(text: &str) -> Result<()> {
    if stdout_was_closed() {
        warn(
            "standard output is closed, so the report is not written anywhere (run without `>&-`)",
        );
        return Ok(());
    }
    let mut o = std::io::stdout().lock();
    match o.write_all(text.as_bytes()).and_then(|_| o.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::runtime(format!(
            "cannot write the report to standard output: {e}"
        ))),
    }
}
