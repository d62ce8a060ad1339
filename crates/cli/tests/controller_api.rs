//! The controller's API against both store backends (embedded file, and a
//! real etcd started here, over TLS with authentication), restart with state intact, leader failover with
//! fencing, and etcd outages. Real `duplex controller` and `duplex agent`
//! processes on loopback; no VMs boot (a VM with an unknown image is enough
//! to drive the reconcile path, and the agent refuses it for real).

mod procs;

use duplex_store::etcd_server::{free_port, EtcdServer};
use duplex_tls::test_pki::TestPki;
use procs::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Everything the API offers that does not need a booted VM, then a
/// restart with the same store: records and events survive, the fencing
/// token grows.
async fn exercise_api(dir: &Path, pki: &TestPki, backend: Backend<'_>) {
    let cdir = dir.join("ctl");
    let port = free_port().unwrap();
    let base = format!("https://127.0.0.1:{port}");
    let mut ctl = controller(&cdir, port, &backend, 2000, "c1", pki);
    let fence1 = wait_leader(&base).await;
    let op = pki
        .operator(duplex_core::identity::Scope::Operate)
        .unwrap()
        .dir;
    let tok = op.as_path();
    let t = Some(tok);

    // The OpenAPI document lists every route, and needs no certificate.
    let (s, doc) = call("GET", &format!("{base}/v1/openapi.json"), None, None).await;
    assert_eq!(s, 200);
    for p in [
        "/v1/hosts",
        "/v1/vms/{name}",
        "/v1/pairs/{name}/switchover",
        "/v1/events",
        "/v1/agents/{host}/heartbeat",
        "/metrics",
    ] {
        assert!(doc["paths"].get(p).is_some(), "openapi lacks {p}");
    }

    // No certificate: refused, and told what to present.
    let (s, v) = call("GET", &format!("{base}/v1/hosts"), None, None).await;
    assert_eq!((s, code(&v).as_str()), (401, "no_identity"), "{v}");
    assert!(msg(&v).contains("duplex pki issue"), "{v}");

    // A real agent registers.
    let aport = free_port().unwrap();
    let mut ag = agent(dir, "h1", aport, std::slice::from_ref(&base), pki);
    wait_host_ready(&base, tok, "h1").await;
    let (_, hosts) = call("GET", &format!("{base}/v1/hosts"), t, None).await;
    assert_eq!(hosts[0]["capacity"]["memory_mib"], json!(4096), "{hosts}");
    assert!(hosts[0]["accel"]["kind"].is_string(), "{hosts}");

    // Bad input, each with a 4xx naming the problem.
    let vms = format!("{base}/v1/vms");
    let (s, v) = call("POST", &vms, t, Some("{not json")).await;
    assert_eq!(s, 400, "{v}");
    assert!(msg(&v).to_lowercase().contains("json"), "{v}");
    let (s, v) = call(
        "POST",
        &vms,
        t,
        Some(r#"{"spec":{"name":"a","ip":"10.9.0.5"},"colour":1}"#),
    )
    .await;
    assert_eq!(s, 400);
    assert!(msg(&v).contains("colour"), "{v}");
    let (s, v) = call(
        "POST",
        &vms,
        t,
        Some(r#"{"spec":{"name":"a","ip":"10.9.0.5","speed":3}}"#),
    )
    .await;
    assert_eq!(s, 400);
    assert!(msg(&v).contains("speed"), "{v}");
    let (s, v) = call(
        "POST",
        &vms,
        t,
        Some(r#"{"spec":{"name":"big","ip":"10.9.0.5","memory_mib":60000}}"#),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        msg(&v).contains("memory_mib") && msg(&v).contains("more than any host"),
        "{v}"
    );
    let (s, v) = call(
        "POST",
        &vms,
        t,
        Some(r#"{"spec":{"name":"Bad_Name","ip":"10.9.0.5"}}"#),
    )
    .await;
    assert_eq!(s, 400);
    assert!(msg(&v).contains("field `name`"), "{v}");
    let (s, v) = call(
        "POST",
        &vms,
        t,
        Some(r#"{"spec":{"name":"a","ip":"10.9.0.5","user_data":{"files":[{"path":"/dev/sda","content":"x"}]}}}"#),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(msg(&v).contains("`files[0].path`"), "{v}");
    let (s, v) = call(
        "POST",
        &vms,
        t,
        Some(r#"{"spec":{"name":"a","ip":"10.9.0.5"},"host":"h9"}"#),
    )
    .await;
    assert_eq!(s, 400);
    assert!(msg(&v).contains("h9"), "{v}");
    for (m, p) in [
        ("GET", "/v1/vms/nosuch"),
        ("DELETE", "/v1/vms/nosuch"),
        ("GET", "/v1/pairs/nosuch"),
        ("DELETE", "/v1/pairs/nosuch"),
        ("POST", "/v1/pairs/nosuch/switchover"),
        ("GET", "/v1/hosts/nosuch"),
        ("GET", "/v1/operations/nosuch"),
        ("GET", "/v1/nothing/here"),
    ] {
        let (s, v) = call(m, &format!("{base}{p}"), t, None).await;
        assert_eq!((s, code(&v).as_str()), (404, "not_found"), "{m} {p}: {v}");
    }
    let pair = |hosts: &str| {
        format!(
            r#"{{"name":"p1","vip":"10.9.0.50","members":[{{"name":"pa","ip":"10.9.0.51","image":"nosuch"}},{{"name":"pb","ip":"10.9.0.52","image":"nosuch"}}]{hosts}}}"#
        )
    };
    let (s, v) = call(
        "POST",
        &format!("{base}/v1/pairs"),
        t,
        Some(&pair(r#","hosts":["h1","h1"]"#)),
    )
    .await;
    assert_eq!(s, 400);
    assert!(msg(&v).contains("different hosts"), "{v}");
    // One host only: the second member has nowhere to go (anti-affinity).
    let (s, v) = call("POST", &format!("{base}/v1/pairs"), t, Some(&pair(""))).await;
    assert_eq!((s, code(&v).as_str()), (409, "no_capacity"), "{v}");
    assert!(msg(&v).contains("anti-affinity"), "{v}");
    let (s, v) = call("GET", &format!("{base}/v1/pairs"), t, None).await;
    assert_eq!(
        (s, v),
        (200, json!([])),
        "a refused pair leaves nothing behind"
    );
    let (s, v) = call(
        "POST",
        &format!("{base}/v1/hosts/h1/state"),
        t,
        Some(r#"{"state":"failed"}"#),
    )
    .await;
    assert_eq!(s, 400);
    assert!(msg(&v).contains("state"), "{v}");
    let (s, v) = call("GET", &format!("{base}/v1/events?limit=0"), t, None).await;
    assert_eq!(s, 400);
    assert!(msg(&v).contains("limit"), "{v}");

    // Maintenance: the host keeps its VMs but takes no new one.
    let (s, _) = call(
        "POST",
        &format!("{base}/v1/hosts/h1/state"),
        t,
        Some(r#"{"state":"maintenance"}"#),
    )
    .await;
    assert_eq!(s, 200);
    let (s, v) = call(
        "POST",
        &vms,
        t,
        Some(r#"{"spec":{"name":"a","ip":"10.9.0.5","image":"nosuch"}}"#),
    )
    .await;
    assert_eq!((s, code(&v).as_str()), (409, "no_capacity"), "{v}");
    assert!(msg(&v).contains("host state"), "{v}");
    call(
        "POST",
        &format!("{base}/v1/hosts/h1/state"),
        t,
        Some(r#"{"state":"ready"}"#),
    )
    .await;

    // A VM is placed and recorded; the agent refuses its unknown image for
    // real, which shows up as an event; the address is taken.
    let (s, v) = call(
        "POST",
        &vms,
        t,
        Some(r#"{"spec":{"name":"keep","ip":"10.9.0.5","image":"nosuch"}}"#),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["host"], json!("h1"));
    let (s, v) = call(
        "POST",
        &vms,
        t,
        Some(r#"{"spec":{"name":"other","ip":"10.9.0.5","image":"nosuch"}}"#),
    )
    .await;
    assert_eq!(s, 409);
    assert!(
        msg(&v).contains("field `ip`") && msg(&v).contains("keep"),
        "{v}"
    );
    // The MAC is the VM's too: another VM may not have it.
    let keep_mac = duplex_core::mac::Mac::for_vm("keep");
    let body = format!(
        r#"{{"spec":{{"name":"other","ip":"10.9.0.9","mac":"{keep_mac}","image":"nosuch"}}}}"#
    );
    let (s, v) = call("POST", &vms, t, Some(&body)).await;
    assert_eq!(s, 409, "{v}");
    assert!(
        msg(&v).contains("field `mac`") && msg(&v).contains("keep"),
        "{v}"
    );
    wait_for("vm.start_failed event", Duration::from_secs(30), || async {
        let (_, evs) = call("GET", &format!("{base}/v1/events?limit=1000"), t, None).await;
        evs.as_array().is_some_and(|a| {
            a.iter().any(|e| {
                e["kind"] == json!("vm.start_failed")
                    && e["message"].as_str().unwrap_or("").contains("nosuch")
            })
        })
    })
    .await;
    // Deletion of another VM goes through to the end.
    let (s, _) = call(
        "POST",
        &vms,
        t,
        Some(r#"{"spec":{"name":"gone","ip":"10.9.0.6","image":"nosuch"}}"#),
    )
    .await;
    assert_eq!(s, 201);
    let (s, v) = call("DELETE", &format!("{vms}/gone"), t, None).await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["status"], json!("deleting"));
    wait_for("VM `gone` forgotten", Duration::from_secs(40), || async {
        call("GET", &format!("{vms}/gone"), t, None).await.0 == 404
    })
    .await;

    // Metrics: any operator may read them.
    let reader = pki
        .operator(duplex_core::identity::Scope::Read)
        .unwrap()
        .dir;
    let (s, m) = call("GET", &format!("{base}/metrics"), Some(&reader), None).await;
    assert_eq!(s, 200);
    let m = m.as_str().unwrap_or("").to_string();
    assert!(m.contains("duplex_hosts{state=\"ready\"} 1"), "{m}");
    assert!(m.contains("duplex_vms{state=\"pending\"} 1"), "{m}");
    assert!(m.contains("duplex_operations_in_flight 0"), "{m}");
    assert!(
        m.contains("duplex_api_request_duration_seconds_count{method=\"POST\",route=\"/v1/vms\""),
        "{m}"
    );

    // Restart: same store, state intact, a higher fencing token.
    ctl.term();
    assert!(
        call("GET", &format!("{base}/healthz"), None, None).await.0 == 0,
        "controller still answers after SIGTERM"
    );
    let mut ctl = controller(&cdir, port, &backend, 2000, "c1b", pki);
    let fence2 = wait_leader(&base).await;
    assert!(
        fence2 > fence1,
        "fence {fence2} after restart, {fence1} before"
    );
    let (s, v) = call("GET", &format!("{vms}/keep"), t, None).await;
    assert_eq!(s, 200, "VM record lost over restart: {v}");
    assert_eq!(v["host"], json!("h1"));
    let (_, evs) = call("GET", &format!("{base}/v1/events?limit=1000"), t, None).await;
    assert!(
        evs.as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == json!("vm.created")),
        "{evs}"
    );
    wait_host_ready(&base, tok, "h1").await;

    // The agent dies: the host is marked failed after the documented
    // timeout, with an event; when it reports again, it is back.
    let (_, info) = call("GET", &format!("{base}/v1/controller"), t, None).await;
    let timeout_ms = info["host_failure_timeout_ms"].as_u64().unwrap();
    ag.kill9();
    let took = wait_for(
        "host h1 failed",
        Duration::from_millis(timeout_ms + 15_000),
        || async {
            call("GET", &format!("{base}/v1/hosts/h1"), t, None).await.1["state"] == json!("failed")
        },
    )
    .await;
    eprintln!(
        "host marked failed {} ms after its agent was killed (timeout {timeout_ms} ms)",
        took.as_millis()
    );
    let (_, evs) = call("GET", &format!("{base}/v1/events?limit=1000"), t, None).await;
    assert!(
        evs.as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == json!("host.failed")),
        "{evs}"
    );
    let (_, v) = call("GET", &format!("{vms}/keep"), t, None).await;
    assert_eq!(v["status"], json!("unknown"), "a VM on a failed host: {v}");
    let _ag = agent(dir, "h1", aport, std::slice::from_ref(&base), pki);
    wait_host_ready(&base, tok, "h1").await;
    let (_, evs) = call("GET", &format!("{base}/v1/events?limit=1000"), t, None).await;
    assert!(
        evs.as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == json!("host.recovered")),
        "{evs}"
    );

    // Many requests for one address at once: exactly one VM gets it.
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..6 {
        let (vms, who) = (vms.clone(), op.clone());
        racers.spawn(async move {
            let body =
                format!(r#"{{"spec":{{"name":"racer{i}","ip":"10.9.0.20","image":"nosuch"}}}}"#);
            call("POST", &vms, Some(&who), Some(&body)).await
        });
    }
    let answers = racers.join_all().await;
    let won: Vec<_> = answers.iter().filter(|(s, _)| *s == 201).collect();
    assert_eq!(won.len(), 1, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|(s, v)| *s == 201 || (*s == 409 && msg(v).contains("field `ip`"))),
        "{answers:?}"
    );
    ctl.kill9();
}

#[tokio::test(flavor = "multi_thread")]
async fn api_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    exercise_api(dir.path(), &pki, Backend::Embedded).await;
}

async fn etcd(dir: &Path, pki: &TestPki) -> EtcdServer {
    let (c, p) = (free_port().unwrap(), free_port().unwrap());
    secure_etcd(&dir.join("etcd"), c, p, &dir.join("etcd.log"), pki).await
}

#[tokio::test(flavor = "multi_thread")]
async fn api_on_a_real_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let e = etcd(dir.path(), &pki).await;
    exercise_api(dir.path(), &pki, Backend::Etcd(&e)).await;
}

/// Two controllers on etcd: the second stands by; kill -9 the leader, the
/// other takes over within the lease time, raises the agent's fence, and
/// an order carrying the old leader's token is refused by the agent.
#[tokio::test(flavor = "multi_thread")]
async fn leader_failover_and_fencing_on_etcd() {
    const TTL_MS: u64 = 2000;
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let e = etcd(dir.path(), &pki).await;
    let b = Backend::Etcd(&e);
    let (pa, pb) = (free_port().unwrap(), free_port().unwrap());
    let (ua, ub) = (
        format!("https://127.0.0.1:{pa}"),
        format!("https://127.0.0.1:{pb}"),
    );
    let mut a = controller(&dir.path().join("a"), pa, &b, TTL_MS, "ctl-a", &pki);
    let fence_a = wait_leader(&ua).await;
    let mut cb = controller(&dir.path().join("b"), pb, &b, TTL_MS, "ctl-b", &pki);
    wait_for("standby answers", Duration::from_secs(30), || async {
        health(&ub).await["ok"] == json!(true)
    })
    .await;
    assert_eq!(health(&ub).await["leader"], json!(false));
    let tok = pki
        .operator(duplex_core::identity::Scope::Operate)
        .unwrap()
        .dir;
    let (s, v) = call("GET", &format!("{ub}/v1/hosts"), Some(&tok), None).await;
    assert_eq!((s, code(&v).as_str()), (503, "not_leader"), "{v}");

    let aport = free_port().unwrap();
    let agent_url = format!("https://127.0.0.1:{aport}");
    let _ag = agent(dir.path(), "h1", aport, &[ua.clone(), ub.clone()], &pki);
    wait_host_ready(&ua, &tok, "h1").await;
    let agent_fence = || async {
        call("GET", &format!("{agent_url}/v1/fence"), Some(&tok), None)
            .await
            .1["fence"]
            .as_u64()
    };
    wait_for("agent fenced to A", Duration::from_secs(20), || async {
        agent_fence().await == Some(fence_a)
    })
    .await;

    a.kill9();
    let t0 = Instant::now();
    let fence_b = wait_leader(&ub).await;
    let takeover = t0.elapsed();
    eprintln!(
        "takeover after kill -9 of the leader: {} ms (lease ttl {TTL_MS} ms)",
        takeover.as_millis()
    );
    assert!(
        fence_b > fence_a,
        "new token {fence_b} must exceed {fence_a}"
    );
    // Generous bound: the lease time plus etcd's and our polling slack.
    assert!(
        takeover < Duration::from_millis(3 * TTL_MS + 5000),
        "takeover took {takeover:?}"
    );
    wait_for("agent fenced to B", Duration::from_secs(20), || async {
        agent_fence().await == Some(fence_b)
    })
    .await;

    // An order from the old leader, arriving late: refused, not executed.
    let old_leader = pki.controller().unwrap().dir;
    for (m, p) in [("POST", "/v1/fence"), ("DELETE", "/v1/vms/anything")] {
        let url = format!("{agent_url}{p}");
        let m2 = reqwest::Method::from_bytes(m.as_bytes()).unwrap();
        let r = http(Some(&old_leader))
            .request(m2, &url)
            .header("duplex-fence", fence_a.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            (status, code(&v).as_str()),
            (409, "stale_fence"),
            "{m} {p}: {v}"
        );
        assert!(
            msg(&v).contains(&fence_a.to_string()) && msg(&v).contains(&fence_b.to_string()),
            "{v}"
        );
    }
    // The new leader serves the API to the same operators, and the agent reports to it.
    wait_host_ready(&ub, &tok, "h1").await;
    let (_, evs) = call(
        "GET",
        &format!("{ub}/v1/events?limit=1000"),
        Some(&tok),
        None,
    )
    .await;
    assert!(
        evs.as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == json!("controller.leader")
                && e["message"].as_str().unwrap_or("").contains("ctl-b")),
        "{evs}"
    );
    assert!(cb.alive());
}

/// etcd down at start: a clear error naming the endpoint. Down mid-run:
/// the API says the store is unavailable, the controller keeps retrying,
/// and once etcd is back it leads again with its state intact.
#[tokio::test(flavor = "multi_thread")]
async fn etcd_down_at_start_and_mid_run() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let nobody = free_port().unwrap();
    let out = Command::new(BIN)
        .args(["controller", "--store", "etcd", "--etcd-endpoints"])
        .arg(format!("https://127.0.0.1:{nobody}"))
        .args(["--store-timeout-s", "2", "--listen"])
        .arg(format!("127.0.0.1:{}", free_port().unwrap()))
        .arg("--data-dir")
        .arg(dir.path().join("x"))
        .arg("--tls-dir")
        .arg(&pki.controller().unwrap().dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("127.0.0.1:{nobody}")) && err.contains("etcd"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let (c, p) = (free_port().unwrap(), free_port().unwrap());
    let mut e = secure_etcd(
        &dir.path().join("etcd"),
        c,
        p,
        &dir.path().join("etcd.log"),
        &pki,
    )
    .await;
    let port = free_port().unwrap();
    let base = format!("https://127.0.0.1:{port}");
    let cdir = dir.path().join("ctl");
    let mut ctl = controller(&cdir, port, &Backend::Etcd(&e), 2000, "c", &pki);
    wait_leader(&base).await;
    let tok = pki
        .operator(duplex_core::identity::Scope::Operate)
        .unwrap()
        .dir;
    let t = Some(tok.as_path());
    let (s, before) = call("GET", &format!("{base}/v1/events?limit=1000"), t, None).await;
    assert_eq!(s, 200);

    e.kill();
    wait_for(
        "API reports the outage",
        Duration::from_secs(40),
        || async {
            let (s, v) = call("GET", &format!("{base}/v1/events"), t, None).await;
            s == 503 && !msg(&v).is_empty()
        },
    )
    .await;
    assert!(ctl.alive(), "controller must keep retrying, not exit");
    // Stay down for longer than the lease: leadership is lost and sought again.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(health(&base).await["leader"], json!(false));
    assert!(ctl.alive(), "controller must keep retrying, not exit");

    let e2 = secure_etcd(
        &dir.path().join("etcd"),
        c,
        p,
        &dir.path().join("etcd2.log"),
        &pki,
    )
    .await;
    wait_leader(&base).await;
    let (s, after) = call("GET", &format!("{base}/v1/events?limit=1000"), t, None).await;
    assert_eq!(s, 200);
    for ev in before.as_array().unwrap() {
        assert!(
            after.as_array().unwrap().contains(ev),
            "event lost over the outage: {ev}"
        );
    }
    assert!(
        ctl.log().contains("lost the leader lease"),
        "loss of the lease not logged:\n{}",
        ctl.log()
    );
    drop(e2);
}
