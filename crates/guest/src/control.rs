//! The guest end of the control channel: reads requests line by line,
//! answers them through the middleware, and sends events (`ready`, then a
//! `heartbeat` every `HEARTBEAT_MS`, and at once when the peer is lost or
//! heard again). One writer thread owns the port, so a
//! host that is not reading never blocks request handling.

use crate::middleware::Middleware;
use crate::peer_beat;
use crate::GuestError;
use duplex_core::guest_proto::{
    decode, encode, Frame, Heartbeat, Op, ProtoError, HEARTBEAT_EVENT, HEARTBEAT_MS, MAX_LINE,
    PEER_BEAT_PORT,
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
fn heartbeat(mw: &Middleware, ear: Option<&peer_beat::Shared>) -> String {
    let beat = Heartbeat {
        seq: mw.beats.fetch_add(1, Ordering::Relaxed) + 1,
        role: mw.persisted().role.role,
        service: serde_json::to_value(mw.service.status()).unwrap_or_default(),
        peer: ear.and_then(peer_beat::heard),
    };
    encode(&Frame::Event {
        event: HEARTBEAT_EVENT.into(),
        data: serde_json::to_value(beat).unwrap_or_default(),
    })
}

/// Starts the guest-to-guest heartbeat; losing or finding the peer sends a
/// `heartbeat` event at once. Without it (the port is taken) the guest
/// still runs, and its host's silence is the only sign of its loss.
fn start_peer_beat(out: &SyncSender<String>, mw: &Arc<Middleware>) -> Option<peer_beat::Shared> {
    let (m, slot) = (mw.clone(), Arc::new(std::sync::OnceLock::new()));
    let (o, m2, s2) = (out.clone(), mw.clone(), slot.clone());
    let started = peer_beat::start(
        move || m.peer_address(),
        move |lost| {
            eprintln!(
                "duplex guest: peer {}",
                if lost { "lost" } else { "heard again" }
            );
            let _ = o.try_send(heartbeat(&m2, s2.get()));
        },
    );
    match started {
        Ok(ear) => {
            let _ = slot.set(ear.clone());
            let _ = mw.ear.set(ear.clone());
            Some(ear)
        }
        Err(e) => {
            eprintln!("duplex guest: no peer heartbeat (port {PEER_BEAT_PORT}): {e}");
            None
        }
    }
}

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
    let ear = start_peer_beat(&out, &mw);
    {
        let (out, mw) = (out.clone(), mw.clone());
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(HEARTBEAT_MS));
            mw.tick();
            // A full queue means the host is not reading: skip a beat.
            let _ = out.try_send(heartbeat(&mw, ear.as_ref()));
        });
    }
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
