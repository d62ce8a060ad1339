//! The lab's names and addresses, computed from `(lab, hosts, sites)` alone.
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
//!
//! Two sites (`lab up --sites 2`, [`Site`]): hosts `1..=ceil(H/2)` are site
//! `a`, the others site `b`. Site `a` is the lab above (switch `<lab>-sw`,
//! client `<lab>-client`, the management link); site `b` has its own switch
//! `<lab>-swb` (its hosts uplinked there) and client `<lab>-clientb`
//! (`10.i.0.3/24`). The switches are not bridged: each is also a router
//! (`br0` holds `10.i.0.254` in site a, `10.i.0.253` in site b, with proxy
//! ARP), joined by the WAN veth `wan` (`10.i.255.1/30` in `<lab>-sw`,
//! `10.i.255.2/30` in `<lab>-swb`, delay and loss by [`WanSettings`]). Each
//! router has a `/32` route over the WAN for every fixed address of the
//! other site ([`LabPlan::routes_via_wan`]); VM addresses are not routed and
//! stay on-link in each site. In a two-site lab VM numbers stop at
//! [`MAX_VM_TWO_SITES`] (`.253` and `.254` are the routers).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::LabError;
use crate::switch::SwitchKind;

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
/// Highest VM number of a two-site lab: `.253` and `.254` are the routers.
pub const MAX_VM_TWO_SITES: u8 = 152;
/// Most sites a lab has.
pub const MAX_SITES: u8 = 2;
/// The WAN veth in each site's switch namespace.
pub const WAN_IF: &str = "wan";
/// Prefix length of the WAN link.
pub const WAN_PREFIX_LEN: u8 = 30;
/// Default round-trip time of the WAN, ms.
pub const DEFAULT_WAN_RTT_MS: u32 = 40;
/// Longest WAN round-trip time a lab accepts, ms.
pub const MAX_WAN_RTT_MS: u32 = 60_000;
/// Largest WAN loss, percent.
pub const MAX_WAN_LOSS_PCT: f64 = 100.0;

/// A site of a two-site lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Site {
    A,
    B,
}

impl Site {
    pub const ALL: [Site; 2] = [Site::A, Site::B];

    /// `a` or `b`: what its agents pass as `--site`.
    pub fn name(self) -> &'static str {
        match self {
            Site::A => "a",
            Site::B => "b",
        }
    }
    /// The other site.
    pub fn other(self) -> Site {
        match self {
            Site::A => Site::B,
            Site::B => Site::A,
        }
    }
    /// Appended to the switch and client namespace names.
    fn suffix(self) -> &'static str {
        match self {
            Site::A => "",
            Site::B => "b",
        }
    }
    /// Last octet of its client.
    fn client_last(self) -> u8 {
        match self {
            Site::A => 2,
            Site::B => 3,
        }
    }
    /// Last octet of its router (`br0` of its switch).
    fn router_last(self) -> u8 {
        match self {
            Site::A => 254,
            Site::B => 253,
        }
    }
    /// Last octet of its end of the WAN `/30`.
    fn wan_last(self) -> u8 {
        match self {
            Site::A => 1,
            Site::B => 2,
        }
    }
}

impl std::fmt::Display for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Delay and loss of a two-site lab's WAN, applied on both ends (each adds
/// half the round trip).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WanSettings {
    /// Round-trip time added, ms.
    pub rtt_ms: u32,
    /// Frames lost on each end, percent (0..=100).
    pub loss_pct: f64,
}

impl Default for WanSettings {
    fn default() -> Self {
        WanSettings {
            rtt_ms: DEFAULT_WAN_RTT_MS,
            loss_pct: 0.0,
        }
    }
}

impl WanSettings {
    /// Checked settings: RTT up to [`MAX_WAN_RTT_MS`], loss in 0..=100.
    pub fn new(rtt_ms: u32, loss_pct: f64) -> Result<WanSettings, LabError> {
        let w = WanSettings { rtt_ms, loss_pct };
        w.validate()?;
        Ok(w)
    }
    pub fn validate(&self) -> Result<(), LabError> {
        let bad = |reason: String| Err(LabError::InvalidWan { reason });
        if self.rtt_ms > MAX_WAN_RTT_MS {
            return bad(format!(
                "round-trip time {} ms is above {MAX_WAN_RTT_MS} ms",
                self.rtt_ms
            ));
        }
        if !(0.0..=MAX_WAN_LOSS_PCT).contains(&self.loss_pct) {
            return bad(format!(
                "loss {} % is outside 0..={MAX_WAN_LOSS_PCT}",
                self.loss_pct
            ));
        }
        Ok(())
    }
    /// Delay each end adds, microseconds (half the round trip).
    pub fn one_way_us(&self) -> u64 {
        u64::from(self.rtt_ms) * 500
    }
    /// Arguments of `tc qdisc … netem` for one end.
    pub fn netem_args(&self) -> Vec<String> {
        let mut v = vec!["delay".to_string(), format!("{}us", self.one_way_us())];
        if self.loss_pct > 0.0 {
            v.extend(["loss".to_string(), format!("{}%", self.loss_pct)]);
        }
        v
    }
}

impl std::fmt::Display for WanSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ms RTT, {} % loss", self.rtt_ms, self.loss_pct)
    }
}

/// Names and addresses of one lab. Build it with [`LabPlan::new`] (one
/// site) or [`LabPlan::with_sites`].
#[derive(Debug, Clone, PartialEq)]
pub struct LabPlan {
    lab: String,
    index: u8,
    hosts: u8,
    sites: u8,
    wan: WanSettings,
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
    /// Switch end of the uplink veth (in `switch_ns`).
    pub switch_if: String,
    /// The switch namespace of its site.
    pub switch_ns: String,
    /// Its site in a two-site lab (`None`: one site, the controller's default).
    pub site: Option<Site>,
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
            sites: 1,
            wan: WanSettings::default(),
        })
    }

    /// Plans lab `lab` with `hosts` hosts over `sites` sites (1 or 2; two
    /// need two hosts at least). The WAN has [`WanSettings::default`].
    pub fn with_sites(lab: &str, hosts: u8, sites: u8) -> Result<LabPlan, LabError> {
        let mut p = LabPlan::new(lab, hosts)?;
        if !(1..=MAX_SITES).contains(&sites) {
            return Err(LabError::InvalidSites { sites });
        }
        if sites > 1 && hosts < sites {
            return Err(LabError::TooFewHostsForSites { hosts, sites });
        }
        p.sites = sites;
        Ok(p)
    }

    /// The same plan with WAN `wan` (checked; meaningful with two sites).
    pub fn with_wan(mut self, wan: WanSettings) -> Result<LabPlan, LabError> {
        wan.validate()?;
        self.wan = wan;
        Ok(self)
    }

    /// Refuses a switch that cannot serve this plan: the Duplex switch
    /// covers one site.
    pub fn check_switch(&self, kind: SwitchKind) -> Result<(), LabError> {
        if kind == SwitchKind::Duplex && self.two_sites() {
            return Err(LabError::DuplexSwitchOneSite);
        }
        Ok(())
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
    /// Number of sites, 1 or 2.
    pub fn sites(&self) -> u8 {
        self.sites
    }
    pub fn two_sites(&self) -> bool {
        self.sites > 1
    }
    /// The sites: `[A]` or `[A, B]`.
    pub fn site_list(&self) -> Vec<Site> {
        Site::ALL[..usize::from(self.sites)].to_vec()
    }
    /// The WAN's settings; `None` with one site.
    pub fn wan(&self) -> Option<WanSettings> {
        self.two_sites().then_some(self.wan)
    }
    /// The site of host n: with two sites, hosts `1..=ceil(H/2)` are `a`.
    /// `None` if n is not a host.
    pub fn site_of(&self, n: u8) -> Option<Site> {
        if !(1..=self.hosts).contains(&n) {
            return None;
        }
        let in_a = self.hosts.div_ceil(2);
        Some(if self.two_sites() && n > in_a {
            Site::B
        } else {
            Site::A
        })
    }
    /// Host numbers of site `site`.
    pub fn hosts_in(&self, site: Site) -> Vec<u8> {
        (1..=self.hosts)
            .filter(|&n| self.site_of(n) == Some(site))
            .collect()
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

    /// Switch namespace (of site a), `<lab>-sw`.
    pub fn switch_ns(&self) -> String {
        self.site_switch_ns(Site::A)
    }
    /// Client namespace (of site a), `<lab>-client`.
    pub fn client_ns(&self) -> String {
        self.site_client_ns(Site::A)
    }
    /// Switch namespace of `site`: `<lab>-sw`, `<lab>-swb`.
    pub fn site_switch_ns(&self, site: Site) -> String {
        format!("{}-sw{}", self.lab, site.suffix())
    }
    /// Client namespace of `site`: `<lab>-client`, `<lab>-clientb`.
    pub fn site_client_ns(&self, site: Site) -> String {
        format!("{}-client{}", self.lab, site.suffix())
    }
    /// Client address of `site`: `10.i.0.2`, `10.i.0.3`.
    pub fn site_client_ip(&self, site: Site) -> Ipv4Addr {
        self.addr(site.client_last())
    }
    /// Router address of `site` (on its switch's `br0`): `10.i.0.254`, `10.i.0.253`.
    pub fn router_ip(&self, site: Site) -> Ipv4Addr {
        self.addr(site.router_last())
    }
    /// Fixed MAC of `site`'s switch bridge when it routes.
    pub fn router_mac(&self, site: Site) -> String {
        Self::mac_for(self.router_ip(site))
    }
    /// `site`'s end of the WAN: `10.i.255.1`, `10.i.255.2`.
    pub fn wan_ip(&self, site: Site) -> Ipv4Addr {
        Ipv4Addr::new(10, self.index, 255, site.wan_last())
    }
    /// `10.i.255.x/30`.
    pub fn wan_cidr(&self, site: Site) -> String {
        format!("{}/{WAN_PREFIX_LEN}", self.wan_ip(site))
    }
    /// Namespace of the user-space WAN relay, `<lab>-wan` (only where the
    /// kernel has no netem).
    pub fn wan_ns(&self) -> String {
        format!("{}-wan", self.lab)
    }
    /// In `<lab>-wan`, the peer of `site`'s `wan` veth: `wan-a`, `wan-b`.
    pub fn wan_relay_if(&self, site: Site) -> &'static str {
        match site {
            Site::A => "wan-a",
            Site::B => "wan-b",
        }
    }
    /// The addresses `site`'s router sends over the WAN (as `/32` routes
    /// via the other end): every fixed address of the other site. Site a
    /// routes site b's hosts and client; site b routes the management
    /// address and site a's hosts and client. Empty with one site.
    pub fn routes_via_wan(&self, site: Site) -> Vec<Ipv4Addr> {
        if !self.two_sites() {
            return Vec::new();
        }
        let other = site.other();
        let mut v = Vec::new();
        if other == Site::A {
            v.push(self.mgmt_ip());
        }
        v.extend(
            self.hosts_in(other)
                .into_iter()
                .filter_map(|n| self.agent_ip(n)),
        );
        v.push(self.site_client_ip(other));
        v
    }
    /// Namespace of host n, `<lab>-h<n>` (not checked against `hosts`).
    pub fn host_ns(&self, n: u8) -> String {
        format!("{}-h{n}", self.lab)
    }
    /// Every namespace of the lab: switches, hosts, clients (not the WAN
    /// relay's, which exists only without netem).
    pub fn namespaces(&self) -> Vec<String> {
        let sites = self.site_list();
        let mut v: Vec<String> = sites.iter().map(|s| self.site_switch_ns(*s)).collect();
        v.extend((1..=self.hosts).map(|n| self.host_ns(n)));
        v.extend(sites.iter().map(|s| self.site_client_ns(*s)));
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
    /// Address of VM k, `10.i.0.(100+k)`, k in 0..=154 (0..=152 with two
    /// sites).
    pub fn vm_ip(&self, k: u8) -> Option<Ipv4Addr> {
        vm_ip_in(self.index, self.sites, k)
    }

    /// Everything about host n, or `None` if n is not a host.
    pub fn host(&self, n: u8) -> Option<HostPlan> {
        let ip = self.agent_ip(n)?;
        let site = self.site_of(n)?;
        Some(HostPlan {
            n,
            name: format!("h{n}"),
            ns: self.host_ns(n),
            bridge: BRIDGE,
            uplink_if: "uplink",
            switch_if: format!("h{n}"),
            switch_ns: self.site_switch_ns(site),
            site: self.two_sites().then_some(site),
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

/// Address of VM k in a lab of `sites` sites (see [`MAX_VM_TWO_SITES`]).
pub(crate) fn vm_ip_in(index: u8, sites: u8, k: u8) -> Option<Ipv4Addr> {
    let max = if sites > 1 { MAX_VM_TWO_SITES } else { MAX_VM };
    (k <= max).then(|| Ipv4Addr::new(10, index, 0, 100 + k))
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
    fn hosts_split_in_halves() {
        let sites_of = |hosts: u8| -> String {
            let p = LabPlan::with_sites("dx", hosts, 2).unwrap();
            (1..=hosts).map(|n| p.site_of(n).unwrap().name()).collect()
        };
        assert_eq!(sites_of(2), "ab");
        assert_eq!(sites_of(3), "aab");
        assert_eq!(sites_of(4), "aabb");
        assert_eq!(sites_of(5), "aaabb");
        assert_eq!(sites_of(8), "aaaabbbb");
        let p = LabPlan::with_sites("dx", 5, 2).unwrap();
        assert_eq!(p.hosts_in(Site::A), [1, 2, 3]);
        assert_eq!(p.hosts_in(Site::B), [4, 5]);
        assert!(p.site_of(0).is_none() && p.site_of(6).is_none());
        // One site: every host is in a, and no host names a site.
        let p = LabPlan::new("dx", 4).unwrap();
        assert!((1..=4).all(|n| p.site_of(n) == Some(Site::A)));
        assert!(p.host_plans().iter().all(|h| h.site.is_none()));
        assert_eq!(p.site_list(), [Site::A]);
        assert!(p.wan().is_none());
    }

    #[test]
    fn bad_site_counts_rejected() {
        for sites in [0u8, 3, 255] {
            let e = LabPlan::with_sites("dx", 4, sites).unwrap_err();
            assert!(matches!(e, LabError::InvalidSites { .. }), "{sites}: {e}");
        }
        let e = LabPlan::with_sites("dx", 1, 2).unwrap_err();
        assert!(matches!(e, LabError::TooFewHostsForSites { .. }), "{e}");
        assert!(e.to_string().contains("2 hosts at least"), "{e}");
        assert_eq!(LabPlan::with_sites("dx", 1, 1).unwrap().sites(), 1);
        let two = LabPlan::with_sites("dx", 2, 2).unwrap();
        let e = two.check_switch(SwitchKind::Duplex).unwrap_err();
        assert!(
            e.to_string().contains("the Duplex switch covers one site"),
            "{e}"
        );
        assert!(two.check_switch(SwitchKind::Bridge).is_ok());
        let one = LabPlan::new("dx", 2).unwrap();
        assert!(one.check_switch(SwitchKind::Duplex).is_ok());
    }

    #[test]
    fn two_site_names() {
        for name in valid_names() {
            for hosts in 2..=MAX_HOSTS {
                let p = LabPlan::with_sites(&name, hosts, 2).unwrap();
                assert_eq!(p.site_switch_ns(Site::B), format!("{name}-swb"));
                assert_eq!(p.site_client_ns(Site::B), format!("{name}-clientb"));
                assert_eq!(p.switch_ns(), format!("{name}-sw"));
                assert_eq!(p.client_ns(), format!("{name}-client"));
                let mut ns = p.namespaces();
                assert_eq!(ns.len(), hosts as usize + 4);
                ns.push(p.wan_ns());
                let uniq: HashSet<_> = ns.iter().collect();
                assert_eq!(uniq.len(), ns.len(), "{ns:?}");
                for n in &ns {
                    assert!(n.starts_with(&ns_prefix(&name)), "{n}");
                }
                for site in Site::ALL {
                    let mut ifs: Vec<String> =
                        vec![BRIDGE.into(), WAN_IF.into(), p.client_switch_if().into()];
                    if site == Site::A {
                        ifs.push(p.mgmt_switch_if().into());
                    }
                    for h in p.host_plans().iter().filter(|h| h.site == Some(site)) {
                        assert_eq!(h.switch_ns, p.site_switch_ns(site));
                        ifs.push(h.switch_if.clone());
                    }
                    let uniq: HashSet<_> = ifs.iter().collect();
                    assert_eq!(uniq.len(), ifs.len(), "{ifs:?}");
                    assert!(ifs.iter().all(|i| ifname_ok(i)), "{ifs:?}");
                }
                let relay = [p.wan_relay_if(Site::A), p.wan_relay_if(Site::B)];
                assert!(relay[0] != relay[1] && relay.iter().all(|i| ifname_ok(i)));
            }
        }
    }

    #[test]
    fn two_site_addresses_never_collide() {
        for name in ["dx", "lt", "a", "abcdef"] {
            for hosts in 2..=MAX_HOSTS {
                let p = LabPlan::with_sites(name, hosts, 2).unwrap();
                let i = p.index();
                assert_eq!(p.site_client_ip(Site::B), Ipv4Addr::new(10, i, 0, 3));
                assert_eq!(p.router_ip(Site::A), Ipv4Addr::new(10, i, 0, 254));
                assert_eq!(p.router_ip(Site::B), Ipv4Addr::new(10, i, 0, 253));
                assert_eq!(p.wan_cidr(Site::A), format!("10.{i}.255.1/30"));
                assert_eq!(p.wan_cidr(Site::B), format!("10.{i}.255.2/30"));
                let mut all = vec![p.mgmt_ip()];
                for site in Site::ALL {
                    all.extend([p.site_client_ip(site), p.router_ip(site)]);
                }
                all.extend(p.host_plans().iter().map(|h| h.ip));
                for k in 0..=MAX_VM_TWO_SITES {
                    all.push(p.vm_ip(k).unwrap());
                }
                assert!(p.vm_ip(MAX_VM_TWO_SITES + 1).is_none());
                let uniq: HashSet<_> = all.iter().collect();
                assert_eq!(uniq.len(), all.len(), "addresses collide in {name}/{hosts}");
                let macs: HashSet<_> = all.iter().map(|ip| LabPlan::mac_for(*ip)).collect();
                assert_eq!(macs.len(), all.len());
                let net = Prefix::parse(&p.subnet()).unwrap();
                for site in Site::ALL {
                    let wan = Prefix::parse(&p.wan_cidr(site)).unwrap();
                    assert!(!net.contains(&wan) && !wan.contains(&net));
                }
            }
        }
        // One site keeps every VM address.
        assert!(LabPlan::new("dx", 2).unwrap().vm_ip(MAX_VM).is_some());
    }

    #[test]
    fn routes_cover_the_other_site() {
        let p = LabPlan::with_sites("dx", 3, 2).unwrap();
        let ip = |last: u8| Ipv4Addr::new(10, 77, 0, last);
        // Site a: h1, h2, client .2, management .1; site b: h3, client .3.
        assert_eq!(p.routes_via_wan(Site::A), [ip(13), ip(3)]);
        assert_eq!(p.routes_via_wan(Site::B), [ip(1), ip(11), ip(12), ip(2)]);
        assert!(LabPlan::new("dx", 3)
            .unwrap()
            .routes_via_wan(Site::A)
            .is_empty());
        for hosts in 2..=MAX_HOSTS {
            let p = LabPlan::with_sites("lt", hosts, 2).unwrap();
            let (a, b) = (p.routes_via_wan(Site::A), p.routes_via_wan(Site::B));
            // Each fixed address is routed by exactly one router: the one
            // of the site it is not in. VM addresses by neither.
            let mut fixed: Vec<Ipv4Addr> = vec![p.mgmt_ip()];
            fixed.extend(Site::ALL.map(|s| p.site_client_ip(s)));
            fixed.extend(p.host_plans().iter().map(|h| h.ip));
            for f in &fixed {
                assert!(a.contains(f) ^ b.contains(f), "{f} in {a:?} / {b:?}");
            }
            for h in p.host_plans() {
                let other = h.site.unwrap().other();
                assert!(p.routes_via_wan(other).contains(&h.ip));
            }
            assert_eq!(a.len() + b.len(), fixed.len());
            for k in 0..=MAX_VM_TWO_SITES {
                let vm = p.vm_ip(k).unwrap();
                assert!(!a.contains(&vm) && !b.contains(&vm));
            }
        }
    }

    #[test]
    fn wan_settings() {
        let w = WanSettings::default();
        assert_eq!((w.rtt_ms, w.loss_pct), (40, 0.0));
        assert_eq!(w.netem_args(), ["delay", "20000us"]);
        let w = WanSettings::new(41, 0.5).unwrap();
        assert_eq!(w.netem_args(), ["delay", "20500us", "loss", "0.5%"]);
        assert_eq!(WanSettings::new(0, 100.0).unwrap().one_way_us(), 0);
        for (rtt, loss) in [
            (40, f64::NAN),
            (40, -0.1),
            (40, 100.5),
            (40, f64::INFINITY),
            (MAX_WAN_RTT_MS + 1, 0.0),
        ] {
            let e = WanSettings::new(rtt, loss).unwrap_err();
            assert!(
                matches!(e, LabError::InvalidWan { .. }),
                "{rtt}/{loss}: {e}"
            );
        }
        let p = LabPlan::with_sites("dx", 2, 2)
            .unwrap()
            .with_wan(WanSettings::new(100, 1.0).unwrap())
            .unwrap();
        assert_eq!(p.wan().unwrap().rtt_ms, 100);
    }

    #[test]
    fn two_site_hosts() {
        let p = LabPlan::with_sites("dx", 4, 2).unwrap();
        let h = p.host(3).unwrap();
        assert_eq!((h.site, h.switch_ns.as_str()), (Some(Site::B), "dx-swb"));
        assert_eq!(
            (h.switch_if.as_str(), h.ip),
            ("h3", Ipv4Addr::new(10, 77, 0, 13))
        );
        let h = p.host(2).unwrap();
        assert_eq!((h.site, h.switch_ns.as_str()), (Some(Site::A), "dx-sw"));
        assert_eq!(p.router_mac(Site::A), "02:64:78:4d:00:fe");
        assert_eq!(p.wan_ns(), "dx-wan");
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
