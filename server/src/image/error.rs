//! Errors of the image domain (api/status.rs chooses the gRPC code of each).

use oci_client::errors::{OciDistributionError, OciErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{0}")]
    InvalidReference(#[from] super::reference::ReferenceError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Ambiguous(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// Content did not match its digest or size; nothing of it was stored.
    #[error("{0}")]
    DataLoss(String),
    /// The image cannot be used here (wrong platform, unsupported format, hostile layer beyond limits).
    #[error("{0}")]
    Unsupported(String),
    #[error("pull cancelled")]
    Cancelled,
    /// The image is used by a container and removal was not forced.
    #[error("image {0} is used by a container: remove the container first, or force")]
    InUse(String),
    /// A task doing `what` failed (panicked or was cancelled).
    #[error("{what}: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// The store's files could not be read or written.
    #[error("image store: {0}")]
    Store(#[from] std::io::Error),
    #[error("{0}")]
    Internal(String),
}

impl ImageError {
    /// Maps an oci-client error for `what` (e.g. "manifest for 127.0.0.1:5000/app:v1") from `registry`.
    pub fn from_registry(err: OciDistributionError, registry: &str, what: &str) -> Self {
        use OciDistributionError as E;
        match err {
            E::RegistryError { envelope, .. } => {
                let msg = envelope.errors.iter().map(|e| e.message.clone()).collect::<Vec<_>>().join("; ");
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                if codes.iter().any(|c| {
                    matches!(c, OciErrorCode::NameUnknown | OciErrorCode::ManifestUnknown | OciErrorCode::BlobUnknown)
                }) {
                    ImageError::NotFound(format!("{what} not found in registry {registry} ({msg})"))
                } else if codes.iter().any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied)) {
                    ImageError::PermissionDenied(format!(
                        "registry {registry} refused access to {what}: the repository does not exist or needs \
                         credentials ({msg})"
                    ))
                } else {
                    ImageError::Unavailable(format!("registry {registry} failed on {what}: {msg}"))
                }
            }
            E::ImageManifestNotFoundError(m) => {
                ImageError::NotFound(format!("{what} not found in registry {registry} ({m})"))
            }
            E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => ImageError::PermissionDenied(format!(
                "registry {registry} refused access to {what}: the repository does not exist or needs credentials"
            )),
            E::RequestError(e) => {
                ImageError::Unavailable(format!("cannot reach registry {registry}: {}", error_chain(&e)))
            }
            E::ServerError { code: 404, .. } => {
                ImageError::NotFound(format!("{what} not found in registry {registry}"))
            }
            E::ServerError { code, message, .. } => ImageError::Unavailable(format!(
                "registry {registry} answered HTTP {code} for {what}: {}",
                message.chars().take(200).collect::<String>()
            )),
            E::DigestError(e) => ImageError::DataLoss(format!("{what} from {registry} does not match its digest: {e}")),
            other => ImageError::Unavailable(format!("registry {registry} failed on {what}: {other}")),
        }
    }
}

/// An error and its sources on one line ("error sending request: connection refused").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
