//! The element's data path: one thread per VM, waiting in poll(2) on its
//! tap, QEMU's netdev stream, the socket QEMU connects to and a wake-up
//! eventfd. Frames are read into buffers the thread owns and run through
//! the pipeline borrowed, so the hot path allocates and copies nothing:
//!
//! - tap → VM: up to [`BATCH`] frames per wake-up, one read(2) each (a tap
//!   gives one frame per read), framed into the stream's output buffer,
//!   which goes to QEMU in one write(2);
//! - VM → tap: QEMU's stream is read [`STREAM_READ`] bytes at a time (many
//!   frames per read(2)), each whole frame written to the tap as it is;
//! - the pipeline is locked once per batch, not per frame.
//!
//! Nothing is dropped without a counted reason: a VM not connected or not
//! reading (more than [`TO_VM_LIMIT`] bytes or [`TO_VM_FRAMES`] frames
//! waiting), a tap that cannot take a frame.

use crate::framing::MAX_FRAME;
use crate::stage::{Direction, Pipeline, Room};
use crate::tap::Tap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Frames (or stream reads) taken from one side per wake-up before the
/// other side gets its turn.
const BATCH: usize = 64;
/// Bytes read from QEMU's stream at once.
const STREAM_READ: usize = 256 * 1024;
/// Bytes, and frames, waiting to go to QEMU (a VM not reading) before
/// frames towards it are dropped: a deeper queue would only deliver them
/// later than a sender's retransmission.
const TO_VM_LIMIT: usize = 1 << 20;
const TO_VM_FRAMES: usize = 1024;
/// How often stages may release frames on their own (expiry).
const TICK: Duration = Duration::from_millis(100);
/// The netdev stream's length prefix.
const HEADER: usize = 4;

const NOT_CONNECTED: &str = "VM not connected";
const VM_BACKLOG: &str = "guest backlog full (VM not reading)";
const TAP_BACKLOG: &str = "tap backlog full";
const TAP_FAILED: &str = "tap write failed";

/// What the thread works with.
pub(super) struct Path {
    pub vm: String,
    pub listener: UnixListener,
    pub tap: Tap,
    pub pipeline: Arc<Mutex<Pipeline>>,
    pub injected: mpsc::Receiver<(Direction, Vec<u8>)>,
}

/// QEMU's current connection.
struct Stream {
    conn: UnixStream,
    /// Bytes read from QEMU; `filled` of them not yet parsed.
    input: Box<[u8]>,
    filled: usize,
    /// Framed bytes for QEMU, from `sent` on not yet written, and where
    /// each frame not wholly written ends.
    output: Vec<u8>,
    sent: usize,
    ends: std::collections::VecDeque<usize>,
}

impl Stream {
    fn new(conn: UnixStream) -> Stream {
        Stream {
            conn,
            input: vec![0u8; STREAM_READ + HEADER + MAX_FRAME].into_boxed_slice(),
            filled: 0,
            output: Vec::with_capacity(64 * 1024),
            sent: 0,
            ends: std::collections::VecDeque::with_capacity(TO_VM_FRAMES),
        }
    }

    fn waiting(&self) -> usize {
        self.output.len() - self.sent
    }
}

#[derive(Default)]
struct Ready {
    wake: bool,
    listener: bool,
    tap: bool,
    stream: bool,
}

pub(super) fn run(
    mut path: Path,
    stop: &AtomicBool,
    wake: &OwnedFd,
    relisten: &Mutex<Option<UnixListener>>,
) {
    let mut stream: Option<Stream> = None;
    let mut tap_buf = vec![0u8; MAX_FRAME];
    let mut tap_ok = true;
    let mut next_tick = Instant::now() + TICK;
    while !stop.load(Ordering::SeqCst) {
        let fds = Fds {
            wake: wake.as_raw_fd(),
            listener: path.listener.as_raw_fd(),
            tap: tap_ok.then(|| path.tap.fd.as_raw_fd()),
            stream: stream
                .as_ref()
                .map(|s| (s.conn.as_raw_fd(), s.waiting() > 0)),
        };
        let ready = match fds.wait(next_tick) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(vm = %path.vm, error = %e, "network element: poll failed");
                std::thread::sleep(TICK);
                continue;
            }
        };
        let now = Instant::now();
        if ready.listener {
            accept(&path, &mut stream);
        }
        let Ok(mut p) = path.pipeline.lock() else {
            tracing::error!(vm = %path.vm, "network element: pipeline poisoned; stopping");
            return;
        };
        if ready.wake {
            drain(wake);
            if let Some(l) = relisten.lock().ok().and_then(|mut l| l.take()) {
                // A new place for QEMU to connect (the VM launched on an
                // element that buffered for it); the old stream stays
                // until QEMU's new connection replaces it.
                path.listener = l;
            }
            while let Ok((dir, f)) = path.injected.try_recv() {
                deliver(dir, &f, &path.tap, stream.as_mut(), &mut p);
            }
        }
        if ready.tap {
            tap_ok = from_tap(&path, &mut tap_buf, &mut p, stream.as_mut(), now);
        }
        if ready.stream
            && !stream
                .as_mut()
                .is_some_and(|s| from_vm(&path, s, &mut p, now))
        {
            if stream.is_some() {
                tracing::info!(vm = %path.vm, "QEMU closed the netdev stream");
            }
            stream = None;
        }
        if ready.wake || p.release_due() || now >= next_tick {
            let room = stream.as_ref().map_or(Room::NONE, Stream::room);
            for (dir, f) in p.poll_released(now, room) {
                deliver(dir, &f, &path.tap, stream.as_mut(), &mut p);
            }
            if now >= next_tick {
                next_tick = now + TICK;
            }
        }
        drop(p);
        if stream.as_mut().is_some_and(|s| !flush(s)) {
            tracing::info!(vm = %path.vm, "QEMU's netdev stream broke");
            stream = None;
        }
    }
}

/// The descriptors one wait looks at (`None`: not now).
struct Fds {
    wake: RawFd,
    listener: RawFd,
    tap: Option<RawFd>,
    /// QEMU's connection, and whether output waits for it.
    stream: Option<(RawFd, bool)>,
}

impl Fds {
    /// Waits until one is ready or `until`.
    fn wait(&self, until: Instant) -> std::io::Result<Ready> {
        let pfd = |fd: RawFd, events: libc::c_short| libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        let (sfd, out) = self.stream.unwrap_or((-1, false));
        let stream_events = libc::POLLIN | if out { libc::POLLOUT } else { 0 };
        // A negative descriptor is skipped by poll(2).
        let mut fds = [
            pfd(self.wake, libc::POLLIN),
            pfd(self.listener, libc::POLLIN),
            pfd(self.tap.unwrap_or(-1), libc::POLLIN),
            pfd(sfd, stream_events),
        ];
        // Rounded up: a wait cut to 0 ms would spin until the tick.
        let left = until.saturating_duration_since(Instant::now());
        let ms = left.as_micros().div_ceil(1000).min(TICK.as_millis()) as libc::c_int;
        // SAFETY: poll(2) on an array we own, of its length.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            return match e.kind() {
                ErrorKind::Interrupted => Ok(Ready::default()),
                _ => Err(e),
            };
        }
        let any = |i: usize| fds[i].revents != 0;
        Ok(Ready {
            wake: any(0),
            listener: any(1),
            tap: any(2),
            stream: fds[3].revents & !libc::POLLOUT != 0,
        })
    }
}

fn drain(wake: &OwnedFd) {
    let mut n: u64 = 0;
    // SAFETY: read(2) of 8 bytes into a u64 we own from our eventfd.
    unsafe {
        libc::read(wake.as_raw_fd(), (&mut n as *mut u64).cast(), 8);
    }
}

/// Takes QEMU's (new) connection; a new one replaces the old (the
/// destination QEMU of a migration).
fn accept(path: &Path, stream: &mut Option<Stream>) {
    loop {
        match path.listener.accept() {
            Ok((conn, _)) => {
                if let Err(e) = conn.set_nonblocking(true) {
                    tracing::warn!(vm = %path.vm, error = %e, "netdev stream refused");
                    continue;
                }
                tracing::info!(vm = %path.vm, "QEMU connected to the network element");
                *stream = Some(Stream::new(conn));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) => {
                tracing::warn!(vm = %path.vm, error = %e, "netdev accept failed");
                return;
            }
        }
    }
}

/// Frames from the network, up to a batch; false if the tap failed (the
/// VM hears nothing more; logged once).
fn from_tap(
    path: &Path,
    buf: &mut [u8],
    p: &mut Pipeline,
    mut stream: Option<&mut Stream>,
    now: Instant,
) -> bool {
    for _ in 0..BATCH {
        match path.tap.read(buf) {
            Ok(n) => {
                let f = &buf[..n];
                if p.process(Direction::ToGuest, f, now) {
                    to_vm(stream.as_deref_mut(), f, p);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::error!(vm = %path.vm, error = %e, "tap read failed");
                return false;
            }
        }
    }
    true
}

/// Frames from the VM, up to a batch of reads; false if the stream ended
/// (QEMU closed it, or it is corrupt).
fn from_vm(path: &Path, s: &mut Stream, p: &mut Pipeline, now: Instant) -> bool {
    for _ in 0..BATCH {
        let space = s.input.len() - s.filled;
        let n = match s.conn.read(&mut s.input[s.filled..]) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(vm = %path.vm, error = %e, "netdev stream error");
                return false;
            }
        };
        s.filled += n;
        let Some(used) = frames(path, &s.input[..s.filled], p, now) else {
            return false;
        };
        s.input.copy_within(used..s.filled, 0);
        s.filled -= used;
        if n < space {
            return true;
        }
    }
    true
}

/// Runs the whole frames at the start of `input` to the tap; how many
/// bytes they took, `None` if the stream is corrupt.
fn frames(path: &Path, input: &[u8], p: &mut Pipeline, now: Instant) -> Option<usize> {
    let mut off = 0;
    while let Some(head) = input.get(off..off + HEADER) {
        let n = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if n > MAX_FRAME {
            let e = crate::framing::FramingError::TooLong(n);
            tracing::warn!(vm = %path.vm, error = %e, "netdev stream error");
            return None;
        }
        let Some(f) = input.get(off + HEADER..off + HEADER + n) else {
            break;
        };
        if p.process(Direction::FromGuest, f, now) {
            to_tap(&path.tap, f, p);
        }
        off += HEADER + n;
    }
    Some(off)
}

fn deliver(dir: Direction, f: &[u8], tap: &Tap, stream: Option<&mut Stream>, p: &mut Pipeline) {
    match dir {
        Direction::FromGuest => to_tap(tap, f, p),
        Direction::ToGuest => to_vm(stream, f, p),
    }
}

fn to_tap(tap: &Tap, f: &[u8], p: &mut Pipeline) {
    match tap.write(f) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::WouldBlock => p.count_drop(TAP_BACKLOG),
        Err(e) => {
            tracing::debug!(error = %e, "tap write failed");
            p.count_drop(TAP_FAILED);
        }
    }
}

impl Stream {
    /// What the queue towards QEMU still takes.
    fn room(&self) -> Room {
        Room {
            frames: TO_VM_FRAMES.saturating_sub(self.ends.len()),
            bytes: TO_VM_LIMIT.saturating_sub(self.waiting() + HEADER * self.ends.len()),
        }
    }
}

fn to_vm(stream: Option<&mut Stream>, f: &[u8], p: &mut Pipeline) {
    let Some(s) = stream else {
        p.count_drop(NOT_CONNECTED);
        return;
    };
    if s.waiting() + HEADER + f.len() > TO_VM_LIMIT || s.ends.len() >= TO_VM_FRAMES {
        p.count_drop(VM_BACKLOG);
        return;
    }
    // Within MAX_FRAME (what a tap or the pipeline hands over).
    s.output.extend_from_slice(&(f.len() as u32).to_be_bytes());
    s.output.extend_from_slice(f);
    s.ends.push_back(s.output.len());
}

/// Writes what waits for QEMU; false if the connection broke.
fn flush(s: &mut Stream) -> bool {
    while s.sent < s.output.len() {
        match s.conn.write(&s.output[s.sent..]) {
            Ok(0) => return false,
            Ok(n) => s.sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    while s.ends.front().is_some_and(|&e| e <= s.sent) {
        s.ends.pop_front();
    }
    if s.sent == s.output.len() {
        s.output.clear();
        s.sent = 0;
    } else if s.sent >= TO_VM_LIMIT / 2 {
        s.output.drain(..s.sent);
        for e in s.ends.iter_mut() {
            *e -= s.sent;
        }
        s.sent = 0;
    }
    true
}
