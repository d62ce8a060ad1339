//! Self-fencing, the watchdog approach of sbd/Pacemaker: an agent that has
//! not had a report accepted by its controller for its lease
//! (`--self-fence-ms`) assumes it is cut off, and that the controller will
//! promote the peers of its ACT VMs once the lease is over. Before that, it
//! cuts every VM off the network in its element and pauses the VMs whose
//! guest is ACT, so a host cut off from the controller never keeps serving
//! beside a promoted peer.
//!
//! The lease is counted from when the last accepted report was *sent*
//! (before the controller received it), so the agent's deadline is never
//! later than the one the controller reckons from receipt.
//!
//! Lifted when a report is accepted again and the controller does not hold
//! the host fenced (it was only a controller outage, nothing was promoted).
//! A host the controller holds fenced stays fenced: its VMs are stale, and
//! the controller destroys them.

use crate::host::Host;
use crate::vm::Vm;
use duplex_core::guest_proto::Heartbeat;
use duplex_core::role::Role;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the lease is checked.
pub const CHECK_EVERY: Duration = Duration::from_millis(100);
/// Default lease: longer than a controller's leader change (its lease TTL
/// plus an election), so a leader change alone fences nobody.
pub const DEFAULT_LEASE_MS: u64 = 8000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Stay,
    Fence,
    Lift,
}

/// What the lease watch knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// When the last accepted report was sent (or the watch started).
    pub renewed: Instant,
    /// The controller's answer to it: it holds this host fenced.
    pub held_fenced: bool,
    pub fenced: bool,
}

/// The whole rule.
pub fn judge(l: &Lease, period: Duration, now: Instant) -> Action {
    let expired = now.saturating_duration_since(l.renewed) >= period;
    match (l.fenced, expired || l.held_fenced) {
        (false, true) => Action::Fence,
        (true, false) => Action::Lift,
        _ => Action::Stay,
    }
}

/// The lease watch of one agent.
#[derive(Debug)]
pub struct SelfFence {
    period: Option<Duration>,
    lease: Mutex<Lease>,
    /// VMs this fence paused, to resume when it is lifted.
    paused: Mutex<BTreeSet<String>>,
}

impl SelfFence {
    /// `period` `None`: never fences itself.
    pub fn new(period: Option<Duration>) -> SelfFence {
        SelfFence {
            period,
            lease: Mutex::new(Lease {
                renewed: Instant::now(),
                held_fenced: false,
                fenced: false,
            }),
            paused: Mutex::default(),
        }
    }

    pub fn period_ms(&self) -> Option<u64> {
        self.period.map(|p| p.as_millis() as u64)
    }

    fn lease(&self) -> std::sync::MutexGuard<'_, Lease> {
        self.lease.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A report sent at `sent` was accepted; the controller holds the
    /// host fenced or not.
    pub fn renewed(&self, sent: Instant, held_fenced: bool) {
        let mut l = self.lease();
        l.renewed = l.renewed.max(sent);
        l.held_fenced = held_fenced;
    }

    pub fn is_fenced(&self) -> bool {
        self.lease().fenced
    }
}

fn guest_is_act(vm: &Vm) -> bool {
    vm.status()
        .heartbeat
        .and_then(|(_, v)| serde_json::from_value::<Heartbeat>(v).ok())
        .is_some_and(|b| b.role == Role::Act)
}

async fn fence(host: &Host, sf: &SelfFence) {
    let vms = host.all();
    for vm in &vms {
        if let Some(rt) = vm.rt.lock().await.as_ref() {
            rt.element.isolate(true);
        }
    }
    let mut paused = Vec::new();
    for vm in vms.iter().filter(|v| guest_is_act(v)) {
        match host.set_paused(&vm.spec.name, true).await {
            Ok(_) => paused.push(vm.spec.name.clone()),
            Err(e) => tracing::error!(vm = %vm.spec.name, "self-fence: cannot pause: {e}"),
        }
    }
    tracing::error!(
        isolated = vms.len(),
        paused = ?paused,
        "self-fenced: no report accepted by the controller for the lease; every VM is cut off the network and the ACT VMs are paused"
    );
    sf.paused
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(paused);
}

async fn lift(host: &Host, sf: &SelfFence) {
    let paused = std::mem::take(&mut *sf.paused.lock().unwrap_or_else(|p| p.into_inner()));
    for name in &paused {
        if let Err(e) = host.set_paused(name, false).await {
            tracing::warn!(vm = %name, "lifting the self-fence: cannot resume: {e}");
        }
    }
    // A VM the controller isolated stays so until it is deleted.
    for vm in host.all().iter().filter(|v| !v.status().isolated) {
        if let Some(rt) = vm.rt.lock().await.as_ref() {
            rt.element.isolate(false);
        }
    }
    tracing::warn!(resumed = ?paused, "self-fence lifted: the controller accepts reports again and does not hold this host fenced");
}

/// Watches the lease until the agent stops.
pub async fn watch(host: Arc<Host>) {
    let sf = host.self_fence.clone();
    let Some(period) = sf.period else { return };
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let l = *sf.lease();
        match judge(&l, period, Instant::now()) {
            Action::Stay => {}
            Action::Fence => {
                fence(&host, &sf).await;
                sf.lease().fenced = true;
            }
            Action::Lift => {
                lift(&host, &sf).await;
                sf.lease().fenced = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lease() {
        let t0 = Instant::now();
        let p = Duration::from_millis(8000);
        for fenced in [false, true] {
            for held_fenced in [false, true] {
                for after in [0u64, 7999, 8000, 20_000] {
                    let l = Lease {
                        renewed: t0,
                        held_fenced,
                        fenced,
                    };
                    let got = judge(&l, p, t0 + Duration::from_millis(after));
                    let should = after >= 8000 || held_fenced;
                    let want = match (fenced, should) {
                        (false, true) => Action::Fence,
                        (true, false) => Action::Lift,
                        _ => Action::Stay,
                    };
                    assert_eq!(got, want, "{l:?} after {after} ms");
                }
            }
        }
    }

    #[test]
    fn a_renewal_never_moves_the_lease_back() {
        let sf = SelfFence::new(Some(Duration::from_secs(8)));
        let later = Instant::now() + Duration::from_secs(1);
        sf.renewed(later, false);
        sf.renewed(later - Duration::from_millis(500), true);
        let l = *sf.lease();
        assert_eq!((l.renewed, l.held_fenced), (later, true));
    }
}
