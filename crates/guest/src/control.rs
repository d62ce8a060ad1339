//! The guest end of the control channel: reads requests line by line,
//! answers them through the middleware, and sends events (`ready`, then a
//! `heartbeat` every `HEARTBEAT_MS`). One writer thread owns the port, so a
//! host that is not reading never blocks request handling.

use crate::middleware::Middleware;
use crate::GuestError;
use duplex_core::guest_proto::{decode, encode, Frame, Op, ProtoError, HEARTBEAT_MS, MAX_LINE};
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
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
    {
        let (out, mw) = (out.clone(), mw.clone());
        std::thread::spawn(move || {
            let mut seq = 0u64;
            loop {
                std::thread::sleep(Duration::from_millis(HEARTBEAT_MS));
                mw.tick();
                seq += 1;
                let p = mw.persisted();
                let data = json!({"seq": seq, "role": p.role.role, "service": mw.service.status()});
                // A full queue means the host is not reading: skip a beat.
                let _ = out.try_send(encode(&Frame::Event {
                    event: "heartbeat".into(),
                    data,
                }));
            }
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
