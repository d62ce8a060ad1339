//! The pipeline alone, in this process, on one synthetic RTP-sized frame
//! (202 bytes on the wire): today's way (borrowed frames, the lock taken
//! once per batch) against the old one (a `Vec` per frame, the lock and a
//! poll for released frames per frame). No I/O.

use duplex_core::mac::Mac;
use duplex_net::stage::Direction;
use serde::Serialize;
use std::hint::black_box;
use std::time::Instant;

/// Frames per measurement.
const FRAMES: usize = 1_000_000;
/// Frames per lock, as the element's thread takes them.
const BATCH: usize = 64;
/// Measurements of each way, alternating.
const ROUNDS: usize = 3;

#[derive(Debug, Clone, Serialize)]
pub struct Alone {
    pub frames: usize,
    pub fast_ns_per_frame: f64,
    pub legacy_ns_per_frame: f64,
}

fn frame() -> Vec<u8> {
    let mut f = vec![0u8; 202];
    f[0..6].copy_from_slice(&Mac::for_vm("belfast").0);
    f[6..12].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 9]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[23] = 17;
    f[26..30].copy_from_slice(&[10, 251, 0, 1]);
    f[30..34].copy_from_slice(&[10, 251, 0, 4]);
    f
}

fn fast(f: &[u8]) -> f64 {
    let parts = duplex_net::element::parts(
        Mac::for_vm("belfast"),
        std::net::Ipv4Addr::LOCALHOST,
        Vec::new(),
    );
    let t = Instant::now();
    for _ in 0..FRAMES / BATCH {
        let Ok(mut p) = parts.pipeline.lock() else {
            return f64::NAN;
        };
        let now = Instant::now();
        for _ in 0..BATCH {
            black_box(p.process(Direction::ToGuest, black_box(f), now));
        }
        if p.release_due() {
            black_box(p.poll_released(now, duplex_net::stage::Room::ANY));
        }
    }
    t.elapsed().as_nanos() as f64 / FRAMES as f64
}

fn legacy(f: &[u8]) -> f64 {
    let parts = duplex_net::element::parts(
        Mac::for_vm("belfast"),
        std::net::Ipv4Addr::LOCALHOST,
        Vec::new(),
    );
    let t = Instant::now();
    for _ in 0..FRAMES {
        let frame = black_box(f).to_vec();
        let Ok(mut p) = parts.pipeline.lock() else {
            return f64::NAN;
        };
        let now = Instant::now();
        let mut out = Vec::new();
        if p.process(Direction::ToGuest, &frame, now) {
            out.push((Direction::ToGuest, frame));
        }
        out.extend(p.poll_released(now, duplex_net::stage::Room::ANY));
        black_box(out);
    }
    t.elapsed().as_nanos() as f64 / FRAMES as f64
}

pub fn measure() -> Alone {
    let f = frame();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        a.push(fast(&f));
        b.push(legacy(&f));
    }
    Alone {
        frames: FRAMES,
        fast_ns_per_frame: crate::stats::summarize(&a).median,
        legacy_ns_per_frame: crate::stats::summarize(&b).median,
    }
}
