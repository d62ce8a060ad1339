//! `duplex-bench s2-probe`: run in the client namespace, two UDP streams to
//! the guest's echo at the same rate: one whose echoes the default rules
//! send at once (its payload starts like RTP, version 2: class 1) and one
//! they hold until the epoch commits (text: no rule matches, class 2).
//! Times every echo; counts lost and duplicated ones and the longest gap
//! between echoes (an outage). Prints one JSON line.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long echoes are waited for after the last datagram.
const DRAIN: Duration = Duration::from_millis(1500);
/// Marker, sequence number, send time (ns since start).
const HEAD: usize = 17;
const SIZE: usize = 160;
/// RTP version 2 in the first byte: the `rtp` rule sends it at once.
const CLASS1: u8 = 0x80;
/// Text: no rule matches, the default holds it.
const CLASS2: u8 = b'S';

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stream {
    pub sent: u64,
    pub received: u64,
    pub duplicated: u64,
    pub rtt_us: Vec<f64>,
    /// Longest time between two echoes (ms), from the first to the last.
    pub max_gap_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Probed {
    pub class1: Stream,
    pub class2: Stream,
}

struct Side {
    sock: UdpSocket,
    marker: u8,
}

fn receive(sock: UdpSocket, base: Instant, stop: Arc<AtomicBool>) -> Stream {
    let mut s = Stream::default();
    let mut seen = HashSet::new();
    let mut last: Option<Instant> = None;
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let Ok(n) = sock.recv(&mut buf) else { continue };
        if n < HEAD {
            continue;
        }
        let seq = u64::from_be_bytes(buf[1..9].try_into().unwrap_or_default());
        let t = u64::from_be_bytes(buf[9..17].try_into().unwrap_or_default());
        if !seen.insert(seq) {
            s.duplicated += 1;
            continue;
        }
        let now = Instant::now();
        if let Some(l) = last {
            s.max_gap_ms = s.max_gap_ms.max((now - l).as_secs_f64() * 1e3);
        }
        last = Some(now);
        s.received += 1;
        let rtt_ns = (base.elapsed().as_nanos() as u64).saturating_sub(t);
        s.rtt_us.push(rtt_ns as f64 / 1e3);
    }
    s
}

pub fn probe(to: Ipv4Addr, port: u16, rate: u32, secs: f64) -> anyhow::Result<Probed> {
    anyhow::ensure!(rate > 0, "--rate must be positive");
    let sides = [CLASS1, CLASS2].map(|marker| -> anyhow::Result<Side> {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        sock.connect((to, port))?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        Ok(Side { sock, marker })
    });
    let [a, b] = sides;
    let sides = [a?, b?];
    let base = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut rx = Vec::new();
    for side in &sides {
        let (sock, stop) = (side.sock.try_clone()?, stop.clone());
        rx.push(std::thread::spawn(move || receive(sock, base, stop)));
    }
    let every = Duration::from_secs_f64(1.0 / f64::from(rate));
    let mut sent = 0u64;
    let mut buf = [0u8; SIZE];
    while base.elapsed().as_secs_f64() < secs {
        let due = base + every * sent as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        for side in &sides {
            buf[0] = side.marker;
            buf[1..9].copy_from_slice(&sent.to_be_bytes());
            let t = base.elapsed().as_nanos() as u64;
            buf[9..17].copy_from_slice(&t.to_be_bytes());
            let _ = side.sock.send(&buf);
        }
        sent += 1;
    }
    std::thread::sleep(DRAIN);
    stop.store(true, Ordering::Relaxed);
    let mut streams = rx.into_iter().map(|h| h.join().unwrap_or_default());
    let mut class1 = streams.next().unwrap_or_default();
    let mut class2 = streams.next().unwrap_or_default();
    class1.sent = sent;
    class2.sent = sent;
    Ok(Probed { class1, class2 })
}
