//! S5: the paused side's buffer. While a VM runs in the other site, the
//! element on its replica's host answers ARP for the VM's address (the
//! site's clients keep sending here, their traffic stays in the site) and
//! keeps every frame sent to the VM, in arrival order. When the VM runs
//! here again the buffer drains into it first, as fast as the VM takes it
//! (`room`), with frames arriving meanwhile queued behind; then frames pass.
//!
//! It answers for the VM's own address and for every address the VM
//! announced itself (its ARP, seen while it ran on this element: a service
//! address its guest claimed), or that it announced on the other side
//! (given by the controller), at most [`MAX_ADDRESSES`].
//!
//! Bounded: [`MAX_FRAMES`] frames and [`MAX_BYTES`] bytes. When full the
//! newest frame is dropped and counted (what was buffered keeps its order;
//! a sender's retransmission can still come later).
//! Pure: time comes in as an argument.

use crate::frame::{arp_reply, FrameInfo, ETHERTYPE_ARP};
use crate::stage::{Direction, Room, Stage, Verdict};
use duplex_core::mac::Mac;
use duplex_core::site::{BufferMode, SiteBufferStatus, MAX_ADDRESSES};
use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Most frames buffered at once.
pub const MAX_FRAMES: usize = 65_536;
/// Most bytes buffered at once.
pub const MAX_BYTES: usize = 64 << 20;
/// Most buffered frames handed to the VM per release (the element's
/// queue towards the VM is bounded; the rest follow as it drains).
pub const RELEASE_BATCH: usize = 256;

pub const DROP_FULL: &str = "site buffer full";
pub const DROP_OTHER: &str = "site buffer: not for the paused VM";

#[derive(Debug)]
pub struct SiteBuffer {
    mac: Mac,
    /// The VM's own address first, then those it announced.
    addresses: Vec<Ipv4Addr>,
    mode: BufferMode,
    queue: VecDeque<(Instant, Vec<u8>)>,
    bytes: usize,
    /// ARP answers to send.
    out: Vec<(Direction, Vec<u8>)>,
    status: SiteBufferStatus,
    /// Mirrors "not plainly passing" for the stage, which looks at it
    /// before taking the lock: a VM that runs here costs one atomic load
    /// per frame.
    engaged: Arc<AtomicBool>,
}

impl SiteBuffer {
    pub fn new(mac: Mac, ip: Ipv4Addr) -> Self {
        SiteBuffer {
            mac,
            addresses: vec![ip],
            mode: BufferMode::Pass,
            queue: VecDeque::new(),
            bytes: 0,
            out: Vec::new(),
            status: SiteBufferStatus::default(),
            engaged: Arc::new(AtomicBool::new(false)),
        }
    }

    fn set_mode(&mut self, mode: BufferMode) {
        self.mode = mode;
        self.engaged.store(
            mode != BufferMode::Pass || !self.out.is_empty(),
            Ordering::SeqCst,
        );
    }

    pub fn mode(&self) -> BufferMode {
        self.mode
    }

    /// The operator's or the agent's order. `Pass` while frames are still
    /// buffered means `Drain` (nothing buffered is dropped by an order).
    pub fn order(&mut self, mode: BufferMode) {
        self.set_mode(match mode {
            BufferMode::Pass | BufferMode::Drain if self.queue.is_empty() => BufferMode::Pass,
            BufferMode::Pass | BufferMode::Drain => BufferMode::Drain,
            BufferMode::Buffer => BufferMode::Buffer,
        });
    }

    /// Answers for `addresses` too (up to [`MAX_ADDRESSES`] in all).
    pub fn add_addresses(&mut self, addresses: &[Ipv4Addr]) {
        for a in addresses {
            let usable = !a.is_unspecified() && !a.is_broadcast() && !a.is_multicast();
            if usable && !self.addresses.contains(a) && self.addresses.len() < MAX_ADDRESSES {
                self.addresses.push(*a);
            }
        }
    }

    /// The VM's own ARP (`info` of a frame from it): its sender address
    /// is one to answer for.
    fn learn(&mut self, info: Option<&FrameInfo>) {
        if let Some(ip) = info
            .filter(|i| announces(i, self.mac))
            .and_then(|i| i.src_ip)
        {
            self.add_addresses(&[ip]);
        }
    }

    pub fn on_frame(
        &mut self,
        dir: Direction,
        info: Option<&FrameInfo>,
        frame: &[u8],
        now: Instant,
    ) -> Verdict {
        if dir == Direction::FromGuest {
            self.learn(info);
            return Verdict::Pass;
        }
        if self.mode == BufferMode::Pass {
            return Verdict::Pass;
        }
        let Some(info) = info else {
            return self.other();
        };
        let for_vm = info.dst == self.mac;
        match self.mode {
            // Unicast probes too: a client re-confirming the address
            // must not lose it while the VM is away.
            BufferMode::Buffer if info.ethertype == ETHERTYPE_ARP => {
                let mac = self.mac;
                match self
                    .addresses
                    .iter()
                    .find_map(|ip| arp_reply(frame, mac, *ip))
                {
                    Some(reply) => {
                        self.status.arp_answered += 1;
                        self.out.push((Direction::FromGuest, reply));
                        Verdict::Held
                    }
                    None => self.other(),
                }
            }
            BufferMode::Buffer | BufferMode::Drain if for_vm => self.keep(frame, now),
            BufferMode::Buffer => self.other(),
            // Draining: the VM runs and hears the rest itself.
            BufferMode::Drain | BufferMode::Pass => Verdict::Pass,
        }
    }

    fn other(&mut self) -> Verdict {
        self.status.dropped_other += 1;
        Verdict::Drop(DROP_OTHER)
    }

    fn keep(&mut self, frame: &[u8], now: Instant) -> Verdict {
        if self.queue.len() >= MAX_FRAMES || self.bytes + frame.len() > MAX_BYTES {
            self.status.dropped_full += 1;
            return Verdict::Drop(DROP_FULL);
        }
        self.bytes += frame.len();
        self.queue.push_back((now, frame.to_vec()));
        self.status.buffered_total += 1;
        self.status.max_depth = self.status.max_depth.max(self.queue.len() as u64);
        Verdict::Held
    }

    /// ARP answers, and while draining as many buffered frames as `room`
    /// takes (at most [`RELEASE_BATCH`]), oldest first.
    pub fn released(&mut self, mut room: Room) -> Vec<(Direction, Vec<u8>)> {
        let mut out = std::mem::take(&mut self.out);
        if self.mode != BufferMode::Drain {
            self.set_mode(self.mode);
            return out;
        }
        for _ in 0..RELEASE_BATCH {
            if !self.queue.front().is_some_and(|(_, f)| room.take(f.len())) {
                break;
            }
            let Some((_, f)) = self.queue.pop_front() else {
                break;
            };
            self.bytes -= f.len();
            self.status.released_total += 1;
            out.push((Direction::ToGuest, f));
        }
        if self.queue.is_empty() {
            self.set_mode(BufferMode::Pass);
        }
        out
    }

    pub fn wants_release(&self) -> bool {
        !self.out.is_empty() || (self.mode == BufferMode::Drain && !self.queue.is_empty())
    }

    pub fn status(&self, now: Instant) -> SiteBufferStatus {
        SiteBufferStatus {
            mode: Some(self.mode),
            buffered: self.queue.len() as u64,
            buffered_bytes: self.bytes as u64,
            oldest_ms: self
                .queue
                .front()
                .map(|(at, _)| now.saturating_duration_since(*at).as_millis() as u64),
            addresses: self.addresses.clone(),
            ..self.status.clone()
        }
    }
}

/// Whether a frame (as parsed) is ARP sent by the VM whose MAC is `mac`.
fn announces(info: &FrameInfo, mac: Mac) -> bool {
    info.ethertype == ETHERTYPE_ARP && info.src == mac
}

/// The pipeline stage, sharing its state with whoever gives the orders.
pub struct SiteBufferStage {
    buf: Arc<Mutex<SiteBuffer>>,
    engaged: Arc<AtomicBool>,
    mac: Mac,
}

impl SiteBufferStage {
    pub fn new(buf: Arc<Mutex<SiteBuffer>>) -> Self {
        let (engaged, mac) = match buf.lock() {
            Ok(b) => (b.engaged.clone(), b.mac),
            Err(p) => {
                let b = p.into_inner();
                (b.engaged.clone(), b.mac)
            }
        };
        SiteBufferStage { buf, engaged, mac }
    }

    fn engaged(&self) -> bool {
        self.engaged.load(Ordering::SeqCst)
    }
}

impl Stage for SiteBufferStage {
    fn on_frame(
        &mut self,
        dir: Direction,
        info: Option<&FrameInfo>,
        frame: &[u8],
        now: Instant,
    ) -> Verdict {
        // Passing: only the VM's own ARP (rare) takes the lock, to learn
        // what it announces.
        let learns = dir == Direction::FromGuest && info.is_some_and(|i| announces(i, self.mac));
        if !self.engaged() && !learns {
            return Verdict::Pass;
        }
        match self.buf.lock() {
            Ok(mut b) => b.on_frame(dir, info, frame, now),
            Err(_) => Verdict::Pass,
        }
    }

    fn released(&mut self, _now: Instant, room: Room) -> Vec<(Direction, Vec<u8>)> {
        if !self.engaged() {
            return Vec::new();
        }
        match self.buf.lock() {
            Ok(mut b) => b.released(room),
            Err(_) => Vec::new(),
        }
    }

    fn wants_release(&self) -> bool {
        self.engaged() && self.buf.lock().map(|b| b.wants_release()).unwrap_or(false)
    }
}

#[cfg(test)]
#[path = "site_buffer_tests.rs"]
mod tests;
