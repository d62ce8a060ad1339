//! A third-party SIP server as a pair: Debian's Kamailio, packaged by
//! `examples/kamailio/image.toml`, booted from its root disk with user data
//! naming the SIP server behind it (sipp as UAS in the client namespace),
//! carries sipp's calls through a switchover, a `pair migrate` and a host
//! drain. Asserted: 0 failed calls, and the member that became ACT at the
//! switchover held the calls in progress (Kamailio's dialogs, replicated
//! over DMQ), as its become-active hook printed.

mod common;

use common::{LabGuard, BIN};
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const LAB: &str = "e2ek";

fn json(args: &[&str]) -> Value {
    common::in_lab_json(LAB, args)
}

/// The pair's (ACT host, SBY host), as the guests report them.
fn layout() -> (String, String) {
    let p = common::wait_pair_healthy(LAB, "kam", Duration::from_secs(60));
    common::act_sby_hosts(&p)
}

/// sipp's built-in UAS, the SIP server behind the proxy; killed on drop.
struct Uas(Child);

impl Uas {
    fn start(ip: &str, port: u16) -> Uas {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &format!("{LAB}-client"),
                "sipp",
                "-sn",
                "uas",
            ])
            .args(["-i", ip, "-p", &port.to_string(), "-nostdin"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sipp as UAS");
        Uas(child)
    }
}

impl Drop for Uas {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The largest "ongoing: N" a member printed when it became ACT.
fn dialogs_taken_over() -> u64 {
    let logs = format!("/run/duplex/lab-{LAB}");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cat {logs}/h*/vms/*/serial.log {logs}/h*/departed/*.serial.log 2>/dev/null"
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| l.contains("duplex-kamailio: now active"))
        .filter_map(|l| {
            let rest = &l[l.find("ongoing:")? + "ongoing:".len()..];
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn kamailio_pair_carries_calls_through_switchover_migrate_and_drain() {
    let spec = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/kamailio/image.toml"
    );
    let built = Command::new(BIN)
        .args(["image", "build", "--spec", spec])
        .output()
        .expect("run duplex image build");
    assert!(
        built.status.success(),
        "image build: {}",
        String::from_utf8_lossy(&built.stderr)
    );

    let _guard = LabGuard::new(LAB);
    let i = common::lab_up(LAB, &["--hosts", "3"]);
    let ip = |last: u8| format!("10.{i}.0.{last}");
    let work = std::env::temp_dir().join(format!("duplex-e2e-kam-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let user_data = work.join("user-data.toml");
    std::fs::write(
        &user_data,
        format!("[env]\nUPSTREAM = \"{}:5070\"\n", ip(2)),
    )
    .unwrap();
    let (ma, mb, vip) = (format!("ka={}", ip(101)), format!("kb={}", ip(102)), ip(50));
    json(&[
        "pair",
        "create",
        "kam",
        "--vip",
        &vip,
        "--member",
        &ma,
        "--member",
        &mb,
        "--hosts",
        "h1,h2",
        "--image",
        "kamailio",
        "--user-data",
        user_data.to_str().unwrap(),
    ]);
    let ka = json(&["vm", "show", "ka"]);
    assert_eq!(
        ka["spec"]["user_data"]["env"]["UPSTREAM"],
        format!("{}:5070", ip(2)),
        "vm show carries the user data: {ka}"
    );
    assert_eq!(layout(), ("h1".into(), "h2".into()));

    let _uas = Uas::start(&ip(2), 5070);
    let sipp = common::sipp_until_stopped(
        LAB,
        &vip,
        &work.join("sipp"),
        Duration::from_secs(180),
        Duration::from_secs(40),
    );
    tokio::time::sleep(Duration::from_secs(5)).await;

    // 1. Switchover: kb becomes ACT with the dialogs DMQ gave it.
    json(&["pair", "switchover", "kam"]);
    assert_eq!(layout(), ("h2".into(), "h1".into()));
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 2. Pair migrate off the ACT's host: its root disk's overlay goes
    //    along (block migration).
    json(&["pair", "migrate", "kam", "--to", "h3"]);
    let (act, sby) = layout();
    assert!(act != "h2" && sby != "h2", "{act} {sby}");
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 3. Drain the ACT's host.
    let (ok, _, err) = common::in_lab(LAB, &["host", "drain", &act]);
    assert!(ok, "drain {act}: {err}");
    let (act2, sby2) = layout();
    assert!(act2 != act && sby2 != act, "{act2} {sby2}");
    tokio::time::sleep(Duration::from_secs(3)).await;

    sipp.stop();
    let report = sipp.wait().await.expect("sipp");
    eprintln!(
        "sipp through Kamailio: {} calls, {} successful, {} failed, {} abandoned, {} retransmissions",
        report.total_calls,
        report.successful,
        report.failed,
        report.abandoned,
        report.retransmissions
    );
    let taken_over = dialogs_taken_over();
    eprintln!("dialogs the new ACT held at the switchover: {taken_over}");
    assert!(report.successful > 0, "{report:?}");
    assert_eq!(report.failed, 0, "{report:?}");
    assert!(
        taken_over > 0,
        "the member that became ACT knew no calls in progress: dialogs were not replicated"
    );
    let _ = std::fs::remove_dir_all(&work);
}
