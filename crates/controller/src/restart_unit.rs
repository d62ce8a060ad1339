//! S3's restart control unit, the shell: every pass it looks for VMs whose
//! host reports a failure not acted on yet, reads the VM's restart record
//! from the external disk, lets `duplex_core::escalation` decide the phase
//! (`Record::on_failure`), stores the new record *before* acting (so a
//! controller killed midway never counts a failure twice, nor forgets
//! one), says so in an event, and has `restart_exec` carry the phase out.
//!
//! A VM a workflow is working on (its pair in a transient phase, or it is
//! claimed) waits: its failure is taken on a later pass.

use crate::ctl::Ctl;
use duplex_core::agent_api::VmFailure;
use duplex_core::escalation::record::{Failure, Outcome, Record};
use duplex_core::escalation::{self, Phase, Plan, Policy, Standing};
use duplex_core::model::{Pair, PairPhase, Severity, Vm};
use duplex_extdisk::Kind;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

const PERIOD: Duration = Duration::from_millis(250);

/// What the unit remembers between passes: failures already acted on (so
/// the external disk is not read for every report), and VMs whose phase
/// is being carried out.
#[derive(Default)]
pub struct Memory {
    handled: HashMap<String, String>,
    running: BTreeSet<String>,
}

pub async fn run(ctl: Arc<Ctl>) {
    loop {
        tokio::time::sleep(PERIOD).await;
        if !ctl.is_leader() {
            if let Ok(mut m) = ctl.restarts.lock() {
                m.handled.clear();
            }
            continue;
        }
        if let Err(e) = pass(&ctl).await {
            tracing::warn!("restart unit pass: {e}");
        }
    }
}

async fn pass(ctl: &Arc<Ctl>) -> Result<(), String> {
    // Most passes find nothing new in memory and read no store.
    let now = ctl.lock_observed().failures();
    if !now.iter().any(|(vm, id)| fresh(ctl, vm, id)) {
        return Ok(());
    }
    let vms = ctl.vms().await.map_err(|e| e.to_string())?;
    let pairs = ctl.pairs().await.map_err(|e| e.to_string())?;
    for vm in &vms {
        let Some(failure) = reported(ctl, vm) else {
            continue;
        };
        if !fresh(ctl, &vm.spec.name, &failure.id) || busy(ctl, vm, &pairs) {
            continue;
        }
        let pair = vm
            .pair
            .as_ref()
            .and_then(|p| pairs.iter().find(|x| &x.name == p));
        let standing = standing(ctl, &vm.spec.name, pair, &vms);
        if let Err(e) = act(ctl, vm, pair, &failure, standing).await {
            tracing::warn!(vm = %vm.spec.name, "restart unit: {e}");
        }
    }
    Ok(())
}

/// The failure the VM's host reports for it now, if any.
fn reported(ctl: &Ctl, vm: &Vm) -> Option<VmFailure> {
    let obs = ctl.lock_observed();
    obs.vm(&vm.host, &vm.spec.name)?.failure.clone()
}

/// Not acted on by this controller (the external disk has the last word).
fn fresh(ctl: &Ctl, vm: &str, id: &str) -> bool {
    let m = ctl.restarts.lock().unwrap_or_else(|p| p.into_inner());
    m.handled.get(vm).is_none_or(|h| h != id) && !m.running.contains(vm)
}

fn busy(ctl: &Ctl, vm: &Vm, pairs: &[Pair]) -> bool {
    let in_flow = vm
        .pair
        .as_ref()
        .and_then(|p| pairs.iter().find(|x| &x.name == p))
        .is_some_and(|p| p.phase != PairPhase::Ready || p.journal.is_some());
    in_flow || ctl.lock_busy().contains(&vm.spec.name)
}

/// The failing VM's place in its pair: ACT with an SBY standing by, ACT
/// without one (or a lone VM), or the SBY.
fn standing(ctl: &Ctl, vm: &str, pair: Option<&Pair>, vms: &[Vm]) -> Standing {
    let sby = pair.and_then(|p| vms.iter().find(|v| v.spec.name == p.sby()));
    let sby_role = sby.and_then(|v| ctl.lock_observed().member_view(&v.host, &v.spec.name).role);
    escalation::standing(
        pair.is_some(),
        pair.is_some_and(|p| p.sby() == vm),
        sby_role,
    )
}

async fn act(
    ctl: &Arc<Ctl>,
    vm: &Vm,
    pair: Option<&Pair>,
    failure: &VmFailure,
    standing: Standing,
) -> Result<(), String> {
    let name = vm.spec.name.clone();
    let record = load(ctl, &name).await?;
    let f = Failure {
        id: failure.id.clone(),
        cause: failure.cause,
        detail: failure.detail.clone(),
        host: vm.host.clone(),
    };
    let now = crate::events::now_ms();
    let (policy, _) = crate::restart_policy::effective(ctl, vm)
        .await
        .map_err(|e| e.to_string())?;
    let Some((plan, next)) = record.on_failure(&policy, &f, standing, now) else {
        remember(ctl, &name, &f.id);
        return Ok(());
    };
    store(ctl, &name, &next).await?;
    remember(ctl, &name, &f.id);
    announce(ctl, &name, &f, &plan).await;
    ctl.restarts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .running
        .insert(name.clone());
    let (ctl, vm, pair) = (ctl.clone(), vm.clone(), pair.cloned());
    tokio::spawn(async move {
        run_phases(&ctl, &vm, pair.as_ref(), &f, plan, standing, policy).await;
        ctl.restarts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .running
            .remove(&vm.spec.name);
    });
    Ok(())
}

/// Carries out `plan`; while a phase fails, the next wider one
/// (`Record::on_phase_failed`), stored and announced first, up to
/// autoheal: at most one run per phase.
async fn run_phases(
    ctl: &Arc<Ctl>,
    vm: &Vm,
    pair: Option<&Pair>,
    f: &Failure,
    mut plan: Plan,
    standing: Standing,
    policy: Policy,
) {
    let name = &vm.spec.name;
    for _ in Phase::ALL {
        let res = crate::restart_exec::carry_out(ctl, vm, pair, plan, standing).await;
        let failed = res.as_ref().err().cloned();
        conclude(ctl, name, f, plan, res).await;
        let Some(why) = failed else {
            return;
        };
        let now = crate::events::now_ms();
        let next = match load(ctl, name).await {
            Ok(r) => r.on_phase_failed(&policy, &f.id, &why, now),
            Err(e) => {
                tracing::warn!(vm = %name, "cannot escalate the failed phase: {e}");
                None
            }
        };
        let Some((next_plan, record)) = next else {
            return;
        };
        if let Err(e) = store(ctl, name, &record).await {
            tracing::warn!(vm = %name, "cannot escalate the failed phase: {e}");
            return;
        }
        plan = next_plan;
        announce_escalation(ctl, name, &plan, &why).await;
    }
}

fn remember(ctl: &Ctl, vm: &str, id: &str) {
    let mut m = ctl.restarts.lock().unwrap_or_else(|p| p.into_inner());
    m.handled.insert(vm.to_string(), id.to_string());
}

/// The VM's restart record; a damaged one is refused by the external disk
/// and the failure waits (with an error in the log) rather than being
/// counted from zero.
pub async fn load(ctl: &Ctl, vm: &str) -> Result<Record, String> {
    match ctl.extdisk.latest(vm, Kind::Counters).await {
        Ok(None) => Ok(Record::default()),
        Ok(Some((v, bytes))) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("restart record {vm} version {v} does not parse: {e}")),
        Err(e) => Err(e.to_string()),
    }
}

/// A deleted VM's restart record starts again from nothing (a new
/// version: the old ones stay on the external disk), so a VM created
/// again under its name does not inherit its counts.
pub async fn retire(ctl: &Ctl, vm: &str) -> Result<(), String> {
    let none = ctl.extdisk.newest_at(vm, Kind::Counters).await;
    match none.map_err(|e| e.to_string())? {
        Some(_) => store(ctl, vm, &Record::default()).await,
        None => Ok(()),
    }
}

async fn store(ctl: &Ctl, vm: &str, record: &Record) -> Result<(), String> {
    let bytes = serde_json::to_vec(record).map_err(|e| e.to_string())?;
    ctl.extdisk
        .put(vm, Kind::Counters, &bytes)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn announce(ctl: &Ctl, vm: &str, f: &Failure, plan: &Plan) {
    let how = match (plan.fast_path, plan.failover_first) {
        (true, _) => " (fast path: the SBY takes over, this VM is re-created on a spare host)",
        (false, true) => " (the SBY takes over first)",
        _ => "",
    };
    let msg = format!(
        "VM {vm} on {}: {} ({}); restart phase {}{how}",
        f.host,
        serde_json::to_value(f.cause)
            .unwrap_or_default()
            .as_str()
            .unwrap_or("?"),
        f.detail,
        plan.phase.label(),
    );
    ctl.events
        .emit(Severity::Warning, "vm.restart", &format!("vm/{vm}"), msg)
        .await;
}

async fn announce_escalation(ctl: &Ctl, vm: &str, plan: &Plan, why: &str) {
    let msg = format!(
        "VM {vm}: the phase before failed ({why}); restart phase {}",
        plan.phase.label()
    );
    ctl.events
        .emit(Severity::Warning, "vm.restart", &format!("vm/{vm}"), msg)
        .await;
}

async fn conclude(ctl: &Ctl, vm: &str, f: &Failure, plan: Plan, res: Result<String, String>) {
    let (severity, kind, message, ok) = match &res {
        Ok(m) => (Severity::Info, "vm.restarted", m.clone(), true),
        Err(e) => (Severity::Error, "vm.restart_failed", e.clone(), false),
    };
    let text = format!("VM {vm}: phase {}: {message}", plan.phase.label());
    ctl.events
        .emit(severity, kind, &format!("vm/{vm}"), text)
        .await;
    let outcome = Outcome {
        ok,
        message,
        at_ms: crate::events::now_ms(),
    };
    match load(ctl, vm).await {
        Ok(r) => {
            if let Err(e) = store(ctl, vm, &r.concluded(&f.id, outcome)).await {
                tracing::warn!(vm = %vm, "cannot note the restart's outcome: {e}");
            }
        }
        Err(e) => tracing::warn!(vm = %vm, "cannot note the restart's outcome: {e}"),
    }
}
