//! The Duplex switch (S2 embodiment B): an Ethernet learning switch that
//! holds the class-2 output of replicated VMs until the host that sent it
//! says the epoch that produced it is on the backup.
//!
//! ```text
//!  host port ──frame──▶ learn src ──▶ EtherType?
//!                                       ├─ message (host ports only) ─▶ Claim / Commit / Release
//!                                       ├─ tag (host ports only) ─▶ class 1 ─▶ forward untagged
//!                                       │                          class 2 ─▶ committed? ─▶ forward untagged
//!                                       │                                     else hold in stream (port, src MAC)
//!                                       └─ other ─▶ forward (learned port, else flood)
//! ```
//!
//! A stream is one VM's frames from one port: a commit from a host
//! releases only what that host sent, and a `Claim` (the VM starting or
//! resuming somewhere) drops what any port still holds for it, so output
//! of a lost primary never leaves. Bounded: [`MAX_HELD_FRAMES`] and
//! [`MAX_HELD_BYTES`] per stream, [`MAX_TOTAL_BYTES`] in all, [`MAX_MACS`]
//! learned addresses, [`MAX_STREAMS`] streams; a frame beyond a bound is
//! dropped and counted. Pure: frames and time in, what to send out.

pub mod ports;

use crate::frame::mac_at;
use crate::switch_proto::{self as proto, Msg};
use duplex_core::mac::Mac;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Frames one stream may hold (as the host's transmit buffer).
pub const MAX_HELD_FRAMES: usize = 8192;
/// Bytes one stream may hold.
pub const MAX_HELD_BYTES: usize = 16 << 20;
/// Bytes all streams may hold together.
pub const MAX_TOTAL_BYTES: usize = 64 << 20;
/// Learned addresses at most (the oldest goes when full).
pub const MAX_MACS: usize = 4096;
/// Streams at most.
pub const MAX_STREAMS: usize = 1024;
/// An address not heard from for this long is forgotten.
pub const MAC_AGE: Duration = Duration::from_secs(300);

pub const DROP_RUNT: &str = "shorter than an Ethernet header";
pub const DROP_EDGE_MSG: &str = "switch message from an edge port";
pub const DROP_EDGE_TAG: &str = "tagged frame from an edge port";
pub const DROP_BAD_MSG: &str = "malformed switch message";
pub const DROP_BAD_TAG: &str = "cut-short tag";
pub const DROP_FULL: &str = "hold buffer full";
pub const DROP_STREAMS: &str = "too many streams";
pub const DROP_SAME_PORT: &str = "destination on the port it came from";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PortKind {
    /// A host's uplink: may tag frames and send messages.
    Host,
    /// Anything else (clients, management): plain Ethernet only.
    Edge,
}

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    Port(usize),
    /// Every port but the one it came from.
    Flood {
        except: usize,
    },
}

/// What to do with a frame that came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Send it as it came.
    Forward(Dest),
    /// Send it without its tag.
    ForwardUntagged(Dest),
    /// Kept until its epoch commits.
    Held,
    /// A host's message, applied: see [`Switch::take_released`].
    Applied(Msg),
    Drop(&'static str),
}

#[derive(Debug, Default)]
struct Stream {
    committed: Option<u64>,
    newest: u64,
    held: VecDeque<(u64, Vec<u8>)>,
    bytes: usize,
    held_total: u64,
    released: u64,
    last: Option<Instant>,
}

/// What the switch counted, for its stats file.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counters {
    pub frames_in: u64,
    pub forwarded: u64,
    pub flooded: u64,
    pub messages: u64,
    /// Class-2 frames held, ever.
    pub held_total: u64,
    /// Class-2 frames that came after their epoch committed.
    pub passed_committed: u64,
    pub released: u64,
    /// Held frames dropped by a `Claim` (output of lost state).
    pub discarded: u64,
    pub dropped: BTreeMap<&'static str, u64>,
}

/// One stream, for the stats file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamStats {
    pub port: usize,
    pub mac: Mac,
    pub committed: Option<u64>,
    pub newest: u64,
    pub held_now: usize,
    pub held_bytes_now: usize,
    pub held_total: u64,
    pub released: u64,
}

pub struct Switch {
    kinds: Vec<PortKind>,
    macs: HashMap<Mac, (usize, Instant)>,
    streams: HashMap<(usize, Mac), Stream>,
    total_bytes: usize,
    released: Vec<(Dest, Vec<u8>)>,
    pub counters: Counters,
}

impl Switch {
    pub fn new(kinds: Vec<PortKind>) -> Self {
        Switch {
            kinds,
            macs: HashMap::new(),
            streams: HashMap::new(),
            total_bytes: 0,
            released: Vec::new(),
            counters: Counters::default(),
        }
    }

    /// A frame from port `port`.
    pub fn on_frame(&mut self, port: usize, frame: &[u8], now: Instant) -> Step {
        self.counters.frames_in += 1;
        let step = self.step(port, frame, now);
        match step {
            Step::Forward(d) | Step::ForwardUntagged(d) => self.count_sent(d),
            Step::Drop(reason) => *self.counters.dropped.entry(reason).or_default() += 1,
            Step::Held | Step::Applied(_) => {}
        }
        step
    }

    fn step(&mut self, port: usize, frame: &[u8], now: Instant) -> Step {
        let (Some(dst), Some(src)) = (mac_at(frame, 0), mac_at(frame, 6)) else {
            return Step::Drop(DROP_RUNT);
        };
        self.learn(src, port, now);
        let host = self.kinds.get(port) == Some(&PortKind::Host);
        match proto::ethertype(frame) {
            Some(proto::MSG_ETHERTYPE) if !host => Step::Drop(DROP_EDGE_MSG),
            Some(proto::MSG_ETHERTYPE) => match proto::parse_msg(frame) {
                Ok(m) => self.apply(port, m, now),
                Err(_) => Step::Drop(DROP_BAD_MSG),
            },
            Some(proto::TAG_ETHERTYPE) if !host => Step::Drop(DROP_EDGE_TAG),
            Some(proto::TAG_ETHERTYPE) => match proto::tag(frame) {
                None => Step::Drop(DROP_BAD_TAG),
                Some(tag) => match self.dest(port, dst) {
                    Err(reason) => Step::Drop(reason),
                    Ok(d) if !tag.hold => Step::ForwardUntagged(d),
                    Ok(d) => self.hold(port, src, tag.low, frame, d, now),
                },
            },
            _ => match self.dest(port, dst) {
                Ok(d) => Step::Forward(d),
                Err(reason) => Step::Drop(reason),
            },
        }
    }

    fn hold(
        &mut self,
        port: usize,
        src: Mac,
        low: u16,
        frame: &[u8],
        d: Dest,
        now: Instant,
    ) -> Step {
        if !self.streams.contains_key(&(port, src)) && self.streams.len() >= MAX_STREAMS {
            return Step::Drop(DROP_STREAMS);
        }
        let total = self.total_bytes;
        let s = self.streams.entry((port, src)).or_default();
        s.last = Some(now);
        let epoch = proto::widen(s.committed.unwrap_or(s.newest), low);
        s.newest = s.newest.max(epoch);
        if s.committed.is_some_and(|c| epoch <= c) {
            self.counters.passed_committed += 1;
            return Step::ForwardUntagged(d);
        }
        let len = frame.len() - proto::TAG_LEN;
        if s.held.len() >= MAX_HELD_FRAMES
            || s.bytes + len > MAX_HELD_BYTES
            || total + len > MAX_TOTAL_BYTES
        {
            return Step::Drop(DROP_FULL);
        }
        s.held.push_back((epoch, proto::untagged(frame)));
        s.bytes += len;
        s.held_total += 1;
        self.total_bytes += len;
        self.counters.held_total += 1;
        Step::Held
    }

    fn apply(&mut self, port: usize, m: Msg, now: Instant) -> Step {
        let mac = m.mac();
        let known = self.streams.contains_key(&(port, mac));
        if !known && self.streams.len() >= MAX_STREAMS {
            return Step::Drop(DROP_STREAMS);
        }
        self.counters.messages += 1;
        match m {
            // Nothing held from here: nothing to release (the stream
            // starts with its first marked frame or a claim).
            Msg::Commit { .. } | Msg::Release { .. } if !known => {}
            Msg::Claim { epoch, .. } => {
                let keys: Vec<(usize, Mac)> = self
                    .streams
                    .keys()
                    .filter(|k| k.1 == mac)
                    .copied()
                    .collect();
                for k in keys {
                    if let Some(s) = self.streams.remove(&k) {
                        self.total_bytes -= s.bytes;
                        self.counters.discarded += s.held.len() as u64;
                    }
                }
                let fresh = Stream {
                    committed: Some(epoch),
                    newest: epoch,
                    last: Some(now),
                    ..Stream::default()
                };
                self.streams.insert((port, mac), fresh);
            }
            Msg::Commit { epoch, .. } => self.release(port, mac, epoch, now),
            // Everything held leaves; marked frames still on their way
            // (epochs up to `epoch`) pass when they come.
            Msg::Release { epoch, .. } => {
                let newest = self.streams.get(&(port, mac)).map_or(0, |s| s.newest);
                self.release(port, mac, epoch.max(newest), now);
            }
        }
        Step::Applied(m)
    }

    /// Releases what `(port, mac)` holds of epochs up to `through`, in
    /// order; `through` is committed from now on.
    fn release(&mut self, port: usize, mac: Mac, through: u64, now: Instant) {
        let s = self.streams.entry((port, mac)).or_default();
        s.last = Some(now);
        s.committed = Some(s.committed.map_or(through, |c| c.max(through)));
        s.newest = s.newest.max(through);
        // Held in the order marked, so in epoch order: a frame behind a
        // later epoch's would only wait longer, never leave early.
        let mut out = Vec::new();
        while s.held.front().is_some_and(|(e, _)| *e <= through) {
            if let Some((_, f)) = s.held.pop_front() {
                out.push(f);
            }
        }
        let bytes: usize = out.iter().map(Vec::len).sum();
        s.bytes -= bytes;
        s.released += out.len() as u64;
        self.total_bytes -= bytes;
        self.counters.released += out.len() as u64;
        for f in out {
            match mac_at(&f, 0).map(|dst| self.dest(port, dst)) {
                Some(Ok(d)) => {
                    self.count_sent(d);
                    self.released.push((d, f));
                }
                Some(Err(reason)) => *self.counters.dropped.entry(reason).or_default() += 1,
                None => *self.counters.dropped.entry(DROP_RUNT).or_default() += 1,
            }
        }
    }

    /// Frames released by messages since the last call, in order.
    pub fn take_released(&mut self) -> Vec<(Dest, Vec<u8>)> {
        std::mem::take(&mut self.released)
    }

    /// Forgets addresses not heard from for [`MAC_AGE`] and idle streams
    /// that hold nothing.
    pub fn expire(&mut self, now: Instant) {
        self.macs
            .retain(|_, (_, seen)| now.duration_since(*seen) < MAC_AGE);
        self.streams.retain(|_, s| {
            !s.held.is_empty() || s.last.is_some_and(|t| now.duration_since(t) < MAC_AGE)
        });
    }

    pub fn streams(&self) -> Vec<StreamStats> {
        let mut v: Vec<StreamStats> = self
            .streams
            .iter()
            .map(|(&(port, mac), s)| StreamStats {
                port,
                mac,
                committed: s.committed,
                newest: s.newest,
                held_now: s.held.len(),
                held_bytes_now: s.bytes,
                held_total: s.held_total,
                released: s.released,
            })
            .collect();
        v.sort_by_key(|s| (s.port, s.mac.0));
        v
    }

    pub fn learned(&self) -> usize {
        self.macs.len()
    }

    fn learn(&mut self, src: Mac, port: usize, now: Instant) {
        if src.0[0] & 1 != 0 {
            return;
        }
        if !self.macs.contains_key(&src) && self.macs.len() >= MAX_MACS {
            let oldest = self
                .macs
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(m, _)| *m);
            if let Some(m) = oldest {
                self.macs.remove(&m);
            }
        }
        self.macs.insert(src, (port, now));
    }

    fn dest(&self, port: usize, dst: Mac) -> Result<Dest, &'static str> {
        if dst.0[0] & 1 != 0 {
            return Ok(Dest::Flood { except: port });
        }
        match self.macs.get(&dst) {
            Some((p, _)) if *p == port => Err(DROP_SAME_PORT),
            Some((p, _)) => Ok(Dest::Port(*p)),
            None => Ok(Dest::Flood { except: port }),
        }
    }

    fn count_sent(&mut self, d: Dest) {
        match d {
            Dest::Port(_) => self.counters.forwarded += 1,
            Dest::Flood { .. } => self.counters.flooded += 1,
        }
    }
}

#[cfg(test)]
mod tests;
