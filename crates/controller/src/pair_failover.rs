//! The pair failover pass and its two workflows, run after every host
//! watch pass: `duplex_core::model::failover::decide` for each ready pair,
//! then promotion of the SBY when the ACT is out of service (`failover`:
//! its host fenced, or the ACT cut off the service network, isolated
//! first through its agent), and re-creation of a member out of service
//! as the new SBY on a live host, a spare one first (`heal`).

use crate::ctl::Ctl;
use crate::lifecycle::{self, LifecycleError};
use crate::ops::OpHandle;
use crate::pair_exec;
use crate::pairs;
use crate::vm_heal;
use duplex_core::guest_proto::TargetRole;
use duplex_core::model::failover::{decide, preempts, Failover, MemberSight};
use duplex_core::model::{Host, OpKind, Pair, Severity, Vm};
use duplex_core::pair_lifecycle::{Intent, Slot, Workflow};
use duplex_core::role::Role;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// After a promotion or heal was launched, the earliest the pass launches
/// another for the same pair (a heal with no host to go to fails at once;
/// without a pause it would be launched again every pass).
const PROMOTE_RETRY: Duration = Duration::from_secs(2);
const HEAL_RETRY: Duration = Duration::from_secs(10);

/// What the pass remembers between passes: the last reason each pair was
/// waiting for (told once), and when each workflow may be launched again.
#[derive(Default)]
pub struct Memory {
    waiting: HashMap<String, &'static str>,
    next_try: HashMap<(String, Workflow), Instant>,
}

impl Memory {
    /// Whether workflow `w` may be launched on `pair` now; if so, not
    /// again for `pause` (a promotion does not delay the heal after it).
    fn due(&mut self, pair: &str, w: Workflow, pause: Duration) -> bool {
        let now = Instant::now();
        let key = (pair.to_string(), w);
        if self.next_try.get(&key).is_some_and(|t| now < *t) {
            return false;
        }
        self.next_try.insert(key, now + pause);
        true
    }
}

type World<'a> = (&'a [Host], &'a [Vm], &'a [Pair]);

pub async fn pass(
    ctl: &Arc<Ctl>,
    mem: &mut Memory,
    (hosts, vms, pairs): World<'_>,
    fenced: &BTreeSet<String>,
) {
    let mut waiting = HashMap::new();
    let listing = crate::listing::Listing::new(vms, hosts);
    for pair in pairs {
        let m = sights(ctl, pair, &listing, fenced);
        preempt_if_stranded(ctl, pair, &m).await;
        match decide(pair, m) {
            None => {}
            Some(Failover::Wait { reason }) => {
                if mem.waiting.get(&pair.name) != Some(&reason) {
                    let msg = format!("pair {} cannot fail over yet: {reason}", pair.name);
                    let subject = format!("pair/{}", pair.name);
                    ctl.events
                        .emit(Severity::Error, "pair.failover_waiting", &subject, msg)
                        .await;
                }
                waiting.insert(pair.name.clone(), reason);
            }
            Some(Failover::Promote { to, isolate })
                if mem.due(&pair.name, Workflow::Failover, PROMOTE_RETRY) =>
            {
                start(ctl, pair, Workflow::Failover, (to, isolate)).await
            }
            Some(Failover::Replace { slot }) if mem.due(&pair.name, Workflow::Heal, HEAL_RETRY) => {
                start(ctl, pair, Workflow::Heal, (slot, false)).await
            }
            Some(Failover::Promote { .. } | Failover::Replace { .. }) => {}
        }
    }
    mem.waiting = waiting;
}

/// A switchover, move or repair under way when a member's host is fenced
/// would wait out its orders' time limits against a host that is gone:
/// it is stopped, and the recovery pass hands the pair to this pass.
async fn preempt_if_stranded(ctl: &Arc<Ctl>, pair: &Pair, m: &[MemberSight; 2]) {
    let Some(j) = &pair.journal else { return };
    if !preempts(j.workflow, m) || !ctl.office.runs(&j.op) {
        return;
    }
    let reason = format!(
        "stopped: a member's host of pair {} is fenced; the pair fails over instead",
        pair.name
    );
    crate::ops::preempt(ctl, &j.op, &reason).await;
    let subject = format!("pair/{}", pair.name);
    let msg = format!("{} {}: {reason}", j.workflow.as_str(), j.op);
    ctl.events
        .emit(Severity::Warning, "pair.preempted", &subject, msg)
        .await;
}

fn sights(
    ctl: &Ctl,
    pair: &Pair,
    listing: &crate::listing::Listing,
    fenced: &BTreeSet<String>,
) -> [MemberSight; 2] {
    let obs = ctl.lock_observed();
    let sight = |name: &str| {
        let Some(host) = listing.vm(name).map(|v| v.host.as_str()) else {
            return MemberSight::default();
        };
        let live = listing
            .host(host)
            .is_some_and(|h| obs.live(h, &ctl.cfg.liveness));
        let view = obs.member_view(host, name);
        MemberSight {
            host_fenced: fenced.contains(host),
            host_live: live,
            role: view.role,
            peer_lost: view.peer_lost,
            cut_off: view.cut_off,
            isolated: obs.vm(host, name).is_some_and(|v| v.isolated),
        }
    };
    [sight(&pair.members[0]), sight(&pair.members[1])]
}

/// Launches workflow `w` for member `slot` (`isolate`: a promotion first
/// isolates the other member).
async fn start(ctl: &Arc<Ctl>, pair: &Pair, w: Workflow, (slot, isolate): (Slot, bool)) {
    let (kind, raise) = match w {
        Workflow::Failover => (OpKind::PairFailover, true),
        _ => (OpKind::PairHeal, false),
    };
    let flow = move |c: Arc<Ctl>, p: Pair, op: OpHandle| run(c, p, (w, slot, isolate), op);
    let raise = move |p: &mut Pair| {
        if raise {
            p.token += 1;
        }
    };
    match lifecycle::launch(ctl, &pair.name, (w, kind), raise, flow).await {
        Ok(_) | Err(LifecycleError::Refused { .. } | LifecycleError::Lost { .. }) => {}
        Err(LifecycleError::Repo(e)) => {
            tracing::warn!(pair = %pair.name, "cannot start {}: {e}", w.as_str())
        }
    }
}

/// Runs a failover or heal, then releases the pair (the record's ACT
/// follows a promotion that was carried out), then confirms the roles.
async fn run(ctl: Arc<Ctl>, pair: Pair, (w, slot, isolate): (Workflow, Slot, bool), op: OpHandle) {
    let subject = format!("pair/{}", pair.name);
    let res = match w {
        Workflow::Failover => promote(&ctl, &pair, (slot, isolate), &op).await,
        _ => heal(&ctl, &pair, slot, &op).await,
    };
    let promoted = w == Workflow::Failover && res.is_ok();
    let released = lifecycle::release(&ctl, &pair.name, (w, &op.id), res.is_ok(), |p| {
        if promoted {
            p.active = slot;
        }
    })
    .await
    .map_err(|e| e.to_string());
    let res = match (res, released) {
        (Ok(msg), Ok(now)) if w == Workflow::Heal => confirm(&ctl, &now).await.map(|()| msg),
        (Ok(msg), Ok(_)) => Ok(msg),
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
    };
    let ends = match w {
        Workflow::Failover => ("pair.failed_over", "pair.failover_failed"),
        _ => ("pair.healed", "pair.heal_failed"),
    };
    op.conclude(&subject, ends, res).await;
}

async fn confirm(ctl: &Ctl, pair: &Pair) -> Result<(), String> {
    let m = pairs::members(ctl, pair).await?;
    pairs::confirm_roles(ctl, pair, &m).await
}

/// Makes the SBY in `to` ACT with the raised token; `isolate`: first the
/// other member, cut off the service network on a host that still
/// answers, is isolated by its agent (never two ACTs: no promotion unless
/// that is confirmed).
async fn promote(
    ctl: &Arc<Ctl>,
    pair: &Pair,
    (to, isolate): (Slot, bool),
    op: &OpHandle,
) -> Result<String, String> {
    let started = Instant::now();
    let intent = Intent::Roles { token: pair.token };
    lifecycle::step(ctl, &pair.name, &op.id, intent, |_| {})
        .await
        .map_err(|e| e.to_string())?;
    let m = pairs::members(ctl, pair).await?;
    let (new, old) = (&m[to.i()], &m[to.other().i()]);
    let why = if isolate {
        op.progress(format!(
            "isolating {}: it is cut off the service network",
            old.vm
        ))
        .await;
        old.agent
            .isolate(&old.vm)
            .await
            .map_err(|e| format!("cannot isolate {}, so {} stays SBY: {e}", old.vm, new.vm))?;
        "was isolated, cut off the service network"
    } else {
        "is on a fenced host"
    };
    op.progress(format!(
        "making {} ACT (token {}): {} {why}",
        new.vm, pair.token, old.vm
    ))
    .await;
    let address = ctl.service(pair);
    // A guest that restarted lost its configuration with its role.
    let configure = {
        let hosts = pairs::member_hosts(ctl, pair).await?;
        let obs = ctl.lock_observed();
        obs.member_view(&hosts[to.i()], &new.vm).role == Some(Role::None)
    };
    let order = (TargetRole::Act, pair.token);
    pair_exec::give_role(new, old, address, order, configure).await?;
    // Its guest said so: the pass need not wait for its next heartbeat.
    ctl.lock_observed().confirm(&new.vm, Role::Act);
    Ok(format!(
        "pair {}: {} is ACT (token {}) {} ms after the order, in place of {}, which {why}; degraded until {} is re-created",
        pair.name,
        new.vm,
        pair.token,
        started.elapsed().as_millis(),
        old.vm,
        old.vm
    ))
}

/// Where the lost member goes: a spare host first, else placement's
/// choice, never the ACT's host or its own.
async fn target(ctl: &Ctl, pair: &Pair, slot: Slot) -> Result<String, String> {
    let vms = ctl.vms().await.map_err(|e| e.to_string())?;
    let rec = |name: &str| vms.iter().find(|v| v.spec.name == name).cloned();
    let lost = rec(pair.member(slot)).ok_or("the lost member has no record")?;
    let act = rec(pair.member(slot.other())).ok_or("the ACT has no record")?;
    vm_heal::target(ctl, &lost, &[act.host]).await
}

/// Re-creates the member in `slot` on a live host and makes it SBY.
async fn heal(ctl: &Arc<Ctl>, pair: &Pair, slot: Slot, op: &OpHandle) -> Result<String, String> {
    let name = pair.member(slot).to_string();
    let on = target(ctl, pair, slot).await?;
    let intent = Intent::Replace {
        slot,
        on: on.clone(),
    };
    lifecycle::step(ctl, &pair.name, &op.id, intent, |_| {})
        .await
        .map_err(|e| e.to_string())?;
    vm_heal::use_spare(ctl, &on).await?;
    let moved = {
        // The reconciler must not start it on its old host meanwhile.
        let _claim = ctl.claim_vms(std::slice::from_ref(&name))?;
        let vm = ctl
            .vm(&name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{name} has no record"))?;
        vm_heal::remove(ctl, &vm, Some(op)).await?;
        vm_heal::rehome(ctl, &name, &on).await?
    };
    op.progress(format!("re-creating {name} on {on}; waiting for its guest"))
        .await;
    vm_heal::wait_running(ctl, &moved).await?;
    let m = pairs::members(ctl, pair).await?;
    let (sby, act) = (&m[slot.i()], &m[slot.other().i()]);
    op.progress(format!(
        "configuring {name} and making it SBY (token {})",
        pair.token
    ))
    .await;
    let address = ctl.service(pair);
    pair_exec::give_role(sby, act, address, (TargetRole::Sby, pair.token), true).await?;
    Ok(format!(
        "pair {}: {name} re-created on {on} as SBY of {} (token {})",
        pair.name, act.vm, pair.token
    ))
}
