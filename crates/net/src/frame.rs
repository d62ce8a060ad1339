//! Just enough Ethernet/IPv4/ARP parsing to know who a frame is from and to
//! (pure; never panics on short or odd frames).

use duplex_core::classify::rule_match::{SCTP, TCP};
use duplex_core::classify::{Packet, Proto};
use duplex_core::mac::Mac;
use std::net::Ipv4Addr;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_VLAN: u16 = 0x8100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    pub dst: Mac,
    pub src: Mac,
    pub ethertype: u16,
    /// IPv4 source/destination, or ARP sender/target protocol addresses.
    pub src_ip: Option<Ipv4Addr>,
    pub dst_ip: Option<Ipv4Addr>,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP) for IPv4 frames.
    pub ip_proto: Option<u8>,
}

/// The MAC address at byte `at` of `b`, if `b` is long enough.
pub(crate) fn mac_at(b: &[u8], at: usize) -> Option<Mac> {
    let s = b.get(at..at + 6)?;
    let mut m = [0u8; 6];
    m.copy_from_slice(s);
    Some(Mac(m))
}

fn ip_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let s = b.get(at..at + 4)?;
    Some(Ipv4Addr::new(s[0], s[1], s[2], s[3]))
}

/// Parses an Ethernet frame; `None` if shorter than an Ethernet header.
pub fn parse(frame: &[u8]) -> Option<FrameInfo> {
    let dst = mac_at(frame, 0)?;
    let src = mac_at(frame, 6)?;
    let mut off = 12;
    let mut ethertype = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
    if ethertype == ETHERTYPE_VLAN {
        off += 4;
        ethertype = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
    }
    let l3 = off + 2;
    let mut info = FrameInfo {
        dst,
        src,
        ethertype,
        src_ip: None,
        dst_ip: None,
        ip_proto: None,
    };
    match ethertype {
        ETHERTYPE_IPV4 if frame.get(l3).is_some_and(|v| v >> 4 == 4) => {
            info.ip_proto = frame.get(l3 + 9).copied();
            info.src_ip = ip_at(frame, l3 + 12);
            info.dst_ip = ip_at(frame, l3 + 16);
        }
        ETHERTYPE_ARP => {
            info.src_ip = ip_at(frame, l3 + 14);
            info.dst_ip = ip_at(frame, l3 + 24);
        }
        _ => {}
    }
    Some(info)
}

/// The facts the S2 classifier looks at (protocol, addresses, ports,
/// DSCP, the transport payload), from a frame. Never panics: what a short
/// or odd frame lacks is `None` (or an empty payload). A non-first IPv4
/// fragment has no ports and its payload is the fragment's data.
pub fn packet(frame: &[u8]) -> Packet<'_> {
    let mut p = Packet {
        proto: Proto::Other,
        src: None,
        dst: None,
        src_port: None,
        dst_port: None,
        dscp: None,
        payload: &[],
    };
    let Some(info) = parse(frame) else { return p };
    let l3 = if frame.get(12..14) == Some(&ETHERTYPE_VLAN.to_be_bytes()[..]) {
        18
    } else {
        14
    };
    p.src = info.src_ip;
    p.dst = info.dst_ip;
    match info.ethertype {
        ETHERTYPE_ARP => p.proto = Proto::Arp,
        ETHERTYPE_IPV4 => {
            let Some(proto) = info.ip_proto else { return p };
            p.proto = Proto::Ip(proto);
            p.dscp = frame.get(l3 + 1).map(|tos| tos >> 2);
            l4(frame, l3, proto, &mut p);
        }
        _ => {}
    }
    p
}

/// Ports and payload of an IPv4 packet whose header starts at `l3`.
fn l4<'a>(frame: &'a [u8], l3: usize, proto: u8, p: &mut Packet<'a>) {
    let Some(&vihl) = frame.get(l3) else { return };
    let ihl = usize::from(vihl & 0x0f) * 4;
    let total = frame
        .get(l3 + 2..l3 + 4)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .unwrap_or(0);
    // The IP total length bounds the packet (Ethernet pads short frames).
    let end = (l3 + total).min(frame.len());
    let first_fragment = frame
        .get(l3 + 6..l3 + 8)
        .is_some_and(|b| u16::from_be_bytes([b[0], b[1]]) & 0x1fff == 0);
    let start = l3 + ihl;
    if ihl < 20 || start > end {
        return;
    }
    let body = &frame[start..end];
    if !first_fragment || !Proto::Ip(proto).has_ports() {
        p.payload = body;
        return;
    }
    let port = |at: usize| {
        body.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    p.src_port = port(0);
    p.dst_port = port(2);
    let header = match proto {
        TCP => body
            .get(12)
            .map_or(usize::MAX, |off| usize::from(off >> 4) * 4),
        SCTP => 12,
        _ => 8,
    };
    p.payload = body.get(header..).unwrap_or(&[]);
}

/// A gratuitous ARP request announcing that `ip` is at `mac`.
pub fn gratuitous_arp(mac: Mac, ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]); // Ethernet/IPv4, request
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip.octets());
    f.resize(60, 0);
    f
}

/// The ARP opcode of a request.
const ARP_REQUEST: u16 = 1;

/// The answer `mac` gives for `ip` to an ARP request (`request` asks who
/// has `ip`), or `None` if `request` is not such a request.
pub fn arp_reply(request: &[u8], mac: Mac, ip: Ipv4Addr) -> Option<Vec<u8>> {
    let info = parse(request)?;
    let l3 = 14;
    let op = u16::from_be_bytes([*request.get(l3 + 6)?, *request.get(l3 + 7)?]);
    if info.ethertype != ETHERTYPE_ARP || op != ARP_REQUEST || info.dst_ip != Some(ip) {
        return None;
    }
    let asker = mac_at(request, l3 + 8)?;
    let asker_ip = info.src_ip?;
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&asker.0);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]); // Ethernet/IPv4, reply
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&asker.0);
    f.extend_from_slice(&asker_ip.octets());
    f.resize(60, 0);
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp_frame() -> Vec<u8> {
        let mut f = vec![1, 2, 3, 4, 5, 6, 0x52, 0x54, 0, 0, 0, 1, 0x08, 0x00];
        let mut ip = vec![
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        ip.extend_from_slice(&[0; 8]);
        f.extend(ip);
        f
    }

    #[test]
    fn answers_an_arp_request_for_its_address_only() {
        let (asker, me) = (Mac([2, 0, 0, 0, 0, 9]), Mac([2, 0, 0, 0, 0, 1]));
        let ip = Ipv4Addr::new(10, 0, 0, 5);
        let mut req = gratuitous_arp(asker, Ipv4Addr::new(10, 0, 0, 9));
        req[38..42].copy_from_slice(&ip.octets());
        let r = arp_reply(&req, me, ip).expect("a request for ip");
        let i = parse(&r).unwrap();
        assert_eq!((i.dst, i.src), (asker, me));
        assert_eq!(i.src_ip, Some(ip));
        assert_eq!(i.dst_ip, Some(Ipv4Addr::new(10, 0, 0, 9)));
        assert_eq!(&r[20..22], &[0, 2]);
        assert_eq!(arp_reply(&req, me, Ipv4Addr::new(10, 0, 0, 6)), None);
        assert_eq!(arp_reply(&r, me, ip), None, "a reply is not a request");
        assert_eq!(arp_reply(&udp_frame(), me, ip), None);
        for n in 0..req.len() {
            let _ = arp_reply(&req[..n], me, ip);
        }
    }

    #[test]
    fn parses_ipv4_udp() {
        let i = parse(&udp_frame()).unwrap();
        assert_eq!(i.src, Mac([0x52, 0x54, 0, 0, 0, 1]));
        assert_eq!(i.ethertype, ETHERTYPE_IPV4);
        assert_eq!(i.ip_proto, Some(17));
        assert_eq!(i.src_ip, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(i.dst_ip, Some(Ipv4Addr::new(10, 0, 0, 2)));
    }

    #[test]
    fn packet_facts_for_the_classifier() {
        let mut f = udp_frame();
        f[15] = 46 << 2; // TOS: DSCP EF
        f[16..18].copy_from_slice(&(28u16 + 4).to_be_bytes());
        f[34..36].copy_from_slice(&5060u16.to_be_bytes());
        f[36..38].copy_from_slice(&40000u16.to_be_bytes());
        f.extend_from_slice(b"SIP/");
        f.extend_from_slice(&[0; 8]); // Ethernet padding, not payload
        let p = packet(&f);
        assert_eq!(p.proto, Proto::Ip(17));
        assert_eq!(
            (p.src_port, p.dst_port, p.dscp),
            (Some(5060), Some(40000), Some(46))
        );
        assert_eq!(p.payload, b"SIP/");
        // A later fragment: no ports, its data as payload.
        f[20] = 0x00;
        f[21] = 0x10;
        let p = packet(&f);
        assert_eq!(p.src_port, None);
        assert_eq!(p.payload.len(), 12);
        let garp = gratuitous_arp(Mac([2; 6]), Ipv4Addr::new(1, 2, 3, 4));
        let arp = packet(&garp);
        assert_eq!(arp.proto, Proto::Arp);
        assert_eq!(arp.dscp, None);
    }

    #[test]
    fn parses_garp() {
        let mac = Mac([0x52, 0x54, 0, 9, 9, 9]);
        let ip = Ipv4Addr::new(10, 77, 0, 100);
        let f = gratuitous_arp(mac, ip);
        let i = parse(&f).unwrap();
        assert!(i.dst.is_broadcast());
        assert_eq!((i.src, i.src_ip, i.dst_ip), (mac, Some(ip), Some(ip)));
    }

    #[test]
    fn every_truncation_is_safe() {
        let f = udp_frame();
        for n in 0..f.len() {
            let r = parse(&f[..n]);
            assert_eq!(r.is_some(), n >= 14, "len {n}");
        }
        let g = gratuitous_arp(Mac([2; 6]), Ipv4Addr::new(1, 2, 3, 4));
        for n in 0..g.len() {
            let _ = parse(&g[..n]);
            let _ = packet(&g[..n]);
        }
        for n in 0..f.len() {
            let _ = packet(&f[..n]);
        }
        // A TCP header claiming more than the frame holds.
        let mut t = udp_frame();
        t[23] = 6;
        t.extend_from_slice(&[0; 12]);
        t[46] = 0xf0;
        assert_eq!(packet(&t).payload, b"");
    }
}
