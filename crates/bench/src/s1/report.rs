//! What an S1 arm measured, and the table of all arms. Pure.

use duplex_sipp::parse::{response_times, RttSample};
use duplex_sipp::{ResponseTimes, SippReport};
use serde::Serialize;
use serde_json::Value;

/// One timed move of an arm.
#[derive(Debug, Clone, Serialize)]
pub struct Move {
    pub command: String,
    pub start_ms: f64,
    pub end_ms: f64,
    pub ok: bool,
    /// Live migrations the controller reported meanwhile.
    pub migrations: Vec<Migration>,
    /// Switchovers the controller reported meanwhile: how long each held
    /// the service address (ms).
    pub switchovers_ms: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Migration {
    pub vm: String,
    pub downtime_ms: u64,
    pub total_ms: u64,
    /// The most auto-converge slowed the guest's vCPUs (%).
    pub throttle_pct: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ArmResult {
    pub arm: String,
    pub way: &'static str,
    pub memory_load: Option<(u32, u32)>,
    pub sipp: SippReport,
    pub moves: Vec<Move>,
    pub during_moves: Option<ResponseTimes>,
    pub steady: Option<ResponseTimes>,
    /// Longest QEMU downtime of a VM that was ACT when it was migrated.
    pub act_pause_ms: Option<u64>,
    /// Longest downtime of any VM migrated (the SBY's, for Duplex).
    pub any_pause_ms: Option<u64>,
    pub switchover_ms_max: Option<u64>,
    pub throttle_pct_max: Option<u64>,
    pub move_ms_max: Option<f64>,
    /// Members whose guest rebooted during the arm (boot id changed).
    pub guest_restarts: Vec<String>,
    /// Where their console logs were kept.
    pub consoles: Vec<String>,
}

/// Splits response times: those whose call setup overlapped a move
/// window, and the rest.
pub fn split(
    samples: &[RttSample],
    moves: &[Move],
) -> (Option<ResponseTimes>, Option<ResponseTimes>) {
    let (during, steady): (Vec<RttSample>, Vec<RttSample>) = samples.iter().partition(|s| {
        let sent = s.date_ms - s.response_time_ms;
        moves
            .iter()
            .any(|m| sent <= m.end_ms && s.date_ms >= m.start_ms)
    });
    (response_times(&during, 1), response_times(&steady, 1))
}

fn num_after(msg: &str, key: &str) -> Option<u64> {
    let rest = &msg[msg.find(key)? + key.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// A `vm.migrated` event's message: "sa moved h1 → h2: total 731 ms,
/// downtime 12 ms, 102.0 MiB[, vCPUs throttled up to 40 %]".
pub fn migration_of(ev: &Value) -> Option<Migration> {
    if ev["kind"] != "vm.migrated" {
        return None;
    }
    let msg = ev["message"].as_str()?;
    Some(Migration {
        vm: msg.split_whitespace().next()?.to_string(),
        downtime_ms: num_after(msg, "downtime ")?,
        total_ms: num_after(msg, "total ")?,
        throttle_pct: num_after(msg, "throttled up to ").unwrap_or(0),
    })
}

/// A `pair.switchover` event's message: "sip: sa → sb: Swapped in 97 ms: …".
pub fn switchover_of(ev: &Value) -> Option<u64> {
    if ev["kind"] != "pair.switchover" {
        return None;
    }
    num_after(ev["message"].as_str()?, "Swapped in ")
}

fn opt<T: ToString>(x: Option<T>) -> String {
    x.map(|v| v.to_string()).unwrap_or_else(|| "–".into())
}

fn ms(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.0}")).unwrap_or_else(|| "–".into())
}

pub fn table(arms: &[ArmResult]) -> String {
    let mut md = String::from(
        "| arm | calls | failed | retrans. | unexpected | dead-call msgs | response p99 / max during moves (ms) | steady p99 / max (ms) | ACT pause (ms) | longest VM pause (ms) | longest switchover (ms) | vCPU throttle (%) | longest move (ms) | guest restarts |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for a in arms {
        let r = &a.sipp;
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} | {} | {} | {} | {} | {} |\n",
            a.arm,
            r.total_calls,
            r.failed + r.abandoned,
            r.retransmissions,
            r.unexpected_messages,
            r.dead_call_messages,
            ms(a.during_moves.as_ref().map(|t| t.p99)),
            ms(a.during_moves.as_ref().map(|t| t.max)),
            ms(a.steady.as_ref().map(|t| t.p99)),
            ms(a.steady.as_ref().map(|t| t.max)),
            opt(a.act_pause_ms),
            opt(a.any_pause_ms),
            opt(a.switchover_ms_max),
            opt(a.throttle_pct_max),
            ms(a.move_ms_max),
            if a.guest_restarts.is_empty() {
                "0".to_string()
            } else {
                a.guest_restarts.join(", ")
            },
        ));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mv(start: f64, end: f64) -> Move {
        Move {
            command: String::new(),
            start_ms: start,
            end_ms: end,
            ok: true,
            migrations: vec![],
            switchovers_ms: vec![],
        }
    }

    #[test]
    fn split_by_overlap_with_a_move() {
        let s = |at: f64, rt: f64| RttSample {
            date_ms: at,
            response_time_ms: rt,
            rtd: 1,
        };
        // Sent 900, answered 1000: before the move. Sent 950, answered
        // 1200: overlaps. Sent 1900, answered 2100: overlaps the end.
        let samples = [
            s(1000.0, 100.0),
            s(1200.0, 250.0),
            s(2100.0, 200.0),
            s(3000.0, 10.0),
        ];
        let (during, steady) = split(&samples, &[mv(1100.0, 2000.0)]);
        let (during, steady) = (during.unwrap(), steady.unwrap());
        assert_eq!((during.count, during.max), (2, 250.0));
        assert_eq!((steady.count, steady.max), (2, 100.0));
    }

    #[test]
    fn reads_migration_and_switchover_events() {
        let ev = serde_json::json!({"kind": "vm.migrated", "message": "sa moved h1 → h2: total 731 ms, downtime 12 ms, 102.0 MiB"});
        let m = migration_of(&ev).unwrap();
        assert_eq!(
            (m.vm.as_str(), m.downtime_ms, m.total_ms, m.throttle_pct),
            ("sa", 12, 731, 0)
        );
        let ev = serde_json::json!({"kind": "vm.migrated", "message": "sa moved h1 → h2: total 9000 ms, downtime 40 ms, 902.0 MiB, vCPUs throttled up to 70 %"});
        assert_eq!(migration_of(&ev).unwrap().throttle_pct, 70);
        assert_eq!(migration_of(&serde_json::json!({"kind": "x"})), None);
        let ev = serde_json::json!({"kind": "pair.switchover", "message": "sip: sa → sb: Swapped in 97 ms: Release(New) ok in 1 ms"});
        assert_eq!(switchover_of(&ev), Some(97));
        assert_eq!(
            switchover_of(&serde_json::json!({"kind": "pair.moved", "message": "x"})),
            None
        );
    }
}
