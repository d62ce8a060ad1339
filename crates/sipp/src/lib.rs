//! Drives the real `sipp` SIP load generator (Debian package sip-tester,
//! sipp 3.6) and turns its statistics into a [`SippReport`] (JSON via serde),
//! for tests and benchmarks.
//!
//! - [`SippRun`] ([`config`]): what to run — target, rate, call length, end
//!   (`calls` and/or `duration`), scenario, local address, receive timeout,
//!   the harness's hard `timeout`, and a work directory for sipp's files.
//!   [`SippRun::args`] is the sipp command line, pure.
//! - [`run`]: run sipp to the end and report. [`spawn`] starts it in the
//!   background; [`RunningSipp::stop`] ends it gracefully (SIGUSR1: no new
//!   calls, open ones finish) and [`RunningSipp::wait`] gives the report.
//! - [`parse`]: pure parsers of sipp's `-trace_stat` and `-trace_rtt` files
//!   and of its exit code.
//!
//! Every run is a UAC over UDP. `prefix` runs sipp through another command,
//! e.g. inside a lab namespace.
//!
//! # From a test
//!
//! ```no_run
//! use std::time::Duration;
//! use duplex_sipp::{spawn, SippRun};
//!
//! # async fn t() -> Result<(), duplex_sipp::SippError> {
//! let run = SippRun {
//!     rate_cps: 20.0,
//!     call_length_ms: 200,
//!     duration: Some(Duration::from_secs(30)),
//!     // a call fails after 1 s without an expected answer, instead of ~32 s
//!     recv_timeout: Some(Duration::from_secs(1)),
//!     timeout: Duration::from_secs(45),
//!     ..SippRun::new("10.77.0.100:5060".parse().unwrap(), "/tmp/switchover-sipp".into())
//! };
//! let prefix: Vec<String> = ["ip", "netns", "exec", "dx-client"].map(String::from).into();
//! let sipp = spawn(&run, &prefix)?;
//! // ... switch the service over while calls run ...
//! sipp.stop(); // no new calls; the open ones finish
//! let report = sipp.wait().await?;
//! println!("{}", serde_json::to_string_pretty(&report).unwrap());
//! assert_eq!(report.failed, 0, "{}", report.summary());
//! # Ok(()) }
//! ```
//!
//! What a report means, measured with sipp 3.6.1:
//! - `failed` counts calls sipp gave up on (`failed_by_reason` says why);
//!   calls still open when the harness's `timeout` terminated sipp are
//!   `abandoned`, not failed — and sipp then exits 0 anyway, so check
//!   [`SippReport::all_successful`] rather than the exit code alone.
//! - sipp's `-timeout` (our `duration`) counts whole seconds and only stops
//!   new calls; without `recv_timeout` a call to a silent peer takes ~32 s
//!   of UDP retransmissions to fail.
//! - Response times have 1 ms resolution (on loopback most are 0 ms).

pub mod config;
mod error;
pub mod parse;
mod report;
mod runner;

pub use config::{command_line, Scenario, SippRun, ERROR_FILE, SIPP_PROGRAM};
pub use error::{ConfigError, SippError};
pub use parse::{Bucket, ExitMeaning, ResponseTimes, StatResponseTime};
pub use report::{RunEnd, SippReport};
pub use runner::{run, spawn, RunningSipp};
