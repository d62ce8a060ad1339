//! A client of a guest's request ledger (`duplex_core::ledger`): sends
//! numbered requests every interval and tallies, from the answers, what
//! the VM did with them: lost (never answered), answered twice, processed
//! out of order or twice (the ledger's verdicts), and response times.
//! Used by the S5 end-to-end test and benchmark, one per site.

use crate::probe::percentile;
use duplex_core::ledger::{encode_query, Answer, ClientView, Request, Verdict, ANSWER_LEN};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// Most requests one probe sends (its record of them is bounded).
pub const MAX_REQUESTS: usize = 1_000_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerReport {
    pub target: String,
    pub client: u32,
    pub sent: u64,
    pub answered: u64,
    /// Never answered.
    pub lost: u64,
    /// Answers beyond the first for a request.
    pub duplicate_answers: u64,
    /// The ledger's verdicts on the first answers.
    pub in_order: u64,
    pub skipped: u64,
    pub late: u64,
    pub processed_twice: u64,
    /// First answers that came back after an answer to a later request.
    pub answers_out_of_order: u64,
    pub rtt_p50_ms: f64,
    pub rtt_p99_ms: f64,
    pub rtt_max_ms: f64,
    /// Longest time without an answer, between the first and the last.
    #[serde(default)]
    pub max_answer_gap_ms: f64,
    /// When the first answer came, since the probe started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_answer_ms: Option<f64>,
    /// The first unanswered request, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_lost: Option<u64>,
}

impl LedgerReport {
    /// Whether every request was processed exactly once, in order.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicate_answers == 0
            && self.skipped == 0
            && self.late == 0
            && self.processed_twice == 0
            && self.answers_out_of_order == 0
    }
}

/// One request: when it was sent, and its answers (first one kept).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Record {
    pub sent_us: u64,
    pub first: Option<(u64, Verdict)>,
    pub answers: u32,
}

/// Pure statistics over the records (index = sequence number).
pub fn summarize(target: &str, client: u32, records: &[Record]) -> LedgerReport {
    let mut rtts: Vec<u64> = Vec::new();
    let mut r = LedgerReport {
        target: target.to_string(),
        client,
        sent: records.len() as u64,
        answered: 0,
        lost: 0,
        duplicate_answers: 0,
        in_order: 0,
        skipped: 0,
        late: 0,
        processed_twice: 0,
        answers_out_of_order: 0,
        rtt_p50_ms: 0.0,
        rtt_p99_ms: 0.0,
        rtt_max_ms: 0.0,
        max_answer_gap_ms: 0.0,
        first_answer_ms: None,
        first_lost: None,
    };
    let mut latest_answer = 0u64;
    for (seq, rec) in records.iter().enumerate() {
        r.duplicate_answers += u64::from(rec.answers.saturating_sub(1));
        let Some((at, verdict)) = rec.first else {
            r.lost += 1;
            r.first_lost.get_or_insert(seq as u64);
            continue;
        };
        r.answered += 1;
        rtts.push(at.saturating_sub(rec.sent_us));
        if at < latest_answer {
            r.answers_out_of_order += 1;
        }
        latest_answer = latest_answer.max(at);
        match verdict {
            Verdict::InOrder => r.in_order += 1,
            Verdict::Skipped => r.skipped += 1,
            Verdict::Late => r.late += 1,
            Verdict::Duplicate => r.processed_twice += 1,
        }
    }
    let mut arrivals: Vec<u64> = records
        .iter()
        .filter_map(|r| r.first.map(|f| f.0))
        .collect();
    arrivals.sort_unstable();
    let gap = arrivals.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    r.max_answer_gap_ms = gap as f64 / 1000.0;
    r.first_answer_ms = arrivals.first().map(|us| *us as f64 / 1000.0);
    rtts.sort_unstable();
    r.rtt_p50_ms = percentile(&rtts, 0.5);
    r.rtt_p99_ms = percentile(&rtts, 0.99);
    r.rtt_max_ms = rtts.last().copied().unwrap_or(0) as f64 / 1000.0;
    r
}

/// Sends requests as `client` to `target` every `interval` until `stop`
/// resolves, then listens `grace` longer for late answers.
pub async fn run(
    target: SocketAddr,
    client: u32,
    interval: Duration,
    grace: Duration,
    stop: impl Future<Output = ()>,
) -> std::io::Result<LedgerReport> {
    let sock = UdpSocket::bind("0.0.0.0:0").await?;
    sock.connect(target).await?;
    let t0 = Instant::now();
    let now_us = || t0.elapsed().as_micros() as u64;
    let mut records: Vec<Record> = Vec::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut buf = [0u8; 64];
    tokio::pin!(stop);
    let mut stopping: Option<Instant> = None;
    loop {
        if stopping.is_some_and(|at| at.elapsed() >= grace) {
            break;
        }
        let sending = stopping.is_none() && records.len() < MAX_REQUESTS;
        tokio::select! {
            _ = &mut stop, if stopping.is_none() => stopping = Some(Instant::now()),
            _ = tick.tick(), if sending => {
                let req = Request { client, seq: records.len() as u64 };
                records.push(Record { sent_us: now_us(), ..Record::default() });
                // A send error (no route for a moment) is a lost request.
                let _ = sock.send(&req.encode()).await;
            }
            got = sock.recv(&mut buf) => {
                let answer = got.ok().filter(|n| *n == ANSWER_LEN).and_then(|n| Answer::decode(&buf[..n]));
                if let Some(a) = answer.filter(|a| a.client == client) {
                    if let Some(rec) = records.get_mut(a.seq as usize) {
                        rec.answers += 1;
                        rec.first.get_or_insert((now_us(), a.verdict));
                    }
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(20)), if stopping.is_some() => {}
        }
    }
    Ok(summarize(&target.to_string(), client, &records))
}

/// Asks the ledger at `target` what it remembers of `client` (tries a
/// few times: a datagram can be lost).
pub async fn query(target: SocketAddr, client: u32) -> std::io::Result<ClientView> {
    const TRIES: u32 = 5;
    const WAIT: Duration = Duration::from_millis(500);
    let sock = UdpSocket::bind("0.0.0.0:0").await?;
    sock.connect(target).await?;
    let mut buf = [0u8; 64];
    for _ in 0..TRIES {
        sock.send(&encode_query(client)).await?;
        if let Ok(Ok(n)) = tokio::time::timeout(WAIT, sock.recv(&mut buf)).await {
            if let Some(v) = ClientView::decode(&buf[..n]).filter(|v| v.client == client) {
                return Ok(v);
            }
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("the ledger at {target} did not answer {TRIES} queries"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use duplex_core::ledger::Ledger;

    fn rec(sent_ms: u64, answers: &[(u64, Verdict)]) -> Record {
        Record {
            sent_us: sent_ms * 1000,
            first: answers.first().map(|(at, v)| (at * 1000, *v)),
            answers: answers.len() as u32,
        }
    }

    #[test]
    fn tallies_what_the_vm_did() {
        use Verdict::*;
        let records = [
            rec(0, &[(1, InOrder)]),
            rec(10, &[]),
            rec(20, &[(40, Skipped), (41, Duplicate)]),
            rec(30, &[(35, Late)]),
        ];
        let r = summarize("t", 1, &records);
        assert_eq!(
            (r.sent, r.answered, r.lost, r.first_lost),
            (4, 3, 1, Some(1))
        );
        assert_eq!((r.in_order, r.skipped, r.late), (1, 1, 1));
        assert_eq!((r.duplicate_answers, r.answers_out_of_order), (1, 1));
        assert_eq!(r.rtt_max_ms, 20.0);
        assert_eq!(r.max_answer_gap_ms, 34.0, "from 1 ms to 35 ms");
        assert_eq!(r.first_answer_ms, Some(1.0));
        assert!(!r.clean());
        let clean = summarize("t", 1, &[rec(0, &[(1, InOrder)]), rec(5, &[(9, InOrder)])]);
        assert!(clean.clean(), "{clean:?}");
    }

    #[tokio::test]
    async fn a_real_ledger_on_loopback_that_drops_and_repeats() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut ledger = Ledger::default();
            let mut b = [0u8; 64];
            let mut n = 0;
            while let Ok((len, from)) = server.recv_from(&mut b).await {
                n += 1;
                let Some(req) = Request::decode(&b[..len]) else {
                    continue;
                };
                if n % 7 == 0 {
                    continue; // never processed: lost
                }
                if let Some(a) = ledger.process(req) {
                    let _ = server.send_to(&a.encode(), from).await;
                    if n % 11 == 0 {
                        let _ = server.send_to(&a.encode(), from).await;
                    }
                }
            }
        });
        let r = run(
            addr,
            3,
            Duration::from_millis(3),
            Duration::from_millis(100),
            tokio::time::sleep(Duration::from_millis(250)),
        )
        .await
        .unwrap();
        assert!(r.sent >= 20, "{r:?}");
        assert_eq!(r.lost, r.sent / 7, "{r:?}");
        // Each loss shows as a skip, but for a last request lost.
        assert!(r.skipped <= r.lost && r.skipped + 1 >= r.lost, "{r:?}");
        assert!(r.duplicate_answers >= 1, "{r:?}");
        assert!(!r.clean());
    }
}
