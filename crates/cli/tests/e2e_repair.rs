//! A pair member's guest restarts (QMP `system_reset` through `duplex vm
//! reset`, as a kernel panic with `panic=-1` would), under SIP load from
//! `sipp`. The controller repairs the pair on its own: a reset SBY is
//! configured and made SBY again, and gets the replicated state back; when
//! the ACT is reset, the SBY takes over (failover, token raised) and the
//! old ACT comes back as SBY. The calls survive both: 0 failed.

mod common;

use common::LabGuard;
use serde_json::Value;
use std::time::{Duration, Instant};

const LAB: &str = "e2er";

fn json(args: &[&str]) -> Value {
    common::in_lab_json(LAB, args)
}

/// (name, host) of the member that reports `role`.
fn member(p: &Value, role: &str) -> (String, String) {
    let m = p["members_status"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == role)
        .unwrap_or_else(|| panic!("no {role}: {p}"));
    let s = |k: &str| m[k].as_str().unwrap().to_string();
    (s("vm"), s("host"))
}

fn repairs_done() -> Vec<String> {
    json(&["events", "--last", "200"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "pair.repair.done" || e["kind"] == "pair.repair.started")
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Resets `vm` on `host` through its agent and waits until the pair has a
/// repair more than before and is healthy; the pair then.
fn reset_and_wait_repaired(agent: &str, vm: &str) -> Value {
    let before = repairs_done().len();
    let (ok, _, err) = common::in_lab(LAB, &["vm", "reset", vm, "--agent", agent]);
    assert!(ok, "vm reset {vm}: {err}");
    let t0 = Instant::now();
    loop {
        let p = json(&["pair", "show", "sig"]);
        assert_ne!(p["health"], "split_brain", "{p}");
        let done = repairs_done();
        if done.len() >= before + 2 && p["health"] == "healthy" {
            eprintln!(
                "{vm} reset, repaired in {:.1} s: {:?}",
                t0.elapsed().as_secs_f64(),
                &done[before..]
            );
            return p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "pair not repaired after resetting {vm}: {p}; repairs {done:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reset_member_is_repaired_and_a_reset_act_fails_over_under_sip_load() {
    let _guard = LabGuard::new(LAB);
    let i = common::lab_up(LAB, &["--hosts", "2"]);
    let ip = |last: u8| format!("10.{i}.0.{last}");
    let agent = |host: &str| format!("https://{}:7070", ip(10 + host[1..].parse::<u8>().unwrap()));
    let (ma, mb, vip) = (format!("pa={}", ip(101)), format!("pb={}", ip(102)), ip(50));
    let p = json(&[
        "pair", "create", "sig", "--vip", &vip, "--member", &ma, "--member", &mb,
    ]);
    assert_eq!(p["health"], "healthy", "{p}");
    let token0 = p["token"].as_u64().unwrap();

    let work = std::env::temp_dir().join(format!("duplex-e2e-repair-{}", std::process::id()));
    let sipp = common::sipp_until_stopped(
        LAB,
        &vip,
        &work,
        Duration::from_secs(90),
        Duration::from_secs(40),
    );
    tokio::time::sleep(Duration::from_secs(5)).await;

    // 1. The SBY's guest restarts: made SBY again, roles and token as before.
    let (sby, sby_host) = member(&p, "sby");
    let (act, _) = member(&p, "act");
    let p = reset_and_wait_repaired(&agent(&sby_host), &sby);
    assert_eq!(member(&p, "act").0, act, "{p}");
    assert_eq!(member(&p, "sby").0, sby, "{p}");
    assert_eq!(p["token"].as_u64(), Some(token0), "{p}");
    // It holds the replicated state again (calls are up all the time).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let st = json(&["vm", "status", &sby, "--agent", &agent(&sby_host)]);
    assert_eq!(st["role"], "sby", "{st}");
    assert!(st["replica"]["keys"].as_u64().unwrap_or(0) > 0, "{st}");

    // 2. The ACT's guest restarts: the SBY takes over, the old ACT comes
    //    back as SBY, and the token is raised.
    let act_host = member(&p, "act").1;
    let p = reset_and_wait_repaired(&agent(&act_host), &act);
    assert_eq!(member(&p, "act").0, sby, "{p}");
    assert_eq!(member(&p, "sby").0, act, "{p}");
    assert_eq!(p["token"].as_u64(), Some(token0 + 1), "{p}");

    tokio::time::sleep(Duration::from_secs(5)).await;
    sipp.stop();
    let report = sipp.wait().await.expect("sipp");
    eprintln!("sipp: {}", report.summary());
    let _ = std::fs::remove_dir_all(&work);
    assert!(report.successful > 0, "{report:?}");
    assert_eq!(report.failed, 0, "{:?}", report.failed_by_reason);
    assert_eq!(report.abandoned, 0, "{report:?}");
    assert_eq!(report.unexpected_messages, 0, "{report:?}");
}
