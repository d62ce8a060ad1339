//! Every way a lab command can fail.

use std::path::PathBuf;

/// Errors of the lab. Messages are meant for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the lab needs root (network namespaces)")]
    NotRoot,

    #[error("invalid lab name `{name}`: {reason} (a lab name is 1-6 characters of a-z and 0-9, starting with a letter)")]
    InvalidName { name: String, reason: String },

    #[error("a lab has 1 to 8 hosts, not {hosts}")]
    InvalidHosts { hosts: u8 },

    #[error("a lab has 1 or 2 sites, not {sites}")]
    InvalidSites { sites: u8 },

    #[error("{sites} sites need {sites} hosts at least (one per site), not {hosts}")]
    TooFewHostsForSites { hosts: u8, sites: u8 },

    #[error("the Duplex switch covers one site: `--switch duplex` cannot serve `--sites 2` (use the default bridge)")]
    DuplexSwitchOneSite,

    #[error("invalid WAN settings: {reason}")]
    InvalidWan { reason: String },

    #[error("lab `{lab}` has one site, so no WAN; `duplex lab up --sites 2` makes a lab with one")]
    OneSite { lab: String },

    #[error("lab `{lab}` is already up with {hosts} hosts; `duplex lab status` shows it, `duplex lab down` removes it")]
    AlreadyUp { lab: String, hosts: u8 },

    #[error("nothing to take down for lab `{lab}`: no namespaces `{lab}-*`, no link `{lab}mgmt`, no state directory")]
    NotUp { lab: String },

    #[error("lab `{lab}` is not up: no state file {}; `duplex lab up` starts it", path.display())]
    NoState { lab: String, path: PathBuf },

    #[error("`{cmdline}` failed ({status}): {stderr}")]
    Command {
        cmdline: String,
        status: String,
        stderr: String,
    },

    #[error("cannot run `{cmdline}`: {source}")]
    Spawn {
        cmdline: String,
        #[source]
        source: std::io::Error,
    },

    #[error("unexpected output of `{cmdline}`: {detail}")]
    Output { cmdline: String, detail: String },

    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("state file {} is damaged: {source}; `duplex lab down` removes the lab anyway", path.display())]
    BadState {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("cannot take lab `{lab}` up: its subnet {subnet} is already used in the root namespace ({used_by})")]
    SubnetInUse {
        lab: String,
        subnet: String,
        used_by: String,
    },

    #[error("cannot start the agent of host {host}: `{cmdline}`: {source}")]
    AgentSpawn {
        host: String,
        cmdline: String,
        #[source]
        source: std::io::Error,
    },

    #[error("the agent of host {host} exited ({status}) before answering; last lines of its agent.log:\n{log_tail}")]
    AgentExited {
        host: String,
        status: String,
        log_tail: String,
    },

    #[error("the agent of host {host} did not answer GET {url}/v1/host within {secs} s (last: {last}); last lines of its agent.log:\n{log_tail}")]
    AgentTimeout {
        host: String,
        url: String,
        secs: u64,
        last: String,
        log_tail: String,
    },

    #[error("refusing to send traffic to {ip}: the root namespace does not route it via `{dev}` (lab link missing?)")]
    NotOurRoute { ip: String, dev: String },

    #[error("lab `{lab}`: {what} did not come up: {detail}\nlast lines of {}:\n{log_tail}", log.display())]
    ServiceFailed {
        lab: String,
        what: String,
        detail: String,
        log: PathBuf,
        log_tail: String,
    },

    #[error("HTTP client: {0}")]
    Http(String),

    #[error("the lab's TLS: {0}")]
    Tls(String),

    #[error("internal task failed: {0}")]
    Task(String),
}

impl LabError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LabError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
