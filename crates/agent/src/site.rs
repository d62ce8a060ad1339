//! S5 on a host: a VM replicated into another site. Where the VM does not
//! run, its element stands in for it (a tap on the site's bridge, the site
//! buffer answering ARP and keeping what is sent to the VM). A site switch
//! is carried out by the controller in three orders to two agents:
//!
//! ```text
//!   active side   handoff: buffer from now on, let QEMU take what the
//!                 element already passed, one last checkpoint with the VM
//!                 left paused, wait until the replica applied it
//!   paused side   activate (replica.rs): QEMU starts on the stand-in's
//!                 element from that state; the buffer drains into it first
//!   old active    standby: QEMU stops, its element (still buffering)
//!                 becomes the stand-in of a new, empty replica
//! ```
//!
//! A handoff that fails, or whose replica cannot run the VM, is undone with
//! `resume`: the VM runs on where it was and takes its own buffer.

use crate::host::Host;
use crate::protect::{self, Order};
use crate::AgentError;
use duplex_core::agent_api::{ReplicaInfo, VmState};
use duplex_core::site::{BufferMode, HandoffInfo, SiteBufferStatus};
use duplex_net::element::ElementHandle;
use duplex_net::txbuf::TxBuffer;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long QEMU gets to take the frames the element passed before the
/// buffering began (they are then in the guest's RAM and so in the last
/// checkpoint).
const QUIESCE: Duration = Duration::from_millis(50);
/// Longest a handoff may take (the last checkpoint crosses the WAN).
pub const HANDOFF_TIMEOUT: Duration = Duration::from_secs(20);

/// An element with no VM behind it on this host, buffering for the VM.
pub struct StandIn {
    pub element: ElementHandle,
    /// The transmit buffer stage inside it (the VM's once it launches).
    pub txbuf: Arc<Mutex<TxBuffer>>,
}

/// The active side's part of a switch: answers once the replica holds
/// exactly the paused VM's state. On failure the VM runs on here.
pub async fn handoff(host: &Arc<Host>, name: &str) -> Result<HandoffInfo, AgentError> {
    let vm = host.get(name)?;
    if vm.status().state != VmState::Running {
        return Err(AgentError::Conflict(format!(
            "VM `{name}` is not running here: nothing to hand off"
        )));
    }
    if protect::handed_off(&vm).is_some() {
        return Err(AgentError::Conflict(format!(
            "VM `{name}` was handed off already: it is paused here (resume it or put it on standby)"
        )));
    }
    let t0 = Instant::now();
    set_buffer(&vm, BufferMode::Buffer).await?;
    tokio::time::sleep(QUIESCE).await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let outcome = match protect::order(&vm, Order::Handoff(tx)).await {
        Ok(()) => match tokio::time::timeout(HANDOFF_TIMEOUT, rx).await {
            Ok(Ok(epoch)) => Ok(epoch),
            Ok(Err(_)) => Err("the epochs stopped".to_string()),
            Err(_) => Err(format!(
                "the replica did not apply the last checkpoint within {} s",
                HANDOFF_TIMEOUT.as_secs()
            )),
        },
        Err(e) => Err(e.to_string()),
    };
    match outcome {
        Ok(epoch) => {
            // Paused on purpose: its silence is not a failure.
            vm.update(|s| s.state = VmState::Paused);
            let buffer = buffer_status(&vm).await;
            tracing::info!(vm = %name, epoch, ms = t0.elapsed().as_millis() as u64, "S5 handoff done: the VM is paused here, its replica holds its state");
            Ok(HandoffInfo {
                epoch,
                pause_ms: t0.elapsed().as_millis() as u64,
                buffer,
            })
        }
        Err(e) => {
            resume(host, name).await?;
            Err(AgentError::Unavailable(format!(
                "handing VM `{name}` off failed ({e}); it runs on here"
            )))
        }
    }
}

/// Undoes a handoff: the VM runs on here and takes its buffer first.
pub async fn resume(host: &Arc<Host>, name: &str) -> Result<SiteBufferStatus, AgentError> {
    let vm = host.get(name)?;
    let _ = protect::order(&vm, Order::CancelHandoff).await;
    if let Some(qmp) = vm.qmp() {
        duplex_qemu::checkpoint::resume(&qmp)
            .await
            .map_err(|e| AgentError::Unavailable(format!("resuming VM `{name}`: {e}")))?;
    }
    // Running again; its guest's silence counts from now.
    vm.update(|s| {
        s.state = VmState::Running;
        if let Some((at, _)) = s.heartbeat.as_mut() {
            *at = Instant::now();
        }
    });
    set_buffer(&vm, BufferMode::Drain).await?;
    tracing::info!(vm = %name, "S5: the VM runs on here");
    Ok(buffer_status(&vm).await.unwrap_or_default())
}

/// The old active side once the other runs the VM: QEMU stops, the
/// element keeps buffering as the stand-in of a new replica holding the
/// state the VM left with. Refused unless the VM was handed off.
pub async fn standby(host: &Arc<Host>, name: &str) -> Result<ReplicaInfo, AgentError> {
    let vm = host.get(name)?;
    let txbuf = vm
        .txbuf()
        .ok_or_else(|| AgentError::Conflict(format!("VM `{name}` is not replicated")))?;
    if protect::handed_off(&vm).is_none() {
        return Err(AgentError::Conflict(format!(
            "VM `{name}` was not handed off: it runs here (hand it off first)"
        )));
    }
    let Some(rt) = vm.rt.lock().await.take() else {
        return Err(AgentError::Conflict(format!(
            "VM `{name}` has no running QEMU here"
        )));
    };
    rt.element.site_buffer(BufferMode::Buffer);
    rt.qemu.stop().await;
    let kept = keep_state(&vm);
    let spec = vm.spec.clone();
    host.retire(&vm, |_| {}).await;
    let standin = StandIn {
        element: rt.element,
        txbuf,
    };
    let info = crate::replica::create_with(host, spec, Some(standin), kept)?;
    tracing::info!(vm = %name, "S5: the VM runs in the other site; its element buffers here");
    Ok(info)
}

/// What the VM left here with, if it was handed off whole: its RAM file
/// (moved aside before the VM is retired, which would remove it), the
/// device state of the last checkpoint, that checkpoint's epoch. QEMU has
/// exited; nothing ran since that checkpoint.
fn keep_state(vm: &crate::vm::Vm) -> Option<crate::replica::Kept> {
    let epoch = protect::handed_off(vm)?;
    let ram = vm.ram_file.as_ref()?;
    let device_state = std::fs::read(vm.paths.dir.join(protect::STATE_FILE)).ok()?;
    let aside = ram.with_extension("kept");
    std::fs::rename(ram, &aside).ok()?;
    Some(crate::replica::Kept {
        ram: aside,
        device_state,
        epoch,
    })
}

async fn set_buffer(vm: &crate::vm::Vm, mode: BufferMode) -> Result<(), AgentError> {
    match vm.rt.lock().await.as_ref() {
        Some(rt) => {
            rt.element.site_buffer(mode);
            Ok(())
        }
        None => Err(AgentError::Conflict(format!(
            "VM `{}` has no network element here",
            vm.spec.name
        ))),
    }
}

/// What the VM's element buffers (`None` without an element).
pub async fn buffer_status(vm: &crate::vm::Vm) -> Option<SiteBufferStatus> {
    vm.rt
        .lock()
        .await
        .as_ref()
        .map(|rt| rt.element.site_buffer_status())
}
