//! The repair loop: finds ready pairs whose guest lost its role (it
//! restarted) and carries out `duplex_core::model::repair::decide`, as an
//! operation of its own (`pair_repair`) with events.

use crate::ctl::Ctl;
use crate::lifecycle::{self, LifecycleError};
use crate::ops::OpHandle;
use crate::pair_exec::{self, PairMember};
use crate::pairs;
use crate::repo::RepoError;
use duplex_core::guest_proto::{Op, TargetRole};
use duplex_core::model::pair::MemberView;
use duplex_core::model::repair::{decide, Repair};
use duplex_core::model::{OpKind, Pair, Severity};
use duplex_core::pair_lifecycle::{Intent, Slot, Workflow};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const PERIOD: Duration = Duration::from_millis(1000);
/// The same decision must hold this long before it is carried out: a
/// report from a guest mid-restart, or one older than a workflow's last
/// order, does not start a repair.
const GRACE: Duration = Duration::from_secs(1);
/// How long a member's guest gets to boot again before it is configured.
const BOOT_WAIT: Duration = Duration::from_secs(120);

pub async fn run(ctl: Arc<Ctl>) {
    let mut pending: HashMap<String, (Repair, Instant)> = HashMap::new();
    let mut retry = crate::pair_recover::Retry::default();
    loop {
        tokio::time::sleep(PERIOD).await;
        if !ctl.is_leader() {
            pending.clear();
            continue;
        }
        let pairs = match ctl.pairs().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("pair passes skipped: {e}");
                continue;
            }
        };
        if let Err(e) = crate::pair_recover::pass(&ctl, &pairs, &mut retry).await {
            tracing::warn!("pair recovery pass failed: {e}");
        }
        if let Err(e) = pass(&ctl, pairs, &mut pending).await {
            tracing::warn!("pair repair pass failed: {e}");
        }
    }
}

async fn pass(
    ctl: &Arc<Ctl>,
    pairs: Vec<Pair>,
    pending: &mut HashMap<String, (Repair, Instant)>,
) -> Result<(), RepoError> {
    let (vms, hosts) = (ctl.vms().await?, ctl.hosts().await?);
    let listing = crate::listing::Listing::new(&vms, &hosts);
    let mut due = Vec::new();
    let mut wanted = HashMap::new();
    for pair in pairs {
        // A member re-created by PH3.0 / PH3.5 first takes its data.
        let restoring = vms
            .iter()
            .any(|v| pair.members.contains(&v.spec.name) && v.restore.is_some());
        if restoring {
            continue;
        }
        let view = ctl.pair_view(pair.clone(), &listing);
        let mut views = [MemberView::default(); 2];
        for (v, m) in views.iter_mut().zip(&view.members_status) {
            *v = MemberView {
                role: m.role,
                healthy: m.healthy,
                peer_lost: m.peer_lost,
                cut_off: m.cut_off,
                peer_synced: m.peer_synced,
            };
        }
        let Some(r) = decide(&pair, views) else {
            continue;
        };
        let since = match pending.get(&pair.name) {
            Some((prev, since)) if *prev == r => *since,
            _ => Instant::now(),
        };
        if since.elapsed() >= GRACE {
            due.push((pair, r));
        } else {
            wanted.insert(pair.name.clone(), (r, since));
        }
    }
    *pending = wanted;
    for (pair, r) in due {
        start(ctl, &pair.name, r).await?;
    }
    Ok(())
}

/// Claims the pair for the repair (raising its token if a member is to be
/// made ACT) and runs the repair as an operation. A pair some workflow
/// took first is judged again on a later pass.
async fn start(ctl: &Arc<Ctl>, name: &str, r: Repair) -> Result<(), RepoError> {
    let raise = |p: &mut Pair| {
        if r.raises_token() {
            p.token += 1;
        }
    };
    let flow = move |c: Arc<Ctl>, pair: Pair, op: OpHandle| flow(c, pair, r, op);
    match lifecycle::launch(
        ctl,
        name,
        (Workflow::Repair, OpKind::PairRepair),
        raise,
        flow,
    )
    .await
    {
        Ok(_) | Err(LifecycleError::Refused { .. } | LifecycleError::Lost { .. }) => Ok(()),
        Err(LifecycleError::Repo(e)) => Err(e),
    }
}

async fn flow(ctl: Arc<Ctl>, pair: Pair, r: Repair, op: OpHandle) {
    let subject = format!("pair/{}", pair.name);
    ctl.events
        .emit(
            Severity::Warning,
            "pair.repair.started",
            &subject,
            format!("pair {}: {}", pair.name, describe(&pair, r)),
        )
        .await;
    let res = steps(&ctl, &pair, r, &op).await;
    op.conclude(&subject, ("pair.repair.done", "pair.repair.failed"), res)
        .await;
}

fn describe(pair: &Pair, r: Repair) -> String {
    let m = |i: usize| &pair.members[i % 2];
    match r {
        Repair::Standby { member } => {
            format!(
                "SBY {} lost its role (guest restarted): making it SBY again",
                m(member)
            )
        }
        Repair::FailOver { to } => format!(
            "ACT {} lost its role (guest restarted): failing over to SBY {}",
            m(to + 1),
            m(to)
        ),
        Repair::Adopt { act } => format!(
            "{} is ACT and {} lost its role: recording {} as ACT, making {} SBY",
            m(act),
            m(act + 1),
            m(act),
            m(act + 1)
        ),
        Repair::SetUp => "both guests lost their roles: setting the pair up again".into(),
    }
}

async fn steps(ctl: &Arc<Ctl>, pair: &Pair, r: Repair, op: &OpHandle) -> Result<String, String> {
    let intent = Intent::Roles { token: pair.token };
    lifecycle::step(ctl, &pair.name, &op.id, intent, |_| {})
        .await
        .map_err(|e| e.to_string())?;
    let (act_done, res) = match pairs::members(ctl, pair).await {
        Ok(m) => orders(ctl.service(pair), (pair, r), &m, op).await,
        Err(e) => (false, Err(e)),
    };
    // The record follows the guests: the new ACT once it is ACT, even if
    // the other member could not be made SBY after it.
    let new_active = if act_done {
        Slot::of(r.new_active(pair.active.i())).unwrap_or(pair.active)
    } else {
        pair.active
    };
    let w = (Workflow::Repair, op.id.as_str());
    let now = lifecycle::release(ctl, &pair.name, w, res.is_ok(), |p| p.active = new_active)
        .await
        .map_err(|e| e.to_string());
    res?;
    let now = now?;
    op.progress("confirming roles with the guests").await;
    let m = pairs::members(ctl, &now).await?;
    pairs::confirm_roles(ctl, &now, &m).await?;
    Ok(format!(
        "pair {} repaired: ACT {}, SBY {} confirmed by their guests (token {})",
        now.name,
        now.act(),
        now.sby(),
        now.token
    ))
}

/// The guest orders of the repair: whether the ACT is where the repair
/// wants it, and how the whole went.
async fn orders(
    address: pair_exec::Service,
    (pair, r): (&Pair, Repair),
    m: &[PairMember; 2],
    op: &OpHandle,
) -> (bool, Result<(), String>) {
    let act = &m[r.new_active(pair.active.i())];
    let sby = &m[r.restore(pair.active.i())];
    let first = match r {
        Repair::FailOver { .. } => {
            op.progress(format!("making {} ACT (token {})", act.vm, pair.token))
                .await;
            let order = (TargetRole::Act, pair.token);
            pair_exec::give_role(act, sby, address, order, false).await
        }
        Repair::SetUp => {
            wait_guest(act, op).await;
            op.progress(format!("configuring {} as ACT", act.vm)).await;
            let order = (TargetRole::Act, pair.token);
            pair_exec::give_role(act, sby, address, order, true).await
        }
        Repair::Standby { .. } | Repair::Adopt { .. } => Ok(()),
    };
    if let Err(e) = first {
        return (false, Err(e));
    }
    wait_guest(sby, op).await;
    op.progress(format!("configuring {} and making it SBY", sby.vm))
        .await;
    let order = (TargetRole::Sby, pair.token);
    let second = pair_exec::give_role(sby, act, address, order, true).await;
    (true, second)
}

/// Waits until the member's guest answers (it may still be booting after
/// its reset); the next order reports it if it never does.
async fn wait_guest(who: &PairMember, op: &OpHandle) {
    let deadline = Instant::now() + BOOT_WAIT;
    let mut said = false;
    while who.agent.guest(&who.vm, &Op::Hello).await.is_err() && Instant::now() < deadline {
        if !said {
            op.progress(format!("waiting for {}'s guest to boot", who.vm))
                .await;
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
