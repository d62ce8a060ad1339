//! A simulated cluster at size, on the real clock: the real controller
//! (API, loops, leadership) over an in-memory store and simulated hosts
//! ([`crate::hosts`]) that report every second, with traffic between their
//! VMs in the reports. Its VMs start placed and running and its pairs made
//! (the records written as the pair workflow leaves them), so a cluster of
//! thousands is up in seconds. For measuring what the controller serves at
//! that size (`duplex-bench console`); no faults.

use crate::api_call::call;
use crate::faults::{Faults, Rates};
use crate::flows::Flows;
use crate::hosts::{lock, url_of, Shared, SimConnector, SimHost, SimVm, ELECTION};
use axum::http::{Method, StatusCode};
use duplex_controller::ctl::Ctl;
use duplex_controller::repo::{Repo, PAIRS, VMS};
use duplex_controller::{ControllerConfig, StoreChoice};
use duplex_core::agent_api::{PeerCounters, TrafficReport};
use duplex_core::identity::{Identity, Scope};
use duplex_core::model::{Desired, Pair, PairPhase, Vm, SCHEMA_VERSION};
use duplex_core::pair_lifecycle::Slot;
use duplex_core::placement::rng::SplitMix64;
use duplex_core::placement::topology::{HostAttach, LinkConfig};
use duplex_core::placement::TopologyConfig;
use duplex_core::role::{Role, RoleState};
use duplex_core::vm_spec::VmSpec;
use duplex_store::{Expect, MemoryStore};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Every host reports this often (the agents' default).
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// VMs each VM sends to besides its pair's other member.
const FLOWS_PER_VM: usize = 2;
/// A pair's members exchange this (heartbeats and sync), each way.
const PAIR_RATE: f64 = 20_000.0;
/// Other flows are between these rates (log-uniform).
const FLOW_RATES: (f64, f64) = (1_000.0, 1_000_000.0);
/// Longest wait for the controller to lead.
const LEAD_WAIT: Duration = Duration::from_secs(30);
/// Every VM's vCPUs (a host has 16).
pub const VM_VCPUS: u32 = 4;
/// Rack uplinks.
const UPLINK_GBPS: f64 = 100.0;

/// The cluster's shape.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub hosts: usize,
    pub vms: usize,
    pub racks: usize,
    pub sites: usize,
}

impl Size {
    /// Four hosts in two racks: p00000 = vm00000 (ACT) on h0000 and
    /// vm00001 (SBY) on h0002; p00001 = vm00002 on h0001 and vm00003 on
    /// h0003; lone vm00004 on h0000 and vm00005 on h0001. For tests of the
    /// controller's rules through its API.
    pub const FOUR_HOSTS: Size = Size {
        hosts: 4,
        vms: 6,
        racks: 2,
        sites: 1,
    };

    fn check(&self) -> Result<(), String> {
        if self.hosts == 0 || self.racks == 0 || self.sites == 0 {
            return Err("hosts, racks and sites must be at least 1".into());
        }
        if self.racks > self.hosts || self.sites > self.racks {
            return Err(format!(
                "{} sites, {} racks and {} hosts: each site needs a rack, each rack a host",
                self.sites, self.racks, self.hosts
            ));
        }
        if self.vms >= 1 << 20 {
            return Err(format!("{} VMs: at most {}", self.vms, (1 << 20) - 1));
        }
        Ok(())
    }
}

pub fn host_name(i: usize) -> String {
    format!("h{i:04}")
}

pub fn vm_name(i: usize) -> String {
    format!("vm{i:05}")
}

pub fn pair_name(i: usize) -> String {
    format!("p{i:05}")
}

/// VM `i`'s address: 10.16.0.0/12 and on.
fn vm_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0A10_0000u32 + i as u32)
}

/// The running cluster; its tasks stop when it is dropped.
pub struct Cluster {
    pub ctl: Arc<Ctl>,
    pub router: axum::Router,
    pub world: Shared,
    pub size: Size,
    /// Pairs made (two VMs each); the rest are lone VMs.
    pub pairs: usize,
    layout: Arc<Layout>,
    started: Instant,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Where everything is: hosts in racks in sites, VMs on hosts, the flows.
struct Layout {
    size: Size,
    topology: TopologyConfig,
    /// Site of each host.
    site: Vec<String>,
    /// Host of each VM.
    vm_host: Vec<usize>,
    pairs: usize,
    /// Traffic between the VMs (seconds since the start on its clock).
    flows: Mutex<Flows>,
}

impl Layout {
    fn new(size: Size, seed: u64) -> Layout {
        let rack_of = |h: usize| h * size.racks / size.hosts;
        let site_of_rack = |r: usize| format!("site-{}", r * size.sites / size.racks);
        let racks: Vec<String> = (0..size.racks).map(|r| format!("r{r:03}")).collect();
        let mut switches = vec!["spine".to_string()];
        switches.extend(racks.iter().cloned());
        let topology = TopologyConfig {
            switches,
            hosts: (0..size.hosts)
                .map(|h| HostAttach {
                    name: host_name(h),
                    attach: racks[rack_of(h)].clone(),
                })
                .collect(),
            links: racks
                .iter()
                .map(|r| LinkConfig {
                    a: r.clone(),
                    b: "spine".into(),
                    capacity_gbps: UPLINK_GBPS,
                    utilization: 0.1,
                })
                .collect(),
        };
        // Two in three VMs are pair members; a pair's second member sits
        // one rack's worth of hosts on (another rack when there is one).
        let pairs = size.vms / 3;
        let per_rack = (size.hosts / size.racks).max(1);
        let mut vm_host = Vec::with_capacity(size.vms);
        for p in 0..pairs {
            let a = p % size.hosts;
            vm_host.push(a);
            vm_host.push((a + per_rack) % size.hosts);
        }
        for i in 2 * pairs..size.vms {
            vm_host.push(i % size.hosts);
        }
        let mut rng = SplitMix64::new(seed);
        let mut flows = Flows::default();
        let mut flow = |from: usize, to: usize, rate: f64| flows.set(from, to, rate, 0.0);
        for p in 0..pairs {
            flow(2 * p, 2 * p + 1, PAIR_RATE);
            flow(2 * p + 1, 2 * p, PAIR_RATE);
        }
        let (lo, hi) = (FLOW_RATES.0.ln(), FLOW_RATES.1.ln());
        for from in 0..size.vms {
            for _ in 0..FLOWS_PER_VM {
                let to = rng.index(size.vms);
                if to != from {
                    flow(from, to, rng.range_f64(lo, hi).exp());
                }
            }
        }
        Layout {
            site: (0..size.hosts).map(|h| site_of_rack(rack_of(h))).collect(),
            size,
            topology,
            vm_host,
            pairs,
            flows: Mutex::new(flows),
        }
    }

    fn vm(&self, i: usize) -> Vm {
        let mut spec = VmSpec::new(&vm_name(i), vm_ip(i));
        spec.prefix_len = 12;
        spec.vcpus = VM_VCPUS;
        Vm {
            v: SCHEMA_VERSION,
            spec,
            host: host_name(self.vm_host[i]),
            desired: Desired::Running,
            pair: (i < 2 * self.pairs).then(|| pair_name(i / 2)),
            created_ms: 0,
            restore: None,
            backup: None,
            replica_site: None,
            site_policy: None,
        }
    }

    fn pair(&self, p: usize) -> Pair {
        Pair {
            v: SCHEMA_VERSION,
            name: pair_name(p),
            members: [vm_name(2 * p), vm_name(2 * p + 1)],
            vip: Ipv4Addr::from(0x0A20_0000u32 + p as u32),
            prefix_len: 12,
            active: Slot::A,
            token: 1,
            phase: PairPhase::Ready,
            created_ms: 0,
            journal: None,
            replica_key: None,
        }
    }

    fn flows(&self) -> std::sync::MutexGuard<'_, Flows> {
        self.flows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Each VM's element counters after `secs` of its flows.
    fn traffic(&self, vms: &[usize], secs: f64) -> Vec<TrafficReport> {
        let flows = self.flows();
        vms.iter()
            .map(|&vm| {
                let peers: Vec<PeerCounters> = flows
                    .counters(vm, secs)
                    .into_iter()
                    .map(|(p, (tx, rx))| PeerCounters {
                        mac: VmSpec::new(&vm_name(p), vm_ip(p)).mac(),
                        ip: Some(vm_ip(p)),
                        tx_packets: tx / 1000,
                        tx_bytes: tx,
                        rx_packets: rx / 1000,
                        rx_bytes: rx,
                    })
                    .collect();
                TrafficReport {
                    vm: vm_name(vm),
                    tx_packets: peers.iter().map(|p| p.tx_packets).sum(),
                    tx_bytes: peers.iter().map(|p| p.tx_bytes).sum(),
                    rx_packets: peers.iter().map(|p| p.rx_packets).sum(),
                    rx_bytes: peers.iter().map(|p| p.rx_bytes).sum(),
                    peers,
                    drops: Vec::new(),
                    held: Vec::new(),
                }
            })
            .collect()
    }
}

impl Cluster {
    /// Writes the records, starts the controller and the hosts' reports;
    /// returns once the controller leads and every host has reported.
    pub async fn start(size: Size, seed: u64) -> Result<Cluster, String> {
        size.check()?;
        let layout = Arc::new(Layout::new(size, seed));
        let store = MemoryStore::new();
        let repo = Repo::new(Arc::new(store.instance(1)));
        write_records(&repo, &layout).await?;
        let world = Shared::default();
        fill_world(&world, &layout);
        let faults = Faults::new(seed, Rates::default());
        faults.stop();
        let ctl = duplex_controller::assemble(
            config(),
            repo,
            Arc::new(SimConnector {
                world: world.clone(),
                store: store.clone(),
                faults,
            }),
            (
                Some(layout.topology.clone()),
                duplex_extdisk::ExternalDisk::memory(),
            ),
        );
        let router = duplex_controller::api::router(ctl.clone());
        let c = ctl.clone();
        let mut tasks = vec![tokio::spawn(async move {
            let _ = duplex_controller::hold_office(c).await;
        })];
        let t0 = Instant::now();
        while !ctl.is_leader() || store.leader(ELECTION).is_none() {
            if t0.elapsed() > LEAD_WAIT {
                return Err("the simulated controller did not take office".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let started = Instant::now();
        report_all(&world, &router, &layout, started).await?;
        tasks.extend(duplex_controller::start_loops(&ctl));
        tasks.push(tokio::spawn(reports(
            world.clone(),
            router.clone(),
            layout.clone(),
            started,
        )));
        Ok(Cluster {
            ctl,
            router,
            world,
            size,
            pairs: layout.pairs,
            layout,
            started,
            tasks,
        })
    }

    /// `vm` keeps `vcpus` busy from now on, wherever it runs; false when
    /// no host holds it.
    pub fn set_cpu(&self, vm: &str, vcpus: f64) -> bool {
        let mut w = lock(&self.world);
        let v = w.hosts.values_mut().find_map(|h| h.vms.get_mut(vm));
        v.map(|v| v.cpu_busy = vcpus).is_some()
    }

    /// VM `from` (by number) sends `rate` bytes/s to VM `to` from now on.
    pub fn set_flow(&self, from: usize, to: usize, rate: f64) {
        let t = self.started.elapsed().as_secs_f64();
        self.layout.flows().set(from, to, rate, t);
    }

    /// The rate VM `from` sends to VM `to` now (by number).
    pub fn flow_rate(&self, from: usize, to: usize) -> f64 {
        self.layout.flows().rate(from, to)
    }

    /// Every flow between VMs (by number) with its rate now.
    pub fn flow_rates(&self) -> Vec<(usize, usize, f64)> {
        self.layout.flows().rates()
    }

    /// The network the hosts sit in.
    pub fn topology(&self) -> &TopologyConfig {
        &self.layout.topology
    }

    /// The host `vm` runs on now.
    pub fn host_of(&self, vm: &str) -> Option<String> {
        lock(&self.world).find(vm).map(|(h, _)| h.to_string())
    }

    /// An operator's request, in process (as mutual TLS would tell it).
    pub async fn operator(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, serde_json::Value) {
        let admin = Identity::Operator {
            name: "bench".into(),
            scope: Scope::Admin,
        };
        call(&self.router, admin, method, path, body).await
    }
}

fn config() -> ControllerConfig {
    ControllerConfig {
        id: "c1".into(),
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: std::path::PathBuf::from("/nonexistent"),
        // Never loaded: whoever serves the router brings its own.
        tls: duplex_tls::Bundle::new("/nonexistent"),
        store: StoreChoice::Embedded,
        lease_ttl: Duration::from_secs(5),
        store_connect_timeout: Duration::from_secs(1),
        topology: None,
        fence_command: None,
        liveness: Default::default(),
        probe_timeout: duplex_controller::config::DEFAULT_PROBE_TIMEOUT,
        service_witness: Some(Ipv4Addr::new(10, 0, 0, 1)),
        external_disk: None,
    }
}

async fn write_records(repo: &Repo, layout: &Layout) -> Result<(), String> {
    let fail = |e: duplex_controller::repo::RepoError| format!("writing the records: {e}");
    for i in 0..layout.size.vms {
        let vm = layout.vm(i);
        let key = format!("{VMS}{}", vm.spec.name);
        repo.put(&key, &vm, Expect::Absent).await.map_err(fail)?;
    }
    for p in 0..layout.pairs {
        let pair = layout.pair(p);
        let key = format!("{PAIRS}{}", pair.name);
        repo.put(&key, &pair, Expect::Absent).await.map_err(fail)?;
    }
    Ok(())
}

/// The hosts up, each VM running where its record says, pair members
/// in the roles their pair gave them.
fn fill_world(world: &Shared, layout: &Layout) {
    let mut w = lock(world);
    for h in 0..layout.size.hosts {
        w.hosts.insert(
            host_name(h),
            SimHost {
                up: true,
                ..SimHost::default()
            },
        );
    }
    for i in 0..layout.size.vms {
        let vm = layout.vm(i);
        let role = match (vm.pair.is_some(), i % 2) {
            (false, _) => Role::None,
            (true, 0) => Role::Act,
            (true, _) => Role::Sby,
        };
        let sim = SimVm {
            guest: RoleState { role, token: 1 },
            configured: role != Role::None,
            ..SimVm::new(vm.spec)
        };
        if let Some(h) = w.hosts.get_mut(&vm.host) {
            h.vms.insert(sim.spec.name.clone(), sim);
        }
    }
}

/// Every host reports once per [`REPORT_EVERY`], spread over it.
async fn reports(world: Shared, router: axum::Router, layout: Arc<Layout>, started: Instant) {
    let gap = REPORT_EVERY / layout.size.hosts.max(1) as u32;
    loop {
        // Deadlines from the round's start: a timer's rounding up (1 ms
        // ticks) does not add up over a thousand hosts.
        let round = tokio::time::Instant::now();
        for h in 0..layout.size.hosts {
            if let Err(e) = report(&world, &router, &layout, h, started).await {
                eprintln!("simulated report: {e}");
            }
            tokio::time::sleep_until(round + gap * (h as u32 + 1)).await;
        }
    }
}

async fn report_all(
    world: &Shared,
    router: &axum::Router,
    layout: &Layout,
    started: Instant,
) -> Result<(), String> {
    for h in 0..layout.size.hosts {
        report(world, router, layout, h, started).await?;
    }
    Ok(())
}

async fn report(
    world: &Shared,
    router: &axum::Router,
    layout: &Layout,
    h: usize,
    started: Instant,
) -> Result<(), String> {
    let name = host_name(h);
    let Some(mut r) = lock(world).report(&name) else {
        return Ok(());
    };
    r.site = Some(layout.site[h].clone());
    let here: Vec<usize> = r
        .vms
        .iter()
        .filter_map(|v| v.spec.name.strip_prefix("vm")?.parse().ok())
        .collect();
    r.traffic = layout.traffic(&here, started.elapsed().as_secs_f64());
    let agent = Identity::agent(&name).map_err(|e| e.to_string())?;
    let body = serde_json::to_value(&r).map_err(|e| e.to_string())?;
    let path = format!("/v1/agents/{name}/heartbeat");
    let (status, answer) = call(router, agent, Method::POST, &path, Some(body)).await;
    if status != StatusCode::OK {
        return Err(format!("{} at {}: {status} {answer}", name, url_of(&name)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layout_places_pairs_apart_and_every_vm_somewhere() {
        let size = Size {
            hosts: 10,
            vms: 31,
            racks: 5,
            sites: 1,
        };
        let l = Layout::new(size, 7);
        assert_eq!(l.pairs, 10);
        assert_eq!(l.vm_host.len(), 31);
        for p in 0..l.pairs {
            assert_ne!(l.vm_host[2 * p], l.vm_host[2 * p + 1], "pair {p}");
        }
        assert_eq!(l.vm(0).pair.as_deref(), Some("p00000"));
        assert_eq!(l.vm(30).pair, None);
        // A pair's members see each other's bytes both ways.
        let t = l.traffic(&[0], 10.0);
        let to_b = t[0].peers.iter().find(|p| p.ip == Some(vm_ip(1)));
        assert!(to_b.is_some_and(|p| p.tx_bytes >= 200_000 && p.rx_bytes >= 200_000));
        assert!(Size { racks: 11, ..size }.check().is_err());
    }
}
