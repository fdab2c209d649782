//! The CLI's errors in one place: the line a gRPC status becomes, how errors are reported, and the exit codes.

/// The exit code of a command that failed (a usage error is clap's 2).
pub const FAILURE: i32 = 1;

/// Docker's exit code when the client or the server failed before the container's own exit code was known.
pub const DAEMON_ERROR: i32 = 125;

/// Turns a gRPC status into an error line a person can act on.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    let code = match status.code() {
        tonic::Code::NotFound => "not found",
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::DataLoss => "data loss",
        tonic::Code::FailedPrecondition => "failed precondition",
        tonic::Code::AlreadyExists => "already exists",
        tonic::Code::Unimplemented => "not implemented",
        tonic::Code::Cancelled => "cancelled",
        _ => "error",
    };
    anyhow::anyhow!("{code}: {}", status.message())
}

/// Prints "cm-client: <error>" on stderr, for an error the command goes on after or ends with.
pub fn report(e: &anyhow::Error) {
    eprintln!("cm-client: {e:#}");
}

/// Reports a failed call on one of several operands (the command goes on with the next, as docker does).
pub fn report_status(status: tonic::Status) {
    report(&status_error(status));
}

/// Reports an error that happened before the container's exit code was known, with docker's exit code.
pub fn daemon_error(e: anyhow::Error) -> anyhow::Result<i32> {
    report(&e);
    Ok(DAEMON_ERROR)
}

/// The code the process exits with: the command's, or FAILURE once its error is reported.
pub fn exit_code(result: anyhow::Result<i32>) -> i32 {
    result.unwrap_or_else(|e| {
        report(&e);
        FAILURE
    })
}
