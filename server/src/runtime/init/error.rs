//! Why a container process could not start, and the exit code that says so: 127 (not found), 126 (not
//! executable) or 125 (setup failed).

use rustix::io::Errno;

/// Why the container could not start, and the exit code that says so.
#[derive(Debug)]
pub struct InitError {
    pub code: i32,
    pub message: String,
}

impl InitError {
    /// A setup failure (exit code 125).
    pub fn setup(message: String) -> InitError {
        InitError { code: 125, message }
    }
}

/// What a successful exec "returns": nothing, so `Result<Never, InitError>` can only be an error.
pub enum Never {}

pub fn setup_err(what: &str) -> impl Fn(nix::Error) -> InitError + '_ {
    move |e| InitError::setup(format!("container setup: {what}: {e}"))
}

pub fn io_err(what: &str) -> impl Fn(Errno) -> InitError + '_ {
    move |e| InitError::setup(format!("container setup: {what}: {e}"))
}
