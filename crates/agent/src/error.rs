//! Agent errors, and how each maps to an HTTP answer.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use duplex_core::agent_api::{ErrorBody, ErrorDetail};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The guest refused an op before it changed anything (its role
    /// machine said no, or it has no configuration yet).
    #[error("{0}")]
    GuestUnchanged(String),
    /// The VM's guest has no control channel yet (booting, just moved
    /// here): the order was not sent, so it changed nothing.
    #[error("{0}")]
    GuestNotConnected(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Qemu(#[from] duplex_qemu::QemuError),
    #[error(transparent)]
    Image(#[from] duplex_image::ImageError),
    #[error(transparent)]
    Tap(#[from] duplex_net::tap::TapError),
    #[error(transparent)]
    Element(#[from] duplex_net::element::ElementError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("migration failed: {0}")]
    Migration(String),
    /// The `duplex-fence` header of an order is not a fencing token.
    #[error("{0}")]
    BadFence(String),
    /// The order carries a fencing token lower than one already obeyed.
    #[error("{0}")]
    StaleFence(String),
    /// The request body is over the limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// The caller has no identity of the cluster's CA (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's identity may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The agent cannot start with this configuration or state on disk.
    #[error("{0}")]
    Config(String),
}

pub use duplex_core::agent_api::{GUEST_NOT_CONNECTED, GUEST_UNCHANGED};

impl AgentError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
        let what = what.into();
        move |source| AgentError::Io { what, source }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            AgentError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            AgentError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            AgentError::Image(duplex_image::ImageError::UnknownImage { .. }) => {
                (StatusCode::BAD_REQUEST, "unknown_image")
            }
            AgentError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            AgentError::GuestUnchanged(_) => (StatusCode::CONFLICT, GUEST_UNCHANGED),
            AgentError::GuestNotConnected(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, GUEST_NOT_CONNECTED)
            }
            AgentError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            AgentError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            AgentError::Qemu(duplex_qemu::QemuError::NotFound(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "qemu_missing")
            }
            AgentError::Migration(_) => (StatusCode::BAD_GATEWAY, "migration_failed"),
            AgentError::BadFence(_) => (StatusCode::BAD_REQUEST, "bad_fence"),
            AgentError::StaleFence(_) => (StatusCode::CONFLICT, "stale_fence"),
            AgentError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            AgentError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "no_identity"),
            AgentError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for AgentError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_string(),
                message: self.to_string(),
            },
        };
        (status, Json(body)).into_response()
    }
}
