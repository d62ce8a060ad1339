//! The service network's witness: the guest pings an address on its
//! service network (its gateway, say; `Configure.witness`) as often as it
//! beats to its peer, as Pacemaker's `ping` resource does. When the two
//! members lose each other, the one that also lost the witness is the one
//! cut off, and the controller fails the pair over to the other.
//!
//! ICMP echo over a raw socket (the middleware runs as root); the replies
//! are reckoned by the same [`Ear`] as the peer's beats.

use crate::peer_beat::{pace, Ear, Shared};
use duplex_core::guest_proto::PEER_BEAT_MS;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

const ECHO_REQUEST: u8 = 8;
const ECHO_REPLY: u8 = 0;
/// Largest datagram read (an IP header and a small echo reply).
const MAX_READ: usize = 256;

/// A raw ICMP socket. `std`'s UDP socket only wraps `sendto`/`recvfrom`
/// on its descriptor, which is all a raw socket needs.
fn raw_icmp() -> std::io::Result<UdpSocket> {
    // SAFETY: plain socket(2); the descriptor is checked and then owned by
    // the returned socket alone.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh, valid descriptor nobody else holds.
    Ok(unsafe { UdpSocket::from_raw_fd(fd) })
}

/// The internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request with identifier `id` and sequence number `seq`.
pub fn echo_request(id: u16, seq: u16) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[0] = ECHO_REQUEST;
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..].copy_from_slice(b"duplexwt");
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// Whether `datagram` (as a raw socket reads it: IPv4 header first) is an
/// echo reply to us (identifier `id`). Anything short or malformed is not.
pub fn is_our_reply(datagram: &[u8], id: u16) -> bool {
    let Some(first) = datagram.first() else {
        return false;
    };
    let ihl = usize::from(first & 0x0f) * 4;
    let Some(icmp) = datagram.get(ihl..).filter(|_| ihl >= 20) else {
        return false;
    };
    icmp.len() >= 8 && icmp[0] == ECHO_REPLY && icmp[4..6] == id.to_be_bytes()
}

/// Starts pinging: `witness` reads the configured witness each period, and
/// `on_turn` runs when the witness is lost or heard again.
pub fn start(
    witness: impl Fn() -> Option<Ipv4Addr> + Send + 'static,
    on_turn: impl Fn(bool) + Send + 'static,
) -> std::io::Result<Shared> {
    let sock = raw_icmp()?;
    let id = (std::process::id() & 0xffff) as u16;
    let ear: Shared = Shared::default();
    let rx = sock.try_clone()?;
    let e = ear.clone();
    std::thread::spawn(move || listen(rx, id, e));
    let mut seq = 0u16;
    pace(ear.clone(), witness, on_turn, move |ip| {
        seq = seq.wrapping_add(1);
        // A lost echo is what the ping is there to notice.
        let _ = sock.send_to(&echo_request(id, seq), (ip, 0));
    });
    Ok(ear)
}

fn lock(e: &Shared) -> std::sync::MutexGuard<'_, Ear> {
    e.lock().unwrap_or_else(|p| p.into_inner())
}

fn listen(sock: UdpSocket, id: u16, ear: Shared) {
    let mut buf = [0u8; MAX_READ];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, SocketAddr::V4(from))) if is_our_reply(&buf[..n], id) => {
                lock(&ear).beat(*from.ip(), Instant::now())
            }
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(PEER_BEAT_MS)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_checks_out_and_only_our_replies_count() {
        let req = echo_request(0x1234, 7);
        assert_eq!(checksum(&req), 0, "a correct checksum sums to zero");
        assert_eq!((req[0], &req[4..6]), (ECHO_REQUEST, &[0x12, 0x34][..]));
        let mut reply = vec![0x45u8; 20];
        reply.extend_from_slice(&req);
        reply[20] = ECHO_REPLY;
        assert!(is_our_reply(&reply, 0x1234));
        assert!(!is_our_reply(&reply, 0x1235), "another pinger's reply");
        reply[20] = ECHO_REQUEST;
        assert!(!is_our_reply(&reply, 0x1234), "a request is no reply");
        for bad in [&[][..], &[0x45; 10][..], &[0x41; 30][..], &reply[..24]] {
            assert!(!is_our_reply(bad, 0x1234), "{bad:?}");
        }
    }

    #[test]
    fn odd_lengths_are_summed_with_a_zero_pad() {
        assert_eq!(checksum(&[0xff]), !0xff00);
        assert_eq!(checksum(&[]), 0xffff);
    }
}
