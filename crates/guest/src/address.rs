//! The service address on eth0: claimed (added + gratuitous ARP) when the
//! VM becomes ACT, released before it stops being ACT.

use crate::state::PairConfig;
use std::process::{Command, Stdio};

const IFACE: &str = "eth0";

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub fn claim(c: &PairConfig) -> Result<(), String> {
    let cidr = format!("{}/{}", c.vip, c.vip_prefix_len);
    match ip(&["addr", "add", &cidr, "dev", IFACE]) {
        Ok(()) => {}
        Err(e) if e.contains("File exists") => {}
        Err(e) => return Err(e),
    }
    // Unsolicited ARP so neighbours learn the new holder at once; arping
    // waits for its own timeout, so it runs detached.
    let vip = c.vip.to_string();
    Command::new("arping")
        .args(["-U", "-c", "2", "-w", "1", "-I", IFACE, "-s", &vip, &vip])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(|_| ())
        .map_err(|e| format!("arping: {e}"))
}

pub fn release(c: &PairConfig) -> Result<(), String> {
    let cidr = format!("{}/{}", c.vip, c.vip_prefix_len);
    match ip(&["addr", "del", &cidr, "dev", IFACE]) {
        Ok(()) => Ok(()),
        Err(e) if e.contains("Cannot assign") || e.contains("not found") => Ok(()),
        Err(e) => Err(e),
    }
}
