//! S2's transmit buffer: each frame a replicated VM sends is classified by
//! the ruleset; class 1 leaves at once, class 2 is held, labelled with the
//! open epoch, until that epoch commits on the backup. Frames towards the
//! VM are not touched. Where class 2 waits is the VM's [`HoldAt`]:
//! - **here** (embodiment A): in this buffer;
//! - **in the switch** (embodiment B): the frame leaves at once, marked
//!   with its class and epoch ([`crate::switch_proto`]), and the Duplex
//!   switch holds it; commit, release and restart return the message the
//!   agent sends the switch. Epoch numbers on the wire only grow, across
//!   restarts, so that a frame still on its way is never taken for a newer
//!   epoch's.
//!
//! - `close_epoch(n)` (while the VM is paused for checkpoint n): frames
//!   held from now on belong to epoch n+1.
//! - `commit(n)`: frames of epochs <= n are released, in the order sent.
//! - `discard()` (failover: this side's state is lost): held frames are
//!   dropped and counted, never sent.
//! - `unprotect()`: everything held leaves; nothing is held any more.
//!
//! Bounded: at most [`MAX_HELD_FRAMES`] frames and [`MAX_HELD_BYTES`]
//! bytes wait; a class-2 frame beyond that is dropped and counted
//! (`transmit buffer full`), as a congested link would drop it: its sender
//! retransmits (SIP over UDP after T1), which is safe, where sending it
//! early would not be. Pure: time comes in as an argument.

use crate::frame::FrameInfo;
use crate::stage::{Direction, Stage, Verdict};
use crate::switch_proto::{self as proto, Msg};
use duplex_core::agent_api::{ClassReport, RuleHits};
use duplex_core::classify::{Class, Ruleset};
use duplex_core::mac::Mac;
use duplex_core::vm_spec::HoldAt;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Most frames held at once (about two epochs of a busy signalling VM).
pub const MAX_HELD_FRAMES: usize = 8192;
/// Most bytes held at once.
pub const MAX_HELD_BYTES: usize = 16 << 20;

pub const DROP_FULL: &str = "transmit buffer full";
pub const DROP_BROKEN: &str = "transmit buffer unavailable";

#[derive(Debug)]
pub struct TxBuffer {
    rules: Ruleset,
    /// Hits per rule of `rules` (same order), and of the default.
    hits: Vec<u64>,
    default_hits: u64,
    holding: bool,
    /// The epoch frames held now belong to.
    open: u64,
    committed: u64,
    held: VecDeque<(u64, Vec<u8>)>,
    held_bytes: usize,
    out: Vec<(Direction, Vec<u8>)>,
    sent_at_once: u64,
    held_total: u64,
    released_total: u64,
    discarded_total: u64,
    full_drops: u64,
    max_held: usize,
    /// Embodiment B: the VM's MAC (the switch's stream), else None.
    switch: Option<Mac>,
    /// Added to local epoch numbers on the wire (grows at each restart).
    base: u64,
    marked_total: u64,
    /// `HoldAt::None`: epochs run, output is never held.
    hold_nothing: bool,
}

impl TxBuffer {
    /// Not holding yet: the epochs have not started.
    pub fn new(rules: Ruleset) -> Self {
        TxBuffer {
            hits: vec![0; rules.rules.len()],
            rules,
            default_hits: 0,
            holding: false,
            open: 1,
            committed: 0,
            held: VecDeque::new(),
            held_bytes: 0,
            out: Vec::new(),
            sent_at_once: 0,
            held_total: 0,
            released_total: 0,
            discarded_total: 0,
            full_drops: 0,
            max_held: 0,
            switch: None,
            base: 0,
            marked_total: 0,
            hold_nothing: false,
        }
    }

    /// Where class-2 frames wait from the next restart on: here, or in
    /// the switch as the stream of `mac`.
    pub fn hold_at(&mut self, at: HoldAt, mac: Mac) {
        self.switch = (at == HoldAt::Switch).then_some(mac);
        self.hold_nothing = at == HoldAt::None;
    }

    fn wire(&self, epoch: u64) -> u64 {
        // Saturating: after `unprotect` everything counts as committed.
        self.base.saturating_add(epoch)
    }

    /// Applies a newer ruleset (an older or equal version is ignored:
    /// pushes may arrive out of order). The next frame uses it.
    pub fn set_rules(&mut self, rules: Ruleset) -> bool {
        if rules.version <= self.rules.version {
            return false;
        }
        self.hits = vec![0; rules.rules.len()];
        self.default_hits = 0;
        self.rules = rules;
        true
    }

    /// Checkpoint `epoch` is being taken: later frames belong to the next.
    pub fn close_epoch(&mut self, epoch: u64) {
        self.holding = true;
        self.open = self.open.max(epoch + 1);
    }

    /// Epoch `epoch` is on the backup: its frames and earlier ones leave
    /// (in the switch: the message that says so).
    pub fn commit(&mut self, epoch: u64) -> Option<Msg> {
        self.release_through(epoch);
        let mac = self.switch?;
        Some(Msg::Commit {
            mac,
            epoch: self.wire(self.committed),
        })
    }

    fn release_through(&mut self, epoch: u64) {
        self.committed = self.committed.max(epoch);
        while self.held.front().is_some_and(|(e, _)| *e <= self.committed) {
            if let Some((_, f)) = self.held.pop_front() {
                self.held_bytes -= f.len();
                self.released_total += 1;
                self.out.push((Direction::FromGuest, f));
            }
        }
    }

    /// Failover: what is held came from state that is lost.
    pub fn discard(&mut self) -> u64 {
        let n = self.held.len() as u64;
        self.discarded_total += n;
        self.held.clear();
        self.held_bytes = 0;
        n
    }

    /// The backup is gone for good (the controller's word): send all.
    pub fn unprotect(&mut self) -> Option<Msg> {
        self.holding = false;
        self.release_through(u64::MAX);
        let mac = self.switch?;
        Some(Msg::Release {
            mac,
            epoch: self.wire(self.open),
        })
    }

    /// Epochs start over towards a new backup (the old one will not take
    /// over): what is held leaves, and epochs count from 1 again (on the
    /// wire, on from the last one used). In the switch: what it holds from
    /// here leaves, and what it holds from anywhere else is dropped (a
    /// VM's frames from another port are those of a lost primary).
    pub fn restart(&mut self) -> Vec<Msg> {
        let released = self.unprotect();
        let last = self.wire(self.open);
        self.base = last;
        self.open = 1;
        self.committed = 0;
        let claim = self.switch.map(|mac| Msg::Claim { mac, epoch: last });
        released.into_iter().chain(claim).collect()
    }

    pub fn on_frame(&mut self, dir: Direction, frame: &[u8]) -> Verdict {
        if dir != Direction::FromGuest {
            return Verdict::Pass;
        }
        let packet = crate::frame::packet(frame);
        let class = match self.rules.first_match(&packet) {
            Some(i) => {
                self.hits[i] += 1;
                self.rules.rules[i].class
            }
            None => {
                self.default_hits += 1;
                self.rules.default
            }
        };
        // This frame needs no protection: a class-1 frame never waits
        // behind held ones.
        if class == Class::Send {
            self.sent_at_once += 1;
            return Verdict::Pass;
        }
        if !self.holding || self.hold_nothing {
            // Not holding (epochs not started, or ended): it goes now, but
            // after any released frame still on its way out, so class-2
            // frames keep their order.
            if self.out.is_empty() {
                self.sent_at_once += 1;
                return Verdict::Pass;
            }
            self.out.push((Direction::FromGuest, frame.to_vec()));
            return Verdict::Held;
        }
        if self.switch.is_some() {
            self.marked_total += 1;
            let epoch = self.wire(self.open);
            self.out
                .push((Direction::FromGuest, proto::tagged(frame, epoch)));
            return Verdict::Held;
        }
        if self.held.len() >= MAX_HELD_FRAMES || self.held_bytes + frame.len() > MAX_HELD_BYTES {
            self.full_drops += 1;
            return Verdict::Drop(DROP_FULL);
        }
        self.held_bytes += frame.len();
        self.held.push_back((self.open, frame.to_vec()));
        self.held_total += 1;
        self.max_held = self.max_held.max(self.held.len());
        Verdict::Held
    }

    pub fn take_out(&mut self) -> Vec<(Direction, Vec<u8>)> {
        std::mem::take(&mut self.out)
    }

    pub fn report(&self) -> ClassReport {
        ClassReport {
            ruleset_version: self.rules.version,
            holding: self.holding,
            open_epoch: self.open,
            committed_epoch: self.committed,
            rules: self
                .rules
                .rules
                .iter()
                .zip(&self.hits)
                .map(|(r, hits)| RuleHits {
                    rule: r.name.clone(),
                    class: r.class,
                    frames: *hits,
                })
                .collect(),
            default_class: self.rules.default,
            default_frames: self.default_hits,
            sent_at_once: self.sent_at_once,
            held_now: self.held.len() as u64,
            held_bytes_now: self.held_bytes as u64,
            held_max: self.max_held as u64,
            held_total: self.held_total,
            released: self.released_total,
            discarded: self.discarded_total,
            dropped_full: self.full_drops,
            hold_at: match (self.switch, self.hold_nothing) {
                (Some(_), _) => HoldAt::Switch,
                (None, true) => HoldAt::None,
                (None, false) => HoldAt::Host,
            },
            marked: self.marked_total,
        }
    }
}

/// The pipeline stage, sharing the buffer with the epoch engine.
pub struct TxStage(pub Arc<Mutex<TxBuffer>>);

impl Stage for TxStage {
    fn on_frame(
        &mut self,
        dir: Direction,
        _: Option<&FrameInfo>,
        frame: &[u8],
        _: Instant,
    ) -> Verdict {
        match self.0.lock() {
            Ok(mut b) => b.on_frame(dir, frame),
            // A poisoned buffer cannot say what is safe to send.
            Err(_) => Verdict::Drop(DROP_BROKEN),
        }
    }

    fn released(&mut self, _: Instant, _: crate::stage::Room) -> Vec<(Direction, Vec<u8>)> {
        match self.0.lock() {
            Ok(mut b) => b.take_out(),
            Err(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
#[path = "txbuf_tests.rs"]
mod tests;
