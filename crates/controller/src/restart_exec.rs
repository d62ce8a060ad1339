//! Carries out one restart phase the restart unit decided
//! (`restart_unit`), through the failed VM's agent and the pair
//! workflows that already exist:
//!
//! - PH0.5 / PH1.0 / PH2.0: the guest performs them (`restart_phase`);
//!   when the failed VM is the ACT with an SBY standing by, a switchover
//!   first hands the service to the SBY.
//! - PH2.5: a VM whose QEMU died is started again on its disk; a guest
//!   that already rebooted by itself is left to finish; any other is
//!   reset. The repair loop then gives it its role back (a lost ACT's SBY
//!   takes over there).
//! - PH3.0 / PH3.5: the VM is deleted on its host and the reconciler
//!   creates it again from its image and user data; its guest is given
//!   the newest intact LAF backup (PH3.0) or the REF set (PH3.5) before
//!   it gets a role (`service_data`).
//! - autoheal (and the fast path): the VM is isolated; the failover pass
//!   promotes its peer if it was the ACT, and heals it: re-created as the
//!   new SBY on another host, a spare one first.

use crate::ctl::Ctl;
use crate::service_data;
use duplex_core::agent_api::VmState;
use duplex_core::escalation::{self, Phase, Plan, Reboot};
use duplex_core::guest_proto::{Op, RestartPhase};
use duplex_core::model::{OpState, Operation, Pair, Vm};
use duplex_core::service_data::RestoreRef;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long the switchover before an ACT's in-guest phase may take.
const SWITCHOVER_WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

pub async fn carry_out(
    ctl: &Arc<Ctl>,
    vm: &Vm,
    pair: Option<&Pair>,
    plan: Plan,
) -> Result<String, String> {
    if plan.fast_path || plan.phase == Phase::Autoheal {
        return autoheal(ctl, vm, pair).await;
    }
    let mut said = Vec::new();
    if let (Some(p), true, Some(_)) = (pair, plan.failover_first, plan.phase.in_guest()) {
        said.push(match switch_over(ctl, p).await {
            Ok(m) => m,
            Err(e) => format!("the switchover first failed ({e}); restarting anyway"),
        });
    }
    let done = match (plan.phase.in_guest(), plan.phase) {
        (Some(ph), _) => in_guest(ctl, vm, ph).await?,
        (None, Phase::Ph2_5) => reboot(ctl, vm).await?,
        (None, _) => recreate(ctl, vm, pair, plan.phase).await?,
    };
    said.push(done);
    Ok(said.join("; "))
}

async fn in_guest(ctl: &Ctl, vm: &Vm, phase: RestartPhase) -> Result<String, String> {
    let name = &vm.spec.name;
    ctl.vm_agent(vm)
        .await?
        .guest(name, &Op::RestartPhase { phase })
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!("the guest of {name} performed it"))
}

async fn reboot(ctl: &Ctl, vm: &Vm) -> Result<String, String> {
    let name = &vm.spec.name;
    let info = ctl.lock_observed().vm(&vm.host, name).cloned();
    let a = ctl.vm_agent(vm).await?;
    let (dead, rebooted) = info.map_or((false, false), |i| {
        (i.state == VmState::Crashed, i.reset_age_ms.is_some())
    });
    match escalation::reboot(dead, rebooted) {
        Reboot::StartQemu => {
            a.restart(name).await.map_err(|e| e.to_string())?;
            Ok(format!(
                "QEMU of {name} started again on {} on its disk",
                vm.host
            ))
        }
        Reboot::LetItBoot => Ok(format!(
            "the guest of {name} rebooted by itself; it boots on {}",
            vm.host
        )),
        Reboot::Reset => {
            a.reset(name).await.map_err(|e| e.to_string())?;
            Ok(format!(
                "{name} reset on {}: its guest OS boots again",
                vm.host
            ))
        }
    }
}

/// PH3.0 / PH3.5: the data set is chosen (and read, so a damaged one is
/// passed over) before the VM is deleted, and noted on its record.
async fn recreate(ctl: &Ctl, vm: &Vm, pair: Option<&Pair>, phase: Phase) -> Result<String, String> {
    let name = &vm.spec.name;
    let from = init_for(ctl, vm).await?;
    let (chosen, said) = data_for(ctl, vm, pair, phase).await?;
    service_data::note_restore(ctl, name, chosen).await?;
    ctl.vm_agent(vm)
        .await?
        .delete(name)
        .await
        .map_err(|e| e.to_string())?;
    ctl.kick.notify_one();
    Ok(format!(
        "{name} deleted on {}; the reconciler creates it again there {from}; {said}",
        vm.host
    ))
}

/// The spec the VM is re-created from: its init info on the external disk
/// (put back on its record if the record differs); its record's spec if
/// no intact version is there.
async fn init_for(ctl: &Ctl, vm: &Vm) -> Result<String, String> {
    let name = &vm.spec.name;
    let (found, passed_over) = service_data::init_info(ctl, name).await?;
    let passed = passed_over
        .iter()
        .map(|e| format!(" (passed over: {e})"))
        .collect::<String>();
    let Some((v, info)) = found else {
        return Ok(format!(
            "from its record (no intact init info on the external disk){passed}"
        ));
    };
    if info.spec == vm.spec {
        return Ok(format!(
            "from its init info v{v} on the external disk{passed}"
        ));
    }
    ctl.repo
        .update::<Vm, std::convert::Infallible, _>(&format!("{}{name}", crate::repo::VMS), |r| {
            r.spec = info.spec.clone();
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?
        .ok();
    Ok(format!(
        "from its init info v{v} on the external disk, which its record no longer matched{passed}"
    ))
}

/// PH3.0 starts from the newest LAF backup (the REF set if there is
/// none), PH3.5 from the REF set.
async fn data_for(
    ctl: &Ctl,
    vm: &Vm,
    pair: Option<&Pair>,
    phase: Phase,
) -> Result<(Option<RestoreRef>, String), String> {
    let mut notes = Vec::new();
    for &kind in duplex_core::service_data::sources(phase) {
        let (best, passed_over) = service_data::choose(ctl, vm, pair, kind).await?;
        notes.extend(passed_over.into_iter().map(|e| format!("passed over: {e}")));
        if let Some((r, _)) = best {
            notes.insert(0, format!("its guest is given {r}"));
            return Ok((Some(r), notes.join("; ")));
        }
        notes.push(format!("no intact {} stored", kind.label()));
    }
    notes.push("it starts with no service data".into());
    Ok((None, notes.join("; ")))
}

async fn autoheal(ctl: &Ctl, vm: &Vm, pair: Option<&Pair>) -> Result<String, String> {
    let name = &vm.spec.name;
    let Some(pair) = pair else {
        return Err(format!(
            "autoheal of {name}, a VM outside any pair, is not built yet"
        ));
    };
    ctl.vm_agent(vm)
        .await?
        .isolate(name)
        .await
        .map_err(|e| e.to_string())?;
    ctl.urgent.notify_one();
    Ok(format!(
        "{name} isolated on {}; pair {} fails over to its peer if needed and re-creates {name} on another host, a spare one first",
        vm.host, pair.name
    ))
}

/// Hands the pair's service to its SBY and waits for the switchover to end.
async fn switch_over(ctl: &Arc<Ctl>, pair: &Pair) -> Result<String, String> {
    let (op, _) = crate::pairs::start_switchover(ctl, &pair.name)
        .await
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + SWITCHOVER_WAIT;
    let key = format!("{}{}", crate::repo::OPS, op.id);
    loop {
        tokio::time::sleep(POLL).await;
        let now = ctl
            .repo
            .get::<Operation>(&key)
            .await
            .map_err(|e| e.to_string())?
            .map(|r| r.value);
        match now {
            Some(o) if o.state == OpState::Succeeded => {
                return Ok(format!(
                    "switchover {} handed the service to the SBY",
                    op.id
                ))
            }
            Some(o) if o.state == OpState::Failed => {
                return Err(o.error.unwrap_or_else(|| "failed".into()))
            }
            _ if Instant::now() > deadline => {
                return Err(format!(
                    "switchover {} not done within {} s",
                    op.id,
                    SWITCHOVER_WAIT.as_secs()
                ))
            }
            _ => {}
        }
    }
}
