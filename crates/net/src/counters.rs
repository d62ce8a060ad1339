//! Traffic counters per VM and per peer (MAC + IP): the raw material of the
//! traffic matrix network-aware placement uses.

use crate::frame::FrameInfo;
use crate::stage::{Direction, Stage, Verdict};
use duplex_core::agent_api::{DropCount, PeerCounters, TrafficReport};
use duplex_core::mac::Mac;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    tx_packets: u64,
    tx_bytes: u64,
    rx_packets: u64,
    rx_bytes: u64,
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
            key = (Mac([0xff; 6]), None);
        }
        bump(self.peers.entry(key).or_default());
    }

    pub fn report(&self, vm: &str, drops: &BTreeMap<&'static str, u64>) -> TrafficReport {
        TrafficReport {
            vm: vm.to_string(),
            tx_packets: self.total.tx_packets,
            tx_bytes: self.total.tx_bytes,
            rx_packets: self.total.rx_packets,
            rx_bytes: self.total.rx_bytes,
            peers: self
                .peers
                .iter()
                .map(|((mac, ip), c)| PeerCounters {
                    mac: *mac,
                    ip: *ip,
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
        }
    }
}

/// Pipeline stage that counts and passes everything.
pub struct CountStage(pub Arc<Mutex<Counters>>);

impl Stage for CountStage {
    fn on_frame(&mut self, dir: Direction, info: Option<&FrameInfo>, frame: Vec<u8>) -> Verdict {
        if let Ok(mut c) = self.0.lock() {
            c.count(dir, info, frame.len());
        }
        Verdict::Pass(frame)
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
        let r = c.report("vm1", &BTreeMap::new());
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
    }
}
