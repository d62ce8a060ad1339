//! A host cut off its management network when the controller has no fence
//! device, on real VMs under SIP load: the cut-off agent fences itself
//! once its lease runs out (its VMs cut off the network in their elements,
//! its ACT paused), the controller promotes the SBY only after that lease
//! plus a margin, and when the host comes back its stale VMs are destroyed,
//! not resumed. The client never sees two VMs answer for the service
//! address; sipp sees no failed call (calls wait out the gap by
//! retransmission).

mod common;

use common::{in_lab_json, LabGuard};
use serde_json::Value;
use std::time::{Duration, Instant};

const LAB: &str = "e2ef";
const WAIT: Duration = Duration::from_secs(120);

fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < WAIT, "{what}: not within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_off_host_fences_itself_before_its_sby_is_promoted() {
    let _guard = LabGuard::new(LAB);
    let i = common::lab_up(LAB, &["--hosts", "3", "--fence", "none"]);
    let load = common::PairUnderLoad::start(LAB, i, WAIT).await;

    let cut = Instant::now();
    common::fault(LAB, &["partition", "h1", "--link", "mgmt"]);
    let p: Value = until("pb ACT and the pair healthy again", || {
        let p = in_lab_json(LAB, &["pair", "show", "sig"]);
        let act = p["members_status"][1]["role"] == "act";
        let healthy = p["health"] == "healthy" && p["phase"] == "ready";
        (act && healthy && p["members_status"][0]["host"] != "h1").then_some(p)
    });
    eprintln!("{:?} after the cut: {p}", cut.elapsed());
    let said = common::events(LAB);
    let fenced = said
        .iter()
        .find(|e| e.starts_with("host.fenced"))
        .unwrap_or_else(|| panic!("no host.fenced event: {said:#?}"));
    assert!(fenced.contains("self-fence lease"), "{fenced}");
    let log = std::fs::read_to_string(format!("/run/duplex/lab-{LAB}/h1/agent.log")).unwrap();
    assert!(
        log.contains("self-fenced"),
        "h1's agent did not fence itself"
    );

    // Back on the network: its stale copy of pa is destroyed, not resumed.
    common::fault(LAB, &["heal", "h1"]);
    let h: Value = until("h1 back without stale VMs", || {
        let h = in_lab_json(LAB, &["host", "show", "h1"]);
        (h["state"] == "ready" && h.get("fence").is_none()).then_some(h)
    });
    eprintln!("h1 after the heal: {h}");
    let said = common::events(LAB);
    assert!(
        said.iter().any(|e| e.starts_with("host.recovered")),
        "{said:#?}"
    );
    let vms = in_lab_json(LAB, &["vm", "list"]);
    for v in vms.as_array().unwrap() {
        assert_ne!(v["host"], "h1", "a VM is left on h1: {vms}");
    }

    load.finish().await;
}
