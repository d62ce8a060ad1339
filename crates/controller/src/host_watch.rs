//! The host watch: several times a second (and at once when a report
//! comes), judges every host by `duplex_core::model::liveness`, writes
//! what changed on its record, probes an agent whose VM a peer stopped
//! hearing, runs the fence device on a host found gone, and then lets the
//! pair failover pass act on fenced hosts (`pair_failover`).

use crate::ctl::Ctl;
use crate::events::now_ms;
use crate::repo::{RepoError, HOSTS};
use duplex_core::model::liveness::{self, Change, Fate, Probe, Proof, Sight};
use duplex_core::model::{Host, Pair, Severity, Vm};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The watch's period when nothing wakes it.
const PERIOD: Duration = Duration::from_millis(250);
/// After a failed fence, the next attempt.
const FENCE_RETRY: Duration = Duration::from_secs(5);

/// A probe's answer, and when it came.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Probed {
    at: Instant,
    answered: bool,
}

/// What the watch remembers between passes (forgotten out of office).
#[derive(Default)]
struct Watch {
    /// Finished probes by host, and hosts being probed (`None`).
    probes: Arc<Mutex<HashMap<String, Option<Probed>>>>,
    /// Hosts whose fence device runs, or when it may run again.
    fencing: Arc<Mutex<HashMap<String, Option<Instant>>>>,
    failover: crate::pair_failover::Memory,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub async fn run(ctl: Arc<Ctl>) {
    let mut w = Watch::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PERIOD) => {}
            _ = ctl.urgent.notified() => {}
        }
        if !ctl.is_leader() {
            w = Watch::default();
            continue;
        }
        if let Err(e) = pass(&ctl, &mut w).await {
            tracing::warn!("host watch pass failed: {e}");
        }
    }
}

async fn pass(ctl: &Arc<Ctl>, w: &mut Watch) -> Result<(), RepoError> {
    let (hosts, vms, pairs) = (ctl.hosts().await?, ctl.vms().await?, ctl.pairs().await?);
    let lost = hosts_with_lost_vms(ctl, &vms, &pairs);
    let mut fenced = BTreeSet::new();
    for h in &hosts {
        let fate = judge(ctl, w, h, lost.contains(&h.name));
        match fate {
            Fate::Probe => start_probe(ctl, w, h),
            Fate::Gone => start_fence(ctl, w, h),
            Fate::Fenced(_) => {
                fenced.insert(h.name.clone());
            }
            _ => {}
        }
        record(ctl, h, fate).await?;
    }
    crate::pair_failover::pass(ctl, &mut w.failover, (&hosts, &vms, &pairs), &fenced).await;
    Ok(())
}

/// Hosts running a pair member whose peer's guest says it stopped hearing it.
fn hosts_with_lost_vms(ctl: &Ctl, vms: &[Vm], pairs: &[Pair]) -> BTreeSet<String> {
    let by_name: std::collections::HashMap<&str, &String> = vms
        .iter()
        .map(|v| (v.spec.name.as_str(), &v.host))
        .collect();
    let host_of = |name: &str| by_name.get(name).copied();
    let obs = ctl.lock_observed();
    let mut out = BTreeSet::new();
    for p in pairs {
        for (me, peer) in [(0, 1), (1, 0)] {
            let (Some(my_host), Some(peer_host)) =
                (host_of(&p.members[me]), host_of(&p.members[peer]))
            else {
                continue;
            };
            if obs.peer_lost(peer_host, &p.members[peer]) {
                out.insert(my_host.clone());
            }
        }
    }
    out
}

fn judge(ctl: &Ctl, w: &Watch, h: &Host, peer_lost: bool) -> Fate {
    let obs = ctl.lock_observed();
    let reported = obs.reported_at(&h.name);
    let probe = match lock(&w.probes).get(&h.name) {
        // A probe answered no earlier than the last report speaks for
        // the host (at the same instant too: a simulated clock stands
        // still, and a probe taken as stale would be repeated forever).
        Some(Some(p)) if reported.is_none_or(|r| p.at >= r) => match p.answered {
            true => Probe::Answered,
            false => Probe::Unreachable,
        },
        _ => Probe::NotTried,
    };
    let sight = Sight {
        silent_ms: obs.silent_ms(&h.name),
        reported_ms: obs.reported_ms(&h.name),
        probe,
        peer_lost,
        self_fence_ms: obs.self_fence_ms(&h.name),
        fence: h.fence,
        holds_vms: !obs.vm_names(&h.name).is_empty(),
    };
    liveness::fate(&sight, &ctl.cfg.liveness)
}

fn start_probe(ctl: &Arc<Ctl>, w: &Watch, h: &Host) {
    if lock(&w.probes).insert(h.name.clone(), None) == Some(None) {
        return; // already under way
    }
    let within = ctl.cfg.probe_timeout;
    let (agent, probes, c, name) = (
        ctl.agent(&h.url),
        w.probes.clone(),
        ctl.clone(),
        h.name.clone(),
    );
    tokio::spawn(async move {
        let answered = agent.probe(within).await.is_ok();
        tracing::info!(host = %name, answered, "probed the agent after a peer lost its VM");
        let done = Probed {
            at: Instant::now(),
            answered,
        };
        lock(&probes).insert(name, Some(done));
        c.urgent.notify_one();
    });
}

fn start_fence(ctl: &Arc<Ctl>, w: &Watch, h: &Host) {
    let Some(device) = ctl.fence_device.clone() else {
        return;
    };
    {
        let mut f = lock(&w.fencing);
        match f.get(&h.name) {
            Some(None) => return,
            Some(Some(next)) if Instant::now() < *next => return,
            _ => {}
        }
        f.insert(h.name.clone(), None);
    }
    let (c, fencing, host) = (ctl.clone(), w.fencing.clone(), h.clone());
    tokio::spawn(async move {
        let started = Instant::now();
        let res = device.fence(&host).await;
        let ms = started.elapsed().as_millis();
        let subject = format!("host/{}", host.name);
        match res {
            Ok(how) => {
                lock(&fencing).remove(&host.name);
                let written = record(&c, &host, Fate::Fenced(Proof::Device)).await;
                if let Err(e) = written {
                    tracing::warn!(host = %host.name, "fenced, but cannot record it: {e}");
                }
                tracing::warn!(host = %host.name, ms, "fence device: {how}");
            }
            Err(e) => {
                lock(&fencing).insert(host.name.clone(), Some(Instant::now() + FENCE_RETRY));
                let msg = format!(
                    "cannot fence {} ({e}); trying again in {} s",
                    host.name,
                    FENCE_RETRY.as_secs()
                );
                c.events
                    .emit(Severity::Error, "host.fence_failed", &subject, msg)
                    .await;
            }
        }
        c.urgent.notify_one();
    });
}

/// Writes `fate` on the host's record if it changes it, with an event.
async fn record(ctl: &Ctl, h: &Host, fate: Fate) -> Result<(), RepoError> {
    let now = now_ms();
    if liveness::apply(&mut h.clone(), fate, now) == Change::None {
        return Ok(());
    }
    let mut change = Change::None;
    let key = format!("{HOSTS}{}", h.name);
    let res = ctl
        .repo
        .update::<Host, std::convert::Infallible, _>(&key, |rec| {
            change = liveness::apply(rec, fate, now);
            Ok(())
        })
        .await;
    match res {
        Ok(Ok(rec)) => announce(ctl, &rec, change).await,
        Ok(Err(never)) => match never {},
        Err(RepoError::Missing(_)) => {}
        Err(e) => return Err(e),
    }
    Ok(())
}

async fn announce(ctl: &Ctl, h: &Host, change: Change) {
    let silent = ctl.lock_observed().silent_ms(&h.name);
    let subject = format!("host/{}", h.name);
    let (sev, kind, msg) = match change {
        Change::None => return,
        Change::Failed => {
            let how = match (&ctl.fence_device, ctl.lock_observed().self_fence_ms(&h.name)) {
                (Some(_), _) => "running the fence device".to_string(),
                (None, Some(l)) => format!(
                    "waiting for its self-fence lease ({l} ms + {} ms) to run out",
                    liveness::SELF_FENCE_MARGIN_MS
                ),
                (None, None) => {
                    "it has no fence device and its agent does not fence itself: nothing on it is failed over until it returns or an operator acts".into()
                }
            };
            let why = if silent > ctl.cfg.liveness.suspect_after_ms {
                format!("no report for {silent} ms")
            } else {
                format!(
                    "a peer stopped hearing its VM and its agent did not answer within {} ms",
                    ctl.cfg.probe_timeout.as_millis()
                )
            };
            (
                Severity::Error,
                "host.failed",
                format!("{} is gone ({why}): {how}", h.name),
            )
        }
        Change::Confirmed(p) => (
            Severity::Warning,
            "host.fenced",
            format!(
                "{} is fenced ({}): its VMs can no longer serve; their pairs fail over",
                h.name,
                match p {
                    Proof::Device => "the fence device confirmed",
                    Proof::Lease => "its agent's self-fence lease ran out",
                }
            ),
        ),
        Change::CalledOff => (
            Severity::Info,
            "host.recovered",
            format!(
                "{} reports again before it was fenced: the fence is called off, it keeps its VMs: {}",
                h.name,
                h.state.as_str()
            ),
        ),
        Change::Restored => (
            Severity::Info,
            "host.recovered",
            format!(
                "{} is back and holds no stale VM: {}",
                h.name,
                h.state.as_str()
            ),
        ),
    };
    ctl.events.emit(sev, kind, &subject, msg).await;
}
