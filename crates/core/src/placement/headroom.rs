//! What moving a VM does to the hosts' measured loads: the rebalancer's
//! check that a target stays below the low mark with the VM on it (else a
//! relieved host's VM would overload its target, which would give it back:
//! oscillation), and its booking of each move within a pass. Pure.

use super::relief::HostLoad;
use crate::agent_api::HostCapacity;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
struct Used {
    /// vCPUs busy.
    cpu: f64,
    mem_mib: u64,
    cap: HostCapacity,
}

impl Used {
    fn peak(&self) -> f64 {
        let cpu = self.cpu / f64::from(self.cap.vcpus.max(1));
        let mem = self.mem_mib as f64 / self.cap.memory_mib.max(1) as f64;
        cpu.max(mem)
    }
}

/// One VM's measured use, where it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct VmUse {
    pub vm: String,
    pub host: String,
    /// vCPUs busy.
    pub cpu: f64,
    pub mem_mib: u64,
}

/// The measured hosts and VMs, with moves booked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Headroom {
    hosts: BTreeMap<String, Used>,
    vms: BTreeMap<String, VmUse>,
}

impl Headroom {
    /// Hosts (with their capacity) and the VMs measured on them.
    pub fn new(hosts: &[(String, HostCapacity)], vms: impl IntoIterator<Item = VmUse>) -> Self {
        let mut hr = Headroom {
            hosts: hosts
                .iter()
                .map(|(h, cap)| {
                    let used = Used {
                        cpu: 0.0,
                        mem_mib: 0,
                        cap: *cap,
                    };
                    (h.clone(), used)
                })
                .collect(),
            vms: BTreeMap::new(),
        };
        for v in vms {
            if let Some(u) = hr.hosts.get_mut(&v.host) {
                u.cpu += finite(v.cpu);
                u.mem_mib = u.mem_mib.saturating_add(v.mem_mib);
                hr.vms.insert(v.vm.clone(), v);
            }
        }
        hr
    }

    /// `to`'s peak share with `vm` on it too; `None` when `to` is not
    /// measured. A VM not measured adds nothing.
    pub fn peak_after(&self, vm: &str, to: &str) -> Option<f64> {
        let mut u = self.hosts.get(to)?.clone();
        if let Some(v) = self.vms.get(vm).filter(|v| v.host != to) {
            u.cpu += finite(v.cpu);
            u.mem_mib = u.mem_mib.saturating_add(v.mem_mib);
        }
        Some(u.peak())
    }

    /// Each host's shares of its capacity in use (hosts with no capacity
    /// left out), by name.
    pub fn loads(&self) -> Vec<HostLoad> {
        self.hosts
            .iter()
            .filter(|(_, u)| u.cap.vcpus > 0 && u.cap.memory_mib > 0)
            .map(|(h, u)| HostLoad {
                host: h.clone(),
                cpu: u.cpu / f64::from(u.cap.vcpus),
                mem: u.mem_mib as f64 / u.cap.memory_mib as f64,
            })
            .collect()
    }

    /// `host`'s peak share now (with the moves booked).
    pub fn peak(&self, host: &str) -> Option<f64> {
        self.hosts.get(host).map(Used::peak)
    }

    /// Books `vm` on `to`: its use leaves its host and joins `to`.
    pub fn book(&mut self, vm: &str, to: &str) {
        let Some(v) = self.vms.get_mut(vm) else {
            return;
        };
        if let Some(from) = self.hosts.get_mut(&v.host) {
            from.cpu = (from.cpu - finite(v.cpu)).max(0.0);
            from.mem_mib = from.mem_mib.saturating_sub(v.mem_mib);
        }
        if let Some(dest) = self.hosts.get_mut(to) {
            dest.cpu += finite(v.cpu);
            dest.mem_mib = dest.mem_mib.saturating_add(v.mem_mib);
        }
        v.host = to.to_string();
    }
}

fn finite(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 {
        v
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: HostCapacity = HostCapacity {
        vcpus: 4,
        memory_mib: 1000,
    };

    fn use_(vm: &str, host: &str, cpu: f64, mem_mib: u64) -> VmUse {
        VmUse {
            vm: vm.into(),
            host: host.into(),
            cpu,
            mem_mib,
        }
    }

    fn headroom() -> Headroom {
        let hosts = [("a".to_string(), CAP), ("b".to_string(), CAP)];
        let vms = [
            use_("x", "a", 3.0, 100),
            use_("y", "a", 0.5, 100),
            use_("z", "b", 1.0, 600),
            use_("lost", "gone", 9.0, 9),
            use_("bad", "b", f64::NAN, 0),
        ];
        Headroom::new(&hosts, vms)
    }

    #[test]
    fn a_move_adds_the_vms_use_to_the_target() {
        let h = headroom();
        assert_eq!(h.peak("a"), Some(3.5 / 4.0));
        assert_eq!(
            h.peak("b"),
            Some(0.6),
            "memory is b's peak; NaN adds nothing"
        );
        assert_eq!(h.peak_after("x", "b"), Some(1.0));
        assert_eq!(h.peak_after("y", "b"), Some(0.7));
        assert_eq!(h.peak_after("x", "a"), Some(3.5 / 4.0), "already there");
        assert_eq!(h.peak_after("unmeasured", "b"), Some(0.6));
        assert_eq!(h.peak_after("x", "nowhere"), None);
        assert_eq!(h.peak_after("lost", "b"), Some(0.6), "on no known host");
    }

    #[test]
    fn booking_moves_the_use() {
        let mut h = headroom();
        h.book("x", "b");
        assert_eq!(h.peak("a"), Some(0.125));
        assert_eq!(h.peak("b"), Some(1.0));
        assert_eq!(h.peak_after("x", "a"), Some(0.875));
        h.book("unmeasured", "a");
        assert_eq!(h.peak("a"), Some(0.125));
    }
}
