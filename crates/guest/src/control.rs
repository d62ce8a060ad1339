//! The guest end of the control channel: reads requests line by line,
//! answers them, and emits a `ready` event when it starts.

use crate::{GuestError, GuestFacts};
use duplex_core::guest_proto::{decode, encode, Frame, Op, MAX_LINE, VERSION};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

pub fn answer(op: &Op, facts: &GuestFacts) -> Value {
    let uptime_ms = facts.started.elapsed().as_millis() as u64;
    match op {
        Op::Hello => json!({
            "versions": [VERSION],
            "name": facts.name,
            "boot_id": facts.boot_id,
            "duplex": env!("CARGO_PKG_VERSION"),
            "uptime_ms": uptime_ms,
        }),
        Op::Status => json!({
            "name": facts.name,
            "role": "none",
            "uptime_ms": uptime_ms,
        }),
    }
}

/// Handles one received line; returns the frame to send back, if any.
pub fn handle_line(line: &str, facts: &GuestFacts) -> Option<Frame> {
    match decode(line) {
        Ok(Frame::Request { id, op }) => Some(Frame::Response {
            id,
            result: Ok(answer(&op, facts)),
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

pub fn serve(dev: &Path, facts: &GuestFacts) -> Result<(), GuestError> {
    let io = |what: &str| {
        let what = format!("{what} {}", dev.display());
        move |source| GuestError::Io { what, source }
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .map_err(io("open"))?;
    let mut writer = file.try_clone().map_err(io("clone"))?;
    let ready = Frame::Event {
        event: "ready".into(),
        data: answer(&Op::Hello, facts),
    };
    writer
        .write_all(encode(&ready).as_bytes())
        .map_err(io("write"))?;
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
            std::thread::sleep(std::time::Duration::from_millis(200));
            continue;
        }
        if !buf.ends_with(b"\n") && buf.len() > MAX_LINE {
            // Discard the rest of an over-long line.
            let _ = reader.skip_until(b'\n');
        }
        let line = String::from_utf8_lossy(&buf);
        if let Some(reply) = handle_line(&line, facts) {
            writer
                .write_all(encode(&reply).as_bytes())
                .map_err(io("write"))?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> GuestFacts {
        GuestFacts {
            name: "vm1".into(),
            boot_id: "b".into(),
            started: std::time::Instant::now(),
        }
    }

    #[test]
    fn answers_requests_and_errors() {
        let f = facts();
        let r = handle_line(r#"{"kind":"req","v":1,"id":3,"op":"hello"}"#, &f).unwrap();
        let Frame::Response {
            id: 3,
            result: Ok(v),
        } = r
        else {
            panic!("{r:?}")
        };
        assert_eq!(v["name"], "vm1");
        let r = handle_line("garbage", &f).unwrap();
        assert!(matches!(
            r,
            Frame::Response {
                id: 0,
                result: Err(_)
            }
        ));
        let r = handle_line(r#"{"kind":"req","v":1,"id":4,"op":"nope"}"#, &f).unwrap();
        let Frame::Response {
            id: 4,
            result: Err(e),
        } = r
        else {
            panic!("{r:?}")
        };
        assert_eq!(e.code, "unknown_op");
        assert!(handle_line(r#"{"kind":"evt","v":1,"event":"x"}"#, &f).is_none());
    }
}
