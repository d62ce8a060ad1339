//! The guest end of the control channel: reads requests line by line,
//! answers them through the middleware, and sends events (`ready`, then a
//! `heartbeat` every `HEARTBEAT_MS`, and at once when the peer is lost or
//! heard again). One writer thread owns the port, so a
//! host that is not reading never blocks request handling.

use crate::middleware::Middleware;
use crate::peer_beat;
use crate::witness;
use crate::GuestError;
use duplex_core::guest_proto::{
    decode, encode, Frame, Heartbeat, Op, ProtoError, HEARTBEAT_EVENT, HEARTBEAT_MS, MAX_LINE,
    PEER_BEAT_PORT, SERVICE_FAILED_EVENT,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::time::Duration;

/// Handles one received line; returns the frame to send back, if any.
pub fn handle_line(line: &str, mw: &Middleware) -> Option<Frame> {
    match decode(line) {
        Ok(Frame::Request { id, op }) => Some(Frame::Response {
            id,
            result: mw.handle(&op).map_err(|e| ProtoError {
                code: e.0.into(),
                message: e.1,
            }),
        }),
        Ok(other) => {
            eprintln!("duplex guest: ignoring unexpected frame {other:?}");
            None
        }
        Err(e) => {
            eprintln!("duplex guest: bad control line: {e}");
            Some(e.reply())
        }
    }
}

/// The `heartbeat` event as it is now.
fn heartbeat(mw: &Middleware) -> String {
    let role = mw.persisted().role.role;
    let beat = Heartbeat {
        seq: mw.beats.fetch_add(1, Ordering::Relaxed) + 1,
        role,
        service: serde_json::to_value(mw.service.status()).unwrap_or_default(),
        peer: mw.ear.get().and_then(peer_beat::heard),
        witness: mw.witness.get().and_then(peer_beat::heard),
        peer_synced: (role == duplex_core::role::Role::Act && mw.peer_address().is_some())
            .then(|| mw.replica.in_sync()),
        boot_id: Some(mw.facts.boot_id.clone()),
    };
    encode(&Frame::Event {
        event: HEARTBEAT_EVENT.into(),
        data: serde_json::to_value(beat).unwrap_or_default(),
    })
}

/// What a turn of the peer's beat or the witness's pings does: the
/// `heartbeat` event is sent at once.
fn on_turn(
    what: &'static str,
    out: &SyncSender<String>,
    mw: &Arc<Middleware>,
) -> impl Fn(bool) + Send + 'static {
    let (o, m) = (out.clone(), mw.clone());
    move |lost| {
        let now = if lost { "lost" } else { "heard again" };
        eprintln!("duplex guest: {what} {now}");
        let _ = o.try_send(heartbeat(&m));
    }
}

/// Starts the guest-to-guest heartbeat and the witness's pings; losing or
/// finding either sends a `heartbeat` event at once. Without them (the
/// port is taken, no raw sockets) the guest still runs, and its host's
/// silence is the only sign of its loss.
fn start_ears(out: &SyncSender<String>, mw: &Arc<Middleware>) {
    let m = mw.clone();
    match peer_beat::start(move || m.peer_address(), on_turn("peer", out, mw)) {
        Ok(ear) => {
            let _ = mw.ear.set(ear);
        }
        Err(e) => eprintln!("duplex guest: no peer heartbeat (port {PEER_BEAT_PORT}): {e}"),
    }
    let m = mw.clone();
    match witness::start(move || m.witness_address(), on_turn("witness", out, mw)) {
        Ok(ear) => {
            let _ = mw.witness.set(ear);
        }
        Err(e) => eprintln!("duplex guest: cannot ping the witness: {e}"),
    }
}

/// How often the service process is looked at (a dead one is found within
/// this) and failures are sent.
const SERVICE_TICK: Duration = Duration::from_millis(100);

/// Two threads: one keeps the service process as wanted and sends each
/// failure found as a `service_failed` event; one runs the health check
/// every [`HEARTBEAT_MS`] (a hung hook blocks neither the heartbeat nor
/// the reaping of a dead process). And the catch-up's.
fn spawn_service_watch(out: &SyncSender<String>, mw: &Arc<Middleware>) {
    let (o, m) = (out.clone(), mw.clone());
    std::thread::spawn(move || loop {
        m.service.tick();
        for f in m.service.take_failures() {
            eprintln!(
                "duplex guest: reporting failure: {:?}: {}",
                f.cause, f.detail
            );
            let _ = o.send(encode(&Frame::Event {
                event: SERVICE_FAILED_EVENT.into(),
                data: serde_json::to_value(&f).unwrap_or_default(),
            }));
        }
        std::thread::sleep(SERVICE_TICK);
    });
    let m = mw.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(HEARTBEAT_MS));
        m.check_health();
    });
    spawn_catch_up(out, mw);
}

/// On the ACT, brings a returning peer up to date ([`Replica::catch_up`]);
/// when that changes whether the peer holds every write, a `heartbeat`
/// says so at once.
///
/// [`Replica::catch_up`]: crate::replica::Replica::catch_up
fn spawn_catch_up(out: &SyncSender<String>, mw: &Arc<Middleware>) {
    let (o, m) = (out.clone(), mw.clone());
    std::thread::spawn(move || loop {
        std::thread::sleep(CATCH_UP_TICK);
        let was = m.replica.in_sync();
        m.replica.catch_up(&*m);
        if m.replica.in_sync() != was {
            let _ = o.try_send(heartbeat(&m));
        }
    });
}

/// How often the ACT looks whether its peer is back and needs the state.
const CATCH_UP_TICK: Duration = Duration::from_millis(250);

fn spawn_writer(mut port: std::fs::File) -> SyncSender<String> {
    let (tx, rx) = sync_channel::<String>(256);
    std::thread::spawn(move || {
        for line in rx {
            if port.write_all(line.as_bytes()).is_err() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    tx
}

pub fn serve(dev: &Path, mw: Arc<Middleware>) -> Result<(), GuestError> {
    let io = |what: &str| {
        let what = format!("{what} {}", dev.display());
        move |source| GuestError::Io { what, source }
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .map_err(io("open"))?;
    let out = spawn_writer(file.try_clone().map_err(io("clone"))?);
    let hello = mw.handle(&Op::Hello).unwrap_or_default();
    let _ = out.try_send(encode(&Frame::Event {
        event: "ready".into(),
        data: hello,
    }));
    start_ears(&out, &mw);
    {
        let (out, mw) = (out.clone(), mw.clone());
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(HEARTBEAT_MS));
            // A full queue means the host is not reading: skip a beat.
            let _ = out.try_send(heartbeat(&mw));
        });
    }
    spawn_service_watch(&out, &mw);
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = Read::by_ref(&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(io("read"))?;
        if n == 0 {
            // Host side not connected: the port reads EOF; wait and retry.
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        if !buf.ends_with(b"\n") && buf.len() > MAX_LINE {
            let _ = reader.skip_until(b'\n');
        }
        let line = String::from_utf8_lossy(&buf);
        if let Some(reply) = handle_line(&line, &mw) {
            let _ = out.send(encode(&reply));
        }
    }
}
