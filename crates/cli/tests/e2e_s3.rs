//! S3, restart escalation, on real VMs under SIP load, in one lab of three
//! hosts (h3 spare) and two controllers on etcd:
//! 1. the ACT's first failure is a kernel panic: the fast path, the SBY is
//!    ACT at once and the failed member is re-created on the spare h3;
//! 2. the pair's policy is set to allow PH0.5 twice; that member's service
//!    is killed three times: PH0.5 twice, then PH1.0; its record outlived
//!    its re-creation;
//! 3. the ACT's service is killed: the SBY takes over first, then PH0.5;
//! 4. the ACT's service hangs: the SBY takes over first, then PH1.0;
//! 5. the SBY's middleware is killed: PH2.0;
//! 6. the leading controller is `kill -9`ed: the next one shows the same
//!    counters (they live on the external disk);
//! 7. the SBY's QEMU is killed: PH2.5 starts it again on its disk;
//! 8. the ACT, whose failures started small, panics: no fast path, the SBY
//!    takes over and the ACT reboots (PH2.5);
//! 9. a REF data set is given to the SBY, a LAF backup taken on demand;
//! 10. the SBY's data is damaged: PH3.0 re-creates it from its init info
//!     on the external disk and its guest is given the LAF backup before
//!     its role; again: PH3.5, the REF set;
//! 11. a VM outside any pair, whose policy allows PH2.5 once, panics:
//!     PH2.5 and PH3.0 give its rebooted / re-created guest its last LAF
//!     backup, PH3.5 its REF set; then autoheal re-creates it on another
//!     host with the backup of that; PH2.5 again reloads it; deleted, its
//!     restart record goes, its data sets stay.
//!
//! After each the pair is healthy again; sipp must see no failed call.

mod common;

use common::{in_lab_json, LabGuard};
use serde_json::Value;
use std::time::{Duration, Instant};

const LAB: &str = "e2es3";
const WAIT: Duration = Duration::from_secs(120);

fn pair() -> Value {
    in_lab_json(LAB, &["pair", "show", "sig"])
}

/// (VM, host) of the member whose guest reports `role`.
fn member(role: &str) -> (String, String) {
    let p = common::wait_pair_healthy(LAB, "sig", WAIT);
    let m = p["members_status"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == role && m["wanted"] == role)
        .unwrap_or_else(|| panic!("no {role}: {p}"))
        .clone();
    (
        m["vm"].as_str().unwrap().to_string(),
        m["host"].as_str().unwrap().to_string(),
    )
}

fn history(vm: &str) -> Vec<Value> {
    in_lab_json(LAB, &["vm", "history", vm])["history"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Injects `fault` into `vm`'s guest through its host's agent.
fn inject(vm: &str, host: &str, fault: &str) {
    let url = in_lab_json(LAB, &["host", "show", host])["url"]
        .as_str()
        .unwrap()
        .to_string();
    in_lab_json(LAB, &["vm", "fault", "--agent", &url, vm, fault]);
}

/// Waits for `vm`'s history to grow past `before` entries and its newest
/// entry to be concluded; returns that entry.
fn next_entry(vm: &str, before: usize) -> Value {
    let t0 = Instant::now();
    loop {
        let h = history(vm);
        if h.len() > before {
            let last = h.last().unwrap().clone();
            if !last["outcome"].is_null() {
                assert_eq!(last["outcome"]["ok"], true, "the phase failed: {last}");
                return last;
            }
        }
        assert!(t0.elapsed() < WAIT, "no new restart of {vm}: {h:#?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Injects `fault` into the member in `role` and returns the restart entry
/// it led to, once the pair is healthy again.
async fn drill(role: &str, fault: &str) -> (String, Value) {
    let (vm, host) = member(role);
    let before = history(&vm).len();
    inject(&vm, &host, fault);
    let e = next_entry(&vm, before);
    eprintln!("{fault} on the {role} {vm}: {e}");
    // The service settles before the next drill.
    common::wait_pair_healthy(LAB, "sig", WAIT);
    tokio::time::sleep(Duration::from_secs(2)).await;
    (vm, e)
}

fn kill_leader() {
    let s: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("/run/duplex/lab-{LAB}/state.json")).unwrap(),
    )
    .unwrap();
    let pid = s["controller"]["pid"].as_i64().unwrap() as i32;
    // SAFETY: kill(2) of the lab's own controller process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    eprintln!("killed the leading controller (pid {pid})");
}

/// `vm history` as the controller in office answers it, once one is.
fn counters_when_led(vm: &str) -> Value {
    let t0 = Instant::now();
    loop {
        let (ok, out, _) = common::in_lab(LAB, &["vm", "history", vm, "-o", "json"]);
        if ok {
            let v: Value = serde_json::from_str(&out).unwrap();
            return v["counters"].clone();
        }
        assert!(t0.elapsed() < WAIT, "no controller answers");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Waits for an event of `kind` about `subject` at or after `at_ms`.
fn event_after(kind: &str, subject: &str, at_ms: u64) -> Value {
    let t0 = Instant::now();
    loop {
        let ev = in_lab_json(LAB, &["events", "--last", "80"]);
        let found = ev.as_array().unwrap().iter().find(|e| {
            e["kind"] == kind
                && e["subject"] == subject
                && e["at_ms"].as_u64().is_some_and(|t| t >= at_ms)
        });
        if let Some(e) = found {
            return e.clone();
        }
        assert!(t0.elapsed() < WAIT, "no {kind} of {subject}: {ev:#}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The service data is damaged on the SBY: PH3.0 (or PH3.5 when PH3.0
/// was used up) re-creates it and gives its guest the set named `from`.
async fn damaged_sby_restored(phase: &str, from: &str) -> Value {
    let (vm, e) = drill("sby", "damage-data").await;
    assert_eq!(
        (e["cause"].as_str(), e["phase"].as_str()),
        (Some("data_damaged"), Some(phase)),
        "{e}"
    );
    let said = e["outcome"]["message"].as_str().unwrap_or("");
    assert!(said.contains(&format!("is given {from}")), "{e}");
    assert!(
        said.contains("from its init info v1 on the external disk"),
        "{e}"
    );
    let restored = event_after(
        "vm.restored",
        &format!("vm/{vm}"),
        e["at_ms"].as_u64().unwrap(),
    );
    eprintln!("{phase}: {}", restored["message"]);
    restored
}

#[tokio::test(flavor = "multi_thread")]
async fn every_restart_phase_and_the_fast_path_under_sip_load() {
    let _guard = LabGuard::new(LAB);
    let i = common::lab_up(
        LAB,
        &["--hosts", "3", "--store", "etcd", "--controllers", "2"],
    );
    in_lab_json(LAB, &["host", "state", "h3", "spare"]);
    let load = common::PairUnderLoad::start(LAB, i, WAIT).await;

    // 1. The ACT's first failure is a kernel panic: the fast path, the SBY
    //    is ACT at once and the failed member is re-created on spare h3.
    let (healed, act_host) = member("act");
    inject(&healed, &act_host, "panic");
    let e = next_entry(&healed, 0);
    assert_eq!(
        (e["phase"].as_str(), e["fast_path"].as_bool()),
        (Some("autoheal"), Some(true)),
        "{e}"
    );
    let t0 = Instant::now();
    while member("sby") != (healed.clone(), "h3".to_string()) {
        assert!(
            t0.elapsed() < WAIT,
            "{healed} not re-created on the spare h3: {}",
            pair()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let said = common::events(LAB);
    for kind in ["pair.failed_over", "pair.healed", "host.spare_used"] {
        assert!(
            said.iter().any(|e| e.starts_with(kind)),
            "no {kind} event: {said:#?}"
        );
    }

    load.assert_none_failed_yet("step 1");
    // 2. The pair's policy allows PH0.5 twice; the (re-created) SBY's
    //    service dies three times: PH0.5 up to that threshold, then PH1.0;
    //    its record outlived the re-creation.
    let set = in_lab_json(LAB, &["pair", "policy", "sig", "--threshold", "PH0.5=2"]);
    assert_eq!(set["policy"]["phases"]["PH0.5"]["threshold"], 2, "{set}");
    let shown = in_lab_json(LAB, &["vm", "policy", &healed]);
    assert_eq!(shown["source"], "pair", "{shown}");
    let mut phases = Vec::new();
    for _ in 0..3 {
        let (vm, e) = drill("sby", "kill-service").await;
        assert_eq!(
            (vm.as_str(), &e["cause"]),
            (healed.as_str(), &Value::from("process_exited"))
        );
        phases.push(e["phase"].as_str().unwrap().to_string());
    }
    assert_eq!(phases, ["PH0.5", "PH0.5", "PH1.0"]);
    assert_eq!(history(&healed)[0]["phase"], "autoheal");

    load.assert_none_failed_yet("step 2");
    // 3. The ACT's service dies: the SBY takes over first, then PH0.5.
    let (vm, e) = drill("act", "kill-service").await;
    assert_eq!(
        (e["phase"].as_str(), e["failover_first"].as_bool()),
        (Some("PH0.5"), Some(true)),
        "{e}"
    );
    assert_eq!(
        member("sby").0,
        vm,
        "the failed ACT did not hand over: {}",
        pair()
    );
    assert_eq!(member("act").0, healed);

    load.assert_none_failed_yet("step 3");
    // 4. The ACT's service hangs. The SIP service's health hook gives up
    //    before its deadline, so a hang shows as a failing health check
    //    (both are PH1.0).
    let (_, e) = drill("act", "hang-service").await;
    assert!(
        e["cause"] == "service_hung" || e["cause"] == "health_failed",
        "{e}"
    );
    assert_eq!(
        (e["phase"].as_str(), e["failover_first"].as_bool()),
        (Some("PH1.0"), Some(true)),
        "{e}"
    );

    load.assert_none_failed_yet("step 4");
    // 5. The SBY's middleware dies.
    let (_, e) = drill("sby", "kill-middleware").await;
    assert_eq!(
        (e["cause"].as_str(), e["phase"].as_str()),
        (Some("middleware_silent"), Some("PH2.0")),
        "{e}"
    );

    load.assert_none_failed_yet("step 5");
    // 6. The counters outlive the controller.
    let before = counters_when_led(&healed);
    assert!(before.as_array().is_some_and(|c| c.len() >= 4), "{before}");
    kill_leader();
    assert_eq!(
        counters_when_led(&healed),
        before,
        "the next controller lost {healed}'s counters"
    );

    load.assert_none_failed_yet("step 6");
    // 7. The SBY's QEMU dies: PH2.5 starts it again on its disk.
    let (vm, host) = member("sby");
    let pid = in_lab_json(LAB, &["vm", "show", &vm])["info"]["pid"]
        .as_i64()
        .unwrap() as i32;
    let n = history(&vm).len();
    // SAFETY: kill(2) of the lab VM's QEMU process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let e = next_entry(&vm, n);
    assert_eq!(
        (e["cause"].as_str(), e["phase"].as_str()),
        (Some("qemu_crashed"), Some("PH2.5")),
        "{e}"
    );
    assert_eq!(
        member("sby"),
        (vm, host),
        "the SBY did not come back where it was"
    );
    // The pair is repaired once the rebooted guest is SBY again; it is
    // healthy (`drill` waits for that) once the ACT says the SBY holds
    // its state: a panic before that would lose calls, as it would in
    // any pair.
    event_after("pair.repair.done", "pair/sig", e["at_ms"].as_u64().unwrap());

    load.assert_none_failed_yet("step 7");
    // 8. A panic of an ACT whose failures started small within probation
    //    is no first failure: no fast path, the SBY takes over and the
    //    ACT reboots (PH2.5).
    let (_, e) = drill("act", "panic").await;
    assert_eq!(
        (
            e["phase"].as_str(),
            e["fast_path"].as_bool(),
            e["failover_first"].as_bool()
        ),
        (Some("PH2.5"), Some(false), Some(true)),
        "{e}"
    );

    load.assert_none_failed_yet("step 8");
    // 9. The service data on the external disk: a REF set for the SBY, a
    //    LAF backup of the pair's ACT on demand; both listed.
    let (sby, _) = member("sby");
    let (act, _) = member("act");
    let work = std::env::temp_dir().join(format!("duplex-e2e-s3-ref-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let ref_file = work.join("ref.json");
    std::fs::write(&ref_file, r#"{"ref/a": {"n": 1}, "ref/b": {"n": 2}}"#).unwrap();
    let file = ref_file.to_str().unwrap();
    let r = in_lab_json(LAB, &["vm", "ref", &sby, "--file", file]);
    assert_eq!(
        (r["kind"].as_str(), r["keys"].as_u64()),
        (Some("ref"), Some(2)),
        "{r}"
    );
    let _ = std::fs::remove_dir_all(&work);
    let laf = in_lab_json(LAB, &["vm", "backup", &sby]);
    assert_eq!(
        (laf["kind"].as_str(), laf["vm"].as_str()),
        (Some("laf"), Some(act.as_str())),
        "{laf}"
    );
    let listed = in_lab_json(LAB, &["vm", "data", &act]);
    assert!(
        listed["stored"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["version"] == laf["version"]),
        "{listed}"
    );
    let init = in_lab_json(LAB, &["vm", "data", &sby]);
    assert_eq!(init["init_info"]["image"], "default", "{init}");

    load.assert_none_failed_yet("step 9");
    // 10. The SBY's data is damaged: PH3.0 re-creates it from the LAF
    //     backup; again within probation: PH3.5, from the REF set.
    let from = format!("LAF v{} of {act}", laf["version"]);
    let restored = damaged_sby_restored("PH3.0", &from).await;
    let keys = format!("{} keys", laf["keys"]);
    assert!(
        restored["message"].as_str().unwrap().contains(&keys),
        "{restored} {laf}"
    );
    let from = format!("REF v{} of {sby}", r["version"]);
    let restored = damaged_sby_restored("PH3.5", &from).await;
    assert!(
        restored["message"].as_str().unwrap().contains("2 keys"),
        "{restored}"
    );
    load.assert_none_failed_yet("step 10");
    load.finish().await;

    alone(i).await;
}

/// Step 11: restarts of a VM outside any pair (no peer to take over or to
/// hold its state: its data comes from the external disk). Its guest runs
/// no service (that needs a role), so its failures are kernel panics.
async fn alone(i: u64) {
    let vm = "solo";
    let ip = format!("10.{i}.0.103");
    in_lab_json(LAB, &["vm", "create", vm, "--ip", &ip, "--host", "h1"]);
    let running = |host: &str| {
        let v = in_lab_json(LAB, &["vm", "show", vm]);
        v["status"] == "running" && v["host"] == host
    };
    let t0 = Instant::now();
    while !running("h1") {
        assert!(t0.elapsed() < WAIT, "{vm} does not run on h1");
        std::thread::sleep(Duration::from_millis(300));
    }
    let work = std::env::temp_dir().join(format!("duplex-e2e-s3-solo-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let ref_file = work.join("ref.json");
    std::fs::write(&ref_file, r#"{"s/a": 1, "s/b": 2, "s/c": 3}"#).unwrap();
    let r = in_lab_json(
        LAB,
        &["vm", "ref", vm, "--file", ref_file.to_str().unwrap()],
    );
    let _ = std::fs::remove_dir_all(&work);
    in_lab_json(LAB, &["vm", "policy", vm, "--threshold", "PH2.5=1"]);
    let backup = || {
        let laf = in_lab_json(LAB, &["vm", "backup", vm]);
        assert_eq!(laf["vm"].as_str(), Some(vm), "{laf}");
        format!("LAF v{} of {vm}", laf["version"])
    };
    // Its restart, the set its guest was given and how many keys.
    let panic = |phase: &str, set: &str, keys: u64| {
        let n = history(vm).len();
        let host = in_lab_json(LAB, &["vm", "show", vm])["host"]
            .as_str()
            .unwrap()
            .to_string();
        inject(vm, &host, "panic");
        let e = next_entry(vm, n);
        eprintln!("panic of {vm}: {e}");
        assert_eq!(
            (e["phase"].as_str(), e["standing"].as_str()),
            (Some(phase), Some("alone")),
            "{e}"
        );
        let said = e["outcome"]["message"].as_str().unwrap();
        assert!(said.contains(&format!("is given {set}")), "{e}");
        let subject = format!("vm/{vm}");
        let got = event_after("vm.restored", &subject, e["at_ms"].as_u64().unwrap());
        let msg = got["message"].as_str().unwrap_or("");
        assert!(msg.contains(&format!(" {set}: {keys} keys")), "{got}");
        e
    };
    // Its store is empty: PH2.5 reloads the (empty) backup, PH3.0 too;
    // PH3.5 gives it the REF set.
    let empty = backup();
    panic("PH2.5", &empty, 0);
    panic("PH3.0", &empty, 0);
    panic("PH3.5", &format!("REF v{} of {vm}", r["version"]), 3);
    // The REF set is in its store now, and so in the next backup.
    let full = backup();
    // PH2.5..PH3.5 are used up within probation: autoheal re-creates it
    // on another host, from its init info, with that backup.
    let e = panic("autoheal", &full, 3);
    assert!(
        e["outcome"]["message"]
            .as_str()
            .unwrap()
            .contains("from its init info"),
        "{e}"
    );
    let host = in_lab_json(LAB, &["vm", "show", vm])["host"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(host, "h1", "{vm} was not moved");
    let t0 = Instant::now();
    while !running(&host) {
        assert!(t0.elapsed() < WAIT, "{vm} does not run on {host}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // PH2.5 allowed again: the rebooted guest gets its current files back.
    in_lab_json(LAB, &["vm", "policy", vm, "--threshold", "PH2.5=10"]);
    panic("PH2.5", &full, 3);
    // Deleted: its restart counts and policy go with it (a VM created
    // again under its name starts afresh), its data sets stay.
    in_lab_json(LAB, &["vm", "delete", vm]);
    let t0 = Instant::now();
    loop {
        let (ok, _, err) = common::in_lab(LAB, &["vm", "history", vm]);
        if !ok && err.contains("no restart record") {
            break;
        }
        assert!(
            t0.elapsed() < WAIT,
            "{vm}'s restart record outlived it: {err}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let kept = in_lab_json(LAB, &["vm", "data", vm]);
    assert!(
        kept["stored"].as_array().is_some_and(|s| s.len() >= 3),
        "{kept}"
    );
}
