//! Pure parsers of sipp's output files and exit code (sipp 3.6).
//!
//! - [`parse_stat_csv`]: the `-trace_stat` file. One header line, then one
//!   row per `-fd` period and a last one at exit; `;`-separated, every line
//!   ending with `;`; date columns hold tabs. `(C)` columns are cumulative,
//!   so the last complete row is the run's total.
//! - [`parse_rtt_csv`]: the `-trace_rtt` file, `Date_ms;response_time_ms;rtd_no`,
//!   one line per measured response time (with `-rtt_freq 1`). sipp 3.6.1
//!   measures them in whole milliseconds on its scheduler clock (on this
//!   machine multiples of 4 ms once above 0).
//! - [`ExitMeaning`]: what sipp's exit code says.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What is wrong with a file's content. The caller adds the file's path
/// ([`SippError::Parse`](crate::SippError::Parse)).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("the file is empty")]
    Empty,

    #[error("line 1 is not sipp's header (expected it to start with `{expected}`): `{found}`")]
    Header {
        expected: &'static str,
        found: String,
    },

    #[error("column `{0}` is missing from the header")]
    MissingColumn(String),

    #[error("no complete data row after the header")]
    NoRows,

    #[error("line {line} has {found} fields, the header has {expected}")]
    FieldCount {
        line: usize,
        found: usize,
        expected: usize,
    },

    #[error("line {line}, column `{column}`: `{value}` is not {expected}")]
    Value {
        line: usize,
        column: String,
        value: String,
        expected: &'static str,
    },
}

/// One bucket of a sipp repartition (`ResponseTimeRepartition1_<10` → label
/// `<10`): calls whose response time fell in it, in ms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub label: String,
    pub count: u64,
}

/// Response time 1 as sipp's statistics file has it (ms resolution).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatResponseTime {
    /// `ResponseTime1(C)`: mean over the run.
    pub mean_ms: f64,
    /// `ResponseTime1StDev(C)`.
    pub stdev_ms: f64,
    /// `ResponseTimeRepartition1_*` of the last row, in header order.
    pub repartition: Vec<Bucket>,
}

impl StatResponseTime {
    /// Calls counted in the repartition.
    pub fn samples(&self) -> u64 {
        self.repartition.iter().map(|b| b.count).sum()
    }
}

/// The cumulative counters of the last complete row of a `-trace_stat` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatSummary {
    /// Data rows in the file.
    pub rows: usize,
    /// `TotalCallCreated`.
    pub total_calls: u64,
    /// `SuccessfulCall(C)`.
    pub successful: u64,
    /// `FailedCall(C)` (all reasons).
    pub failed: u64,
    /// `CurrentCall`: calls still open at the last row. Non-zero at the end
    /// of a run only when sipp was terminated (SIGTERM/SIGINT) mid-call.
    pub current_calls: u64,
    /// `Retransmissions(C)`.
    pub retransmissions: u64,
    /// `FailedUnexpectedMessage(C)`: calls failed on a message the
    /// scenario did not expect.
    pub unexpected_messages: u64,
    /// `OutOfCallMsgs(C)`: messages matching no call.
    pub out_of_call_messages: u64,
    /// `DeadCallMsgs(C)`: messages for calls already over.
    pub dead_call_messages: u64,
    /// `AutoAnswered(C)` (`-aa`).
    pub auto_answered: u64,
    /// `Warnings(C)`.
    pub warnings: u64,
    /// `FatalErrors(C)`.
    pub fatal_errors: u64,
    /// `WatchdogMajor(C)`: sipp's own scheduler stalled > 3 s.
    pub watchdog_major: u64,
    /// `WatchdogMinor(C)`: sipp's own scheduler stalled > 500 ms.
    pub watchdog_minor: u64,
    /// Every non-zero `Failed<Reason>(C)` but `FailedCall(C)`, keyed by
    /// `Failed<Reason>` (e.g. `FailedTimeoutOnRecv`, `FailedMaxUDPRetrans`).
    pub failed_by_reason: BTreeMap<String, u64>,
    /// `CallRate(C)`: calls per second over the run.
    pub call_rate_cps: f64,
    /// `ElapsedTime(C)` in whole seconds.
    pub elapsed_s: u64,
    pub response_time: StatResponseTime,
    /// `CallLength(C)`: mean call length in ms.
    pub call_length_mean_ms: f64,
}

/// Columns that must be there; the others count 0 when absent.
const REQUIRED: [&str; 3] = ["TotalCallCreated", "SuccessfulCall(C)", "FailedCall(C)"];
const STAT_FIRST: &str = "StartTime";
const REPARTITION1: &str = "ResponseTimeRepartition1_";

/// Splits into lines, dropping a last line that was cut off (no newline at
/// the end and fewer fields than the header): sipp killed mid-write.
fn lines_of(text: &str) -> Vec<(usize, &str)> {
    text.split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
        .filter(|(_, l)| !l.trim().is_empty())
        .collect()
}

fn split_fields(line: &str) -> Vec<&str> {
    line.split(';').collect()
}

/// Parses a `-trace_stat` file (delimiter `;`).
pub fn parse_stat_csv(text: &str) -> Result<StatSummary, ParseError> {
    let lines = lines_of(text);
    let Some(&(_, header_line)) = lines.first() else {
        return Err(ParseError::Empty);
    };
    let header = split_fields(header_line);
    if header[0] != STAT_FIRST {
        return Err(ParseError::Header {
            expected: STAT_FIRST,
            found: shorten(header_line),
        });
    }
    for col in REQUIRED {
        if !header.contains(&col) {
            return Err(ParseError::MissingColumn(col.to_string()));
        }
    }
    let complete_end = text.ends_with('\n');
    let mut rows = 0;
    let mut last: Option<(usize, Vec<&str>)> = None;
    let data = &lines[1..];
    for (idx, &(line_no, line)) in data.iter().enumerate() {
        let fields = split_fields(line);
        if fields.len() != header.len() {
            let cut_off = idx + 1 == data.len() && !complete_end && fields.len() < header.len();
            if cut_off {
                break;
            }
            return Err(ParseError::FieldCount {
                line: line_no,
                found: fields.len(),
                expected: header.len(),
            });
        }
        rows += 1;
        last = Some((line_no, fields));
    }
    let Some((line, fields)) = last else {
        return Err(ParseError::NoRows);
    };
    let row = Row {
        line,
        header: &header,
        fields: &fields,
    };

    let mut failed_by_reason = BTreeMap::new();
    for name in header.iter() {
        if let Some(stem) = name.strip_suffix("(C)") {
            if stem.starts_with("Failed") && stem != "FailedCall" {
                let n = row.count(name)?;
                if n > 0 {
                    failed_by_reason.insert(stem.to_string(), n);
                }
            }
        }
    }
    let mut repartition = Vec::new();
    for name in header.iter() {
        if let Some(label) = name.strip_prefix(REPARTITION1) {
            repartition.push(Bucket {
                label: label.to_string(),
                count: row.count(name)?,
            });
        }
    }

    Ok(StatSummary {
        rows,
        total_calls: row.count("TotalCallCreated")?,
        successful: row.count("SuccessfulCall(C)")?,
        failed: row.count("FailedCall(C)")?,
        current_calls: row.count_or_zero("CurrentCall")?,
        retransmissions: row.count_or_zero("Retransmissions(C)")?,
        unexpected_messages: row.count_or_zero("FailedUnexpectedMessage(C)")?,
        out_of_call_messages: row.count_or_zero("OutOfCallMsgs(C)")?,
        dead_call_messages: row.count_or_zero("DeadCallMsgs(C)")?,
        auto_answered: row.count_or_zero("AutoAnswered(C)")?,
        warnings: row.count_or_zero("Warnings(C)")?,
        fatal_errors: row.count_or_zero("FatalErrors(C)")?,
        watchdog_major: row.count_or_zero("WatchdogMajor(C)")?,
        watchdog_minor: row.count_or_zero("WatchdogMinor(C)")?,
        failed_by_reason,
        call_rate_cps: row.float_or_zero("CallRate(C)")?,
        elapsed_s: row
            .time_or_zero("ElapsedTime(C)")
            .map(|ms| (ms / 1000.0) as u64)?,
        response_time: StatResponseTime {
            mean_ms: row.time_or_zero("ResponseTime1(C)")?,
            stdev_ms: row.time_or_zero("ResponseTime1StDev(C)")?,
            repartition,
        },
        call_length_mean_ms: row.time_or_zero("CallLength(C)")?,
    })
}

/// One data row with its header, for typed access by column name.
struct Row<'a> {
    line: usize,
    header: &'a [&'a str],
    fields: &'a [&'a str],
}

impl Row<'_> {
    fn get(&self, column: &str) -> Option<&str> {
        let i = self.header.iter().position(|h| *h == column)?;
        Some(self.fields[i].trim())
    }

    fn bad(&self, column: &str, value: &str, expected: &'static str) -> ParseError {
        ParseError::Value {
            line: self.line,
            column: column.to_string(),
            value: value.to_string(),
            expected,
        }
    }

    fn count(&self, column: &str) -> Result<u64, ParseError> {
        let v = self
            .get(column)
            .ok_or_else(|| ParseError::MissingColumn(column.to_string()))?;
        v.parse()
            .map_err(|_| self.bad(column, v, "a non-negative integer"))
    }

    fn count_or_zero(&self, column: &str) -> Result<u64, ParseError> {
        match self.get(column) {
            None => Ok(0),
            Some(_) => self.count(column),
        }
    }

    fn float_or_zero(&self, column: &str) -> Result<f64, ParseError> {
        match self.get(column) {
            None => Ok(0.0),
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .ok_or_else(|| self.bad(column, v, "a number")),
        }
    }

    fn time_or_zero(&self, column: &str) -> Result<f64, ParseError> {
        match self.get(column) {
            None => Ok(0.0),
            Some(v) => {
                parse_sipp_time(v).ok_or_else(|| self.bad(column, v, "a time HH:MM:SS[:usec]"))
            }
        }
    }
}

/// sipp's time format in the statistics file, in ms: `HH:MM:SS:uuuuuu`
/// (response times, call lengths) or `HH:MM:SS` (elapsed time).
pub fn parse_sipp_time(s: &str) -> Option<f64> {
    let parts: Vec<&str> = s.split(':').collect();
    if !(parts.len() == 3 || parts.len() == 4) {
        return None;
    }
    let mut n = [0u64; 4];
    for (slot, p) in n.iter_mut().zip(&parts) {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = p.parse().ok()?;
    }
    let [h, m, sec, us] = n;
    if m >= 60 || sec >= 60 || us >= 1_000_000 {
        return None;
    }
    Some(((h * 3600 + m * 60 + sec) * 1000) as f64 + us as f64 / 1000.0)
}

/// One line of a `-trace_rtt` file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RttSample {
    /// ms since sipp started.
    pub date_ms: f64,
    pub response_time_ms: f64,
    /// Which response time (the scenario's `rtd`; 1 for the built-in UAC's
    /// INVITE → 200).
    pub rtd: u32,
}

const RTT_HEADER: [&str; 3] = ["Date_ms", "response_time_ms", "rtd_no"];

/// Parses a `-trace_rtt` file. A header alone (no call measured) gives an
/// empty list.
pub fn parse_rtt_csv(text: &str) -> Result<Vec<RttSample>, ParseError> {
    let lines = lines_of(text);
    let Some(&(_, header_line)) = lines.first() else {
        return Err(ParseError::Empty);
    };
    let header: Vec<&str> = split_fields(header_line)
        .into_iter()
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    if header.first() != Some(&RTT_HEADER[0]) {
        return Err(ParseError::Header {
            expected: RTT_HEADER[0],
            found: shorten(header_line),
        });
    }
    let mut idx = [0usize; 3];
    for (slot, name) in idx.iter_mut().zip(RTT_HEADER) {
        *slot = header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| ParseError::MissingColumn(name.to_string()))?;
    }
    let complete_end = text.ends_with('\n');
    let data = &lines[1..];
    let mut out = Vec::with_capacity(data.len());
    for (i, &(line_no, line)) in data.iter().enumerate() {
        let fields: Vec<&str> = split_fields(line).into_iter().map(str::trim).collect();
        let nonempty = fields.iter().filter(|f| !f.is_empty()).count();
        if nonempty < header.len() {
            if i + 1 == data.len() && !complete_end {
                break; // cut off mid-write
            }
            return Err(ParseError::FieldCount {
                line: line_no,
                found: nonempty,
                expected: header.len(),
            });
        }
        let num = |k: usize| -> Result<f64, ParseError> {
            let v = fields[idx[k]];
            v.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .ok_or_else(|| ParseError::Value {
                    line: line_no,
                    column: RTT_HEADER[k].to_string(),
                    value: v.to_string(),
                    expected: "a non-negative number",
                })
        };
        let rtd_str = fields[idx[2]];
        let rtd = rtd_str.parse::<u32>().map_err(|_| ParseError::Value {
            line: line_no,
            column: RTT_HEADER[2].to_string(),
            value: rtd_str.to_string(),
            expected: "a response time number",
        })?;
        out.push(RttSample {
            date_ms: num(0)?,
            response_time_ms: num(1)?,
            rtd,
        });
    }
    Ok(out)
}

/// Response time statistics over calls, in ms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseTimes {
    /// Calls measured.
    pub count: u64,
    pub mean: f64,
    /// Nearest-rank percentiles: the smallest sample with at least p% of
    /// the samples at or below it.
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// Statistics of the samples of response time `rtd`; `None` without any.
pub fn response_times(samples: &[RttSample], rtd: u32) -> Option<ResponseTimes> {
    let mut v: Vec<f64> = samples
        .iter()
        .filter(|s| s.rtd == rtd)
        .map(|s| s.response_time_ms)
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let rank = |p: f64| {
        let r = (p * n as f64).ceil() as usize;
        v[r.clamp(1, n) - 1]
    };
    Some(ResponseTimes {
        count: n as u64,
        mean: v.iter().sum::<f64>() / n as f64,
        p50: rank(0.50),
        p99: rank(0.99),
        max: v[n - 1],
    })
}

/// What sipp's exit code says (`sipp -h`, "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitMeaning {
    /// 0: all calls successful. Also what sipp 3.6.1 returns after SIGTERM
    /// or SIGINT when no call failed — even with calls still open (measured).
    AllCallsSuccessful,
    /// 1: at least one call failed. sipp 3.6.1 also exits 1 when it cannot
    /// load a scenario file (measured).
    SomeCallsFailed,
    /// 97: exit on internal command; calls may have been processed.
    InternalCommand,
    /// 99: normal exit without calls processed.
    NoCallsProcessed,
    /// -1 (255): fatal error.
    FatalError,
    /// -2 (254): fatal error binding a socket (e.g. `-p` port in use).
    BindError,
    /// No exit code: killed by a signal.
    Signal,
    /// Any other code.
    Other,
}

impl ExitMeaning {
    pub fn from_code(code: Option<i32>) -> Self {
        match code {
            Some(0) => ExitMeaning::AllCallsSuccessful,
            Some(1) => ExitMeaning::SomeCallsFailed,
            Some(97) => ExitMeaning::InternalCommand,
            Some(99) => ExitMeaning::NoCallsProcessed,
            Some(255) | Some(-1) => ExitMeaning::FatalError,
            Some(254) | Some(-2) => ExitMeaning::BindError,
            None => ExitMeaning::Signal,
            Some(_) => ExitMeaning::Other,
        }
    }

    /// sipp could not run its scenario at all.
    pub fn is_fatal(self) -> bool {
        matches!(self, ExitMeaning::FatalError | ExitMeaning::BindError)
    }

    pub fn describe(self) -> &'static str {
        match self {
            ExitMeaning::AllCallsSuccessful => "all calls successful",
            ExitMeaning::SomeCallsFailed => "at least one call failed",
            ExitMeaning::InternalCommand => "exit on internal command",
            ExitMeaning::NoCallsProcessed => "normal exit without calls processed",
            ExitMeaning::FatalError => "fatal error",
            ExitMeaning::BindError => "fatal error binding a socket",
            ExitMeaning::Signal => "killed by a signal",
            ExitMeaning::Other => "unknown exit code",
        }
    }
}

fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT_OK: &str = include_str!("../tests/fixtures/stat_ok.csv");
    const STAT_SLOW: &str = include_str!("../tests/fixtures/stat_slow_uas.csv");
    const STAT_RECV_TIMEOUT: &str = include_str!("../tests/fixtures/stat_recv_timeout.csv");
    const STAT_MAX_RETRANS: &str = include_str!("../tests/fixtures/stat_max_udp_retrans.csv");
    const STAT_SIGTERM: &str = include_str!("../tests/fixtures/stat_sigterm.csv");
    const STAT_SIGUSR1: &str = include_str!("../tests/fixtures/stat_sigusr1.csv");
    const RTT_OK: &str = include_str!("../tests/fixtures/rtt_ok.csv");
    const RTT_SLOW: &str = include_str!("../tests/fixtures/rtt_slow_uas.csv");

    #[test]
    fn stat_all_successful() {
        // 100 calls, 20 cps, 200 ms, against `sipp -sn uas` on loopback.
        let s = parse_stat_csv(STAT_OK).unwrap();
        assert_eq!(s.rows, 8);
        assert_eq!(s.total_calls, 100);
        assert_eq!(s.successful, 100);
        assert_eq!(s.failed, 0);
        assert_eq!(s.current_calls, 0);
        assert_eq!(s.retransmissions, 0);
        assert_eq!(s.unexpected_messages, 0);
        assert_eq!(s.out_of_call_messages, 0);
        assert_eq!(s.watchdog_major + s.watchdog_minor, 0);
        assert!(s.failed_by_reason.is_empty());
        assert_eq!(s.elapsed_s, 5);
        assert!(
            (19.0..20.5).contains(&s.call_rate_cps),
            "{}",
            s.call_rate_cps
        );
        let labels: Vec<&str> = s
            .response_time
            .repartition
            .iter()
            .map(|b| b.label.as_str())
            .collect();
        assert_eq!(
            labels,
            ["<10", "<20", "<30", "<40", "<50", "<100", "<150", "<200", ">=200"]
        );
        assert_eq!(s.response_time.repartition[0].count, 100);
        assert_eq!(s.response_time.samples(), 100);
        assert!((200.0..260.0).contains(&s.call_length_mean_ms));
    }

    #[test]
    fn stat_response_time_spread() {
        // 60 calls against tests/fixtures/slow_uas.xml (200 OK after 5-60 ms).
        let s = parse_stat_csv(STAT_SLOW).unwrap();
        assert_eq!((s.total_calls, s.successful, s.failed), (60, 60, 0));
        assert_eq!(s.response_time.mean_ms, 35.0);
        assert_eq!(s.response_time.stdev_ms, 15.0);
        let counts: Vec<u64> = s
            .response_time
            .repartition
            .iter()
            .map(|b| b.count)
            .collect();
        assert_eq!(counts, [3, 10, 10, 10, 15, 12, 0, 0, 0]);
        assert_eq!(s.call_length_mean_ms, 239.0);
    }

    #[test]
    fn stat_failed_on_receive_timeout() {
        // 10 calls to a port where nothing listens, -recv_timeout 1000ms.
        let s = parse_stat_csv(STAT_RECV_TIMEOUT).unwrap();
        assert_eq!((s.total_calls, s.successful, s.failed), (10, 0, 10));
        assert_eq!(
            s.failed_by_reason,
            BTreeMap::from([("FailedTimeoutOnRecv".to_string(), 10)])
        );
        assert_eq!(s.retransmissions, 10);
        assert_eq!(s.warnings, 10);
        assert_eq!(s.response_time.samples(), 0);
    }

    #[test]
    fn stat_failed_on_udp_retransmissions() {
        // 20 calls to a port where nothing listens, default timers: ~32 s.
        let s = parse_stat_csv(STAT_MAX_RETRANS).unwrap();
        assert_eq!(s.rows, 2);
        assert_eq!((s.total_calls, s.successful, s.failed), (20, 0, 20));
        assert_eq!(
            s.failed_by_reason,
            BTreeMap::from([("FailedMaxUDPRetrans".to_string(), 20)])
        );
        assert_eq!(s.retransmissions, 100);
        assert_eq!(s.elapsed_s, 32);
        assert_eq!(s.call_length_mean_ms, 31_524.0);
    }

    #[test]
    fn stat_terminated_leaves_open_calls() {
        // SIGTERM 1.5 s into a run with 2 s calls: nothing finished.
        let s = parse_stat_csv(STAT_SIGTERM).unwrap();
        assert_eq!((s.total_calls, s.successful, s.failed), (29, 0, 0));
        assert_eq!(s.current_calls, 29);
    }

    #[test]
    fn stat_graceful_stop() {
        // SIGUSR1 1.5 s into a run with 2 s calls: open calls finish.
        let s = parse_stat_csv(STAT_SIGUSR1).unwrap();
        assert_eq!((s.total_calls, s.successful, s.failed), (29, 29, 0));
        assert_eq!(s.current_calls, 0);
    }

    #[test]
    fn stat_cut_off_last_line_is_ignored() {
        let full = parse_stat_csv(STAT_OK).unwrap();
        // Drop the final newline and half of the last line.
        let trimmed = STAT_OK.trim_end_matches('\n');
        let cut = &trimmed[..trimmed.len() - 200];
        let s = parse_stat_csv(cut).unwrap();
        assert_eq!(s.rows, full.rows - 1);
        assert_eq!(s.total_calls, 100);
        assert_eq!(s.successful, 100);
    }

    #[test]
    fn stat_malformed() {
        assert_eq!(parse_stat_csv(""), Err(ParseError::Empty));
        assert_eq!(parse_stat_csv("\n\n"), Err(ParseError::Empty));
        assert!(matches!(
            parse_stat_csv("hello;world;\n1;2;\n"),
            Err(ParseError::Header { .. })
        ));
        let header = STAT_OK.lines().next().unwrap();
        assert_eq!(
            parse_stat_csv(&format!("{header}\n")),
            Err(ParseError::NoRows)
        );
        let no_total = header.replace("TotalCallCreated", "Renamed");
        assert_eq!(
            parse_stat_csv(&format!("{no_total}\n")),
            Err(ParseError::MissingColumn("TotalCallCreated".into()))
        );
        // A complete line (newline-terminated) with a wrong field count.
        let mut lines: Vec<&str> = STAT_OK.lines().collect();
        lines[2] = "a;b;c;";
        let broken = lines.join("\n") + "\n";
        assert_eq!(
            parse_stat_csv(&broken),
            Err(ParseError::FieldCount {
                line: 3,
                found: 4,
                expected: 96
            })
        );
        // A value of the last row that is not a number.
        let mut lines: Vec<String> = STAT_OK.lines().map(String::from).collect();
        let last = lines.last_mut().unwrap();
        let patched = last.replacen(";100;100;0;", ";100;x100;0;", 1);
        assert_ne!(&patched, last);
        *last = patched;
        let bad = lines.join("\n") + "\n";
        let err = parse_stat_csv(&bad).unwrap_err();
        assert!(
            matches!(&err, ParseError::Value { value, .. } if value == "x100"),
            "{err}"
        );
        assert!(err.to_string().contains("is not a non-negative integer"));
    }

    #[test]
    fn sipp_time() {
        assert_eq!(parse_sipp_time("00:00:00:000000"), Some(0.0));
        assert_eq!(parse_sipp_time("00:00:00:206000"), Some(206.0));
        assert_eq!(parse_sipp_time("00:00:31:524000"), Some(31_524.0));
        assert_eq!(parse_sipp_time("01:02:03:000500"), Some(3_723_000.5));
        assert_eq!(parse_sipp_time("00:00:05"), Some(5000.0));
        for bad in [
            "",
            "5",
            "00:00",
            "00:61:00",
            "a:b:c",
            "00:00:00:1000000",
            "-1:00:00",
        ] {
            assert_eq!(parse_sipp_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn rtt_loopback() {
        let v = parse_rtt_csv(RTT_OK).unwrap();
        assert_eq!(v.len(), 100);
        assert!(v.iter().all(|s| s.rtd == 1));
        assert_eq!(
            v[0],
            RttSample {
                date_ms: 52.001,
                response_time_ms: 0.0,
                rtd: 1
            }
        );
        let r = response_times(&v, 1).unwrap();
        assert_eq!(r.count, 100);
        assert_eq!((r.p50, r.p99, r.max), (0.0, 0.0, 4.0));
        assert!((r.mean - 0.04).abs() < 1e-9);
        assert_eq!(response_times(&v, 2), None);
    }

    #[test]
    fn rtt_spread() {
        let v = parse_rtt_csv(RTT_SLOW).unwrap();
        let r = response_times(&v, 1).unwrap();
        assert_eq!(r.count, 60);
        assert_eq!((r.p50, r.p99, r.max), (36.0, 60.0, 60.0));
        assert!((r.mean - 2128.0 / 60.0).abs() < 1e-9, "{}", r.mean);
    }

    #[test]
    fn percentiles_nearest_rank() {
        let s: Vec<RttSample> = (1..=200)
            .map(|i| RttSample {
                date_ms: i as f64,
                response_time_ms: i as f64,
                rtd: 1,
            })
            .collect();
        let r = response_times(&s, 1).unwrap();
        assert_eq!((r.p50, r.p99, r.max, r.mean), (100.0, 198.0, 200.0, 100.5));
        let one = response_times(&s[..1], 1).unwrap();
        assert_eq!((one.p50, one.p99, one.max), (1.0, 1.0, 1.0));
    }

    #[test]
    fn rtt_header_only_and_malformed() {
        assert_eq!(
            parse_rtt_csv("Date_ms;response_time_ms;rtd_no\n"),
            Ok(vec![])
        );
        assert_eq!(parse_rtt_csv(""), Err(ParseError::Empty));
        assert!(matches!(
            parse_rtt_csv("time;rtt\n1;2\n"),
            Err(ParseError::Header { .. })
        ));
        assert_eq!(
            parse_rtt_csv("Date_ms;rtd_no\n1;1\n"),
            Err(ParseError::MissingColumn("response_time_ms".into()))
        );
        assert_eq!(
            parse_rtt_csv("Date_ms;response_time_ms;rtd_no\n1;2\n3;4;1\n"),
            Err(ParseError::FieldCount {
                line: 2,
                found: 2,
                expected: 3
            })
        );
        let err = parse_rtt_csv("Date_ms;response_time_ms;rtd_no\n1;fast;1\n").unwrap_err();
        assert!(
            matches!(&err, ParseError::Value { line: 2, column, .. } if column == "response_time_ms")
        );
        // Cut off mid-write: the partial last line is dropped.
        let v = parse_rtt_csv("Date_ms;response_time_ms;rtd_no\n1;2;1\n3;4").unwrap();
        assert_eq!(v.len(), 1);
    }

    #[test]
    fn exit_codes() {
        use ExitMeaning::*;
        assert_eq!(ExitMeaning::from_code(Some(0)), AllCallsSuccessful);
        assert_eq!(ExitMeaning::from_code(Some(1)), SomeCallsFailed);
        assert_eq!(ExitMeaning::from_code(Some(97)), InternalCommand);
        assert_eq!(ExitMeaning::from_code(Some(99)), NoCallsProcessed);
        assert_eq!(ExitMeaning::from_code(Some(255)), FatalError);
        assert_eq!(ExitMeaning::from_code(Some(254)), BindError);
        assert_eq!(ExitMeaning::from_code(None), Signal);
        assert_eq!(ExitMeaning::from_code(Some(3)), Other);
        assert!(BindError.is_fatal() && FatalError.is_fatal());
        assert!(!SomeCallsFailed.is_fatal());
        assert_eq!(
            serde_json::to_string(&SomeCallsFailed).unwrap(),
            "\"some_calls_failed\""
        );
    }
}
