//! A host as the controller knows it.

use crate::agent_api::{AccelInfo, HostCapacity};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Heartbeating and open for new VMs.
    Ready,
    /// Set by the operator: keeps its VMs, takes no new ones.
    Maintenance,
    /// No heartbeat for longer than the failure timeout.
    Failed,
    /// Held in reserve: takes no VMs until the operator or autoheal uses it.
    Spare,
}

impl HostState {
    pub const ALL: [HostState; 4] = [
        HostState::Ready,
        HostState::Maintenance,
        HostState::Failed,
        HostState::Spare,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Ready => "ready",
            HostState::Maintenance => "maintenance",
            HostState::Failed => "failed",
            HostState::Spare => "spare",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    #[serde(default = "super::schema_version")]
    pub v: u32,
    pub name: String,
    /// Base URL of the host's agent.
    pub url: String,
    pub capacity: HostCapacity,
    pub state: HostState,
    /// The site (data centre) the host is in.
    #[serde(default = "default_site")]
    pub site: String,
    /// Where the host sits in the network (rack / leaf), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel: Option<AccelInfo>,
    /// Unix ms of the first registration.
    pub registered_ms: u64,
    /// The state it had when it was marked failed; restored when it reports again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_failure: Option<HostState>,
    /// The fence decided when it was found gone (`liveness`); cleared once
    /// it is back and holds no stale VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence: Option<super::liveness::HostFence>,
}

pub fn default_site() -> String {
    "default".into()
}
