//! The one place where domain errors become gRPC statuses: each error's code is chosen here, its message is
//! the error's own.

use tonic::{Code, Status};

use crate::containers::ContainerError;
use crate::image::ImageError;
use crate::network::NetError;

/// The gRPC code answering a container error.
pub fn container_code(e: &ContainerError) -> Code {
    use ContainerError as E;
    match e {
        E::Invalid(_) | E::Nul { .. } | E::NameRequired | E::Ambiguous { .. } | E::Image(_) | E::Limits(_) => {
            Code::InvalidArgument
        }
        E::Network(NetError::Invalid(_)) => Code::InvalidArgument,
        E::Network(_) => Code::FailedPrecondition,
        E::NoSuchContainer(_) | E::NoSuchPod(_) | E::NoSuchExec { .. } | E::ImageNotPulled { .. } => Code::NotFound,
        E::NameInUse(_) => Code::AlreadyExists,
        E::AlreadyRunning(_)
        | E::NotRunning(_)
        | E::NoUsage(_)
        | E::Unreachable { .. }
        | E::NeverStarted(_)
        | E::RemoveRunning(_)
        | E::PodNotReady(_)
        | E::ExecFailed(_)
        | E::SetupFailed { .. }
        | E::Damaged { .. }
        | E::StoppedBeforeExec(_) => Code::FailedPrecondition,
        E::Stopped(_) | E::StoppedDuringExec(_) => Code::Aborted,
        E::MonitorLost(_) | E::ExitLost => Code::Unavailable,
        E::NetworkSetup(_) | E::WaitAborted | E::Io { .. } | E::Internal(_) => Code::Internal,
    }
}

/// The gRPC code answering an image error.
pub fn image_code(e: &ImageError) -> Code {
    match e {
        ImageError::InvalidReference(_) | ImageError::Ambiguous(_) => Code::InvalidArgument,
        ImageError::NotFound(_) => Code::NotFound,
        ImageError::Unavailable(_) => Code::Unavailable,
        ImageError::PermissionDenied(_) => Code::PermissionDenied,
        ImageError::DataLoss(_) => Code::DataLoss,
        ImageError::Unsupported(_) | ImageError::InUse(_) => Code::FailedPrecondition,
        ImageError::Cancelled => Code::Cancelled,
        ImageError::Task { .. } | ImageError::Store(_) | ImageError::Internal(_) => Code::Internal,
    }
}

impl From<ContainerError> for Status {
    fn from(e: ContainerError) -> Self {
        Status::new(container_code(&e), e.to_string())
    }
}

impl From<ImageError> for Status {
    fn from(e: ImageError) -> Self {
        Status::new(image_code(&e), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_kind_of_error() {
        let status = Status::from(ContainerError::NoSuchContainer("web".into()));
        assert_eq!((status.code(), status.message()), (Code::NotFound, "no such container: web"));
        let status = Status::from(ContainerError::Nul { field: "env" });
        assert_eq!((status.code(), status.message()), (Code::InvalidArgument, "env must not contain a NUL byte"));
        let status = Status::from(ContainerError::from(NetError::Unavailable("port 80 is in use".into())));
        assert_eq!((status.code(), status.message()), (Code::FailedPrecondition, "port 80 is in use"));
        let status = Status::from(ImageError::from(std::io::Error::other("disk full")));
        assert_eq!((status.code(), status.message()), (Code::Internal, "image store: disk full"));
    }
}
