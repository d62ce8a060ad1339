//! Just enough Ethernet/IPv4/ARP parsing to know who a frame is from and to
//! (pure; never panics on short or odd frames).

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

fn mac_at(b: &[u8], at: usize) -> Option<Mac> {
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
    fn parses_ipv4_udp() {
        let i = parse(&udp_frame()).unwrap();
        assert_eq!(i.src, Mac([0x52, 0x54, 0, 0, 0, 1]));
        assert_eq!(i.ethertype, ETHERTYPE_IPV4);
        assert_eq!(i.ip_proto, Some(17));
        assert_eq!(i.src_ip, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(i.dst_ip, Some(Ipv4Addr::new(10, 0, 0, 2)));
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
        }
    }
}
