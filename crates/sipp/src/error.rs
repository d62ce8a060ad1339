//! Every way a sipp run can fail.

use std::path::PathBuf;

use crate::parse::ParseError;

/// A [`SippRun`](crate::SippRun) that cannot be run as written. Found by
/// [`SippRun::validate`](crate::SippRun::validate), before anything starts.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("call rate must be a finite number above 0 cps, not {0}")]
    Rate(f64),

    #[error("the run has no end: give `calls` (-m), `duration` (-timeout) or both")]
    NoEnd,

    #[error("`calls` must be at least 1")]
    ZeroCalls,

    #[error("`duration` must be a whole number of seconds, at least 1 s (sipp's -timeout counts whole seconds), not {0:?}")]
    Duration(std::time::Duration),

    #[error("`recv_timeout` must be at least 1 ms")]
    ZeroRecvTimeout,

    #[error("target {0} is not a place to send calls to (unspecified address or port 0)")]
    Target(std::net::SocketAddr),

    #[error("`local_port` must not be 0 (leave it out for a port chosen by the system)")]
    LocalPort,

    #[error("`work_dir` must be an absolute path, not {}", .0.display())]
    WorkDir(PathBuf),

    #[error("`timeout` {timeout:?} is too short: this run needs at least {needed:?} (calls / rate + call length, or duration + call length)")]
    Timeout {
        timeout: std::time::Duration,
        needed: std::time::Duration,
    },
}

/// Errors of [`run`](crate::run), [`spawn`](crate::spawn) and
/// [`RunningSipp::wait`](crate::RunningSipp::wait). Messages name the file or
/// command concerned and, when sipp itself failed, end with what it said.
#[derive(Debug, thiserror::Error)]
pub enum SippError {
    #[error("invalid sipp run: {0}")]
    Config(#[from] ConfigError),

    #[error("scenario file {} does not exist", .0.display())]
    ScenarioMissing(PathBuf),

    #[error("cannot run `{cmdline}`: {source} (is sipp installed? Debian package sip-tester)")]
    Spawn {
        cmdline: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("sipp failed before running calls (exit code {exit_code:?}, {meaning}): {stderr}")]
    Fatal {
        exit_code: Option<i32>,
        meaning: String,
        stderr: String,
    },

    #[error("sipp did not write {} (exit code {exit_code:?}); its stderr: {stderr}", path.display())]
    MissingFile {
        path: PathBuf,
        exit_code: Option<i32>,
        stderr: String,
    },

    #[error("cannot parse {}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: ParseError,
    },

    #[error("the task supervising sipp ended abnormally: {0}")]
    Supervisor(String),
}
