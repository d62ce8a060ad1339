//! The ACT's link to its peer's middleware: one TCP connection carrying
//! JSON lines, pipelined. A line goes out as soon as it is posted; a reader
//! thread hands the peer's answers, which come in the same order, to the
//! posters. So a slow peer (one being live-migrated) costs each write one
//! round trip, not a place in a queue of round trips.
//!
//! A link that fails (write error, peer closed, or no answer for
//! [`LinkTimeouts::answer`] while some are owed) is dead: every answer
//! still owed is `None`, and so is every later post. The owner replaces it.

use crate::replica::seal::{Seal, Unseal};
use serde_json::Value;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The peer's answer to one posted line, to wait for (`None`: the link
/// failed first).
pub struct Ticket(Receiver<Option<Value>>);

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ticket")
    }
}

impl Ticket {
    /// Blocks until the answer (or the link's failure): bounded, since the
    /// reader gives up after [`LinkTimeouts::answer`] without progress.
    pub fn wait(self) -> Option<Value> {
        self.0.recv().ok().flatten()
    }
}

#[derive(Default)]
struct Owed {
    waiting: VecDeque<Sender<Option<Value>>>,
    dead: bool,
}

pub struct PeerLink {
    writer: TcpStream,
    seal: Seal,
    owed: Arc<Mutex<Owed>>,
}

fn lock(m: &Mutex<Owed>) -> std::sync::MutexGuard<'_, Owed> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Fails every answer owed and every later post.
fn kill(owed: &Mutex<Owed>, stream: &TcpStream) {
    let mut o = lock(owed);
    o.dead = true;
    for tx in o.waiting.drain(..) {
        let _ = tx.send(None);
    }
    let _ = stream.shutdown(Shutdown::Both);
}

impl PeerLink {
    /// Takes over a connected stream (anything exchanged on it before is
    /// done); the peer must answer each line within `answer_timeout` of the
    /// previous answer while any is owed.
    /// `halves` seal the lines and open the answers ([`crate::replica::seal`]).
    pub fn start(
        stream: TcpStream,
        answer_timeout: Duration,
        (seal, unseal): (Seal, Unseal),
    ) -> std::io::Result<PeerLink> {
        let writer = stream.try_clone()?;
        stream.set_read_timeout(Some(answer_timeout))?;
        let owed = Arc::new(Mutex::new(Owed::default()));
        let o = owed.clone();
        std::thread::spawn(move || read_answers(stream, &o, unseal));
        Ok(PeerLink { writer, seal, owed })
    }

    pub fn is_dead(&self) -> bool {
        lock(&self.owed).dead
    }

    /// Sends one line; its answer comes with the ticket. A dead link
    /// answers `None` at once.
    pub fn post(&mut self, msg: &Value) -> Ticket {
        let (tx, rx) = channel();
        let line = self.seal.line(msg);
        let mut o = lock(&self.owed);
        if o.dead {
            let _ = tx.send(None);
            return Ticket(rx);
        }
        // Queued before it is written, so the answer finds its poster.
        o.waiting.push_back(tx);
        drop(o);
        if self.writer.write_all(line.as_bytes()).is_err() {
            kill(&self.owed, &self.writer);
        }
        Ticket(rx)
    }

    /// Sends one line and waits for its answer.
    pub fn ask(&mut self, msg: &Value) -> Option<Value> {
        self.post(msg).wait()
    }
}

impl Drop for PeerLink {
    fn drop(&mut self) {
        kill(&self.owed, &self.writer);
    }
}

/// Longest answer line taken from the peer.
const MAX_ANSWER: usize = 64 * 1024;

fn read_answers(stream: TcpStream, owed: &Mutex<Owed>, mut unseal: Unseal) {
    let mut r = BufReader::new(stream);
    // Kept across timeouts: a line may arrive in pieces.
    let mut line = String::new();
    loop {
        let room = (MAX_ANSWER + 1).saturating_sub(line.len()) as u64;
        match std::io::Read::take(&mut r, room).read_line(&mut line) {
            Ok(0) => break,
            // An answer is a few fields: a peer that sends more is broken.
            Ok(_) if line.len() > MAX_ANSWER => break,
            Ok(_) if line.ends_with('\n') => {
                let answer = unseal
                    .open(line.as_bytes())
                    .map_err(|e| eprintln!("duplex guest: answer from the peer: {e}"))
                    .ok();
                line.clear();
                let mut o = lock(owed);
                match o.waiting.pop_front() {
                    Some(tx) if answer.is_some() => {
                        let _ = tx.send(answer);
                    }
                    // Garbage, or an answer nobody asked for: the stream
                    // can no longer be trusted to pair answers.
                    Some(tx) => {
                        let _ = tx.send(None);
                        break;
                    }
                    None => break,
                }
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                let o = lock(owed);
                if o.dead || !o.waiting.is_empty() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    kill(owed, r.get_ref());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::net::TcpListener;

    /// A peer that answers each line with `{"ok":true,"n":<line number>}`,
    /// but none before it has read `first` lines; it reads `stop_after`
    /// lines at most, then goes silent.
    fn peer(first: usize, stop_after: usize) -> std::net::SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let answer = |n: usize| format!("{}\n", json!({"ok": true, "n": n}));
            for (n, _) in BufReader::new(s).lines().enumerate() {
                if n >= stop_after {
                    break;
                }
                if n + 1 == first {
                    (0..first).for_each(|k| w.write_all(answer(k).as_bytes()).unwrap());
                } else if n + 1 > first {
                    w.write_all(answer(n).as_bytes()).unwrap();
                }
            }
            std::thread::sleep(Duration::from_secs(5));
        });
        addr
    }

    /// The peer answers nothing before it has all ten lines: a link that
    /// waited for each answer before sending on would time out here.
    #[test]
    fn lines_go_out_before_earlier_answers_and_answers_pair_in_order() {
        let addr = peer(10, usize::MAX);
        let s = TcpStream::connect(addr).unwrap();
        let mut link =
            PeerLink::start(s, Duration::from_secs(5), crate::replica::seal::plain()).unwrap();
        let tickets: Vec<Ticket> = (0..10).map(|i| link.post(&json!({"i": i}))).collect();
        for (n, t) in tickets.into_iter().enumerate() {
            assert_eq!(t.wait(), Some(json!({"ok": true, "n": n})));
        }
        assert_eq!(link.ask(&json!({})), Some(json!({"ok": true, "n": 10})));
        assert!(!link.is_dead());
    }

    #[test]
    fn a_silent_peer_fails_every_owed_answer_and_later_posts() {
        let addr = peer(1, 2);
        let s = TcpStream::connect(addr).unwrap();
        let mut link =
            PeerLink::start(s, Duration::from_millis(200), crate::replica::seal::plain()).unwrap();
        assert!(link.ask(&json!({})).is_some());
        assert!(link.ask(&json!({})).is_some());
        let (a, b) = (link.post(&json!({})), link.post(&json!({})));
        assert_eq!((a.wait(), b.wait()), (None, None));
        assert!(link.is_dead());
        assert_eq!(link.ask(&json!({})), None, "dead: no answer, at once");
    }

    #[test]
    fn an_idle_link_outlives_the_answer_timeout() {
        let addr = peer(1, usize::MAX);
        let s = TcpStream::connect(addr).unwrap();
        let mut link =
            PeerLink::start(s, Duration::from_millis(50), crate::replica::seal::plain()).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(!link.is_dead());
        assert!(link.ask(&json!({})).is_some());
    }
}
