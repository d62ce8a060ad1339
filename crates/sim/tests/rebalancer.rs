//! The rebalancer in the real controller over a small simulated cluster
//! (real clock): off by default and its policy checked by field; its dry
//! run names the VM and the target a pass then really moves; an ACT moves
//! the S1 way; a relieved host is left alone.

use axum::http::{Method, StatusCode};
use duplex_sim::cluster::{Cluster, Size};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Longest wait for the controller to see, decide or finish something.
const WAIT: Duration = Duration::from_secs(60);

/// `Size::FOUR_HOSTS` (its doc says where everything runs).
async fn cluster() -> Cluster {
    Cluster::start(Size::FOUR_HOSTS, 3)
        .await
        .expect("the cluster")
}

async fn events(c: &Cluster, kind: &str) -> Vec<Value> {
    let (s, a) = c.operator(Method::GET, "/v1/events?limit=1000", None).await;
    assert_eq!(s, StatusCode::OK, "{a}");
    let all = a.as_array().cloned().unwrap_or_default();
    all.into_iter().filter(|e| e["kind"] == kind).collect()
}

/// Polls `f` until it gives something, or panics saying `what`.
async fn until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(x) = f().await {
            return x;
        }
        assert!(t0.elapsed() < WAIT, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_host_gives_up_the_vm_its_dry_run_named() {
    let c = cluster().await;
    let (s, p) = c.operator(Method::GET, "/v1/rebalancer/policy", None).await;
    assert_eq!((s, &p["enabled"]), (StatusCode::OK, &json!(false)), "{p}");

    // Bad policies are refused naming the field; nothing is stored.
    for (bad, field) in [
        (json!({"low": 0.9}), "low"),
        (json!({"high": 1.5}), "high"),
        (json!({"max_in_flight": 0}), "max_in_flight"),
        (json!({"hihg": 0.9}), "hihg"),
    ] {
        let (s, a) = c
            .operator(Method::POST, "/v1/rebalancer/policy", Some(bad))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{a}");
        assert!(a.to_string().contains(field), "{a}");
    }

    // h0000 runs hot: its two VMs keep 15 of its 16 vCPUs busy.
    assert!(c.set_cpu("vm00000", 7.5) && c.set_cpu("vm00004", 7.5));
    let quick = json!({"sustain_ms": 2000, "cooldown_ms": 600000});
    let (s, a) = c
        .operator(Method::POST, "/v1/rebalancer/policy", Some(quick))
        .await;
    assert_eq!(s, StatusCode::OK, "{a}");

    // Off, it only plans: the dry run names a move once h0000 was over
    // the high mark for the sustain time, and nothing moves.
    let planned = until("the dry run to name a move off h0000", || async {
        let (s, plan) = c.operator(Method::GET, "/v1/rebalancer/plan", None).await;
        assert_eq!(s, StatusCode::OK, "{plan}");
        let step = plan["steps"].get(0)?.clone();
        Some((step, plan))
    })
    .await;
    let (step, plan) = planned;
    assert_eq!(step["step"], "move", "{plan}");
    assert_eq!(step["host"], "h0000", "{plan}");
    assert_eq!(step["passed_over"], 0, "the VM receiving most: {plan}");
    let vm = step["decision"]["vm"].as_str().unwrap().to_string();
    let to = step["decision"]["to"].as_str().unwrap().to_string();
    assert!(["vm00000", "vm00004"].contains(&vm.as_str()), "{plan}");
    let h0 = plan["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "h0000");
    assert!(
        h0.is_some_and(|h| h["cpu"].as_f64().unwrap() > 0.85),
        "{plan}"
    );
    assert!(events(&c, "placement.relieved").await.is_empty());
    assert_eq!(c.host_of(&vm).as_deref(), Some("h0000"));

    // On: that VM goes there, and the event says why.
    let on = json!({"enabled": true});
    let (s, a) = c
        .operator(Method::POST, "/v1/rebalancer/policy", Some(on))
        .await;
    assert_eq!(s, StatusCode::OK, "{a}");
    let ev = until("the relieved event", || async {
        events(&c, "placement.relieved").await.into_iter().next()
    })
    .await;
    let msg = ev["message"].as_str().unwrap().to_string();
    eprintln!("rebalancer: {msg}");
    assert_eq!(ev["subject"], "host/h0000", "{ev}");
    assert!(msg.contains(&format!("moving {vm} ")), "{msg}");
    assert!(msg.contains(&format!("to {to},")), "{msg}");
    until("the VM on its new host", || async {
        (c.host_of(&vm).as_deref() == Some(to.as_str())).then_some(())
    })
    .await;
    assert_eq!(vm, "vm00004", "seed 3: the lone VM receives most");
    assert!(msg.contains("live migration"), "{msg}");

    // Relieved (7.5 of 16 vCPUs left), h0000 gives up nothing more.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(events(&c, "placement.relieved").await.len(), 1);

    // h0001 (vm00002 the ACT of p00001, lone vm00005, and vm00004,
    // resting after its move) runs hot; vm00005 (12 vCPUs) would put any
    // host over the low mark: the ACT goes, the S1 way (its SBY takes
    // over first), never live.
    assert!(c.set_cpu("vm00005", 12.0) && c.set_cpu("vm00002", 3.0));
    let ev = until("the second relieved event", || async {
        events(&c, "placement.relieved").await.into_iter().nth(1)
    })
    .await;
    let msg = ev["message"].as_str().unwrap().to_string();
    eprintln!("rebalancer: {msg}");
    assert_eq!(ev["subject"], "host/h0001", "{ev}");
    assert!(
        msg.contains("moving vm00002 ") && msg.contains("S1 way"),
        "{msg}"
    );
    until("the pair moved, vm00003 ACT", || async {
        let (_, pair) = c.operator(Method::GET, "/v1/pairs/p00001", None).await;
        let moved = c.host_of("vm00002").is_some_and(|h| h != "h0001");
        (moved && pair["active"] == 1 && pair["phase"] == "ready").then_some(())
    })
    .await;
    assert_ne!(c.host_of("vm00002"), c.host_of("vm00003"));
    assert_eq!(c.host_of("vm00004").as_deref(), Some("h0001"), "it rests");
    assert!(events(&c, "placement.relief_failed").await.is_empty());
}
