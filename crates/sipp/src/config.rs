//! What to run: [`SippRun`], its validation and the sipp command line (pure).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// The sipp program, looked up in `PATH` (Debian: `/usr/bin/sipp`, package
/// sip-tester).
pub const SIPP_PROGRAM: &str = "sipp";

/// Files the harness asks sipp to write, all in [`SippRun::work_dir`].
pub const STAT_FILE: &str = "stat.csv";
/// Unexpected messages and aborted calls (`-trace_err`).
pub const ERROR_FILE: &str = "errors.log";
/// sipp's final screens (`-trace_screen`).
pub const SCREEN_FILE: &str = "screen.log";
/// sipp's standard output (its final screens again).
pub const STDOUT_FILE: &str = "sipp.stdout";
/// sipp's standard error (warnings, the first errors, fatal errors).
pub const STDERR_FILE: &str = "sipp.stderr";
/// The per-call response time file has no name option: sipp writes
/// `<scenario>_<pid>_rtt.csv` into its working directory (= `work_dir`).
pub const RTT_SUFFIX: &str = "_rtt.csv";

/// Margin [`SippRun::validate`] adds for sipp's start-up and exit when it
/// checks that `timeout` leaves the run time to finish.
pub const START_EXIT_MARGIN: Duration = Duration::from_secs(1);

/// The call flow sipp plays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// sipp's embedded UAC (`-sn uac`): INVITE, (100/180/183), 200 (response
    /// time 1 measured INVITE -> 200), ACK, pause of `call_length_ms`, BYE, 200.
    BuiltinUac,
    /// A scenario file (`-sf`). Its `<pause/>` without `milliseconds` lasts
    /// `call_length_ms`; its `rtd="true"` marks response time 1.
    File(PathBuf),
}

/// One sipp run as a client (UAC) against `target`, over UDP.
///
/// Build it with struct update syntax from [`SippRun::new`]:
///
/// ```
/// # use duplex_sipp::SippRun;
/// let run = SippRun {
///     rate_cps: 20.0,
///     call_length_ms: 200,
///     calls: Some(100),
///     ..SippRun::new("127.0.0.1:5060".parse().unwrap(), "/tmp/sipp-run".into())
/// };
/// assert!(run.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SippRun {
    /// Where calls go (the service address).
    pub target: SocketAddr,
    /// New calls per second (`-r`).
    pub rate_cps: f64,
    /// Pause between 200/ACK and BYE, in ms (`-d`).
    pub call_length_ms: u64,
    /// Stop after this many calls (`-m`).
    pub calls: Option<u64>,
    /// Stop placing calls after this long (`-timeout`, whole seconds; calls
    /// under way then still finish — measured with sipp 3.6.1). The run ends
    /// at whichever of `calls` and `duration` comes first.
    pub duration: Option<Duration>,
    pub scenario: Scenario,
    /// Local address (`-i` for Via/Contact/From, plus `-bind_local` so calls
    /// leave from it).
    pub local_ip: Option<IpAddr>,
    /// Local SIP port (`-p`); default: a free port chosen by the system.
    pub local_port: Option<u16>,
    /// A call fails (FailedTimeoutOnRecv) when an expected message does not
    /// come within this time (`-recv_timeout`). Without it a call to a silent
    /// peer fails only after UDP retransmissions give up, about 32 s.
    pub recv_timeout: Option<Duration>,
    /// Hard limit for the whole run, enforced by the harness: at expiry sipp
    /// gets SIGTERM (it writes its statistics and exits), then SIGKILL 3 s
    /// later. Calls still open then are reported as `abandoned`.
    pub timeout: Duration,
    /// Directory for sipp's files (created if missing; sipp's working
    /// directory). One run at a time per directory: stale output files are
    /// removed when a run starts. Must be absolute.
    pub work_dir: PathBuf,
}

impl SippRun {
    /// Defaults: built-in UAC, 10 cps, call length 0, no end (set `calls`
    /// and/or `duration`), timeout 60 s.
    pub fn new(target: SocketAddr, work_dir: PathBuf) -> Self {
        SippRun {
            target,
            rate_cps: 10.0,
            call_length_ms: 0,
            calls: None,
            duration: None,
            scenario: Scenario::BuiltinUac,
            local_ip: None,
            local_port: None,
            recv_timeout: None,
            timeout: Duration::from_secs(60),
            work_dir,
        }
    }

    /// Checks everything that can be checked without touching the system.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.rate_cps.is_finite() && self.rate_cps > 0.0) {
            return Err(ConfigError::Rate(self.rate_cps));
        }
        if self.calls.is_none() && self.duration.is_none() {
            return Err(ConfigError::NoEnd);
        }
        if self.calls == Some(0) {
            return Err(ConfigError::ZeroCalls);
        }
        if let Some(d) = self.duration {
            if d.subsec_nanos() != 0 || d.as_secs() == 0 {
                return Err(ConfigError::Duration(d));
            }
        }
        if let Some(r) = self.recv_timeout {
            if r.as_millis() == 0 {
                return Err(ConfigError::ZeroRecvTimeout);
            }
        }
        if self.target.ip().is_unspecified() || self.target.port() == 0 {
            return Err(ConfigError::Target(self.target));
        }
        if self.local_port == Some(0) {
            return Err(ConfigError::LocalPort);
        }
        if !self.work_dir.is_absolute() {
            return Err(ConfigError::WorkDir(self.work_dir.clone()));
        }
        let needed = self.expected_runtime() + START_EXIT_MARGIN;
        if self.timeout < needed {
            return Err(ConfigError::Timeout {
                timeout: self.timeout,
                needed,
            });
        }
        Ok(())
    }

    /// A lower bound of how long the run lasts when every call succeeds:
    /// the last call starts at `(calls - 1) / rate` and lasts at least
    /// `call_length`; with `duration`, calls stop at `duration` and the last
    /// one still lasts `call_length`. The earlier end wins.
    pub fn expected_runtime(&self) -> Duration {
        let length = Duration::from_millis(self.call_length_ms);
        let by_calls = self.calls.map(|n| {
            let secs = n.saturating_sub(1) as f64 / self.rate_cps;
            Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX) + length
        });
        let by_duration = self.duration.map(|d| d + length);
        match (by_calls, by_duration) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => Duration::ZERO,
        }
    }

    /// The sipp arguments (without the program name). Pure.
    ///
    /// `-nostdin` keeps sipp from reading keys from a terminal (it runs in
    /// the foreground, without `-bg`, so the harness sees its exit code);
    /// statistics go to files in `work_dir`, one stat row per second.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        push(&[&self.target.to_string()]);
        match &self.scenario {
            Scenario::BuiltinUac => push(&["-sn", "uac"]),
            Scenario::File(path) => push(&["-sf", &path_str(path)]),
        }
        push(&["-r", &self.rate_cps.to_string()]);
        push(&["-d", &self.call_length_ms.to_string()]);
        if let Some(n) = self.calls {
            push(&["-m", &n.to_string()]);
        }
        if let Some(d) = self.duration {
            push(&["-timeout", &format!("{}s", d.as_secs())]);
        }
        if let Some(r) = self.recv_timeout {
            push(&["-recv_timeout", &format!("{}ms", r.as_millis())]);
        }
        if let Some(ip) = self.local_ip {
            push(&["-i", &ip.to_string(), "-bind_local"]);
        }
        if let Some(port) = self.local_port {
            push(&["-p", &port.to_string()]);
        }
        push(&["-nostdin", "-aa"]);
        let file = |name: &str| path_str(&self.work_dir.join(name));
        push(&["-trace_stat", "-stf", &file(STAT_FILE), "-fd", "1"]);
        push(&["-trace_rtt", "-rtt_freq", "1"]);
        push(&["-trace_err", "-error_file", &file(ERROR_FILE)]);
        push(&["-trace_screen", "-screen_file", &file(SCREEN_FILE)]);
        a
    }
}

/// The full command: `prefix` (e.g. `ip netns exec dx-client`), then sipp
/// and its arguments. Returns (program, arguments). Pure.
pub fn command_line(run: &SippRun, prefix: &[String]) -> (String, Vec<String>) {
    let mut all: Vec<String> = prefix.to_vec();
    all.push(SIPP_PROGRAM.to_string());
    all.extend(run.args());
    let program = all.remove(0);
    (program, all)
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> SippRun {
        SippRun {
            rate_cps: 20.0,
            call_length_ms: 200,
            calls: Some(100),
            ..SippRun::new("127.0.0.1:5060".parse().unwrap(), "/w".into())
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn args_builtin_uac() {
        assert_eq!(
            base().args(),
            s(&[
                "127.0.0.1:5060",
                "-sn",
                "uac",
                "-r",
                "20",
                "-d",
                "200",
                "-m",
                "100",
                "-nostdin",
                "-aa",
                "-trace_stat",
                "-stf",
                "/w/stat.csv",
                "-fd",
                "1",
                "-trace_rtt",
                "-rtt_freq",
                "1",
                "-trace_err",
                "-error_file",
                "/w/errors.log",
                "-trace_screen",
                "-screen_file",
                "/w/screen.log",
            ])
        );
    }

    #[test]
    fn args_everything() {
        let run = SippRun {
            target: "[::1]:5070".parse().unwrap(),
            rate_cps: 2.5,
            calls: None,
            duration: Some(Duration::from_secs(30)),
            scenario: Scenario::File("/s/x.xml".into()),
            local_ip: Some("10.77.0.2".parse().unwrap()),
            local_port: Some(5099),
            recv_timeout: Some(Duration::from_millis(1500)),
            ..base()
        };
        let a = run.args();
        assert_eq!(a[0], "[::1]:5070");
        let joined = a.join(" ");
        for part in [
            "-sf /s/x.xml",
            "-r 2.5",
            "-d 200",
            "-timeout 30s",
            "-recv_timeout 1500ms",
            "-i 10.77.0.2 -bind_local",
            "-p 5099",
            "-nostdin",
        ] {
            assert!(joined.contains(part), "{part} missing in {joined}");
        }
        assert!(!a.contains(&"-m".to_string()));
        assert!(!a.contains(&"-sn".to_string()));
        assert!(!a.contains(&"-bg".to_string()));
    }

    #[test]
    fn args_never_background() {
        assert!(!base().args().iter().any(|a| a == "-bg"));
    }

    #[test]
    fn command_line_with_and_without_prefix() {
        let run = base();
        let (p, a) = command_line(&run, &[]);
        assert_eq!(p, "sipp");
        assert_eq!(a, run.args());
        let prefix = s(&["ip", "netns", "exec", "dx-client"]);
        let (p, a) = command_line(&run, &prefix);
        assert_eq!(p, "ip");
        assert_eq!(&a[..4], &s(&["netns", "exec", "dx-client", "sipp"])[..]);
        assert_eq!(&a[4..], &run.args()[..]);
    }

    #[test]
    fn validation() {
        assert_eq!(base().validate(), Ok(()));
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let r = SippRun {
                rate_cps: rate,
                ..base()
            };
            assert!(matches!(r.validate(), Err(ConfigError::Rate(_))));
        }
        let r = SippRun {
            calls: None,
            ..base()
        };
        assert_eq!(r.validate(), Err(ConfigError::NoEnd));
        let r = SippRun {
            calls: Some(0),
            ..base()
        };
        assert_eq!(r.validate(), Err(ConfigError::ZeroCalls));
        for d in [Duration::from_millis(1500), Duration::ZERO] {
            let r = SippRun {
                duration: Some(d),
                ..base()
            };
            assert_eq!(r.validate(), Err(ConfigError::Duration(d)));
        }
        let r = SippRun {
            recv_timeout: Some(Duration::from_micros(10)),
            ..base()
        };
        assert_eq!(r.validate(), Err(ConfigError::ZeroRecvTimeout));
        for t in ["0.0.0.0:5060", "127.0.0.1:0"] {
            let r = SippRun {
                target: t.parse().unwrap(),
                ..base()
            };
            assert!(matches!(r.validate(), Err(ConfigError::Target(_))));
        }
        let r = SippRun {
            local_port: Some(0),
            ..base()
        };
        assert_eq!(r.validate(), Err(ConfigError::LocalPort));
        let r = SippRun {
            work_dir: "rel/dir".into(),
            ..base()
        };
        assert!(matches!(r.validate(), Err(ConfigError::WorkDir(_))));
    }

    #[test]
    fn timeout_must_leave_time_to_finish() {
        // 100 calls at 20 cps: last call starts at 4.95 s, lasts 0.2 s.
        let r = base();
        assert_eq!(r.expected_runtime(), Duration::from_millis(5150));
        let r = SippRun {
            timeout: Duration::from_secs(6),
            ..base()
        };
        assert_eq!(
            r.validate(),
            Err(ConfigError::Timeout {
                timeout: Duration::from_secs(6),
                needed: Duration::from_millis(6150)
            })
        );
        let r = SippRun {
            timeout: Duration::from_millis(6150),
            ..base()
        };
        assert_eq!(r.validate(), Ok(()));
        // duration ends it earlier than the calls would.
        let r = SippRun {
            duration: Some(Duration::from_secs(2)),
            timeout: Duration::from_secs(4),
            ..base()
        };
        assert_eq!(r.expected_runtime(), Duration::from_millis(2200));
        assert_eq!(r.validate(), Ok(()));
    }

    #[test]
    fn serde_round_trip() {
        let r = SippRun {
            scenario: Scenario::File("/s/x.xml".into()),
            duration: Some(Duration::from_secs(3)),
            ..base()
        };
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<SippRun>(&j).unwrap(), r);
    }
}
