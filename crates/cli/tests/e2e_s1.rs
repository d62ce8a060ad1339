//! S1 in the lab, under SIP load from `sipp`: `duplex pair migrate`
//! without and with switch-back, `duplex host drain` of a host carrying a
//! pair member and a lone VM, and a fault: the destination host's agent and
//! QEMU killed in the middle of the SBY's migration — the operation fails,
//! the pair stays healthy where it was. sipp's counts are printed.

mod common;

use common::{LabGuard, BIN};
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

const LAB: &str = "e2em";

fn duplex(args: &[&str]) -> (bool, String, String) {
    common::in_lab(LAB, args)
}

fn json(args: &[&str]) -> Value {
    common::in_lab_json(LAB, args)
}

/// (ACT host, SBY host) as the guests report them, insisting on health.
fn layout() -> (String, String) {
    let p = json(&["pair", "show", "sig"]);
    assert_eq!(p["health"], "healthy", "{p}");
    common::act_sby_hosts(&p)
}

fn wait_healthy() {
    common::wait_pair_healthy(LAB, "sig", Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread")]
async fn pair_migrate_drain_and_a_dead_destination_under_sip_load() {
    let _guard = LabGuard::new(LAB);
    let i = common::lab_up(LAB, &["--hosts", "3"]);
    let ip = |last: u8| format!("10.{i}.0.{last}");
    let (ma, mb, vip) = (format!("pa={}", ip(101)), format!("pb={}", ip(102)), ip(50));
    json(&[
        "pair", "create", "sig", "--vip", &vip, "--member", &ma, "--member", &mb, "--hosts",
        "h1,h2",
    ]);
    let solo_ip = ip(103);
    json(&["vm", "create", "solo", "--ip", &solo_ip, "--host", "h1"]);
    assert_eq!(layout(), ("h1".into(), "h2".into()));

    let work = std::env::temp_dir().join(format!("duplex-e2e-s1-{}", std::process::id()));
    // A call left open (its last request unanswered) would keep sipp from
    // ending after `stop`: the harness ends it 40 s later, counted abandoned.
    let sipp = common::sipp_until_stopped(
        LAB,
        &vip,
        &work,
        Duration::from_secs(60),
        Duration::from_secs(40),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 1. Off the ACT's host (h1) to h3, no switch-back: the SBY on h2 takes
    //    over, the old ACT moves as SBY.
    let p = json(&["pair", "migrate", "sig", "--to", "h3"]);
    eprintln!("after move 1: {p}");
    wait_healthy();
    assert_eq!(layout(), ("h2".into(), "h3".into()));

    // 2. Off the ACT's host (h2) to h1, with switch-back: the ACT ends on
    //    the member that was ACT before.
    json(&["pair", "migrate", "sig", "--to", "h1", "--switch-back"]);
    wait_healthy();
    assert_eq!(layout(), ("h1".into(), "h3".into()));

    // 3. Drain h1: the pair's ACT member and the lone VM leave it.
    let (ok, out, err) = duplex(&["host", "drain", "h1"]);
    assert!(ok, "drain: {err}");
    eprintln!("{err}{out}");
    let h1 = json(&["host", "show", "h1"]);
    assert_eq!(h1["state"], "maintenance", "{h1}");
    let t0 = Instant::now();
    while !json(&["host", "show", "h1"])["vms"]
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(t0.elapsed() < Duration::from_secs(10), "h1 not empty");
        std::thread::sleep(Duration::from_millis(300));
    }
    wait_healthy();
    let (act, sby) = layout();
    assert!(act != "h1" && sby != "h1" && act != sby, "{act} {sby}");
    let solo = json(&["vm", "show", "solo"]);
    assert_ne!(solo["host"], "h1", "{solo}");
    assert_eq!(solo["status"], "running", "{solo}");

    // 4. Fault: h1 takes VMs again; the SBY is sent there and h1's agent
    //    and QEMU are killed as soon as the incoming VM appears.
    json(&["host", "state", "h1", "ready"]);
    let (act_before, sby_before) = layout();
    let acc = json(&[
        "pair",
        "migrate",
        "sig",
        "--from",
        &sby_before,
        "--to",
        "h1",
        "--no-wait",
    ]);
    let op = acc["operation"]["id"].as_str().unwrap().to_string();
    let h1_url = format!("https://{}:7070", ip(11));
    let http =
        duplex_lab::pki::operator_client(LAB, |b| b.no_proxy().timeout(Duration::from_secs(1)))
            .expect("the lab operator's client");
    let t0 = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{h1_url}/v1/vms")).send().await {
            if let Ok(v) = r.json::<Value>().await {
                if v.as_array().is_some_and(|a| !a.is_empty()) {
                    break;
                }
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no incoming VM on h1"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pids = Command::new("ip")
        .args(["netns", "pids", &format!("{LAB}-h1")])
        .output()
        .unwrap();
    for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
        let _ = Command::new("kill").args(["-9", pid]).status();
    }
    let t0 = Instant::now();
    let opv = loop {
        let c = Command::new(BIN)
            .args(["pair", "show", "sig", "-o", "json"])
            .env("DUPLEX_LAB", LAB)
            .output()
            .unwrap();
        let p: Value = serde_json::from_slice(&c.stdout).unwrap_or(Value::Null);
        if p["phase"] == "ready" {
            break p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "move {op} did not end: {p}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!("after the fault: {opv}");
    let evs = json(&["events", "--last", "100"]);
    assert!(
        evs.as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "pair.move_failed"),
        "the failed move must be reported: {evs}"
    );
    wait_healthy();
    assert_eq!(
        layout(),
        (act_before, sby_before),
        "the pair must stay where it was"
    );

    sipp.stop();
    let report = sipp.wait().await.expect("sipp");
    eprintln!(
        "sipp: {} calls, {} successful, {} failed, {} abandoned, {} retransmissions, {} unexpected",
        report.total_calls,
        report.successful,
        report.failed,
        report.abandoned,
        report.retransmissions,
        report.unexpected_messages
    );
    // Zero lost calls is S1's claim, measured side by side with plain live
    // migration by bench/s1 (every Duplex arm 0 failed, 0 retransmitted).
    // Not asserted here: this test checks what the controller does,
    // including under a fault, on machines of unknown load.
    assert!(report.successful > 0, "{report:?}");
    let _ = std::fs::remove_dir_all(&work);
}
