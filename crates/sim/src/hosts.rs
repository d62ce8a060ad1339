//! Simulated hosts: each an agent (with its persisted fence), its VMs, their
//! guests (the real role machine, `duplex_core::role`) and network elements.
//! Orders arrive through [`SimAgent`], the controller's `AgentApi`, where
//! the fault injector loses, delays, duplicates or refuses them.

use crate::faults::Faults;
use duplex_agent_client::{AgentApi, ClientError, Connector};
use duplex_core::agent_api::{
    AccelInfo, AccelKind, HandoverOrder, HandoverStatus, HostCapacity, HostInfo, HostReport,
    HostUsage, MigrateRequest, MigrationInfo, MigrationPhase, VmInfo, VmState, VmUsage, WaitFor,
    GUEST_UNCHANGED,
};
use duplex_core::guest_proto::{Op, TargetRole};
use duplex_core::role::{Role, RoleCommand, RoleState};
use duplex_core::site::{HandoffInfo, SiteBufferStatus, SiteSide};
use duplex_core::vm_spec::VmSpec;
use duplex_store::MemoryStore;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The controller's election in the store.
pub const ELECTION: &str = "controller";
/// How long a simulated live migration takes.
const MIGRATION_TIME: Duration = Duration::from_millis(1500);

#[derive(Debug, Clone)]
pub struct SimVm {
    pub spec: VmSpec,
    pub guest: RoleState,
    pub configured: bool,
    /// An element hold or forward is in place.
    pub element_busy: bool,
    pub migration: Option<MigrationInfo>,
    /// Isolated on the controller's order: paused, off the network.
    pub isolated: bool,
    /// vCPUs it keeps busy, and the CPU time it used so far (what the
    /// agent reads from its QEMU process).
    pub cpu_busy: f64,
    pub cpu_seconds: f64,
}

impl SimVm {
    /// A VM as created: idle, no role yet.
    pub fn new(spec: VmSpec) -> SimVm {
        SimVm {
            spec,
            guest: RoleState::default(),
            configured: false,
            element_busy: false,
            migration: None,
            isolated: false,
            cpu_busy: 0.0,
            cpu_seconds: 0.0,
        }
    }
}

#[derive(Debug, Default)]
pub struct SimHost {
    /// The agent answers (false: crashed, powered off or cut off).
    pub up: bool,
    /// The agent fences itself after this long without an accepted report.
    pub self_fence_ms: Option<u64>,
    /// When its last report was accepted (or it started).
    pub last_accepted: Option<tokio::time::Instant>,
    /// Self-fenced: its VMs are cut off the network and its ACTs paused;
    /// nothing on it serves.
    pub fenced: bool,
    /// Its service link is cut: its guests hear neither their peers nor
    /// the witness (and their peers do not hear them).
    pub service_cut: bool,
    /// The highest fencing token obeyed (persisted: survives a restart).
    pub fence: u64,
    pub vms: BTreeMap<String, SimVm>,
    pub seq: u64,
    /// When it last reported (its VMs' CPU time advances between reports).
    pub reported_at: Option<tokio::time::Instant>,
}

/// Everything the simulation's hosts hold, plus what the checks need.
#[derive(Default)]
pub struct World {
    pub hosts: BTreeMap<String, SimHost>,
    /// Invariant violations seen, in order.
    pub violations: Vec<String>,
    /// Orders obeyed, for the report.
    pub obeyed: u64,
    /// The pairs' members, for the split-brain check.
    pub pairs: Vec<[String; 2]>,
}

pub type Shared = Arc<Mutex<World>>;

pub fn lock(w: &Shared) -> MutexGuard<'_, World> {
    w.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn url_of(host: &str) -> String {
    format!("http://{host}.sim:7070")
}

fn host_of_url(url: &str) -> String {
    url.trim_start_matches("http://")
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string()
}

impl World {
    /// Where VM `vm` runs now.
    pub fn find(&self, vm: &str) -> Option<(&str, &SimVm)> {
        self.hosts
            .iter()
            .find_map(|(h, s)| s.vms.get(vm).map(|v| (h.as_str(), v)))
    }

    fn find_mut(&mut self, vm: &str) -> Option<&mut SimVm> {
        self.hosts.values_mut().find_map(|s| s.vms.get_mut(vm))
    }

    /// Never two guests of one pair serving as ACT, and no VM serving on
    /// two hosts: checked after every change. A copy on a self-fenced host,
    /// or isolated, does not serve (its element drops every frame).
    pub fn check_split_brain(&mut self, when: &str) {
        let mut seen = std::collections::BTreeMap::new();
        for (h, s) in self.hosts.iter().filter(|(_, s)| !s.fenced) {
            for (vm, _) in s.vms.iter().filter(|(_, x)| !x.isolated) {
                if let Some(first) = seen.insert(vm.clone(), h.clone()) {
                    self.violations
                        .push(format!("{vm} runs on {first} and {h} after {when}"));
                }
            }
        }
        for [a, b] in self.pairs.clone() {
            let act = |v: &str| {
                self.hosts.values().filter(|s| !s.fenced).any(|s| {
                    s.vms
                        .get(v)
                        .is_some_and(|x| x.guest.role == Role::Act && !x.isolated)
                })
            };
            if act(&a) && act(&b) {
                self.violations
                    .push(format!("split brain: {a} and {b} both ACT after {when}"));
            }
        }
    }

    /// Whether each VM on `host` has lost its peer, and the witness.
    fn apart(&self, host: &str) -> BTreeMap<String, (bool, bool)> {
        let cut = |h: &SimHost| h.service_cut;
        let on_cut = |vm: &str| {
            self.hosts
                .values()
                .any(|h| cut(h) && h.vms.contains_key(vm))
        };
        let here = self.hosts.get(host).is_some_and(cut);
        let peer = |vm: &str| {
            self.pairs
                .iter()
                .find(|p| p.contains(&vm.to_string()))
                .and_then(|[a, b]| [a, b].into_iter().find(|m| *m != vm))
        };
        let vms = self
            .hosts
            .get(host)
            .map(|h| h.vms.keys().cloned().collect::<Vec<_>>());
        vms.unwrap_or_default()
            .into_iter()
            .map(|vm| {
                let lost = here || peer(&vm).is_some_and(|p| on_cut(p));
                (vm, (lost, here))
            })
            .collect()
    }

    pub fn report(&mut self, host: &str) -> Option<HostReport> {
        let apart = self.apart(host);
        let h = self.hosts.get_mut(host)?;
        if !h.up {
            return None;
        }
        h.seq += 1;
        let now = tokio::time::Instant::now();
        let dt = h
            .reported_at
            .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
        h.reported_at = Some(now);
        for v in h.vms.values_mut() {
            v.cpu_seconds += v.cpu_busy * dt;
        }
        let usage = HostUsage {
            vms: h
                .vms
                .values()
                .map(|v| VmUsage {
                    vm: v.spec.name.clone(),
                    cpu_seconds: v.cpu_seconds,
                    rss_mib: u64::from(v.spec.memory_mib),
                })
                .collect(),
        };
        let vms = h
            .vms
            .values()
            .map(|v| {
                let mut i = info(v);
                let (peer_lost, cut_off) = apart.get(&v.spec.name).copied().unwrap_or_default();
                if let Some(hb) = i.heartbeat.as_mut() {
                    let heard =
                        |lost| json!({"silent_ms": if lost { 1000 } else { 0 }, "lost": lost});
                    hb["peer"] = heard(peer_lost);
                    hb["witness"] = heard(cut_off);
                }
                i
            })
            .collect();
        Some(HostReport {
            host: HostInfo {
                name: host.into(),
                version: "sim".into(),
                accel: AccelInfo {
                    kind: AccelKind::Tcg,
                    reason: "simulated".into(),
                },
                qemu: "sim".into(),
                listen: url_of(host),
                vms: Vec::new(),
            },
            url: url_of(host),
            capacity: HostCapacity {
                vcpus: 16,
                memory_mib: 65536,
            },
            vms,
            traffic: Vec::new(),
            fence: h.fence,
            seq: h.seq,
            self_fence_ms: h.self_fence_ms,
            site: None,
            rules_version: 0,
            usage: Some(usage),
        })
    }

    /// Every copy of `vm`, by host.
    pub fn copies(&self, vm: &str) -> usize {
        self.hosts
            .values()
            .filter(|s| s.vms.contains_key(vm))
            .count()
    }

    /// The host loses power: its VMs die, its agent stops.
    pub fn power_off(&mut self, host: &str) {
        if let Some(h) = self.hosts.get_mut(host) {
            (h.up, h.fenced) = (false, false);
            h.vms.clear();
        }
    }

    /// The host is powered on: a fresh agent, no VMs.
    pub fn power_on(&mut self, host: &str, now: tokio::time::Instant) {
        if let Some(h) = self.hosts.get_mut(host) {
            (h.up, h.fenced, h.last_accepted) = (true, false, Some(now));
        }
    }

    /// A report of `host` was accepted; the controller holds it fenced or not.
    pub fn accepted(&mut self, host: &str, held_fenced: bool, now: tokio::time::Instant) {
        if let Some(h) = self.hosts.get_mut(host) {
            h.last_accepted = Some(now);
            h.fenced = held_fenced;
        }
    }

    /// Agents whose lease ran out fence themselves (`agent::self_fence`).
    pub fn watch_leases(&mut self, now: tokio::time::Instant) {
        for h in self.hosts.values_mut() {
            let (Some(lease), Some(at)) = (h.self_fence_ms, h.last_accepted) else {
                continue;
            };
            if !h.fenced && now.duration_since(at) >= Duration::from_millis(lease) {
                h.fenced = true;
            }
        }
    }
}

fn info(v: &SimVm) -> VmInfo {
    let role = v.guest.role;
    VmInfo {
        spec: v.spec.clone(),
        mac: v.spec.mac(),
        state: if v
            .migration
            .as_ref()
            .is_some_and(|m| m.phase == MigrationPhase::Active)
        {
            VmState::MigratingOut
        } else if v.isolated {
            VmState::Paused
        } else {
            VmState::Running
        },
        pid: Some(1),
        tap: "sim".into(),
        boot_ms: Some(1),
        guest: Some(json!({"hello": true})),
        serial_log: String::new(),
        migration: v.migration.clone(),
        heartbeat: (!v.isolated)
            .then(|| json!({"seq": 0, "role": role, "service": {"healthy": role == Role::Act}})),
        heartbeat_age_ms: (!v.isolated).then_some(0),
        reset_age_ms: None,
        isolated: v.isolated,
        failure: None,
        protection: None,
    }
}

fn refused(url: &str, why: String) -> ClientError {
    ClientError::Api {
        url: url.into(),
        status: 409,
        code: GUEST_UNCHANGED.into(),
        message: why,
    }
}

fn not_found(url: &str, vm: &str) -> ClientError {
    ClientError::Api {
        url: url.into(),
        status: 404,
        code: "not_found".into(),
        message: format!("no VM {vm}"),
    }
}

/// One host's agent as the controller sees it, bound to a fencing token.
pub struct SimAgent {
    world: Shared,
    store: MemoryStore,
    faults: Faults,
    url: String,
    host: String,
    fence: u64,
}

pub struct SimConnector {
    pub world: Shared,
    pub store: MemoryStore,
    pub faults: Faults,
}

impl Connector for SimConnector {
    fn connect(&self, url: &str, fence: u64) -> Arc<dyn AgentApi> {
        Arc::new(SimAgent {
            world: self.world.clone(),
            store: self.store.clone(),
            faults: self.faults.clone(),
            url: url.into(),
            host: host_of_url(url),
            fence,
        })
    }
}

type Answer = Result<serde_json::Value, ClientError>;

impl SimAgent {
    /// Sends one order through the fault injector; `apply` is the agent's
    /// handling of it (run once, twice if duplicated, never if lost).
    async fn order(
        &self,
        what: &str,
        apply: impl Fn(&mut World, &str) -> Answer + Send + Sync,
    ) -> Answer {
        let unreachable = |msg: &str| ClientError::Unreachable {
            url: self.url.clone(),
            msg: msg.into(),
        };
        {
            // Only the current leader's orders may leave a controller.
            let leader = self.store.leader(ELECTION).map(|(_, t)| t).unwrap_or(0);
            if self.fence != leader {
                lock(&self.world).violations.push(format!(
                    "order `{what}` to {} sent with token {} while the leader's is {leader}",
                    self.host, self.fence
                ));
            }
        }
        let fate = self.faults.fate();
        tokio::time::sleep(fate.delay).await;
        if fate.lost {
            tokio::time::sleep(fate.timeout).await;
            return Err(unreachable("request lost (simulated)"));
        }
        let up = lock(&self.world)
            .hosts
            .get(&self.host)
            .is_some_and(|h| h.up);
        if !up {
            tokio::time::sleep(fate.timeout).await;
            return Err(unreachable("agent down (simulated)"));
        }
        let answer = self.deliver(what, &apply, fate.duplicated);
        if fate.answer_lost {
            tokio::time::sleep(fate.timeout).await;
            return Err(unreachable("answer lost (simulated)"));
        }
        answer
    }

    /// The agent's fence check, then the order (twice if duplicated).
    fn deliver(
        &self,
        what: &str,
        apply: &dyn Fn(&mut World, &str) -> Answer,
        twice: bool,
    ) -> Answer {
        let mut w = lock(&self.world);
        let Some(fence) = w.hosts.get_mut(&self.host).map(|h| &mut h.fence) else {
            return Err(ClientError::Unreachable {
                url: self.url.clone(),
                msg: "no such host".into(),
            });
        };
        if self.fence < *fence {
            return Err(ClientError::StaleFence {
                url: self.url.clone(),
                message: format!("token {} < {}", self.fence, fence),
            });
        }
        *fence = self.fence;
        w.obeyed += 1;
        let first = apply(&mut w, &self.host);
        if twice {
            let _ = apply(&mut w, &self.host);
        }
        w.check_split_brain(&format!("`{what}` on {}", self.host));
        first
    }

    fn vm<'a>(&self, w: &'a mut World, host: &str, vm: &str) -> Result<&'a mut SimVm, ClientError> {
        w.hosts
            .get_mut(host)
            .and_then(|h| h.vms.get_mut(vm))
            .ok_or_else(|| not_found(&self.url, vm))
    }
}

fn guest_op(v: &mut SimVm, op: &Op, url: &str) -> Answer {
    let mut role_cmd = |cmd, token| -> Answer {
        if !v.configured {
            return Err(refused(url, "not configured".into()));
        }
        match v.guest.apply(cmd, token) {
            Ok((s, _)) => {
                v.guest = s;
                Ok(json!({"role": s.role}))
            }
            Err(e) => Err(refused(url, e.to_string())),
        }
    };
    match op {
        Op::Hello => Ok(json!({"hello": true})),
        Op::Status => {
            Ok(json!({"role": v.guest.role, "service": {"healthy": v.guest.role == Role::Act}}))
        }
        Op::Configure { .. } => {
            v.configured = true;
            Ok(json!({}))
        }
        Op::SetRole { role, token } => {
            let cmd = match role {
                TargetRole::Act => RoleCommand::BecomeActive,
                TargetRole::Sby => RoleCommand::BecomeStandby,
            };
            role_cmd(cmd, *token)
        }
        Op::SwitchoverPrepare { token } => role_cmd(RoleCommand::SwitchoverPrepare, *token),
        Op::SwitchoverCommit { token } => role_cmd(RoleCommand::SwitchoverCommit, *token),
        // A simulated guest keeps no service data: one empty page.
        Op::Backup { .. } => Ok(json!({"entries": {}})),
        _ => Ok(json!({})),
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    v: serde_json::Value,
    url: &str,
) -> Result<T, ClientError> {
    serde_json::from_value(v).map_err(|e| ClientError::Decode {
        url: url.into(),
        msg: e.to_string(),
    })
}

impl SimAgent {
    /// S2 replication needs real RAM; simulated hosts refuse it.
    fn not_simulated(&self) -> ClientError {
        ClientError::Api {
            url: self.url.clone(),
            status: 501,
            code: "not_simulated".into(),
            message: "S2 replication is not simulated".into(),
        }
    }
}

#[async_trait::async_trait]
impl AgentApi for SimAgent {
    fn base(&self) -> &str {
        &self.url
    }
    async fn raise_fence(&self) -> Result<u64, ClientError> {
        let a = self
            .order("raise_fence", |w, h| {
                Ok(json!(w.hosts.get(h).map(|x| x.fence)))
            })
            .await?;
        Ok(a.as_u64().unwrap_or(0))
    }
    async fn probe(&self, within: std::time::Duration) -> Result<(), ClientError> {
        let up = lock(&self.world)
            .hosts
            .get(&self.host)
            .is_some_and(|h| h.up);
        if up {
            return Ok(());
        }
        tokio::time::sleep(within).await;
        Err(ClientError::Unreachable {
            url: self.url.clone(),
            msg: "probe unanswered (simulated)".into(),
        })
    }
    async fn create(&self, spec: &VmSpec, _wait: WaitFor) -> Result<VmInfo, ClientError> {
        let spec = spec.clone();
        let a = self
            .order("create", |w, h| {
                let vm = w.hosts.get_mut(h).map(|x| {
                    x.vms
                        .entry(spec.name.clone())
                        .or_insert_with(|| SimVm::new(spec.clone()))
                });
                Ok(serde_json::to_value(vm.map(|v| info(v))).unwrap_or_default())
            })
            .await?;
        decode(a, &self.url)
    }
    async fn show(&self, vm: &str) -> Result<VmInfo, ClientError> {
        let a = self
            .order("show", |w, h| {
                let v = self.vm(w, h, vm)?;
                Ok(serde_json::to_value(info(v)).unwrap_or_default())
            })
            .await?;
        decode(a, &self.url)
    }
    async fn delete(&self, vm: &str) -> Result<(), ClientError> {
        self.order("delete", |w, h| {
            match w.hosts.get_mut(h).and_then(|x| x.vms.remove(vm)) {
                Some(_) => Ok(json!(null)),
                None => Err(not_found(&self.url, vm)),
            }
        })
        .await
        .map(|_| ())
    }
    async fn isolate(&self, vm: &str) -> Result<VmInfo, ClientError> {
        let a = self
            .order("isolate", |w, h| {
                let v = self.vm(w, h, vm)?;
                v.isolated = true;
                Ok(serde_json::to_value(info(v)).unwrap_or_default())
            })
            .await?;
        decode(a, &self.url)
    }
    async fn reset(&self, vm: &str) -> Result<VmInfo, ClientError> {
        let a = self
            .order("reset", |w, h| {
                let v = self.vm(w, h, vm)?;
                // The guest boots again with no role.
                v.guest = RoleState::default();
                v.configured = false;
                Ok(serde_json::to_value(info(v)).unwrap_or_default())
            })
            .await?;
        decode(a, &self.url)
    }
    async fn restart(&self, vm: &str) -> Result<VmInfo, ClientError> {
        // Simulated QEMU never dies: a restart is a reset.
        self.reset(vm).await
    }
    async fn guest(&self, vm: &str, op: &Op) -> Result<serde_json::Value, ClientError> {
        let name = format!("guest {op:?} of {vm}");
        self.order(&name, |w, h| {
            let v = self.vm(w, h, vm)?;
            if v.isolated {
                return Err(ClientError::Unreachable {
                    url: self.url.clone(),
                    msg: format!("{vm} is isolated and paused (simulated)"),
                });
            }
            guest_op(v, op, &self.url)
        })
        .await
    }
    async fn handover(
        &self,
        vm: &str,
        order: &HandoverOrder,
    ) -> Result<HandoverStatus, ClientError> {
        let busy = !matches!(order, HandoverOrder::Release);
        self.order("handover", |w, h| {
            self.vm(w, h, vm)?.element_busy = busy;
            Ok(json!(null))
        })
        .await?;
        let mode = if busy { "holding" } else { "idle" };
        decode(
            json!({"mode": mode, "vip": null, "to": null, "holding": 0, "held_total": 0,
                   "forwarded_total": 0, "released_to_vm_total": 0, "expired_holds": 0}),
            &self.url,
        )
    }
    async fn start_migration(
        &self,
        vm: &str,
        req: &MigrateRequest,
    ) -> Result<MigrationInfo, ClientError> {
        let to = host_of_url(&req.to);
        let started = MigrationInfo {
            to: req.to.clone(),
            phase: MigrationPhase::Active,
            progress: Default::default(),
            stats: None,
            error: None,
        };
        let a = self
            .order("start_migration", |w, h| {
                let v = self.vm(w, h, vm)?;
                if v.migration
                    .as_ref()
                    .is_some_and(|m| m.phase == MigrationPhase::Active)
                {
                    return Err(ClientError::Api {
                        url: self.url.clone(),
                        status: 409,
                        code: "conflict".into(),
                        message: "already migrating".into(),
                    });
                }
                v.migration = Some(started.clone());
                Ok(serde_json::to_value(&started).unwrap_or_default())
            })
            .await?;
        // The agent carries the migration on by itself.
        tokio::spawn(carry_migration(
            self.world.clone(),
            self.host.clone(),
            to,
            vm.to_string(),
        ));
        decode(a, &self.url)
    }
    async fn migration(&self, vm: &str) -> Result<MigrationInfo, ClientError> {
        let a = self
            .order("migration", |w, h| {
                // After a completed move the VM is gone from here: say so.
                match w.hosts.get(h).and_then(|x| x.vms.get(vm)) {
                    Some(v) => Ok(serde_json::to_value(&v.migration).unwrap_or_default()),
                    None => Ok(json!(null)),
                }
            })
            .await?;
        if a.is_null() {
            return Ok(MigrationInfo {
                to: String::new(),
                phase: MigrationPhase::Completed,
                progress: Default::default(),
                stats: None,
                error: None,
            });
        }
        decode(a, &self.url)
    }
    async fn create_replica(
        &self,
        _: &VmSpec,
    ) -> Result<duplex_core::agent_api::ReplicaInfo, ClientError> {
        Err(self.not_simulated())
    }
    async fn delete_replica(&self, _: &str) -> Result<(), ClientError> {
        Err(self.not_simulated())
    }
    async fn protect(
        &self,
        _: &str,
        _: &duplex_core::agent_api::ProtectRequest,
    ) -> Result<duplex_core::agent_api::ProtectionInfo, ClientError> {
        Err(self.not_simulated())
    }
    async fn activate(&self, _: &str) -> Result<VmInfo, ClientError> {
        Err(self.not_simulated())
    }
    async fn set_rules(
        &self,
        _: &duplex_core::classify::Ruleset,
    ) -> Result<duplex_core::classify::Ruleset, ClientError> {
        Err(self.not_simulated())
    }
    async fn handoff(&self, _: &str) -> Result<HandoffInfo, ClientError> {
        Err(self.not_simulated())
    }
    async fn site_resume(&self, _: &str) -> Result<SiteBufferStatus, ClientError> {
        Err(self.not_simulated())
    }
    async fn standby(&self, _: &str) -> Result<duplex_core::agent_api::ReplicaInfo, ClientError> {
        Err(self.not_simulated())
    }
    async fn replica_buffer(
        &self,
        _: &str,
        _: &[std::net::Ipv4Addr],
    ) -> Result<SiteBufferStatus, ClientError> {
        Err(self.not_simulated())
    }
    async fn site_side(&self, _: &str) -> Result<SiteSide, ClientError> {
        Err(self.not_simulated())
    }
}

async fn carry_migration(world: Shared, from: String, to: String, vm: String) {
    tokio::time::sleep(MIGRATION_TIME).await;
    let mut w = lock(&world);
    let ok = w.hosts.get(&from).is_some_and(|h| h.up)
        && w.hosts
            .get(&to)
            .is_some_and(|h| h.up && !h.vms.contains_key(&vm));
    let Some(mut v) = w.hosts.get_mut(&from).and_then(|h| h.vms.remove(&vm)) else {
        return;
    };
    if ok {
        v.migration = None;
        if let Some(h) = w.hosts.get_mut(&to) {
            h.vms.insert(vm, v);
        }
    } else {
        v.migration = Some(MigrationInfo {
            to: url_of(&to),
            phase: MigrationPhase::Failed,
            progress: Default::default(),
            stats: None,
            error: Some("destination unreachable (simulated)".into()),
        });
        if let Some(h) = w.hosts.get_mut(&from) {
            h.vms.insert(vm, v);
        }
    }
}

impl World {
    /// A guest restarts (kernel panic, reset): it comes back with no role.
    pub fn reset_guest(&mut self, vm: &str) {
        if let Some(v) = self.find_mut(vm) {
            v.guest = RoleState {
                role: Role::None,
                token: 0,
            };
            v.configured = false;
        }
    }
}
