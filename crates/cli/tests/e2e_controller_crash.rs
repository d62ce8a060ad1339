//! The controller dies mid-operation, on real VMs under SIP load: three
//! controllers on etcd; the leader is `kill -9`ed while `pair migrate` is
//! migrating a member, then the next leader while a switchover is under way.
//! Each time the next controller takes office, finds the pair left
//! mid-workflow (its journal on the pair's record), settles it from what
//! the guests report, and the pair ends ready and healthy with one ACT.
//! sipp must see no failed call.

mod common;

use common::LabGuard;
use duplex_controller::client::ControllerClient;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const LAB: &str = "e2ek";
/// How often the journal is read while waiting for the step to kill in.
const POLL: Duration = Duration::from_millis(20);
/// Longest wait for the step, and for the pair to be healthy again.
const STEP_WAIT: Duration = Duration::from_secs(60);
const HEAL_WAIT: Duration = Duration::from_secs(90);

fn cli(args: &[&str]) -> Value {
    common::in_lab_json(LAB, args)
}

/// Starts an operation on the pair (`POST action` with `body`) through the
/// leading controller, then reads the pair's journal until its operation
/// is at `step` and kills that controller with SIGKILL. The leader is found
/// and its connection opened before the operation starts: a switchover is
/// over in tens of milliseconds, less than finding the leader takes (CI
/// missed eight switchovers in a row that way). Returns the operation's id,
/// or `None` if the operation ended (no journal, pair ready) before a read
/// caught the step.
async fn kill_leader_at(step: &str, action: &str, body: Value) -> Option<String> {
    let (url, pid) = common::controllers::leader(LAB).await;
    let c = ControllerClient::with_bundle(&url, &common::controllers::operator_tls(LAB))
        .expect("client of the leader");
    let _: Value = c.get("/healthz").await.expect("the leader answers");
    let _: Value = c
        .post(&format!("/v1/pairs/sig/{action}"), &body)
        .await
        .expect("operation started");
    let t0 = Instant::now();
    loop {
        let p: Value = c.get("/v1/pairs/sig").await.expect("pair show");
        if p["journal"]["intent"]["step"] == step {
            common::controllers::kill(pid);
            eprintln!("killed the leader {url} (pid {pid}) at: {}", p["journal"]);
            return Some(p["journal"]["op"].as_str().unwrap().to_string());
        }
        if p.get("journal").is_none() && p["phase"] == "ready" {
            return None;
        }
        assert!(
            t0.elapsed() < STEP_WAIT,
            "the pair never reached step {step}: {p}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// A switchover is over in tens of milliseconds, and a read of the journal
/// may fall before and after its step: switched over again until one
/// catches it. Returns the operation and the pair's ACT index before that switchover
/// (earlier tries that finished swapped it already).
async fn kill_leader_mid_switchover() -> (String, Value) {
    const TRIES: usize = 8;
    for _ in 0..TRIES {
        let active_before = healed().await["active"].clone();
        if let Some(op) = kill_leader_at("switchover", "switchover", json!({})).await {
            return (op, active_before);
        }
        eprintln!("a switchover ended before a read caught it; again");
    }
    panic!("no read caught any of {TRIES} switchovers mid-way");
}

/// The pair healthy again, one ACT and one SBY as the guests report them.
/// Between a leader's death and the next one taking office (the lease's
/// time to live) no controller answers: asked again.
async fn healed() -> Value {
    let c = common::controllers::client(LAB);
    let t0 = Instant::now();
    let p = loop {
        let last = match c.get::<Value>("/v1/pairs/sig").await {
            Ok(p) if p["health"] == "healthy" => break p,
            Ok(p) => p.to_string(),
            Err(e) => e.to_string(),
        };
        assert!(
            t0.elapsed() < HEAL_WAIT,
            "pair not healthy within {HEAL_WAIT:?}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(p["phase"], "ready", "{p}");
    assert!(p.get("journal").is_none(), "{p}");
    let mut roles: Vec<&str> = p["members_status"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap_or("none"))
        .collect();
    roles.sort();
    assert_eq!(roles, ["act", "sby"], "{p}");
    p
}

/// The events that name operation `op`: left mid-way, abandoned, settled.
async fn recovery_of(op: &str) -> Vec<String> {
    let ev: Value = common::controllers::client(LAB)
        .get("/v1/events?limit=300")
        .await
        .expect("events");
    ev.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["message"].as_str().is_some_and(|m| m.contains(op)))
        .map(|e| format!("{}: {}", e["kind"], e["message"]))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_leader_killed_mid_migrate_and_mid_switchover_under_sip_load() {
    let _guard = LabGuard::new(LAB);
    let i = common::lab_up(
        LAB,
        &["--hosts", "3", "--store", "etcd", "--controllers", "3"],
    );
    let ip = |last: u8| format!("10.{i}.0.{last}");
    let (ma, mb, vip) = (format!("pa={}", ip(101)), format!("pb={}", ip(102)), ip(50));
    cli(&[
        "pair", "create", "sig", "--vip", &vip, "--member", &ma, "--member", &mb, "--hosts",
        "h1,h2",
    ]);
    healed().await;
    let work = std::env::temp_dir().join(format!("duplex-e2e-crash-{}", std::process::id()));
    let sipp = common::sipp_until_stopped(
        LAB,
        &vip,
        &work,
        Duration::from_secs(240),
        Duration::from_secs(40),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 1. Mid `pair migrate`: while a member's live migration runs.
    let to_h3 = json!({"to": "h3", "switch_back": false});
    let op = kill_leader_at("migrate", "migrate", to_h3)
        .await
        .expect("the migration ended before a read caught it");
    let p = healed().await;
    eprintln!("after the kill mid-migrate: {p}");
    let said = recovery_of(&op).await;
    eprintln!("{}", said.join("\n"));
    assert!(
        said.iter().any(|e| e.contains("pair.recovering")),
        "no recovery of {op} reported: {said:?}"
    );
    assert!(
        said.iter().any(|e| e.contains("operation.abandoned")),
        "operation {op} not marked abandoned: {said:?}"
    );

    // 2. Mid switchover, killing the controller that took over.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (op, active_before) = kill_leader_mid_switchover().await;
    let p = healed().await;
    eprintln!("after the kill mid-switchover: {p}");
    // The kill lands after the step was journaled: either the switchover
    // was left mid-way and settled, or it had just finished (the switch
    // recorded, and maybe the operation too, before the kill).
    // The pair can be healthy before the next leader's recovery pass has
    // looked at the operation the killed one left running: wait for it.
    let t0 = Instant::now();
    let rec: Value = loop {
        let rec: Value = common::controllers::client(LAB)
            .get(&format!("/v1/operations/{op}"))
            .await
            .expect("operation");
        if rec["state"] != "running" || t0.elapsed() > STEP_WAIT {
            break rec;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let said = recovery_of(&op).await;
    eprintln!("{}", said.join("\n"));
    eprintln!("the switchover's operation: {rec}");
    let ev: Value = common::controllers::client(LAB)
        .get("/v1/events?limit=300")
        .await
        .expect("events");
    let switched_after = |t: u64| {
        ev.as_array().unwrap().iter().any(|e| {
            e["kind"] == "pair.switchover.done" && e["at_ms"].as_u64().is_some_and(|x| x >= t)
        })
    };
    // Or the kill fell between the pair's last write (roles swapped, no
    // journal) and the operation's: the next leader marks it abandoned.
    let swapped_then_abandoned =
        p["active"] != active_before && said.iter().any(|e| e.contains("operation.abandoned"));
    assert!(
        said.iter().any(|e| e.contains("pair.recovering"))
            || rec["state"] == "succeeded"
            || switched_after(rec["started_ms"].as_u64().unwrap_or(u64::MAX))
            || swapped_then_abandoned,
        "neither settled nor finished: {said:?} {rec}"
    );

    tokio::time::sleep(Duration::from_secs(3)).await;
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
    assert!(report.successful > 0, "{report:?}");
    assert_eq!(report.failed, 0, "calls failed: {report:?}");
    assert_eq!(report.abandoned, 0, "calls left open: {report:?}");
    let _ = std::fs::remove_dir_all(&work);
}
