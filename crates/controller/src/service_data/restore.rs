//! After PH3.0 / PH3.5: choosing the data set, noting it on the VM's
//! record, and giving it to the re-created guest before it has a role.

use super::sets::{disk_kind, read};
use crate::ctl::Ctl;
use duplex_core::guest_proto::{Heartbeat, Op};
use duplex_core::model::{Pair, Severity, Vm};
use duplex_core::role::Role;
use duplex_core::service_data::{self as sd, DataKind, RestoreRef, RestoreStep};
use std::sync::atomic::Ordering;

/// The set a re-created `vm` is to start from: the newest intact version
/// of `kind` stored for it or for its pair's other member (LAF: whichever
/// is newer; REF: its own first). Damaged versions passed over are named
/// in the second part.
pub async fn choose(
    ctl: &Ctl,
    vm: &Vm,
    pair: Option<&Pair>,
    kind: DataKind,
) -> Result<(Option<(RestoreRef, u64)>, Vec<String>), String> {
    let mut owners = vec![vm.spec.name.clone()];
    if let Some(p) = pair {
        owners.extend(p.members.iter().filter(|m| **m != vm.spec.name).cloned());
    }
    let not_boot = boot_id(ctl, vm);
    let mut best: Option<(RestoreRef, u64)> = None;
    let mut passed_over = Vec::new();
    for owner in owners {
        let versions = ctl
            .extdisk
            .versions(&owner, disk_kind(kind))
            .await
            .map_err(|e| e.to_string())?;
        for version in versions.into_iter().rev() {
            let r = RestoreRef {
                kind,
                vm: owner.clone(),
                version,
                noted_ms: crate::events::now_ms(),
                not_boot: not_boot.clone(),
            };
            match read(ctl, &r).await {
                Ok(d) => {
                    if sd::better(kind, best.as_ref().map(|(_, t)| *t), d.taken_ms) {
                        best = Some((r, d.taken_ms));
                    }
                    break;
                }
                Err(e) => passed_over.push(e),
            }
        }
    }
    Ok((best, passed_over))
}

/// The boot id in the last heartbeat `vm`'s guest sent, fresh or not.
fn boot_id(ctl: &Ctl, vm: &Vm) -> Option<String> {
    let obs = ctl.lock_observed();
    let hb = obs.vm(&vm.host, &vm.spec.name)?.heartbeat.clone()?;
    serde_json::from_value::<Heartbeat>(hb).ok()?.boot_id
}

/// Notes on `vm`'s record the set its re-created guest is to be given.
pub async fn note_restore(ctl: &Ctl, vm: &str, r: Option<RestoreRef>) -> Result<(), String> {
    ctl.repo
        .update::<Vm, std::convert::Infallible, _>(&format!("{}{vm}", crate::repo::VMS), |v| {
            v.restore = r.clone();
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?
        .ok();
    ctl.restore_due.store(true, Ordering::SeqCst);
    Ok(())
}

/// Pages the set into the guest, which must have no role yet.
async fn give(ctl: &Ctl, vm: &Vm, r: &RestoreRef) -> Result<usize, String> {
    let data = read(ctl, r).await?;
    let agent = ctl.vm_agent(vm).await?;
    let pages = sd::pages(&data.entries).map_err(|e| format!("{r}: {e}"))?;
    for (i, entries) in pages.into_iter().enumerate() {
        let op = Op::Restore {
            entries,
            first: i == 0,
            source: r.to_string(),
        };
        agent
            .guest(&vm.spec.name, &op)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(data.entries.len())
}

/// Gives every VM waiting for its data, whose guest is up with no role,
/// its set (`sd::restore_step` decides); true if some VM still waits.
pub(super) async fn restore_pass(ctl: &Ctl) -> Result<bool, String> {
    let vms = ctl.vms().await.map_err(|e| e.to_string())?;
    let mut waiting = false;
    for vm in &vms {
        let Some(r) = vm.restore.clone() else {
            continue;
        };
        let name = &vm.spec.name;
        let role = ctl.lock_observed().member_view(&vm.host, name).role;
        let booted = r.booted_since(boot_id(ctl, vm).as_deref());
        let step = |failed| {
            let now = crate::events::now_ms();
            sd::restore_step(role, booted, r.noted_ms, now, failed)
        };
        let (severity, kind, msg) = match step(false) {
            RestoreStep::Wait => {
                waiting = true;
                continue;
            }
            RestoreStep::GiveUp => (
                Severity::Error,
                "vm.restore_failed",
                given_up(name, role, &r),
            ),
            RestoreStep::Give => match give(ctl, vm, &r).await {
                Ok(keys) => (
                    Severity::Info,
                    "vm.restored",
                    format!("{name} starts from {r}: {keys} keys given to its guest"),
                ),
                Err(e) if step(true) == RestoreStep::GiveUp => (
                    Severity::Error,
                    "vm.restore_failed",
                    format!("{name} could not be given {r}: {e}; it goes on without it"),
                ),
                Err(e) => {
                    tracing::debug!(vm = %name, "restoring {r}: {e}; again");
                    waiting = true;
                    continue;
                }
            },
        };
        ctl.events
            .emit(severity, kind, &format!("vm/{name}"), msg)
            .await;
        note_restore(ctl, name, None).await?;
    }
    Ok(waiting)
}

/// Why a VM went on without its set.
fn given_up(name: &str, role: Option<Role>, r: &RestoreRef) -> String {
    match role {
        Some(other) => format!("{name} is {other:?}: {r} is not given (its pair's state is newer)"),
        None => format!("{name}'s guest did not come up for {r}; it goes on without it"),
    }
}
