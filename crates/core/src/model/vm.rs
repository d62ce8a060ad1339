//! A VM as the controller wants it, and what it is seen to be.

use crate::agent_api::{VmInfo, VmState};
use crate::vm_spec::VmSpec;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    Running,
    /// Deletion requested: removed from the host, then from the store.
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    #[serde(default = "super::schema_version")]
    pub v: u32,
    pub spec: VmSpec,
    /// The host it is placed on.
    pub host: String,
    pub desired: Desired,
    /// The pair it belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair: Option<String>,
    pub created_ms: u64,
    /// PH3.0 / PH3.5: the data set its re-created guest is to be given
    /// before it gets a role (cleared once given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<crate::service_data::RestoreRef>,
    /// A replicated VM (S2): the host holding its replica, once epochs
    /// were started towards it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// S5: the site its replica is kept in, where its element buffers
    /// what that site sends the VM (`duplex site replicate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_site: Option<String>,
    /// S5: when it switches sites on its own (`duplex site policy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_policy: Option<crate::site_policy::SitePolicy>,
}

/// What the controller sees of a VM, from its host's latest report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmStatus {
    /// Not (yet) on its host.
    Pending,
    Booting,
    /// QEMU runs, the guest's control channel answers.
    Running,
    Paused,
    Migrating,
    Crashed,
    /// Its host has no heartbeat: state unknown.
    Unknown,
    /// Deletion under way.
    Deleting,
}

impl VmStatus {
    pub const ALL: [VmStatus; 8] = [
        VmStatus::Pending,
        VmStatus::Booting,
        VmStatus::Running,
        VmStatus::Paused,
        VmStatus::Migrating,
        VmStatus::Crashed,
        VmStatus::Unknown,
        VmStatus::Deleting,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            VmStatus::Pending => "pending",
            VmStatus::Booting => "booting",
            VmStatus::Running => "running",
            VmStatus::Paused => "paused",
            VmStatus::Migrating => "migrating",
            VmStatus::Crashed => "crashed",
            VmStatus::Unknown => "unknown",
            VmStatus::Deleting => "deleting",
        }
    }
}

/// The status of `vm` given whether its host is alive and what the host
/// last reported about it (`None`: not on the host).
pub fn observe(vm: &Vm, host_alive: bool, seen: Option<&VmInfo>) -> VmStatus {
    if vm.desired == Desired::Deleted {
        return VmStatus::Deleting;
    }
    if !host_alive {
        return VmStatus::Unknown;
    }
    match seen {
        None => VmStatus::Pending,
        Some(i) => match i.state {
            VmState::Booting => VmStatus::Booting,
            VmState::Running if i.guest.is_some() => VmStatus::Running,
            VmState::Running => VmStatus::Booting,
            VmState::Paused => VmStatus::Paused,
            VmState::MigratingOut | VmState::Incoming => VmStatus::Migrating,
            VmState::Crashed => VmStatus::Crashed,
        },
    }
}
