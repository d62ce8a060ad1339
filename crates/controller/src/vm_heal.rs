//! Re-creating a VM on other hardware, the steps a pair's heal
//! (`pair_failover`) and the autoheal of a VM outside a pair
//! (`restart_exec`) share: where it goes (a live spare host first, else
//! placement's choice), deleting it first where a live host still runs
//! it, taking a spare host into use, and waiting for the new guest.

use crate::ctl::Ctl;
use crate::ops::OpHandle;
use crate::repo::HOSTS;
use duplex_core::model::place::{spare_for, HealCandidate};
use duplex_core::model::{Host, HostState, Severity, Vm, VmStatus};
use std::time::Duration;
use tokio::time::Instant;

/// How long a re-created VM gets to boot before a heal that waits for it
/// fails.
const BOOT_WAIT: Duration = Duration::from_secs(180);
/// How long a live host gets to report that it deleted the VM.
const GONE_WAIT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(250);

/// Where `vm` is re-created: a live spare host with room first, else
/// placement's choice; never a host in `avoid` nor its own.
pub async fn target(ctl: &Ctl, vm: &Vm, avoid: &[String]) -> Result<String, String> {
    let vms = ctl.vms().await.map_err(|e| e.to_string())?;
    let hosts = ctl.hosts().await.map_err(|e| e.to_string())?;
    let mut avoid = avoid.to_vec();
    avoid.push(vm.host.clone());
    let used = |h: &str| -> u64 {
        vms.iter()
            .filter(|v| v.host == h)
            .map(|v| u64::from(v.spec.memory_mib))
            .sum()
    };
    let candidates: Vec<HealCandidate> = hosts
        .iter()
        .map(|h| HealCandidate {
            name: &h.name,
            state: h.state,
            live: ctl.lock_observed().live(h, &ctl.cfg.liveness),
            free_mib: h.capacity.memory_mib.saturating_sub(used(&h.name)),
        })
        .collect();
    if let Some(s) = spare_for(&candidates, u64::from(vm.spec.memory_mib), &avoid) {
        return Ok(s.to_string());
    }
    crate::placement::decide_avoiding(ctl, &vm.spec.name, &avoid)
        .await
        .map(|d| d.to)
        .map_err(|e| format!("no host for {}: {}", vm.spec.name, e.message))
}

/// What deleting a VM before re-creating it elsewhere found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// Its host no longer reports it.
    NotThere,
    /// Its host is not live: nothing could be deleted there.
    HostDown,
    /// Deleted, and its host reported it gone.
    Deleted,
}

/// Deletes `vm` where its host still runs it, and waits for that host's
/// report without it (a copy left there would be adopted back).
pub async fn remove(ctl: &Ctl, vm: &Vm, op: Option<&OpHandle>) -> Result<Removed, String> {
    let name = &vm.spec.name;
    if !ctl.lock_observed().vm_names(&vm.host).contains(name) {
        return Ok(Removed::NotThere);
    }
    let hosts = ctl.hosts().await.map_err(|e| e.to_string())?;
    let live = hosts
        .iter()
        .any(|h| h.name == vm.host && ctl.lock_observed().live(h, &ctl.cfg.liveness));
    if !live {
        return Ok(Removed::HostDown);
    }
    if let Some(op) = op {
        op.progress(format!("deleting {name} on {} first", vm.host))
            .await;
    }
    ctl.vm_agent(vm)
        .await?
        .delete(name)
        .await
        .map_err(|e| format!("cannot delete {name} on {}: {e}", vm.host))?;
    let deadline = Instant::now() + GONE_WAIT;
    while ctl.lock_observed().vm_names(&vm.host).contains(name) {
        if Instant::now() > deadline {
            return Err(format!(
                "{} still reports {name} {} s after deleting it",
                vm.host,
                GONE_WAIT.as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(Removed::Deleted)
}

/// A spare host that autoheal uses takes VMs from now on.
pub async fn use_spare(ctl: &Ctl, host: &str) -> Result<(), String> {
    let mut was_spare = false;
    ctl.repo
        .update::<Host, std::convert::Infallible, _>(&format!("{HOSTS}{host}"), |h| {
            was_spare = h.state == HostState::Spare;
            if was_spare {
                h.state = HostState::Ready;
            }
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or_else(|never| match never {});
    if was_spare {
        let msg = format!("spare host {host} taken into use by autoheal: ready");
        ctl.events
            .emit(
                Severity::Info,
                "host.spare_used",
                &format!("host/{host}"),
                msg,
            )
            .await;
    }
    Ok(())
}

/// Moves `vm`'s record to `on` (the reconciler creates it there).
pub async fn rehome(ctl: &Ctl, vm: &str, on: &str) -> Result<Vm, String> {
    ctl.repo
        .update::<Vm, std::convert::Infallible, _>(&format!("{}{vm}", crate::repo::VMS), |v| {
            v.host = on.to_string();
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|never| match never {})
}

/// Waits until the re-created VM's guest answers on its new host.
pub async fn wait_running(ctl: &Ctl, vm: &Vm) -> Result<(), String> {
    let deadline = Instant::now() + BOOT_WAIT;
    loop {
        let hosts = ctl.hosts().await.map_err(|e| e.to_string())?;
        let current = ctl.vm(&vm.spec.name).await.map_err(|e| e.to_string())?;
        let Some(current) = current else {
            return Err(format!("{} was deleted", vm.spec.name));
        };
        let listing = crate::listing::Listing::new(&[], &hosts);
        if ctl.vm_view(current, &listing, false).status == VmStatus::Running {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} did not boot on {} within {} s",
                vm.spec.name,
                vm.host,
                BOOT_WAIT.as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}
