//! [`SippReport`]: what one sipp run did, as JSON-ready data.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::parse::{ExitMeaning, ResponseTimes, StatResponseTime, StatSummary};

/// How the sipp process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEnd {
    /// sipp ended by itself: `calls` reached, `duration` over, or an error.
    Exited,
    /// After [`RunningSipp::stop`](crate::RunningSipp::stop): sipp placed no
    /// new call and finished the open ones (SIGUSR1).
    Stopped,
    /// The harness's `timeout` expired: sipp got SIGTERM (then SIGKILL if it
    /// lingered); calls open then are `abandoned`.
    TimeLimit,
}

/// The outcome of one sipp run. Counters are sipp's cumulative ones from the
/// last row of its statistics file; response times come from its per-call
/// response time file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SippReport {
    /// Calls created.
    pub total_calls: u64,
    pub successful: u64,
    /// Calls sipp counted as failed, all reasons (see `failed_by_reason`).
    pub failed: u64,
    /// Calls neither successful nor failed when sipp exited: open when the
    /// harness's time limit terminated it.
    pub abandoned: u64,
    /// UDP retransmissions sipp had to send.
    pub retransmissions: u64,
    /// Calls failed on a message their scenario did not expect.
    pub unexpected_messages: u64,
    /// Messages that matched no call.
    pub out_of_call_messages: u64,
    /// Messages for calls already over.
    pub dead_call_messages: u64,
    /// Requests answered automatically (`-aa`: INFO, NOTIFY, OPTIONS, UPDATE).
    pub auto_answered: u64,
    pub warnings: u64,
    pub fatal_errors: u64,
    /// sipp's scheduler stalled (> 3 s major, > 500 ms minor): the load
    /// generator itself was starved, its timings are suspect.
    pub watchdog_major: u64,
    pub watchdog_minor: u64,
    /// Non-zero `Failed<Reason>` counters, e.g. `FailedTimeoutOnRecv`,
    /// `FailedMaxUDPRetrans`, `FailedUnexpectedMessage`.
    pub failed_by_reason: BTreeMap<String, u64>,
    /// Calls per second over the run (sipp's `CallRate(C)`).
    pub call_rate_cps: f64,
    /// Response time 1 (built-in UAC: INVITE sent -> 200 received) per call,
    /// from the response time file; `None` when no call got that far.
    pub response_time_ms: Option<ResponseTimes>,
    /// The same response time as sipp's statistics file has it: mean, stdev
    /// and its repartition buckets.
    pub response_time_stat: StatResponseTime,
    /// Mean call length in ms (sipp's `CallLength(C)`).
    pub call_length_mean_ms: f64,
    /// sipp's exit code; `None` when a signal killed it.
    pub exit_code: Option<i32>,
    pub exit_meaning: ExitMeaning,
    pub end: RunEnd,
    /// Wall clock from spawn to exit, measured by the harness.
    pub duration_ms: u64,
    /// Where sipp's files are (stat.csv, errors.log, screen.log, ...).
    pub work_dir: PathBuf,
    /// The last lines sipp wrote to stderr (first errors, fatal errors).
    pub stderr_tail: Vec<String>,
}

impl SippReport {
    /// Assembles a report. Pure.
    pub fn from_parts(
        stat: StatSummary,
        response_time_ms: Option<ResponseTimes>,
        exit_code: Option<i32>,
        end: RunEnd,
        duration: Duration,
        work_dir: PathBuf,
        stderr_tail: Vec<String>,
    ) -> Self {
        let finished = stat.successful + stat.failed;
        SippReport {
            total_calls: stat.total_calls,
            successful: stat.successful,
            failed: stat.failed,
            abandoned: stat
                .current_calls
                .max(stat.total_calls.saturating_sub(finished)),
            retransmissions: stat.retransmissions,
            unexpected_messages: stat.unexpected_messages,
            out_of_call_messages: stat.out_of_call_messages,
            dead_call_messages: stat.dead_call_messages,
            auto_answered: stat.auto_answered,
            warnings: stat.warnings,
            fatal_errors: stat.fatal_errors,
            watchdog_major: stat.watchdog_major,
            watchdog_minor: stat.watchdog_minor,
            failed_by_reason: stat.failed_by_reason,
            call_rate_cps: stat.call_rate_cps,
            response_time_ms,
            response_time_stat: stat.response_time,
            call_length_mean_ms: stat.call_length_mean_ms,
            exit_code,
            exit_meaning: ExitMeaning::from_code(exit_code),
            end,
            duration_ms: duration.as_millis().try_into().unwrap_or(u64::MAX),
            work_dir,
            stderr_tail,
        }
    }

    /// At least one call, every call successful, none failed or abandoned,
    /// and sipp agrees (exit code 0).
    pub fn all_successful(&self) -> bool {
        self.total_calls > 0
            && self.successful == self.total_calls
            && self.failed == 0
            && self.abandoned == 0
            && self.exit_code == Some(0)
    }

    /// One line for logs and assertion messages.
    pub fn summary(&self) -> String {
        let rt = match &self.response_time_ms {
            Some(r) => format!(
                "response ms p50/p99/max {}/{}/{} (n={})",
                r.p50, r.p99, r.max, r.count
            ),
            None => "no response times".to_string(),
        };
        let reasons = if self.failed_by_reason.is_empty() {
            String::new()
        } else {
            let parts: Vec<String> = self
                .failed_by_reason
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!(" ({})", parts.join(", "))
        };
        format!(
            "sipp: {} calls, {} ok, {} failed{}, {} abandoned, {} retrans, {} unexpected, {} out-of-call; {}; exit {:?} ({}), {:?} after {} ms",
            self.total_calls,
            self.successful,
            self.failed,
            reasons,
            self.abandoned,
            self.retransmissions,
            self.unexpected_messages,
            self.out_of_call_messages,
            rt,
            self.exit_code,
            self.exit_meaning.describe(),
            self.end,
            self.duration_ms
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{parse_rtt_csv, parse_stat_csv, response_times};

    fn report(stat: &str, rtt: Option<&str>, code: Option<i32>, end: RunEnd) -> SippReport {
        let stat = parse_stat_csv(stat).unwrap();
        let rt = rtt.and_then(|t| response_times(&parse_rtt_csv(t).unwrap(), 1));
        SippReport::from_parts(
            stat,
            rt,
            code,
            end,
            Duration::from_millis(5210),
            "/w".into(),
            vec![],
        )
    }

    #[test]
    fn successful_run() {
        let r = report(
            include_str!("../tests/fixtures/stat_ok.csv"),
            Some(include_str!("../tests/fixtures/rtt_ok.csv")),
            Some(0),
            RunEnd::Exited,
        );
        assert!(r.all_successful());
        assert_eq!(r.abandoned, 0);
        assert_eq!(r.duration_ms, 5210);
        assert_eq!(r.response_time_ms.as_ref().unwrap().count, 100);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["successful"], 100);
        assert_eq!(json["exit_meaning"], "all_calls_successful");
        assert_eq!(json["end"], "exited");
        assert_eq!(json["response_time_ms"]["p99"], 0.0);
        let back: SippReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
        assert!(r.summary().contains("100 calls, 100 ok, 0 failed"));
    }

    #[test]
    fn failed_run() {
        let r = report(
            include_str!("../tests/fixtures/stat_recv_timeout.csv"),
            None,
            Some(1),
            RunEnd::Exited,
        );
        assert!(!r.all_successful());
        assert_eq!(r.failed, 10);
        assert_eq!(r.exit_meaning, ExitMeaning::SomeCallsFailed);
        assert_eq!(r.response_time_ms, None);
        assert!(r.summary().contains("10 failed (FailedTimeoutOnRecv=10)"));
    }

    #[test]
    fn terminated_run_reports_abandoned_calls() {
        // sipp 3.6.1 exits 0 on SIGTERM although no call finished.
        let r = report(
            include_str!("../tests/fixtures/stat_sigterm.csv"),
            None,
            Some(0),
            RunEnd::TimeLimit,
        );
        assert_eq!(r.abandoned, 29);
        assert!(!r.all_successful());
    }
}
