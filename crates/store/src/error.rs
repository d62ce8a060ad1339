//! The store's error type.

use std::path::PathBuf;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A compare-and-set precondition ([`crate::Expect`]) did not hold.
    #[error(
        "compare-and-set on key `{key}` failed: expected {expected}, found {}",
        found_text(*found)
    )]
    Conflict {
        key: String,
        /// The precondition, e.g. `absent` or `revision 7`.
        expected: String,
        /// The key's revision at the time (None: absent).
        found: Option<u64>,
    },

    /// A fenced write was refused: this store instance no longer leads.
    #[error(
        "not the leader any more: leadership token {token} was superseded or has expired; \
         stop acting as leader and campaign again"
    )]
    NotLeader { token: u64 },

    /// Another process holds the embedded store's file.
    #[error(
        "state store {} is locked by another process (is another controller running \
         with the same data directory?); stop it or use another data directory",
        path.display()
    )]
    Locked { path: PathBuf },

    /// etcd could not be reached or did not answer in time.
    #[error(
        "etcd at {endpoint} is unavailable: {reason} \
         (is etcd running at {endpoint}? start it or pass --etcd-endpoints)"
    )]
    Unavailable { endpoint: String, reason: String },

    /// etcd answered with an error.
    #[error("etcd at {endpoint}: {reason}")]
    Etcd { endpoint: String, reason: String },

    /// The embedded store's file could not be read or written.
    #[error("state store {}: {source}", path.display())]
    Embedded {
        path: PathBuf,
        #[source]
        source: Box<redb::Error>,
    },

    /// The embedded store's file holds something it cannot have written.
    #[error("state store {} is corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },

    /// The key cannot be used.
    #[error("invalid key `{key}`: {reason}")]
    InvalidKey { key: String, reason: String },

    /// Running a local etcd server ([`crate::etcd_server`]) failed.
    #[error("etcd server: {0}")]
    Server(String),

    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn found_text(found: Option<u64>) -> String {
    match found {
        None => "absent".into(),
        Some(r) => format!("revision {r}"),
    }
}
