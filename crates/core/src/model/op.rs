//! Operations: long-running work the controller does on request
//! (create a pair, switch it over, delete a VM), visible in the API.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    VmCreate,
    VmDelete,
    PairCreate,
    PairSwitchover,
    PairDelete,
    VmMigrate,
    PairMigrate,
    HostDrain,
    /// Started by the controller itself: a member's guest lost its role.
    PairRepair,
    /// Started by the controller itself: a pair was left mid-workflow by a
    /// controller that is gone; settled from what its guests report.
    PairRecover,
    /// Started by the controller itself: the ACT's host is fenced; the SBY
    /// is promoted.
    PairFailover,
    /// Started by the controller itself: a member's host is fenced; the
    /// member is re-created on a live host as the new SBY (autoheal).
    PairHeal,
    /// S5: a VM moves to the site its replica is in (on order or by its
    /// site policy).
    SiteSwitch,
}

impl OpKind {
    pub const ALL: [OpKind; 13] = [
        OpKind::VmCreate,
        OpKind::VmDelete,
        OpKind::PairCreate,
        OpKind::PairSwitchover,
        OpKind::PairDelete,
        OpKind::VmMigrate,
        OpKind::PairMigrate,
        OpKind::HostDrain,
        OpKind::PairRepair,
        OpKind::PairRecover,
        OpKind::PairFailover,
        OpKind::PairHeal,
        OpKind::SiteSwitch,
    ];

    /// Its name on the wire (and in metrics' labels).
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::VmCreate => "vm_create",
            OpKind::VmDelete => "vm_delete",
            OpKind::PairCreate => "pair_create",
            OpKind::PairSwitchover => "pair_switchover",
            OpKind::PairDelete => "pair_delete",
            OpKind::VmMigrate => "vm_migrate",
            OpKind::PairMigrate => "pair_migrate",
            OpKind::HostDrain => "host_drain",
            OpKind::PairRepair => "pair_repair",
            OpKind::PairRecover => "pair_recover",
            OpKind::PairFailover => "pair_failover",
            OpKind::PairHeal => "pair_heal",
            OpKind::SiteSwitch => "site_switch",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpState {
    Running,
    Succeeded,
    Failed,
}

impl OpState {
    pub fn as_str(self) -> &'static str {
        match self {
            OpState::Running => "running",
            OpState::Succeeded => "succeeded",
            OpState::Failed => "failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_wire_names() {
        for k in OpKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        for s in [OpState::Running, OpState::Succeeded, OpState::Failed] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    #[serde(default = "super::schema_version")]
    pub v: u32,
    pub id: String,
    pub kind: OpKind,
    /// `vm/<name>` or `pair/<name>`.
    pub subject: String,
    pub state: OpState,
    /// Latest progress line, e.g. "waiting for guests (1/2 ready)".
    pub progress: String,
    pub started_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
