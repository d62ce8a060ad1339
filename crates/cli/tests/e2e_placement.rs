//! S4 in the lab: four hosts in two racks. A pair's members start in
//! different racks (ACT on h1 in rack-1, SBY on h3 in rack-2); SIP calls
//! make the ACT replicate to the SBY, which the network elements measure.
//! `duplex vm migrate <sby> --to auto` must bring the SBY into the ACT's
//! rack (h2: h1 is ruled out by anti-affinity), and `duplex placement
//! explain` must say why.

mod common;

use common::LabGuard;
use duplex_sipp::{Scenario, SippRun};
use serde_json::Value;
use std::time::{Duration, Instant};

const LAB: &str = "e2es";

fn duplex(args: &[&str]) -> (bool, String, String) {
    common::in_lab(LAB, args)
}

fn json(args: &[&str]) -> Value {
    common::in_lab_json(LAB, args)
}

#[tokio::test(flavor = "multi_thread")]
async fn heavy_talkers_end_up_in_one_rack() {
    let _guard = LabGuard::new(LAB);
    let i = common::lab_up(LAB, &["--hosts", "4", "--racks", "2"]);
    let ip = |last: u8| format!("10.{i}.0.{last}");
    let hosts = json(&["host", "list"]);
    let rack = |h: &str| {
        hosts
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == h)
            .unwrap()["rack"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        (rack("h1"), rack("h2"), rack("h3"), rack("h4")),
        (
            "rack-1".into(),
            "rack-1".into(),
            "rack-2".into(),
            "rack-2".into()
        )
    );

    let (ma, mb, vip) = (format!("sa={}", ip(101)), format!("sb={}", ip(102)), ip(50));
    // Small members (128 MiB; 64 is too little for the guest image) and
    // 50 calls/s, so that moving the SBY pays back within the engine's
    // one-hour horizon (`memory_weight = 1/3600`) at the replication rate.
    let p = json(&[
        "pair",
        "create",
        "s4",
        "--vip",
        &vip,
        "--member",
        &ma,
        "--member",
        &mb,
        "--hosts",
        "h1,h3",
        "--memory-mib",
        "128",
    ]);
    assert_eq!(p["health"], "healthy", "{p}");

    // Calls through the ACT: every dialog is replicated to the SBY.
    let work = std::env::temp_dir().join(format!("duplex-e2e-s4-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let vip_addr: std::net::Ipv4Addr = vip.parse().unwrap();
    let mut run = SippRun::new(std::net::SocketAddr::from((vip_addr, 5060)), work.clone());
    run.rate_cps = 50.0;
    run.call_length_ms = 1000;
    run.calls = Some(1500);
    run.scenario = Scenario::BuiltinUac;
    run.timeout = Duration::from_secs(90);
    let prefix: Vec<String> = ["ip", "netns", "exec", &format!("{LAB}-client")]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let sipp = duplex_sipp::spawn(&run, &prefix).expect("start sipp");

    // Wait until the controller has measured traffic between the members.
    let t0 = Instant::now();
    let peer_rate = loop {
        let ex = json(&["placement", "explain", "sb"]);
        let rate = ex["peers"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["vm"] == "sa"))
            .and_then(|p| p["bytes_per_s"].as_f64())
            .unwrap_or(0.0);
        if rate > 0.0 {
            break rate;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "no traffic between sa and sb measured: {ex}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    eprintln!("first measured sa<->sb: {peer_rate:.0} B/s");
    // The controller smooths rates with an EWMA (alpha 0.3 per 1 s
    // heartbeat): after 10 more samples it holds 97 % of the steady rate.
    tokio::time::sleep(Duration::from_secs(10)).await;

    let (ok, table, err) = duplex(&["placement", "explain", "sb"]);
    assert!(ok, "{err}");
    eprintln!("{table}");
    assert!(
        table.contains("anti-affinity"),
        "h1 must be ruled out by anti-affinity:\n{table}"
    );

    let (ok, out, err) = duplex(&["vm", "migrate", "sb", "--to", "auto"]);
    assert!(ok, "migrate: {err}");
    eprintln!("{out}{err}");
    let vm = json(&["vm", "show", "sb"]);
    assert_eq!(vm["host"], "h2", "sb should join sa's rack: {vm}");
    assert_eq!(rack("h2"), rack("h1"));

    // Once it runs there (its guest reconnected), placement is content:
    // asking again moves nothing.
    let t0 = Instant::now();
    while json(&["vm", "show", "sb"])["status"] != "running" {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "sb not running after the move"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let again = json(&["vm", "migrate", "sb", "--to", "auto"]);
    assert!(again["operation"].is_null(), "{again}");

    let report = sipp.wait().await.expect("sipp");
    eprintln!(
        "sipp: {} successful, {} failed",
        report.successful, report.failed
    );
    // Under this load a health check may time out now and then: the pair
    // must be healthy again once the calls are over.
    common::wait_pair_healthy(LAB, "s4", Duration::from_secs(30));
    let _ = std::fs::remove_dir_all(&work);

    rebalancer_relieves_h1(&ip).await;
}

/// A SIP client in the lab's client namespace against `vip`, `cps` calls
/// a second for `secs`, from local port `port`.
fn sip_load(vip: &str, cps: f64, secs: u64, port: u16) -> duplex_sipp::RunningSipp {
    let work = std::env::temp_dir().join(format!("duplex-e2e-s4-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let vip: std::net::Ipv4Addr = vip.parse().unwrap();
    let mut run = SippRun::new(std::net::SocketAddr::from((vip, 5060)), work);
    run.rate_cps = cps;
    run.call_length_ms = 2000;
    run.duration = Some(Duration::from_secs(secs));
    run.local_port = Some(port);
    run.scenario = Scenario::BuiltinUac;
    run.timeout = Duration::from_secs(secs + 60);
    let prefix: Vec<String> = ["ip", "netns", "exec", &format!("{LAB}-client")]
        .iter()
        .map(|s| s.to_string())
        .collect();
    duplex_sipp::spawn(&run, &prefix).expect("start sipp")
}

/// vCPUs `vm` keeps busy, as the controller measures it.
fn busy(vm: &str) -> Option<f64> {
    json(&["vm", "show", vm])["cpu_busy"].as_f64()
}

/// The rebalancer: h1 runs both pairs' ACTs (sa of s4, ta of t4, whose SBY
/// tb is on h4 in rack-2) under SIP calls, t4's the busier. With marks
/// set from what the controller measures (h1 over the high mark, ta
/// alone under the low one), the rebalancer must move ta, the VM with the
/// most incoming traffic, the S1 way, to h3: rack-2, next to its SBY (h2
/// in rack-1 would cross racks; h4 holds tb). No call may fail.
async fn rebalancer_relieves_h1(ip: &dyn Fn(u8) -> String) {
    let (ta, tb, vip2) = (format!("ta={}", ip(103)), format!("tb={}", ip(104)), ip(51));
    #[rustfmt::skip]
    let t = json(&[
        "pair", "create", "t4", "--vip", &vip2, "--member", &ta, "--member", &tb,
        "--hosts", "h1,h4", "--memory-mib", "128",
    ]);
    assert_eq!(t["health"], "healthy", "{t}");
    let policy = json(&["placement", "policy"]);
    assert_eq!(policy["enabled"], false, "off by default: {policy}");

    let busy_calls = sip_load(&vip2, 50.0, 150, 5071);
    let calm_calls = sip_load(&ip(50), 15.0, 150, 5072);
    let t0 = Instant::now();
    while busy("ta").is_none() || busy("sa").is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "no CPU measured for ta and sa"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // The EWMA settles on the loaded rates.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let host = json(&["host", "show", "h1"]);
    let vcpus = host["capacity"]["vcpus"].as_f64().unwrap();
    let (ta_share, sa_share) = (busy("ta").unwrap() / vcpus, busy("sa").unwrap() / vcpus);
    let load = ta_share + sa_share;
    let low = (ta_share + load) / 2.0;
    let high = (low + load) / 2.0;
    eprintln!("h1: ta {ta_share:.3}, sa {sa_share:.3} of {vcpus} vCPUs; marks high {high:.3}, low {low:.3}");
    assert!(
        sa_share > 0.01,
        "sa must load h1 measurably for marks between ta and h1: {sa_share}"
    );
    let (h, l) = (format!("{high:.3}"), format!("{low:.3}"));
    let (ok, out, err) = duplex(&[
        "placement",
        "policy",
        "--high",
        &h,
        "--low",
        &l,
        "--sustain",
        "5",
        "--cooldown",
        "900",
    ]);
    assert!(ok, "{err}");
    eprintln!("{out}");
    // The dry run names the move once h1 has been over the mark long
    // enough (the rebalancer is still off: nothing moves).
    let t0 = Instant::now();
    let plan = loop {
        let (ok, plan, err) = duplex(&["placement", "plan"]);
        assert!(ok, "{err}");
        if plan.contains("would move:") {
            break plan;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the dry run never named a move:\n{plan}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    eprintln!("{plan}");
    let planned = plan
        .lines()
        .find(|l| l.starts_with("would move:"))
        .unwrap_or_default();
    assert!(
        planned.contains("h1 ") && planned.contains("moving ta "),
        "the dry run should relieve h1 of ta: {planned}"
    );
    assert_eq!(
        json(&["vm", "show", "ta"])["host"],
        "h1",
        "the dry run moved something"
    );
    let (ok, _, err) = duplex(&["placement", "policy", "--enable"]);
    assert!(ok, "{err}");

    let t0 = Instant::now();
    let relieved = loop {
        let ev = json(&["events", "--last", "200"]);
        let hit = ev.as_array().and_then(|a| {
            a.iter()
                .find(|e| e["kind"] == "placement.relieved")
                .cloned()
        });
        if let Some(e) = hit {
            break e;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "h1 was not relieved:\n{plan}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let msg = relieved["message"].as_str().unwrap().to_string();
    eprintln!("{msg}");
    assert_eq!(relieved["subject"], "host/h1", "{relieved}");
    assert!(
        msg.contains("moving ta ") && msg.contains("to h3,") && msg.contains("S1 way"),
        "{msg}"
    );
    let t0 = Instant::now();
    loop {
        let p = json(&["pair", "show", "t4"]);
        let ta_host = json(&["vm", "show", "ta"])["host"].clone();
        if p["phase"] == "ready" && ta_host == "h3" && p["active"] == 1 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(90), "t4 not moved: {p}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for (name, calls) in [("t4", busy_calls), ("s4", calm_calls)] {
        let r = calls.wait().await.expect("sipp");
        eprintln!(
            "sipp against {name}: {} calls, {} successful, {} failed, {} abandoned, {} retransmissions",
            r.total_calls, r.successful, r.failed, r.abandoned, r.retransmissions
        );
        assert!(r.successful > 0, "{r:?}");
        assert_eq!((r.failed, r.abandoned), (0, 0), "{name}: {r:?}");
    }
    let (ok, _, err) = duplex(&["placement", "policy", "--disable"]);
    assert!(ok, "{err}");
}
