//! Carries out one restart phase the restart unit decided
//! (`restart_unit`), through the failed VM's agent and the pair
//! workflows that already exist:
//!
//! - PH0.5 / PH1.0 / PH2.0: the guest performs them (`restart_phase`);
//!   when the failed VM is the ACT with an SBY standing by, a switchover
//!   first hands the service to the SBY.
//! - PH2.5: a VM whose QEMU died is started again on its disk; a guest
//!   that already rebooted by itself is left to finish; any other is
//!   reset. A VM standing alone is given its current files (the last LAF
//!   backup) once up; a pair member gets its state from the ACT when the
//!   repair loop gives it its role back (a lost ACT's SBY takes over).
//! - PH3.0 / PH3.5: the VM is deleted on its host and the reconciler
//!   creates it again from its init info; its guest is given the newest
//!   intact LAF backup (PH3.0) or the REF set (PH3.5) before it gets a
//!   role (`service_data`).
//! - autoheal (and the fast path): a pair member is isolated; the failover
//!   pass promotes its peer if it was the ACT, and heals it: re-created as
//!   the new SBY on another host, a spare one first. A VM outside any pair
//!   is deleted and re-created on another host, a spare one first, from
//!   its init info and last LAF backup (`vm_heal`).
//!
//! Which data set each phase gives is `duplex_core::service_data::sources`.

use crate::ctl::Ctl;
use crate::service_data;
use crate::vm_heal;
use duplex_core::agent_api::VmState;
use duplex_core::escalation::{self, Phase, Plan, Reboot, Standing};
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
    standing: Standing,
) -> Result<String, String> {
    if plan.fast_path || plan.phase == Phase::Autoheal {
        return match pair {
            Some(p) => autoheal_member(ctl, vm, p).await,
            None => autoheal_alone(ctl, vm).await,
        };
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
        (None, Phase::Ph2_5) => reboot(ctl, vm, pair, standing).await?,
        (None, _) => recreate(ctl, vm, pair, plan.phase, standing).await?,
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

/// PH2.5; a VM standing alone is to be given its current files (the
/// last LAF backup) when its guest is up again, noted before the reboot
/// so no role is given before them.
async fn reboot(
    ctl: &Ctl,
    vm: &Vm,
    pair: Option<&Pair>,
    standing: Standing,
) -> Result<String, String> {
    let name = &vm.spec.name;
    let info = ctl.lock_observed().vm(&vm.host, name).cloned();
    let a = ctl.vm_agent(vm).await?;
    let (dead, rebooted) = info.map_or((false, false), |i| {
        (i.state == VmState::Crashed, i.reset_age_ms.is_some())
    });
    let how = escalation::reboot(dead, rebooted);
    let role = ctl.lock_observed().member_view(&vm.host, name).role;
    let reload = if escalation::reloads(how, role) {
        let (chosen, said) = data_for(ctl, vm, pair, Phase::Ph2_5, standing).await?;
        if chosen.is_some() {
            service_data::note_restore(ctl, name, chosen).await?;
        }
        said
    } else {
        "it has its role again, and its state from its peer".to_string()
    };
    let done = match how {
        Reboot::StartQemu => a
            .restart(name)
            .await
            .map(|_| format!("QEMU of {name} started again on {} on its disk", vm.host)),
        Reboot::LetItBoot => Ok(format!(
            "the guest of {name} rebooted by itself; it boots on {}",
            vm.host
        )),
        Reboot::Reset => a
            .reset(name)
            .await
            .map(|_| format!("{name} reset on {}: its guest OS boots again", vm.host)),
    };
    match done {
        Ok(m) => Ok(format!("{m}; {reload}")),
        Err(e) => {
            service_data::note_restore(ctl, name, None).await?;
            Err(e.to_string())
        }
    }
}

/// PH3.0 / PH3.5: the data set is chosen (and read, so a damaged one is
/// passed over) before the VM is deleted, and noted on its record.
async fn recreate(
    ctl: &Ctl,
    vm: &Vm,
    pair: Option<&Pair>,
    phase: Phase,
    standing: Standing,
) -> Result<String, String> {
    let name = &vm.spec.name;
    let from = init_for(ctl, vm).await?;
    let (chosen, said) = data_for(ctl, vm, pair, phase, standing).await?;
    service_data::note_restore(ctl, name, chosen).await?;
    let deleted = match ctl.vm_agent(vm).await {
        Ok(a) => a.delete(name).await.map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    if let Err(e) = deleted {
        service_data::note_restore(ctl, name, None).await?;
        return Err(format!("cannot delete {name} on {}: {e}", vm.host));
    }
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
    standing: Standing,
) -> Result<(Option<RestoreRef>, String), String> {
    let mut notes = Vec::new();
    let sources = duplex_core::service_data::sources(phase, standing);
    if sources.is_empty() {
        return Ok((None, "its pair's ACT gives it the state".into()));
    }
    for &kind in sources {
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

/// Autoheal of a pair member: it is isolated; the failover pass promotes
/// its peer if it was the ACT and re-creates it as the new SBY on another
/// host (`pair_failover`).
async fn autoheal_member(ctl: &Ctl, vm: &Vm, pair: &Pair) -> Result<String, String> {
    let name = &vm.spec.name;
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

/// Autoheal of a VM outside any pair: deleted where it runs, then
/// re-created from its init info on another host (a spare one first) and
/// given its last LAF backup (else its REF set). Its host must answer:
/// with no peer to fence it against, a VM that may still run is never
/// started twice.
async fn autoheal_alone(ctl: &Ctl, vm: &Vm) -> Result<String, String> {
    let name = &vm.spec.name;
    let on = vm_heal::target(ctl, vm, &[]).await?;
    let from = init_for(ctl, vm).await?;
    let (chosen, said) = data_for(ctl, vm, None, Phase::Autoheal, Standing::Alone).await?;
    // The reconciler must not start it on its old host meanwhile.
    let _claim = ctl.claim_vms(std::slice::from_ref(name))?;
    match vm_heal::remove(ctl, vm, None).await? {
        vm_heal::Removed::HostDown => {
            return Err(format!(
                "{} does not answer: {name} may still run there, so it is not started elsewhere",
                vm.host
            ))
        }
        vm_heal::Removed::NotThere | vm_heal::Removed::Deleted => {}
    }
    service_data::note_restore(ctl, name, chosen).await?;
    vm_heal::use_spare(ctl, &on).await?;
    vm_heal::rehome(ctl, name, &on).await?;
    ctl.kick.notify_one();
    Ok(format!(
        "{name} deleted on {}; the reconciler creates it on {on} {from}; {said}",
        vm.host
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
