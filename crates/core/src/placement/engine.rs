//! The decision for one VM (design S4, US8423646B2):
//!
//! 1. select the VM (for an overloaded host: most incoming traffic first);
//! 2. filter hosts by the first set of constraints ([`Filter`], in order:
//!    not the current host, exclude list, include list, host ready, same
//!    site, not the pair peer's host, capacity, concurrent migrations);
//! 3. compute the migration impact factor of every remaining host from the
//!    second set (traffic × distance to the VM's peers, path utilization,
//!    memory the pre-copy moves × distance; see [`Params`]);
//! 4. choose the lowest factor; ties go to the first host by name.
//!
//! Cost per decision: O(peers) to group the VM's peers by host and rack
//! (and, on generated fabrics, to sort its peer racks by uplink load); then
//! each rack's terms once: O(log peer racks) on leaf-spine and fat-tree
//! (closed forms), O(peer racks) on explicit graphs. Hosts holding peers are
//! scored exactly; every other host has its rack's factor, so racks are
//! visited in ascending factor order and stop as soon as none can beat the
//! best passing host (if most racks are full this degrades to a scan of all
//! hosts). Nothing is allocated per candidate; scratch arrays are reused
//! across decisions (stamped by a decision counter, never cleared).
//! [`Engine::explain`] scores every host, and the property tests check that
//! the fast path picks exactly the host the full scan picks.

mod terms;

use super::cluster::{Cluster, ClusterError, ClusterState, HostIx, HostState, VmIx};
use super::explain::{
    Choice, Decision, Explanation, Factor, Filter, HostVerdict, Mode, NetworkCost, PeerTraffic,
    Verdict,
};
use super::params::{ParamError, Params};
use super::precopy::precopy_bytes;
use super::topology::{PodId, RackId, Topology};
use super::traffic::{SymmetricTraffic, TrafficMatrix};

/// Rates above this (1 PB/s) are clamped, so sums stay finite.
pub const MAX_RATE_BPS: f64 = 1e15;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlacementError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error("unknown VM `{0}`")]
    UnknownVm(String),
    #[error("unknown host `{0}`")]
    UnknownHost(String),
    #[error("VM `{0}` is not on any host: use place_new to choose where to create it")]
    NotPlaced(String),
    #[error("VM `{vm}` already runs on `{host}`: use decide to choose where to move it")]
    AlreadyPlaced { vm: String, host: String },
    #[error("group cannot move together: {0}")]
    InvalidGroup(String),
    #[error(
        "no host fits VM `{vm}` (needs {cpu} vCPU, {mem_mib} MiB): largest free capacity is \
         {free_cpu} vCPU (on `{cpu_host}`) and {free_mem_mib} MiB (on `{mem_host}`); \
         hosts rejected by {rejected}"
    )]
    NoHostFits {
        vm: String,
        cpu: u32,
        mem_mib: u64,
        free_cpu: u32,
        cpu_host: String,
        free_mem_mib: u64,
        mem_host: String,
        /// e.g. "capacity: 5, host state: 1".
        rejected: String,
    },
}

/// Why a host failed (no strings: the hot path).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reject {
    CurrentHost,
    Excluded,
    NotIncluded,
    State(HostState),
    Site { have: u32, want: u32 },
    AntiAffinity,
    Capacity { free_cpu: u32, free_mem: u64 },
    MigrationLimit(u32),
}

impl Reject {
    fn filter(self) -> Filter {
        match self {
            Reject::CurrentHost => Filter::CurrentHost,
            Reject::Excluded => Filter::Excluded,
            Reject::NotIncluded => Filter::NotIncluded,
            Reject::State(_) => Filter::HostState,
            Reject::Site { .. } => Filter::Site,
            Reject::AntiAffinity => Filter::AntiAffinity,
            Reject::Capacity { .. } => Filter::Capacity,
            Reject::MigrationLimit(_) => Filter::MigrationLimit,
        }
    }
}

/// Everything a decision needs about its VM, prepared once.
#[derive(Debug, Clone, Copy)]
struct Ctx {
    vm: VmIx,
    mode: Mode,
    cur: Option<HostIx>,
    cur_rack: RackId,
    pair_host: Option<HostIx>,
    want_site: Option<u32>,
    cpu: u32,
    mem_mib: u64,
    /// What the capacity filter asks for: the VM plus any room reserved.
    need_cpu: u32,
    need_mem_mib: u64,
    mem_bytes: f64,
    dirty_bps: f64,
    has_include: bool,
    /// A group decision: the members are in `Scratch::group`, their pair
    /// peers' hosts marked in `Scratch::pair_stamp`.
    group: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct RackTerms {
    traffic: f64,
    utilization: f64,
    memory_bytes: f64,
    memory_hops: u8,
    converges: bool,
}

/// Reused per-decision arrays, valid where `*_stamp == epoch`.
#[derive(Debug, Clone, Default)]
struct Scratch {
    epoch: u32,
    host_stamp: Vec<u32>,
    host_rate: Vec<f64>,
    include_stamp: Vec<u32>,
    exclude_stamp: Vec<u32>,
    pair_stamp: Vec<u32>,
    group: Vec<VmIx>,
    /// Hosts holding peers of the VM (host_stamp == epoch).
    peer_hosts: Vec<HostIx>,
    tried_stamp: Vec<u32>,
    rack_stamp: Vec<u32>,
    rack_rate: Vec<f64>,
    peer_racks: Vec<RackId>,
    memo_stamp: Vec<u32>,
    memo: Vec<RackTerms>,
    /// Generated fabrics: Σ peer rates, per-pod sums and sorted sums (see
    /// [`Engine::finish_peers`]).
    total_rate: f64,
    pod_stamp: Vec<u32>,
    pod_rate: Vec<f64>,
    pod_lo: Vec<u32>,
    pod_hi: Vec<u32>,
    /// Peer racks sorted by (pod, uplink utilization): keys and cumulative
    /// Σ rate and Σ rate·c(u) (one longer than the keys).
    pod_keys: Vec<f64>,
    pod_cum_rate: Vec<f64>,
    pod_cum_cong: Vec<f64>,
    /// Peer racks sorted by the utilization seen from another pod.
    all_keys: Vec<f64>,
    all_cum_rate: Vec<f64>,
    all_cum_cong: Vec<f64>,
    sort_buf: Vec<(u32, f64, f64)>,
}

impl Scratch {
    /// Adds `rate` of traffic towards a peer on host `ph` (rack `rack`) to
    /// the per-host and per-rack sums of the current epoch.
    fn add_peer(&mut self, ph: HostIx, rack: RackId, rate: f64) {
        let (e, hi) = (self.epoch, ph as usize);
        if self.host_stamp[hi] != e {
            self.host_stamp[hi] = e;
            self.host_rate[hi] = 0.0;
            self.peer_hosts.push(ph);
        }
        self.host_rate[hi] += rate;
        let r = rack as usize;
        if self.rack_stamp[r] != e {
            self.rack_stamp[r] = e;
            self.rack_rate[r] = 0.0;
            self.peer_racks.push(rack);
        }
        self.rack_rate[r] += rate;
    }
}

impl Scratch {
    fn new(hosts: usize, racks: usize, pods: usize) -> Self {
        Scratch {
            epoch: 0,
            host_stamp: vec![0; hosts],
            host_rate: vec![0.0; hosts],
            include_stamp: vec![0; hosts],
            exclude_stamp: vec![0; hosts],
            pair_stamp: vec![0; hosts],
            group: Vec::new(),
            peer_hosts: Vec::new(),
            tried_stamp: vec![0; racks],
            rack_stamp: vec![0; racks],
            rack_rate: vec![0.0; racks],
            peer_racks: Vec::new(),
            memo_stamp: vec![0; racks],
            memo: vec![RackTerms::default(); racks],
            total_rate: 0.0,
            pod_stamp: vec![0; pods],
            pod_rate: vec![0.0; pods],
            pod_lo: vec![0; pods],
            pod_hi: vec![0; pods],
            pod_keys: Vec::new(),
            pod_cum_rate: Vec::new(),
            pod_cum_cong: Vec::new(),
            all_keys: Vec::new(),
            all_cum_rate: Vec::new(),
            all_cum_cong: Vec::new(),
            sort_buf: Vec::new(),
        }
    }

    fn next_epoch(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            for v in [
                &mut self.host_stamp,
                &mut self.include_stamp,
                &mut self.exclude_stamp,
                &mut self.pair_stamp,
                &mut self.tried_stamp,
                &mut self.rack_stamp,
                &mut self.memo_stamp,
                &mut self.pod_stamp,
            ] {
                v.iter_mut().for_each(|x| *x = 0);
            }
            self.epoch = 1;
        }
        self.peer_racks.clear();
        self.peer_hosts.clear();
    }
}

/// Congestion of a path whose most loaded link is at `u` (0..=1).
#[inline]
fn congestion(u: f64) -> f64 {
    u / (1.0 - u.min(0.99))
}

/// The network-aware placement engine over one topology, cluster and
/// traffic matrix. Pure: same inputs, same answers.
#[derive(Debug, Clone)]
pub struct Engine<'t> {
    topo: &'t Topology,
    params: Params,
    cluster: Cluster,
    traffic: SymmetricTraffic,
    incoming: Vec<f64>,
    /// Cluster hosts per topology rack (CSR, ascending host index).
    rack_offsets: Vec<u32>,
    rack_hosts: Vec<HostIx>,
    scratch: Scratch,
}

impl<'t> Engine<'t> {
    pub fn new(
        topo: &'t Topology,
        state: &ClusterState,
        traffic: &TrafficMatrix,
        params: Params,
    ) -> Result<Self, PlacementError> {
        let cluster = Cluster::new(state, topo)?;
        Self::from_cluster(topo, cluster, traffic, params)
    }

    /// `cluster` must have been built over `topo`. Traffic of VMs the
    /// cluster does not know is ignored (except as incoming traffic of a
    /// known VM).
    pub fn from_cluster(
        topo: &'t Topology,
        cluster: Cluster,
        traffic: &TrafficMatrix,
        params: Params,
    ) -> Result<Self, PlacementError> {
        params.validate()?;
        let remap: Vec<Option<VmIx>> = traffic.names().iter().map(|n| cluster.vm_ix(n)).collect();
        let map = |i: u32| remap.get(i as usize).copied().flatten();
        let mut incoming = vec![0.0; cluster.vm_count()];
        let mut edges = Vec::new();
        for (a, b, r) in traffic.entries_by_id() {
            let r = r.min(MAX_RATE_BPS);
            if let Some(vb) = map(b) {
                incoming[vb as usize] += r;
                if let Some(va) = map(a) {
                    edges.push((va, vb, r));
                }
            }
        }
        for (i, r) in traffic.external_in_by_id() {
            if let Some(v) = map(i) {
                incoming[v as usize] += r.min(MAX_RATE_BPS);
            }
        }
        let sym = SymmetricTraffic::build(cluster.vm_count(), edges.into_iter());
        let scratch = Scratch::new(cluster.host_count(), topo.rack_count(), topo.pod_count());
        let racks = topo.rack_count();
        let mut rack_offsets = vec![0u32; racks + 1];
        for h in &cluster.hosts {
            rack_offsets[h.rack as usize + 1] += 1;
        }
        for r in 0..racks {
            rack_offsets[r + 1] += rack_offsets[r];
        }
        let mut fill = rack_offsets.clone();
        let mut rack_hosts = vec![0; cluster.host_count()];
        for (i, h) in cluster.hosts.iter().enumerate() {
            let slot = &mut fill[h.rack as usize];
            rack_hosts[*slot as usize] = i as HostIx;
            *slot += 1;
        }
        Ok(Engine {
            topo,
            params,
            cluster,
            traffic: sym,
            incoming,
            rack_offsets,
            rack_hosts,
            scratch,
        })
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }
    pub fn topology(&self) -> &Topology {
        self.topo
    }
    pub fn params(&self) -> &Params {
        &self.params
    }
    /// Peers of a VM with the symmetric rate (bytes/s both ways).
    pub fn peers_of(&self, v: VmIx) -> &[(VmIx, f64)] {
        self.traffic.peers_of(v)
    }
    /// Incoming bytes/s of a VM (from VMs and external peers).
    pub fn incoming(&self, v: VmIx) -> f64 {
        self.incoming.get(v as usize).copied().unwrap_or(0.0)
    }

    fn vm(&self, name: &str) -> Result<VmIx, PlacementError> {
        self.cluster
            .vm_ix(name)
            .ok_or_else(|| PlacementError::UnknownVm(name.into()))
    }
    fn host(&self, name: &str) -> Result<HostIx, PlacementError> {
        self.cluster
            .host_ix(name)
            .ok_or_else(|| PlacementError::UnknownHost(name.into()))
    }
    fn check_vm(&self, v: VmIx) -> Result<(), PlacementError> {
        if (v as usize) < self.cluster.vm_count() {
            Ok(())
        } else {
            Err(PlacementError::UnknownVm(format!("#{v}")))
        }
    }

    // ---------------------------------------------------------------- decide

    /// Where to migrate `vm` (a running VM). Errors when it is not placed or
    /// no host passes the filters.
    pub fn decide(&mut self, vm: &str) -> Result<Decision, PlacementError> {
        let v = self.vm(vm)?;
        let c = self.decide_ix(v)?;
        Ok(self.named(v, c))
    }

    /// Where to create `vm` (listed in the cluster without a host): same
    /// filters minus "current host" and the migration limit, no memory term.
    pub fn place_new(&mut self, vm: &str) -> Result<Decision, PlacementError> {
        let v = self.vm(vm)?;
        let c = self.place_new_ix(v)?;
        Ok(self.named(v, c))
    }

    fn named(&self, v: VmIx, c: Choice) -> Decision {
        Decision {
            vm: self.cluster.vm_name(v).into(),
            from: self
                .cluster
                .vm_host(v)
                .map(|h| self.cluster.host_name(h).to_string()),
            to: self.cluster.host_name(c.host).into(),
            factor: c.factor,
            stay: c.stay,
        }
    }

    /// [`Self::decide`] by index: the hot path, no allocation.
    pub fn decide_ix(&mut self, v: VmIx) -> Result<Choice, PlacementError> {
        self.check_vm(v)?;
        if self.cluster.vm_host(v).is_none() {
            return Err(PlacementError::NotPlaced(self.cluster.vm_name(v).into()));
        }
        let ctx = self.prepare(v, Mode::Migrate);
        self.choose(&ctx)
    }

    /// [`Self::place_new`] by index.
    pub fn place_new_ix(&mut self, v: VmIx) -> Result<Choice, PlacementError> {
        self.check_vm(v)?;
        if let Some(h) = self.cluster.vm_host(v) {
            return Err(PlacementError::AlreadyPlaced {
                vm: self.cluster.vm_name(v).into(),
                host: self.cluster.host_name(h).into(),
            });
        }
        let ctx = self.prepare(v, Mode::Create);
        self.choose(&ctx)
    }

    /// [`Self::decide_ix`] among hosts that also keep `extra_cpu` /
    /// `extra_mem_mib` free after the move (room for a peer to follow).
    pub fn decide_with_room_ix(
        &mut self,
        v: VmIx,
        extra_cpu: u32,
        extra_mem_mib: u64,
    ) -> Result<Choice, PlacementError> {
        self.check_vm(v)?;
        if self.cluster.vm_host(v).is_none() {
            return Err(PlacementError::NotPlaced(self.cluster.vm_name(v).into()));
        }
        let mut ctx = self.prepare(v, Mode::Migrate);
        ctx.need_cpu = ctx.cpu.saturating_add(extra_cpu);
        ctx.need_mem_mib = ctx.mem_mib.saturating_add(extra_mem_mib);
        self.choose(&ctx)
    }

    /// Where VMs that share a host should move together (e.g. a group that
    /// talks mostly among itself): one decision over their combined traffic
    /// with non-members, combined size, and every member's filters. The
    /// choice's factors are the group's (sum of members' terms).
    pub fn decide_group_ix(&mut self, members: &[VmIx]) -> Result<Choice, PlacementError> {
        let ctx = self.prepare_group(members)?;
        self.choose(&ctx)
    }

    /// The first filter host `h` fails for VM `v`, if any (migration if
    /// `v` is placed, creation if not).
    pub fn check_ix(&mut self, v: VmIx, h: HostIx) -> Result<Result<(), Filter>, PlacementError> {
        self.check_vm(v)?;
        if h as usize >= self.cluster.host_count() {
            return Err(PlacementError::UnknownHost(format!("#{h}")));
        }
        let mode = if self.cluster.vm_host(v).is_some() {
            Mode::Migrate
        } else {
            Mode::Create
        };
        let ctx = self.prepare(v, mode);
        Ok(self.filter(&ctx, h).map_err(Reject::filter))
    }

    fn choose(&mut self, ctx: &Ctx) -> Result<Choice, PlacementError> {
        let best = if ctx.has_include {
            self.best_in_include(ctx)
        } else {
            self.best_by_rack(ctx)
        };
        let stay = ctx.cur.map(|h| self.factor(ctx, h));
        match best {
            Some(host) => Ok(Choice {
                host,
                factor: self.factor(ctx, host),
                stay,
            }),
            None => Err(self.no_host_fits(ctx)),
        }
    }

    /// Lowest (total, host index) among the VM's include list.
    fn best_in_include(&mut self, ctx: &Ctx) -> Option<HostIx> {
        let mut best: Option<(f64, HostIx)> = None;
        for k in 0..self.cluster.vms[ctx.vm as usize].include.len() {
            let c = self.cluster.vms[ctx.vm as usize].include[k];
            if self.filter(ctx, c).is_ok() {
                let t = self.factor(ctx, c).total;
                if lower(&best, t, c) {
                    best = Some((t, c));
                }
            }
        }
        best.map(|b| b.1)
    }

    /// Lowest (total, host index) over all passing hosts, without visiting
    /// every host. A host without peers of the VM has its rack's factor
    /// ([`Self::rack_base`]); only hosts with peers differ (lower). So: score
    /// the hosts with peers exactly, then visit racks by ascending
    /// (base factor, first host index), taking the first passing host of
    /// each, until no unvisited rack can beat the best. Same answer as the
    /// full scan that [`Self::explain`] does (the property tests compare).
    fn best_by_rack(&mut self, ctx: &Ctx) -> Option<HostIx> {
        let e = self.scratch.epoch;
        let mut best: Option<(f64, HostIx)> = None;
        for i in 0..self.scratch.peer_hosts.len() {
            let c = self.scratch.peer_hosts[i];
            if self.filter(ctx, c).is_ok() {
                let t = self.factor(ctx, c).total;
                if lower(&best, t, c) {
                    best = Some((t, c));
                }
            }
        }
        let racks = self.topo.rack_count();
        // A few selections of the minimum rack (O(racks) each), then a sort
        // of what is left if many racks have no passing host.
        for _ in 0..4 {
            let mut pick: Option<(f64, HostIx)> = None;
            let mut pick_rack = 0;
            for r in 0..racks {
                let (lo, hi) = (self.rack_offsets[r], self.rack_offsets[r + 1]);
                if lo == hi || self.scratch.tried_stamp[r] == e {
                    continue;
                }
                let base = self.rack_base(ctx, r as RackId);
                let first = self.rack_hosts[lo as usize];
                if lower(&pick, base, first) {
                    pick = Some((base, first));
                    pick_rack = r;
                }
            }
            let Some((base, first)) = pick else {
                return best.map(|b| b.1);
            };
            if !lower(&best, base, first) {
                return best.map(|b| b.1);
            }
            self.scratch.tried_stamp[pick_rack] = e;
            self.scan_rack(ctx, pick_rack, base, &mut best);
        }
        let mut rest: Vec<(f64, HostIx, usize)> = Vec::new();
        for r in 0..racks {
            let (lo, hi) = (self.rack_offsets[r], self.rack_offsets[r + 1]);
            if lo != hi && self.scratch.tried_stamp[r] != e {
                rest.push((
                    self.rack_base(ctx, r as RackId),
                    self.rack_hosts[lo as usize],
                    r,
                ));
            }
        }
        rest.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for (base, first, r) in rest {
            if !lower(&best, base, first) {
                break;
            }
            self.scan_rack(ctx, r, base, &mut best);
        }
        best.map(|b| b.1)
    }

    /// The first passing host without peers in rack `r` (its factor is `base`).
    fn scan_rack(&mut self, ctx: &Ctx, r: usize, base: f64, best: &mut Option<(f64, HostIx)>) {
        let e = self.scratch.epoch;
        for k in self.rack_offsets[r]..self.rack_offsets[r + 1] {
            let c = self.rack_hosts[k as usize];
            if !lower(best, base, c) {
                return;
            }
            if self.scratch.host_stamp[c as usize] == e {
                continue; // has peers: scored exactly already
            }
            if self.filter(ctx, c).is_ok() {
                *best = Some((base, c));
                return;
            }
        }
    }

    /// Hosts passing every filter for `v` (migration if placed, creation if
    /// not), in name order. For baselines that score hosts their own way.
    pub fn passing_hosts(&mut self, v: VmIx, out: &mut Vec<HostIx>) -> Result<(), PlacementError> {
        self.check_vm(v)?;
        let mode = if self.cluster.vm_host(v).is_some() {
            Mode::Migrate
        } else {
            Mode::Create
        };
        let ctx = self.prepare(v, mode);
        out.clear();
        for c in 0..self.cluster.host_count() as HostIx {
            if self.filter(&ctx, c).is_ok() {
                out.push(c);
            }
        }
        Ok(())
    }

    /// The impact factor of host `h` for VM `v` (whether or not it passes
    /// the filters; for the VM's own host, the cost of staying).
    pub fn factor_at(&mut self, v: VmIx, h: HostIx) -> Result<Factor, PlacementError> {
        self.check_vm(v)?;
        if h as usize >= self.cluster.host_count() {
            return Err(PlacementError::UnknownHost(format!("#{h}")));
        }
        let mode = if self.cluster.vm_host(v).is_some() {
            Mode::Migrate
        } else {
            Mode::Create
        };
        let ctx = self.prepare(v, mode);
        Ok(self.factor(&ctx, h))
    }

    // --------------------------------------------------------------- explain

    /// Every host's verdict and factor for `vm` (migration if it runs,
    /// creation if not): the data behind `duplex placement explain VM`.
    pub fn explain(&mut self, vm: &str) -> Result<Explanation, PlacementError> {
        let v = self.vm(vm)?;
        let mode = if self.cluster.vm_host(v).is_some() {
            Mode::Migrate
        } else {
            Mode::Create
        };
        let ctx = self.prepare(v, mode);
        let mut hosts = Vec::with_capacity(self.cluster.host_count());
        let mut best: Option<(HostIx, Factor)> = None;
        for c in 0..self.cluster.host_count() as HostIx {
            let verdict = self.filter(&ctx, c);
            let factor = self.factor(&ctx, c);
            if verdict.is_ok() && beats(&best, factor.total) {
                best = Some((c, factor));
            }
            let rack = self.cluster.hosts[c as usize].rack;
            hosts.push(HostVerdict {
                host: self.cluster.host_name(c).into(),
                rack: self.topo.rack_name(rack).unwrap_or("?").into(),
                verdict: match verdict {
                    Ok(()) => Verdict::Pass,
                    Err(r) => Verdict::Fail {
                        filter: r.filter(),
                        reason: self.reason(&ctx, r),
                    },
                },
                factor,
            });
        }
        let peers = self
            .traffic
            .peers_of(v)
            .iter()
            .map(|&(p, r)| PeerTraffic {
                vm: self.cluster.vm_name(p).into(),
                host: self
                    .cluster
                    .vm_host(p)
                    .map(|h| self.cluster.host_name(h).to_string()),
                bytes_per_s: r,
            })
            .collect();
        Ok(Explanation {
            vm: vm.into(),
            mode,
            current_host: ctx.cur.map(|h| self.cluster.host_name(h).to_string()),
            chosen: best.map(|(h, _)| self.cluster.host_name(h).to_string()),
            chosen_factor: best.map(|(_, f)| f),
            stay: ctx.cur.map(|h| self.factor(&ctx, h)),
            incoming_bytes_per_s: self.incoming(v),
            peers,
            hosts,
            params: self.params.clone(),
        })
    }

    fn reason(&self, ctx: &Ctx, r: Reject) -> String {
        match r {
            Reject::CurrentHost => "the VM runs here now".into(),
            Reject::Excluded => "host is on the VM's exclude list".into(),
            Reject::NotIncluded => "host is not on the VM's include list".into(),
            Reject::State(s) => format!("host is {}, not ready", s.as_str()),
            Reject::Site { have, want } => {
                let why = if self.cluster.vms[ctx.vm as usize].site.is_some() {
                    "the VM is pinned to site"
                } else {
                    "the VM stays in its site"
                };
                format!(
                    "host is in site `{}`; {why} `{}`",
                    self.cluster.site_name(have),
                    self.cluster.site_name(want)
                )
            }
            Reject::AntiAffinity => {
                let peer = self.cluster.vms[ctx.vm as usize].peer.unwrap_or(0);
                format!(
                    "pair peer `{}` runs here (ACT and SBY never share a host)",
                    self.cluster.vm_name(peer)
                )
            }
            Reject::Capacity { free_cpu, free_mem } => format!(
                "needs {} vCPU / {} MiB, host has {free_cpu} vCPU / {free_mem} MiB free",
                ctx.need_cpu, ctx.need_mem_mib
            ),
            Reject::MigrationLimit(n) => format!(
                "{n} migrations in flight, limit is {}",
                self.params.max_concurrent_migrations
            ),
        }
    }

    fn no_host_fits(&self, ctx: &Ctx) -> PlacementError {
        let mut counts = [0u32; Filter::ALL.len()];
        let mut best_cpu: Option<(u32, HostIx)> = None;
        let mut best_mem: Option<(u64, HostIx)> = None;
        for c in 0..self.cluster.host_count() as HostIx {
            if let Err(r) = self.filter(ctx, c) {
                counts[r.filter() as usize] += 1;
            }
            if Some(c) == ctx.cur {
                continue;
            }
            let h = &self.cluster.hosts[c as usize];
            if exceeds(&best_cpu, h.free_cpu) {
                best_cpu = Some((h.free_cpu, c));
            }
            if exceeds(&best_mem, h.free_mem_mib) {
                best_mem = Some((h.free_mem_mib, c));
            }
        }
        let rejected: Vec<String> = Filter::ALL
            .iter()
            .zip(counts)
            .filter(|(_, n)| *n > 0)
            .map(|(f, n)| format!("{}: {n}", f.as_str()))
            .collect();
        let name = |h: Option<HostIx>| h.map_or("none", |h| self.cluster.host_name(h)).to_string();
        let vm = if ctx.group {
            let names: Vec<&str> = self
                .scratch
                .group
                .iter()
                .map(|&m| self.cluster.vm_name(m))
                .collect();
            names.join("+")
        } else {
            self.cluster.vm_name(ctx.vm).into()
        };
        PlacementError::NoHostFits {
            vm,
            cpu: ctx.need_cpu,
            mem_mib: ctx.need_mem_mib,
            free_cpu: best_cpu.map_or(0, |b| b.0),
            cpu_host: name(best_cpu.map(|b| b.1)),
            free_mem_mib: best_mem.map_or(0, |b| b.0),
            mem_host: name(best_mem.map(|b| b.1)),
            rejected: if rejected.is_empty() {
                "nothing (the cluster has no other host)".into()
            } else {
                rejected.join(", ")
            },
        }
    }

    // ------------------------------------------------------ VM selection

    /// VMs on `host`, most incoming traffic first (ties by name): the order
    /// in which to relieve an overloaded host (claims 3-4).
    pub fn vms_by_incoming(&self, host: &str) -> Result<Vec<(String, f64)>, PlacementError> {
        let h = self.host(host)?;
        let mut vms: Vec<VmIx> = self.cluster.vms_on(h);
        vms.sort_by(|&a, &b| {
            self.incoming(b)
                .total_cmp(&self.incoming(a))
                .then_with(|| self.cluster.vm_name(a).cmp(self.cluster.vm_name(b)))
        });
        Ok(vms
            .into_iter()
            .map(|v| (self.cluster.vm_name(v).to_string(), self.incoming(v)))
            .collect())
    }

    /// For an overloaded `host`: the first VM, by incoming traffic, that
    /// some other host can take, with its decision. `None` when none can move.
    pub fn select_for_overloaded(
        &mut self,
        host: &str,
    ) -> Result<Option<Decision>, PlacementError> {
        for (vm, _) in self.vms_by_incoming(host)? {
            match self.decide(&vm) {
                Ok(d) => return Ok(Some(d)),
                Err(PlacementError::NoHostFits { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    // ------------------------------------------------------------- booking

    /// Record that `vm` now runs on `host` (after a migration or creation).
    pub fn apply(&mut self, vm: &str, host: &str) -> Result<(), PlacementError> {
        let v = self.vm(vm)?;
        let h = self.host(host)?;
        self.apply_ix(v, h)
    }

    pub fn apply_ix(&mut self, v: VmIx, h: HostIx) -> Result<(), PlacementError> {
        Ok(self.cluster.move_vm(v, h)?)
    }

    /// Record that `host` is now in state `s` (e.g. loaded by a move booked
    /// in this pass).
    pub fn set_host_state(&mut self, host: &str, s: HostState) -> Result<(), PlacementError> {
        let h = self.host(host)?;
        Ok(self.cluster.set_host_state(h, s)?)
    }

    /// Network cost of the current placement.
    pub fn network_cost(&self) -> NetworkCost {
        let mut c = NetworkCost::default();
        for v in 0..self.cluster.vm_count() as VmIx {
            let Some(hv) = self.cluster.vm_host(v) else {
                continue;
            };
            for &(p, r) in self.traffic.peers_of(v) {
                if p <= v {
                    continue;
                }
                let Some(hp) = self.cluster.vm_host(p) else {
                    continue;
                };
                c.total_bps += r;
                if hv != hp {
                    c.cross_host_bps += r;
                    let (ra, rb) = (
                        self.cluster.hosts[hv as usize].rack,
                        self.cluster.hosts[hp as usize].rack,
                    );
                    c.traffic_hops += r * f64::from(self.topo.rack_hops(ra, rb));
                    if ra != rb {
                        c.cross_rack_bps += r;
                    }
                }
            }
        }
        c
    }

    // ------------------------------------------------------------ internals

    /// Group the VM's peers by host and rack, mark its lists: O(peers + lists).
    fn prepare(&mut self, v: VmIx, mode: Mode) -> Ctx {
        self.scratch.next_epoch();
        let e = self.scratch.epoch;
        let row = &self.cluster.vms[v as usize];
        let cur = row.host;
        let cur_rack = cur.map_or(0, |h| self.cluster.hosts[h as usize].rack);
        let want_site = row.site.or_else(|| {
            if self.params.allow_cross_site {
                None
            } else {
                cur.map(|h| self.cluster.hosts[h as usize].site)
            }
        });
        let pair_host = row.peer.and_then(|p| self.cluster.vms[p as usize].host);
        let s = &mut self.scratch;
        for &h in &row.include {
            s.include_stamp[h as usize] = e;
        }
        for &h in &row.exclude {
            s.exclude_stamp[h as usize] = e;
        }
        for &(p, rate) in self.traffic.peers_of(v) {
            let Some(ph) = self.cluster.vms[p as usize].host else {
                continue;
            };
            s.add_peer(ph, self.cluster.hosts[ph as usize].rack, rate);
        }
        let ctx = Ctx {
            vm: v,
            mode,
            cur,
            cur_rack,
            pair_host,
            want_site,
            cpu: row.cpu,
            mem_mib: row.mem_mib,
            need_cpu: row.cpu,
            need_mem_mib: row.mem_mib,
            mem_bytes: row.mem_bytes(),
            dirty_bps: row.dirty_bps,
            has_include: !row.include.is_empty(),
            group: false,
        };
        self.finish_peers();
        ctx
    }

    /// Like [`Self::prepare`] for VMs that share a host and move together:
    /// their traffic with non-members, their summed size, every member's
    /// exclude list, pair peer and site pin.
    fn prepare_group(&mut self, members: &[VmIx]) -> Result<Ctx, PlacementError> {
        let Some(&first) = members.first() else {
            return Err(PlacementError::InvalidGroup("no VM given".into()));
        };
        for &m in members {
            self.check_vm(m)?;
        }
        let name = |e: &Self, m: VmIx| e.cluster.vm_name(m).to_string();
        let cur = self
            .cluster
            .vm_host(first)
            .ok_or_else(|| PlacementError::NotPlaced(name(self, first)))?;
        let mut want_site = None;
        for (i, &m) in members.iter().enumerate() {
            let row = &self.cluster.vms[m as usize];
            if row.host != Some(cur) {
                return Err(PlacementError::InvalidGroup(format!(
                    "`{}` and `{}` are not on one host",
                    name(self, first),
                    name(self, m)
                )));
            }
            if members[..i].contains(&m) {
                return Err(PlacementError::InvalidGroup(format!(
                    "`{}` listed twice",
                    name(self, m)
                )));
            }
            if !row.include.is_empty() {
                return Err(PlacementError::InvalidGroup(format!(
                    "`{}` has an include list",
                    name(self, m)
                )));
            }
            if let Some(p) = row.peer {
                if members.contains(&p) {
                    return Err(PlacementError::InvalidGroup(format!(
                        "pair `{}` and `{}` never share a host",
                        name(self, m),
                        name(self, p)
                    )));
                }
            }
            if let Some(site) = row.site {
                if want_site.is_some_and(|w| w != site) {
                    return Err(PlacementError::InvalidGroup(
                        "members pinned to different sites".into(),
                    ));
                }
                want_site = Some(site);
            }
        }
        self.scratch.next_epoch();
        let e = self.scratch.epoch;
        let (cur_rack, cur_site) = {
            let h = &self.cluster.hosts[cur as usize];
            (h.rack, h.site)
        };
        let s = &mut self.scratch;
        s.group.clear();
        s.group.extend_from_slice(members);
        let (mut cpu, mut mem) = (0u32, 0u64);
        for &m in members {
            let row = &self.cluster.vms[m as usize];
            cpu = cpu.saturating_add(row.cpu);
            mem = mem.saturating_add(row.mem_mib);
            for &h in &row.exclude {
                s.exclude_stamp[h as usize] = e;
            }
            if let Some(ph) = row.peer.and_then(|p| self.cluster.vms[p as usize].host) {
                s.pair_stamp[ph as usize] = e;
            }
            for &(p, rate) in self.traffic.peers_of(m) {
                if members.contains(&p) {
                    continue;
                }
                let Some(ph) = self.cluster.vms[p as usize].host else {
                    continue;
                };
                s.add_peer(ph, self.cluster.hosts[ph as usize].rack, rate);
            }
        }
        self.finish_peers();
        Ok(Ctx {
            vm: first,
            mode: Mode::Migrate,
            cur: Some(cur),
            cur_rack,
            pair_host: None,
            want_site: want_site.or((!self.params.allow_cross_site).then_some(cur_site)),
            cpu,
            mem_mib: mem,
            need_cpu: cpu,
            need_mem_mib: mem,
            mem_bytes: 0.0,
            dirty_bps: 0.0,
            has_include: false,
            group: true,
        })
    }

    /// The first set of constraints, first failure wins.
    #[inline]
    fn filter(&self, ctx: &Ctx, c: HostIx) -> Result<(), Reject> {
        let h = &self.cluster.hosts[c as usize];
        let e = self.scratch.epoch;
        if Some(c) == ctx.cur {
            return Err(Reject::CurrentHost);
        }
        if self.scratch.exclude_stamp[c as usize] == e {
            return Err(Reject::Excluded);
        }
        if ctx.has_include && self.scratch.include_stamp[c as usize] != e {
            return Err(Reject::NotIncluded);
        }
        if h.state != HostState::Ready {
            return Err(Reject::State(h.state));
        }
        if let Some(want) = ctx.want_site {
            if h.site != want {
                return Err(Reject::Site { have: h.site, want });
            }
        }
        if Some(c) == ctx.pair_host || (ctx.group && self.scratch.pair_stamp[c as usize] == e) {
            return Err(Reject::AntiAffinity);
        }
        if h.free_cpu < ctx.need_cpu || h.free_mem_mib < ctx.need_mem_mib {
            return Err(Reject::Capacity {
                free_cpu: h.free_cpu,
                free_mem: h.free_mem_mib,
            });
        }
        if ctx.mode == Mode::Migrate && h.in_flight >= self.params.max_concurrent_migrations {
            return Err(Reject::MigrationLimit(h.in_flight));
        }
        Ok(())
    }

    /// The second set of constraints: the impact factor of host `c`.
    #[inline]
    fn factor(&mut self, ctx: &Ctx, c: HostIx) -> Factor {
        let r = self.cluster.hosts[c as usize].rack;
        let t = self.rack_terms(ctx, r);
        let on_host = if self.scratch.host_stamp[c as usize] == self.scratch.epoch {
            self.scratch.host_rate[c as usize]
        } else {
            0.0
        };
        self.combine(&t, on_host, Some(c) == ctx.cur)
    }

    /// Factor of a host of rack `r` with no peers of the VM (not its current host).
    #[inline]
    fn rack_base(&mut self, ctx: &Ctx, r: RackId) -> f64 {
        let t = self.rack_terms(ctx, r);
        self.combine(&t, 0.0, false).total
    }

    /// A host's factor from its rack's terms and the peer traffic on the host itself.
    #[inline]
    fn combine(&self, t: &RackTerms, on_host: f64, staying: bool) -> Factor {
        // rack_terms counts every peer in the rack at 2 hops; those on the host itself are at 0.
        let traffic = (t.traffic - 2.0 * on_host).max(0.0);
        let (memory_bytes, memory_hops, converges) = if staying {
            (0.0, 0, true)
        } else {
            (t.memory_bytes, t.memory_hops, t.converges)
        };
        let p = &self.params;
        let total = p.traffic_weight * traffic
            + p.utilization_weight * t.utilization
            + p.memory_weight * memory_bytes * f64::from(memory_hops);
        Factor {
            traffic,
            utilization: t.utilization,
            memory_bytes,
            memory_hops,
            converges,
            total,
        }
    }

    /// After grouping the peers by rack: for generated fabrics, the sums that
    /// make a rack's traffic and utilization terms O(log peer racks).
    fn finish_peers(&mut self) {
        let Some((up, pod_up, rack_pod)) = self.topo.generated_uplinks() else {
            return;
        };
        let s = &mut self.scratch;
        let e = s.epoch;
        s.total_rate = 0.0;
        s.sort_buf.clear();
        for &r in &s.peer_racks {
            let rate = s.rack_rate[r as usize];
            s.total_rate += rate;
            let p = rack_pod[r as usize];
            if s.pod_stamp[p as usize] != e {
                s.pod_stamp[p as usize] = e;
                s.pod_rate[p as usize] = 0.0;
            }
            s.pod_rate[p as usize] += rate;
            s.sort_buf.push((p, up[r as usize], rate));
        }
        // Per pod, by the rack's own uplink load.
        s.sort_buf.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then(a.1.total_cmp(&b.1))
                .then(a.2.total_cmp(&b.2))
        });
        s.pod_keys.clear();
        s.pod_cum_rate.clear();
        s.pod_cum_cong.clear();
        s.pod_cum_rate.push(0.0);
        s.pod_cum_cong.push(0.0);
        let (mut cr, mut cc) = (0.0, 0.0);
        for (i, &(p, u, rate)) in s.sort_buf.iter().enumerate() {
            if i == 0 || s.sort_buf[i - 1].0 != p {
                s.pod_lo[p as usize] = i as u32;
            }
            s.pod_hi[p as usize] = i as u32 + 1;
            cr += rate;
            cc += rate * congestion(u);
            s.pod_keys.push(u);
            s.pod_cum_rate.push(cr);
            s.pod_cum_cong.push(cc);
        }
        // All peer racks, by the load seen from another pod.
        for t in s.sort_buf.iter_mut() {
            t.1 = t.1.max(pod_up[t.0 as usize]);
        }
        s.sort_buf.sort_unstable_by(|a, b| {
            a.1.total_cmp(&b.1)
                .then(a.0.cmp(&b.0))
                .then(a.2.total_cmp(&b.2))
        });
        s.all_keys.clear();
        s.all_cum_rate.clear();
        s.all_cum_cong.clear();
        s.all_cum_rate.push(0.0);
        s.all_cum_cong.push(0.0);
        let (mut cr, mut cc) = (0.0, 0.0);
        for &(_, u, rate) in &s.sort_buf {
            cr += rate;
            cc += rate * congestion(u);
            s.all_keys.push(u);
            s.all_cum_rate.push(cr);
            s.all_cum_cong.push(cc);
        }
    }

    /// Traffic and utilization terms of rack `r` in a generated fabric:
    /// hops are 2 / 4 / 6 (same rack / pod / else) so
    /// `Σ rate·hops = 6·S − 2·S_pod − 2·S_rack`; a path's load is
    /// `max(u_r, u_R)` inside a pod and `max(u_r, U_p, u_R, U_P)` across, so
    /// `Σ rate·c(max(x, key))` is a sorted prefix-sum query.
    #[inline]
    fn closed_form_terms(
        &self,
        r: RackId,
        up: &[f64],
        pod_up: &[f64],
        rack_pod: &[PodId],
    ) -> (f64, f64) {
        let s = &self.scratch;
        let e = s.epoch;
        let p = rack_pod[r as usize] as usize;
        let a = up[r as usize];
        let s_rack = if s.rack_stamp[r as usize] == e {
            s.rack_rate[r as usize]
        } else {
            0.0
        };
        let (s_pod, lo, hi) = if s.pod_stamp[p] == e {
            (s.pod_rate[p], s.pod_lo[p] as usize, s.pod_hi[p] as usize)
        } else {
            (0.0, 0, 0)
        };
        let traffic = (6.0 * s.total_rate - 2.0 * s_pod - 2.0 * s_rack).max(0.0);
        let query =
            |keys: &[f64], cum_rate: &[f64], cum_cong: &[f64], lo: usize, hi: usize, x: f64| {
                let k = lo + keys[lo..hi].partition_point(|&u| u <= x);
                congestion(x) * (cum_rate[k] - cum_rate[lo]) + (cum_cong[hi] - cum_cong[k])
            };
        // Same pod, other racks.
        let mut util = query(&s.pod_keys, &s.pod_cum_rate, &s.pod_cum_cong, lo, hi, a)
            - s_rack * congestion(a);
        if pod_up.len() > 1 {
            // Other pods: every peer rack at max(a2, key) minus this pod's.
            let a2 = a.max(pod_up[p]);
            let n = s.all_keys.len();
            util += query(&s.all_keys, &s.all_cum_rate, &s.all_cum_cong, 0, n, a2)
                - query(&s.pod_keys, &s.pod_cum_rate, &s.pod_cum_cong, lo, hi, a2);
        }
        (traffic, util.max(0.0))
    }

    /// Terms shared by every host of rack `r`, computed once per decision.
    #[inline]
    fn rack_terms(&mut self, ctx: &Ctx, r: RackId) -> RackTerms {
        let ri = r as usize;
        let e = self.scratch.epoch;
        if self.scratch.memo_stamp[ri] == e {
            return self.scratch.memo[ri];
        }
        let (traffic, utilization) = match self.topo.generated_uplinks() {
            Some((up, pod_up, rack_pod)) => self.closed_form_terms(r, up, pod_up, rack_pod),
            None => {
                let mut traffic = 0.0;
                let mut utilization = 0.0;
                for &pr in &self.scratch.peer_racks {
                    let rate = self.scratch.rack_rate[pr as usize];
                    traffic += rate * f64::from(self.topo.rack_hops(r, pr));
                    if pr != r {
                        utilization += rate * congestion(self.topo.rack_utilization(r, pr));
                    }
                }
                (traffic, utilization)
            }
        };
        let (memory_bytes, memory_hops, converges) = match ctx.mode {
            Mode::Create => (0.0, 0, true),
            Mode::Migrate => {
                let bw = self
                    .params
                    .migration_bandwidth_bps
                    .min(self.topo.rack_available_bps(ctx.cur_rack, r));
                let one = |mem: f64, dirty: f64| {
                    precopy_bytes(
                        mem,
                        dirty,
                        bw,
                        self.params.max_precopy_rounds,
                        self.params.nonconverging_factor,
                    )
                };
                let (bytes, converges) = if ctx.group {
                    self.scratch.group.iter().fold((0.0, true), |(b, c), &m| {
                        let row = &self.cluster.vms[m as usize];
                        let p = one(row.mem_bytes(), row.dirty_bps);
                        (b + p.bytes, c && p.converges)
                    })
                } else {
                    let p = one(ctx.mem_bytes, ctx.dirty_bps);
                    (p.bytes, p.converges)
                };
                (bytes, self.topo.rack_hops(ctx.cur_rack, r), converges)
            }
        };
        let t = RackTerms {
            traffic,
            utilization,
            memory_bytes,
            memory_hops,
            converges,
        };
        self.scratch.memo_stamp[ri] = e;
        self.scratch.memo[ri] = t;
        t
    }
}

/// True when (total, host) sorts before the best so far.
#[inline]
fn lower(best: &Option<(f64, HostIx)>, total: f64, c: HostIx) -> bool {
    match best {
        None => true,
        Some((t, b)) => total < *t || (total == *t && c < *b),
    }
}

/// True when `total` beats the best so far (strictly: ties keep the first).
#[inline]
fn beats(best: &Option<(HostIx, Factor)>, total: f64) -> bool {
    match best {
        None => true,
        Some((_, f)) => total < f.total,
    }
}

/// True when `x` exceeds the largest so far (strictly).
fn exceeds<T: PartialOrd + Copy>(best: &Option<(T, HostIx)>, x: T) -> bool {
    match best {
        None => true,
        Some((b, _)) => *b < x,
    }
}
