//! The service address on eth0: claimed (added + gratuitous ARP) when the
//! VM becomes ACT, released before it stops being ACT.
//!
//! Both are on a switchover's critical path (the old ACT's network element
//! holds the clients' frames meanwhile), so they talk to the kernel
//! directly — rtnetlink for the address, a packet socket for the
//! announcement — instead of spawning `ip` and `arping`, which costs tens to
//! hundreds of milliseconds under emulation.

use crate::state::PairConfig;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

const IFACE: &str = "eth0";
/// Link-local, used by no one: the address [`rehearse`] adds and removes.
const REHEARSAL_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 77, 77);
/// Announcements sent on a claim, this far apart (the first at once).
const ANNOUNCEMENTS: u32 = 3;
const ANNOUNCE_GAP: Duration = Duration::from_millis(200);

/// Adds the address, calls `added` (it is local now: replies from it can
/// go out), then announces it.
pub fn claim(c: &PairConfig, added: impl FnOnce()) -> Result<(), String> {
    claim_announcing(c, ANNOUNCEMENTS, added)
}

fn claim_announcing(
    c: &PairConfig,
    announcements: u32,
    added: impl FnOnce(),
) -> Result<(), String> {
    let index = ifindex(IFACE)?;
    change(c, index, true).map_err(|e| e.describe(c, true))?;
    added();
    // Neighbours learn the new holder at once; repeats cover a lost frame.
    let mac = mac_of(IFACE)?;
    announce(index, mac, c.vip)?;
    let vip = c.vip;
    std::thread::spawn(move || {
        for _ in 1..announcements {
            std::thread::sleep(ANNOUNCE_GAP);
            if let Err(e) = announce(index, mac, vip) {
                eprintln!("duplex guest: announcing {vip}: {e}");
            }
        }
    });
    Ok(())
}

pub fn release(c: &PairConfig) -> Result<(), String> {
    let index = ifindex(IFACE)?;
    match change(c, index, false) {
        // Already gone: released is released.
        Err(Failed::Kernel(e))
            if matches!(e.raw_os_error(), Some(libc::EADDRNOTAVAIL | libc::ENODEV)) =>
        {
            Ok(())
        }
        r => r.map_err(|e| e.describe(c, false)),
    }
}

/// The claim and release path once, with nothing at stake: a link-local
/// address nobody uses is added with a prefix (as a service address is, so
/// the kernel's prefix-route path runs too), announced once, and deleted.
/// Run after a live migration, so that a takeover right after the move does
/// not wait for the emulator to translate this code (measured under TCG:
/// first claim after a move 124 ms, the next 20 ms).
pub fn rehearse() -> Result<(), String> {
    let probe = PairConfig {
        vip: REHEARSAL_IP,
        vip_prefix_len: 24,
        peer: None,
        witness: None,
        key: None,
    };
    let claimed = claim_announcing(&probe, 1, || {});
    release(&probe)?;
    claimed
}

/// Why an address change failed: the kernel said no, or talking to it did.
enum Failed {
    Kernel(std::io::Error),
    Other(String),
}

impl Failed {
    fn describe(self, c: &PairConfig, add: bool) -> String {
        let what = if add { "adding" } else { "deleting" };
        match self {
            Failed::Kernel(e) => format!("{what} {}/{}: {e}", c.vip, c.vip_prefix_len),
            Failed::Other(e) => format!("{what} {}: {e}", c.vip),
        }
    }
}

fn ifindex(name: &str) -> Result<u32, String> {
    let c = std::ffi::CString::new(name).map_err(|e| e.to_string())?;
    // SAFETY: a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(format!("no interface {name}")),
        i => Ok(i),
    }
}

fn mac_of(name: &str) -> Result<[u8; 6], String> {
    let path = format!("/sys/class/net/{name}/address");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let m: duplex_core::mac::Mac = text.trim().parse().map_err(|e| format!("{path}: {e:?}"))?;
    Ok(m.0)
}

/// Adds (`add`) or deletes the address, waiting for the kernel's answer.
fn change(c: &PairConfig, index: u32, add: bool) -> Result<(), Failed> {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = c.vip_prefix_len;
    msg.header.index = index;
    let ip = IpAddr::V4(c.vip);
    msg.attributes.push(AddressAttribute::Local(ip));
    msg.attributes.push(AddressAttribute::Address(ip));
    let (payload, flags) = if add {
        // REPLACE: an address left from before is fine.
        let f = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        (RouteNetlinkMessage::NewAddress(msg), f)
    } else {
        (
            RouteNetlinkMessage::DelAddress(msg),
            NLM_F_REQUEST | NLM_F_ACK,
        )
    };
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = 1;
    let mut req = NetlinkMessage::new(header, NetlinkPayload::from(payload));
    req.finalize();
    let mut buf = vec![0u8; req.buffer_len()];
    req.serialize(&mut buf);

    let sock = || -> std::io::Result<Socket> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        sock.send(&buf, 0)?;
        Ok(sock)
    };
    let io = |e: std::io::Error| Failed::Other(format!("netlink: {e}"));
    let (answer, _) = sock().map_err(io)?.recv_from_full().map_err(io)?;
    let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&answer)
        .map_err(|e| Failed::Other(format!("bad netlink answer: {e}")))?;
    match reply.payload {
        NetlinkPayload::Error(e) if e.code.is_some() => Err(Failed::Kernel(e.to_io())),
        NetlinkPayload::Error(_) => Ok(()),
        other => Err(Failed::Other(format!("unexpected answer {other:?}"))),
    }
}

/// One gratuitous ARP request for `ip` from `mac`, on interface `index`.
fn announce(index: u32, mac: [u8; 6], ip: Ipv4Addr) -> Result<(), String> {
    let frame = duplex_net::frame::gratuitous_arp(duplex_core::mac::Mac(mac), ip);
    let proto = (libc::ETH_P_ARP as u16).to_be();
    // SAFETY: plain socket(2); the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    if fd < 0 {
        return Err(format!(
            "packet socket: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: sockaddr_ll is plain data; zero is a valid start.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = proto;
    to.sll_ifindex = index as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    // SAFETY: valid fd, buffer and address of the sizes given.
    let rc = unsafe {
        libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&to as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    let sent = if rc < 0 {
        Err(format!(
            "sending an announcement for {ip}: {}",
            std::io::Error::last_os_error()
        ))
    } else {
        Ok(())
    };
    // SAFETY: fd is ours and not used after this.
    unsafe { libc::close(fd) };
    sent
}
