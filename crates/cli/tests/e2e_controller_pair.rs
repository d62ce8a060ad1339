//! The lab with its controller on a real etcd (`duplex lab up --store
//! etcd`): `duplex pair create` yields ACT and SBY on different hosts with
//! roles confirmed by the guests, `duplex pair switchover` swaps them, and
//! `duplex pair show` tells the truth at every step (sampled throughout a
//! switchover). Then the pair is deleted and the lab leaves nothing behind.

mod common;

use common::LabGuard;
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

const LAB: &str = "e2ec";

fn duplex(args: &[&str]) -> (bool, String, String) {
    common::in_lab(LAB, args)
}

fn json(args: &[&str]) -> Value {
    common::in_lab_json(LAB, args)
}

fn roles(p: &Value) -> Vec<(String, String, String, String)> {
    p["members_status"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let s = |k: &str| m[k].as_str().unwrap_or("-").to_string();
            (s("vm"), s("host"), s("wanted"), s("role"))
        })
        .collect()
}

/// What `pair show` must never say: two ACTs, or "healthy" with reported
/// roles other than the wanted ones.
fn truthful(p: &Value) {
    assert_ne!(p["health"], "split_brain", "{p}");
    if p["health"] == "healthy" {
        for (vm, _, wanted, role) in roles(p) {
            assert_eq!(wanted, role, "{vm} healthy but not in its wanted role: {p}");
        }
    }
    if p["phase"] == "switching_over" {
        assert_eq!(p["health"], "transition", "{p}");
    }
}

#[test]
fn pair_through_the_controller_on_etcd() {
    let _guard = LabGuard::new(LAB);
    let (ok, _, err) = duplex(&["lab", "up", "--lab", LAB, "--store", "etcd"]);
    assert!(ok, "lab up: {err}");
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("/run/duplex/lab-{LAB}/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["controller"]["store"], "etcd");
    let i = state["index"].as_u64().unwrap();
    let ip = |last: u8| format!("10.{i}.0.{last}");

    let hosts = json(&["host", "list"]);
    assert_eq!(hosts.as_array().unwrap().len(), 2, "{hosts}");
    assert!(hosts
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["state"] == "ready"));

    let (va, vb, vip) = (format!("pa={}", ip(101)), format!("pb={}", ip(102)), ip(50));
    let p = json(&[
        "pair", "create", "sig", "--vip", &vip, "--member", &va, "--member", &vb,
    ]);
    truthful(&p);
    assert_eq!(p["phase"], "ready", "{p}");
    let r = roles(&p);
    assert_ne!(r[0].1, r[1].1, "members share a host: {p}");
    assert_eq!(p["health"], "healthy", "{p}");
    assert_eq!((r[0].3.as_str(), r[1].3.as_str()), ("act", "sby"), "{p}");

    // Show, several times, after the workflow: still the truth.
    for _ in 0..5 {
        let p = json(&["pair", "show", "sig"]);
        truthful(&p);
        assert_eq!(p["health"], "healthy", "{p}");
        std::thread::sleep(Duration::from_millis(400));
    }

    // Switch over without waiting, sampling `pair show` all along.
    let acc = json(&["pair", "switchover", "sig", "--no-wait"]);
    let op = acc["operation"]["id"].as_str().unwrap().to_string();
    let t0 = Instant::now();
    let mut samples = 0;
    loop {
        let p = json(&["pair", "show", "sig"]);
        truthful(&p);
        samples += 1;
        let (ok, out, _) = duplex(&["events", "-o", "json", "--last", "200"]);
        assert!(ok);
        let done = out.contains("pair.switchover.done") || out.contains("pair.switchover.failed");
        if done && p["phase"] == "ready" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "switchover {op} did not end: {p}"
        );
    }
    eprintln!("pair show sampled {samples} times during the switchover");
    let evs = json(&["events", "--last", "200"]);
    let kinds: Vec<&str> = evs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"pair.switchover.done"), "{kinds:?}");
    let p = json(&["pair", "show", "sig"]);
    truthful(&p);
    assert_eq!(p["active"], 1, "{p}");
    assert_eq!(p["token"], 2, "{p}");
    assert_eq!(p["health"], "healthy", "{p}");
    let r = roles(&p);
    assert_eq!((r[0].3.as_str(), r[1].3.as_str()), ("sby", "act"), "{p}");

    // And back, waiting (the default).
    let p = json(&["pair", "switchover", "sig"]);
    truthful(&p);
    assert_eq!(p["active"], 0, "{p}");

    let vms = json(&["vm", "list"]);
    assert_eq!(vms.as_array().unwrap().len(), 2, "{vms}");
    let (ok, table, _) = duplex(&["pair", "list"]);
    assert!(
        ok && table.contains("sig") && table.contains("healthy"),
        "{table}"
    );

    // Refusals through the CLI name the problem.
    let (ok, _, err) = duplex(&["pair", "switchover", "nosuch"]);
    assert!(!ok && err.contains("no pair `nosuch`"), "{err}");
    let (ok, _, err) = duplex(&[
        "pair",
        "create",
        "x",
        "--vip",
        &ip(60),
        "--member",
        "xa=1.2.3",
        "--member",
        "xb=10.0.0.1",
    ]);
    assert!(!ok && err.contains("not an IPv4 address"), "{err}");

    let (ok, _, err) = duplex(&["pair", "delete", "sig"]);
    assert!(ok, "{err}");
    assert_eq!(json(&["vm", "list"]), serde_json::json!([]));
    assert_eq!(json(&["pair", "list"]), serde_json::json!([]));

    let (ok, _, err) = duplex(&["lab", "down", "--lab", LAB]);
    assert!(ok, "{err}");
    let left = Command::new("pgrep")
        .args(["-f", &format!("/run/duplex/lab-{LAB}/")])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "left running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}
