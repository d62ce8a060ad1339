//! `state.json`: what `up` created, for `status`, `down` and other commands.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::LabError;
use crate::plan::{self, LabPlan, Site};
use crate::wan::WanState;

/// How far `up` got. `Starting` on disk after a crash means the lab is
/// incomplete and the next `up` cleans it first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabPhase {
    Starting,
    Up,
}

/// One host's agent as started by `up`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// 1-based host number.
    pub n: u8,
    /// `h<n>`.
    pub name: String,
    /// `<lab>-h<n>`.
    pub ns: String,
    pub ip: Ipv4Addr,
    /// `https://10.i.0.(10+n):7070`.
    pub url: String,
    /// Pid of the agent (the `ip netns exec` process execs into it).
    pub pid: i32,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// Faults injected now (`duplex lab fault`).
    #[serde(default)]
    pub faults: crate::fault::HostFaults,
    /// Its site (`--site`) in a two-site lab.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

/// One site of a two-site lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteState {
    /// `a` or `b`.
    pub name: String,
    /// `<lab>-sw`, `<lab>-swb`: its switch and router.
    pub switch_ns: String,
    /// `<lab>-client`, `<lab>-clientb`.
    pub client_ns: String,
    pub client_ip: Ipv4Addr,
    /// Its router's address on the segment (`br0` of its switch).
    pub router_ip: Ipv4Addr,
    /// Its end of the WAN `/30`.
    pub wan_ip: Ipv4Addr,
    /// Names of its hosts.
    pub hosts: Vec<String>,
}

impl SiteState {
    fn new(plan: &LabPlan, site: Site) -> SiteState {
        SiteState {
            name: site.name().to_string(),
            switch_ns: plan.site_switch_ns(site),
            client_ns: plan.site_client_ns(site),
            client_ip: plan.site_client_ip(site),
            router_ip: plan.router_ip(site),
            wan_ip: plan.wan_ip(site),
            hosts: plan
                .hosts_in(site)
                .into_iter()
                .map(|n| format!("h{n}"))
                .collect(),
        }
    }
}

/// Contents of `/run/duplex/lab-<lab>/state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabState {
    pub lab: String,
    pub index: u8,
    pub hosts: u8,
    pub phase: LabPhase,
    /// Unix seconds.
    pub created_at: u64,
    /// `10.i.0.0/24`.
    pub subnet: String,
    /// Bridge in every host namespace that VM taps join.
    pub bridge: String,
    pub switch_ns: String,
    pub client_ns: String,
    pub client_ip: Ipv4Addr,
    /// Root-namespace veth `<lab>mgmt`.
    pub mgmt_if: String,
    pub mgmt_ip: Ipv4Addr,
    pub duplex_bin: PathBuf,
    pub image_dir: PathBuf,
    pub agents: Vec<AgentState>,
    /// The lab's controller (absent in labs taken up before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<crate::controller::ControllerState>,
    /// Standby controllers on the same etcd (`lab up --controllers N`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub standby_controllers: Vec<crate::controller::ControllerState>,
    /// The arguments every agent was started with beyond its own (the
    /// controllers to report to), to power a host on again.
    #[serde(default)]
    pub agent_args: Vec<String>,
    /// The Duplex switch, if the lab runs one (`lab up --switch duplex`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch: Option<crate::switch::SwitchState>,
    /// The sites of a two-site lab (`lab up --sites 2`); empty: one site.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<SiteState>,
    /// The WAN between the sites of a two-site lab.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wan: Option<WanState>,
}

impl LabState {
    /// A state for `plan` with no agents yet.
    pub(crate) fn new(plan: &LabPlan, duplex_bin: &Path, image_dir: &Path) -> LabState {
        LabState {
            lab: plan.lab().to_string(),
            index: plan.index(),
            hosts: plan.hosts(),
            phase: LabPhase::Starting,
            created_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            subnet: plan.subnet(),
            bridge: plan.bridge().to_string(),
            switch_ns: plan.switch_ns(),
            client_ns: plan.client_ns(),
            client_ip: plan.client_ip(),
            mgmt_if: plan.mgmt_if(),
            mgmt_ip: plan.mgmt_ip(),
            duplex_bin: duplex_bin.to_path_buf(),
            image_dir: image_dir.to_path_buf(),
            agents: Vec::new(),
            controller: None,
            standby_controllers: Vec::new(),
            agent_args: Vec::new(),
            switch: None,
            sites: match plan.two_sites() {
                true => plan
                    .site_list()
                    .into_iter()
                    .map(|s| SiteState::new(plan, s))
                    .collect(),
                false => Vec::new(),
            },
            wan: None,
        }
    }

    /// The plan this state was made from.
    pub fn plan(&self) -> Result<LabPlan, LabError> {
        let plan = LabPlan::with_sites(&self.lab, self.hosts, self.site_count())?;
        match &self.wan {
            Some(w) => plan.with_wan(w.settings),
            None => Ok(plan),
        }
    }

    /// Number of sites (1 for labs with none recorded).
    pub fn site_count(&self) -> u8 {
        u8::try_from(self.sites.len()).map_or(u8::MAX, |n| n.max(1))
    }

    /// Site `name` (`a`, `b`) of a two-site lab.
    pub fn site(&self, name: &str) -> Option<&SiteState> {
        self.sites.iter().find(|s| s.name == name)
    }

    /// The bundle of the lab's operator (scope admin), for the CLI.
    pub fn operator_tls(&self) -> PathBuf {
        crate::pki::bundle(&self.lab, &crate::pki::operator_identity())
    }

    /// A client of host n's agent as the lab's operator (admin).
    pub fn agent_client(&self, n: u8) -> Result<duplex_agent_client::AgentClient, LabError> {
        let url = self
            .agent_url(n)
            .ok_or_else(|| LabError::Task(format!("lab `{}` has no host {n}", self.lab)))?;
        let http = crate::pki::operator_client(&self.lab, duplex_agent_client::limits::shape)?;
        Ok(duplex_agent_client::AgentClient::new(url, http))
    }

    /// A client of host n's agent with the controller's certificate: for
    /// tests that stand in for a (newer) controller, which alone may raise
    /// an agent's fence.
    pub fn agent_client_as_controller(
        &self,
        n: u8,
    ) -> Result<duplex_agent_client::AgentClient, LabError> {
        let url = self
            .agent_url(n)
            .ok_or_else(|| LabError::Task(format!("lab `{}` has no host {n}", self.lab)))?;
        let bundle = duplex_tls::Bundle::new(crate::pki::bundle(
            &self.lab,
            &duplex_core::identity::Identity::Controller,
        ));
        let http = duplex_tls::client::Clients::new(bundle, duplex_agent_client::limits::shape)
            .map_err(|e| LabError::Tls(e.to_string()))?
            .get();
        Ok(duplex_agent_client::AgentClient::new(url, http))
    }

    /// A client of the lab's controller (and its standbys) as the lab's
    /// operator.
    pub fn controller_client(
        &self,
    ) -> Result<duplex_controller::client::ControllerClient, LabError> {
        let c = self
            .controller
            .as_ref()
            .ok_or_else(|| LabError::Task(format!("lab `{}` has no controller", self.lab)))?;
        let http = crate::pki::operator_client(&self.lab, duplex_controller::client::shape)?;
        let standbys: Vec<String> = self
            .standby_controllers
            .iter()
            .map(|c| c.url.clone())
            .collect();
        Ok(duplex_controller::client::ControllerClient::new(&c.url, http).with_standbys(&standbys))
    }

    /// Agent of host n (1-based).
    pub fn agent(&self, n: u8) -> Option<&AgentState> {
        self.agents.iter().find(|a| a.n == n)
    }

    /// `https://10.i.0.(10+n):7070` of host n's agent.
    pub fn agent_url(&self, n: u8) -> Option<&str> {
        self.agent(n).map(|a| a.url.as_str())
    }

    /// Address of VM k, `10.i.0.(100+k)`, k in 0..=154 (0..=152 with two
    /// sites: `.253` and `.254` are the site routers).
    pub fn vm_ip(&self, k: u8) -> Option<Ipv4Addr> {
        plan::vm_ip_in(self.index, self.site_count(), k)
    }

    /// The client namespace, `<lab>-client` (run probes there with
    /// [`crate::netns_command`]).
    pub fn client_ns(&self) -> &str {
        &self.client_ns
    }

    /// Namespace of host n, `<lab>-h<n>`.
    pub fn host_ns(&self, n: u8) -> Option<&str> {
        self.agent(n).map(|a| a.ns.as_str())
    }

    /// Every namespace of the lab: switches, hosts, clients, and the WAN
    /// relay's if it runs one.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v = vec![self.switch_ns.clone()];
        v.extend(self.sites.iter().skip(1).map(|s| s.switch_ns.clone()));
        v.extend((1..=self.hosts).map(|n| format!("{}-h{n}", self.lab)));
        v.push(self.client_ns.clone());
        v.extend(self.sites.iter().skip(1).map(|s| s.client_ns.clone()));
        if let Some(ns) = self.wan.as_ref().and_then(|w| w.relay_ns()) {
            v.push(ns.to_string());
        }
        v
    }

    /// Reads lab `lab`'s state; `None` if there is no state file.
    pub fn read(lab: &str) -> Result<Option<LabState>, LabError> {
        plan::validate_lab_name(lab)?;
        let path = plan::state_file(lab);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LabError::io("cannot read", path, e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| LabError::BadState { path, source })
    }

    /// Writes the state file atomically (temporary file + rename).
    pub(crate) fn write(&self) -> Result<(), LabError> {
        let path = plan::state_file(&self.lab);
        let tmp = path.with_extension("json.tmp");
        let mut text = serde_json::to_vec_pretty(self).map_err(|source| LabError::BadState {
            path: path.clone(),
            source,
        })?;
        text.push(b'\n');
        let mut f =
            std::fs::File::create(&tmp).map_err(|e| LabError::io("cannot create", &tmp, e))?;
        f.write_all(&text)
            .and_then(|()| f.sync_all())
            .map_err(|e| LabError::io("cannot write", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| LabError::io("cannot rename to", &path, e))
    }
}

impl LabPlan {
    /// The state of running lab `lab`; [`LabError::NoState`] if it is not up.
    pub fn load_state(lab: &str) -> Result<LabState, LabError> {
        LabState::read(lab)?.ok_or_else(|| LabError::NoState {
            lab: lab.to_string(),
            path: plan::state_file(lab),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::WanSettings;
    use crate::wan::{RelayState, WanState, WanVia};

    fn state(plan: &LabPlan) -> LabState {
        LabState::new(plan, Path::new("/usr/bin/duplex"), Path::new("/img"))
    }

    #[test]
    fn one_site_state_is_unchanged() {
        let s = state(&LabPlan::new("dx", 2).unwrap());
        let v = serde_json::to_value(&s).unwrap();
        assert!(v.get("sites").is_none() && v.get("wan").is_none(), "{v}");
        assert_eq!(s.site_count(), 1);
        assert_eq!(s.namespaces(), ["dx-sw", "dx-h1", "dx-h2", "dx-client"]);
        assert_eq!(s.plan().unwrap(), LabPlan::new("dx", 2).unwrap());
        // A state file written before sites existed still reads.
        let mut old = v.as_object().unwrap().clone();
        old.remove("agent_args");
        let back: LabState = serde_json::from_value(old.into()).unwrap();
        assert!(back.sites.is_empty() && back.wan.is_none());
        assert_eq!(back.vm_ip(154).unwrap().octets()[3], 254);
    }

    #[test]
    fn two_site_state_round_trips() {
        let plan = LabPlan::with_sites("dx", 3, 2).unwrap();
        let mut s = state(&plan);
        s.wan = Some(WanState {
            settings: WanSettings::new(40, 0.5).unwrap(),
            via: WanVia::Relay,
            relay: Some(RelayState {
                pid: 42,
                ns: plan.wan_ns(),
                log: "/run/duplex/lab-dx/wan.log".into(),
            }),
        });
        let text = serde_json::to_string_pretty(&s).unwrap();
        assert!(text.contains("\"rtt_ms\": 40") && text.contains("\"via\": \"relay\""));
        let back: LabState = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.site_count(), 2);
        assert_eq!(back.site("b").unwrap().client_ip.octets()[3], 3);
        assert_eq!(back.site("a").unwrap().hosts, ["h1", "h2"]);
        assert_eq!(back.site("b").unwrap().hosts, ["h3"]);
        assert_eq!(
            back.namespaces(),
            [
                "dx-sw",
                "dx-swb",
                "dx-h1",
                "dx-h2",
                "dx-h3",
                "dx-client",
                "dx-clientb",
                "dx-wan"
            ]
        );
        let p = back.plan().unwrap();
        assert_eq!((p.sites(), p.wan().unwrap().loss_pct), (2, 0.5));
        assert!(back.vm_ip(153).is_none());
    }
}
