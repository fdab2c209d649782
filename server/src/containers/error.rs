//! Errors of the container domain. They say what went wrong in the domain's terms; which gRPC code each one
//! is answered with is the API's choice (api/status.rs).

use crate::image::ImageError;
use crate::network::NetError;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// A request broke a rule (the message says which).
    #[error("{0}")]
    Invalid(String),
    /// A text field of a request holds a NUL byte, which no process argument, variable or path can carry.
    #[error("{field} must not contain a NUL byte")]
    Nul { field: &'static str },
    #[error("a container id or name is required")]
    NameRequired,
    #[error("{name:?} matches {count} containers; give more of the id")]
    Ambiguous { name: String, count: usize },
    #[error("no such container: {0}")]
    NoSuchContainer(String),
    #[error("no such pod sandbox: {0}")]
    NoSuchPod(String),
    #[error("pod sandbox {0} is not ready (stopped): containers cannot be created or started in it")]
    PodNotReady(String),
    #[error("no exec {exec_id:?} in container {container}")]
    NoSuchExec { container: String, exec_id: String },
    #[error("image {image:?} is not in the store; pull it first")]
    ImageNotPulled {
        image: String,
        #[source]
        source: ImageError,
    },
    /// The image named cannot be used (a malformed or ambiguous reference).
    #[error(transparent)]
    Image(ImageError),
    #[error("the name {0:?} is already in use by another container; remove it or pick another name")]
    NameInUse(String),
    #[error("cannot apply the container's limits: {0}")]
    Limits(#[source] std::io::Error),
    /// A network request that is wrong (NetError::Invalid) or cannot be met now (NetError::Unavailable, e.g. the
    /// bridge of a server run with --bridge none).
    #[error(transparent)]
    Network(NetError),
    #[error("network setup failed: {0}")]
    NetworkSetup(#[source] NetError),
    /// The container's init could not set it up (a mount, the user, the working directory ...): the reason.
    #[error("container {container} could not start: {reason}")]
    SetupFailed { container: String, reason: String },
    #[error("container {container} is damaged ({reason}): only inspect and rm -f work on it")]
    Damaged { container: String, reason: String },
    #[error("container {0} is already running")]
    AlreadyRunning(String),
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("container {0} is not running: only running containers have resource usage")]
    NoUsage(String),
    #[error("container {container} is not running ({source})")]
    Unreachable {
        container: String,
        #[source]
        source: std::io::Error,
    },
    #[error("container {0} was never started")]
    NeverStarted(String),
    #[error("container {0} is running: stop it first or remove it with force")]
    RemoveRunning(String),
    /// The monitor could not start an exec (its message).
    #[error("{0}")]
    ExecFailed(String),
    /// The container stopped before an exec started.
    #[error("container {0} stopped")]
    StoppedBeforeExec(String),
    /// The container stopped while a call about one of its execs waited for the monitor.
    #[error("container {0} stopped")]
    Stopped(String),
    #[error("container {0} stopped while the exec ran")]
    StoppedDuringExec(String),
    #[error("lost the container's monitor: {0}")]
    MonitorLost(#[source] std::io::Error),
    #[error("lost the container's monitor before its exit status arrived")]
    ExitLost,
    #[error("the container went away while waiting")]
    WaitAborted,
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Internal(String),
}

impl From<NetError> for ContainerError {
    fn from(e: NetError) -> Self {
        match e {
            NetError::System(_) => ContainerError::NetworkSetup(e),
            e => ContainerError::Network(e),
        }
    }
}

/// An I/O error while doing `what`.
pub(super) fn io(what: &'static str) -> impl Fn(std::io::Error) -> ContainerError {
    move |source| ContainerError::Io { what, source }
}

/// Refuses a NUL byte in a request's text field.
pub fn no_nul<'a>(field: &'static str, values: impl IntoIterator<Item = &'a str>) -> Result<(), ContainerError> {
    if values.into_iter().any(|v| v.contains('\0')) { Err(ContainerError::Nul { field }) } else { Ok(()) }
}
