//! What the replication listener lets in: a connection only from the
//! configured peer (anyone else on the service network could replace the
//! SBY's state or inject writes into the ACT), at most
//! [`MAX_PEER_CONNS`] at once, and lines of at most [`MAX_LINE`] bytes.

use std::io::{BufRead, Read};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Longest line on a replication connection: a whole-state snapshot is one
/// line, so this bounds the replicated state too.
pub const MAX_LINE: usize = 16 * 1024 * 1024;
/// Peer connections served at once (the ACT keeps one; a reconnect may
/// briefly overlap the old one).
pub const MAX_PEER_CONNS: usize = 4;

/// Whether a connection from `from` is the configured peer's.
pub fn peer(from: IpAddr, configured: Option<Ipv4Addr>) -> Result<(), String> {
    match configured {
        None => Err(format!(
            "refused a replication connection from {from}: no peer is configured"
        )),
        Some(p) if from == IpAddr::V4(p) => Ok(()),
        Some(p) => Err(format!(
            "refused a replication connection from {from}: only the peer {p} may connect"
        )),
    }
}

/// A slot among [`MAX_PEER_CONNS`], held for a connection's life.
pub struct Slot(Arc<AtomicUsize>);

impl Slot {
    pub fn take(count: &Arc<AtomicUsize>) -> Option<Slot> {
        let taken = count.fetch_add(1, Ordering::SeqCst);
        let slot = Slot(count.clone());
        (taken < MAX_PEER_CONNS).then_some(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Reads one line into `buf` (cleared first): `Ok(None)` at the end of
/// the stream, an error for a line longer than `max`.
pub fn read_line(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<()>> {
    buf.clear();
    let n = Read::by_ref(r)
        .take(max as u64 + 1)
        .read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.len() > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a line longer than {max} bytes"),
        ));
    }
    Ok(Some(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_peer_connects() {
        let p = Ipv4Addr::new(10, 0, 0, 2);
        assert!(peer(IpAddr::V4(p), Some(p)).is_ok());
        let e = peer(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 66)), Some(p)).unwrap_err();
        assert!(e.contains("only the peer 10.0.0.2"), "{e}");
        assert!(peer(IpAddr::V4(p), None).unwrap_err().contains("no peer"));
        assert!(peer("::1".parse().unwrap(), Some(p)).is_err());
    }

    #[test]
    fn slots_are_bounded_and_given_back() {
        let count = Arc::new(AtomicUsize::new(0));
        let held: Vec<Slot> = (0..MAX_PEER_CONNS)
            .filter_map(|_| Slot::take(&count))
            .collect();
        assert_eq!(held.len(), MAX_PEER_CONNS);
        assert!(Slot::take(&count).is_none(), "one over the limit");
        drop(held);
        assert!(Slot::take(&count).is_some());
        assert_eq!(count.load(Ordering::SeqCst), 0, "every slot given back");
    }

    #[test]
    fn lines_are_bounded() {
        let mut buf = Vec::new();
        let mut r = std::io::Cursor::new(b"short\nmuch too long\n".to_vec());
        assert!(read_line(&mut r, &mut buf, 8).unwrap().is_some());
        assert_eq!(buf, b"short\n");
        assert!(read_line(&mut r, &mut buf, 8).is_err());
        let mut r = std::io::Cursor::new(b"".to_vec());
        assert!(read_line(&mut r, &mut buf, 8).unwrap().is_none());
    }
}
