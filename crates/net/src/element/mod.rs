//! One VM's network element: QEMU's netdev stream on one side, the host tap
//! on the other, the pipeline in between (counting, isolation while the
//! host is fenced, extra stages, the handover). QEMU connects to the
//! element's unix socket (it may reconnect, e.g. the destination QEMU of a
//! migration).
//!
//! The data path is one thread per VM (`io_loop`), waiting in poll(2) and
//! moving frames in batches from buffers it owns; this handle is how the
//! agent reads its counters and gives it orders.

mod io_loop;

use crate::counters::{CountStage, Counters};
use crate::handover::{Handover, HandoverStage};
use crate::isolate::{IsolateStage, Isolation};
use crate::site_buffer::{SiteBuffer, SiteBufferStage};
use crate::stage::{Direction, Pipeline, Stage};
use crate::tap::Tap;
use duplex_core::agent_api::{
    HandoverOrder, HandoverStatus, HeldCount, TrafficReport, HELD_HANDOVER, HELD_SITE,
};
use duplex_core::mac::Mac;
use duplex_core::site::{BufferMode, SiteBufferStatus};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

/// Frames injected (announces) queued before new ones are dropped.
const INJECT_QUEUE: usize = 1024;

/// The element's state the data path and its handle share.
pub struct Parts {
    pub counters: Arc<Mutex<Counters>>,
    pub pipeline: Arc<Mutex<Pipeline>>,
    pub handover: Arc<Mutex<Handover>>,
    pub site: Arc<Mutex<SiteBuffer>>,
    pub isolation: Isolation,
}

/// The pipeline of a VM whose MAC is `mac` and address `ip`: counting,
/// isolation, the switch's guard, `extra`, the site buffer, the handover
/// last.
pub fn parts(mac: Mac, ip: Ipv4Addr, extra: Vec<Box<dyn Stage>>) -> Parts {
    let counters = Arc::new(Mutex::new(Counters::default()));
    let handover = Arc::new(Mutex::new(Handover::new(mac)));
    let site = Arc::new(Mutex::new(SiteBuffer::new(mac, ip)));
    let isolation = Isolation::default();
    let mut stages: Vec<Box<dyn Stage>> = vec![
        Box::new(CountStage(counters.clone())),
        Box::new(IsolateStage(isolation.clone())),
        Box::new(crate::switch_proto::GuardStage),
    ];
    stages.extend(extra);
    stages.push(Box::new(SiteBufferStage::new(site.clone())));
    stages.push(Box::new(HandoverStage(handover.clone())));
    Parts {
        counters,
        pipeline: Arc::new(Mutex::new(Pipeline::new(stages))),
        handover,
        site,
        isolation,
    }
}

/// What the handle tells the data path's thread.
struct Control {
    stop: AtomicBool,
    /// An eventfd: written to wake the thread (an injected frame, an order
    /// whose frames may go at once, stop).
    wake: OwnedFd,
    /// A listener to accept QEMU on from now on.
    relisten: Mutex<Option<std::os::unix::net::UnixListener>>,
}

impl Control {
    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: write(2) of 8 bytes we own to our eventfd; a full counter
        // (EAGAIN) still leaves it readable, which is all a wake needs.
        unsafe {
            libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }
}

pub struct ElementHandle {
    vm: String,
    parts: Parts,
    inject: mpsc::SyncSender<(Direction, Vec<u8>)>,
    control: Arc<Control>,
    ended: Option<tokio::sync::oneshot::Receiver<()>>,
    pub tap_name: String,
}

impl ElementHandle {
    pub fn report(&self) -> TrafficReport {
        let drops = self
            .parts
            .pipeline
            .lock()
            .map(|p| p.drops.clone())
            .unwrap_or_default();
        let mut r = match self.parts.counters.lock() {
            Ok(mut c) => c.report(&self.vm, &drops, std::time::Instant::now()),
            Err(_) => TrafficReport::default(),
        };
        let held = [
            (HELD_HANDOVER, self.handover_status().holding),
            (HELD_SITE, self.site_buffer_status().buffered),
        ];
        r.held
            .extend(held.into_iter().map(|(stage, frames)| HeldCount {
                stage: stage.to_string(),
                frames,
            }));
        r
    }

    /// Sends a frame as if it came from `dir`'s source (e.g. an announce).
    pub fn inject(&self, dir: Direction, frame: Vec<u8>) {
        if self.inject.try_send((dir, frame)).is_err() {
            if let Ok(mut p) = self.parts.pipeline.lock() {
                p.count_drop("inject queue full");
            }
        }
        self.control.wake();
    }

    /// Carries out a handover order (see [`crate::handover`]); frames it
    /// lets go leave at once.
    pub fn handover(&self, order: HandoverOrder) -> HandoverStatus {
        let status = match self.parts.handover.lock() {
            Ok(mut h) => {
                h.order(order, std::time::Instant::now());
                h.status()
            }
            Err(p) => p.into_inner().status(),
        };
        self.control.wake();
        status
    }

    /// S5: buffer frames for the VM here, or hand them to it (see
    /// [`crate::site_buffer`]); what may go leaves at once.
    pub fn site_buffer(&self, mode: BufferMode) -> SiteBufferStatus {
        let now = std::time::Instant::now();
        let status = match self.parts.site.lock() {
            Ok(mut b) => {
                b.order(mode);
                b.status(now)
            }
            Err(p) => p.into_inner().status(now),
        };
        self.control.wake();
        status
    }

    /// S5: answers ARP for `addresses` too while buffering (the VM
    /// announced them on the other side).
    pub fn site_addresses(&self, addresses: &[Ipv4Addr]) -> SiteBufferStatus {
        let now = std::time::Instant::now();
        match self.parts.site.lock() {
            Ok(mut b) => {
                b.add_addresses(addresses);
                b.status(now)
            }
            Err(p) => p.into_inner().status(now),
        }
    }

    pub fn site_buffer_status(&self) -> SiteBufferStatus {
        let now = std::time::Instant::now();
        match self.parts.site.lock() {
            Ok(b) => b.status(now),
            Err(p) => p.into_inner().status(now),
        }
    }

    pub fn handover_status(&self) -> HandoverStatus {
        match self.parts.handover.lock() {
            Ok(h) => h.status(),
            Err(p) => p.into_inner().status(),
        }
    }

    /// QEMU connects at `listener` from now on (a VM launched on an
    /// element that existed before it: the one that buffered for it).
    pub fn listen(&self, listener: std::os::unix::net::UnixListener) -> std::io::Result<()> {
        listener.set_nonblocking(true)?;
        if let Ok(mut l) = self.control.relisten.lock() {
            *l = Some(listener);
        }
        self.control.wake();
        Ok(())
    }

    /// Cuts the VM off the network (`true`) or lets it back (`false`).
    /// Wakes the data path: frames a stage released (an epoch committed)
    /// go out now rather than at the next frame or tick.
    pub fn wake(&self) {
        self.control.wake();
    }

    pub fn isolate(&self, on: bool) {
        self.parts.isolation.set(on);
    }

    pub fn is_isolated(&self) -> bool {
        self.parts.isolation.is_on()
    }

    /// Stops the element and waits until its thread has ended, so that the
    /// tap it owned is gone when this returns (a VM started again at once
    /// creates a tap of the same name).
    pub async fn stop(mut self) {
        self.control.stop.store(true, Ordering::SeqCst);
        self.control.wake();
        if let Some(ended) = self.ended.take() {
            let _ = ended.await;
        }
    }
}

impl Drop for ElementHandle {
    fn drop(&mut self) {
        self.control.stop.store(true, Ordering::SeqCst);
        self.control.wake();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ElementError {
    #[error("network element of {vm}: {what}: {source}")]
    Start {
        vm: String,
        what: &'static str,
        source: std::io::Error,
    },
}

/// Starts the element for `vm` (whose MAC is `mac`) on its own thread.
/// `extra` stages run after counting; the handover stage runs last.
pub fn start(
    vm: &str,
    mac: Mac,
    ip: Ipv4Addr,
    listener: std::os::unix::net::UnixListener,
    tap: Tap,
    extra: Vec<Box<dyn Stage>>,
) -> Result<ElementHandle, ElementError> {
    let err = |what, source| ElementError::Start {
        vm: vm.to_string(),
        what,
        source,
    };
    listener
        .set_nonblocking(true)
        .map_err(|e| err("listener", e))?;
    // SAFETY: eventfd(2) with flags only; the result is checked.
    let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if raw < 0 {
        return Err(err("eventfd", std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh descriptor we own.
    let wake = unsafe { OwnedFd::from_raw_fd(raw) };
    let control = Arc::new(Control {
        stop: AtomicBool::new(false),
        wake,
        relisten: Mutex::new(None),
    });
    let parts = parts(mac, ip, extra);
    let (inject, injected) = mpsc::sync_channel(INJECT_QUEUE);
    let (ended_tx, ended) = tokio::sync::oneshot::channel();
    let tap_name = tap.name.clone();
    let path = io_loop::Path {
        vm: vm.to_string(),
        listener,
        tap,
        pipeline: parts.pipeline.clone(),
        injected,
    };
    let c = control.clone();
    std::thread::Builder::new()
        .name(format!("element {vm}"))
        .spawn(move || {
            io_loop::run(path, &c.stop, &c.wake, &c.relisten);
            let _ = ended_tx.send(());
        })
        .map_err(|e| err("thread", e))?;
    Ok(ElementHandle {
        vm: vm.to_string(),
        parts,
        inject,
        control,
        ended: Some(ended),
        tap_name,
    })
}

#[cfg(test)]
mod tests;
