use std::net::SocketAddr;
use std::path::PathBuf;

/// How the agent picks QEMU's accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelChoice {
    /// KVM if a probe boot succeeds (cached), TCG otherwise.
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub name: String,
    pub listen: SocketAddr,
    /// Per-VM directories (sockets, logs) live under `<data_dir>/vms/`.
    pub data_dir: PathBuf,
    pub image_dir: PathBuf,
    pub cache_dir: PathBuf,
    /// Bridge the VM taps join.
    pub bridge: String,
    pub accel: AccelChoice,
    pub qemu: PathBuf,
    /// The unprivileged user QEMU runs as (`--qemu-user`); `None`: as the
    /// agent (root).
    pub qemu_user: Option<duplex_qemu::runas::RunAs>,
    /// Report to (and register with) a controller; standalone if `None`.
    pub controller: Option<ControllerConfig>,
    /// This agent's TLS bundle (`duplex pki issue agent <name>`): it
    /// serves with it, and presents it to the controller and to peers.
    pub tls: duplex_tls::Bundle,
    /// Guests may be sent `inject_fault` (`--allow-faults`: labs, drills).
    pub allow_faults: bool,
    /// S2 embodiment B: the interface towards the Duplex switch that holds
    /// replicated VMs' output (`--output-switch`); the agent sends it its
    /// epoch messages there. `None`: VMs hold their output here only.
    pub output_switch: Option<String>,
    /// The site (data centre) this host is in, reported to the controller
    /// (`--site`, checked by [`check_site`]); `None`: the controller's
    /// default site.
    pub site: Option<String>,
}

/// Longest site name.
pub const MAX_SITE_NAME: usize = 32;

/// Checks a site name: 1..=32 characters of `[a-z0-9-]`.
pub fn check_site(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_SITE_NAME {
        return Err(format!(
            "site `{name}`: a site name has 1 to {MAX_SITE_NAME} characters, not {}",
            name.len()
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!(
            "site `{name}`: only a-z, 0-9 and '-' are allowed in a site name"
        ));
    }
    Ok(())
}

/// Where and how the agent reports to its controller (`--controller`).
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Base URLs of the controller's instances, e.g.
    /// `https://10.77.0.1:7080`: one, or several that stand by for one
    /// another (reports go to whichever leads). Checked by the reporter.
    pub urls: Vec<String>,
    /// URL the controller reaches this agent at; `https://<listen>` if absent.
    pub advertise: Option<String>,
    /// Memory to offer for VMs (MiB); MemTotal minus 1024 MiB if absent.
    pub memory_mib: Option<u64>,
    /// vCPUs to offer; the number of CPUs if absent.
    pub vcpus: Option<u32>,
    /// Fence itself after this long without an accepted report
    /// (`crate::self_fence`); `None`: never.
    pub self_fence_ms: Option<u64>,
}

impl ControllerConfig {
    /// The entries of a `--controller` list: comma-separated, surrounding
    /// spaces dropped. Empty entries are kept, for the reporter to refuse
    /// by position.
    pub fn split_urls(list: &str) -> Vec<String> {
        list.split(',').map(|s| s.trim().to_string()).collect()
    }
}

/// A configuration for tests: everything under `dir`, no controller.
#[cfg(test)]
pub(crate) fn test_config(dir: &std::path::Path) -> AgentConfig {
    AgentConfig {
        name: "host-a".into(),
        listen: "127.0.0.1:7070".parse().unwrap(),
        data_dir: dir.into(),
        image_dir: dir.into(),
        cache_dir: dir.into(),
        bridge: "br0".into(),
        accel: AccelChoice::Tcg,
        qemu: "qemu-system-x86_64".into(),
        qemu_user: None,
        controller: None,
        tls: duplex_tls::Bundle::new(dir.join("tls")),
        allow_faults: false,
        output_switch: None,
        site: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_names() {
        for ok in ["a", "b", "default", "dc-1", "0", &"x".repeat(MAX_SITE_NAME)] {
            assert!(check_site(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "A",
            "a b",
            "a_b",
            "é",
            "a/b",
            &"x".repeat(MAX_SITE_NAME + 1),
        ] {
            let e = check_site(bad).unwrap_err();
            assert!(e.contains("site"), "{bad}: {e}");
        }
    }
}
