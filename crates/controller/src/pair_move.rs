//! S1 executor: carries out `duplex_core::pair_migration::Plan` for one
//! pair — confirm roles, migrate only the SBY, switch over, migrate the new
//! SBY, optionally switch back — feeding each result back to the plan.

use crate::ctl::Ctl;
use crate::ops::OpHandle;
use crate::pair_exec;
use crate::pairs::{guest_roles, key, members};
use crate::repo::RepoError;
use duplex_core::model::{Pair, PairPhase, Severity};
use duplex_core::pair_migration::{
    self, roles_event, Command, Event, Outcome, Plan, Setup, SwitchResult,
};
use duplex_core::role::Role;
use duplex_core::switchover::Phase;
use std::sync::Arc;

/// Marks the pair as moving (it must be ready) and its members busy.
pub async fn begin(ctl: &Ctl, name: &str) -> Result<Result<Pair, String>, RepoError> {
    let r = ctl
        .repo
        .update::<Pair, String, _>(&key(name), |p| {
            if p.phase != PairPhase::Ready {
                return Err(format!(
                    "pair {name} is {}, not ready: wait for the running operation to finish",
                    p.phase.as_str()
                ));
            }
            p.phase = PairPhase::Moving;
            Ok(())
        })
        .await?;
    if let Ok(p) = &r {
        let mut busy = ctl.lock_busy();
        for m in &p.members {
            busy.insert(m.clone());
        }
    }
    Ok(r)
}

/// How long the guests get to report one ACT and one SBY (a member that
/// has just been live-migrated needs a moment to reconnect its channel).
const ROLES_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// The answer to `ConfirmRoles`, asking the guests until they report one
/// ACT and one SBY or time runs out.
async fn confirm(ctl: &Ctl, pair: &Pair) -> Event {
    let deadline = std::time::Instant::now() + ROLES_WAIT;
    loop {
        let ev = match members(ctl, pair).await {
            Ok(m) => roles_event(guest_roles(&m).await),
            Err(_) => Event::Roles { active: None },
        };
        if ev != (Event::Roles { active: None }) || std::time::Instant::now() > deadline {
            return ev;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

async fn switchover(ctl: &Ctl, name: &str, from: usize) -> SwitchResult {
    // A raised role token first, so the guests refuse anything older.
    let r = ctl
        .repo
        .update::<Pair, std::convert::Infallible, _>(&key(name), |p| {
            p.token += 1;
            Ok(())
        })
        .await;
    let Ok(Ok(pair)) = r else {
        return SwitchResult::RolledBack;
    };
    let Ok(m) = members(ctl, &pair).await else {
        return SwitchResult::RolledBack;
    };
    let report = pair_exec::switchover(&m[from], &m[1 - from], pair.token, pair.vip).await;
    let result = match report.outcome {
        Phase::Done { .. } => SwitchResult::Swapped,
        Phase::RolledBack => SwitchResult::RolledBack,
        _ => SwitchResult::Failed,
    };
    if result == SwitchResult::Swapped {
        let _ = ctl
            .repo
            .update::<Pair, std::convert::Infallible, _>(&key(name), |p| {
                p.active = 1 - from;
                Ok(())
            })
            .await;
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
    let (mut plan, mut cmd) = match Plan::start(setup.clone()) {
        Ok(x) => x,
        Err(e) => {
            finish_pair(ctl, &pair, None).await;
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
                result: switchover(ctl, &name, *from).await,
            },
        };
        cmd = plan.step(ev);
    };
    finish_pair(ctl, &pair, outcome.active).await;
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

/// Leaves the pair ready (with `active` if known) and its members no longer busy.
pub async fn finish_pair(ctl: &Ctl, pair: &Pair, active: Option<usize>) {
    let _ = ctl
        .repo
        .update::<Pair, std::convert::Infallible, _>(&key(&pair.name), |p| {
            p.phase = PairPhase::Ready;
            if let Some(a) = active {
                p.active = a;
            }
            Ok(())
        })
        .await;
    let mut busy = ctl.lock_busy();
    for m in &pair.members {
        busy.remove(m);
    }
    drop(busy);
    ctl.kick.notify_one();
}
