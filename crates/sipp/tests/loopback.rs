//! The harness against real sipp processes on 127.0.0.1: a `sipp -sn uas`
//! server started here (killed at the end, even when a test fails) and
//! ports where nothing listens.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use duplex_sipp::{run, spawn, ExitMeaning, RunEnd, Scenario, SippError, SippRun};

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A fresh, empty directory under cargo's per-target scratch space.
fn work_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("duplex-sipp")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A UDP port on 127.0.0.1 that nothing uses right now.
fn free_port() -> u16 {
    UdpSocket::bind((LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `sipp -sn uas` in the background; killed when dropped.
struct Uas {
    child: Child,
    addr: SocketAddr,
}

impl Uas {
    /// sipp's built-in UAS: answers at once.
    fn start(name: &str) -> Uas {
        Uas::start_with(name, &["-sn", "uas"])
    }

    fn start_with(name: &str, scenario: &[&str]) -> Uas {
        let dir = work_dir(name);
        let port = free_port();
        let log = std::fs::File::create(dir.join("uas.log")).unwrap();
        let child = Command::new("sipp")
            .args(scenario)
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .arg("-nostdin")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run sipp (Debian package sip-tester)");
        let mut uas = Uas {
            child,
            addr: SocketAddr::from((LOCALHOST, port)),
        };
        // Ready once it holds the port: our own bind then fails.
        let t0 = Instant::now();
        while UdpSocket::bind(uas.addr).is_ok() {
            if let Ok(Some(status)) = uas.child.try_wait() {
                panic!("sipp uas exited at start ({status}), see {}", dir.display());
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "sipp uas not up");
            std::thread::sleep(Duration::from_millis(20));
        }
        uas
    }
}

impl Drop for Uas {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn uac(target: SocketAddr, name: &str) -> SippRun {
    SippRun {
        local_ip: Some(LOCALHOST.into()),
        ..SippRun::new(target, work_dir(name))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_calls_all_successful() {
    let uas = Uas::start("ok-uas");
    let run_cfg = SippRun {
        rate_cps: 20.0,
        call_length_ms: 200,
        calls: Some(100),
        timeout: Duration::from_secs(30),
        ..uac(uas.addr, "ok")
    };
    let report = run(&run_cfg, &[]).await.expect("sipp run");
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    assert_eq!(report.total_calls, 100, "{}", report.summary());
    assert_eq!(report.successful, 100, "{}", report.summary());
    assert_eq!(report.failed, 0, "{}", report.summary());
    assert_eq!(report.abandoned, 0);
    assert_eq!(report.unexpected_messages, 0);
    assert_eq!(report.exit_code, Some(0));
    assert_eq!(report.exit_meaning, ExitMeaning::AllCallsSuccessful);
    assert_eq!(report.end, RunEnd::Exited);
    assert!(report.all_successful());
    let rt = report.response_time_ms.as_ref().expect("response times");
    assert_eq!(rt.count, 100);
    assert!(rt.p50 <= rt.p99 && rt.p99 <= rt.max);
    assert_eq!(report.response_time_stat.samples(), 100);
    // 100 calls at 20 cps: the last starts after ~5 s and lasts 200 ms.
    assert!(
        (5000..15000).contains(&report.duration_ms),
        "{}",
        report.duration_ms
    );
    assert!(report.call_length_mean_ms >= 200.0);
    let back: duplex_sipp::SippReport =
        serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
    assert_eq!(back, report);
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_files_and_measured_response_times() {
    // Server: 200 OK after a random 5-60 ms; client: our own UAC file.
    let slow = fixture("slow_uas.xml");
    let uas = Uas::start_with("files-uas", &["-sf", slow.to_str().unwrap()]);
    let run_cfg = SippRun {
        rate_cps: 20.0,
        call_length_ms: 100,
        calls: Some(20),
        scenario: Scenario::File(fixture("uac_basic.xml")),
        timeout: Duration::from_secs(20),
        ..uac(uas.addr, "files")
    };
    let report = run(&run_cfg, &[]).await.expect("sipp run");
    eprintln!("{}", report.summary());
    assert!(report.all_successful(), "{}", report.summary());
    assert_eq!(report.successful, 20);
    // The response time file is named after the scenario file.
    let rtt_files: Vec<String> = std::fs::read_dir(&report.work_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with("_rtt.csv"))
        .collect();
    assert_eq!(rtt_files.len(), 1, "{rtt_files:?}");
    assert!(rtt_files[0].starts_with("uac_basic_"), "{rtt_files:?}");
    let rt = report.response_time_ms.as_ref().expect("response times");
    assert_eq!(rt.count, 20);
    assert!(rt.p50 >= 4.0 && rt.max >= 30.0, "{rt:?}");
    assert!(rt.max < 1000.0, "{rt:?}");
    assert!(report.response_time_stat.mean_ms >= 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_listening_fails_calls() {
    let target = SocketAddr::from((LOCALHOST, free_port()));
    let run_cfg = SippRun {
        rate_cps: 20.0,
        call_length_ms: 200,
        calls: Some(10),
        recv_timeout: Some(Duration::from_secs(1)),
        timeout: Duration::from_secs(20),
        ..uac(target, "dead")
    };
    let report = run(&run_cfg, &[]).await.expect("sipp run");
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    assert!(report.failed > 0, "{}", report.summary());
    assert_eq!(report.failed, 10);
    assert_eq!(report.successful, 0);
    assert_eq!(
        report.failed_by_reason.get("FailedTimeoutOnRecv"),
        Some(&10)
    );
    assert_eq!(report.exit_code, Some(1));
    assert_eq!(report.exit_meaning, ExitMeaning::SomeCallsFailed);
    assert!(!report.all_successful());
    assert_eq!(report.response_time_ms, None);
    assert!(report
        .summary()
        .contains("10 failed (FailedTimeoutOnRecv=10)"));
    assert!(
        report
            .stderr_tail
            .iter()
            .any(|l| l.contains("receive timeout")),
        "{:?}",
        report.stderr_tail
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_in_the_background_lets_open_calls_finish() {
    let uas = Uas::start("stop-uas");
    let run_cfg = SippRun {
        rate_cps: 20.0,
        call_length_ms: 1000,
        duration: Some(Duration::from_secs(60)),
        timeout: Duration::from_secs(90),
        ..uac(uas.addr, "stop")
    };
    // Through a prefix command that execs sipp, as `ip netns exec` does.
    let prefix: Vec<String> = vec!["env".into(), "LC_ALL=C".into()];

    // A stop right after spawn is held back until sipp can take SIGUSR1
    // (earlier, SIGUSR1 kills it): it ends cleanly, with few or no calls.
    let early = spawn(
        &SippRun {
            work_dir: work_dir("stop-early"),
            ..run_cfg.clone()
        },
        &prefix,
    )
    .expect("spawn");
    early.stop();
    let report = early.wait().await.expect("sipp run, stopped at once");
    eprintln!("{}", report.summary());
    assert_eq!(report.end, RunEnd::Stopped);
    assert!(
        report.exit_code.is_some(),
        "killed by a signal: {}",
        report.summary()
    );
    assert_eq!(report.failed + report.abandoned, 0, "{}", report.summary());

    let sipp = spawn(&run_cfg, &prefix).expect("spawn");
    assert!(sipp.cmdline().starts_with("env LC_ALL=C sipp 127.0.0.1:"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sipp.stop();
    sipp.stop(); // twice: harmless
    let report = sipp.wait().await.expect("sipp run");
    eprintln!("{}", report.summary());
    assert_eq!(report.end, RunEnd::Stopped);
    assert!(report.total_calls >= 20, "{}", report.summary());
    assert_eq!(
        report.successful,
        report.total_calls,
        "{}",
        report.summary()
    );
    assert_eq!(report.abandoned, 0);
    assert!(report.all_successful());
    // The calls open at the stop (1 s long) were let finish.
    assert!(report.duration_ms >= 2000, "{}", report.duration_ms);
    // Far less than the 60 s asked: stop() ended it, calls lasted 1 s.
    assert!(report.duration_ms < 10_000, "{}", report.duration_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_limit_terminates_and_reports_abandoned_calls() {
    // No recv_timeout: calls to a silent port would retransmit for ~32 s.
    let target = SocketAddr::from((LOCALHOST, free_port()));
    let run_cfg = SippRun {
        rate_cps: 10.0,
        calls: Some(5),
        timeout: Duration::from_secs(3),
        ..uac(target, "limit")
    };
    let t0 = Instant::now();
    let report = run(&run_cfg, &[]).await.expect("sipp run");
    eprintln!("{}", report.summary());
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    assert_eq!(report.end, RunEnd::TimeLimit);
    assert_eq!(report.total_calls, 5);
    assert_eq!(report.successful, 0);
    assert_eq!(report.abandoned, 5, "{}", report.summary());
    assert!(report.retransmissions > 0);
    assert!(!report.all_successful());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_port_in_use_is_a_clear_error() {
    let held = UdpSocket::bind((LOCALHOST, 0)).unwrap();
    let port = held.local_addr().unwrap().port();
    let run_cfg = SippRun {
        calls: Some(1),
        local_port: Some(port),
        timeout: Duration::from_secs(10),
        ..uac(SocketAddr::from((LOCALHOST, free_port())), "bind")
    };
    let err = run(&run_cfg, &[]).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            SippError::Fatal {
                exit_code: Some(254),
                ..
            }
        ),
        "{msg}"
    );
    assert!(msg.contains("Unable to bind"), "{msg}");
}

#[tokio::test]
async fn bad_input_is_refused_before_running() {
    let target = SocketAddr::from((LOCALHOST, 5060));
    let missing = SippRun {
        calls: Some(1),
        scenario: Scenario::File("/nonexistent/scenario.xml".into()),
        ..uac(target, "bad")
    };
    let err = run(&missing, &[]).await.unwrap_err();
    assert!(matches!(err, SippError::ScenarioMissing(_)), "{err}");
    let no_end = uac(target, "bad");
    let err = run(&no_end, &[]).await.unwrap_err();
    assert!(matches!(err, SippError::Config(_)), "{err}");
    let no_program = SippRun {
        calls: Some(1),
        ..uac(target, "bad")
    };
    let err = run(&no_program, &["/nonexistent/wrapper".to_string()])
        .await
        .unwrap_err();
    assert!(matches!(err, SippError::Spawn { .. }), "{err}");
}
