use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error(
        "QEMU binary `{0}` not found: install it with ./setup.sh (Debian package qemu-system-x86)"
    )]
    NotFound(PathBuf),
    #[error("cannot start `{bin}`: {source}")]
    Spawn {
        bin: PathBuf,
        source: std::io::Error,
    },
    #[error("QEMU exited during start-up ({status}); its log ends with:\n{log_tail}")]
    EarlyExit { status: String, log_tail: String },
    #[error("QMP socket {} did not answer within {secs} s", path.display())]
    QmpTimeout { path: PathBuf, secs: u64 },
    #[error("QMP I/O on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("QMP command `{cmd}` failed: {class}: {desc}")]
    Command {
        cmd: String,
        class: String,
        desc: String,
    },
    #[error("QMP connection closed (QEMU exited?)")]
    Disconnected,
    #[error("QMP protocol error: {0}")]
    Protocol(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("file {}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl QemuError {
    pub(crate) fn not_found_or_spawn(bin: &Path, e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::NotFound {
            QemuError::NotFound(bin.to_path_buf())
        } else {
            QemuError::Spawn {
                bin: bin.to_path_buf(),
                source: e,
            }
        }
    }
}
