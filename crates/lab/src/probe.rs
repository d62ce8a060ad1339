//! UDP echo probe: sends a numbered datagram every interval to a guest's
//! echo port and measures what came back — loss, longest outage, RTT. Used
//! by the demo, the end-to-end tests and the benchmarks to see what a
//! migration costs the network.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub target: String,
    pub interval_ms: f64,
    pub duration_ms: u64,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    /// Longest run of consecutive unanswered probes.
    pub longest_loss_run: u64,
    /// Longest time between two consecutive answers.
    pub max_reply_gap_ms: f64,
    pub rtt_p50_ms: f64,
    pub rtt_p99_ms: f64,
    pub rtt_max_ms: f64,
}

/// One probe: when it was sent and, if answered, when the answer came
/// (microseconds since the probe started).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub sent_us: u64,
    pub recv_us: Option<u64>,
}

/// The `p` quantile of `sorted` microseconds, in milliseconds.
pub(crate) fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

/// Pure statistics over the samples, in send order.
pub fn summarize(
    target: &str,
    interval: Duration,
    duration_ms: u64,
    samples: &[Sample],
) -> ProbeReport {
    let sent = samples.len() as u64;
    let mut rtts: Vec<u64> = samples
        .iter()
        .filter_map(|s| s.recv_us.map(|r| r.saturating_sub(s.sent_us)))
        .collect();
    rtts.sort_unstable();
    let received = rtts.len() as u64;
    let (mut run, mut longest) = (0u64, 0u64);
    for s in samples {
        if s.recv_us.is_none() {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    let mut recv: Vec<u64> = samples.iter().filter_map(|s| s.recv_us).collect();
    recv.sort_unstable();
    let max_gap = recv.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    ProbeReport {
        target: target.to_string(),
        interval_ms: interval.as_secs_f64() * 1000.0,
        duration_ms,
        sent,
        received,
        lost: sent - received,
        longest_loss_run: longest,
        max_reply_gap_ms: max_gap as f64 / 1000.0,
        rtt_p50_ms: percentile(&rtts, 0.5),
        rtt_p99_ms: percentile(&rtts, 0.99),
        rtt_max_ms: rtts.last().copied().unwrap_or(0) as f64 / 1000.0,
    }
}

/// Probes `target` every `interval` until `stop` resolves, then waits
/// `grace` for late answers.
pub async fn run(
    target: SocketAddr,
    interval: Duration,
    grace: Duration,
    stop: impl Future<Output = ()>,
) -> std::io::Result<ProbeReport> {
    let sock = UdpSocket::bind("0.0.0.0:0").await?;
    sock.connect(target).await?;
    let t0 = Instant::now();
    let now_us = || t0.elapsed().as_micros() as u64;
    let mut samples: Vec<Sample> = Vec::new();
    let mut index: HashMap<u64, usize> = HashMap::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut buf = [0u8; 64];
    tokio::pin!(stop);
    let mut stopping: Option<Instant> = None;
    loop {
        if let Some(at) = stopping {
            if at.elapsed() >= grace {
                break;
            }
        }
        tokio::select! {
            _ = &mut stop, if stopping.is_none() => stopping = Some(Instant::now()),
            _ = tick.tick(), if stopping.is_none() => {
                let seq = samples.len() as u64;
                let sent_us = now_us();
                let mut msg = [0u8; 16];
                msg[..8].copy_from_slice(&seq.to_be_bytes());
                msg[8..].copy_from_slice(&sent_us.to_be_bytes());
                // A send error (e.g. no route for a moment) is a lost probe.
                let _ = sock.send(&msg).await;
                index.insert(seq, samples.len());
                samples.push(Sample { sent_us, recv_us: None });
            }
            r = sock.recv(&mut buf) => {
                if let Ok(n) = r {
                    if n >= 16 {
                        let mut seq = [0u8; 8];
                        seq.copy_from_slice(&buf[..8]);
                        if let Some(&i) = index.get(&u64::from_be_bytes(seq)) {
                            if samples[i].recv_us.is_none() {
                                samples[i].recv_us = Some(now_us());
                            }
                        }
                    }
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(20)), if stopping.is_some() => {}
        }
    }
    let duration_ms = stopping
        .map(|s| s.duration_since(t0))
        .unwrap_or(t0.elapsed())
        .as_millis() as u64;
    Ok(summarize(
        &target.to_string(),
        interval,
        duration_ms,
        &samples,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(sent_ms: u64, rtt_ms: Option<u64>) -> Sample {
        Sample {
            sent_us: sent_ms * 1000,
            recv_us: rtt_ms.map(|r| (sent_ms + r) * 1000),
        }
    }

    #[test]
    fn counts_loss_runs_and_gaps() {
        let samples = [
            s(0, Some(1)),
            s(10, None),
            s(20, None),
            s(30, Some(1)),
            s(40, None),
            s(50, Some(3)),
        ];
        let r = summarize("t", Duration::from_millis(10), 60, &samples);
        assert_eq!(
            (r.sent, r.received, r.lost, r.longest_loss_run),
            (6, 3, 3, 2)
        );
        assert_eq!(r.max_reply_gap_ms, 30.0);
        assert_eq!(r.rtt_max_ms, 3.0);
        assert_eq!(r.rtt_p50_ms, 1.0);
    }

    #[test]
    fn empty_and_all_lost() {
        let r = summarize("t", Duration::from_millis(10), 0, &[]);
        assert_eq!((r.sent, r.lost, r.max_reply_gap_ms), (0, 0, 0.0));
        let r = summarize(
            "t",
            Duration::from_millis(10),
            20,
            &[s(0, None), s(10, None)],
        );
        assert_eq!((r.lost, r.longest_loss_run), (2, 2));
    }

    #[tokio::test]
    async fn measures_a_real_echo_on_loopback() {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let mut b = [0u8; 64];
            let mut n = 0;
            while let Ok((len, from)) = echo.recv_from(&mut b).await {
                n += 1;
                // Drop every 5th probe so loss must be seen.
                if n % 5 != 0 {
                    let _ = echo.send_to(&b[..len], from).await;
                }
            }
        });
        let r = run(
            addr,
            Duration::from_millis(5),
            Duration::from_millis(100),
            tokio::time::sleep(Duration::from_millis(200)),
        )
        .await
        .unwrap();
        assert!(r.sent >= 10, "{r:?}");
        assert_eq!(r.lost, r.sent / 5, "{r:?}");
    }
}
