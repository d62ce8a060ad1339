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
