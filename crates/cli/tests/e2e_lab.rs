//! End to end, for real: a lab of two hosts (network namespaces), a VM
//! booted under QEMU on host 1, reached from the client namespace, live-
//! migrated to host 2 under a UDP probe and still answering there; and the
//! failure paths: unknown image, bad JSON, unreachable and refusing
//! destinations, a destination that dies half-way, a migration whose
//! controller is superseded half-way. Needs root, QEMU and a
//! built image (`./setup.sh`). The lab is removed even if the test fails.

use duplex_agent::client::{AgentClient, ClientError};
use duplex_core::agent_api::{
    MigrateRequest, MigrationInfo, MigrationPhase, MigrationTuning, VmState, WaitFor,
};
use duplex_core::guest_proto::Op;
use duplex_core::mac::Mac;
use duplex_core::vm_spec::VmSpec;
use duplex_lab::demo::{ping, wait_guest, ProbeProcess};
mod common;

use common::{LabGuard, BIN};
use std::process::Command;
use std::time::{Duration, Instant};

const LAB: &str = "e2e";

fn duplex(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run duplex")
}

async fn wait_migration(c: &AgentClient, vm: &str, within: Duration) -> MigrationInfo {
    let deadline = Instant::now() + within;
    loop {
        let i = c.migration(vm).await.expect("migration status");
        if matches!(i.phase, MigrationPhase::Completed | MigrationPhase::Failed) {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "migration of {vm} did not end: {i:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pids of QEMU processes inside a namespace.
fn qemu_pids(ns: &str) -> Vec<i32> {
    let out = Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .expect("ip netns pids");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .map(|c| c.starts_with("qemu"))
                .unwrap_or(false)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_vm_reach_migrate_and_failure_paths() {
    let _guard = LabGuard::new(LAB);

    let up = duplex(&["lab", "up", "--lab", LAB, "--hosts", "2"]);
    assert!(
        up.status.success(),
        "lab up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let again = duplex(&["lab", "up", "--lab", LAB, "--hosts", "2"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already up"));

    let state = duplex_lab::LabPlan::load_state(LAB).expect("lab state");
    let h1 = state.agent_client(1).unwrap();
    let h2 = state.agent_client(2).unwrap();
    let client_ns = state.client_ns().to_string();
    let ip = state.vm_ip(0).unwrap();

    // Bad requests are refused with errors that name the problem.
    let mut bad = VmSpec::new("nope", state.vm_ip(9).unwrap());
    bad.image = "no-such-image".into();
    match h1.create(&bad, WaitFor::Started).await {
        Err(ClientError::Api {
            status: 400,
            code,
            message,
            ..
        }) => {
            assert_eq!(code, "unknown_image");
            assert!(message.contains("duplex image build"), "{message}");
        }
        other => panic!("unknown image accepted: {other:?}"),
    }
    let raw = duplex_lab::pki::operator_client(LAB, |b| b)
        .expect("the lab operator's client")
        .post(format!("{}/v1/vms", h1.base()))
        .header("content-type", "application/json")
        .body(r#"{"name":"x","ip":"10.1.1.1","memroy":5}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    assert!(raw.text().await.unwrap().contains("memroy"));

    // Boot on h1 and reach it from the client namespace.
    let vm = h1
        .create(&VmSpec::new("e2e", ip), WaitFor::Ready)
        .await
        .expect("boot VM on h1");
    assert_eq!(vm.state, VmState::Running);
    assert!(vm.boot_ms.is_some());
    assert_eq!(vm.guest.as_ref().unwrap()["name"], "e2e");
    assert!(
        ping(&client_ns, &ip.to_string()).await,
        "VM not reachable from the client"
    );
    // QEMU runs as the unprivileged QEMU user, in a directory only it
    // (and root) can enter.
    let pids = qemu_pids(state.host_ns(1).unwrap());
    assert_eq!(pids.len(), 1, "{pids:?}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", pids[0])).unwrap();
    let uids: Vec<u32> = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .map(|u| u.parse().unwrap())
        .collect();
    let qemu_uid = duplex_qemu::runas::RunAs::lookup(duplex_qemu::runas::DEFAULT_USER)
        .unwrap()
        .uid;
    assert!(uids.iter().all(|u| *u == qemu_uid), "QEMU uids {uids:?}");
    let dir = std::fs::metadata(format!("/run/duplex/lab-{LAB}/h1/vms/e2e")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((dir.uid(), dir.mode() & 0o777), (qemu_uid, 0o700));
    let traffic = h1.traffic("e2e").await.unwrap();
    let client_ip = state.client_ip;
    assert!(
        traffic
            .peers
            .iter()
            .any(|p| p.ip == Some(client_ip) && p.rx_packets >= 3 && p.tx_packets >= 3),
        "element did not count the pings per peer: {traffic:?}"
    );

    // Destinations that are not agent URLs (QEMU runs an `exec:` stream
    // address as a shell command): refused before anything starts.
    for to in [
        "exec:touch /tmp/duplex-e2e-pwned",
        "tcp:10.0.0.1:4444",
        "http://10.0.0.1:7070",
    ] {
        let order = MigrateRequest {
            to: to.into(),
            tuning: Default::default(),
        };
        match h1.start_migration("e2e", &order).await {
            Err(ClientError::Api {
                status: 400,
                message,
                ..
            }) => assert!(message.contains("field `to`"), "{message}"),
            other => panic!("destination {to} accepted: {other:?}"),
        }
    }
    assert!(!std::path::Path::new("/tmp/duplex-e2e-pwned").exists());

    // Unreachable destination: fails, VM keeps running on h1.
    let nobody = format!("https://{}:7070", state.vm_ip(50).unwrap());
    h1.start_migration(
        "e2e",
        &MigrateRequest {
            to: nobody,
            tuning: Default::default(),
        },
    )
    .await
    .unwrap();
    let failed = wait_migration(&h1, "e2e", Duration::from_secs(30)).await;
    assert_eq!(failed.phase, MigrationPhase::Failed);
    let why = failed.error.unwrap();
    assert!(
        why.contains("unreachable") && why.contains("keeps running on h1"),
        "{why}"
    );
    assert_eq!(h1.show("e2e").await.unwrap().state, VmState::Running);

    // Destination refuses (it already has a VM of that name).
    let mut clash = VmSpec::new("e2e", state.vm_ip(1).unwrap());
    clash.mac = Some(Mac([0x52, 0x54, 0, 0xee, 0, 1]));
    h2.create(&clash, WaitFor::Started)
        .await
        .expect("clash VM on h2");
    h1.start_migration(
        "e2e",
        &MigrateRequest {
            to: h2.base().into(),
            tuning: Default::default(),
        },
    )
    .await
    .unwrap();
    let refused = wait_migration(&h1, "e2e", Duration::from_secs(30)).await;
    let why = refused.error.unwrap_or_default();
    assert!(
        why.contains("refused") && why.contains("already exists"),
        "{why}"
    );
    h2.delete("e2e").await.expect("delete clash VM");
    assert_eq!(h1.show("e2e").await.unwrap().state, VmState::Running);

    // The destination QEMU dies half-way: the source keeps the VM running.
    let slow = MigrateRequest {
        to: h2.base().into(),
        tuning: MigrationTuning {
            max_bandwidth_mib: Some(4),
            ..Default::default()
        },
    };
    h1.start_migration("e2e", &slow).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let i = h1.migration("e2e").await.unwrap();
        assert_ne!(i.phase, MigrationPhase::Completed, "too fast to interrupt");
        if i.phase == MigrationPhase::Active && i.progress.transferred_bytes > 2 << 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "migration never got going: {i:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let h2_ns = state.host_ns(2).unwrap().to_string();
    let victims = qemu_pids(&h2_ns);
    assert_eq!(victims.len(), 1, "one incoming QEMU on h2");
    // SAFETY: kill(2) on a QEMU process this test's lab started.
    unsafe { libc_kill(victims[0]) };
    let broken = wait_migration(&h1, "e2e", Duration::from_secs(60)).await;
    assert_eq!(broken.phase, MigrationPhase::Failed);
    assert!(broken.error.unwrap().contains("keeps running on h1"));
    assert_eq!(h1.show("e2e").await.unwrap().state, VmState::Running);
    assert!(
        wait_guest(&h1, "e2e", Duration::from_secs(10)).await,
        "guest silent after failed migration"
    );
    assert!(
        ping(&client_ns, &ip.to_string()).await,
        "VM unreachable after failed migration"
    );
    let h2_left = h2.list().await.unwrap();
    assert!(h2_left.is_empty(), "destination kept a VM: {h2_left:?}");

    // A newer controller takes office half-way through a migration the
    // old one ordered: the source cancels it, the VM keeps running on h1.
    let f = h1.raise_fence().await.expect("read h1's fence");
    let as_controller = || state.agent_client_as_controller(1).unwrap();
    let old_leader = as_controller().with_fence(f);
    old_leader.start_migration("e2e", &slow).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let i = h1.migration("e2e").await.unwrap();
        assert_ne!(i.phase, MigrationPhase::Completed, "too fast to interrupt");
        if i.phase == MigrationPhase::Active && i.progress.transferred_bytes > 2 << 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "migration never got going: {i:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new_leader = as_controller().with_fence(f + 1);
    assert_eq!(new_leader.raise_fence().await.unwrap(), f + 1);
    let cancelled = wait_migration(&h1, "e2e", Duration::from_secs(60)).await;
    assert_eq!(cancelled.phase, MigrationPhase::Failed, "{cancelled:?}");
    let why = cancelled.error.unwrap_or_default();
    assert!(
        why.contains("newer controller") && why.contains("keeps running on h1"),
        "{why}"
    );
    assert_eq!(h1.show("e2e").await.unwrap().state, VmState::Running);
    assert!(
        wait_guest(&h1, "e2e", Duration::from_secs(10)).await,
        "guest silent after the cancelled migration"
    );
    let h2_left = h2.list().await.unwrap();
    assert!(h2_left.is_empty(), "destination kept a VM: {h2_left:?}");

    // The real move, under a UDP probe from the client.
    let probe = ProbeProcess::start(
        std::path::Path::new(BIN),
        &client_ns,
        &format!("{ip}:7"),
        Duration::from_millis(10),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let req = MigrateRequest {
        to: h2.base().into(),
        tuning: Default::default(),
    };
    let done = h1
        .migrate("e2e", &req, Duration::from_secs(300), |_| {})
        .await
        .expect("migration h1 -> h2");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = probe.stop().await.unwrap();
    let stats = done.stats.expect("stats");
    assert!(stats.transferred_bytes > 0 && stats.total_ms > 0);
    assert!(stats.encrypted, "the stream must go over TLS: {stats:?}");
    assert!(report.sent > 50 && report.received > 0, "{report:?}");
    eprintln!("migration: {stats:?}\nprobe: {report:?}");
    assert_eq!(h2.show("e2e").await.unwrap().state, VmState::Running);
    assert!(
        wait_guest(&h2, "e2e", Duration::from_secs(10)).await,
        "guest silent on h2"
    );
    let status = h2.guest("e2e", &Op::Status).await.unwrap();
    assert_eq!(status["name"], "e2e");
    match h1.show("e2e").await {
        Err(ClientError::Api {
            status: 404,
            message,
            ..
        }) => assert!(message.contains("migrated to"), "{message}"),
        other => panic!("VM still on h1: {other:?}"),
    }
    assert!(
        ping(&client_ns, &ip.to_string()).await,
        "VM unreachable from the client after migration"
    );

    h2.delete("e2e").await.unwrap();
    assert!(h2.list().await.unwrap().is_empty());
    let down = duplex(&["lab", "down", "--lab", LAB]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    let twice = duplex(&["lab", "down", "--lab", LAB]);
    assert!(String::from_utf8_lossy(&twice.stderr).contains("nothing to take down"));
}

unsafe fn libc_kill(pid: i32) {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    kill(pid, 9);
}
