//! Shared by the end-to-end tests: the lab they run in is removed when the
//! test ends, however it ends, after printing the agents' and guests' logs
//! if it failed.

use std::process::Command;

pub const BIN: &str = env!("CARGO_BIN_EXE_duplex");

pub struct LabGuard(pub &'static str);

impl LabGuard {
    /// Removes leftovers of an earlier run, then guards the lab.
    pub fn new(lab: &'static str) -> LabGuard {
        let _ = Command::new(BIN)
            .args(["lab", "down", "--lab", lab])
            .output();
        LabGuard(lab)
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let dir = format!("/run/duplex/lab-{}", self.0);
            let script = format!(
                "for f in {dir}/h*/agent.log {dir}/h*/vms/*/serial.log {dir}/h*/vms/*/qemu.log; do echo \"== $f\"; tail -n 40 \"$f\"; done"
            );
            if let Ok(o) = Command::new("sh").arg("-c").arg(script).output() {
                eprintln!("{}", String::from_utf8_lossy(&o.stdout));
            }
        }
        let _ = Command::new(BIN)
            .args(["lab", "down", "--lab", self.0])
            .output();
    }
}

/// Runs `duplex ARGS` against lab `lab`'s controller: (success, stdout, stderr).
#[allow(dead_code)]
pub fn in_lab(lab: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("DUPLEX_LAB", lab)
        .output()
        .expect("run duplex");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`in_lab`] with `-o json`, parsed; panics naming the command if it fails.
#[allow(dead_code)]
pub fn in_lab_json(lab: &str, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let (ok, out, err) = in_lab(lab, &a);
    assert!(ok, "duplex {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// Polls `duplex pair show PAIR` in lab `lab` until the pair is healthy;
/// panics with the last answer if it is not within `within`.
#[allow(dead_code)]
pub fn wait_pair_healthy(lab: &str, pair: &str, within: std::time::Duration) -> serde_json::Value {
    let t0 = std::time::Instant::now();
    loop {
        let p = in_lab_json(lab, &["pair", "show", pair]);
        if p["health"] == "healthy" {
            return p;
        }
        assert!(
            t0.elapsed() < within,
            "pair {pair} not healthy within {within:?}: {p}"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}
