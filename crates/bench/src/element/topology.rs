//! The bench's own little network, made afresh and removed when dropped
//! (even when the bench fails): a host namespace with a bridge, and a
//! client namespace on it through a veth pair. Traffic stays inside them.

use duplex_core::mac::Mac;
use std::net::Ipv4Addr;
use std::process::Command;

pub const HOST_NS: &str = "dxbel-h";
pub const CLIENT_NS: &str = "dxbel-c";
pub const BRIDGE: &str = "dxbel-br";
const VETH_HOST: &str = "dxbel-vh";
const VETH_CLIENT: &str = "dxbel-vc";
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 251, 0, 1);

pub struct Topology;

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

fn remove() {
    for ns in [HOST_NS, CLIENT_NS] {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
    let _ = Command::new("ip").args(["link", "del", VETH_HOST]).output();
}

impl Topology {
    pub fn up() -> anyhow::Result<Topology> {
        remove();
        let t = Topology;
        ip(&["netns", "add", HOST_NS])?;
        ip(&["netns", "add", CLIENT_NS])?;
        ip(&["-n", HOST_NS, "link", "set", "lo", "up"])?;
        ip(&["-n", CLIENT_NS, "link", "set", "lo", "up"])?;
        ip(&["-n", HOST_NS, "link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["-n", HOST_NS, "link", "set", BRIDGE, "up"])?;
        ip(&[
            "link",
            "add",
            VETH_HOST,
            "type",
            "veth",
            "peer",
            "name",
            VETH_CLIENT,
        ])?;
        ip(&["link", "set", VETH_HOST, "netns", HOST_NS])?;
        ip(&["link", "set", VETH_CLIENT, "netns", CLIENT_NS])?;
        ip(&[
            "-n", HOST_NS, "link", "set", VETH_HOST, "master", BRIDGE, "up",
        ])?;
        let client = format!("{CLIENT_IP}/24");
        ip(&["-n", CLIENT_NS, "addr", "add", &client, "dev", VETH_CLIENT])?;
        ip(&["-n", CLIENT_NS, "link", "set", VETH_CLIENT, "up"])?;
        Ok(t)
    }

    /// The client reaches `vm_ip` at `mac` without asking (the arms without
    /// a guest answer no ARP).
    pub fn neighbour(&self, vm_ip: Ipv4Addr, mac: Mac) -> anyhow::Result<()> {
        let (ip_s, mac_s) = (vm_ip.to_string(), mac.to_string());
        ip(&[
            "-n",
            CLIENT_NS,
            "neigh",
            "replace",
            &ip_s,
            "lladdr",
            &mac_s,
            "dev",
            VETH_CLIENT,
            "nud",
            "permanent",
        ])
    }

    /// A tap on the bridge nobody holds open (QEMU's own tap backend opens
    /// it by name).
    pub fn plain_tap(&self, name: &str) -> anyhow::Result<()> {
        ip(&["-n", HOST_NS, "tuntap", "add", "dev", name, "mode", "tap"])?;
        ip(&["-n", HOST_NS, "link", "set", name, "master", BRIDGE, "up"])
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        remove();
    }
}
