//! The lab's names and addresses, computed from `(lab, hosts)` alone.
//!
//! Pure: nothing here touches the system. See `docs/conventions.md`
//! ("Lab addresses") for the address plan this implements:
//!
//! | what | address | where |
//! |---|---|---|
//! | management port | `10.i.0.1/24` | root namespace, veth `<lab>mgmt` |
//! | client | `10.i.0.2/24` | namespace `<lab>-client`, `eth0` |
//! | host n's agent | `10.i.0.(10+n)/24`, port 7070 | namespace `<lab>-h<n>`, on its `br0` |
//! | VM k | `10.i.0.(100+k)` | behind a tap on a host's `br0` |
//!
//! Topology: the switch namespace `<lab>-sw` holds a bridge `br0`. Each host
//! namespace has its own `br0` (holding the host address; the agent enslaves
//! VM taps to it), uplinked by a veth pair (`uplink` in the host namespace,
//! `h<n>` in the switch namespace). The client's veth is `eth0` in the client
//! namespace and `client` in the switch namespace; the management veth is
//! `<lab>mgmt` in the root namespace and `mgmt` in the switch namespace.
//! Veth pairs are created directly in their namespaces, so only `<lab>mgmt`
//! ever appears in the root namespace.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::error::LabError;

/// The default lab; its index is fixed by the conventions.
pub const DEFAULT_LAB: &str = "dx";
/// Index of the default lab `dx`.
pub const DEFAULT_LAB_INDEX: u8 = 77;
/// Smallest index a lab can get.
pub const MIN_INDEX: u8 = 20;
/// Largest index a lab can get.
pub const MAX_INDEX: u8 = 250;
/// Host counts a lab accepts.
pub const MAX_HOSTS: u8 = 8;
/// Longest lab name.
pub const MAX_LAB_NAME: usize = 6;
/// TCP port of every host's agent.
pub const AGENT_PORT: u16 = 7070;
/// Prefix length of the lab segment.
pub const PREFIX_LEN: u8 = 24;
/// Bridge name inside the switch namespace and inside every host namespace.
pub const BRIDGE: &str = "br0";
/// Root of all lab state directories.
pub const RUN_DIR: &str = "/run/duplex";
/// Highest VM number: `10.i.0.(100+k)` must stay below the broadcast address.
pub const MAX_VM: u8 = 154;

/// Names and addresses of one lab. Build it with [`LabPlan::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabPlan {
    lab: String,
    index: u8,
    hosts: u8,
}

/// Names and addresses of one host of a lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlan {
    /// 1-based host number.
    pub n: u8,
    /// Agent name, `h<n>`.
    pub name: String,
    /// Namespace, `<lab>-h<n>`.
    pub ns: String,
    /// Bridge inside the host namespace (holds `ip`; VM taps join it).
    pub bridge: &'static str,
    /// Host end of the uplink veth (in `ns`, enslaved to `bridge`).
    pub uplink_if: &'static str,
    /// Switch end of the uplink veth (in the switch namespace).
    pub switch_if: String,
    /// Agent address, `10.i.0.(10+n)`.
    pub ip: Ipv4Addr,
    /// Fixed MAC of the host bridge, so it does not change as taps join.
    pub bridge_mac: String,
    /// `ip:7070`.
    pub listen: String,
    /// `https://ip:7070`.
    pub url: String,
    /// `/run/duplex/lab-<lab>/h<n>`.
    pub data_dir: PathBuf,
}

impl LabPlan {
    /// Plans lab `lab` with `hosts` hosts (1..=8).
    pub fn new(lab: &str, hosts: u8) -> Result<LabPlan, LabError> {
        validate_lab_name(lab)?;
        if !(1..=MAX_HOSTS).contains(&hosts) {
            return Err(LabError::InvalidHosts { hosts });
        }
        Ok(LabPlan {
            lab: lab.to_string(),
            index: lab_index(lab),
            hosts,
        })
    }

    pub fn lab(&self) -> &str {
        &self.lab
    }
    /// The `i` of `10.i.0.0/24`.
    pub fn index(&self) -> u8 {
        self.index
    }
    pub fn hosts(&self) -> u8 {
        self.hosts
    }
    /// Bridge name in the switch and every host namespace (`br0`).
    pub fn bridge(&self) -> &'static str {
        BRIDGE
    }

    /// Network address of the segment, `10.i.0.0`.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.index, 0, 0)
    }
    /// `10.i.0.0/24`.
    pub fn subnet(&self) -> String {
        format!("{}/{PREFIX_LEN}", self.network())
    }
    fn addr(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.index, 0, last)
    }
    /// `a.b.c.d/24` for an address of this lab.
    pub fn cidr(ip: Ipv4Addr) -> String {
        format!("{ip}/{PREFIX_LEN}")
    }
    /// Locally administered MAC derived from an address of this lab.
    pub fn mac_for(ip: Ipv4Addr) -> String {
        let o = ip.octets();
        format!("02:64:78:{:02x}:{:02x}:{:02x}", o[1], o[2], o[3])
    }

    /// Switch namespace, `<lab>-sw`.
    pub fn switch_ns(&self) -> String {
        format!("{}-sw", self.lab)
    }
    /// Client namespace, `<lab>-client`.
    pub fn client_ns(&self) -> String {
        format!("{}-client", self.lab)
    }
    /// Namespace of host n, `<lab>-h<n>` (not checked against `hosts`).
    pub fn host_ns(&self, n: u8) -> String {
        format!("{}-h{n}", self.lab)
    }
    /// Every namespace of the lab: switch, hosts, client.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v = vec![self.switch_ns()];
        v.extend((1..=self.hosts).map(|n| self.host_ns(n)));
        v.push(self.client_ns());
        v
    }

    /// Root-namespace end of the management veth, `<lab>mgmt`.
    pub fn mgmt_if(&self) -> String {
        mgmt_if(&self.lab)
    }
    /// Switch end of the management veth.
    pub fn mgmt_switch_if(&self) -> &'static str {
        "mgmt"
    }
    /// `10.i.0.1`, in the root namespace.
    pub fn mgmt_ip(&self) -> Ipv4Addr {
        self.addr(1)
    }
    pub fn mgmt_mac(&self) -> String {
        Self::mac_for(self.mgmt_ip())
    }

    /// Client end of the client veth (in the client namespace).
    pub fn client_if(&self) -> &'static str {
        "eth0"
    }
    /// Switch end of the client veth.
    pub fn client_switch_if(&self) -> &'static str {
        "client"
    }
    /// `10.i.0.2`.
    pub fn client_ip(&self) -> Ipv4Addr {
        self.addr(2)
    }
    pub fn client_mac(&self) -> String {
        Self::mac_for(self.client_ip())
    }

    /// Address of host n's agent, `10.i.0.(10+n)`, or `None` if n is not a host.
    pub fn agent_ip(&self, n: u8) -> Option<Ipv4Addr> {
        (1..=self.hosts).contains(&n).then(|| self.addr(10 + n))
    }
    /// `https://10.i.0.(10+n):7070`.
    pub fn agent_url(&self, n: u8) -> Option<String> {
        self.agent_ip(n)
            .map(|ip| format!("https://{ip}:{AGENT_PORT}"))
    }
    /// Address of VM k, `10.i.0.(100+k)`, k in 0..=154.
    pub fn vm_ip(&self, k: u8) -> Option<Ipv4Addr> {
        vm_ip(self.index, k)
    }

    /// Everything about host n, or `None` if n is not a host.
    pub fn host(&self, n: u8) -> Option<HostPlan> {
        let ip = self.agent_ip(n)?;
        Some(HostPlan {
            n,
            name: format!("h{n}"),
            ns: self.host_ns(n),
            bridge: BRIDGE,
            uplink_if: "uplink",
            switch_if: format!("h{n}"),
            ip,
            bridge_mac: Self::mac_for(ip),
            listen: format!("{ip}:{AGENT_PORT}"),
            url: format!("https://{ip}:{AGENT_PORT}"),
            data_dir: self.state_dir().join(format!("h{n}")),
        })
    }
    /// All hosts, 1..=hosts.
    pub fn host_plans(&self) -> Vec<HostPlan> {
        (1..=self.hosts).filter_map(|n| self.host(n)).collect()
    }

    /// `/run/duplex/lab-<lab>`.
    pub fn state_dir(&self) -> PathBuf {
        state_dir(&self.lab)
    }
    /// `/run/duplex/lab-<lab>/state.json`.
    pub fn state_file(&self) -> PathBuf {
        state_file(&self.lab)
    }
}

/// `/run/duplex/lab-<lab>` (lab not validated).
pub(crate) fn state_dir(lab: &str) -> PathBuf {
    PathBuf::from(RUN_DIR).join(format!("lab-{lab}"))
}

pub(crate) fn state_file(lab: &str) -> PathBuf {
    state_dir(lab).join("state.json")
}

pub(crate) fn mgmt_if(lab: &str) -> String {
    format!("{lab}mgmt")
}

/// Prefix every namespace of lab `lab` starts with. Lab names contain no
/// `-`, so `dx-` never matches a namespace of lab `dx2`.
pub(crate) fn ns_prefix(lab: &str) -> String {
    format!("{lab}-")
}

pub(crate) fn vm_ip(index: u8, k: u8) -> Option<Ipv4Addr> {
    (k <= MAX_VM).then(|| Ipv4Addr::new(10, index, 0, 100 + k))
}

/// Checks a lab name: 1..=6 characters of `[a-z0-9]`, starting with a letter.
pub fn validate_lab_name(lab: &str) -> Result<(), LabError> {
    let bad = |reason: &str| {
        Err(LabError::InvalidName {
            name: lab.to_string(),
            reason: reason.to_string(),
        })
    };
    if lab.is_empty() {
        return bad("it is empty");
    }
    if lab.len() > MAX_LAB_NAME {
        return bad("it is longer than 6 characters");
    }
    if !lab
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return bad("only a-z and 0-9 are allowed");
    }
    if !lab.as_bytes()[0].is_ascii_lowercase() {
        return bad("it must start with a letter");
    }
    Ok(())
}

/// The lab index `i` of `10.i.0.0/24`.
///
/// `dx` is 77 (conventions). Any other name gets a number in 20..=250 other
/// than 77: the 32-bit FNV-1a hash of the name's bytes (offset basis
/// `0x811c9dc5`, prime `0x01000193`), `h % 230` mapped onto 20..=249 and
/// every value from 77 up shifted by one. Stable across builds and machines;
/// two labs other than `dx` may share an index (`up` refuses if the subnet is
/// already in use).
pub fn lab_index(lab: &str) -> u8 {
    if lab == DEFAULT_LAB {
        return DEFAULT_LAB_INDEX;
    }
    let h = fnv1a32(lab.as_bytes());
    // h % 230 < 230, so the sum is at most 249 + 1 = 250 and fits a u8.
    let v = MIN_INDEX as u32 + h % 230;
    let v = if v >= DEFAULT_LAB_INDEX as u32 {
        v + 1
    } else {
        v
    };
    v as u8
}

fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// An IPv4 prefix as iproute2 prints it (`10.1.0.0/24`, `10.1.0.5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Prefix {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Prefix {
    pub fn parse(s: &str) -> Option<Prefix> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, l.parse::<u8>().ok()?),
            None => (s, 32),
        };
        if l > 32 {
            return None;
        }
        Some(Prefix {
            addr: a.parse().ok()?,
            len: l,
        })
    }
    fn mask(len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            u32::MAX << (32 - len as u32)
        }
    }
    /// Whether `other` lies entirely inside `self`.
    pub fn contains(&self, other: &Prefix) -> bool {
        other.len >= self.len
            && (u32::from(other.addr) & Self::mask(self.len))
                == (u32::from(self.addr) & Self::mask(self.len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Linux limit on interface names (IFNAMSIZ - 1).
    const IFNAME_MAX: usize = 15;

    fn valid_names() -> Vec<String> {
        let first: Vec<char> = ('a'..='z').collect();
        let rest: Vec<char> = ('a'..='z').chain('0'..='9').collect();
        let mut v: Vec<String> = first.iter().map(|c| c.to_string()).collect();
        for a in &first {
            for b in &rest {
                v.push(format!("{a}{b}"));
            }
        }
        v.extend(
            ["dx", "lt", "abcdef", "z99999", "lab1", "demo", "a0a0a0"]
                .iter()
                .map(|s| s.to_string()),
        );
        v
    }

    fn ifname_ok(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= IFNAME_MAX
            && name != "."
            && name != ".."
            && !name.contains(['/', ':'])
            && !name.chars().any(char::is_whitespace)
    }

    #[test]
    fn default_lab_is_77() {
        assert_eq!(lab_index("dx"), 77);
        assert_eq!(LabPlan::new("dx", 3).unwrap().subnet(), "10.77.0.0/24");
    }

    #[test]
    fn index_is_pinned() {
        // Changing the hash would move existing labs; these pin it.
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        let got: Vec<(&str, u8)> = PINNED.iter().map(|(n, _)| (*n, lab_index(n))).collect();
        assert_eq!(got, PINNED.to_vec());
    }
    const PINNED: [(&str, u8); 5] = [
        ("dx", 77),
        ("a", 81),
        ("lt", 94),
        ("demo", 125),
        ("abcdef", 227),
    ];

    #[test]
    fn index_range_and_77_reserved() {
        let mut seen = HashSet::new();
        for name in valid_names() {
            let i = lab_index(&name);
            assert!((MIN_INDEX..=MAX_INDEX).contains(&i), "{name} -> {i}");
            if name != "dx" {
                assert_ne!(i, 77, "{name} must not take dx's index");
            }
            assert_eq!(i, lab_index(&name), "stable");
            seen.insert(i);
        }
        // The hash spreads: nearly every value of 20..=250 is hit.
        assert!(seen.len() > 200, "only {} distinct indexes", seen.len());
    }

    #[test]
    fn names_are_valid_and_short() {
        for name in valid_names() {
            for hosts in 1..=MAX_HOSTS {
                let p = LabPlan::new(&name, hosts).unwrap();
                let mut ifs_root = vec![p.mgmt_if()];
                let mut ifs_sw = vec![
                    p.bridge().to_string(),
                    p.mgmt_switch_if().into(),
                    p.client_switch_if().into(),
                ];
                let ifs_client = [p.client_if().to_string()];
                for h in p.host_plans() {
                    ifs_sw.push(h.switch_if.clone());
                    let ifs_host = [h.bridge.to_string(), h.uplink_if.to_string()];
                    for i in &ifs_host {
                        assert!(ifname_ok(i), "{i}");
                    }
                    assert_ne!(ifs_host[0], ifs_host[1]);
                }
                ifs_root.push("lo".into());
                for i in ifs_root.iter().chain(&ifs_sw).chain(&ifs_client) {
                    assert!(ifname_ok(i), "bad interface name {i:?}");
                }
                let uniq: HashSet<_> = ifs_sw.iter().collect();
                assert_eq!(uniq.len(), ifs_sw.len(), "switch names collide: {ifs_sw:?}");
                let ns = p.namespaces();
                assert_eq!(ns.len(), hosts as usize + 2);
                let uniq: HashSet<_> = ns.iter().collect();
                assert_eq!(uniq.len(), ns.len());
                for n in &ns {
                    assert!(n.starts_with(&ns_prefix(&name)), "{n}");
                    assert!(n.len() <= 6 + 7, "{n}");
                    assert!(!n.contains('/'));
                }
            }
        }
    }

    #[test]
    fn addresses_never_collide() {
        for name in valid_names() {
            for hosts in 1..=MAX_HOSTS {
                let p = LabPlan::new(&name, hosts).unwrap();
                let i = p.index();
                let net = Prefix::parse(&p.subnet()).unwrap();
                assert_eq!(p.mgmt_ip(), Ipv4Addr::new(10, i, 0, 1));
                assert_eq!(p.client_ip(), Ipv4Addr::new(10, i, 0, 2));
                let mut all = vec![p.mgmt_ip(), p.client_ip()];
                for h in p.host_plans() {
                    assert_eq!(h.ip, Ipv4Addr::new(10, i, 0, 10 + h.n));
                    assert_eq!(h.listen, format!("10.{i}.0.{}:7070", 10 + h.n));
                    assert_eq!(h.url, format!("https://10.{i}.0.{}:7070", 10 + h.n));
                    assert_eq!(p.agent_url(h.n).unwrap(), h.url);
                    all.push(h.ip);
                }
                for k in 0..=MAX_VM {
                    all.push(p.vm_ip(k).unwrap());
                }
                let uniq: HashSet<_> = all.iter().collect();
                assert_eq!(uniq.len(), all.len(), "addresses collide in {name}/{hosts}");
                let macs: HashSet<_> = all.iter().map(|ip| LabPlan::mac_for(*ip)).collect();
                assert_eq!(macs.len(), all.len());
                for ip in &all {
                    let o = ip.octets();
                    assert!(net.contains(&Prefix { addr: *ip, len: 32 }));
                    assert!(o[3] != 0 && o[3] != 255, "{ip} is network/broadcast");
                }
            }
        }
    }

    #[test]
    fn out_of_range_hosts_and_vms() {
        let p = LabPlan::new("lt", 3).unwrap();
        assert!(p.agent_ip(0).is_none());
        assert!(p.agent_ip(4).is_none());
        assert!(p.host(4).is_none());
        assert_eq!(p.vm_ip(154).unwrap().octets()[3], 254);
        assert!(p.vm_ip(155).is_none());
        assert!(p.vm_ip(255).is_none());
    }

    #[test]
    fn bad_names_rejected() {
        for bad in [
            "", "abcdefg", "Dx", "DX", "1ab", "9", "a-b", "a_b", "a.b", "a b", "dx/", "é", "ab\n",
            "-ab", "lab!",
        ] {
            let e = LabPlan::new(bad, 1).unwrap_err();
            assert!(matches!(e, LabError::InvalidName { .. }), "{bad:?}: {e}");
            assert!(e.to_string().contains("lab name"), "{e}");
        }
    }

    #[test]
    fn bad_host_counts_rejected() {
        for hosts in [0u8, 9, 10, 255] {
            let e = LabPlan::new("dx", hosts).unwrap_err();
            assert!(matches!(e, LabError::InvalidHosts { .. }), "{hosts}");
        }
        for hosts in 1..=8 {
            assert_eq!(LabPlan::new("dx", hosts).unwrap().hosts(), hosts);
        }
    }

    #[test]
    fn paths_and_names() {
        let p = LabPlan::new("dx", 2).unwrap();
        assert_eq!(p.switch_ns(), "dx-sw");
        assert_eq!(p.client_ns(), "dx-client");
        assert_eq!(p.host_ns(2), "dx-h2");
        assert_eq!(p.mgmt_if(), "dxmgmt");
        assert_eq!(p.bridge(), "br0");
        assert_eq!(
            p.state_file(),
            PathBuf::from("/run/duplex/lab-dx/state.json")
        );
        let h = p.host(2).unwrap();
        assert_eq!(h.data_dir, PathBuf::from("/run/duplex/lab-dx/h2"));
        assert_eq!(h.name, "h2");
        assert_eq!(h.bridge_mac, "02:64:78:4d:00:0c");
        assert_eq!(p.mgmt_mac(), "02:64:78:4d:00:01");
    }

    #[test]
    fn prefixes() {
        let net = Prefix::parse("10.5.0.0/24").unwrap();
        assert!(net.contains(&Prefix::parse("10.5.0.7").unwrap()));
        assert!(net.contains(&Prefix::parse("10.5.0.128/25").unwrap()));
        assert!(!net.contains(&Prefix::parse("10.5.1.0/24").unwrap()));
        assert!(!net.contains(&Prefix::parse("10.0.0.0/8").unwrap()));
        assert!(Prefix::parse("10.0.0.0/8").unwrap().contains(&net));
        assert!(Prefix::parse("0.0.0.0/0").unwrap().contains(&net));
        assert!(Prefix::parse("10.0.0.0/33").is_none());
        assert!(Prefix::parse("default").is_none());
    }
}
