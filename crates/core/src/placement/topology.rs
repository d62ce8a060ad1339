//! Where hosts sit in the network, and what it costs to talk across it.
//!
//! Three ways to get a [`Topology`]:
//! - [`Topology::leaf_spine`]: racks of hosts under one leaf (ToR) switch
//!   each, every leaf linked to every spine;
//! - [`Topology::fat_tree`]: the k-ary fat-tree (k pods of k/2 edge and k/2
//!   aggregation switches, (k/2)^2 cores, k^3/4 hosts);
//! - [`Topology::from_config`]: an explicit switch graph from JSON
//!   (`{"switches":[..],"hosts":[{"name","attach"}],"links":[{"a","b","capacity_gbps","utilization"}]}`).
//!
//! **Distance** is the number of links a frame crosses between two hosts:
//! 0 on the same host, 2 in the same rack (host-ToR-host), 4 across a
//! leaf-spine fabric or within a fat-tree pod, 6 across fat-tree pods. For an
//! explicit graph it is 2 + the BFS shortest path (in links) between the two
//! hosts' attach switches.
//!
//! **Explicit graphs: what is accepted.** Any connected simple graph of
//! switches: trees, leaf-spine and Clos fabrics alike. Redundant paths
//! (cycles through distinct switches) are fine and expected: forwarding is
//! modelled as shortest-path (ECMP), so distance is well defined whatever
//! the cycles. Rejected: self-loops (a link from a switch to itself),
//! duplicate links (the same pair twice, in either order), links touching a
//! host (hosts connect only through `attach`), unknown or duplicate names,
//! capacities that are not positive and finite, utilizations outside
//! `0..=1`, and hosts that cannot reach every other host.
//!
//! **Racks and pods.** A rack is the set of hosts under one switch (the
//! leaf, edge or attach switch). Pods group racks: all leaf-spine racks form
//! pod 0; a fat-tree pod is its k/2 edge switches; in an explicit graph every
//! rack is its own pod (the graph says nothing more).
//!
//! **Link utilization on a path.** Host access links are not modelled, so a
//! path inside one rack has utilization 0 and no fabric bandwidth limit.
//! Between racks: the largest utilization of a link on the path; for an
//! explicit graph the path is the least loaded of the shortest paths (the
//! one ECMP/adaptive routing can use) and the available bandwidth is the
//! best bottleneck `capacity * (1 - utilization)` among the shortest paths.
//!
//! Every query after construction is O(1): host -> rack -> pod are arrays,
//! rack-to-rack distance is a formula (generated fabrics) or a precomputed
//! matrix (explicit graphs).

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};

/// Index of a host in its [`Topology`] (0-based, dense).
pub type HostId = u32;
/// Index of a rack (the switch hosts attach to) in its [`Topology`].
pub type RackId = u32;
/// Index of a pod in its [`Topology`].
pub type PodId = u32;

/// Largest topology accepted (hosts), to keep bad input from exhausting memory.
pub const MAX_HOSTS: usize = 1_000_000;
/// Largest number of racks of an explicit graph (its rack matrix is racks^2).
pub const MAX_EXPLICIT_RACKS: usize = 4096;

/// One gigabit per second in bytes per second.
pub const GBPS_BYTES: f64 = 1e9 / 8.0;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TopologyError {
    #[error("topology config is not valid JSON: {0}")]
    Json(String),
    #[error("{what} must be {want}, got {got}")]
    Param {
        what: &'static str,
        want: &'static str,
        got: String,
    },
    #[error("topology has {hosts} hosts; at most {MAX_HOSTS} are supported")]
    TooLarge { hosts: u128 },
    #[error("topology has {racks} switches with hosts; explicit graphs support at most {MAX_EXPLICIT_RACKS}")]
    TooManyRacks { racks: usize },
    #[error("topology has no hosts")]
    NoHosts,
    #[error("a {what} has an empty name")]
    EmptyName { what: &'static str },
    #[error("name `{0}` is used twice (switch and host names share one namespace)")]
    DuplicateName(String),
    #[error("host `{host}` attaches to `{switch}`, which is not a switch in `switches`")]
    UnknownAttach { host: String, switch: String },
    #[error("link `{a}`-`{b}`: `{endpoint}` is not a switch in `switches`")]
    UnknownEndpoint {
        a: String,
        b: String,
        endpoint: String,
    },
    #[error("link `{a}`-`{b}`: `{endpoint}` is a host; hosts connect only through `attach`")]
    LinkToHost {
        a: String,
        b: String,
        endpoint: String,
    },
    #[error("link `{0}`-`{0}` is a self-loop: a link must join two different switches")]
    SelfLoop(String),
    #[error("link `{a}`-`{b}` appears twice (links are undirected)")]
    DuplicateLink { a: String, b: String },
    #[error("link `{a}`-`{b}`: capacity_gbps {value} must be positive and finite")]
    Capacity { a: String, b: String, value: f64 },
    #[error("link `{a}`-`{b}`: utilization {value} is outside 0..=1")]
    Utilization { a: String, b: String, value: f64 },
    #[error("host `{host}` (on switch `{switch}`) cannot reach host `{other}`: the graph is disconnected")]
    Disconnected {
        host: String,
        switch: String,
        other: String,
    },
    #[error("hosts `{a}` and `{b}` are {hops} links apart; at most 254 are supported")]
    TooDeep { a: String, b: String, hops: usize },
    #[error("{0}")]
    NotApplicable(&'static str),
    #[error("unknown host `{0}`")]
    UnknownHost(String),
    #[error("rack {rack} does not exist (topology has {racks})")]
    UnknownRack { rack: u32, racks: u32 },
    #[error("pod {pod} does not exist (topology has {pods})")]
    UnknownPod { pod: u32, pods: u32 },
}

/// Parameters of a leaf-spine fabric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeafSpine {
    pub racks: u32,
    pub hosts_per_rack: u32,
    pub spines: u32,
    /// Capacity of each leaf-spine link.
    #[serde(default = "default_link_gbps")]
    pub link_gbps: f64,
}

/// Parameters of a k-ary fat-tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FatTree {
    /// Ports per switch; even, >= 2. k^3/4 hosts.
    pub k: u32,
    /// Capacity of each switch-to-switch link.
    #[serde(default = "default_link_gbps")]
    pub link_gbps: f64,
}

fn default_link_gbps() -> f64 {
    100.0
}

/// An explicit switch graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyConfig {
    pub switches: Vec<String>,
    pub hosts: Vec<HostAttach>,
    #[serde(default)]
    pub links: Vec<LinkConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostAttach {
    pub name: String,
    /// The switch (rack) the host is cabled to.
    pub attach: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    pub a: String,
    pub b: String,
    pub capacity_gbps: f64,
    /// Fraction of the capacity in use, 0..=1.
    #[serde(default)]
    pub utilization: f64,
}

/// What kind of fabric a [`Topology`] is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fabric {
    LeafSpine {
        racks: u32,
        hosts_per_rack: u32,
        spines: u32,
    },
    FatTree {
        k: u32,
    },
    Explicit {
        switches: u32,
        links: u32,
    },
}

/// The path between two racks, as the placement engine sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathInfo {
    /// Links between two hosts in these racks (2 inside one rack).
    pub hops: u8,
    /// Largest link utilization on the path (0 inside one rack).
    pub max_utilization: f64,
    /// Bytes/s the fabric can still carry on the path; `None` inside one
    /// rack (no fabric link is crossed).
    pub available_bps: Option<f64>,
}

/// Rack-to-rack matrices of an explicit graph (row-major, racks x racks).
#[derive(Debug, Clone)]
struct RackMatrix {
    racks: usize,
    hops: Vec<u8>,
    util: Vec<f32>,
    avail: Vec<f64>,
}

/// Hosts placed in a network, with O(1) distance and path queries.
#[derive(Debug, Clone)]
pub struct Topology {
    fabric: Fabric,
    host_names: Vec<String>,
    by_name: HashMap<String, HostId>,
    host_rack: Vec<RackId>,
    rack_names: Vec<String>,
    rack_pod: Vec<PodId>,
    pods: u32,
    /// Generated fabrics: bytes/s of one switch-to-switch link.
    link_bps: f64,
    /// Generated fabrics: utilization of each rack's uplinks.
    rack_uplink_util: Vec<f64>,
    /// Fat-tree: utilization of each pod's aggregation-core links.
    pod_uplink_util: Vec<f64>,
    matrix: Option<RackMatrix>,
}

fn param(what: &'static str, want: &'static str, got: impl ToString) -> TopologyError {
    TopologyError::Param {
        what,
        want,
        got: got.to_string(),
    }
}

fn check_link_gbps(v: f64) -> Result<f64, TopologyError> {
    if v.is_finite() && v > 0.0 {
        Ok(v * GBPS_BYTES)
    } else {
        Err(param("link_gbps", "positive and finite", v))
    }
}

fn check_util(v: f64) -> Result<f64, TopologyError> {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(param("utilization", "within 0..=1", v))
    }
}

impl Topology {
    /// `racks` leaves of `hosts_per_rack` hosts each, every leaf linked to
    /// each of `spines` spines. Hosts are named `r<rack>-h<i>`, racks
    /// `leaf<rack>`.
    pub fn leaf_spine(spec: &LeafSpine) -> Result<Self, TopologyError> {
        if spec.racks == 0 {
            return Err(param("racks", ">= 1", spec.racks));
        }
        if spec.hosts_per_rack == 0 {
            return Err(param("hosts_per_rack", ">= 1", spec.hosts_per_rack));
        }
        if spec.spines == 0 {
            return Err(param("spines", ">= 1", spec.spines));
        }
        let link_bps = check_link_gbps(spec.link_gbps)?;
        let hosts = u128::from(spec.racks) * u128::from(spec.hosts_per_rack);
        if hosts > MAX_HOSTS as u128 {
            return Err(TopologyError::TooLarge { hosts });
        }
        let mut host_names = Vec::with_capacity(hosts as usize);
        let mut host_rack = Vec::with_capacity(hosts as usize);
        for r in 0..spec.racks {
            for i in 0..spec.hosts_per_rack {
                host_names.push(format!("r{r}-h{i}"));
                host_rack.push(r);
            }
        }
        let rack_names = (0..spec.racks).map(|r| format!("leaf{r}")).collect();
        Ok(Self::assemble(
            Fabric::LeafSpine {
                racks: spec.racks,
                hosts_per_rack: spec.hosts_per_rack,
                spines: spec.spines,
            },
            host_names,
            host_rack,
            rack_names,
            vec![0; spec.racks as usize],
            1,
            link_bps,
            None,
        ))
    }

    /// The k-ary fat-tree: k pods, each with k/2 edge switches of k/2
    /// hosts. Hosts are named `p<pod>-e<edge>-h<i>`, racks `p<pod>-e<edge>`.
    /// Two racks of two hosts (`r0-h0` … `r1-h1`) under two spines at
    /// 100 Gb/s: the small fabric of unit tests.
    #[cfg(test)]
    pub(crate) fn two_by_two() -> Self {
        Self::leaf_spine(&LeafSpine {
            racks: 2,
            hosts_per_rack: 2,
            spines: 2,
            link_gbps: 100.0,
        })
        .expect("a valid leaf-spine")
    }

    pub fn fat_tree(spec: &FatTree) -> Result<Self, TopologyError> {
        let k = spec.k;
        if k < 2 || k & 1 == 1 {
            return Err(param("fat-tree k", "even and >= 2", k));
        }
        let link_bps = check_link_gbps(spec.link_gbps)?;
        let hosts = u128::from(k).pow(3) / 4;
        if hosts > MAX_HOSTS as u128 {
            return Err(TopologyError::TooLarge { hosts });
        }
        let half = k / 2;
        let mut host_names = Vec::with_capacity(hosts as usize);
        let mut host_rack = Vec::with_capacity(hosts as usize);
        let mut rack_names = Vec::with_capacity((k * half) as usize);
        let mut rack_pod = Vec::with_capacity((k * half) as usize);
        for p in 0..k {
            for e in 0..half {
                let rack = rack_names.len() as RackId;
                rack_names.push(format!("p{p}-e{e}"));
                rack_pod.push(p);
                for i in 0..half {
                    host_names.push(format!("p{p}-e{e}-h{i}"));
                    host_rack.push(rack);
                }
            }
        }
        Ok(Self::assemble(
            Fabric::FatTree { k },
            host_names,
            host_rack,
            rack_names,
            rack_pod,
            k,
            link_bps,
            None,
        ))
    }

    /// Parse and validate an explicit graph from JSON.
    pub fn from_json(json: &str) -> Result<Self, TopologyError> {
        let cfg: TopologyConfig =
            serde_json::from_str(json).map_err(|e| TopologyError::Json(e.to_string()))?;
        Self::from_config(&cfg)
    }

    /// Validate an explicit graph (see the module docs for what is accepted)
    /// and precompute its rack-to-rack matrices.
    pub fn from_config(cfg: &TopologyConfig) -> Result<Self, TopologyError> {
        if cfg.hosts.is_empty() {
            return Err(TopologyError::NoHosts);
        }
        if cfg.hosts.len() > MAX_HOSTS {
            return Err(TopologyError::TooLarge {
                hosts: cfg.hosts.len() as u128,
            });
        }
        let mut switch_idx: HashMap<&str, usize> = HashMap::new();
        for s in &cfg.switches {
            if s.is_empty() {
                return Err(TopologyError::EmptyName { what: "switch" });
            }
            if switch_idx.insert(s, switch_idx.len()).is_some() {
                return Err(TopologyError::DuplicateName(s.clone()));
            }
        }
        let mut host_names_set: HashSet<&str> = HashSet::new();
        for h in &cfg.hosts {
            if h.name.is_empty() {
                return Err(TopologyError::EmptyName { what: "host" });
            }
            if switch_idx.contains_key(h.name.as_str()) || !host_names_set.insert(&h.name) {
                return Err(TopologyError::DuplicateName(h.name.clone()));
            }
            if !switch_idx.contains_key(h.attach.as_str()) {
                return Err(TopologyError::UnknownAttach {
                    host: h.name.clone(),
                    switch: h.attach.clone(),
                });
            }
        }
        // Switch graph: adjacency with (neighbour, utilization, available bytes/s).
        let n = cfg.switches.len();
        let mut adj: Vec<Vec<(usize, f64, f64)>> = vec![Vec::new(); n];
        let mut seen_links: HashSet<(usize, usize)> = HashSet::new();
        for l in &cfg.links {
            let end = |name: &str| -> Result<usize, TopologyError> {
                if let Some(&i) = switch_idx.get(name) {
                    return Ok(i);
                }
                if host_names_set.contains(name) {
                    return Err(TopologyError::LinkToHost {
                        a: l.a.clone(),
                        b: l.b.clone(),
                        endpoint: name.to_string(),
                    });
                }
                Err(TopologyError::UnknownEndpoint {
                    a: l.a.clone(),
                    b: l.b.clone(),
                    endpoint: name.to_string(),
                })
            };
            let a = end(&l.a)?;
            let b = end(&l.b)?;
            if a == b {
                return Err(TopologyError::SelfLoop(l.a.clone()));
            }
            if !seen_links.insert((a.min(b), a.max(b))) {
                return Err(TopologyError::DuplicateLink {
                    a: l.a.clone(),
                    b: l.b.clone(),
                });
            }
            if !(l.capacity_gbps.is_finite() && l.capacity_gbps > 0.0) {
                return Err(TopologyError::Capacity {
                    a: l.a.clone(),
                    b: l.b.clone(),
                    value: l.capacity_gbps,
                });
            }
            if !(0.0..=1.0).contains(&l.utilization) {
                return Err(TopologyError::Utilization {
                    a: l.a.clone(),
                    b: l.b.clone(),
                    value: l.utilization,
                });
            }
            let avail = l.capacity_gbps * GBPS_BYTES * (1.0 - l.utilization);
            adj[a].push((b, l.utilization, avail));
            adj[b].push((a, l.utilization, avail));
        }
        // Racks: switches with hosts, in order of first host.
        let mut rack_of_switch: Vec<Option<RackId>> = vec![None; n];
        let mut rack_switch: Vec<usize> = Vec::new();
        let mut host_names = Vec::with_capacity(cfg.hosts.len());
        let mut host_rack = Vec::with_capacity(cfg.hosts.len());
        for h in &cfg.hosts {
            let s = switch_idx[h.attach.as_str()];
            let r = *rack_of_switch[s].get_or_insert_with(|| {
                rack_switch.push(s);
                (rack_switch.len() - 1) as RackId
            });
            host_names.push(h.name.clone());
            host_rack.push(r);
        }
        let racks = rack_switch.len();
        if racks > MAX_EXPLICIT_RACKS {
            return Err(TopologyError::TooManyRacks { racks });
        }
        let first_host_of_rack = |r: usize| -> &HostAttach {
            let i = host_rack.iter().position(|&x| x as usize == r).unwrap_or(0);
            &cfg.hosts[i]
        };
        let mut hops = vec![0u8; racks * racks];
        let mut util = vec![0f32; racks * racks];
        let mut avail = vec![f64::INFINITY; racks * racks];
        let mut dist = vec![usize::MAX; n];
        let mut best_util = vec![0f64; n];
        let mut best_avail = vec![0f64; n];
        let mut order = Vec::with_capacity(n);
        for (ra, &src) in rack_switch.iter().enumerate() {
            dist.iter_mut().for_each(|d| *d = usize::MAX);
            order.clear();
            dist[src] = 0;
            best_util[src] = 0.0;
            best_avail[src] = f64::INFINITY;
            let mut queue = VecDeque::from([src]);
            while let Some(u) = queue.pop_front() {
                order.push(u);
                for &(v, _, _) in &adj[u] {
                    if dist[v] == usize::MAX {
                        dist[v] = dist[u] + 1;
                        queue.push_back(v);
                    }
                }
            }
            // Best path among shortest paths, in BFS order (predecessors first).
            for &v in order.iter().skip(1) {
                let mut bu = f64::INFINITY;
                let mut ba = 0f64;
                for &(u, lu, la) in &adj[v] {
                    if dist[u] != usize::MAX && dist[u] + 1 == dist[v] {
                        bu = bu.min(best_util[u].max(lu));
                        ba = ba.max(best_avail[u].min(la));
                    }
                }
                best_util[v] = bu;
                best_avail[v] = ba;
            }
            for (rb, &dst) in rack_switch.iter().enumerate() {
                if dist[dst] == usize::MAX {
                    let h = first_host_of_rack(rb);
                    let o = first_host_of_rack(ra);
                    return Err(TopologyError::Disconnected {
                        host: h.name.clone(),
                        switch: h.attach.clone(),
                        other: o.name.clone(),
                    });
                }
                let d = dist[dst] + 2;
                if d > 254 {
                    return Err(TopologyError::TooDeep {
                        a: first_host_of_rack(ra).name.clone(),
                        b: first_host_of_rack(rb).name.clone(),
                        hops: d,
                    });
                }
                let i = ra * racks + rb;
                hops[i] = d as u8;
                if ra != rb {
                    util[i] = best_util[dst] as f32;
                    avail[i] = best_avail[dst];
                }
            }
        }
        let rack_names = rack_switch
            .iter()
            .map(|&s| cfg.switches[s].clone())
            .collect();
        Ok(Self::assemble(
            Fabric::Explicit {
                switches: n as u32,
                links: cfg.links.len() as u32,
            },
            host_names,
            host_rack,
            rack_names,
            (0..racks as u32).collect(),
            racks as u32,
            0.0,
            Some(RackMatrix {
                racks,
                hops,
                util,
                avail,
            }),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        fabric: Fabric,
        host_names: Vec<String>,
        host_rack: Vec<RackId>,
        rack_names: Vec<String>,
        rack_pod: Vec<PodId>,
        pods: u32,
        link_bps: f64,
        matrix: Option<RackMatrix>,
    ) -> Self {
        let by_name = host_names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as HostId))
            .collect();
        let racks = rack_names.len();
        Topology {
            fabric,
            host_names,
            by_name,
            host_rack,
            rack_names,
            rack_pod,
            pods,
            link_bps,
            rack_uplink_util: vec![0.0; racks],
            pod_uplink_util: vec![0.0; pods as usize],
            matrix,
        }
    }

    pub fn fabric(&self) -> &Fabric {
        &self.fabric
    }
    pub fn host_count(&self) -> usize {
        self.host_names.len()
    }
    pub fn rack_count(&self) -> usize {
        self.rack_names.len()
    }
    pub fn pod_count(&self) -> usize {
        self.pods as usize
    }
    pub fn host_id(&self, name: &str) -> Option<HostId> {
        self.by_name.get(name).copied()
    }
    pub fn host_name(&self, h: HostId) -> Option<&str> {
        self.host_names.get(h as usize).map(String::as_str)
    }
    /// All host names, indexed by [`HostId`].
    pub fn host_names(&self) -> &[String] {
        &self.host_names
    }
    pub fn rack_name(&self, r: RackId) -> Option<&str> {
        self.rack_names.get(r as usize).map(String::as_str)
    }
    pub fn rack_of(&self, h: HostId) -> Option<RackId> {
        self.host_rack.get(h as usize).copied()
    }
    pub fn pod_of(&self, h: HostId) -> Option<PodId> {
        self.rack_of(h).map(|r| self.rack_pod[r as usize])
    }
    pub fn pod_of_rack(&self, r: RackId) -> Option<PodId> {
        self.rack_pod.get(r as usize).copied()
    }

    /// Links between two hosts: 0 same host, 2 same rack, then per fabric.
    pub fn distance(&self, a: HostId, b: HostId) -> Option<u8> {
        let ra = self.rack_of(a)?;
        let rb = self.rack_of(b)?;
        Some(if a == b { 0 } else { self.rack_hops(ra, rb) })
    }

    /// [`Self::distance`] by host names.
    pub fn distance_by_name(&self, a: &str, b: &str) -> Result<u8, TopologyError> {
        let ia = self
            .host_id(a)
            .ok_or_else(|| TopologyError::UnknownHost(a.into()))?;
        let ib = self
            .host_id(b)
            .ok_or_else(|| TopologyError::UnknownHost(b.into()))?;
        Ok(self.distance(ia, ib).unwrap_or(0))
    }

    /// The path between two racks.
    pub fn rack_path(&self, a: RackId, b: RackId) -> Option<PathInfo> {
        let n = self.rack_count() as u32;
        if a >= n || b >= n {
            return None;
        }
        let avail = self.rack_available_bps(a, b);
        Some(PathInfo {
            hops: self.rack_hops(a, b),
            max_utilization: self.rack_utilization(a, b),
            available_bps: avail.is_finite().then_some(avail),
        })
    }

    /// The path between two hosts (the rack path; same-host is also "inside one rack").
    pub fn path(&self, a: HostId, b: HostId) -> Option<PathInfo> {
        let mut p = self.rack_path(self.rack_of(a)?, self.rack_of(b)?)?;
        if a == b {
            p.hops = 0;
        }
        Some(p)
    }

    /// Set the utilization of one rack's uplinks (leaf-spine: leaf-spine
    /// links; fat-tree: edge-aggregation links). Generated fabrics only.
    pub fn set_rack_uplink_utilization(&mut self, r: RackId, u: f64) -> Result<(), TopologyError> {
        if self.matrix.is_some() {
            return Err(TopologyError::NotApplicable(
                "explicit topologies take utilization per link in their config",
            ));
        }
        let racks = self.rack_count() as u32;
        let slot = self
            .rack_uplink_util
            .get_mut(r as usize)
            .ok_or(TopologyError::UnknownRack { rack: r, racks })?;
        *slot = check_util(u)?;
        Ok(())
    }

    /// Set the utilization of one fat-tree pod's aggregation-core links.
    pub fn set_pod_uplink_utilization(&mut self, p: PodId, u: f64) -> Result<(), TopologyError> {
        if !matches!(self.fabric, Fabric::FatTree { .. }) {
            return Err(TopologyError::NotApplicable(
                "pod uplinks exist only in a fat-tree",
            ));
        }
        let pods = self.pods;
        let slot = self
            .pod_uplink_util
            .get_mut(p as usize)
            .ok_or(TopologyError::UnknownPod { pod: p, pods })?;
        *slot = check_util(u)?;
        Ok(())
    }

    // ---- unchecked fast paths for the engine (ids come from this topology) ----

    /// Generated fabrics: per-rack and per-pod uplink utilization, for the
    /// engine's closed-form sums; `None` for explicit graphs.
    #[inline]
    pub(crate) fn generated_uplinks(&self) -> Option<(&[f64], &[f64], &[PodId])> {
        match self.matrix {
            Some(_) => None,
            None => Some((
                &self.rack_uplink_util,
                &self.pod_uplink_util,
                &self.rack_pod,
            )),
        }
    }

    #[inline]
    pub(crate) fn rack_of_unchecked(&self, h: HostId) -> RackId {
        self.host_rack[h as usize]
    }

    /// Links between hosts in racks `a` and `b` (2 when `a == b`).
    #[inline]
    pub(crate) fn rack_hops(&self, a: RackId, b: RackId) -> u8 {
        if a == b {
            return 2;
        }
        match &self.matrix {
            Some(m) => m.hops[a as usize * m.racks + b as usize],
            None => {
                if self.rack_pod[a as usize] == self.rack_pod[b as usize] {
                    4
                } else {
                    6
                }
            }
        }
    }

    /// Largest link utilization on the path between racks (0 when `a == b`).
    #[inline]
    pub(crate) fn rack_utilization(&self, a: RackId, b: RackId) -> f64 {
        if a == b {
            return 0.0;
        }
        match &self.matrix {
            Some(m) => f64::from(m.util[a as usize * m.racks + b as usize]),
            None => {
                let (a, b) = (a as usize, b as usize);
                let mut u = self.rack_uplink_util[a].max(self.rack_uplink_util[b]);
                let (pa, pb) = (self.rack_pod[a] as usize, self.rack_pod[b] as usize);
                if pa != pb {
                    u = u
                        .max(self.pod_uplink_util[pa])
                        .max(self.pod_uplink_util[pb]);
                }
                u
            }
        }
    }

    /// Bytes/s available on the path between racks; +inf when `a == b`.
    #[inline]
    pub(crate) fn rack_available_bps(&self, a: RackId, b: RackId) -> f64 {
        if a == b {
            return f64::INFINITY;
        }
        match &self.matrix {
            Some(m) => m.avail[a as usize * m.racks + b as usize],
            None => self.link_bps * (1.0 - self.rack_utilization(a, b)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ls(r: u32, h: u32, s: u32) -> Topology {
        Topology::leaf_spine(&LeafSpine {
            racks: r,
            hosts_per_rack: h,
            spines: s,
            link_gbps: 100.0,
        })
        .unwrap()
    }

    #[test]
    fn leaf_spine_distances() {
        let t = ls(3, 4, 2);
        assert_eq!(t.host_count(), 12);
        assert_eq!(t.rack_count(), 3);
        assert_eq!(t.pod_count(), 1);
        let d = |a, b| t.distance_by_name(a, b).unwrap();
        assert_eq!(d("r0-h0", "r0-h0"), 0);
        assert_eq!(d("r0-h0", "r0-h3"), 2);
        assert_eq!(d("r0-h0", "r1-h0"), 4);
        assert_eq!(d("r2-h3", "r0-h1"), 4);
        // Symmetric, and every pair is one of 0/2/4.
        for a in 0..12 {
            for b in 0..12 {
                let x = t.distance(a, b).unwrap();
                assert_eq!(x, t.distance(b, a).unwrap());
                let want = if a == b {
                    0
                } else if a / 4 == b / 4 {
                    2
                } else {
                    4
                };
                assert_eq!(x, want, "{a} {b}");
            }
        }
        assert_eq!(t.rack_of(5), Some(1));
        assert_eq!(t.distance(0, 12), None);
    }

    #[test]
    fn fat_tree_distances_and_size() {
        let t = Topology::fat_tree(&FatTree {
            k: 4,
            link_gbps: 10.0,
        })
        .unwrap();
        assert_eq!(t.host_count(), 16);
        assert_eq!(t.rack_count(), 8);
        assert_eq!(t.pod_count(), 4);
        let d = |a, b| t.distance_by_name(a, b).unwrap();
        assert_eq!(d("p0-e0-h0", "p0-e0-h0"), 0);
        assert_eq!(d("p0-e0-h0", "p0-e0-h1"), 2);
        assert_eq!(d("p0-e0-h0", "p0-e1-h0"), 4);
        assert_eq!(d("p0-e0-h0", "p3-e1-h1"), 6);
        for k in [2u32, 6, 8, 16] {
            let t = Topology::fat_tree(&FatTree { k, link_gbps: 1.0 }).unwrap();
            assert_eq!(t.host_count() as u32, k * k * k / 4);
            for a in 0..t.host_count() as u32 {
                let b = (a * 7 + 3) % t.host_count() as u32;
                let (pa, pb) = (a / (k * k / 4), b / (k * k / 4));
                let (ra, rb) = (a / (k / 2), b / (k / 2));
                let want = if a == b {
                    0
                } else if ra == rb {
                    2
                } else if pa == pb {
                    4
                } else {
                    6
                };
                assert_eq!(t.distance(a, b), Some(want));
                assert_eq!(t.pod_of(a), Some(pa));
            }
        }
    }

    #[test]
    fn generator_parameters_are_checked() {
        for k in [0u32, 1, 3, 5] {
            let e = Topology::fat_tree(&FatTree { k, link_gbps: 1.0 }).unwrap_err();
            assert!(e.to_string().contains("even"), "{e}");
        }
        assert!(matches!(
            Topology::fat_tree(&FatTree {
                k: 1000,
                link_gbps: 1.0
            }),
            Err(TopologyError::TooLarge { .. })
        ));
        let bad = |r, h, s, g| {
            Topology::leaf_spine(&LeafSpine {
                racks: r,
                hosts_per_rack: h,
                spines: s,
                link_gbps: g,
            })
            .unwrap_err()
            .to_string()
        };
        assert!(bad(0, 1, 1, 1.0).contains("racks"));
        assert!(bad(1, 0, 1, 1.0).contains("hosts_per_rack"));
        assert!(bad(1, 1, 0, 1.0).contains("spines"));
        assert!(bad(1, 1, 1, -1.0).contains("link_gbps"));
        assert!(bad(1, 1, 1, f64::NAN).contains("link_gbps"));
        assert!(bad(100_000, 100_000, 1, 1.0).contains("at most"));
    }

    #[test]
    fn generated_path_utilization() {
        let mut t = Topology::fat_tree(&FatTree {
            k: 4,
            link_gbps: 8.0,
        })
        .unwrap();
        t.set_rack_uplink_utilization(0, 0.5).unwrap();
        t.set_pod_uplink_utilization(3, 0.75).unwrap();
        let p = t.rack_path(0, 0).unwrap();
        assert_eq!((p.hops, p.max_utilization, p.available_bps), (2, 0.0, None));
        let p = t.rack_path(1, 2).unwrap(); // pod 0 to pod 1, both unloaded
        assert_eq!((p.hops, p.max_utilization), (6, 0.0));
        assert_eq!(p.available_bps, Some(1e9));
        let p = t.rack_path(0, 1).unwrap(); // same pod, rack 0 loaded
        assert_eq!((p.hops, p.max_utilization), (4, 0.5));
        assert_eq!(p.available_bps, Some(0.5e9));
        let p = t.rack_path(2, 7).unwrap(); // into pod 3
        assert_eq!((p.hops, p.max_utilization), (6, 0.75));
        assert!(t.set_rack_uplink_utilization(0, 1.5).is_err());
        assert!(t.set_rack_uplink_utilization(99, 0.5).is_err());
        assert!(t.set_pod_uplink_utilization(9, 0.5).is_err());
        assert!(ls(2, 2, 1).set_pod_uplink_utilization(0, 0.1).is_err());
    }

    fn cfg(json: &str) -> Result<Topology, TopologyError> {
        Topology::from_json(json)
    }

    const CLOS: &str = r#"{
        "switches": ["s1","s2","l1","l2","l3"],
        "hosts": [{"name":"a","attach":"l1"},{"name":"b","attach":"l1"},
                  {"name":"c","attach":"l2"},{"name":"d","attach":"l3"}],
        "links": [
            {"a":"l1","b":"s1","capacity_gbps":100,"utilization":0.9},
            {"a":"l1","b":"s2","capacity_gbps":100,"utilization":0.2},
            {"a":"l2","b":"s1","capacity_gbps":100,"utilization":0.1},
            {"a":"l2","b":"s2","capacity_gbps":100,"utilization":0.3},
            {"a":"l3","b":"s1","capacity_gbps":40}
        ]}"#;

    #[test]
    fn explicit_clos_with_redundant_paths() {
        let t = cfg(CLOS).unwrap();
        assert_eq!(t.host_count(), 4);
        assert_eq!(t.rack_count(), 3);
        let d = |a, b| t.distance_by_name(a, b).unwrap();
        assert_eq!(d("a", "a"), 0);
        assert_eq!(d("a", "b"), 2);
        assert_eq!(d("a", "c"), 4);
        assert_eq!(d("c", "d"), 4);
        let a = t.host_id("a").unwrap();
        let c = t.host_id("c").unwrap();
        let dd = t.host_id("d").unwrap();
        // a->c: via s1 max(0.9,0.1)=0.9, via s2 max(0.2,0.3)=0.3: least loaded 0.3.
        let p = t.path(a, c).unwrap();
        assert!((p.max_utilization - 0.3).abs() < 1e-6, "{p:?}");
        // bottleneck bandwidth: via s2 min(80, 70) = 70 Gb/s.
        assert!((p.available_bps.unwrap() - 70e9 / 8.0).abs() < 1.0);
        // a->d only via s1: 0.9.
        let p = t.path(a, dd).unwrap();
        assert!((p.max_utilization - 0.9).abs() < 1e-6);
        assert_eq!(t.path(a, a).unwrap().hops, 0);
    }

    #[test]
    fn explicit_tree_is_accepted_with_bfs_distances() {
        let t = cfg(r#"{"switches":["core","agg","e1","e2"],
            "hosts":[{"name":"x","attach":"e1"},{"name":"y","attach":"e2"},{"name":"z","attach":"core"}],
            "links":[{"a":"core","b":"agg","capacity_gbps":10},{"a":"agg","b":"e1","capacity_gbps":10},
                     {"a":"e2","b":"core","capacity_gbps":10}]}"#)
        .unwrap();
        assert_eq!(t.distance_by_name("x", "y").unwrap(), 5);
        assert_eq!(t.distance_by_name("x", "z").unwrap(), 4);
        assert_eq!(t.distance_by_name("y", "z").unwrap(), 3);
    }

    #[test]
    fn explicit_config_errors_name_the_problem() {
        let e = cfg(r#"{"switches":["s"],"hosts":[{"name":"a","attach":"s"}],
            "links":[{"a":"s","b":"s","capacity_gbps":1}]}"#)
        .unwrap_err();
        assert_eq!(e, TopologyError::SelfLoop("s".into()));
        assert!(e.to_string().contains("self-loop"), "{e}");

        let e = cfg(
            r#"{"switches":["s","t"],"hosts":[{"name":"a","attach":"s"}],
            "links":[{"a":"s","b":"t","capacity_gbps":1},{"a":"t","b":"s","capacity_gbps":1}]}"#,
        )
        .unwrap_err();
        assert!(matches!(e, TopologyError::DuplicateLink { .. }), "{e}");
        assert!(e.to_string().contains("twice"));

        let e = cfg(r#"{"switches":["s"],"hosts":[{"name":"a","attach":"nope"}],"links":[]}"#)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "host `a` attaches to `nope`, which is not a switch in `switches`"
        );

        let e = cfg(r#"{"switches":["s"],"hosts":[{"name":"a","attach":"s"}],
            "links":[{"a":"s","b":"ghost","capacity_gbps":1}]}"#)
        .unwrap_err();
        assert!(e.to_string().contains("`ghost` is not a switch"), "{e}");

        let e = cfg(r#"{"switches":["s"],"hosts":[{"name":"a","attach":"s"}],
            "links":[{"a":"s","b":"a","capacity_gbps":1}]}"#)
        .unwrap_err();
        assert!(e.to_string().contains("`a` is a host"), "{e}");

        let e = cfg(
            r#"{"switches":["s","t"],"hosts":[{"name":"a","attach":"s"}],
            "links":[{"a":"s","b":"t","capacity_gbps":-5}]}"#,
        )
        .unwrap_err();
        assert!(matches!(e, TopologyError::Capacity { value, .. } if value == -5.0));
        assert!(e.to_string().contains("capacity_gbps -5"), "{e}");
        let e = cfg(
            r#"{"switches":["s","t"],"hosts":[{"name":"a","attach":"s"}],
            "links":[{"a":"s","b":"t","capacity_gbps":0}]}"#,
        )
        .unwrap_err();
        assert!(matches!(e, TopologyError::Capacity { .. }));

        for u in ["-0.1", "1.5"] {
            let e = cfg(&format!(
                r#"{{"switches":["s","t"],"hosts":[{{"name":"a","attach":"s"}}],
                "links":[{{"a":"s","b":"t","capacity_gbps":1,"utilization":{u}}}]}}"#
            ))
            .unwrap_err();
            assert!(e.to_string().contains("outside 0..=1"), "{e}");
        }

        let e = cfg(r#"{"switches":["s","t"],"hosts":[{"name":"a","attach":"s"},{"name":"b","attach":"t"}],"links":[]}"#)
            .unwrap_err();
        assert!(matches!(e, TopologyError::Disconnected { .. }), "{e}");
        assert!(e.to_string().contains("cannot reach"), "{e}");

        let e = cfg(r#"{"switches":["s","a"],"hosts":[{"name":"a","attach":"s"}],"links":[]}"#)
            .unwrap_err();
        assert_eq!(e, TopologyError::DuplicateName("a".into()));
        let e = cfg(
            r#"{"switches":["s"],"hosts":[{"name":"a","attach":"s"},{"name":"a","attach":"s"}]}"#,
        )
        .unwrap_err();
        assert_eq!(e, TopologyError::DuplicateName("a".into()));
        let e = cfg(r#"{"switches":["s","s"],"hosts":[{"name":"a","attach":"s"}]}"#).unwrap_err();
        assert_eq!(e, TopologyError::DuplicateName("s".into()));
        assert_eq!(
            cfg(r#"{"switches":["s"],"hosts":[]}"#).unwrap_err(),
            TopologyError::NoHosts
        );
        assert!(matches!(cfg("{not json"), Err(TopologyError::Json(_))));
        assert!(matches!(
            cfg(r#"{"switches":[],"hosts":[],"bogus":1}"#),
            Err(TopologyError::Json(_))
        ));
        // An isolated switch without hosts does not matter.
        assert!(cfg(r#"{"switches":["s","lonely"],"hosts":[{"name":"a","attach":"s"}]}"#).is_ok());
    }
}
