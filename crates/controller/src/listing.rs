//! One pass's records found by name. A pass over every pair or VM (the
//! console's feed, the repair and failover loops, the API's lists) looks
//! each member and host up in maps built once, so the pass is linear in
//! the cluster's size, not quadratic (1,000 hosts and 5,000 VMs made the
//! linear searches the controller's largest cost).

use duplex_core::model::{Host, HostState, Vm};
use std::collections::HashMap;

pub struct Listing<'a> {
    pub vms: &'a [Vm],
    pub hosts: &'a [Host],
    vm_by_name: HashMap<&'a str, &'a Vm>,
    host_by_name: HashMap<&'a str, &'a Host>,
}

impl<'a> Listing<'a> {
    pub fn new(vms: &'a [Vm], hosts: &'a [Host]) -> Listing<'a> {
        Listing {
            vm_by_name: vms.iter().map(|v| (v.spec.name.as_str(), v)).collect(),
            host_by_name: hosts.iter().map(|h| (h.name.as_str(), h)).collect(),
            vms,
            hosts,
        }
    }

    pub fn vm(&self, name: &str) -> Option<&'a Vm> {
        self.vm_by_name.get(name).copied()
    }

    pub fn host(&self, name: &str) -> Option<&'a Host> {
        self.host_by_name.get(name).copied()
    }

    /// Registered and not failed.
    pub fn host_alive(&self, name: &str) -> bool {
        self.host(name)
            .is_some_and(|h| h.state != HostState::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duplex_core::agent_api::HostCapacity;
    use duplex_core::model::Desired;
    use duplex_core::vm_spec::VmSpec;

    fn host(name: &str, state: HostState) -> Host {
        Host {
            v: 1,
            name: name.into(),
            url: String::new(),
            capacity: HostCapacity {
                vcpus: 1,
                memory_mib: 1,
            },
            state,
            site: "default".into(),
            rack: None,
            accel: None,
            registered_ms: 0,
            before_failure: None,
            fence: None,
        }
    }

    #[test]
    fn finds_by_name_and_tells_failed_hosts() {
        let vm = Vm {
            v: 1,
            spec: VmSpec::new("a", std::net::Ipv4Addr::new(10, 0, 0, 2)),
            host: "h1".into(),
            desired: Desired::Running,
            pair: None,
            created_ms: 0,
            restore: None,
            backup: None,
            replica_site: None,
            site_policy: None,
        };
        let (vms, hosts) = (
            vec![vm],
            vec![host("h1", HostState::Ready), host("h2", HostState::Failed)],
        );
        let l = Listing::new(&vms, &hosts);
        assert_eq!(l.vm("a").map(|v| v.host.as_str()), Some("h1"));
        assert!(l.vm("b").is_none());
        assert!(l.host_alive("h1"));
        assert!(!l.host_alive("h2"), "failed");
        assert!(!l.host_alive("h3"), "unknown");
    }
}
