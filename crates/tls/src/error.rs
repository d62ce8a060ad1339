use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{0}")]
    Identity(#[from] duplex_core::identity::IdentityError),
    #[error("making a certificate: {0}")]
    Make(String),
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Usage(String),
}

impl TlsError {
    pub(crate) fn io(
        what: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> TlsError {
        let path = path.to_path_buf();
        move |source| TlsError::Io { what, path, source }
    }

    pub(crate) fn file(path: &std::path::Path, reason: impl std::fmt::Display) -> TlsError {
        TlsError::File {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

impl From<rcgen::Error> for TlsError {
    fn from(e: rcgen::Error) -> Self {
        TlsError::Make(e.to_string())
    }
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        TlsError::Config(e.to_string())
    }
}
