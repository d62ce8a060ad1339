//! The controller's shared state: store, what agents reported, the lease's
//! fencing token, and views that combine desired and observed state.

use crate::config::ControllerConfig;
use crate::events::Events;
use crate::listing::Listing;
use crate::metrics::Metrics;
use crate::observed::Observed;
use crate::repo::{Repo, RepoError, HOSTS, PAIRS, VMS};
use duplex_agent_client::{AgentApi, Connector};
use duplex_core::agent_api::VmInfo;
use duplex_core::model::pair::{health, MemberView};
use duplex_core::model::vm::observe;
use duplex_core::model::{Host, Pair, PairHealth, Vm, VmStatus};
use serde::Serialize;
use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

pub struct Ctl {
    pub cfg: ControllerConfig,
    /// Makes the clients orders to agents go through (HTTP; simulated hosts
    /// in the simulation).
    pub connector: std::sync::Arc<dyn Connector>,
    pub repo: Repo,
    pub observed: Mutex<Observed>,
    /// The lease's token and the workflows running under it.
    pub office: std::sync::Arc<crate::office::Office>,
    pub events: Events,
    pub metrics: Metrics,
    /// The web console's sessions (in this process: a new leader asks the
    /// operator to open one again).
    pub sessions: Mutex<duplex_core::console_session::Sessions>,
    /// VMs an operation is working on: the reconciler leaves them alone.
    pub busy: Mutex<BTreeSet<String>>,
    /// Held from the checks of a new VM or pair to its records' writes:
    /// only the leader writes (fenced in the store), and it makes one at a
    /// time, so no name, address or MAC is ever taken twice.
    pub creating: tokio::sync::Mutex<()>,
    /// VMs live-migrated a moment ago, and when: until the hosts' reports
    /// are newer than the move, the reconciler leaves them alone (a report
    /// from the source, sent before the move, would have it "adopt" the VM
    /// back there).
    pub moved: Mutex<std::collections::HashMap<String, tokio::time::Instant>>,
    /// Operations running in this process.
    pub ops_running: AtomicU64,
    /// Unmanaged VMs already reported (once each).
    pub reported_unmanaged: Mutex<BTreeSet<(String, String)>>,
    /// Wakes the reconciler early (after a write through the API).
    pub kick: tokio::sync::Notify,
    /// Wakes the host watch at once (a report came, a probe or fence ended).
    pub urgent: tokio::sync::Notify,
    /// Runs when a host is found gone (`--fence-command`).
    pub fence_device: Option<std::sync::Arc<dyn crate::fence_device::FenceDevice>>,
    /// The network the hosts sit in (`--topology`); `None`: one rack.
    pub topology: Option<duplex_core::placement::TopologyConfig>,
    /// Traffic between VMs, smoothed from the agents' element counters.
    pub traffic: Mutex<Traffic>,
    /// What each host's VMs use, from the agents' reports.
    pub usage: Mutex<duplex_core::placement::load::UsageSampler>,
    /// Live migrations running now, per host.
    pub migrations: crate::in_flight::InFlight,
    /// The rebalancer's memory between passes.
    pub relief: crate::relief::Rebalancer,
    /// S3's external disk: per-VM restart records (and, to come, init
    /// info, LAF and REF data).
    pub extdisk: duplex_extdisk::ExternalDisk,
    /// The restart unit's memory between passes.
    pub restarts: Mutex<crate::restart_unit::Memory>,
    /// Some VM's record may name a data set its re-created guest waits for
    /// (`service_data`).
    pub restore_due: std::sync::atomic::AtomicBool,
}

/// The traffic sampler and when each VM was last sampled.
#[derive(Default)]
pub struct Traffic {
    pub sampler: duplex_core::placement::TrafficSampler,
    pub last: std::collections::HashMap<String, tokio::time::Instant>,
}

/// A VM with what its host says about it.
#[derive(Debug, Clone, Serialize)]
pub struct VmView {
    #[serde(flatten)]
    pub vm: Vm,
    pub status: VmStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<duplex_core::role::Role>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<VmInfo>,
    /// Its network element's counters, from its host's latest report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic: Option<duplex_core::agent_api::TrafficReport>,
    /// vCPUs it keeps busy, smoothed (once its host reported it twice).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_busy: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    pub vm: String,
    pub host: String,
    /// The role the pair wants it in.
    pub wanted: &'static str,
    /// The role its guest reports (`null`: no fresh report).
    pub role: Option<duplex_core::role::Role>,
    pub healthy: Option<bool>,
    /// Its guest stopped hearing the other member.
    pub peer_lost: bool,
    /// Its guest stopped hearing the service network's witness.
    pub cut_off: bool,
    /// Said by an ACT: its peer holds every write it made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_synced: Option<bool>,
    pub status: VmStatus,
}

#[derive(Debug, Clone, Serialize)]
pub struct PairView {
    #[serde(flatten)]
    pub pair: Pair,
    pub health: PairHealth,
    pub members_status: Vec<MemberStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostView {
    #[serde(flatten)]
    pub host: Host,
    /// Milliseconds since its last heartbeat to this controller.
    pub silent_ms: u64,
    pub vms: Vec<String>,
    /// The highest fencing token the agent has obeyed.
    pub agent_fence: Option<u64>,
    /// Shares of its vCPUs and memory its VMs use, as measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<duplex_core::placement::relief::HostLoad>,
}

impl Ctl {
    pub fn fence(&self) -> u64 {
        self.office.token()
    }
    pub fn is_leader(&self) -> bool {
        self.office.leading()
    }

    /// Client for a host's agent; every order carries our fencing token and
    /// is refused unsent once we no longer lead with it.
    pub fn agent(&self, url: &str) -> std::sync::Arc<dyn AgentApi> {
        self.office.agent(&*self.connector, url)
    }

    /// Client for the agent of the host `vm` is placed on.
    pub async fn vm_agent(&self, vm: &Vm) -> Result<std::sync::Arc<dyn AgentApi>, String> {
        let host = self
            .host(&vm.host)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("host {} has no record", vm.host))?;
        Ok(self.agent(&host.url))
    }

    pub async fn hosts(&self) -> Result<Vec<Host>, RepoError> {
        Ok(self
            .repo
            .list::<Host>(HOSTS)
            .await?
            .into_iter()
            .map(|r| r.value)
            .collect())
    }
    pub async fn vms(&self) -> Result<Vec<Vm>, RepoError> {
        Ok(self
            .repo
            .list::<Vm>(VMS)
            .await?
            .into_iter()
            .map(|r| r.value)
            .collect())
    }
    pub async fn pairs(&self) -> Result<Vec<Pair>, RepoError> {
        Ok(self
            .repo
            .list::<Pair>(PAIRS)
            .await?
            .into_iter()
            .map(|r| r.value)
            .collect())
    }
    pub async fn host(&self, name: &str) -> Result<Option<Host>, RepoError> {
        Ok(self
            .repo
            .get::<Host>(&format!("{HOSTS}{name}"))
            .await?
            .map(|r| r.value))
    }
    pub async fn vm(&self, name: &str) -> Result<Option<Vm>, RepoError> {
        Ok(self
            .repo
            .get::<Vm>(&format!("{VMS}{name}"))
            .await?
            .map(|r| r.value))
    }
    pub async fn pair(&self, name: &str) -> Result<Option<Pair>, RepoError> {
        Ok(self
            .repo
            .get::<Pair>(&format!("{PAIRS}{name}"))
            .await?
            .map(|r| r.value))
    }

    /// A VM as API answers show it (secret user files redacted).
    pub fn vm_view(&self, mut vm: Vm, listing: &Listing, full: bool) -> VmView {
        vm.spec = vm.spec.redacted();
        let obs = self.lock_observed();
        let alive = listing.host_alive(&vm.host) && obs.get(&vm.host).is_some();
        let info = obs.vm(&vm.host, &vm.spec.name).cloned();
        let status = observe(&vm, alive, info.as_ref());
        let role = obs.member_view(&vm.host, &vm.spec.name).role;
        let traffic = if full {
            obs.get(&vm.host).and_then(|s| {
                s.report
                    .traffic
                    .iter()
                    .find(|t| t.vm == vm.spec.name)
                    .cloned()
            })
        } else {
            None
        };
        let cpu_busy = full
            .then(|| self.lock_usage().vm_cpu(&vm.spec.name))
            .flatten();
        VmView {
            vm,
            status,
            role,
            info: if full { info } else { None },
            traffic,
            cpu_busy,
        }
    }

    pub fn pair_view(&self, pair: Pair, listing: &Listing) -> PairView {
        let mut views = [MemberView::default(); 2];
        let mut members_status = Vec::new();
        for (i, name) in pair.members.iter().enumerate() {
            let vm = listing.vm(name);
            let host = vm.map(|v| v.host.clone()).unwrap_or_default();
            let view = if listing.host_alive(&host) {
                self.lock_observed().member_view(&host, name)
            } else {
                MemberView::default()
            };
            views[i] = view;
            let status = vm
                .map(|v| self.vm_view(v.clone(), listing, false).status)
                .unwrap_or(VmStatus::Pending);
            members_status.push(MemberStatus {
                vm: name.clone(),
                host,
                wanted: if i == pair.active.i() { "act" } else { "sby" },
                role: view.role,
                healthy: view.healthy,
                peer_lost: view.peer_lost,
                cut_off: view.cut_off,
                peer_synced: view.peer_synced,
                status,
            });
        }
        PairView {
            health: health(&pair, views),
            // The guests' secret: never shown.
            pair: Pair {
                replica_key: None,
                ..pair
            },
            members_status,
        }
    }

    pub fn host_view(&self, host: Host) -> HostView {
        let obs = self.lock_observed();
        let measured = obs
            .get(&host.name)
            .is_some_and(|s| s.report.usage.is_some());
        let load = measured
            .then(|| self.host_loads(&[(host.name.clone(), host.capacity)]))
            .and_then(|l| l.into_iter().next());
        HostView {
            silent_ms: obs.silent_ms(&host.name),
            vms: obs.vm_names(&host.name).into_iter().collect(),
            agent_fence: obs.get(&host.name).map(|s| s.report.fence),
            load,
            host,
        }
    }

    /// Takes a host's usage report (if its agent measures).
    fn lock_usage(&self) -> std::sync::MutexGuard<'_, duplex_core::placement::load::UsageSampler> {
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn ingest_usage(&self, host: &str, usage: Option<&duplex_core::agent_api::HostUsage>) {
        if let Some(u) = usage {
            let now_ms = crate::events::now_ms();
            self.lock_usage().ingest(host, u, now_ms);
        }
    }

    /// Measured shares of each host's capacity in use.
    pub fn host_loads(
        &self,
        hosts: &[(String, duplex_core::agent_api::HostCapacity)],
    ) -> Vec<duplex_core::placement::relief::HostLoad> {
        self.lock_usage().host_loads(hosts)
    }

    /// What `hosts` and their VMs use, to weigh moves with.
    pub fn headroom(
        &self,
        hosts: &[(String, duplex_core::agent_api::HostCapacity)],
    ) -> duplex_core::placement::headroom::Headroom {
        self.lock_usage().headroom(hosts)
    }

    /// Feeds one host's element counters into the traffic matrix.
    pub fn ingest_traffic(&self, reports: &[duplex_core::agent_api::TrafficReport]) {
        let mut t = self.traffic.lock().unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        for r in reports {
            let interval = t
                .last
                .get(&r.vm)
                .map(|at| now.duration_since(*at).as_secs_f64())
                .unwrap_or(1.0);
            if interval <= 0.0 {
                continue;
            }
            if let Err(e) = t.sampler.ingest(r, interval) {
                tracing::debug!(vm = %r.vm, "traffic sample ignored: {e}");
                continue;
            }
            t.last.insert(r.vm.clone(), now);
        }
    }

    /// Bytes/s between VMs (peers known by their address).
    pub fn traffic_matrix(&self, vms: &[Vm]) -> duplex_core::placement::TrafficMatrix {
        let ip_to_vm = vms
            .iter()
            .map(|v| (v.spec.ip, v.spec.name.clone()))
            .collect();
        self.traffic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sampler
            .matrix(&ip_to_vm)
    }

    pub fn lock_observed(&self) -> std::sync::MutexGuard<'_, Observed> {
        self.observed.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Records that `vm` just moved (see [`Ctl::moved`]).
    pub fn note_moved(&self, vm: &str) {
        self.moved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(vm.to_string(), tokio::time::Instant::now());
    }

    /// What `pair`'s guests are configured with.
    pub fn service(&self, pair: &Pair) -> crate::pair_exec::Service {
        crate::pair_exec::Service::of(pair, self.cfg.service_witness)
    }

    pub fn lock_busy(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks `vms` busy (the reconciler leaves them alone) until the guard
    /// drops; refused if one already is.
    pub fn claim_vms(&self, vms: &[String]) -> Result<VmClaim<&Ctl>, String> {
        self.mark_busy(vms)?;
        Ok(VmClaim {
            ctl: self,
            vms: vms.to_vec(),
        })
    }

    /// [`Self::claim_vms`] for a claim an operation's task takes along.
    pub fn claim_vms_owned(
        self: &std::sync::Arc<Self>,
        vms: &[String],
    ) -> Result<VmClaim<std::sync::Arc<Ctl>>, String> {
        self.mark_busy(vms)?;
        Ok(VmClaim {
            ctl: self.clone(),
            vms: vms.to_vec(),
        })
    }

    fn mark_busy(&self, vms: &[String]) -> Result<(), String> {
        let mut busy = self.lock_busy();
        if let Some(v) = vms.iter().find(|v| busy.contains(*v)) {
            return Err(format!("{v} has another operation in progress"));
        }
        busy.extend(vms.iter().cloned());
        Ok(())
    }
}

/// VMs an operation works on; released (and the reconciler woken) on drop.
pub struct VmClaim<C: std::ops::Deref<Target = Ctl>> {
    ctl: C,
    vms: Vec<String>,
}

impl<C: std::ops::Deref<Target = Ctl>> Drop for VmClaim<C> {
    fn drop(&mut self) {
        let mut busy = self.ctl.lock_busy();
        for v in &self.vms {
            busy.remove(v);
        }
        drop(busy);
        self.ctl.kick.notify_one();
    }
}
