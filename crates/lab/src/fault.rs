//! Faults an operator injects into a lab host (`duplex lab fault`), and
//! the lab's power switch, the fence device of the lab's controller:
//!
//! - power-off: every process in the host's namespace is killed (agent,
//!   QEMU) and its uplink is taken down, as an IPMI power-off would;
//! - partition: the host loses its management link (nothing reaches or
//!   leaves the host's own address; its VMs' frames still pass), its
//!   service link (its VMs' frames no longer cross the uplink; the agent
//!   still talks to the controller), or both;
//! - heal: links and filters back; a powered-off host is powered on (its
//!   agent started again, with no VMs, as after a real power cycle).
//!
//! Partitions are nftables tables in the host's namespace, gone with it.

use crate::agent;
use crate::error::LabError;
use crate::ip::ip_in;
use crate::netns;
use crate::state::{AgentState, LabState};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long killed processes get to disappear.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// The nftables table a partition adds (per family).
const TABLE: &str = "duplex_fault";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    /// The host's own address: agent <-> controller and other agents.
    Mgmt,
    /// Its VMs' traffic over the uplink.
    Service,
    All,
}

/// What is done to a lab host now, kept in the lab's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFaults {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub powered_off: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut: Option<Link>,
}

fn host<'a>(state: &'a mut LabState, name: &str) -> Result<&'a mut AgentState, LabError> {
    let known: Vec<String> = state.agents.iter().map(|a| a.name.clone()).collect();
    state
        .agents
        .iter_mut()
        .find(|a| a.name == name)
        .ok_or_else(|| {
            LabError::Task(format!(
                "lab `{}` has no host `{name}` (hosts: {})",
                state.lab,
                known.join(", ")
            ))
        })
}

fn uplink(state: &LabState, a: &AgentState, up: bool) -> Result<(), LabError> {
    let plan = state.plan()?;
    let h = plan
        .host_plans()
        .into_iter()
        .find(|h| h.n == a.n)
        .ok_or_else(|| LabError::Task(format!("no plan for host {}", a.name)))?;
    let how = if up { "up" } else { "down" };
    ip_in(&h.switch_ns, &["link", "set", &h.switch_if, how])?;
    ip_in(&a.ns, &["link", "set", h.uplink_if, how])?;
    Ok(())
}

/// Powers host `name` of `lab` off. Idempotent; answers what it did.
pub fn power_off(lab: &str, name: &str) -> Result<String, LabError> {
    let _lock = crate::lock::lock()?;
    let mut state = crate::LabPlan::load_state(lab)?;
    let a = host(&mut state, name)?.clone();
    let pids = netns::pids(&a.ns)?;
    for pid in &pids {
        crate::procs::signal(*pid, libc::SIGKILL);
    }
    let left = crate::procs::wait_gone(&pids, KILL_WAIT);
    if !left.is_empty() {
        return Err(LabError::Task(format!(
            "{name}: processes {left:?} survived SIGKILL"
        )));
    }
    uplink(&state, &a, false)?;
    let was_off = std::mem::replace(&mut host(&mut state, name)?.faults.powered_off, true);
    state.write()?;
    Ok(match was_off {
        true => format!("{name} was already off"),
        false => format!(
            "{name} powered off: {} processes killed, uplink down",
            pids.len()
        ),
    })
}

/// Loads `script` into nftables in namespace `ns` (from a file under the
/// host's data directory, kept for the operator to read).
fn nft(a: &AgentState, script: &str) -> Result<(), LabError> {
    let path = a.data_dir.join("fault.nft");
    std::fs::write(&path, script).map_err(|e| LabError::io("cannot write", &path, e))?;
    let file = path.display().to_string();
    crate::ip::run("ip", &["netns", "exec", &a.ns, "nft", "-f", &file]).map(drop)
}

/// The rules of a cut of `link` on a host whose uplink is `uplink`.
fn rules(link: Link, uplink: &str) -> String {
    let mgmt = format!(
        "table inet {TABLE} {{\n chain in {{ type filter hook input priority 0; iifname \"lo\" accept; drop; }}\n chain out {{ type filter hook output priority 0; oifname \"lo\" accept; drop; }}\n}}\n"
    );
    let service = format!(
        "table bridge {TABLE} {{\n chain cut {{ type filter hook forward priority 0; iifname \"{uplink}\" drop; oifname \"{uplink}\" drop; }}\n}}\n"
    );
    match link {
        Link::Mgmt => mgmt,
        Link::Service => service,
        Link::All => mgmt + &service,
    }
}

fn clear_rules(ns: &str) {
    for family in ["inet", "bridge"] {
        let mut cmd = netns::netns_std_command(ns, "nft");
        cmd.args(["delete", "table", family, TABLE]);
        let _ = cmd.output();
    }
}

/// Cuts `link` of host `name` (replacing an earlier cut).
pub fn partition(lab: &str, name: &str, link: Link) -> Result<String, LabError> {
    let _lock = crate::lock::lock()?;
    let mut state = crate::LabPlan::load_state(lab)?;
    let a = host(&mut state, name)?.clone();
    if a.faults.powered_off {
        return Err(LabError::Task(format!(
            "{name} is powered off; `duplex lab fault heal {name}` first"
        )));
    }
    clear_rules(&a.ns);
    nft(&a, &rules(link, "uplink"))?;
    host(&mut state, name)?.faults.cut = Some(link);
    state.write()?;
    Ok(format!("{name}: {link:?} link cut"))
}

/// Undoes every fault on host `name`; powers it on if it was off.
pub async fn heal(lab: &str, name: &str) -> Result<String, LabError> {
    let (l, n) = (lab.to_string(), name.to_string());
    let (msg, restart) = tokio::task::spawn_blocking(move || heal_links(&l, &n))
        .await
        .map_err(|e| LabError::Task(e.to_string()))??;
    if let Some(url) = restart {
        let client = agent::http_client(lab)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while agent::get_host(&client, &url).await.is_err() {
            if tokio::time::Instant::now() > deadline {
                return Err(LabError::Task(format!(
                    "{name}'s agent did not answer at {url} within 60 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(msg)
}

fn heal_links(lab: &str, name: &str) -> Result<(String, Option<String>), LabError> {
    let _lock = crate::lock::lock()?;
    let mut state = crate::LabPlan::load_state(lab)?;
    let a = host(&mut state, name)?.clone();
    clear_rules(&a.ns);
    uplink(&state, &a, true)?;
    let mut done = vec!["links restored".to_string()];
    let mut restart = None;
    if a.faults.powered_off {
        let plan = state.plan()?;
        let h = plan
            .host_plans()
            .into_iter()
            .find(|h| h.n == a.n)
            .ok_or_else(|| LabError::Task(format!("no plan for host {name}")))?;
        let child = agent::spawn(
            &state.lab,
            &h,
            &state.duplex_bin,
            &state.image_dir,
            &state.agent_args,
        )?;
        host(&mut state, name)?.pid = child.id() as i32;
        done.push(format!("powered on (agent pid {})", child.id()));
        restart = Some(a.url.clone());
    }
    host(&mut state, name)?.faults = HostFaults::default();
    state.write()?;
    Ok((format!("{name}: {}", done.join(", ")), restart))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_name_the_uplink_and_leave_loopback() {
        let r = rules(Link::Mgmt, "uplink");
        assert!(r.contains("table inet duplex_fault") && r.contains("iifname \"lo\" accept"));
        assert!(!r.contains("bridge"));
        let r = rules(Link::Service, "uplink");
        assert!(r.contains("table bridge duplex_fault") && r.contains("iifname \"uplink\" drop"));
        assert!(!r.contains("inet"));
        let r = rules(Link::All, "uplink");
        assert!(r.contains("inet") && r.contains("bridge"));
    }
}
