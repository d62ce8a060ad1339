//! What the engine answers: the impact factor of a host, a decision, and
//! the full explanation behind `duplex placement explain VM`.

use super::cluster::HostIx;
use super::params::Params;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// The migration impact factor of one host for one VM, term by term.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Factor {
    /// Σ_peers rate × hops from this host to the peer's host [B/s·hop].
    pub traffic: f64,
    /// Σ_peers rate × congestion of the path to the peer's host [B/s].
    pub utilization: f64,
    /// Bytes the pre-copy migration would move (0 when staying or creating).
    pub memory_bytes: f64,
    /// Links between the current host and this one (0 when staying or creating).
    pub memory_hops: u8,
    /// False when pre-copy cannot converge on this path (memory_bytes is a penalty).
    pub converges: bool,
    /// Weighted sum: lowest wins.
    pub total: f64,
}

/// The first set of constraints, in the order they are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    CurrentHost,
    Excluded,
    NotIncluded,
    HostState,
    Site,
    AntiAffinity,
    Capacity,
    MigrationLimit,
}

impl Filter {
    pub const ALL: [Filter; 8] = [
        Filter::CurrentHost,
        Filter::Excluded,
        Filter::NotIncluded,
        Filter::HostState,
        Filter::Site,
        Filter::AntiAffinity,
        Filter::Capacity,
        Filter::MigrationLimit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Filter::CurrentHost => "current host",
            Filter::Excluded => "excluded",
            Filter::NotIncluded => "not included",
            Filter::HostState => "host state",
            Filter::Site => "site",
            Filter::AntiAffinity => "anti-affinity",
            Filter::Capacity => "capacity",
            Filter::MigrationLimit => "migration limit",
        }
    }
}

/// A host's filter verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail { filter: Filter, reason: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostVerdict {
    pub host: String,
    pub rack: String,
    pub verdict: Verdict,
    /// Computed for every host, passing or not (for the current host: the
    /// cost of staying).
    pub factor: Factor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Move a running VM (memory term counts).
    Migrate,
    /// Create a VM (no memory term, no migration limit).
    Create,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerTraffic {
    pub vm: String,
    pub host: Option<String>,
    /// Both directions.
    pub bytes_per_s: f64,
}

/// Everything behind one decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub vm: String,
    pub mode: Mode,
    pub current_host: Option<String>,
    /// The passing host with the lowest total (ties: first by name), if any.
    pub chosen: Option<String>,
    pub chosen_factor: Option<Factor>,
    /// Factor of the current host (cost of not moving).
    pub stay: Option<Factor>,
    /// Incoming bytes/s (from VMs and external peers).
    pub incoming_bytes_per_s: f64,
    pub peers: Vec<PeerTraffic>,
    /// Every host of the cluster, in name order.
    pub hosts: Vec<HostVerdict>,
    pub params: Params,
}

/// Result of a decision by index (no strings: the hot path).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    pub host: HostIx,
    pub factor: Factor,
    pub stay: Option<Factor>,
}

impl Choice {
    /// True when moving lowers the factor below staying (always for a creation).
    pub fn improves(&self) -> bool {
        match self.stay {
            Some(s) => self.factor.total < s.total,
            None => true,
        }
    }
}

/// A decision with names, for callers and the CLI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub vm: String,
    pub from: Option<String>,
    pub to: String,
    pub factor: Factor,
    pub stay: Option<Factor>,
}

impl Decision {
    pub fn improves(&self) -> bool {
        match self.stay {
            Some(s) => self.factor.total < s.total,
            None => true,
        }
    }
}

/// Network cost of the whole placement (each talking pair counted once).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkCost {
    /// Σ_pairs rate × hops [B/s·hop].
    pub traffic_hops: f64,
    /// Bytes/s between VMs in different racks.
    pub cross_rack_bps: f64,
    /// Bytes/s between VMs on different hosts.
    pub cross_host_bps: f64,
    /// Bytes/s between placed VMs.
    pub total_bps: f64,
}

fn si(x: f64) -> String {
    let a = x.abs();
    if a >= 1e12 {
        format!("{:.2}T", x / 1e12)
    } else if a >= 1e9 {
        format!("{:.2}G", x / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if a >= 1e3 {
        format!("{:.2}k", x / 1e3)
    } else {
        format!("{x:.2}")
    }
}

impl Explanation {
    /// Human-readable table: passing hosts by factor, then the others.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "VM `{}` ({}), on {}; incoming {}B/s",
            self.vm,
            match self.mode {
                Mode::Migrate => "migrate",
                Mode::Create => "create",
            },
            self.current_host.as_deref().unwrap_or("no host"),
            si(self.incoming_bytes_per_s)
        );
        match (&self.chosen, &self.chosen_factor) {
            (Some(h), Some(f)) => {
                let _ = write!(s, "chosen: {h} (factor {})", si(f.total));
                if let Some(st) = &self.stay {
                    let _ = write!(
                        s,
                        "; staying costs {} ({})",
                        si(st.total),
                        if f.total < st.total {
                            "moving helps"
                        } else {
                            "moving does not help"
                        }
                    );
                }
                s.push('\n');
            }
            _ => s.push_str("chosen: none (no host passes the filters)\n"),
        }
        if !self.peers.is_empty() {
            s.push_str("peers:\n");
            for p in &self.peers {
                let _ = writeln!(
                    s,
                    "  {:<20} {:>10}B/s  on {}",
                    p.vm,
                    si(p.bytes_per_s),
                    p.host.as_deref().unwrap_or("-")
                );
            }
        }
        let _ = writeln!(
            s,
            "{:<20} {:<12} {:>12} {:>12} {:>12} {:>5} {:>12}  verdict",
            "host", "rack", "total", "traffic", "util", "hops", "mem bytes"
        );
        let mut rows: Vec<&HostVerdict> = self.hosts.iter().collect();
        rows.sort_by(|a, b| {
            let pa = matches!(a.verdict, Verdict::Pass);
            let pb = matches!(b.verdict, Verdict::Pass);
            pb.cmp(&pa)
                .then(a.factor.total.total_cmp(&b.factor.total))
                .then(a.host.cmp(&b.host))
        });
        for r in rows {
            let f = &r.factor;
            let verdict = match &r.verdict {
                Verdict::Pass => "pass".to_string(),
                Verdict::Fail { filter, reason } => format!("{}: {reason}", filter.as_str()),
            };
            let _ = writeln!(
                s,
                "{:<20} {:<12} {:>12} {:>12} {:>12} {:>5} {:>12}{} {verdict}",
                r.host,
                r.rack,
                si(f.total),
                si(f.traffic),
                si(f.utilization),
                f.memory_hops,
                si(f.memory_bytes),
                if f.converges { " " } else { "!" },
            );
        }
        s
    }
}
