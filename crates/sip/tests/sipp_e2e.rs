//! End to end with the real sipp (Debian package `sip-tester`) against the
//! server on a free 127.0.0.1 port without replication: its built-in `uac`
//! scenario (INVITE, 100/180/200, ACK, pause, BYE, 200), and
//! `fixtures/mid_call.xml` (REGISTER, a call with INFO, a re-INVITE,
//! UPDATE, MESSAGE, OPTIONS and an unknown method in it, the registration
//! removed).
//!
//! `cargo test --release -p duplex-sip --test sipp_e2e -- --nocapture`

use duplex_sip::{Report, Server};
use std::time::Duration;
use tokio::sync::oneshot;

/// Last value of a sipp `-trace_stat` CSV column (`;`-separated).
fn stat(csv: &str, column: &str) -> Option<u64> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next()?.split(';').collect();
    let last: Vec<&str> = lines.next_back()?.split(';').collect();
    let i = header.iter().position(|h| *h == column)?;
    last.get(i)?.trim().parse().ok()
}

struct SippRun {
    exit: Option<i32>,
    successful: Option<u64>,
    failed: Option<u64>,
    retransmissions: Option<u64>,
    server: Report,
}

/// Lines of sipp's error log shown when a run fails (the first errors).
const ERROR_LOG_HEAD: usize = 120;

/// The built-in `uac` scenario.
const UAC: &[&str] = &["-sn", "uac"];

/// `fixtures/mid_call.xml`.
fn mid_call() -> [String; 2] {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mid_call.xml");
    ["-sf".to_string(), path.to_string()]
}

/// `sipp SCENARIO 127.0.0.1:PORT -r 20 -d 500 -l 50 -timeout 30 EXTRA ...`
async fn run_sipp(name: &str, scenario: &[&str], extra: &[&str]) -> SippRun {
    // Kernel-chosen ports: the tests run in parallel.
    let server = Server::bind("127.0.0.1:0".parse().unwrap(), None).expect("bind 127.0.0.1");
    let target = server.local_addr().to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(async move {
        let _ = stopped.await;
    }));
    let csv_path =
        std::env::temp_dir().join(format!("duplex-sipp-{}-{name}.csv", std::process::id()));
    let _ = std::fs::remove_file(&csv_path);
    let err_path = csv_path.with_extension("errors.log");
    let _ = std::fs::remove_file(&err_path);
    let started = std::time::Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("sipp")
            .args(scenario)
            .args([&target, "-i", "127.0.0.1", "-p", "0"])
            .args([
                "-r", "20", "-d", "500", "-l", "50", "-timeout", "30", "-nostdin",
            ])
            .args(extra)
            .arg("-trace_stat")
            .arg("-stf")
            .arg(&csv_path)
            .arg("-trace_err")
            .arg("-error_file")
            .arg(&err_path)
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("sipp finished within 60 s")
    .expect("run sipp");
    stop.send(()).unwrap();
    let server = task.await.unwrap().unwrap();
    let csv = std::fs::read_to_string(&csv_path).unwrap_or_default();
    let _ = std::fs::remove_file(&csv_path);
    let run = SippRun {
        exit: out.status.code(),
        successful: stat(&csv, "SuccessfulCall(C)"),
        failed: stat(&csv, "FailedCall(C)"),
        retransmissions: stat(&csv, "Retransmissions(C)"),
        server,
    };
    eprintln!(
        "[{name}] sipp exit {:?} after {:?}: successful calls {:?}, failed calls {:?}, sipp retransmissions {:?}",
        run.exit,
        started.elapsed(),
        run.successful,
        run.failed,
        run.retransmissions
    );
    eprintln!(
        "[{name}] server counters: {}",
        serde_json::to_string(&run.server).unwrap_or_default()
    );
    let errors = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&err_path);
    if !out.status.success() {
        eprintln!(
            "[{name}] sipp stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // What sipp found wrong first, with the message it was handed.
        let head: Vec<&str> = errors.lines().take(ERROR_LOG_HEAD).collect();
        eprintln!(
            "[{name}] sipp error log (first lines):\n{}",
            head.join("\n")
        );
    }
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn sipp_uac_100_calls() {
    let run = run_sipp("clean", UAC, &["-m", "100"]).await;
    assert_eq!(run.exit, Some(0), "sipp: not every call succeeded");
    assert_eq!((run.successful, run.failed), (Some(100), Some(0)));
    let u = &run.server.uas;
    assert_eq!(u.requests.get("INVITE"), Some(&100));
    assert_eq!(u.requests.get("ACK"), Some(&100));
    assert_eq!(u.requests.get("BYE"), Some(&100));
    assert_eq!(
        u.acks_unmatched + u.malformed_dropped + u.bad_requests_sent,
        0
    );
}

/// sipp drops 10% of the messages it sends and receives: both sides'
/// retransmissions have to carry every call through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn sipp_uac_100_calls_with_10_percent_loss() {
    let run = run_sipp("lossy", UAC, &["-m", "100", "-lost", "10"]).await;
    assert_eq!(run.exit, Some(0), "sipp: not every call succeeded");
    assert_eq!((run.successful, run.failed), (Some(100), Some(0)));
    assert!(run.retransmissions.unwrap_or(0) > 0, "no loss happened?");
    let u = &run.server.uas;
    assert!(u.retransmissions_absorbed > 0 || u.responses_retransmitted > 0);
    assert_eq!(u.malformed_dropped + u.bad_requests_sent, 0);
}

/// What happens inside a call besides INVITE and BYE, and a registration
/// around it: every request answered as the RFCs say, 50 calls of 50.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_mid_call_requests_and_registrations() {
    let sf = mid_call();
    let sf: Vec<&str> = sf.iter().map(String::as_str).collect();
    let run = run_sipp("mid-call", &sf, &["-m", "50"]).await;
    assert_eq!(run.exit, Some(0), "sipp: not every call succeeded");
    assert_eq!((run.successful, run.failed), (Some(50), Some(0)));
    let u = &run.server.uas;
    for (method, n) in [
        ("REGISTER", 100),
        ("INVITE", 100),
        ("INFO", 50),
        ("UPDATE", 50),
        ("MESSAGE", 50),
    ] {
        assert_eq!(
            u.requests.get(method),
            Some(&n),
            "{method}: {:?}",
            u.requests
        );
    }
    assert_eq!(u.responses.get(&501), Some(&50), "{:?}", u.responses);
    assert_eq!(u.malformed_dropped + u.bad_requests_sent, 0);
}

/// `scenario` with `lost="PERCENT"` on every message but the ACKs sipp
/// sends: every request is sent with `retrans` (an ACK never is: RFC 3261
/// §17.1.1.3), every response received is a `recv`. A UAC must
/// acknowledge every retransmission of a 2xx (§13.2.2.4); sipp re-sends
/// its ACK only while that 2xx is the last message it received, so once
/// its ACK is lost and the call has gone on (INFO answered), the UAS's
/// retransmitted 2xx — right to go on until an ACK comes — aborts the
/// call as unexpected. A lost ACK is what the built-in scenario's lossy
/// test covers, where the 2xx stays the last.
fn lossy_but_acks(scenario: &str, percent: u32) -> String {
    let lost = format!(" lost=\"{percent}\"");
    scenario
        .replace("<send retrans=", &format!("<send{lost} retrans="))
        .replace("<recv ", &format!("<recv{lost} "))
}

#[test]
fn the_lossy_scenario_spares_only_the_acks() {
    let s = std::fs::read_to_string(mid_call()[1].as_str()).expect("fixture");
    let lossy = lossy_but_acks(&s, 10);
    let sends = s.matches("<send").count();
    let recvs = s.matches("<recv").count();
    assert_eq!(lossy.matches(" lost=\"10\"").count(), sends + recvs - 2);
    assert_eq!(s.matches(" ACK [next_url]").count(), 2);
    // The two ACKs are the only messages left as they were.
    assert_eq!(
        lossy.matches("<send>\n    <![CDATA[\n      ACK ").count(),
        2
    );
    assert_eq!(lossy.matches("<send>").count(), 2);
}

/// The same with sipp dropping 10 % of what it sends and receives, ACKs
/// aside (see `lossy_but_acks`): every kind of request is carried through
/// by retransmissions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_mid_call_requests_with_10_percent_loss() {
    let scenario = std::fs::read_to_string(mid_call()[1].as_str()).expect("fixture");
    let path = std::env::temp_dir().join(format!(
        "duplex-sipp-{}-mid-call-lossy.xml",
        std::process::id()
    ));
    std::fs::write(&path, lossy_but_acks(&scenario, 10)).expect("write the lossy scenario");
    let sf = path.to_string_lossy().to_string();
    let run = run_sipp("mid-call-lossy", &["-sf", &sf], &["-m", "50"]).await;
    let _ = std::fs::remove_file(&path);
    assert_eq!(run.exit, Some(0), "sipp: not every call succeeded");
    assert_eq!((run.successful, run.failed), (Some(50), Some(0)));
    assert!(run.retransmissions.unwrap_or(0) > 0, "no loss happened?");
}
