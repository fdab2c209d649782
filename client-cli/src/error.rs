//! The CLI's errors in one place: the line a gRPC status becomes, how errors are reported, and the exit codes.

/// The exit code of a command that failed (a usage error is clap's 2).
pub const FAILURE: i32 = 1;

/// Docker's exit code when the client or the server failed before the container's own exit code was known.
pub const DAEMON_ERROR: i32 = 125;

/// What a call whose server went away mid-call says (hyper/h2's words for a connection that ended).
const CONNECTION_LOST: [&str; 4] =
    ["error reading a body from connection", "h2 protocol error", "connection reset", "broken pipe"];

/// Turns a gRPC status into an error line a person can act on.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    let message = status.message().to_ascii_lowercase();
    if !matches!(status.code(), tonic::Code::Ok) && CONNECTION_LOST.iter().any(|m| message.contains(m)) {
        return anyhow::anyhow!(
            "lost the connection to cm-server (it stopped or was killed); containers keep running and are \
             re-adopted when it starts again (then `cm-client attach` or `logs` reconnects)"
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_lost_mid_call_says_so_and_that_containers_keep_running() {
        let lost = status_error(tonic::Status::unknown("h2 protocol error: error reading a body from connection"));
        assert!(lost.to_string().starts_with("lost the connection to cm-server"), "{lost}");
        assert!(lost.to_string().contains("containers keep running"), "{lost}");
        let other = status_error(tonic::Status::not_found("no such container: x"));
        assert_eq!(other.to_string(), "not found: no such container: x");
    }
}
