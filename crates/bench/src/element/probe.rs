//! `duplex-bench element-probe`: run in the client namespace, sends UDP
//! datagrams of a given size to an echo at a steady rate for a while and
//! times each echo (round trip, from a monotonic timestamp in the payload).
//! Prints one JSON line.

use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long echoes are waited for after the last datagram.
const DRAIN: Duration = Duration::from_millis(500);
/// The payload's head: sequence number and send time (ns since start).
const HEAD: usize = 16;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Probed {
    pub sent: u64,
    pub send_failed: u64,
    pub received: u64,
    /// `None` when nothing came back.
    pub rtt_us_p50: Option<f64>,
    pub rtt_us_p99: Option<f64>,
    pub rtt_us_max: Option<f64>,
}

pub fn probe(to: Ipv4Addr, port: u16, rate: u32, size: usize, secs: f64) -> anyhow::Result<Probed> {
    anyhow::ensure!(
        (HEAD..=1472).contains(&size),
        "--size must be in {HEAD}..=1472"
    );
    anyhow::ensure!(rate > 0, "--rate must be positive");
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    sock.connect((to, port))?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    let base = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let rx = {
        let (sock, stop) = (sock.try_clone()?, stop.clone());
        std::thread::spawn(move || {
            let mut rtts = Vec::new();
            // An echo counts once (a frame flooded before the bridge
            // learnt where the VM is might come back twice).
            let mut seen = std::collections::HashSet::new();
            let mut buf = vec![0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    if n >= HEAD {
                        let seq = u64::from_be_bytes(buf[0..8].try_into().unwrap_or_default());
                        let t = u64::from_be_bytes(buf[8..16].try_into().unwrap_or_default());
                        let now = base.elapsed().as_nanos() as u64;
                        if seen.insert(seq) {
                            rtts.push(now.saturating_sub(t) as f64 / 1000.0);
                        }
                    }
                }
            }
            rtts
        })
    };
    let mut payload = vec![0u8; size];
    let (mut sent, mut failed) = (0u64, 0u64);
    let total = (f64::from(rate) * secs) as u64;
    while sent + failed < total {
        let due = (base.elapsed().as_secs_f64() * f64::from(rate)) as u64;
        while sent + failed < due.min(total) {
            payload[0..8].copy_from_slice(&(sent + failed).to_be_bytes());
            payload[8..16].copy_from_slice(&(base.elapsed().as_nanos() as u64).to_be_bytes());
            match sock.send(&payload) {
                Ok(_) => sent += 1,
                Err(_) => failed += 1,
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    std::thread::sleep(DRAIN);
    stop.store(true, Ordering::Relaxed);
    let mut rtts = rx
        .join()
        .map_err(|_| anyhow::anyhow!("probe receiver panicked"))?;
    rtts.sort_by(|a, b| a.total_cmp(b));
    let q =
        |p: f64| (!rtts.is_empty()).then(|| rtts[((rtts.len() - 1) as f64 * p).round() as usize]);
    Ok(Probed {
        sent,
        send_failed: failed,
        received: rtts.len() as u64,
        rtt_us_p50: q(0.5),
        rtt_us_p99: q(0.99),
        rtt_us_max: q(1.0),
    })
}
