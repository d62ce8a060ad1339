//! S2 embodiment B on the wire: how a host marks the held output of a
//! replicated VM for the Duplex switch (`duplex switch`), and the messages
//! it sends the switch about epochs. Shared by the element (marking), the
//! agent (messages) and the switch (both). Pure.
//!
//! **Tag** (class 2 only; class-1 frames leave unmarked): 4 bytes after the
//! two MAC addresses, where an 802.1Q tag would be, so a full-size frame
//! still fits the room every link leaves for one VLAN tag (no MTU change):
//! EtherType [`TAG_ETHERTYPE`] (IEEE 802 local experimental 1), then 16
//! bits: the top bit set (class 2, "hold until committed"), the low 15 the
//! epoch's low bits. The switch widens them against the stream's committed
//! epoch (nearest value; epochs in flight are far fewer than 2^14).
//!
//! **Message**: EtherType [`MSG_ETHERTYPE`], sent by the host's agent out
//! of its uplink straight to the switch port (never forwarded): `DXSW`,
//! version 1, kind, the VM's MAC, a 64-bit epoch (big-endian).

use crate::frame::FrameInfo;
use crate::stage::{Direction, Stage, Verdict};
use duplex_core::mac::Mac;
use std::time::Instant;

/// EtherType of a class/epoch tag.
pub const TAG_ETHERTYPE: u16 = 0x88b5;
/// EtherType of a host's message to the switch.
pub const MSG_ETHERTYPE: u16 = 0x88b6;
/// Bytes a tag adds to a frame.
pub const TAG_LEN: usize = 4;
const CLASS2: u16 = 0x8000;
const EPOCH_BITS: u32 = 15;
const EPOCH_MASK: u16 = (1 << EPOCH_BITS) - 1;
const MAGIC: &[u8; 4] = b"DXSW";
const VERSION: u8 = 1;
/// Length of a message's payload.
pub const MSG_LEN: usize = 4 + 1 + 1 + 6 + 8;
const ETH_HEADER: usize = 14;

/// What a host tells the switch about one VM's frames from its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msg {
    /// Epochs from this port start over (the VM starts or resumes here):
    /// frames of `mac` held from any port are dropped (they came from
    /// state that is lost); `epoch` is the last one already committed.
    Claim { mac: Mac, epoch: u64 },
    /// Epoch `epoch` is on the backup: frames of it and earlier leave.
    Commit { mac: Mac, epoch: u64 },
    /// No backup will take over from the state these frames came from:
    /// everything held from this port leaves; `epoch` is the last one
    /// marked so far.
    Release { mac: Mac, epoch: u64 },
}

impl Msg {
    fn kind(&self) -> u8 {
        match self {
            Msg::Claim { .. } => 1,
            Msg::Commit { .. } => 2,
            Msg::Release { .. } => 3,
        }
    }

    pub fn mac(&self) -> Mac {
        match *self {
            Msg::Claim { mac, .. } | Msg::Commit { mac, .. } | Msg::Release { mac, .. } => mac,
        }
    }

    pub fn epoch(&self) -> u64 {
        match *self {
            Msg::Claim { epoch, .. } | Msg::Commit { epoch, .. } | Msg::Release { epoch, .. } => {
                epoch
            }
        }
    }

    /// The whole Ethernet frame, broadcast from `from`.
    pub fn frame(&self, from: Mac) -> Vec<u8> {
        let mut f = Vec::with_capacity(ETH_HEADER + MSG_LEN);
        f.extend_from_slice(&[0xff; 6]);
        f.extend_from_slice(&from.0);
        f.extend_from_slice(&MSG_ETHERTYPE.to_be_bytes());
        f.extend_from_slice(MAGIC);
        f.push(VERSION);
        f.push(self.kind());
        f.extend_from_slice(&self.mac().0);
        f.extend_from_slice(&self.epoch().to_be_bytes());
        f
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MsgError {
    #[error("switch message too short: {0} bytes, want {MSG_LEN}")]
    Short(usize),
    #[error("switch message without the DXSW magic")]
    Magic,
    #[error("switch message version {0}, this switch speaks {VERSION}")]
    Version(u8),
    #[error("switch message of unknown kind {0}")]
    Kind(u8),
}

/// Reads a message frame (EtherType already checked by [`ethertype`]).
pub fn parse_msg(frame: &[u8]) -> Result<Msg, MsgError> {
    let p = frame.get(ETH_HEADER..).unwrap_or_default();
    if p.len() < MSG_LEN {
        return Err(MsgError::Short(p.len()));
    }
    if &p[..4] != MAGIC {
        return Err(MsgError::Magic);
    }
    if p[4] != VERSION {
        return Err(MsgError::Version(p[4]));
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&p[6..12]);
    let mut epoch = [0u8; 8];
    epoch.copy_from_slice(&p[12..20]);
    let (mac, epoch) = (Mac(mac), u64::from_be_bytes(epoch));
    match p[5] {
        1 => Ok(Msg::Claim { mac, epoch }),
        2 => Ok(Msg::Commit { mac, epoch }),
        3 => Ok(Msg::Release { mac, epoch }),
        k => Err(MsgError::Kind(k)),
    }
}

/// The frame's EtherType (outermost), if it has a whole header.
pub fn ethertype(frame: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]))
}

/// Whether a frame carries one of Duplex's switch EtherTypes (a guest may
/// send neither: a forged message could release another VM's output).
pub fn is_reserved(frame: &[u8]) -> bool {
    matches!(ethertype(frame), Some(TAG_ETHERTYPE | MSG_ETHERTYPE))
}

/// Drop reason of a frame with one of the switch's EtherTypes at a VM.
pub const DROP_RESERVED: &str = "reserved for the Duplex switch";

/// The element's guard: a guest may send neither a tag nor a message (a
/// forged message could release another VM's output), and none reaches a
/// guest (a marked frame of a VM on the same host never passed the
/// switch: it is dropped, not delivered early).
pub struct GuardStage;

impl Stage for GuardStage {
    fn on_frame(
        &mut self,
        _: Direction,
        _: Option<&FrameInfo>,
        frame: &[u8],
        _: Instant,
    ) -> Verdict {
        if is_reserved(frame) {
            Verdict::Drop(DROP_RESERVED)
        } else {
            Verdict::Pass
        }
    }
}

/// `frame` marked as class 2 of `epoch`.
pub fn tagged(frame: &[u8], epoch: u64) -> Vec<u8> {
    let split = frame.len().min(12);
    let mut f = Vec::with_capacity(frame.len() + TAG_LEN);
    f.extend_from_slice(&frame[..split]);
    f.extend_from_slice(&TAG_ETHERTYPE.to_be_bytes());
    let bits = CLASS2 | (epoch as u16 & EPOCH_MASK);
    f.extend_from_slice(&bits.to_be_bytes());
    f.extend_from_slice(&frame[split..]);
    f
}

/// A tag read from a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub hold: bool,
    /// The epoch's low bits ([`widen`] them).
    pub low: u16,
}

/// The tag of a tagged frame (None if it has none or is cut short).
pub fn tag(frame: &[u8]) -> Option<Tag> {
    if ethertype(frame) != Some(TAG_ETHERTYPE) || frame.len() < ETH_HEADER + 2 {
        return None;
    }
    let bits = u16::from_be_bytes([frame[14], frame[15]]);
    Some(Tag {
        hold: bits & CLASS2 != 0,
        low: bits & EPOCH_MASK,
    })
}

/// The frame without its tag.
pub fn untagged(frame: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(frame.len().saturating_sub(TAG_LEN));
    f.extend_from_slice(&frame[..12.min(frame.len())]);
    f.extend_from_slice(frame.get(12 + TAG_LEN..).unwrap_or_default());
    f
}

/// The epoch whose low bits are `low` nearest to `reference`.
pub fn widen(reference: u64, low: u16) -> u64 {
    let span = 1u64 << EPOCH_BITS;
    let base = reference & !(span - 1);
    let candidates = [base.checked_sub(span), Some(base), base.checked_add(span)];
    candidates
        .into_iter()
        .flatten()
        .map(|b| b | u64::from(low))
        .min_by_key(|e| e.abs_diff(reference))
        .unwrap_or(u64::from(low))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Vec<u8> {
        (0..len).map(|i| i as u8).collect()
    }

    #[test]
    fn a_tag_round_trips_and_adds_four_bytes() {
        let f = frame(60);
        for epoch in [0, 1, 5, 32767, 32768, 1 << 40] {
            let t = tagged(&f, epoch);
            assert_eq!(t.len(), f.len() + TAG_LEN);
            let tag = tag(&t).unwrap();
            assert!(tag.hold);
            assert_eq!(u64::from(tag.low), epoch % 32768);
            assert_eq!(untagged(&t), f);
        }
        assert_eq!(tag(&f), None);
    }

    #[test]
    fn widening_finds_the_epoch_near_the_reference() {
        for reference in [0u64, 1, 100, 32767, 32768, 40000, 1 << 33] {
            for delta in [-1000i64, -3, 0, 1, 2, 50, 1000] {
                let Some(e) = reference.checked_add_signed(delta) else {
                    continue;
                };
                let low = (e & 0x7fff) as u16;
                assert_eq!(widen(reference, low), e, "ref {reference} delta {delta}");
            }
        }
    }

    #[test]
    fn messages_round_trip_and_bad_ones_say_why() {
        let mac = Mac([2, 0, 0, 0, 0, 7]);
        for m in [
            Msg::Claim { mac, epoch: 0 },
            Msg::Commit {
                mac,
                epoch: 1 << 50,
            },
            Msg::Release { mac, epoch: 9 },
        ] {
            let f = m.frame(Mac([2, 0, 0, 0, 0, 1]));
            assert_eq!(ethertype(&f), Some(MSG_ETHERTYPE));
            assert!(is_reserved(&f));
            assert_eq!(parse_msg(&f), Ok(m));
        }
        let good = Msg::Commit { mac, epoch: 3 }.frame(mac);
        assert_eq!(parse_msg(&good[..20]), Err(MsgError::Short(6)));
        let mut bad = good.clone();
        bad[14] = b'X';
        assert_eq!(parse_msg(&bad), Err(MsgError::Magic));
        let mut bad = good.clone();
        bad[18] = 2;
        assert_eq!(parse_msg(&bad), Err(MsgError::Version(2)));
        let mut bad = good;
        bad[19] = 9;
        assert_eq!(parse_msg(&bad), Err(MsgError::Kind(9)));
        assert!(!is_reserved(&frame(60)));
    }

    #[test]
    fn the_guard_drops_switch_frames_both_ways() {
        let now = Instant::now();
        let mac = Mac([2, 0, 0, 0, 0, 7]);
        let msg = Msg::Commit { mac, epoch: 3 }.frame(mac);
        let marked = tagged(&frame(60), 1);
        for dir in [Direction::FromGuest, Direction::ToGuest] {
            for f in [&msg, &marked] {
                assert_eq!(
                    GuardStage.on_frame(dir, None, f, now),
                    Verdict::Drop(DROP_RESERVED)
                );
            }
            assert_eq!(
                GuardStage.on_frame(dir, None, &frame(60), now),
                Verdict::Pass
            );
        }
    }
}
