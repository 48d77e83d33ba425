//! One error type for the whole tool, split by who must act: the user (bad input or usage,
//! exit code 2) or us / the machine (a failure while running, exit code 1).

use std::fmt;

#[derive(Debug)]
pub enum Error {
    /// The input or the command line is wrong; the message says how to fix it. Exit code 2.
    Input(String),
    /// Something failed while running (I/O, numerical breakdown). Exit code 1.
    Runtime(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn input(msg: impl Into<String>) -> Self {
        Error::Input(msg.into())
    }
    pub fn runtime(msg: impl Into<String>) -> Self {
        Error::Runtime(msg.into())
    }
    /// Process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Input(_) => 2,
            Error::Runtime(_) => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Input(m) | Error::Runtime(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}
