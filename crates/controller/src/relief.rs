//! The rebalancer (S4 in the running cluster; off by default). Every
//! [`PASS_EVERY`] while leading, the hosts' measured loads go through
//! `duplex_core::placement::relief` (which hosts are due: marks, sustain
//! time, cooldowns, moves in flight) and, for the hosts due, through
//! `relief_plan` (which VM, where). This shell only starts the moves (an
//! SBY or a lone VM by live migration, a pair's ACT the S1 way, as
//! `model::move_way` says) and says why in an event.
//!
//! The policy is in the store (`policies/relief`). The memory (since when
//! a host is over, what rests) is this leader's: a new leader starts
//! afresh, which delays a move by the sustain time, never repeats one
//! early (what moved rests on the hosts' new loads).

use crate::ctl::Ctl;
use crate::error::ApiError;
use crate::events::now_ms;
use crate::repo::{RepoError, OPS, POLICIES};
use duplex_core::agent_api::HostCapacity;
use duplex_core::model::move_way::{way_to_move, MoveWay};
use duplex_core::model::{Host, HostState, OpState, Operation, Severity};
use duplex_core::pair_migration::{self, Setup};
use duplex_core::placement::headroom::Headroom;
use duplex_core::placement::relief::{HostLoad, Relief, ReliefChange, ReliefPolicy};
use duplex_core::placement::relief_plan::{Move, Pass, Step};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the loads are compared with the policy.
pub const PASS_EVERY: Duration = Duration::from_secs(5);

fn policy_key() -> String {
    format!("{POLICIES}relief")
}

/// What the rebalancer remembers between passes.
#[derive(Default)]
pub struct Rebalancer {
    memory: Mutex<Relief>,
    /// Operations it started that may still run (at most `max_in_flight`).
    started: Mutex<Vec<String>>,
}

impl Rebalancer {
    fn memory(&self) -> std::sync::MutexGuard<'_, Relief> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn started(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.started.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The policy in force (the defaults until an operator sets one).
pub async fn policy(ctl: &Ctl) -> Result<ReliefPolicy, RepoError> {
    Ok(ctl
        .repo
        .get::<ReliefPolicy>(&policy_key())
        .await?
        .map(|r| r.value)
        .unwrap_or_default())
}

/// Applies `change` to the policy in force and stores the result, unless
/// another change was stored meanwhile (then again, on that one: two
/// operators' changes of different settings both hold).
pub async fn set_policy(
    ctl: &Ctl,
    change: &ReliefChange,
) -> Result<Result<ReliefPolicy, String>, RepoError> {
    ctl.repo
        .upsert(&policy_key(), |p: &mut ReliefPolicy| {
            *p = p.changed(change)?;
            Ok(())
        })
        .await
}

/// The hosts that take VMs, with their capacity.
fn ready(hosts: &[Host]) -> Vec<(String, HostCapacity)> {
    hosts
        .iter()
        .filter(|h| h.state == HostState::Ready)
        .map(|h| (h.name.clone(), h.capacity))
        .collect()
}

/// What the hosts that take VMs and their VMs use (one pass over the
/// samples), and each such host's load.
fn measured(ctl: &Ctl, hosts: &[Host]) -> (Vec<HostLoad>, Headroom) {
    let headroom = ctl.headroom(&ready(hosts));
    (headroom.loads(), headroom)
}

/// Moves it started that still run; forgets the ones that ended.
async fn in_flight(ctl: &Ctl) -> Result<usize, RepoError> {
    let ids = ctl.relief.started().clone();
    let mut running = Vec::new();
    for id in ids {
        let op = ctl.repo.get::<Operation>(&format!("{OPS}{id}")).await?;
        if op.is_some_and(|o| o.value.state == OpState::Running) {
            running.push(id);
        }
    }
    let n = running.len();
    *ctl.relief.started() = running;
    Ok(n)
}

/// VMs that stay put this pass: moved within the cooldown, or claimed by
/// an operation.
fn resting(ctl: &Ctl, memory: &Relief) -> BTreeSet<String> {
    let mut r = memory.resting_vms();
    r.extend(ctl.lock_busy().iter().cloned());
    r
}

pub async fn run(ctl: Arc<Ctl>) {
    loop {
        tokio::time::sleep(PASS_EVERY).await;
        if !ctl.is_leader() {
            *ctl.relief.memory() = Relief::default();
            ctl.relief.started().clear();
            continue;
        }
        if let Err(e) = pass(&ctl).await {
            tracing::warn!("rebalancer pass: {}", e.message);
        }
    }
}

async fn pass(ctl: &Arc<Ctl>) -> Result<(), ApiError> {
    let policy = policy(ctl).await?;
    let hosts = ctl.hosts().await?;
    let (loads, mut headroom) = measured(ctl, &hosts);
    let in_flight = in_flight(ctl).await?;
    let now = now_ms();
    let (due, resting) = {
        let mut m = ctl.relief.memory();
        let due = m.due(&policy, &loads, in_flight, now);
        (due, resting(ctl, &m))
    };
    if due.is_empty() {
        return Ok(());
    }
    let full = Relief::full(&policy, &loads);
    let pass = Pass {
        headroom: &mut headroom,
        low: policy.low,
        resting: &resting,
    };
    for step in crate::placement::relief_steps(ctl, &due, pass, full).await? {
        match step {
            Step::Move(m) => start(ctl, &policy, &m, now).await,
            Step::Stuck(s) => {
                ctl.relief.memory().stuck(&policy, &s.host, now);
                let subject = format!("host/{}", s.host);
                ctl.events
                    .emit(
                        Severity::Warning,
                        "placement.relief_stuck",
                        &subject,
                        s.why(),
                    )
                    .await;
            }
        }
    }
    Ok(())
}

/// Starts move `m` the way its VM may move; says so either way.
async fn start(ctl: &Arc<Ctl>, policy: &ReliefPolicy, m: &Move, now: u64) {
    let subject = format!("host/{}", m.host);
    let vm = &m.decision.vm;
    match launch(ctl, m).await {
        Ok((way, op)) => {
            ctl.relief.memory().moved(policy, vm, &m.host, now);
            ctl.relief.started().push(op.clone());
            let msg = format!("{}; {way} (operation {op})", m.why());
            ctl.events
                .emit(Severity::Info, "placement.relieved", &subject, msg)
                .await;
        }
        Err(e) => {
            ctl.relief.memory().stuck(policy, &m.host, now);
            let msg = format!("{}, but the move could not start: {e}", m.why());
            ctl.events
                .emit(Severity::Warning, "placement.relief_failed", &subject, msg)
                .await;
        }
    }
}

/// Launches `m` as an operation: how it moves, and the operation's id.
async fn launch(ctl: &Arc<Ctl>, m: &Move) -> Result<(&'static str, String), String> {
    let name = &m.decision.vm;
    let to = m.decision.to.clone();
    let vm = ctl
        .vm(name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("VM {name} has no record"))?;
    let pair = match &vm.pair {
        Some(p) => ctl.pair(p).await.map_err(|e| e.to_string())?,
        None => None,
    };
    match (way_to_move(&vm, pair.as_ref()), pair) {
        (MoveWay::PairMigration { .. }, Some(p)) => {
            let hosts = crate::pairs::member_hosts(ctl, &p).await?;
            let mut targets = [None, None];
            targets[p.active.i()] = Some(to);
            let setup = Setup {
                members: p.members.clone(),
                hosts,
                active: p.active.i(),
                targets,
                switch_back: false,
            };
            let (op, _) = crate::pair_move::start(ctl, &p.name, setup)
                .await
                .map_err(|e| e.to_string())?;
            Ok(("the ACT moves the S1 way (its SBY takes over first)", op.id))
        }
        (_, pair) => {
            let tuning = match pair {
                Some(_) => pair_migration::standby_tuning(),
                None => Default::default(),
            };
            let op = crate::moves::launch(ctl, name, (&vm.host, &to), tuning)
                .await
                .map_err(|e| e.to_string())?;
            Ok(("live migration", op.id))
        }
    }
}

/// Where a host stands with the rebalancer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Standing {
    pub host: String,
    pub cpu: f64,
    pub mem: f64,
    /// Over the high mark since (ms since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub over_since_ms: Option<u64>,
    /// Relieved a moment ago: rests until (ms since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rests_until_ms: Option<u64>,
}

/// `duplex placement plan`: what a pass would do now if the rebalancer
/// were on, and where each host stands. Changes nothing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanView {
    pub policy: ReliefPolicy,
    pub now_ms: u64,
    /// Moves it started that still run.
    pub in_flight: usize,
    pub hosts: Vec<Standing>,
    pub steps: Vec<Step>,
}

pub async fn dry_run(ctl: &Ctl) -> Result<PlanView, ApiError> {
    let policy = policy(ctl).await?;
    let hosts = ctl.hosts().await?;
    let (loads, mut headroom) = measured(ctl, &hosts);
    let in_flight = in_flight(ctl).await?;
    let now = now_ms();
    let on = ReliefPolicy {
        enabled: true,
        ..policy.clone()
    };
    let mut memory = ctl.relief.memory().clone();
    let due = memory.due(&on, &loads, in_flight, now);
    let resting = resting(ctl, &memory);
    let full = Relief::full(&on, &loads);
    let pass = Pass {
        headroom: &mut headroom,
        low: on.low,
        resting: &resting,
    };
    let steps = crate::placement::relief_steps(ctl, &due, pass, full).await?;
    let hosts = loads
        .into_iter()
        .map(|l| Standing {
            over_since_ms: memory.over_since(&l.host),
            rests_until_ms: memory.host_rests_until(&l.host),
            host: l.host,
            cpu: l.cpu,
            mem: l.mem,
        })
        .collect();
    Ok(PlanView {
        policy,
        now_ms: now,
        in_flight,
        hosts,
        steps,
    })
}
