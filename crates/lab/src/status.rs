//! `status`: the state file checked against what is actually running.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::agent;
use crate::error::LabError;
use crate::netns;
use crate::plan::{self, lab_index, validate_lab_name};
use crate::procs;
use crate::state::{LabPhase, LabState, SiteState};
use crate::wan::WanState;

/// Overall verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LabHealth {
    /// State says up; every namespace, the link and every agent are fine.
    Up,
    /// State exists but something is missing, dead or not answering.
    Degraded,
    /// No state, but namespaces or the link of the lab exist (a crash).
    Leftovers,
    /// Nothing of the lab exists.
    Down,
}

impl fmt::Display for LabHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LabHealth::Up => "up",
            LabHealth::Degraded => "degraded",
            LabHealth::Leftovers => "leftovers (no complete state; `duplex lab down` removes them)",
            LabHealth::Down => "down",
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct NsStatus {
    pub name: String,
    pub present: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentStatus {
    pub name: String,
    pub ns: String,
    /// Its site in a two-site lab.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    pub pid: i32,
    /// The pid exists and is not a zombie.
    pub pid_alive: bool,
    /// The pid lives in `ns` (`None`: could not tell, e.g. not root).
    pub pid_in_ns: Option<bool>,
    pub url: String,
    /// `GET /v1/host` answered 2xx.
    pub answering: bool,
    pub http_status: Option<u16>,
    /// Body of `/v1/host` (JSON, or a string if it was not JSON).
    pub host: Option<serde_json::Value>,
    /// Why it is not answering.
    pub error: Option<String>,
}

/// What `status` found. Serialize it for `-o json`; `Display` is a table.
#[derive(Debug, Clone, Serialize)]
pub struct LabStatus {
    pub lab: String,
    pub index: u8,
    pub subnet: String,
    pub health: LabHealth,
    pub state_file: PathBuf,
    /// `None`: no (readable) state file.
    pub phase: Option<LabPhase>,
    pub created_at: Option<u64>,
    pub hosts: Option<u8>,
    pub mgmt_link: NsStatus,
    pub namespaces: Vec<NsStatus>,
    /// Namespaces named `<lab>-*` that the state does not list.
    pub stray_namespaces: Vec<String>,
    pub agents: Vec<AgentStatus>,
    /// The sites of a two-site lab (empty: one site).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<SiteState>,
    /// The WAN between them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wan: Option<WanState>,
    /// The WAN's user-space relay runs (`None`: the WAN has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wan_relay_alive: Option<bool>,
    /// Problems reading the state.
    pub notes: Vec<String>,
}

/// Live facts gathered without async (iproute2, /proc).
struct Live {
    namespaces: Vec<String>,
    mgmt_present: bool,
    /// Per agent: alive, in ns, probe allowed (or why not).
    agents: Vec<(bool, Option<bool>, Result<(), String>)>,
    /// The WAN relay's process lives in its namespace (`None`: no relay).
    relay_alive: Option<bool>,
}

/// Status of lab `lab`: state file plus live checks (namespaces, link,
/// agent pids, `GET /v1/host` of every agent). Does not need root, but
/// without it `pid_in_ns` may be unknown.
pub async fn status(lab: &str) -> Result<LabStatus, LabError> {
    validate_lab_name(lab)?;
    let mut notes = Vec::new();
    let state = match LabState::read(lab) {
        Ok(s) => s,
        Err(e @ LabError::BadState { .. }) => {
            notes.push(e.to_string());
            None
        }
        Err(e) => return Err(e),
    };

    let (lab2, state2) = (lab.to_string(), state.clone());
    let live = tokio::task::spawn_blocking(move || gather(&lab2, state2.as_ref()))
        .await
        .map_err(|e| LabError::Task(e.to_string()))??;

    let index = state.as_ref().map_or_else(|| lab_index(lab), |s| s.index);
    let mgmt_name = plan::mgmt_if(lab);
    let mut st = LabStatus {
        lab: lab.to_string(),
        index,
        subnet: format!("10.{index}.0.0/24"),
        health: LabHealth::Down,
        state_file: plan::state_file(lab),
        phase: state.as_ref().map(|s| s.phase),
        created_at: state.as_ref().map(|s| s.created_at),
        hosts: state.as_ref().map(|s| s.hosts),
        mgmt_link: NsStatus {
            name: mgmt_name,
            present: live.mgmt_present,
        },
        namespaces: Vec::new(),
        stray_namespaces: Vec::new(),
        agents: Vec::new(),
        sites: state.as_ref().map(|s| s.sites.clone()).unwrap_or_default(),
        wan: state.as_ref().and_then(|s| s.wan.clone()),
        wan_relay_alive: live.relay_alive,
        notes,
    };

    let Some(state) = state else {
        st.namespaces = live
            .namespaces
            .iter()
            .map(|n| NsStatus {
                name: n.clone(),
                present: true,
            })
            .collect();
        if !live.namespaces.is_empty() || live.mgmt_present {
            st.health = LabHealth::Leftovers;
        }
        return Ok(st);
    };

    let expected = state.namespaces();
    st.namespaces = expected
        .iter()
        .map(|n| NsStatus {
            name: n.clone(),
            present: live.namespaces.contains(n),
        })
        .collect();
    st.stray_namespaces = live
        .namespaces
        .iter()
        .filter(|n| !expected.contains(n))
        .cloned()
        .collect();

    let client = agent::http_client(&state.lab)?;
    let mut probes = tokio::task::JoinSet::new();
    for (i, (a, (_, _, allowed))) in state.agents.iter().zip(&live.agents).enumerate() {
        if allowed.is_ok() {
            let (client, url) = (client.clone(), a.url.clone());
            probes.spawn(async move { (i, agent::get_host(&client, &url).await) });
        }
    }
    let mut answers: Vec<Option<Result<agent::HostAnswer, String>>> =
        (0..state.agents.len()).map(|_| None).collect();
    while let Some(joined) = probes.join_next().await {
        let (i, answer) = joined.map_err(|e| LabError::Task(e.to_string()))?;
        if let Some(slot) = answers.get_mut(i) {
            *slot = Some(answer);
        }
    }

    for ((a, (alive, in_ns, allowed)), answer) in state.agents.iter().zip(live.agents).zip(answers)
    {
        let mut s = AgentStatus {
            name: a.name.clone(),
            ns: a.ns.clone(),
            site: a.site.clone(),
            pid: a.pid,
            pid_alive: alive,
            pid_in_ns: in_ns,
            url: a.url.clone(),
            answering: false,
            http_status: None,
            host: None,
            error: None,
        };
        match (allowed, answer) {
            (Err(why), _) => s.error = Some(why),
            (Ok(()), Some(Ok(ans))) => {
                s.answering = (200..300).contains(&ans.status);
                s.http_status = Some(ans.status);
                if !s.answering {
                    s.error = Some(format!("HTTP {}", ans.status));
                }
                s.host = Some(ans.body);
            }
            (Ok(()), Some(Err(e))) => s.error = Some(e),
            (Ok(()), None) => s.error = Some("not probed".into()),
        }
        st.agents.push(s);
    }

    let all_fine = state.phase == LabPhase::Up
        && st.mgmt_link.present
        && st.wan_relay_alive != Some(false)
        && st.namespaces.iter().all(|n| n.present)
        && st.agents.len() == state.hosts as usize
        && st
            .agents
            .iter()
            .all(|a| a.pid_alive && a.pid_in_ns != Some(false) && a.answering);
    let anything = st.mgmt_link.present || !live.namespaces.is_empty();
    st.health = if all_fine {
        LabHealth::Up
    } else if anything {
        LabHealth::Degraded
    } else {
        st.notes
            .push("the state file is stale: nothing of the lab is running".into());
        LabHealth::Down
    };
    Ok(st)
}

fn gather(lab: &str, state: Option<&LabState>) -> Result<Live, LabError> {
    let namespaces = netns::list_with_prefix(&plan::ns_prefix(lab))?;
    let mgmt = plan::mgmt_if(lab);
    let mgmt_present = netns::root_link_exists(&mgmt)?;
    let mut agents = Vec::new();
    for a in state.map(|s| s.agents.as_slice()).unwrap_or_default() {
        let alive = procs::alive(a.pid);
        let in_ns = if alive {
            netns::pid_in_ns(a.pid, &a.ns)
        } else {
            None
        };
        // Only send lab traffic if it stays on the lab's link.
        let allowed = if mgmt_present {
            netns::ensure_routed_via(a.ip, &mgmt).map_err(|e| e.to_string())
        } else {
            Err(format!("not probed: link {mgmt} is missing"))
        };
        agents.push((alive, in_ns, allowed));
    }
    let relay_alive = state
        .and_then(|s| s.wan.as_ref())
        .and_then(|w| w.relay.as_ref())
        .map(|r| procs::alive(r.pid) && netns::pid_in_ns(r.pid, &r.ns) != Some(false));
    Ok(Live {
        namespaces,
        mgmt_present,
        agents,
        relay_alive,
    })
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "NO"
    }
}

fn short(v: &serde_json::Value, max: usize) -> String {
    let s = match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let s = s.replace('\n', " ");
    if s.chars().count() > max {
        let cut: String = s.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        s
    }
}

impl LabStatus {
    /// The sites and the WAN of a two-site lab (nothing for one site).
    fn fmt_sites(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.sites {
            writeln!(
                f,
                "  site {}: switch/router {} ({}), client {} ({}), hosts {}",
                s.name,
                s.switch_ns,
                s.router_ip,
                s.client_ns,
                s.client_ip,
                s.hosts.join(", ")
            )?;
        }
        if let Some(w) = &self.wan {
            let ends: Vec<String> = self.sites.iter().map(|s| s.wan_ip.to_string()).collect();
            write!(f, "  WAN {}: {w}", ends.join(" <-> "))?;
            if self.wan_relay_alive == Some(false) {
                write!(f, " -- the relay is NOT running")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

impl fmt::Display for LabStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lab `{}` ({}): {}", self.lab, self.subnet, self.health)?;
        if let (Some(h), Some(t)) = (self.hosts, self.created_at) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(t);
            write!(f, ", {h} host(s)")?;
            if !self.sites.is_empty() {
                write!(f, " in {} sites", self.sites.len())?;
            }
            write!(f, ", created {} s ago", now.saturating_sub(t))?;
        }
        writeln!(f)?;
        if let Some(p) = self.phase {
            if p == LabPhase::Starting {
                writeln!(f, "  state: `up` did not finish (phase starting)")?;
            }
        }
        for n in &self.notes {
            writeln!(f, "  note: {n}")?;
        }
        if self.health == LabHealth::Down && self.namespaces.is_empty() {
            return Ok(());
        }
        self.fmt_sites(f)?;
        writeln!(f)?;
        writeln!(f, "{:<16} {:<8}", "NAMESPACE/LINK", "PRESENT")?;
        writeln!(
            f,
            "{:<16} {:<8} (root namespace, {})",
            self.mgmt_link.name,
            yes_no(self.mgmt_link.present),
            self.subnet.replace(".0/24", ".1/24")
        )?;
        for n in &self.namespaces {
            writeln!(f, "{:<16} {:<8}", n.name, yes_no(n.present))?;
        }
        for n in &self.stray_namespaces {
            writeln!(f, "{n:<16} {:<8} (not in the state)", "yes")?;
        }
        if !self.agents.is_empty() {
            writeln!(f)?;
            // The SITE column only in two-site labs.
            let site_col = |site: Option<&str>| match self.sites.is_empty() {
                true => String::new(),
                false => format!("{:<4} ", site.unwrap_or("-")),
            };
            writeln!(
                f,
                "{:<5} {}{:<10} {:>8} {:<6} {:<24} ANSWER",
                "HOST",
                site_col(Some("SITE")),
                "NAMESPACE",
                "PID",
                "ALIVE",
                "URL"
            )?;
            for a in &self.agents {
                let alive = match (a.pid_alive, a.pid_in_ns) {
                    (true, Some(false)) => "other",
                    (alive, _) => yes_no(alive),
                };
                let answer = match (&a.host, &a.error) {
                    (Some(h), None) => short(h, 60),
                    (_, Some(e)) => {
                        format!("NO: {}", short(&serde_json::Value::String(e.clone()), 60))
                    }
                    (None, None) => "NO".into(),
                };
                writeln!(
                    f,
                    "{:<5} {}{:<10} {:>8} {:<6} {:<24} {answer}",
                    a.name,
                    site_col(a.site.as_deref()),
                    a.ns,
                    a.pid,
                    alive,
                    a.url
                )?;
            }
        }
        Ok(())
    }
}
