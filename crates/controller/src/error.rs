//! Errors of the controller: the API's JSON error answer, and start-up failures.

use crate::repo::RepoError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use duplex_core::agent_api::{ErrorBody, ErrorDetail};
use duplex_store::StoreError;

/// The error code of an instance that does not lead (it carried nothing out).
pub const NOT_LEADER: &str = "not_leader";

/// An API error: HTTP status, stable code, message that says what to do.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    pub fn unauthorized(code: &'static str, message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_leader(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, NOT_LEADER, message)
    }
}

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> Self {
        let status = match &e {
            RepoError::Store(StoreError::Conflict { .. }) | RepoError::Contended { .. } => {
                StatusCode::CONFLICT
            }
            RepoError::Store(StoreError::NotLeader { .. }) => {
                return ApiError::not_leader(format!(
                    "this controller lost its leadership ({e}); ask the current leader"
                ))
            }
            RepoError::Store(StoreError::Unavailable { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            RepoError::Missing(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let code = match status {
            StatusCode::CONFLICT => "conflict",
            StatusCode::SERVICE_UNAVAILABLE => "store_unavailable",
            StatusCode::NOT_FOUND => "not_found",
            _ => "store_error",
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(
        "cannot listen on {addr}: {source} (is another controller running there? use --listen)"
    )]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("topology file {path}: {reason}")]
    Topology { path: String, reason: String },
    #[error("the controller's TLS bundle: {0}; make it on the CA's machine with `duplex pki issue controller --ip <its IP> --out <dir>` and pass --tls-dir <dir>")]
    Tls(duplex_tls::TlsError),
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    ExternalDisk(#[from] duplex_extdisk::ExtDiskError),
    #[error("lost the leader lease (token {token}): stopping so that only the new leader acts")]
    Deposed { token: u64 },
}
