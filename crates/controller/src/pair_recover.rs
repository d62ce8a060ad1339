//! The recovery pass: a pair in a transient phase whose journaled operation
//! runs nowhere in this process (its controller died or lost office, or
//! could not record the end) is taken up, as `pair_lifecycle::orphan`
//! says: a create or delete is run again, a switchover, move or repair is
//! settled from what the guests report (`pair_lifecycle::recover`). Each
//! is an operation of its own, with an event saying what was found.

use crate::ctl::Ctl;
use crate::lifecycle::{self, LifecycleError};
use crate::ops::{self, OpHandle};
use crate::pair_exec::{self, PairMember};
use crate::pairs;
use crate::repo::RepoError;
use duplex_core::agent_api::HandoverOrder;
use duplex_core::guest_proto::TargetRole;
use duplex_core::model::{OpKind, Pair, PairPhase, Severity};
use duplex_core::pair_lifecycle::{orphan, recover, Fix, Intent, Orphan, Recovery, Workflow};
use duplex_core::role::Role;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A pair taken up is not taken up again before this long.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// How long a settlement waits for a silent member before it gives up
/// (the pass takes the pair up again later).
const SETTLE_WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_secs(1);

/// Orphaned operation records are looked for on the first pass of a term
/// of office (a predecessor's), and this often after (a flow whose last
/// write failed): the sweep reads every operation record.
const OPS_SWEEP: Duration = Duration::from_secs(30);

/// The recovery pass's memory within one term of office.
#[derive(Default)]
pub struct Retry {
    /// The term (fencing token) it belongs to.
    term: u64,
    /// When each pair may be taken up again.
    pairs: BTreeMap<String, Instant>,
    /// When the next sweep of operation records is due (`None`: now).
    next_sweep: Option<Instant>,
}

pub async fn pass(ctl: &Arc<Ctl>, pairs: &[Pair], retry: &mut Retry) -> Result<(), RepoError> {
    if retry.term != ctl.fence() {
        *retry = Retry {
            term: ctl.fence(),
            ..Retry::default()
        };
    }
    if retry.next_sweep.is_none_or(|t| Instant::now() >= t) {
        ops::fail_orphans(ctl).await?;
        retry.next_sweep = Some(Instant::now() + OPS_SWEEP);
    }
    for pair in pairs {
        let what = orphan(pair.phase);
        if what == Orphan::AtRest {
            continue;
        }
        if let Some(j) = &pair.journal {
            if ctl.office.runs(&j.op) {
                continue;
            }
        }
        let now = Instant::now();
        if retry.pairs.get(&pair.name).is_some_and(|t| now < *t) {
            continue;
        }
        retry.pairs.insert(pair.name.clone(), now + RETRY_AFTER);
        take_up(ctl, pair, what).await?;
    }
    Ok(())
}

fn left_doing(pair: &Pair) -> String {
    match &pair.journal {
        Some(j) => format!(
            "left {} by operation {} ({}: {})",
            pair.phase.as_str(),
            j.op,
            j.workflow.as_str(),
            j.intent
                .as_ref()
                .map(|i| i.describe(&pair.members))
                .unwrap_or_else(|| "no step begun".into())
        ),
        None => format!("left {} with no operation on record", pair.phase.as_str()),
    }
}

async fn take_up(ctl: &Arc<Ctl>, pair: &Pair, what: Orphan) -> Result<(), RepoError> {
    let (w, kind, phase, doing) = match what {
        Orphan::AtRest => return Ok(()),
        Orphan::Rerun(Workflow::Delete) => (
            Workflow::Delete,
            OpKind::PairDelete,
            PairPhase::Deleting,
            "deleting it again",
        ),
        Orphan::Rerun(_) => (
            Workflow::Create,
            OpKind::PairCreate,
            pair.phase,
            "running its set-up again",
        ),
        Orphan::Settle => (
            Workflow::Recover,
            OpKind::PairRecover,
            PairPhase::Repairing,
            "settling its roles from what its guests report",
        ),
    };
    let id = ops::new_id(ctl);
    let guard = ctl.office.reserve(&id);
    let from = pair.journal.as_ref().map(|j| j.op.as_str());
    let taken = match lifecycle::adopt(ctl, &pair.name, from, (w, phase), &id).await {
        Ok(p) => p,
        Err(LifecycleError::Repo(RepoError::Missing(_))) => return Ok(()),
        Err(LifecycleError::Repo(e)) => return Err(e),
        Err(_) => return Ok(()),
    };
    let subject = format!("pair/{}", pair.name);
    let (_, handle) = ops::record(ctl, id.clone(), kind, &subject).await?;
    let message = format!(
        "pair {} was {}, which runs nowhere now: {doing} (operation {id})",
        pair.name,
        left_doing(pair)
    );
    ctl.events
        .emit(Severity::Warning, "pair.recovering", &subject, message)
        .await;
    let c = ctl.clone();
    match w {
        Workflow::Delete => ctl
            .office
            .spawn(guard, pairs::delete_flow(c, taken, handle)),
        Workflow::Create => ctl
            .office
            .spawn(guard, pairs::create_flow(c, taken, handle)),
        _ => ctl.office.spawn(guard, settle_flow(c, taken, handle)),
    }
    Ok(())
}

async fn settle_flow(ctl: Arc<Ctl>, pair: Pair, op: OpHandle) {
    let subject = format!("pair/{}", pair.name);
    let res = settle(&ctl, &pair, &op).await;
    op.conclude(&subject, ("pair.recovered", "pair.recovery_failed"), res)
        .await;
}

/// Asks the guests until the settlement can be decided (or time is up).
async fn decide(
    pair: &Pair,
    m: &[PairMember; 2],
    op: &OpHandle,
) -> Result<(Recovery, [Option<Role>; 2]), String> {
    let deadline = Instant::now() + SETTLE_WAIT;
    loop {
        let roles = pairs::guest_roles(m).await;
        match recover(pair.active, roles) {
            r @ Recovery::Settle { .. } => return Ok((r, roles)),
            Recovery::Wait { reason } if Instant::now() > deadline => {
                return Err(format!("cannot settle pair {} yet: {reason}", pair.name))
            }
            Recovery::Wait { reason } => op.progress(format!("waiting: {reason}")).await,
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The members out of service: on a fenced host, or isolated.
async fn out_of_service(ctl: &Ctl, pair: &Pair) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (name, host) in pair
        .members
        .iter()
        .zip(pairs::member_hosts(ctl, pair).await?)
    {
        let rec = ctl.host(&host).await.map_err(|e| e.to_string())?;
        let isolated = ctl
            .lock_observed()
            .vm(&host, name)
            .is_some_and(|v| v.isolated);
        if isolated || rec.is_some_and(|h| h.fence.is_some_and(|f| f.proof.is_some())) {
            out.push(name.clone());
        }
    }
    Ok(out)
}

async fn settle(ctl: &Arc<Ctl>, pair: &Pair, op: &OpHandle) -> Result<String, String> {
    // A member on a fenced host, or isolated, never answers: the failover
    // pass, which knows why, decides for the pair once it is ready again.
    let gone = out_of_service(ctl, pair).await?;
    if !gone.is_empty() {
        let w = (Workflow::Recover, op.id.as_str());
        lifecycle::release(ctl, &pair.name, w, true, |_| {})
            .await
            .map_err(|e| e.to_string())?;
        return Ok(format!(
            "pair {}: {} out of service (fenced host or isolated); left to the failover pass",
            pair.name,
            gone.join(", ")
        ));
    }
    let m = pairs::members(ctl, pair).await?;
    let (decision, roles) = decide(pair, &m, op).await?;
    let Recovery::Settle { active, fixes } = decision else {
        return Err("undecided".into());
    };
    let intent = |token| Intent::Roles { token };
    let p = lifecycle::step_raising_token(ctl, &pair.name, &op.id, intent)
        .await
        .map_err(|e| e.to_string())?;
    // A hold the gone switchover left on an element would expire on its
    // own; end it now.
    for x in &m {
        if let Err(e) = x.agent.handover(&x.vm, &HandoverOrder::Release).await {
            tracing::debug!(vm = %x.vm, "releasing its element: {e}");
        }
    }
    let mut done = Vec::new();
    for fix in &fixes {
        let (s, role) = match *fix {
            Fix::Activate(s) => (s, TargetRole::Act),
            Fix::Standby(s) => (s, TargetRole::Sby),
        };
        let (who, peer) = (&m[s.i()], &m[s.other().i()]);
        op.progress(format!("making {} {role:?} (token {})", who.vm, p.token))
            .await;
        // A guest that lost its role lost its configuration with it.
        let configure = roles[s.i()] == Some(Role::None);
        let address = ctl.service(&p);
        pair_exec::give_role(who, peer, address, (role, p.token), configure).await?;
        done.push(format!("{} {role:?}", who.vm));
    }
    let w = (Workflow::Recover, op.id.as_str());
    let now = lifecycle::release(ctl, &pair.name, w, true, |p| p.active = active)
        .await
        .map_err(|e| e.to_string())?;
    pairs::confirm_roles(ctl, &now, &m).await?;
    Ok(format!(
        "pair {} settled: guests reported {:?}; orders: {}; ACT {}, SBY {} confirmed (token {})",
        now.name,
        roles,
        if done.is_empty() {
            "none".into()
        } else {
            done.join(", ")
        },
        now.act(),
        now.sby(),
        now.token
    ))
}
