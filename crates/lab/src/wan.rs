//! The WAN of a two-site lab: the veth `wan` between the site routers
//! `<lab>-sw` and `<lab>-swb`, each end delaying by half the round trip
//! and dropping the configured share, with netem:
//! `tc qdisc replace dev wan root netem delay <rtt/2> [loss <pct>%]`.
//!
//! Kernels without netem (`CONFIG_NET_SCH_NETEM` unset): `up` probes for it
//! and, lacking it, puts a user-space relay in the middle instead. The
//! namespace `<lab>-wan` then holds the other end of each site's `wan`
//! veth (`wan-a`, `wan-b`), and `duplex lab wan-relay` there copies frames
//! between them with the same delay and loss ([`crate::wan_relay`]).
//! Addresses and routes are the same either way.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::agent::{log_tail, spawn_daemon};
use crate::error::LabError;
use crate::ip::{ip, require_root};
use crate::netns::{self, netns_std_command};
use crate::plan::{LabPlan, Site, WanSettings, WAN_IF};
use crate::{lock, procs};

/// How long a fresh relay gets to open its interfaces (or fail).
const RELAY_SETTLE: Duration = Duration::from_millis(300);
/// How long a relay being replaced gets between SIGTERM and SIGKILL.
const RELAY_STOP: Duration = Duration::from_secs(2);

/// What delays the WAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WanVia {
    /// netem on both `wan` ends.
    Netem,
    /// The user-space relay in `<lab>-wan` (no netem in this kernel).
    Relay,
}

/// The user-space WAN relay, as the state file records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayState {
    pub pid: i32,
    /// `<lab>-wan`.
    pub ns: String,
    pub log: PathBuf,
}

/// The WAN of a two-site lab, as the state file records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WanState {
    #[serde(flatten)]
    pub settings: WanSettings,
    pub via: WanVia,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelayState>,
}

impl WanState {
    /// The relay's namespace, if the WAN runs through one.
    pub fn relay_ns(&self) -> Option<&str> {
        self.relay.as_ref().map(|r| r.ns.as_str())
    }
}

impl std::fmt::Display for WanState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.relay {
            Some(r) => write!(
                f,
                "{} (user-space relay in {}, pid {}: this kernel has no netem)",
                self.settings, r.ns, r.pid
            ),
            None => write!(
                f,
                "{} (netem on `{WAN_IF}` of both site switches)",
                self.settings
            ),
        }
    }
}

/// `ip netns exec <ns> tc args…`.
fn tc(ns: &str, args: &[&str]) -> Result<String, LabError> {
    let mut v = vec!["netns", "exec", ns, "tc"];
    v.extend_from_slice(args);
    ip(&v)
}

/// Whether netem works in namespace `ns` (tried on its `lo`).
fn probe_netem(ns: &str) -> Result<(), LabError> {
    tc(
        ns,
        &["qdisc", "add", "dev", "lo", "root", "netem", "delay", "0us"],
    )?;
    tc(ns, &["qdisc", "del", "dev", "lo", "root"]).map(drop)
}

/// How `plan`'s WAN is delayed: netem if the kernel has it (probed in
/// the switch namespace of site a, which must exist), else the relay.
pub(crate) fn choose(plan: &LabPlan) -> WanVia {
    match probe_netem(&plan.switch_ns()) {
        Ok(()) => WanVia::Netem,
        Err(e) => {
            tracing::warn!(
                "netem is not available ({e}); the WAN of lab `{}` runs through a user-space relay in {}",
                plan.lab(),
                plan.wan_ns()
            );
            WanVia::Relay
        }
    }
}

/// Delays the WAN of `plan` (built by `topology::build`) via `via`.
pub(crate) fn start(plan: &LabPlan, via: WanVia, duplex_bin: &Path) -> Result<WanState, LabError> {
    let settings = plan.wan().ok_or_else(|| LabError::OneSite {
        lab: plan.lab().to_string(),
    })?;
    tracing::info!("WAN of lab `{}`: {settings}", plan.lab());
    let relay = match via {
        WanVia::Netem => {
            apply_netem(plan, settings)?;
            None
        }
        WanVia::Relay => Some(spawn_relay(plan, settings, duplex_bin)?),
    };
    Ok(WanState {
        settings,
        via,
        relay,
    })
}

/// netem with `settings` on the `wan` end of every site switch (replacing
/// what is there).
fn apply_netem(plan: &LabPlan, settings: WanSettings) -> Result<(), LabError> {
    let extra = settings.netem_args();
    for site in plan.site_list() {
        let ns = plan.site_switch_ns(site);
        let mut args = vec!["qdisc", "replace", "dev", WAN_IF, "root", "netem"];
        args.extend(extra.iter().map(String::as_str));
        tc(&ns, &args)?;
    }
    Ok(())
}

/// Starts `duplex lab wan-relay` in `<lab>-wan`; refuses if it exits at once.
fn spawn_relay(
    plan: &LabPlan,
    settings: WanSettings,
    duplex_bin: &Path,
) -> Result<RelayState, LabError> {
    let ns = plan.wan_ns();
    let log = plan.state_dir().join("wan.log");
    let (rtt, loss) = (settings.rtt_ms.to_string(), settings.loss_pct.to_string());
    let mut cmd = netns_std_command(&ns, duplex_bin);
    cmd.args(["lab", "wan-relay"])
        .args(["--a", plan.wan_relay_if(Site::A)])
        .args(["--b", plan.wan_relay_if(Site::B)])
        .args(["--rtt-ms", &rtt, "--loss-pct", &loss])
        .current_dir(plan.state_dir());
    let mut child =
        spawn_daemon(cmd, &log).map_err(|(cmdline, source)| LabError::Spawn { cmdline, source })?;
    std::thread::sleep(RELAY_SETTLE);
    if let Ok(Some(status)) = child.try_wait() {
        return Err(LabError::ServiceFailed {
            lab: plan.lab().to_string(),
            what: "the WAN relay".into(),
            detail: format!("it exited ({status})"),
            log_tail: log_tail(&log),
            log,
        });
    }
    Ok(RelayState {
        pid: child.id() as i32,
        ns,
        log,
    })
}

/// Ends relay `r` if it still runs in its namespace.
fn stop_relay(r: &RelayState) -> Result<(), LabError> {
    if netns::pid_in_ns(r.pid, &r.ns) != Some(true) {
        return Ok(());
    }
    procs::signal(r.pid, libc::SIGTERM);
    if procs::wait_gone(&[r.pid], RELAY_STOP).is_empty() {
        return Ok(());
    }
    procs::signal(r.pid, libc::SIGKILL);
    match procs::wait_gone(&[r.pid], RELAY_STOP).as_slice() {
        [] => Ok(()),
        left => Err(LabError::Task(format!(
            "the WAN relay (pid {left:?}) survived SIGKILL"
        ))),
    }
}

/// `duplex lab wan`: changes the WAN of running two-site lab `lab`; an
/// omitted value keeps the current one. Answers the new WAN.
pub fn set(lab: &str, rtt_ms: Option<u32>, loss_pct: Option<f64>) -> Result<WanState, LabError> {
    // Refuse bad values before anything else.
    WanSettings::new(rtt_ms.unwrap_or(0), loss_pct.unwrap_or(0.0))?;
    require_root()?;
    let _lock = lock::lock()?;
    let mut state = LabPlan::load_state(lab)?;
    let Some(old) = state.wan.clone() else {
        return Err(LabError::OneSite {
            lab: lab.to_string(),
        });
    };
    let settings = WanSettings::new(
        rtt_ms.unwrap_or(old.settings.rtt_ms),
        loss_pct.unwrap_or(old.settings.loss_pct),
    )?;
    let plan = state.plan()?.with_wan(settings)?;
    if let Some(r) = &old.relay {
        stop_relay(r)?;
    }
    let new = start(&plan, old.via, &state.duplex_bin)?;
    state.wan = Some(new.clone());
    state.write()?;
    Ok(new)
}
