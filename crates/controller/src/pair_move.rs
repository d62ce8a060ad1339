//! S1 executor: carries out `duplex_core::pair_migration::Plan` for one
//! pair — confirm roles, migrate only the SBY, switch over, migrate the new
//! SBY, optionally switch back — feeding each result back to the plan.

use crate::ctl::Ctl;
use crate::lifecycle::{self, LifecycleError};
use crate::ops::OpHandle;
use crate::pair_exec;
use crate::pairs::{guest_roles, members};
use duplex_core::model::{OpKind, Operation, Pair, Severity};
use duplex_core::pair_lifecycle::{Intent, Slot, Workflow};
use duplex_core::pair_migration::{
    self, roles_event, Command, Event, Outcome, Plan, Setup, SwitchResult,
};
use duplex_core::role::Role;
use duplex_core::switchover::Phase;
use std::sync::Arc;

/// Starts moving pair `name` (it must be ready) as its own operation.
pub async fn start(
    ctl: &Arc<Ctl>,
    name: &str,
    setup: Setup,
) -> Result<(Operation, Pair), LifecycleError> {
    let flow = move |c: Arc<Ctl>, pair: Pair, handle: OpHandle| async move {
        let out = run(&c, pair, setup, &handle).await;
        handle.finish(outcome_result(&out)).await;
    };
    lifecycle::launch(
        ctl,
        name,
        (Workflow::Move, OpKind::PairMigrate),
        |_| {},
        flow,
    )
    .await
}

/// Moves pair `name` as part of operation `op` (a host drain).
pub async fn run_within(
    ctl: &Arc<Ctl>,
    name: &str,
    setup: Setup,
    op: &OpHandle,
) -> Result<Outcome, LifecycleError> {
    let (_, pair) = lifecycle::claim(ctl, name, Workflow::Move, &op.id, |_| {}).await?;
    Ok(run(ctl, pair, setup, op).await)
}

pub fn outcome_result(o: &Outcome) -> Result<String, String> {
    let line = format!(
        "{} migration(s), {} switchover(s); members on {} / {}",
        o.migrations, o.switchovers, o.hosts[0], o.hosts[1]
    );
    if o.ok {
        Ok(format!("moved: {line}"))
    } else {
        Err(format!(
            "{}; {line}",
            o.reason.as_deref().unwrap_or("failed")
        ))
    }
}

/// How long the guests get to report one ACT and one SBY (a member that
/// has just been live-migrated needs a moment to reconnect its channel).
const ROLES_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// The answer to `ConfirmRoles`, asking the guests until they report one
/// ACT and one SBY or time runs out.
async fn confirm(ctl: &Ctl, pair: &Pair) -> Event {
    let deadline = tokio::time::Instant::now() + ROLES_WAIT;
    loop {
        let ev = match members(ctl, pair).await {
            Ok(m) => roles_event(guest_roles(&m).await),
            Err(_) => Event::Roles { active: None },
        };
        if ev != (Event::Roles { active: None }) || tokio::time::Instant::now() > deadline {
            return ev;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

async fn switchover(ctl: &Ctl, name: &str, op: &str, from: usize) -> SwitchResult {
    let Some(slot) = Slot::of(from) else {
        return SwitchResult::RolledBack;
    };
    // A raised role token first, so the guests refuse anything older; the
    // intent is on record before any order goes out.
    let intent = |token| Intent::Switchover { from: slot, token };
    let Ok(pair) = lifecycle::step_raising_token(ctl, name, op, intent).await else {
        return SwitchResult::RolledBack;
    };
    let Ok(m) = members(ctl, &pair).await else {
        return SwitchResult::RolledBack;
    };
    let report = pair_exec::switchover(&m[from], &m[1 - from], pair.token, pair.vip).await;
    report.observe(&ctl.metrics);
    let mut result = match report.outcome {
        Phase::Done { .. } => SwitchResult::Swapped,
        Phase::RolledBack => SwitchResult::RolledBack,
        _ => SwitchResult::Failed,
    };
    if result == SwitchResult::Swapped {
        if let Err(e) = lifecycle::update(ctl, name, op, |p| p.active = slot.other()).await {
            // The guests swapped but the record cannot say so: stop here;
            // the pair is settled from its guests.
            tracing::warn!(pair = %name, "switched over, not recorded: {e}");
            result = SwitchResult::Failed;
        }
        let mut obs = ctl.lock_observed();
        obs.confirm(&pair.members[1 - from], Role::Act);
        obs.confirm(&pair.members[from], Role::Sby);
    }
    ctl.events
        .emit(
            if result == SwitchResult::Swapped {
                Severity::Info
            } else {
                Severity::Error
            },
            "pair.switchover",
            &format!("pair/{name}"),
            format!(
                "{name}: {} → {}: {result:?} in {:.0} ms: {}",
                m[from].vm,
                m[1 - from].vm,
                report.total_ms,
                report.steps_line()
            ),
        )
        .await;
    result
}

/// Runs the plan to its end; returns its outcome. Leaves the pair ready and
/// its members no longer busy, whatever happened.
pub async fn run(ctl: &Arc<Ctl>, pair: Pair, setup: Setup, op: &OpHandle) -> Outcome {
    let name = pair.name.clone();
    let subject = format!("pair/{name}");
    let Ok(_claim) = ctl.claim_vms(&pair.members) else {
        finish_pair(ctl, &pair, None, &op.id).await;
        return Outcome {
            ok: false,
            reason: Some("a member has another operation in progress".into()),
            hosts: setup.hosts,
            active: Some(setup.active),
            migrations: 0,
            switchovers: 0,
        };
    };
    let (mut plan, mut cmd) = match Plan::start(setup.clone()) {
        Ok(x) => x,
        Err(e) => {
            finish_pair(ctl, &pair, None, &op.id).await;
            return Outcome {
                ok: false,
                reason: Some(e.to_string()),
                hosts: setup.hosts,
                active: Some(setup.active),
                migrations: 0,
                switchovers: 0,
            };
        }
    };
    let outcome = loop {
        op.progress(format!("{name}: {}", plan.describe())).await;
        let ev = match &cmd {
            Command::Finish(o) => break o.clone(),
            Command::ConfirmRoles => confirm(ctl, &pair).await,
            Command::Migrate { member, to } => {
                let vm = &pair.members[*member];
                let intent = Intent::Migrate {
                    slot: Slot::of(*member).unwrap_or(Slot::A),
                    to: to.clone(),
                };
                if let Err(e) = lifecycle::step(ctl, &name, &op.id, intent, |_| {}).await {
                    break Outcome {
                        ok: false,
                        reason: Some(e.to_string()),
                        hosts: setup.hosts.clone(),
                        active: None,
                        migrations: 0,
                        switchovers: 0,
                    };
                }
                let from = ctl
                    .vm(vm)
                    .await
                    .ok()
                    .flatten()
                    .map(|v| v.host)
                    .unwrap_or_default();
                match crate::moves::migrate_vm(ctl, vm, to, &pair_migration::standby_tuning()).await
                {
                    Ok(stats) => {
                        let msg = crate::moves::summary(vm, &from, to, &stats);
                        ctl.events
                            .emit(Severity::Info, "vm.migrated", &format!("vm/{vm}"), msg)
                            .await;
                        Event::Migrated {
                            ok: true,
                            error: None,
                        }
                    }
                    Err(e) => Event::Migrated {
                        ok: false,
                        error: Some(e),
                    },
                }
            }
            Command::Switchover { from } => Event::Switched {
                result: switchover(ctl, &name, &op.id, *from).await,
            },
        };
        cmd = plan.step(ev);
    };
    finish_pair(ctl, &pair, outcome.active, &op.id).await;
    let line = format!(
        "{name}: {} — {} migration(s), {} switchover(s); members on {} / {}",
        if outcome.ok {
            "moved"
        } else {
            outcome.reason.as_deref().unwrap_or("failed")
        },
        outcome.migrations,
        outcome.switchovers,
        outcome.hosts[0],
        outcome.hosts[1]
    );
    ctl.events
        .emit(
            if outcome.ok {
                Severity::Info
            } else {
                Severity::Error
            },
            if outcome.ok {
                "pair.moved"
            } else {
                "pair.move_failed"
            },
            &subject,
            line,
        )
        .await;
    outcome
}

/// Leaves the pair ready (with `active` if known), unless it was taken
/// from this operation.
async fn finish_pair(ctl: &Ctl, pair: &Pair, active: Option<usize>, op: &str) {
    let w = (Workflow::Move, op);
    let res = lifecycle::release(ctl, &pair.name, w, true, |p| {
        if let Some(a) = active.and_then(Slot::of) {
            p.active = a;
        }
    });
    if let Err(e) = res.await {
        tracing::warn!(pair = %pair.name, "move: {e}");
    }
}
