//! What switches the lab: the kernel's bridge `br0` in the switch
//! namespace (the default), or the Duplex switch (`lab up --switch
//! duplex`, S2 embodiment B): `duplex switch` in the switch namespace with
//! every host's uplink as a host port and the client and management links
//! as edge ports, its counters in `switch.json` of the lab's state
//! directory. Its agents then send their epoch messages out of `uplink`.

use crate::agent::spawn_daemon;
use crate::error::LabError;
use crate::netns::netns_std_command;
use crate::plan::LabPlan;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SwitchKind {
    #[default]
    Bridge,
    Duplex,
}

impl std::str::FromStr for SwitchKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bridge" => Ok(SwitchKind::Bridge),
            "duplex" => Ok(SwitchKind::Duplex),
            _ => Err(format!("`{s}` is neither `bridge` nor `duplex`")),
        }
    }
}

/// The Duplex switch of a lab, as its state file records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchState {
    pub pid: i32,
    /// Its counters and held streams, rewritten every second.
    pub stats: PathBuf,
    pub log: PathBuf,
}

/// The agent flag that points agents at the Duplex switch.
pub fn agent_args(plan: &LabPlan) -> Vec<String> {
    let uplink = plan
        .host_plans()
        .first()
        .map(|h| h.uplink_if)
        .unwrap_or("uplink");
    vec!["--output-switch".into(), uplink.into()]
}

/// `duplex switch` on every port of the switch namespace.
pub(crate) fn start(plan: &LabPlan, duplex_bin: &Path) -> Result<SwitchState, LabError> {
    let dir = plan.state_dir();
    let (stats, log) = (dir.join("switch.json"), dir.join("switch.log"));
    let mut cmd = netns_std_command(&plan.switch_ns(), duplex_bin);
    cmd.arg("switch");
    for h in plan.host_plans() {
        cmd.args(["--port", &format!("{}=host", h.switch_if)]);
    }
    cmd.args(["--port", plan.client_switch_if()])
        .args(["--port", plan.mgmt_switch_if()])
        .arg("--stats")
        .arg(&stats)
        .current_dir(&dir);
    let child = spawn_daemon(cmd, &log).map_err(|(cmdline, source)| LabError::AgentSpawn {
        host: "switch".into(),
        cmdline,
        source,
    })?;
    tracing::info!(
        "Duplex switch started in {} (pid {})",
        plan.switch_ns(),
        child.id()
    );
    Ok(SwitchState {
        pid: child.id() as i32,
        stats,
        log,
    })
}
