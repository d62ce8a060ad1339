//! The loss of a host, on real VMs under SIP load, with the lab's power
//! switch as the controller's fence device and a spare host:
//! 1. the ACT's host is powered off: the SBY is promoted once the host is
//!    fenced, and the lost member is re-created on the spare host;
//! 2. the SBY's host is powered off: the SBY is re-created elsewhere;
//! 3. the ACT's host loses its management link only: the controller finds
//!    it gone, fences it and fails over;
//! 4. the ACT's host loses its service link only: both guests lose each
//!    other, the ACT also loses the witness, so the controller isolates
//!    the ACT through its agent, promotes the SBY and re-creates the
//!    member elsewhere; the host itself is not fenced.
//!
//! After each, the pair is healthy on live hosts. sipp must see no failed
//! call, and the client must never see two VMs answer for the service
//! address (ARP, sampled from the client's namespace throughout).

mod common;

use common::{in_lab_json, LabGuard};
use serde_json::Value;
use std::time::{Duration, Instant};

const LAB: &str = "e2eh";
const HEAL_WAIT: Duration = Duration::from_secs(120);

fn pair() -> Value {
    in_lab_json(LAB, &["pair", "show", "sig"])
}

/// The host of the member in `role` ("act" or "sby"), as the pair wants it.
fn host_of(p: &Value, role: &str) -> String {
    p["members_status"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["wanted"] == role)
        .map(|m| m["host"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no {role} in {p}"))
}

/// Waits until the pair is healthy with no member on `gone`; returns it.
fn healthy_without(gone: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let p = pair();
        let on_gone = p["members_status"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["host"] == gone);
        if p["health"] == "healthy" && p["phase"] == "ready" && !on_gone {
            return p;
        }
        assert!(
            t0.elapsed() < HEAL_WAIT,
            "pair not healthy off {gone} within {HEAL_WAIT:?}: {p}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Powers `host` on again and waits until the controller has it back.
fn power_on(host: &str) {
    common::fault(LAB, &["heal", host]);
    let t0 = Instant::now();
    loop {
        let h = in_lab_json(LAB, &["host", "show", host]);
        if h["state"] != "failed" && h.get("fence").is_none() {
            return;
        }
        assert!(
            t0.elapsed() < HEAL_WAIT,
            "{host} not back within {HEAL_WAIT:?}: {h}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn power_off_of_the_act_and_sby_hosts_and_partitions_under_sip_load() {
    let _guard = LabGuard::new(LAB);
    let i = common::lab_up(LAB, &["--hosts", "4"]);
    in_lab_json(LAB, &["host", "state", "h4", "spare"]);
    let load = common::PairUnderLoad::start(LAB, i, HEAL_WAIT).await;

    // 1. The ACT's host loses power.
    let gone = host_of(&pair(), "act");
    common::fault(LAB, &["power-off", &gone]);
    let p = healthy_without(&gone);
    eprintln!("after the ACT's host {gone} lost power: {p}");
    let hosts: Vec<&str> = p["members_status"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["host"].as_str().unwrap())
        .collect();
    assert!(
        hosts.contains(&"h4"),
        "the lost member was not re-created on the spare h4: {p}"
    );
    let said = common::events(LAB);
    for kind in [
        "host.fenced",
        "pair.failed_over",
        "pair.healed",
        "host.spare_used",
    ] {
        assert!(
            said.iter().any(|e| e.starts_with(kind)),
            "no {kind} event: {said:#?}"
        );
    }
    power_on(&gone);

    // 2. The SBY's host loses power.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let gone = host_of(&pair(), "sby");
    let act_before = host_of(&pair(), "act");
    common::fault(LAB, &["power-off", &gone]);
    let p = healthy_without(&gone);
    eprintln!("after the SBY's host {gone} lost power: {p}");
    assert_eq!(host_of(&p, "act"), act_before, "the ACT moved: {p}");
    power_on(&gone);

    // 3. The ACT's host is cut off its management network only.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cut = host_of(&pair(), "act");
    common::fault(LAB, &["partition", &cut, "--link", "mgmt"]);
    let p = healthy_without(&cut);
    eprintln!("after the ACT's host {cut} lost its management link: {p}");
    power_on(&cut);

    // 4. The ACT's host is cut off its service network only: its agent
    //    still answers, so it is the guests and the witness that tell.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cut = host_of(&pair(), "act");
    common::fault(LAB, &["partition", &cut, "--link", "service"]);
    let p = healthy_without(&cut);
    eprintln!("after the ACT's host {cut} lost its service link: {p}");
    let h = in_lab_json(LAB, &["host", "show", &cut]);
    assert!(
        h["state"] != "failed" && h.get("fence").is_none(),
        "a host cut off its service network only was fenced: {h}"
    );
    common::fault(LAB, &["heal", &cut]);

    let seen = load.finish().await;
    assert!(
        seen.macs.len() >= 2,
        "the service address never moved: {seen:?}"
    );
}
