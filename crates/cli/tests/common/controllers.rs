//! The controllers of a lab started with `--controllers N`: which leads,
//! and a client that follows the leader.
#![allow(dead_code)]

use duplex_controller::client::ControllerClient;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Longest wait for some controller to lead.
const LEADER_WAIT: Duration = Duration::from_secs(60);

fn state(lab: &str) -> Value {
    let path = format!("/run/duplex/lab-{lab}/state.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("lab state")).expect("lab state")
}

/// Every controller of the lab: (url, pid).
pub fn all(lab: &str) -> Vec<(String, i32)> {
    let s = state(lab);
    let mut all = vec![s["controller"].clone()];
    all.extend(
        s["standby_controllers"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
    );
    all.iter()
        .map(|c| {
            (
                c["url"].as_str().expect("controller url").to_string(),
                c["pid"].as_i64().expect("controller pid") as i32,
            )
        })
        .collect()
}

/// The controller that leads now: (url, pid).
pub async fn leader(lab: &str) -> (String, i32) {
    let t0 = Instant::now();
    loop {
        for (url, pid) in all(lab) {
            let c = ControllerClient::with_bundle(&url, &operator_tls(lab)).expect("client");
            if let Ok(h) = c.get::<Value>("/healthz").await {
                if h["leader"] == true {
                    return (url, pid);
                }
            }
        }
        assert!(t0.elapsed() < LEADER_WAIT, "no controller leads");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The lab operator's bundle.
pub fn operator_tls(lab: &str) -> std::path::PathBuf {
    duplex_lab::LabState::read(lab)
        .expect("lab state")
        .expect("the lab is up")
        .operator_tls()
}

/// A client of the lab's controllers (it tries the next when one fails).
pub fn client(lab: &str) -> ControllerClient {
    let urls: Vec<String> = all(lab).into_iter().map(|(u, _)| u).collect();
    ControllerClient::with_bundle(&urls[0], &operator_tls(lab))
        .expect("client")
        .with_standbys(&urls[1..])
}

/// Kills `pid` (a controller this test's lab started) with SIGKILL.
pub fn kill(pid: i32) {
    // SAFETY: kill(2) on a pid we started; no memory is touched.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}
