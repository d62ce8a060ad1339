//! Network namespaces and links, as iproute2 sees them.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::LabError;
use crate::ip::{ip, ip_json};

/// `ip netns exec <ns> <program>`: a command that runs `program` inside
/// namespace `ns`. Add arguments and I/O as usual.
pub fn netns_command(ns: &str, program: impl AsRef<OsStr>) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("ip");
    cmd.arg("netns").arg("exec").arg(ns).arg(program);
    cmd
}

/// Same as [`netns_command`], for `std::process`.
pub(crate) fn netns_std_command(ns: &str, program: impl AsRef<OsStr>) -> std::process::Command {
    let mut cmd = std::process::Command::new("ip");
    cmd.arg("netns").arg("exec").arg(ns).arg(program);
    cmd
}

/// Names from `ip netns list` (each line is `name` or `name (id: N)`).
pub(crate) fn list() -> Result<Vec<String>, LabError> {
    Ok(parse_netns_list(&ip(&["netns", "list"])?))
}

pub(crate) fn parse_netns_list(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Namespaces whose name starts with `prefix`, sorted.
pub(crate) fn list_with_prefix(prefix: &str) -> Result<Vec<String>, LabError> {
    let mut v: Vec<String> = list()?
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect();
    v.sort();
    Ok(v)
}

pub(crate) fn add(ns: &str) -> Result<(), LabError> {
    ip(&["netns", "add", ns]).map(drop)
}

pub(crate) fn delete(ns: &str) -> Result<(), LabError> {
    ip(&["netns", "delete", ns]).map(drop)
}

/// Pids of the processes in namespace `ns` (`ip netns pids`).
pub(crate) fn pids(ns: &str) -> Result<Vec<i32>, LabError> {
    let out = ip(&["netns", "pids", ns])?;
    Ok(out
        .lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
        .collect())
}

/// Runs `sysctl -qw settings…` inside `ns`.
pub(crate) fn sysctl(ns: &str, settings: &[&str]) -> Result<(), LabError> {
    let mut v = vec!["netns", "exec", ns, "sysctl", "-qw"];
    v.extend_from_slice(settings);
    ip(&v).map(drop)
}

/// Whether a link named `name` exists in the root namespace.
pub(crate) fn root_link_exists(name: &str) -> Result<bool, LabError> {
    let links = ip_json(&["link", "show"])?;
    Ok(links
        .as_array()
        .into_iter()
        .flatten()
        .any(|l| l.get("ifname").and_then(|v| v.as_str()) == Some(name)))
}

/// The device the root namespace routes `ip` through (`ip route get`), if any.
pub(crate) fn route_dev(ip_addr: Ipv4Addr) -> Result<Option<String>, LabError> {
    let a = ip_addr.to_string();
    // `ip route get` fails with "Network is unreachable" when nothing routes it.
    let v = match ip_json(&["route", "get", &a]) {
        Ok(v) => v,
        Err(LabError::Command { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(v.as_array()
        .and_then(|a| a.first())
        .and_then(|r| r.get("dev"))
        .and_then(|d| d.as_str())
        .map(str::to_string))
}

/// Refuses unless the root namespace reaches `ip` through lab link `dev`:
/// lab traffic must never leave through the machine's real interfaces.
pub(crate) fn ensure_routed_via(ip_addr: Ipv4Addr, dev: &str) -> Result<(), LabError> {
    match route_dev(ip_addr)? {
        Some(d) if d == dev => Ok(()),
        _ => Err(LabError::NotOurRoute {
            ip: ip_addr.to_string(),
            dev: dev.to_string(),
        }),
    }
}

/// Whether process `pid` lives in namespace `ns`: compares the nsfs inode of
/// `/proc/<pid>/ns/net` with `/run/netns/<ns>`. `None` if it cannot tell
/// (process gone, no permission).
pub(crate) fn pid_in_ns(pid: i32, ns: &str) -> Option<bool> {
    let a = std::fs::metadata(format!("/proc/{pid}/ns/net")).ok()?;
    let b = std::fs::metadata(Path::new("/run/netns").join(ns)).ok()?;
    Some(a.dev() == b.dev() && a.ino() == b.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_netns_list() {
        let out = "dx-h2 (id: 3)\ndx-sw (id: 1)\nother\n\n";
        assert_eq!(parse_netns_list(out), vec!["dx-h2", "dx-sw", "other"]);
    }
}
