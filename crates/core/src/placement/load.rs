//! Measured load (S4 in the running cluster): from the agents' usage
//! reports, each host's CPU and memory shares ([`HostLoad`], what
//! [`super::relief`] compares with its marks); from the traffic matrix and
//! where the VMs run, the bytes each rack's uplink carries. Pure: reports
//! and the time in.

use super::headroom::{Headroom, VmUse};
use super::relief::HostLoad;
use super::topology::{LinkConfig, TopologyConfig, GBPS_BYTES};
use super::traffic::{TrafficMatrix, EWMA_ALPHA};
use crate::agent_api::{HostCapacity, HostUsage};
use std::collections::{BTreeMap, BTreeSet};

/// One VM's CPU samples.
#[derive(Debug, Clone, PartialEq)]
struct VmSample {
    host: String,
    cpu_seconds: f64,
    at_ms: u64,
    /// vCPUs busy (CPU seconds per second), smoothed; `None` until two
    /// samples.
    rate: Option<f64>,
    rss_mib: u64,
}

/// Every VM's latest usage, by the host that reported it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageSampler {
    vms: BTreeMap<String, VmSample>,
    /// The VMs each host reported last: a report and a host's load touch
    /// only that host's VMs (no pass over the cluster per heartbeat).
    on_host: BTreeMap<String, BTreeSet<String>>,
}

impl UsageSampler {
    /// Takes `host`'s report at `now_ms`. A VM that moved re-baselines
    /// (its new QEMU counts from zero); a VM this host reported before and
    /// no longer does is forgotten.
    pub fn ingest(&mut self, host: &str, usage: &HostUsage, now_ms: u64) {
        let here: BTreeSet<String> = usage.vms.iter().map(|u| u.vm.clone()).collect();
        let before = self.on_host.insert(host.to_string(), here.clone());
        for gone in before.unwrap_or_default().difference(&here) {
            if self.vms.get(gone).is_some_and(|s| s.host == host) {
                self.vms.remove(gone);
            }
        }
        for u in &usage.vms {
            if !(u.cpu_seconds.is_finite() && u.cpu_seconds >= 0.0) {
                continue;
            }
            let fresh = VmSample {
                host: host.to_string(),
                cpu_seconds: u.cpu_seconds,
                at_ms: now_ms,
                rate: None,
                rss_mib: u.rss_mib,
            };
            let s = self
                .vms
                .entry(u.vm.clone())
                .or_insert_with(|| fresh.clone());
            let dt = now_ms.saturating_sub(s.at_ms) as f64 / 1000.0;
            if s.host != host || u.cpu_seconds < s.cpu_seconds {
                if s.host != host {
                    if let Some(old) = self.on_host.get_mut(&s.host) {
                        old.remove(&u.vm);
                    }
                }
                *s = fresh;
            } else if dt > 0.0 {
                let sample = (u.cpu_seconds - s.cpu_seconds) / dt;
                s.rate = Some(match s.rate {
                    Some(r) => EWMA_ALPHA * sample + (1.0 - EWMA_ALPHA) * r,
                    None => sample,
                });
                (s.cpu_seconds, s.at_ms, s.rss_mib) = (u.cpu_seconds, now_ms, u.rss_mib);
            }
        }
    }

    /// What `hosts` (with their capacity) and the VMs on them use, for
    /// weighing moves.
    pub fn headroom(&self, hosts: &[(String, HostCapacity)]) -> Headroom {
        let vms = hosts.iter().flat_map(|(h, _)| {
            let on = self.on_host.get(h).into_iter().flatten();
            on.filter_map(move |vm| {
                let s = self.vms.get(vm).filter(|s| &s.host == h)?;
                Some(VmUse {
                    vm: vm.clone(),
                    host: h.clone(),
                    cpu: s.rate.unwrap_or(0.0),
                    mem_mib: s.rss_mib,
                })
            })
        });
        Headroom::new(hosts, vms)
    }

    /// vCPUs `vm` keeps busy, once measured twice.
    pub fn vm_cpu(&self, vm: &str) -> Option<f64> {
        self.vms.get(vm)?.rate
    }

    /// Each host's shares of its capacity in use, by what its VMs use
    /// (hosts with no capacity are left out), by name.
    pub fn host_loads(&self, hosts: &[(String, HostCapacity)]) -> Vec<HostLoad> {
        self.headroom(hosts).loads()
    }
}

/// Bytes/s each rack's uplink carries: the traffic between VMs in
/// different racks, counted at both racks (out of one, into the other).
/// VMs whose host or rack is not known are left out.
pub fn uplink_bytes(
    rack_of_host: &BTreeMap<String, String>,
    host_of_vm: &BTreeMap<String, String>,
    matrix: &TrafficMatrix,
) -> BTreeMap<String, f64> {
    let rack = |vm: &str| rack_of_host.get(host_of_vm.get(vm)?);
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for (from, to, rate) in matrix.entries() {
        let (Some(a), Some(b)) = (rack(from), rack(to)) else {
            continue;
        };
        if a != b {
            *out.entry(a.clone()).or_default() += rate;
            *out.entry(b.clone()).or_default() += rate;
        }
    }
    out
}

/// Highest utilization a measured uplink is given (a full link still
/// has a finite cost, so placement can compare two full paths).
pub const MAX_UTILIZATION: f64 = 0.99;

/// `cfg` with each rack's uplinks (links from a switch with hosts to one
/// without) loaded as measured: the rack's `uplink_bytes` shared evenly
/// over its uplinks, as a share of each link's capacity, where that is
/// more than the configured utilization (which may stand for traffic the
/// elements do not see). Links of racks with no measurement keep theirs.
pub fn with_measured_uplinks(
    cfg: &TopologyConfig,
    uplink_bytes: &BTreeMap<String, f64>,
) -> TopologyConfig {
    let racks: std::collections::BTreeSet<&str> =
        cfg.hosts.iter().map(|h| h.attach.as_str()).collect();
    let rack_end =
        |l: &LinkConfig| match (racks.contains(l.a.as_str()), racks.contains(l.b.as_str())) {
            (true, false) => Some(l.a.clone()),
            (false, true) => Some(l.b.clone()),
            _ => None,
        };
    let mut uplinks: BTreeMap<String, usize> = BTreeMap::new();
    for l in &cfg.links {
        if let Some(r) = rack_end(l) {
            *uplinks.entry(r).or_default() += 1;
        }
    }
    let mut out = cfg.clone();
    for l in &mut out.links {
        let Some(r) = rack_end(l) else { continue };
        let (Some(bytes), Some(n)) = (uplink_bytes.get(&r), uplinks.get(&r)) else {
            continue;
        };
        let capacity = l.capacity_gbps * GBPS_BYTES;
        if capacity > 0.0 && bytes.is_finite() {
            let measured = (bytes / *n as f64 / capacity).clamp(0.0, MAX_UTILIZATION);
            l.utilization = l.utilization.max(measured);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_api::VmUsage;

    fn usage(vms: &[(&str, f64, u64)]) -> HostUsage {
        HostUsage {
            vms: vms
                .iter()
                .map(|(vm, cpu, rss)| VmUsage {
                    vm: vm.to_string(),
                    cpu_seconds: *cpu,
                    rss_mib: *rss,
                })
                .collect(),
        }
    }

    const CAP: HostCapacity = HostCapacity {
        vcpus: 4,
        memory_mib: 1000,
    };

    #[test]
    fn cpu_is_a_rate_from_two_reports_and_memory_a_share() {
        let mut s = UsageSampler::default();
        s.ingest("h1", &usage(&[("a", 10.0, 200), ("b", 0.0, 100)]), 0);
        assert_eq!(s.vm_cpu("a"), None, "one sample is no rate");
        s.ingest("h1", &usage(&[("a", 12.0, 200), ("b", 0.5, 100)]), 1000);
        assert_eq!(s.vm_cpu("a"), Some(2.0));
        let l = s.host_loads(&[("h1".into(), CAP), ("h2".into(), CAP)]);
        assert_eq!(l[0].host, "h1");
        assert!((l[0].cpu - 2.5 / 4.0).abs() < 1e-9);
        assert!((l[0].mem - 0.3).abs() < 1e-9);
        assert_eq!((l[1].cpu, l[1].mem), (0.0, 0.0), "h2 runs nothing");
        // Smoothed: a burst moves the rate part of the way.
        s.ingest("h1", &usage(&[("a", 16.0, 200), ("b", 0.5, 100)]), 2000);
        let r = s.vm_cpu("a").unwrap_or(0.0);
        assert!(r > 2.0 && r < 4.0, "{r}");
    }

    #[test]
    fn a_vm_that_moved_or_restarted_counts_afresh_and_a_gone_one_is_forgotten() {
        let mut s = UsageSampler::default();
        s.ingest("h1", &usage(&[("a", 10.0, 200)]), 0);
        s.ingest("h1", &usage(&[("a", 11.0, 200)]), 1000);
        // Moved to h2: its new QEMU counts from 0; no negative rate.
        s.ingest("h2", &usage(&[("a", 0.2, 200)]), 2000);
        assert_eq!(s.vm_cpu("a"), None);
        // h1 no longer reports it: it stays h2's.
        s.ingest("h1", &usage(&[]), 2500);
        s.ingest("h2", &usage(&[("a", 1.2, 200)]), 3000);
        assert_eq!(s.vm_cpu("a"), Some(1.0));
        // A restart on the same host: counters went back.
        s.ingest("h2", &usage(&[("a", 0.1, 200)]), 4000);
        assert_eq!(s.vm_cpu("a"), None);
        // Gone from h2's report: forgotten.
        s.ingest("h2", &usage(&[]), 5000);
        let l = s.host_loads(&[("h2".into(), CAP)]);
        assert_eq!(l[0].mem, 0.0);
        // Nonsense is skipped.
        s.ingest("h2", &usage(&[("x", f64::NAN, 1)]), 6000);
        assert_eq!(s.vm_cpu("x"), None);
    }

    #[test]
    fn uplinks_carry_only_what_crosses_racks() {
        let racks = BTreeMap::from([
            ("h1".to_string(), "r1".to_string()),
            ("h2".into(), "r1".into()),
            ("h3".into(), "r2".into()),
        ]);
        let hosts = BTreeMap::from([
            ("a".to_string(), "h1".to_string()),
            ("b".into(), "h2".into()),
            ("c".into(), "h3".into()),
        ]);
        let mut m = TrafficMatrix::new();
        let _ = m.set_rate("a", "b", 100.0);
        let _ = m.set_rate("a", "c", 10.0);
        let _ = m.set_rate("c", "b", 1.0);
        let _ = m.set_rate("a", "ghost", 1000.0);
        let up = uplink_bytes(&racks, &hosts, &m);
        assert_eq!(up.get("r1"), Some(&11.0));
        assert_eq!(up.get("r2"), Some(&11.0));
        assert_eq!(up.len(), 2);
    }

    #[test]
    fn measured_bytes_load_the_racks_uplinks() {
        use super::super::topology::HostAttach;
        let link = |a: &str, b: &str| LinkConfig {
            a: a.into(),
            b: b.into(),
            capacity_gbps: 8.0,
            utilization: 0.2,
        };
        let cfg = TopologyConfig {
            switches: vec!["s1".into(), "s2".into(), "r1".into(), "r2".into()],
            hosts: vec![
                HostAttach {
                    name: "h1".into(),
                    attach: "r1".into(),
                },
                HostAttach {
                    name: "h2".into(),
                    attach: "r2".into(),
                },
            ],
            links: vec![
                link("r1", "s1"),
                link("s2", "r1"),
                link("r2", "s1"),
                link("s1", "s2"),
            ],
        };
        // r1: 1 GB/s over its two 1 GB/s uplinks; r2 not measured; the
        // spine link is nobody's uplink; a flood is capped.
        let got = with_measured_uplinks(&cfg, &BTreeMap::from([("r1".to_string(), 1e9)]));
        let u: Vec<f64> = got.links.iter().map(|l| l.utilization).collect();
        assert_eq!(u, [0.5, 0.5, 0.2, 0.2]);
        let flood = with_measured_uplinks(&cfg, &BTreeMap::from([("r2".to_string(), 1e12)]));
        assert_eq!(flood.links[2].utilization, MAX_UTILIZATION);
        // Less than configured: the configured share stands.
        let little = with_measured_uplinks(&cfg, &BTreeMap::from([("r2".to_string(), 1e6)]));
        assert_eq!(little.links[2].utilization, 0.2);
        assert!(super::super::Topology::from_config(&got).is_ok());
    }
}
