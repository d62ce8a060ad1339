//! The user-space WAN relay (`duplex lab wan-relay`), for kernels without
//! netem: copies every frame between two interfaces, each after half the
//! round trip, dropping the configured share (see [`crate::wan`]).
//!
//! [`DelayLine`] is the pure part (one direction's queue); [`run`] moves
//! frames between two [`FramePort`]s (the CLI gives it raw packet sockets)
//! on one thread.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::plan::WanSettings;

/// Frames one direction holds before it drops new ones (netem's own
/// default limit is 1000 packets).
pub const QUEUE_LIMIT: usize = 10_000;
/// Largest frame read: a not yet segmented frame and its header.
pub const MAX_PACKET: usize = 65_536 + 64;
/// Frames read from one port before the other gets its turn.
const BATCH: usize = 64;
/// Longest wait when nothing is queued.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// Where the relay reads and writes frames (whole, as one buffer each).
pub trait FramePort {
    /// For `poll`: readable when a frame waits.
    fn raw_fd(&self) -> RawFd;
    /// One frame into `buf`; `WouldBlock` when none waits.
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn send(&self, frame: &[u8]) -> io::Result<()>;
}

/// One direction of the WAN: frames wait `delay`, a share `loss` is lost.
#[derive(Debug)]
pub struct DelayLine {
    delay: Duration,
    /// Probability of losing a frame, 0..=1.
    loss: f64,
    rng: u64,
    queue: VecDeque<(Instant, Vec<u8>)>,
    pub lost: u64,
    pub overflowed: u64,
}

impl DelayLine {
    /// A line with `settings`' one-way delay and loss; `seed` drives the
    /// losses (any value; 0 is replaced).
    pub fn new(settings: &WanSettings, seed: u64) -> DelayLine {
        DelayLine {
            delay: Duration::from_micros(settings.one_way_us()),
            loss: (settings.loss_pct / 100.0).clamp(0.0, 1.0),
            rng: if seed == 0 {
                0x9e37_79b9_7f4a_7c15
            } else {
                seed
            },
            queue: VecDeque::new(),
            lost: 0,
            overflowed: 0,
        }
    }

    /// Takes `frame`, arrived at `now`; false if it is lost or the line is full.
    pub fn push(&mut self, now: Instant, frame: &[u8]) -> bool {
        if self.lose() {
            self.lost += 1;
            return false;
        }
        if self.queue.len() >= QUEUE_LIMIT {
            self.overflowed += 1;
            return false;
        }
        self.queue.push_back((now + self.delay, frame.to_vec()));
        true
    }

    /// When the oldest frame is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.front().map(|(t, _)| *t)
    }

    /// The oldest frame, if it is due at `now` (frames leave in order).
    pub fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        match self.queue.front() {
            Some((t, _)) if *t <= now => self.queue.pop_front().map(|(_, f)| f),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn lose(&mut self) -> bool {
        if self.loss <= 0.0 {
            return false;
        }
        if self.loss >= 1.0 {
            return true;
        }
        // xorshift64*, top 53 bits as a uniform value in [0, 1).
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        (x as f64 / (1u64 << 53) as f64) < self.loss
    }
}

/// A seed from the clock and the pid.
fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// Which of `ports` are readable, waiting at most `wait`.
fn readable<P: FramePort>(ports: &[P; 2], wait: Duration) -> io::Result<[bool; 2]> {
    let mut fds = ports.each_ref().map(|p| libc::pollfd {
        fd: p.raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    });
    let ts = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: wait.subsec_nanos() as libc::c_long,
    };
    // SAFETY: ppoll over a live array of pollfds of its length, a live
    // timespec and no signal mask.
    let rc = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, &ts, std::ptr::null()) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::Interrupted => Ok([false; 2]),
            _ => Err(e),
        };
    }
    Ok(fds.map(|f| f.revents & libc::POLLIN != 0))
}

/// Reads up to [`BATCH`] frames from `port` into `line`.
fn drain<P: FramePort>(port: &P, line: &mut DelayLine, buf: &mut [u8]) -> io::Result<()> {
    for _ in 0..BATCH {
        let n = match port.recv(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        line.push(Instant::now(), &buf[..n]);
    }
    Ok(())
}

/// Relays frames between `ports[0]` and `ports[1]` with `settings`, until
/// reading or polling fails. A refused send (queue full, link down) drops
/// that frame, as a congested link would.
pub fn run<P: FramePort>(ports: [P; 2], settings: WanSettings) -> io::Result<()> {
    let s = seed();
    // lines[i]: frames read on port i, to be sent on the other port.
    let mut lines = [
        DelayLine::new(&settings, s),
        DelayLine::new(&settings, s.rotate_left(29) ^ 0x5851_f42d_4c95_7f2d),
    ];
    let mut buf = vec![0u8; MAX_PACKET];
    let mut send_errors: u64 = 0;
    loop {
        let now = Instant::now();
        let wait = lines
            .iter()
            .filter_map(DelayLine::next_due)
            .min()
            .map_or(IDLE_WAIT, |due| due.saturating_duration_since(now));
        let ready = readable(&ports, wait)?;
        for (i, r) in ready.into_iter().enumerate() {
            if r {
                drain(&ports[i], &mut lines[i], &mut buf)?;
            }
        }
        let now = Instant::now();
        for (i, line) in lines.iter_mut().enumerate() {
            while let Some(frame) = line.pop_due(now) {
                if let Err(e) = ports[1 - i].send(&frame) {
                    send_errors += 1;
                    if send_errors.is_power_of_two() {
                        tracing::warn!("WAN relay: send failed ({send_errors} so far): {e}");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wan(rtt_ms: u32, loss_pct: f64) -> WanSettings {
        WanSettings::new(rtt_ms, loss_pct).unwrap()
    }

    #[test]
    fn frames_wait_half_the_round_trip_in_order() {
        let mut l = DelayLine::new(&wan(40, 0.0), 7);
        let t0 = Instant::now();
        assert!(l.push(t0, b"one"));
        assert!(l.push(t0 + Duration::from_millis(5), b"two"));
        assert_eq!(l.next_due(), Some(t0 + Duration::from_millis(20)));
        assert!(l.pop_due(t0 + Duration::from_millis(19)).is_none());
        assert_eq!(l.pop_due(t0 + Duration::from_millis(20)).unwrap(), b"one");
        assert!(l.pop_due(t0 + Duration::from_millis(24)).is_none());
        assert_eq!(l.pop_due(t0 + Duration::from_millis(25)).unwrap(), b"two");
        assert!(l.is_empty() && l.next_due().is_none());
    }

    #[test]
    fn no_delay_passes_at_once() {
        let mut l = DelayLine::new(&wan(0, 0.0), 1);
        let t0 = Instant::now();
        l.push(t0, b"x");
        assert_eq!(l.pop_due(t0).unwrap(), b"x");
    }

    #[test]
    fn loss_is_about_the_share_asked() {
        let t0 = Instant::now();
        for (pct, lo, hi) in [(0.0, 0, 0), (10.0, 800, 1200), (50.0, 4700, 5300)] {
            let mut l = DelayLine::new(&wan(0, pct), 12345);
            for _ in 0..10_000 {
                l.push(t0, b"f");
            }
            assert!((lo..=hi).contains(&l.lost), "{pct} %: lost {}", l.lost);
            assert_eq!(l.len() as u64 + l.lost, 10_000);
        }
        let mut l = DelayLine::new(&wan(0, 100.0), 0);
        assert!(!l.push(t0, b"f"));
        assert_eq!(l.lost, 1);
    }

    #[test]
    fn a_full_line_drops() {
        let mut l = DelayLine::new(&wan(1000, 0.0), 3);
        let t0 = Instant::now();
        for _ in 0..QUEUE_LIMIT {
            assert!(l.push(t0, b"f"));
        }
        assert!(!l.push(t0, b"f"));
        assert_eq!((l.len(), l.overflowed), (QUEUE_LIMIT, 1));
    }
}
