//! Hold-and-forward of a pair's service address during a switchover.
//!
//! A switchover is break-before-make: the old ACT releases the service
//! address before the new ACT claims it and announces it (gratuitous ARP).
//! Until clients hear the announcement they keep sending to the old ACT's
//! MAC, whose kernel no longer has the address and drops the frames; the
//! clients retransmit (SIP over UDP: after 500 ms). The old ACT's network
//! element closes that gap:
//!
//! - `hold` (before the old ACT is told to release): frames for the address
//!   are kept instead of delivered;
//! - `forward` (once the new ACT has claimed it): the held frames, and any
//!   that still arrive, are re-addressed to the new ACT's MAC and sent back
//!   onto the network, for [`FORWARD_FOR`] or until this VM announces the
//!   address itself again;
//! - `release`: back to plain delivery; held frames go to the VM.
//!
//! A hold nobody ends (the controller died mid-switchover) expires after
//! [`HOLD_LIMIT`]: its frames go to the VM, as if there had been no hold.
//! Pure: time comes in as an argument.

use crate::frame::{FrameInfo, ETHERTYPE_ARP};
use crate::stage::{Direction, Stage, Verdict};
use duplex_core::agent_api::{HandoverOrder, HandoverStatus};
use duplex_core::mac::Mac;
use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest a hold lasts without a `forward` or `release`.
pub const HOLD_LIMIT: Duration = Duration::from_secs(2);
/// How long frames still arriving for the address are forwarded: clients
/// that missed the announcement learn the new MAC when their ARP entry is
/// re-confirmed (their unicast ARP probe is forwarded too).
pub const FORWARD_FOR: Duration = Duration::from_secs(60);
/// Most frames held at once; more are dropped with a counted reason.
pub const MAX_HELD: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Idle,
    Holding {
        vip: Ipv4Addr,
        since: Instant,
    },
    Forwarding {
        vip: Ipv4Addr,
        to: Mac,
        since: Instant,
    },
}

#[derive(Debug)]
pub struct Handover {
    /// The MAC of this element's VM: forwarded frames come from it, so the
    /// bridges keep learning the true location of every client.
    own: Mac,
    mode: Mode,
    held: VecDeque<Vec<u8>>,
    out: Vec<(Direction, Vec<u8>)>,
    held_total: u64,
    forwarded_total: u64,
    released_to_vm_total: u64,
    expired_holds: u64,
}

impl Handover {
    pub fn new(own: Mac) -> Self {
        Handover {
            own,
            mode: Mode::Idle,
            held: VecDeque::new(),
            out: Vec::new(),
            held_total: 0,
            forwarded_total: 0,
            released_to_vm_total: 0,
            expired_holds: 0,
        }
    }

    pub fn order(&mut self, order: HandoverOrder, now: Instant) {
        match order {
            HandoverOrder::Hold { vip } => self.hold(vip, now),
            HandoverOrder::Forward { vip, to } => self.forward(vip, to, now),
            HandoverOrder::Release => self.release(),
        }
    }

    fn hold(&mut self, vip: Ipv4Addr, now: Instant) {
        match self.mode {
            Mode::Holding { vip: v, .. } if v == vip => {}
            _ => {
                self.release();
                self.mode = Mode::Holding { vip, since: now };
            }
        }
    }

    fn forward(&mut self, vip: Ipv4Addr, to: Mac, now: Instant) {
        if !matches!(self.mode, Mode::Holding { vip: v, .. } if v == vip) {
            // Frames held for another address belong to this VM.
            self.release();
        }
        self.mode = Mode::Forwarding {
            vip,
            to,
            since: now,
        };
        while let Some(f) = self.held.pop_front() {
            self.send_on(f, to);
        }
    }

    fn release(&mut self) {
        self.mode = Mode::Idle;
        self.released_to_vm_total += self.held.len() as u64;
        self.out
            .extend(self.held.drain(..).map(|f| (Direction::ToGuest, f)));
    }

    /// Re-addresses a frame to `to` and sends it back onto the network.
    fn send_on(&mut self, mut frame: Vec<u8>, to: Mac) {
        if frame.len() >= 12 {
            frame[0..6].copy_from_slice(&to.0);
            frame[6..12].copy_from_slice(&self.own.0);
            self.forwarded_total += 1;
            self.out.push((Direction::FromGuest, frame));
        }
    }

    /// Ends a hold or a forwarding that lasted too long.
    pub fn tick(&mut self, now: Instant) {
        match self.mode {
            Mode::Holding { since, .. } if now.duration_since(since) >= HOLD_LIMIT => {
                self.expired_holds += 1;
                self.release();
            }
            Mode::Forwarding { since, .. } if now.duration_since(since) >= FORWARD_FOR => {
                self.mode = Mode::Idle;
            }
            _ => {}
        }
    }

    /// What to do with one frame (a frame held or forwarded is copied).
    pub fn on_frame(
        &mut self,
        dir: Direction,
        info: Option<&FrameInfo>,
        frame: &[u8],
        now: Instant,
    ) -> Verdict {
        self.tick(now);
        let vip = match self.mode {
            Mode::Idle => return Verdict::Pass,
            Mode::Holding { vip, .. } | Mode::Forwarding { vip, .. } => vip,
        };
        let Some(info) = info else {
            return Verdict::Pass;
        };
        match dir {
            Direction::FromGuest => {
                // The VM announcing the address owns it again (e.g. it was
                // restored as ACT): its frames are its own from now on.
                let announces = info.ethertype == ETHERTYPE_ARP
                    && info.src_ip == Some(vip)
                    && info.dst_ip == Some(vip);
                if announces {
                    self.release();
                }
                Verdict::Pass
            }
            Direction::ToGuest => {
                let for_vip = info.dst_ip == Some(vip) && info.dst.0[0] & 1 == 0;
                if !for_vip {
                    return Verdict::Pass;
                }
                match self.mode {
                    Mode::Holding { .. } if self.held.len() >= MAX_HELD => {
                        Verdict::Drop("handover hold full")
                    }
                    Mode::Holding { .. } => {
                        self.held_total += 1;
                        self.held.push_back(frame.to_vec());
                        Verdict::Held
                    }
                    Mode::Forwarding { to, .. } => {
                        self.send_on(frame.to_vec(), to);
                        Verdict::Held
                    }
                    Mode::Idle => Verdict::Pass,
                }
            }
        }
    }

    /// Frames to deliver now, in order.
    pub fn take_out(&mut self) -> Vec<(Direction, Vec<u8>)> {
        std::mem::take(&mut self.out)
    }

    pub fn status(&self) -> HandoverStatus {
        let (mode, vip, to) = match self.mode {
            Mode::Idle => ("idle", None, None),
            Mode::Holding { vip, .. } => ("holding", Some(vip), None),
            Mode::Forwarding { vip, to, .. } => ("forwarding", Some(vip), Some(to)),
        };
        HandoverStatus {
            mode: mode.into(),
            vip,
            to,
            holding: self.held.len() as u64,
            held_total: self.held_total,
            forwarded_total: self.forwarded_total,
            released_to_vm_total: self.released_to_vm_total,
            expired_holds: self.expired_holds,
        }
    }
}

/// The pipeline stage, sharing its state with whoever gives the orders.
pub struct HandoverStage(pub Arc<Mutex<Handover>>);

impl Stage for HandoverStage {
    fn on_frame(
        &mut self,
        dir: Direction,
        info: Option<&FrameInfo>,
        frame: &[u8],
        now: Instant,
    ) -> Verdict {
        match self.0.lock() {
            Ok(mut h) => h.on_frame(dir, info, frame, now),
            Err(_) => Verdict::Pass,
        }
    }

    fn released(&mut self, now: Instant, _room: crate::stage::Room) -> Vec<(Direction, Vec<u8>)> {
        match self.0.lock() {
            Ok(mut h) => {
                h.tick(now);
                h.take_out()
            }
            Err(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests;
