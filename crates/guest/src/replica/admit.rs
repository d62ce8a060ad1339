//! What the replication listener lets in: a connection only from the
//! configured peer (anyone else on the service network could replace the
//! SBY's state or inject writes into the ACT), at most
//! [`MAX_PEER_CONNS`] opening at once and as many served ([`Links`]: the
//! newest in, the oldest closed), and lines of at most [`MAX_LINE`] bytes.

use std::collections::VecDeque;
use std::io::{BufRead, Read};
use std::net::{IpAddr, Ipv4Addr, Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// The authenticated peer links being served, oldest first, at most
/// [`MAX_PEER_CONNS`]: one more closes the oldest if that one has been
/// open [`EVICTABLE_AFTER`] (else it is refused). A link its peer left
/// without a word (its VM moved or was deleted) blocks its reader for
/// ever; counted against a fixed limit, such links kept the live one out
/// (seen in CI: "4 already open" for a minute, until the SBY was cut off
/// and re-created).
#[derive(Default)]
pub struct Links {
    open: Mutex<VecDeque<(u64, Instant, TcpStream)>>,
    next: AtomicU64,
}

/// How long a link is open before a new one may close it: longer than a
/// late write's connection lives (a few seconds at most), so only the
/// ACT's lasting link or a stale one is ever closed.
pub const EVICTABLE_AFTER: Duration = Duration::from_secs(10);

/// A link's place in [`Links`], given back when dropped.
pub struct Held {
    links: Arc<Links>,
    id: u64,
}

/// What [`Links::hold`] did with a new link.
pub enum Admitted {
    /// Served, in a free place.
    Free(Held),
    /// Served, in the place of the oldest link, closed.
    Evicted(Held),
    /// Refused: every place is held by a link younger than
    /// [`EVICTABLE_AFTER`].
    Full,
}

impl Links {
    /// Serves `conn` (a clone of the served stream) at `now`, if it may.
    pub fn hold(links: &Arc<Links>, conn: TcpStream, now: Instant) -> Admitted {
        let mut open = links.open.lock().unwrap_or_else(|e| e.into_inner());
        let evicted = match open.front() {
            Some((_, since, _)) if open.len() >= MAX_PEER_CONNS => {
                if now.saturating_duration_since(*since) < EVICTABLE_AFTER {
                    return Admitted::Full;
                }
                open.pop_front()
            }
            _ => None,
        };
        let id = links.next.fetch_add(1, Ordering::SeqCst);
        open.push_back((id, now, conn));
        drop(open);
        let held = Held {
            links: links.clone(),
            id,
        };
        match evicted {
            Some((_, _, old)) => {
                // Its reader sees the end of the stream and gives its place up.
                let _ = old.shutdown(Shutdown::Both);
                Admitted::Evicted(held)
            }
            None => Admitted::Free(held),
        }
    }

    /// Links served now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut open = self.links.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|(id, _, _)| *id != self.id);
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
    fn a_new_link_closes_the_oldest_only_once_it_is_old_enough() {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let pair = || {
            let client = TcpStream::connect(addr).unwrap();
            let (server, _) = listener.accept().unwrap();
            (client, server)
        };
        let links = Arc::new(Links::default());
        let t0 = Instant::now();
        let mut clients = Vec::new();
        let mut held = Vec::new();
        for _ in 0..MAX_PEER_CONNS {
            let (c, s) = pair();
            let Admitted::Free(h) = Links::hold(&links, s, t0) else {
                panic!("a free place")
            };
            clients.push(c);
            held.push(h);
        }
        let (_young, s) = pair();
        let early = t0 + EVICTABLE_AFTER - Duration::from_millis(1);
        assert!(matches!(Links::hold(&links, s, early), Admitted::Full));
        let (_c, s) = pair();
        let Admitted::Evicted(newest) = Links::hold(&links, s, t0 + EVICTABLE_AFTER) else {
            panic!("the oldest makes room")
        };
        assert_eq!(links.len(), MAX_PEER_CONNS);
        // The oldest link's peer sees it closed; the next one is not.
        let mut buf = [0u8; 1];
        assert_eq!(clients[0].read(&mut buf).unwrap(), 0);
        clients[1].set_nonblocking(true).unwrap();
        assert!(
            clients[1].read(&mut buf).is_err(),
            "still open, nothing to read"
        );
        drop(held);
        assert_eq!(links.len(), 1, "the others given back, the newest kept");
        drop(newest);
        assert_eq!(links.len(), 0);
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
