//! The guest-to-guest heartbeat: each member sends a small UDP datagram to
//! its peer every [`PEER_BEAT_MS`] over the service network, and listens
//! for the peer's. A peer silent for [`PEER_LOST_MS`] is lost: the guest
//! sends its `heartbeat` event at once (not at the next period), so the
//! agent can tell the controller within a fraction of a second that the
//! VM on the other host stopped (its host may be gone).
//!
//! The reckoning ([`Ear`]) is pure, with time as an argument; the threads
//! around it only move datagrams and read the clock.

use duplex_core::guest_proto::{PeerHeard, PEER_BEAT_MS, PEER_BEAT_PORT, PEER_LOST_MS};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The content of a beat (anything else on the port is ignored).
const BEAT: &[u8] = b"duplex-peer-beat";
/// A gap between two ticks of the beat longer than this means this guest
/// itself did not run (paused by a live migration's last step, starved of
/// CPU): the silence it saw is forgiven, it says nothing of the peer.
pub const STALL: Duration = Duration::from_millis(3 * PEER_BEAT_MS);

/// What one guest has heard of its peer.
#[derive(Debug, Default)]
pub struct Ear {
    peer: Option<Ipv4Addr>,
    heard: Option<Instant>,
    /// Whether the last [`Ear::turn`] found the peer lost.
    lost: bool,
    /// The last [`Ear::tick`].
    ticked: Option<Instant>,
}

impl Ear {
    /// The configured peer; a new one starts unheard.
    pub fn set_peer(&mut self, peer: Option<Ipv4Addr>) {
        if peer != self.peer {
            *self = Ear {
                peer,
                ..Ear::default()
            };
        }
    }

    /// A beat arrived from `from`; only the configured peer counts.
    pub fn beat(&mut self, from: Ipv4Addr, now: Instant) {
        if Some(from) == self.peer {
            self.heard = Some(now);
        }
    }

    pub fn sight(&self, now: Instant) -> Option<PeerHeard> {
        let silent_ms = now.saturating_duration_since(self.heard?).as_millis() as u64;
        Some(PeerHeard {
            silent_ms,
            lost: silent_ms > PEER_LOST_MS,
        })
    }

    /// The beat's period came round at `now`: after a stall (a gap over
    /// [`STALL`] since the last tick), the stall's time is not counted as
    /// the peer's silence.
    pub fn tick(&mut self, now: Instant) {
        if let Some(prev) = self.ticked.replace(now) {
            let gap = now.saturating_duration_since(prev);
            if gap > STALL {
                let forgiven = gap - Duration::from_millis(PEER_BEAT_MS);
                self.heard = self.heard.map(|h| (h + forgiven).min(now));
            }
        }
    }

    /// `Some(lost)` when the peer was just lost or just heard again.
    pub fn turn(&mut self, now: Instant) -> Option<bool> {
        let lost = self.sight(now).is_some_and(|s| s.lost);
        (lost != std::mem::replace(&mut self.lost, lost)).then_some(lost)
    }
}

pub type Shared = Arc<Mutex<Ear>>;

fn lock(e: &Shared) -> std::sync::MutexGuard<'_, Ear> {
    e.lock().unwrap_or_else(|p| p.into_inner())
}

/// The period of a beat or a ping, on a thread of its own: every
/// [`PEER_BEAT_MS`] it reads the address to hear (`target`), reckons the
/// ear (a stall forgiven), sends to the address (`send`), and runs
/// `on_turn` when the address was just lost or heard again.
pub fn pace(
    ear: Shared,
    target: impl Fn() -> Option<Ipv4Addr> + Send + 'static,
    on_turn: impl Fn(bool) + Send + 'static,
    mut send: impl FnMut(Ipv4Addr) + Send + 'static,
) {
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(PEER_BEAT_MS));
        let addr = target();
        let turned = {
            let mut ear = lock(&ear);
            ear.set_peer(addr);
            let now = Instant::now();
            ear.tick(now);
            ear.turn(now)
        };
        if let Some(ip) = addr {
            send(ip);
        }
        if let Some(lost) = turned {
            on_turn(lost);
        }
    });
}

/// Starts the beat: `peer` reads the configured peer each period, and
/// `on_turn` runs when the peer is lost or heard again.
pub fn start(
    peer: impl Fn() -> Option<Ipv4Addr> + Send + 'static,
    on_turn: impl Fn(bool) + Send + 'static,
) -> std::io::Result<Shared> {
    let sock = UdpSocket::bind(("0.0.0.0", PEER_BEAT_PORT))?;
    let ear: Shared = Arc::default();
    let rx = sock.try_clone()?;
    let e = ear.clone();
    std::thread::spawn(move || listen(rx, e));
    pace(ear.clone(), peer, on_turn, move |ip| {
        // A lost datagram is what the beat is there to notice.
        let _ = sock.send_to(BEAT, (ip, PEER_BEAT_PORT));
    });
    Ok(ear)
}

fn listen(sock: UdpSocket, ear: Shared) {
    let mut buf = [0u8; 64];
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, SocketAddr::V4(from))) if &buf[..n] == BEAT => {
                lock(&ear).beat(*from.ip(), Instant::now())
            }
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(PEER_BEAT_MS)),
        }
    }
}

/// What the guest hears of its peer now.
pub fn heard(ear: &Shared) -> Option<PeerHeard> {
    lock(ear).sight(Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const Q: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);

    #[test]
    fn lost_after_the_limit_once_heard_and_found_again() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut e = Ear::default();
        e.set_peer(Some(P));
        assert_eq!(
            (e.sight(ms(5000)), e.turn(ms(5000))),
            (None, None),
            "never heard: not lost"
        );
        e.beat(Q, ms(0));
        assert_eq!(e.sight(ms(0)), None, "only the peer counts");
        e.beat(P, ms(0));
        assert_eq!(e.turn(ms(PEER_LOST_MS)), None);
        assert_eq!(e.turn(ms(PEER_LOST_MS + 1)), Some(true));
        assert_eq!(e.turn(ms(PEER_LOST_MS + 2)), None, "said once");
        assert_eq!(
            e.sight(ms(900)).map(|s| (s.silent_ms, s.lost)),
            Some((900, true))
        );
        e.beat(P, ms(1000));
        assert_eq!(e.turn(ms(1000)), Some(false));
        e.set_peer(Some(Q));
        assert_eq!(e.sight(ms(1000)), None, "a new peer starts unheard");
    }

    /// A guest paused for 2 s (a live migration's last step) finds its
    /// peer silent for as long: that silence is its own, not the peer's.
    /// A peer silent while the guest ticks on is lost as ever.
    #[test]
    fn a_stall_of_the_guest_itself_is_forgiven() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut e = Ear::default();
        e.set_peer(Some(P));
        e.beat(P, ms(0));
        e.tick(ms(100));
        e.tick(ms(2100));
        assert_eq!(e.turn(ms(2100)), None, "not lost after its own stall");
        assert!(e.sight(ms(2100)).is_some_and(|s| !s.lost));
        let mut t = 2100;
        while t < 2100 + PEER_LOST_MS + 200 {
            t += PEER_BEAT_MS;
            e.tick(ms(t));
        }
        assert_eq!(e.turn(ms(t)), Some(true), "lost once silent while awake");
    }
}
