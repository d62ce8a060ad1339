//! S2 on real VMs under SIP load: a lone replicated VM runs the sample SIP
//! service with no peer to replicate its calls to (its state is in RAM
//! only, as an unmodified service's would be). Its host is powered off;
//! the controller fences it and runs the VM on its backup from the last
//! committed epoch. sipp must see no failed call and no call left open: a
//! call whose answer reached the client from state the backup lacked would
//! end with its BYE refused (481), a failure. The guest must not have
//! booted again (same boot id, its heartbeat counting on), and the VM is
//! checkpointed to a new backup afterwards.

mod common;

use common::{in_lab_json, LabGuard};
use duplex_core::guest_proto::{Op, TargetRole};
use serde_json::Value;
use std::time::{Duration, Instant};

const LAB: &str = "e2es2";
const WAIT: Duration = Duration::from_secs(120);

fn vm() -> Value {
    in_lab_json(LAB, &["vm", "show", "solo"])
}

/// Waits until `ok` holds of `vm show solo`; returns that answer.
async fn wait_for(what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let v = vm();
        if ok(&v) {
            return v;
        }
        assert!(t0.elapsed() < WAIT, "{what} not within {WAIT:?}: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn protected_to_other_than(v: &Value, not: &str) -> bool {
    let p = &v["info"]["protection"];
    v["status"] == "running"
        && v["host"] != not
        && p["phase"] == "running"
        && p["committed"].as_u64().unwrap_or(0) > 0
        && v["backup"].as_str().is_some_and(|b| b != v["host"])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replicated_vm_survives_the_loss_of_its_host_with_calls_intact() {
    let _guard = LabGuard::new(LAB);
    let i = common::lab_up(LAB, &["--hosts", "3"]);
    let (ip, vip) = (format!("10.{i}.0.60"), format!("10.{i}.0.50"));
    in_lab_json(
        LAB,
        &[
            "vm", "create", "solo", "--ip", &ip, "--memory-mib", "128", "--replicated", "--host",
            "h1",
        ],
    );
    // The service: configured with no peer, so nothing but S2 keeps its
    // calls; ACT so it answers.
    let state = duplex_lab::LabPlan::load_state(LAB).unwrap();
    let agent = state.agent_client(1).unwrap();
    let configure = Op::Configure {
        vip: vip.parse().unwrap(),
        vip_prefix_len: 24,
        peer: None,
        witness: None,
        key: None,
    };
    agent.guest("solo", &configure).await.expect("configure");
    let act = Op::SetRole {
        role: TargetRole::Act,
        token: 1,
    };
    agent.guest("solo", &act).await.expect("set role act");
    let before = wait_for("epochs to a backup", |v| protected_to_other_than(v, "")).await;
    let backup = before["backup"].as_str().unwrap().to_string();
    let boot_id = before["info"]["heartbeat"]["boot_id"].clone();
    eprintln!("solo on h1, checkpointed to {backup}: {}", before["info"]["protection"]);

    let work = std::env::temp_dir().join(format!("duplex-e2e-{LAB}-{}", std::process::id()));
    let limit = Duration::from_secs(300);
    let sipp = common::sipp_until_stopped(LAB, &vip, &work, limit, Duration::from_secs(40));
    let arp = common::ArpWatch::start(LAB, &vip);
    tokio::time::sleep(Duration::from_secs(6)).await;

    common::fault(LAB, &["power-off", "h1"]);
    let after = wait_for("solo running on its backup", |v| {
        v["host"] == backup.as_str() && v["status"] == "running"
    })
    .await;
    assert_eq!(
        after["info"]["heartbeat"]["boot_id"], boot_id,
        "the guest booted again instead of running on from its replica: {after}"
    );
    let again = wait_for("epochs to a new backup", |v| protected_to_other_than(v, "h1")).await;
    eprintln!("solo on {backup}, checkpointed to {}", again["backup"]);
    tokio::time::sleep(Duration::from_secs(6)).await;

    sipp.stop();
    let report = sipp.wait().await.expect("sipp");
    let seen = arp.stop();
    common::assert_served_once(&report, &seen, &vip);
    let said = common::events(LAB);
    for kind in ["host.fenced", "vm.failover", "vm.protected"] {
        assert!(
            said.iter().any(|e| e.starts_with(kind)),
            "no {kind} event: {said:#?}"
        );
    }
    assert!(
        !said.iter().any(|e| e.starts_with("vm.restarted_elsewhere")),
        "the VM was restarted from its image: {said:#?}"
    );
    let _ = std::fs::remove_dir_all(&work);
}
