//! The cluster as placement sees it: hosts (capacity, use, state, site) and
//! VMs (size, host, dirty rate, pair peer, include/exclude lists), validated
//! and indexed once so that decisions never touch a string.

use super::topology::{HostId, RackId, Topology};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Index of a host in a [`Cluster`] (hosts are ordered by name, so a lower
/// index is also the deterministic tie-breaker).
pub type HostIx = u32;
/// Index of a VM in a [`Cluster`] (input order).
pub type VmIx = u32;

const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Takes new VMs.
    Ready,
    /// Being drained for maintenance: takes nothing.
    Maintenance,
    /// Down.
    Failed,
    /// Held in reserve (e.g. for failover), not a migration target.
    Spare,
    /// Its measured load is above the rebalancer's low mark: takes nothing
    /// until it falls below ([`super::relief`]).
    Loaded,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Ready => "ready",
            HostState::Maintenance => "maintenance",
            HostState::Failed => "failed",
            HostState::Spare => "spare",
            HostState::Loaded => "loaded",
        }
    }
}

fn ready() -> HostState {
    HostState::Ready
}
fn default_site() -> String {
    "default".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostInfo {
    pub name: String,
    /// vCPUs the host offers to VMs.
    pub cpu: u32,
    pub mem_mib: u64,
    #[serde(default)]
    pub used_cpu: u32,
    #[serde(default)]
    pub used_mem_mib: u64,
    #[serde(default = "ready")]
    pub state: HostState,
    #[serde(default = "default_site")]
    pub site: String,
    /// Migrations to or from this host now running.
    #[serde(default)]
    pub migrations_in_flight: u32,
}

impl HostInfo {
    /// A ready host in the default site with `used` of its room taken.
    pub fn ready(
        name: &str,
        (cpu, mem_mib): (u32, u64),
        (used_cpu, used_mem_mib): (u32, u64),
    ) -> Self {
        HostInfo {
            name: name.into(),
            cpu,
            mem_mib,
            used_cpu,
            used_mem_mib,
            state: HostState::Ready,
            site: default_site(),
            migrations_in_flight: 0,
        }
    }
}

impl VmInfo {
    /// A VM of `cpu` vCPUs and `mem_mib` on `host`, with no constraints
    /// and no memory dirtied.
    pub fn placed(name: &str, host: Option<&str>, cpu: u32, mem_mib: u64) -> Self {
        VmInfo {
            name: name.into(),
            host: host.map(Into::into),
            cpu,
            mem_mib,
            dirty_bytes_per_s: 0.0,
            pair_peer: None,
            include: vec![],
            exclude: vec![],
            site: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmInfo {
    pub name: String,
    /// Where it runs; `None` for a VM still to be created.
    #[serde(default)]
    pub host: Option<String>,
    pub cpu: u32,
    pub mem_mib: u64,
    /// Bytes/s of guest memory dirtied (drives the pre-copy model).
    #[serde(default)]
    pub dirty_bytes_per_s: f64,
    /// The other member of its ACT/SBY pair: never on the same host.
    #[serde(default)]
    pub pair_peer: Option<String>,
    /// When not empty, only these hosts are acceptable.
    #[serde(default)]
    pub include: Vec<String>,
    /// Hosts never acceptable.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Pin to this site; by default a VM stays in its current host's site.
    #[serde(default)]
    pub site: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterState {
    pub hosts: Vec<HostInfo>,
    #[serde(default)]
    pub vms: Vec<VmInfo>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster state is not valid JSON: {0}")]
    Json(String),
    #[error("a {0} has an empty name")]
    EmptyName(&'static str),
    #[error("host `{0}` is listed twice")]
    DuplicateHost(String),
    #[error("VM `{0}` is listed twice")]
    DuplicateVm(String),
    #[error("host `{0}` is in the cluster state but not in the topology")]
    HostNotInTopology(String),
    #[error("VM `{vm}` runs on `{host}`, which is not a host of the cluster")]
    VmOnUnknownHost { vm: String, host: String },
    #[error("VM `{vm}`: pair peer `{peer}` is not a VM of the cluster")]
    UnknownPeer { vm: String, peer: String },
    #[error("VM `{0}` names itself as its pair peer")]
    SelfPeer(String),
    #[error("VM `{vm}` pairs with `{peer}`, but `{peer}` pairs with `{other}`")]
    AsymmetricPair {
        vm: String,
        peer: String,
        other: String,
    },
    #[error("VM `{vm}` and its pair peer `{peer}` both run on `{host}`")]
    PairTogether {
        vm: String,
        peer: String,
        host: String,
    },
    #[error("VM `{vm}`: {list} list names `{host}`, which is not a host of the cluster")]
    UnknownListedHost {
        vm: String,
        list: &'static str,
        host: String,
    },
    #[error("VM `{vm}`: dirty_bytes_per_s {value} must be >= 0 and finite")]
    DirtyRate { vm: String, value: f64 },
    #[error("unknown VM `{0}`")]
    UnknownVm(String),
    #[error("unknown host `{0}`")]
    UnknownHost(String),
}

/// Per-host data the filters read, packed for one cache line per host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct HostRow {
    pub free_mem_mib: u64,
    pub free_cpu: u32,
    pub rack: RackId,
    pub site: u32,
    pub in_flight: u32,
    pub topo: HostId,
    pub state: HostState,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VmRow {
    pub host: Option<HostIx>,
    pub cpu: u32,
    pub mem_mib: u64,
    pub dirty_bps: f64,
    pub peer: Option<VmIx>,
    /// Sorted, deduplicated.
    pub include: Vec<HostIx>,
    pub exclude: Vec<HostIx>,
    pub site: Option<u32>,
}

impl VmRow {
    pub fn mem_bytes(&self) -> f64 {
        self.mem_mib as f64 * MIB
    }
}

/// A validated, indexed [`ClusterState`] over a [`Topology`].
#[derive(Debug, Clone)]
pub struct Cluster {
    host_names: Vec<String>,
    host_index: HashMap<String, HostIx>,
    pub(crate) hosts: Vec<HostRow>,
    cap: Vec<(u32, u64)>,
    used: Vec<(u32, u64)>,
    site_names: Vec<String>,
    vm_names: Vec<String>,
    vm_index: HashMap<String, VmIx>,
    pub(crate) vms: Vec<VmRow>,
    /// The VMs on each host, ascending (kept by `move_vm`).
    on_host: Vec<Vec<VmIx>>,
}

impl Cluster {
    pub fn from_json(json: &str, topo: &Topology) -> Result<Self, ClusterError> {
        let s: ClusterState =
            serde_json::from_str(json).map_err(|e| ClusterError::Json(e.to_string()))?;
        Self::new(&s, topo)
    }

    pub fn new(state: &ClusterState, topo: &Topology) -> Result<Self, ClusterError> {
        let mut order: Vec<usize> = (0..state.hosts.len()).collect();
        order.sort_by(|&a, &b| state.hosts[a].name.cmp(&state.hosts[b].name));
        let mut site_names: Vec<String> = Vec::new();
        let mut site_index: HashMap<String, u32> = HashMap::new();
        let mut intern_site = |s: &str| -> u32 {
            if let Some(&i) = site_index.get(s) {
                return i;
            }
            let i = site_names.len() as u32;
            site_names.push(s.to_string());
            site_index.insert(s.to_string(), i);
            i
        };
        let mut c = Cluster {
            host_names: Vec::with_capacity(order.len()),
            host_index: HashMap::with_capacity(order.len()),
            hosts: Vec::with_capacity(order.len()),
            cap: Vec::with_capacity(order.len()),
            used: Vec::with_capacity(order.len()),
            site_names: Vec::new(),
            vm_names: Vec::with_capacity(state.vms.len()),
            vm_index: HashMap::with_capacity(state.vms.len()),
            vms: Vec::with_capacity(state.vms.len()),
            on_host: Vec::new(),
        };
        for &i in &order {
            let h = &state.hosts[i];
            if h.name.is_empty() {
                return Err(ClusterError::EmptyName("host"));
            }
            let ix = c.host_names.len() as HostIx;
            if c.host_index.insert(h.name.clone(), ix).is_some() {
                return Err(ClusterError::DuplicateHost(h.name.clone()));
            }
            let topo_id = topo
                .host_id(&h.name)
                .ok_or_else(|| ClusterError::HostNotInTopology(h.name.clone()))?;
            c.host_names.push(h.name.clone());
            c.cap.push((h.cpu, h.mem_mib));
            c.used.push((h.used_cpu, h.used_mem_mib));
            c.hosts.push(HostRow {
                free_mem_mib: h.mem_mib.saturating_sub(h.used_mem_mib),
                free_cpu: h.cpu.saturating_sub(h.used_cpu),
                rack: topo.rack_of_unchecked(topo_id),
                site: intern_site(&h.site),
                in_flight: h.migrations_in_flight,
                topo: topo_id,
                state: h.state,
            });
        }
        for v in &state.vms {
            if v.name.is_empty() {
                return Err(ClusterError::EmptyName("VM"));
            }
            let ix = c.vm_names.len() as VmIx;
            if c.vm_index.insert(v.name.clone(), ix).is_some() {
                return Err(ClusterError::DuplicateVm(v.name.clone()));
            }
            c.vm_names.push(v.name.clone());
        }
        for v in &state.vms {
            let host = match &v.host {
                None => None,
                Some(h) => Some(c.host_index.get(h).copied().ok_or_else(|| {
                    ClusterError::VmOnUnknownHost {
                        vm: v.name.clone(),
                        host: h.clone(),
                    }
                })?),
            };
            let peer =
                match &v.pair_peer {
                    None => None,
                    Some(p) if p == &v.name => return Err(ClusterError::SelfPeer(v.name.clone())),
                    Some(p) => {
                        let pi = c.vm_index.get(p).copied().ok_or_else(|| {
                            ClusterError::UnknownPeer {
                                vm: v.name.clone(),
                                peer: p.clone(),
                            }
                        })?;
                        if let Some(other) = &state.vms[pi as usize].pair_peer {
                            if other != &v.name {
                                return Err(ClusterError::AsymmetricPair {
                                    vm: v.name.clone(),
                                    peer: p.clone(),
                                    other: other.clone(),
                                });
                            }
                        }
                        if let (Some(h), Some(ph)) = (&v.host, &state.vms[pi as usize].host) {
                            if h == ph {
                                return Err(ClusterError::PairTogether {
                                    vm: v.name.clone(),
                                    peer: p.clone(),
                                    host: h.clone(),
                                });
                            }
                        }
                        Some(pi)
                    }
                };
            let list =
                |names: &[String], which: &'static str| -> Result<Vec<HostIx>, ClusterError> {
                    let mut out = Vec::with_capacity(names.len());
                    for n in names {
                        out.push(c.host_index.get(n).copied().ok_or_else(|| {
                            ClusterError::UnknownListedHost {
                                vm: v.name.clone(),
                                list: which,
                                host: n.clone(),
                            }
                        })?);
                    }
                    out.sort_unstable();
                    out.dedup();
                    Ok(out)
                };
            let include = list(&v.include, "include")?;
            let exclude = list(&v.exclude, "exclude")?;
            if !(v.dirty_bytes_per_s.is_finite() && v.dirty_bytes_per_s >= 0.0) {
                return Err(ClusterError::DirtyRate {
                    vm: v.name.clone(),
                    value: v.dirty_bytes_per_s,
                });
            }
            let site = v.site.as_deref().map(&mut intern_site);
            c.vms.push(VmRow {
                host,
                cpu: v.cpu,
                mem_mib: v.mem_mib,
                dirty_bps: v.dirty_bytes_per_s,
                peer,
                include,
                exclude,
                site,
            });
        }
        c.site_names = site_names;
        c.on_host = vec![Vec::new(); c.hosts.len()];
        for (v, row) in c.vms.iter().enumerate() {
            if let Some(h) = row.host {
                c.on_host[h as usize].push(v as VmIx);
            }
        }
        Ok(c)
    }

    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }
    pub fn vm_count(&self) -> usize {
        self.vms.len()
    }
    pub fn host_ix(&self, name: &str) -> Option<HostIx> {
        self.host_index.get(name).copied()
    }
    pub fn vm_ix(&self, name: &str) -> Option<VmIx> {
        self.vm_index.get(name).copied()
    }
    /// Host names by [`HostIx`] (sorted).
    pub fn host_name(&self, h: HostIx) -> &str {
        self.host_names.get(h as usize).map_or("?", String::as_str)
    }
    pub fn vm_name(&self, v: VmIx) -> &str {
        self.vm_names.get(v as usize).map_or("?", String::as_str)
    }
    pub fn vm_names(&self) -> &[String] {
        &self.vm_names
    }
    pub fn site_name(&self, s: u32) -> &str {
        self.site_names.get(s as usize).map_or("?", String::as_str)
    }
    /// The host a VM runs on.
    pub fn vm_host(&self, v: VmIx) -> Option<HostIx> {
        self.vms.get(v as usize).and_then(|r| r.host)
    }
    pub fn vm_pair_peer(&self, v: VmIx) -> Option<VmIx> {
        self.vms.get(v as usize).and_then(|r| r.peer)
    }
    /// (vCPU, MiB) a VM needs.
    pub fn vm_size(&self, v: VmIx) -> Option<(u32, u64)> {
        self.vms.get(v as usize).map(|r| (r.cpu, r.mem_mib))
    }
    /// (vCPU, MiB) still free on a host.
    pub fn host_free(&self, h: HostIx) -> Option<(u32, u64)> {
        self.hosts
            .get(h as usize)
            .map(|r| (r.free_cpu, r.free_mem_mib))
    }
    pub fn host_state(&self, h: HostIx) -> Option<HostState> {
        self.hosts.get(h as usize).map(|r| r.state)
    }
    pub fn host_topology_id(&self, h: HostIx) -> Option<HostId> {
        self.hosts.get(h as usize).map(|r| r.topo)
    }
    pub fn host_rack(&self, h: HostIx) -> Option<RackId> {
        self.hosts.get(h as usize).map(|r| r.rack)
    }
    /// VMs on a host, in VM order.
    pub fn vms_on(&self, h: HostIx) -> Vec<VmIx> {
        self.on_host.get(h as usize).cloned().unwrap_or_default()
    }

    /// Record that `v` now runs on `to` (a finished migration or creation):
    /// moves its cpu/memory from the old host's use to the new one's.
    /// Does not check filters; the engine decides, this only books.
    pub fn move_vm(&mut self, v: VmIx, to: HostIx) -> Result<(), ClusterError> {
        let vi = v as usize;
        if vi >= self.vms.len() {
            return Err(ClusterError::UnknownVm(format!("#{v}")));
        }
        if to as usize >= self.hosts.len() {
            return Err(ClusterError::UnknownHost(format!("#{to}")));
        }
        let (cpu, mem) = (self.vms[vi].cpu, self.vms[vi].mem_mib);
        if let Some(from) = self.vms[vi].host {
            let u = &mut self.used[from as usize];
            u.0 = u.0.saturating_sub(cpu);
            u.1 = u.1.saturating_sub(mem);
            self.refresh(from);
            self.on_host[from as usize].retain(|&x| x != v);
        }
        let list = &mut self.on_host[to as usize];
        if let Err(at) = list.binary_search(&v) {
            list.insert(at, v);
        }
        let u = &mut self.used[to as usize];
        u.0 = u.0.saturating_add(cpu);
        u.1 = u.1.saturating_add(mem);
        self.refresh(to);
        self.vms[vi].host = Some(to);
        Ok(())
    }

    /// Change a host's state (maintenance, failure, ...).
    pub fn set_host_state(&mut self, h: HostIx, s: HostState) -> Result<(), ClusterError> {
        let r = self
            .hosts
            .get_mut(h as usize)
            .ok_or_else(|| ClusterError::UnknownHost(format!("#{h}")))?;
        r.state = s;
        Ok(())
    }

    fn refresh(&mut self, h: HostIx) {
        let i = h as usize;
        self.hosts[i].free_cpu = self.cap[i].0.saturating_sub(self.used[i].0);
        self.hosts[i].free_mem_mib = self.cap[i].1.saturating_sub(self.used[i].1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::topology::LeafSpine;

    fn topo() -> Topology {
        Topology::leaf_spine(&LeafSpine {
            racks: 2,
            hosts_per_rack: 2,
            spines: 1,
            link_gbps: 10.0,
        })
        .unwrap()
    }

    fn state(json: &str) -> Result<Cluster, ClusterError> {
        Cluster::from_json(json, &topo())
    }

    #[test]
    fn indexes_hosts_by_name_and_books_moves() {
        let c = state(
            r#"{"hosts":[{"name":"r1-h0","cpu":8,"mem_mib":8192,"used_cpu":2,"used_mem_mib":2048},
                         {"name":"r0-h0","cpu":8,"mem_mib":8192}],
                "vms":[{"name":"a","host":"r1-h0","cpu":2,"mem_mib":2048}]}"#,
        )
        .unwrap();
        assert_eq!(c.host_name(0), "r0-h0");
        assert_eq!(c.host_ix("r1-h0"), Some(1));
        assert_eq!(c.host_free(1), Some((6, 6144)));
        let mut c = c;
        c.move_vm(0, 0).unwrap();
        assert_eq!(c.host_free(1), Some((8, 8192)));
        assert_eq!(c.host_free(0), Some((6, 6144)));
        assert_eq!(c.vm_host(0), Some(0));
        assert_eq!(c.vms_on(0), vec![0]);
        assert!(c.move_vm(5, 0).is_err());
        assert!(c.move_vm(0, 9).is_err());
    }

    #[test]
    fn bad_states_are_named() {
        let h =
            r#"{"name":"r0-h0","cpu":8,"mem_mib":8192},{"name":"r0-h1","cpu":8,"mem_mib":8192}"#;
        let err = |vms: &str| {
            state(&format!(r#"{{"hosts":[{h}],"vms":[{vms}]}}"#))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(r#"{"name":"a","host":"zz","cpu":1,"mem_mib":1}"#),
            "VM `a` runs on `zz`, which is not a host of the cluster"
        );
        assert!(
            err(r#"{"name":"a","cpu":1,"mem_mib":1,"pair_peer":"b"}"#).contains("pair peer `b`")
        );
        assert!(err(r#"{"name":"a","cpu":1,"mem_mib":1,"pair_peer":"a"}"#).contains("itself"));
        assert!(err(
            r#"{"name":"a","cpu":1,"mem_mib":1,"pair_peer":"b"},{"name":"b","cpu":1,"mem_mib":1,"pair_peer":"c"},{"name":"c","cpu":1,"mem_mib":1}"#
        )
        .contains("but `b` pairs with `c`"));
        assert!(err(
            r#"{"name":"a","host":"r0-h0","cpu":1,"mem_mib":1,"pair_peer":"b"},{"name":"b","host":"r0-h0","cpu":1,"mem_mib":1,"pair_peer":"a"}"#
        )
        .contains("both run on `r0-h0`"));
        assert!(err(r#"{"name":"a","cpu":1,"mem_mib":1,"exclude":["x"]}"#)
            .contains("exclude list names `x`"));
        assert!(
            err(r#"{"name":"a","cpu":1,"mem_mib":1,"dirty_bytes_per_s":-1}"#)
                .contains("dirty_bytes_per_s -1")
        );
        assert!(
            err(r#"{"name":"a","cpu":1,"mem_mib":1},{"name":"a","cpu":1,"mem_mib":1}"#)
                .contains("listed twice")
        );
        let e = state(r#"{"hosts":[{"name":"nowhere","cpu":1,"mem_mib":1}]}"#).unwrap_err();
        assert_eq!(e, ClusterError::HostNotInTopology("nowhere".into()));
        let e = state(&format!(r#"{{"hosts":[{h},{h}]}}"#)).unwrap_err();
        assert!(matches!(e, ClusterError::DuplicateHost(_)));
        assert!(matches!(state("[1,2"), Err(ClusterError::Json(_))));
        assert!(matches!(
            state(r#"{"hosts":[{"name":"r0-h0","cpu":1,"mem_mib":1,"state":"weird"}]}"#),
            Err(ClusterError::Json(_))
        ));
    }
}
