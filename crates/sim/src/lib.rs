//! Deterministic simulation of the real controller: its HTTP API (called
//! in-process), leader election, workflows, reconciler, recovery and
//! repair loops run unchanged over simulated hosts ([`hosts`]), an
//! in-memory store (`duplex_store::MemoryStore`) and tokio's paused clock,
//! on one thread. A seed fixes the whole schedule: which operator actions
//! come when, which orders are lost, delayed, duplicated or answered after
//! the caller gave up, when the store fails writes, when the leader is
//! killed or loses its lease, when an agent goes silent, when a guest
//! restarts.
//!
//! Checked throughout: never two guests of a pair ACT; no VM on two hosts;
//! no order leaves a controller that does not hold the lease. Checked at the end, after the
//! faults stop: every operation ended; the pair is ready with no journal,
//! one ACT where the record says and one SBY; nothing desired was lost
//! (the pair and its members exist unless deleted, and are gone if so).

pub mod api_call;
pub mod cluster;
pub mod faults;
pub mod flows;
pub mod hosts;

use api_call::call;
use axum::http::{Method, StatusCode};
use duplex_controller::repo::Repo;
use duplex_controller::{ctl::Ctl, ControllerConfig, StoreChoice};
use duplex_core::agent_api::HeartbeatAck;
use duplex_core::identity::{Identity, Scope};
use duplex_core::model::{OpState, Operation, Pair, PairPhase};
use duplex_core::role::Role;
use duplex_store::{MemoryInstance, MemoryStore};
use faults::{Faults, Rates};
use hosts::{lock, Shared, SimConnector, SimHost, ELECTION};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

const HOSTS: [&str; 3] = ["h1", "h2", "h3"];
const LEASE_TTL: Duration = Duration::from_secs(5);
const HEARTBEAT: Duration = Duration::from_secs(1);
/// The simulated agents' self-fence lease (the real default).
const SELF_FENCE_MS: u64 = 8000;
/// Operator actions and faults per schedule.
const ACTIONS: u64 = 6;
/// Longest the pair may take to come to rest once faults stop.
const SETTLE_LIMIT: Duration = Duration::from_secs(900);

/// What one schedule did and found.
#[derive(Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub violations: Vec<String>,
    /// What was done, in order (printed with a failure).
    pub log: Vec<String>,
    pub obeyed: u64,
    pub operations: usize,
    pub kills: u32,
    pub recoveries: usize,
    /// Simulated seconds the schedule ran.
    pub sim_secs: u64,
    /// The controller's events, in order.
    pub events: Vec<String>,
}

/// Which faults a schedule may inject besides lost, delayed, duplicated
/// and late orders, store failures, kills and lease losses (always on).
#[derive(Debug, Clone, Copy)]
pub struct Classes {
    /// An agent goes silent for a while (its VMs run on). Its agent does
    /// not fence itself and there is no fence device: nothing it ran may be
    /// started elsewhere until it reports again.
    pub silent_agents: bool,
    /// Hosts lose power (their VMs die), their management link (their
    /// VMs run on; agents fence themselves after their lease) or their
    /// service link (the agent answers; the guests there lose their peers
    /// and the witness) for up to 25 s; the controller fails over and
    /// heals.
    pub host_loss: bool,
}

/// Runs schedule `seed` (agents never silent) to its end.
pub fn run(seed: u64) -> Report {
    run_with(
        seed,
        Classes {
            silent_agents: false,
            host_loss: false,
        },
    )
}

/// Runs schedule `seed` to its end on a fresh single-threaded runtime
/// whose clock only moves when every task waits.
pub fn run_with(seed: u64, classes: Classes) -> Report {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build();
    match rt {
        Ok(rt) => rt.block_on(schedule(seed, classes)),
        Err(e) => Report {
            seed,
            violations: vec![format!("cannot build a runtime: {e}")],
            ..Report::default()
        },
    }
}

/// One controller process.
struct Proc {
    id: u64,
    ctl: Arc<Ctl>,
    store: Arc<MemoryInstance>,
    tasks: Vec<JoinHandle<()>>,
    router: axum::Router,
}

fn start_proc(id: u64, store: &MemoryStore, world: &Shared, faults: &Faults) -> Proc {
    let inst = Arc::new(store.instance(id));
    let cfg = ControllerConfig {
        id: format!("c{id}"),
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: std::path::PathBuf::from("/nonexistent"),
        // Never loaded: the simulation calls the API in process.
        tls: duplex_tls::Bundle::new("/nonexistent"),
        store: StoreChoice::Embedded,
        lease_ttl: LEASE_TTL,
        store_connect_timeout: Duration::from_secs(1),
        topology: None,
        fence_command: None,
        liveness: Default::default(),
        probe_timeout: duplex_controller::config::DEFAULT_PROBE_TIMEOUT,
        service_witness: Some(std::net::Ipv4Addr::new(10, 0, 0, 1)),
        external_disk: None,
    };
    let connector = Arc::new(SimConnector {
        world: world.clone(),
        store: store.clone(),
        faults: faults.clone(),
    });
    let repo = Repo::new(inst.clone());
    let ctl = duplex_controller::assemble(
        cfg,
        repo,
        connector,
        (None, duplex_extdisk::ExternalDisk::memory()),
    );
    let mut tasks = duplex_controller::start_loops(&ctl);
    let c = ctl.clone();
    tasks.push(tokio::spawn(async move {
        let _ = duplex_controller::hold_office(c).await;
    }));
    Proc {
        id,
        router: duplex_controller::api::router(ctl.clone()),
        ctl,
        store: inst,
        tasks,
    }
}

impl Proc {
    /// `kill -9`: every task stops where it waits, the store connection dies.
    fn kill(&self) {
        for t in &self.tasks {
            t.abort();
        }
        self.ctl.office.leave();
        self.store.kill();
    }
}

type Procs = Arc<Mutex<Vec<Proc>>>;

fn routers(procs: &Procs) -> Vec<axum::Router> {
    procs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|p| p.router.clone())
        .collect()
}

/// Agents report to every controller every second (followers answer 503);
/// an accepted report renews the agent's self-fence lease, and its answer
/// says whether the controller holds the host fenced.
async fn heartbeats(world: Shared, procs: Procs) {
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        for h in HOSTS {
            let sent = tokio::time::Instant::now();
            let Some(report) = lock(&world).report(h) else {
                continue;
            };
            let body = serde_json::to_value(&report).unwrap_or_default();
            for r in routers(&procs) {
                let Ok(agent) = Identity::agent(h) else {
                    continue;
                };
                let (status, answer) = call(
                    &r,
                    agent,
                    Method::POST,
                    &format!("/v1/agents/{h}/heartbeat"),
                    Some(body.clone()),
                )
                .await;
                let ack = serde_json::from_value::<HeartbeatAck>(answer);
                if let (StatusCode::OK, Ok(ack)) = (status, ack) {
                    lock(&world).accepted(h, ack.host_fenced, sent);
                }
            }
        }
    }
}

/// Agents check their self-fence lease as often as real ones do.
async fn leases(world: Shared) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        lock(&world).watch_leases(tokio::time::Instant::now());
    }
}

/// Sends an operator request to whichever controller leads, retrying while
/// none does (an operator's tool would); gives up after `tries`.
async fn operator(
    procs: &Procs,
    method: Method,
    path: &str,
    body: serde_json::Value,
    tries: u32,
) -> (StatusCode, serde_json::Value) {
    let mut last = (StatusCode::SERVICE_UNAVAILABLE, serde_json::Value::Null);
    for _ in 0..tries {
        for r in routers(procs) {
            let admin = Identity::Operator {
                name: "sim".into(),
                scope: Scope::Admin,
            };
            let got = call(&r, admin, method.clone(), path, Some(body.clone())).await;
            if got.0 != StatusCode::SERVICE_UNAVAILABLE {
                return got;
            }
            last = got;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    last
}

fn leader_proc(procs: &Procs, store: &MemoryStore) -> Option<u64> {
    let (id, _) = store.leader(ELECTION)?;
    procs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .any(|p| p.id == id)
        .then_some(id)
}

struct Sim {
    faults: Faults,
    store: MemoryStore,
    world: Shared,
    procs: Procs,
    next_id: u64,
    report: Report,
    deleted: bool,
    classes: Classes,
    started: tokio::time::Instant,
}

impl Sim {
    fn log(&mut self, line: String) {
        let t = self.started.elapsed().as_millis();
        self.report.log.push(format!("t={t} ms: {line}"));
    }

    fn kill_leader(&mut self) {
        let Some(id) = leader_proc(&self.procs, &self.store) else {
            return;
        };
        let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = procs.iter().position(|p| p.id == id) {
            let p = procs.remove(i);
            p.kill();
        }
        let fresh = start_proc(self.next_id, &self.store, &self.world, &self.faults);
        procs.push(fresh);
        drop(procs);
        self.next_id += 1;
        self.report.kills += 1;
        self.log(format!(
            "kill -9 controller c{id}; c{} started",
            self.next_id - 1
        ));
        // Its lease runs out a TTL later (nobody renews it).
        let store = self.store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(LEASE_TTL).await;
            if store.leader(ELECTION).is_some_and(|(l, _)| l == id) {
                store.expire(ELECTION);
            }
        });
    }

    async fn act(&mut self) {
        let members = ["pa", "pb"];
        match self.faults.below(10) {
            0 | 1 => {
                let (s, _) = operator(
                    &self.procs,
                    Method::POST,
                    "/v1/pairs/p/switchover",
                    serde_json::json!({}),
                    3,
                )
                .await;
                self.log(format!("operator: switchover -> {s}"));
            }
            2 | 3 => {
                let to = HOSTS[self.faults.below(3) as usize];
                let back = self.faults.chance(0.3);
                let body = serde_json::json!({"to": to, "switch_back": back});
                let (s, _) =
                    operator(&self.procs, Method::POST, "/v1/pairs/p/migrate", body, 3).await;
                self.log(format!(
                    "operator: pair migrate to {to} (switch back {back}) -> {s}"
                ));
            }
            4 => {
                let m = members[self.faults.below(2) as usize];
                lock(&self.world).reset_guest(m);
                self.log(format!("guest of {m} restarts"));
            }
            5 => {
                let n = 1 + self.faults.below(4) as u32;
                self.store.fail_writes(n);
                self.log(format!("store: next {n} write(s) fail"));
            }
            6 | 7 => self.kill_leader(),
            8 => {
                self.store.expire(ELECTION);
                self.log("store: the leader's lease is lost".into());
            }
            9 if self.classes.host_loss => self.lose_host(),
            _ if !self.classes.silent_agents => {
                let m = members[self.faults.below(2) as usize];
                lock(&self.world).reset_guest(m);
                self.log(format!("guest of {m} restarts"));
            }
            _ => {
                let h = HOSTS[self.faults.below(3) as usize];
                let secs = 1 + self.faults.below(12);
                set_up(&self.world, h, false);
                self.log(format!("agent of {h} silent for {secs} s"));
                let world = self.world.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                    set_up(&world, h, true);
                });
            }
        }
    }
}

impl Sim {
    /// A host loses power, its management link or its service link, for
    /// a while.
    fn lose_host(&mut self) {
        let h = HOSTS[self.faults.below(3) as usize];
        let secs = 1 + self.faults.below(25);
        let what = self.faults.below(3);
        let world = self.world.clone();
        match what {
            0 => lock(&world).power_off(h),
            1 => set_up(&world, h, false),
            _ => cut_service(&world, h, true),
        }
        let link = [
            "powered off",
            "cut off its management network",
            "cut off its service network",
        ];
        self.log(format!("{h} {} for {secs} s", link[what as usize]));
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            match what {
                0 => lock(&world).power_on(h, tokio::time::Instant::now()),
                1 => set_up(&world, h, true),
                _ => cut_service(&world, h, false),
            }
        });
    }
}

fn cut_service(world: &Shared, host: &str, cut: bool) {
    if let Some(h) = lock(world).hosts.get_mut(host) {
        h.service_cut = cut;
    }
}

fn set_up(world: &Shared, host: &str, up: bool) {
    if let Some(h) = lock(world).hosts.get_mut(host) {
        h.up = up;
    }
}

async fn schedule(seed: u64, classes: Classes) -> Report {
    let faults = Faults::new(seed, Rates::default());
    let store = MemoryStore::new();
    let world: Shared = Default::default();
    {
        let mut w = lock(&world);
        for h in HOSTS {
            w.hosts.insert(
                h.into(),
                SimHost {
                    up: true,
                    self_fence_ms: classes.host_loss.then_some(SELF_FENCE_MS),
                    last_accepted: Some(tokio::time::Instant::now()),
                    ..Default::default()
                },
            );
        }
        w.pairs = vec![["pa".into(), "pb".into()]];
    }
    let procs: Procs = Default::default();
    {
        let mut p = procs.lock().unwrap_or_else(|p| p.into_inner());
        p.push(start_proc(1, &store, &world, &faults));
        p.push(start_proc(2, &store, &world, &faults));
    }
    let beat = tokio::spawn(heartbeats(world.clone(), procs.clone()));
    let lease = tokio::spawn(leases(world.clone()));
    let mut sim = Sim {
        faults: faults.clone(),
        store: store.clone(),
        world: world.clone(),
        procs: procs.clone(),
        next_id: 3,
        report: Report {
            seed,
            ..Default::default()
        },
        deleted: false,
        classes,
        started: tokio::time::Instant::now(),
    };
    let start = sim.started;
    let create = serde_json::json!({
        "name": "p", "vip": "10.0.0.100",
        "members": [{"name": "pa", "ip": "10.0.0.1"}, {"name": "pb", "ip": "10.0.0.2"}],
        "hosts": ["h1", "h2"],
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (s, b) = operator(&procs, Method::POST, "/v1/pairs", create, 20).await;
    sim.log(format!("operator: pair create -> {s}"));
    if s != StatusCode::ACCEPTED {
        sim.report
            .violations
            .push(format!("pair create refused: {s} {b}"));
    }
    for _ in 0..ACTIONS {
        let wait = sim.faults.below(8000);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        sim.act().await;
    }
    if sim.faults.chance(0.2) {
        let (s, _) = operator(
            &procs,
            Method::DELETE,
            "/v1/pairs/p",
            serde_json::json!({}),
            10,
        )
        .await;
        sim.log(format!("operator: pair delete -> {s}"));
        sim.deleted = s == StatusCode::ACCEPTED;
    }
    faults.stop();
    sim.log("faults stop".into());
    for h in HOSTS {
        set_up(&world, h, true);
    }
    settle(&mut sim).await;
    sim.report.sim_secs = start.elapsed().as_secs();
    beat.abort();
    lease.abort();
    for p in procs.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        p.kill();
    }
    let events: Vec<duplex_core::model::Event> =
        store.dump("events/").iter().filter_map(decode).collect();
    sim.report.events = events
        .iter()
        .map(|e| format!("event {} {}: {}", e.kind, e.subject, e.message))
        .collect();
    if !lock(&world).violations.is_empty() || !sim.report.violations.is_empty() {
        let events = sim.report.events.clone();
        sim.report.log.extend(events);
    }
    let w = lock(&world);
    sim.report.obeyed = w.obeyed;
    let mut v = w.violations.clone();
    v.append(&mut sim.report.violations);
    sim.report.violations = v;
    sim.report
}

fn decode<T: serde::de::DeserializeOwned>(e: &duplex_store::Entry) -> Option<T> {
    serde_json::from_slice(&e.value).ok()
}

/// Why the system is not at rest yet (`None`: at rest and correct).
fn unrest(sim: &Sim) -> Option<String> {
    let ops: Vec<Operation> = sim.store.dump("ops/").iter().filter_map(decode).collect();
    if let Some(op) = ops.iter().find(|o| o.state == OpState::Running) {
        return Some(format!(
            "operation {} ({:?}) still running: {}",
            op.id, op.kind, op.progress
        ));
    }
    let pairs: Vec<Pair> = sim.store.dump("pairs/").iter().filter_map(decode).collect();
    let vms = sim.store.dump("vms/");
    let w = lock(&sim.world);
    if sim.deleted {
        if !pairs.is_empty() || !vms.is_empty() {
            return Some(format!(
                "deleted pair still has {} pair and {} VM record(s)",
                pairs.len(),
                vms.len()
            ));
        }
        if w.find("pa").is_some() || w.find("pb").is_some() {
            return Some("deleted pair's VMs still run".into());
        }
        return None;
    }
    let Some(p) = pairs.first() else {
        return Some("the pair's record is lost".into());
    };
    if vms.len() != 2 {
        return Some(format!("{} member record(s), not 2", vms.len()));
    }
    // A member's host silent through every set-up attempt fails the
    // create; the pair then says why, and that is where it rests.
    let explained = || {
        sim.store
            .dump("events/")
            .iter()
            .filter_map(decode::<duplex_core::model::Event>)
            .any(|e| e.kind == "pair.create_failed")
    };
    if sim.classes.silent_agents
        && p.phase == PairPhase::Failed
        && p.journal.is_none()
        && explained()
    {
        return None;
    }
    if p.phase != PairPhase::Ready || p.journal.is_some() {
        return Some(format!(
            "pair is {} with journal {:?}",
            p.phase.as_str(),
            p.journal
        ));
    }
    // Every host is back and none still holds a stale copy.
    let hosts: Vec<duplex_core::model::Host> =
        sim.store.dump("hosts/").iter().filter_map(decode).collect();
    if let Some(h) = hosts
        .iter()
        .find(|h| h.fence.is_some() || h.state == duplex_core::model::HostState::Failed)
    {
        return Some(format!(
            "host {} is {} with fence {:?}",
            h.name,
            h.state.as_str(),
            h.fence
        ));
    }
    for m in &p.members {
        if w.copies(m) != 1 {
            return Some(format!("{m} runs {} times", w.copies(m)));
        }
    }
    let role = |vm: &str| w.find(vm).map(|(_, v)| v.guest.role);
    let (act, sby) = (role(p.act()), role(p.sby()));
    if act != Some(Role::Act) || sby != Some(Role::Sby) {
        return Some(format!(
            "recorded ACT {} is {act:?}, SBY {} is {sby:?}",
            p.act(),
            p.sby()
        ));
    }
    None
}

async fn settle(sim: &mut Sim) {
    let deadline = tokio::time::Instant::now() + SETTLE_LIMIT;
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let why = unrest(sim);
        let Some(why) = why else { break };
        if tokio::time::Instant::now() > deadline {
            sim.report.violations.push(format!(
                "not at rest {} s after the faults stopped: {why}",
                SETTLE_LIMIT.as_secs()
            ));
            break;
        }
    }
    let ops: Vec<Operation> = sim.store.dump("ops/").iter().filter_map(decode).collect();
    sim.report.operations = ops.len();
    sim.report.recoveries = ops
        .iter()
        .filter(|o| o.kind == duplex_core::model::OpKind::PairRecover)
        .count();
}
