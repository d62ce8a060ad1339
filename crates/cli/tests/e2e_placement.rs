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
}
