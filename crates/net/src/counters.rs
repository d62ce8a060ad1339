//! Traffic counters per VM and per peer (MAC + IP): the raw material of the
//! traffic matrix network-aware placement uses.

use crate::frame::FrameInfo;
use crate::stage::{Direction, Stage, Verdict};
use duplex_core::agent_api::{DropCount, PeerCounters, TrafficReport};
use duplex_core::mac::Mac;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    tx_packets: u64,
    tx_bytes: u64,
    rx_packets: u64,
    rx_bytes: u64,
    /// Counted since the last report.
    touched: bool,
    /// The last report that found it touched.
    seen: Option<Instant>,
}

impl Counts {
    fn bytes(&self) -> u64 {
        self.tx_bytes.saturating_add(self.rx_bytes)
    }

    fn add(&mut self, o: &Counts) {
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
    }
}

#[derive(Debug, Default)]
pub struct Counters {
    total: Counts,
    peers: BTreeMap<(Mac, Option<Ipv4Addr>), Counts>,
    /// Frames that did not parse as Ethernet (still forwarded, still counted).
    unparsed: u64,
}

/// Bound on distinct peers kept per VM; beyond it peers are folded into one
/// bucket (ff:ff:ff:ff:ff:ff without IP) so memory stays bounded.
pub const MAX_PEERS: usize = 4096;
/// Peers a report names, the busiest first; the rest are summed into the
/// folded bucket, so a report stays small whatever the VM hears (forged
/// ARP from many addresses, say).
pub const REPORT_PEERS: usize = 64;
/// A peer not heard from for this long is forgotten (at the next report).
pub const PEER_TTL: Duration = Duration::from_secs(300);

/// The bucket peers beyond the bounds are folded into.
const FOLDED: (Mac, Option<Ipv4Addr>) = (Mac([0xff; 6]), None);

impl Counters {
    pub fn count(&mut self, dir: Direction, info: Option<&FrameInfo>, len: usize) {
        let len = len as u64;
        let bump = |c: &mut Counts| match dir {
            Direction::FromGuest => {
                c.tx_packets += 1;
                c.tx_bytes += len;
            }
            Direction::ToGuest => {
                c.rx_packets += 1;
                c.rx_bytes += len;
            }
        };
        bump(&mut self.total);
        let Some(i) = info else {
            self.unparsed += 1;
            return;
        };
        let mut key = match dir {
            Direction::FromGuest => (i.dst, i.dst_ip),
            Direction::ToGuest => (i.src, i.src_ip),
        };
        if !self.peers.contains_key(&key) && self.peers.len() >= MAX_PEERS {
            key = FOLDED;
        }
        let c = self.peers.entry(key).or_default();
        bump(c);
        c.touched = true;
    }

    /// Forgets peers silent for [`PEER_TTL`] (as of `now`).
    fn expire(&mut self, now: Instant) {
        self.peers.retain(|_, c| {
            if std::mem::take(&mut c.touched) {
                c.seen = Some(now);
            }
            c.seen
                .is_some_and(|s| now.saturating_duration_since(s) < PEER_TTL)
        });
    }

    /// The busiest [`REPORT_PEERS`] peers, the rest summed into the folded
    /// bucket.
    fn busiest(&self) -> Vec<((Mac, Option<Ipv4Addr>), Counts)> {
        let mut all: Vec<_> = self.peers.iter().map(|(k, c)| (*k, *c)).collect();
        all.sort_by_key(|(k, c)| (std::cmp::Reverse(c.bytes()), *k));
        let mut rest = Counts::default();
        for (_, c) in all.iter().skip(REPORT_PEERS) {
            rest.add(c);
        }
        all.truncate(REPORT_PEERS);
        if rest.tx_packets + rest.rx_packets > 0 {
            match all.iter_mut().find(|(k, _)| *k == FOLDED) {
                Some((_, c)) => c.add(&rest),
                None => all.push((FOLDED, rest)),
            }
        }
        all
    }

    pub fn report(
        &mut self,
        vm: &str,
        drops: &BTreeMap<&'static str, u64>,
        now: Instant,
    ) -> TrafficReport {
        self.expire(now);
        TrafficReport {
            vm: vm.to_string(),
            tx_packets: self.total.tx_packets,
            tx_bytes: self.total.tx_bytes,
            rx_packets: self.total.rx_packets,
            rx_bytes: self.total.rx_bytes,
            peers: self
                .busiest()
                .into_iter()
                .map(|((mac, ip), c)| PeerCounters {
                    mac,
                    ip,
                    tx_packets: c.tx_packets,
                    tx_bytes: c.tx_bytes,
                    rx_packets: c.rx_packets,
                    rx_bytes: c.rx_bytes,
                })
                .collect(),
            drops: drops
                .iter()
                .map(|(r, n)| DropCount {
                    reason: r.to_string(),
                    packets: *n,
                })
                .collect(),
            held: Vec::new(),
        }
    }
}

/// Pipeline stage that counts and passes everything.
pub struct CountStage(pub Arc<Mutex<Counters>>);

impl Stage for CountStage {
    fn on_frame(
        &mut self,
        dir: Direction,
        info: Option<&FrameInfo>,
        frame: &[u8],
        _: Instant,
    ) -> Verdict {
        if let Ok(mut c) = self.0.lock() {
            c.count(dir, info, frame.len());
        }
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{gratuitous_arp, parse};

    #[test]
    fn counts_per_peer_both_directions() {
        let mut c = Counters::default();
        let vm = Mac([0x52, 0x54, 0, 0, 0, 1]);
        let peer = Mac([0x52, 0x54, 0, 0, 0, 2]);
        let mut to_peer = gratuitous_arp(vm, Ipv4Addr::new(10, 0, 0, 1));
        to_peer[..6].copy_from_slice(&peer.0);
        let from_peer = gratuitous_arp(peer, Ipv4Addr::new(10, 0, 0, 2));
        c.count(Direction::FromGuest, parse(&to_peer).as_ref(), 60);
        c.count(Direction::ToGuest, parse(&from_peer).as_ref(), 60);
        c.count(Direction::ToGuest, None, 3);
        let r = c.report("vm1", &BTreeMap::new(), Instant::now());
        assert_eq!((r.tx_packets, r.rx_packets, r.rx_bytes), (1, 2, 63));
        assert_eq!(r.peers.len(), 2);
        let p = r.peers.iter().find(|p| p.mac == peer).unwrap();
        assert_eq!((p.tx_packets, p.rx_packets), (1, 0));
        assert_eq!(p.ip, Some(Ipv4Addr::new(10, 0, 0, 1)));
    }

    #[test]
    fn peers_are_bounded() {
        let mut c = Counters::default();
        for i in 0..(MAX_PEERS as u32 + 10) {
            let b = i.to_be_bytes();
            let f = gratuitous_arp(Mac([2, 0, b[0], b[1], b[2], b[3]]), Ipv4Addr::from(i));
            c.count(Direction::ToGuest, parse(&f).as_ref(), 60);
        }
        assert_eq!(c.peers.len(), MAX_PEERS + 1);
        let t0 = Instant::now();
        let r = c.report("vm1", &BTreeMap::new(), t0);
        // The folded bucket (the overflow, 10 frames) is the busiest here.
        assert_eq!(r.peers.len(), REPORT_PEERS, "the busiest, the rest folded");
        let sum = |r: &TrafficReport| r.peers.iter().map(|p| p.rx_packets).sum::<u64>();
        assert_eq!(sum(&r), r.rx_packets, "no packet lost from the report");
        // Silent for the whole time to live: forgotten.
        let r = c.report("vm1", &BTreeMap::new(), t0 + PEER_TTL);
        assert!(r.peers.is_empty(), "{:?}", r.peers.len());
        assert_eq!(r.rx_packets, MAX_PEERS as u64 + 10, "the totals stay");
    }
}
