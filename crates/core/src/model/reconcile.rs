//! What the agents must be told so the hosts match the desired VMs.

use super::vm::{Desired, Vm};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// What a live host last reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSeen {
    /// Heartbeating (not failed).
    pub alive: bool,
    /// Takes new VMs (ready). A live host in maintenance keeps its VMs but
    /// is not given missing ones.
    pub accepts: bool,
    /// Names of the VMs on it.
    pub vms: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Start the VM on its host.
    Create { vm: String, host: String },
    /// Stop and remove the VM from a host.
    Delete { vm: String, host: String },
    /// The VM is gone everywhere it could be: drop its record.
    Forget { vm: String },
    /// The VM runs on another host than recorded (moved): record that.
    Adopt { vm: String, host: String },
    /// A host runs a VM the controller has no record of: report it, touch nothing.
    Unmanaged { vm: String, host: String },
}

/// The actions that bring the hosts to the desired VMs. VMs in `busy` (an
/// operation is working on them) are left alone. Deterministic: sorted.
pub fn plan(
    vms: &[Vm],
    hosts: &BTreeMap<String, HostSeen>,
    busy: &BTreeSet<String>,
) -> Vec<Action> {
    let mut out = Vec::new();
    let known: BTreeSet<&str> = vms.iter().map(|v| v.spec.name.as_str()).collect();
    for vm in vms {
        let name = &vm.spec.name;
        if busy.contains(name) {
            continue;
        }
        let live_holders: Vec<&String> = hosts
            .iter()
            .filter(|(_, h)| h.alive && h.vms.contains(name))
            .map(|(n, _)| n)
            .collect();
        let home = hosts.get(&vm.host);
        let home_alive = home.is_some_and(|h| h.alive);
        match vm.desired {
            Desired::Running => {
                if live_holders.iter().any(|h| **h == vm.host) {
                    continue;
                }
                if let Some(other) = live_holders.first() {
                    out.push(Action::Adopt {
                        vm: name.clone(),
                        host: (*other).clone(),
                    });
                } else if home.is_some_and(|h| h.alive && h.accepts) {
                    out.push(Action::Create {
                        vm: name.clone(),
                        host: vm.host.clone(),
                    });
                }
            }
            Desired::Deleted => {
                for h in &live_holders {
                    out.push(Action::Delete {
                        vm: name.clone(),
                        host: (*h).clone(),
                    });
                }
                // Forget only once its own host confirms it is gone (or
                // that host no longer exists at all).
                if live_holders.is_empty() && (home_alive || home.is_none()) {
                    out.push(Action::Forget { vm: name.clone() });
                }
            }
        }
    }
    for (host, seen) in hosts {
        if !seen.alive {
            continue;
        }
        for vm in &seen.vms {
            if !known.contains(vm.as_str()) {
                out.push(Action::Unmanaged {
                    vm: vm.clone(),
                    host: host.clone(),
                });
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm_spec::VmSpec;
    use std::net::Ipv4Addr;

    fn vm(name: &str, host: &str, desired: Desired) -> Vm {
        Vm {
            v: 1,
            spec: VmSpec::new(name, Ipv4Addr::new(10, 0, 0, 100)),
            host: host.into(),
            desired,
            pair: None,
            created_ms: 0,
        }
    }

    fn seen(alive: bool, accepts: bool, vms: &[&str]) -> HostSeen {
        HostSeen {
            alive,
            accepts,
            vms: vms.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Every combination of desired state, host liveness and where the VM
    /// is seen, on two hosts: the plan never deletes a wanted VM, never
    /// creates one that runs somewhere, only creates on a live accepting
    /// home, and forgets only what no live host holds.
    #[test]
    fn exhaustive_two_hosts() {
        let flags = [(false, false), (true, false), (true, true)];
        for desired in [Desired::Running, Desired::Deleted] {
            for (a1, c1) in flags {
                for (a2, c2) in flags {
                    for on1 in [false, true] {
                        for on2 in [false, true] {
                            for busy in [false, true] {
                                let v = vm("x", "h1", desired);
                                let hosts = BTreeMap::from([
                                    (
                                        "h1".to_string(),
                                        seen(a1, c1, if on1 { &["x"] } else { &[] }),
                                    ),
                                    (
                                        "h2".to_string(),
                                        seen(a2, c2, if on2 { &["x"] } else { &[] }),
                                    ),
                                ]);
                                let b: BTreeSet<String> = if busy {
                                    ["x".to_string()].into()
                                } else {
                                    BTreeSet::new()
                                };
                                let acts = plan(&[v], &hosts, &b);
                                let live_on =
                                    |h: &str| hosts[h].alive && hosts[h].vms.contains("x");
                                if busy {
                                    assert!(acts.is_empty(), "{acts:?}");
                                    continue;
                                }
                                for a in &acts {
                                    match a {
                                        Action::Create { host, .. } => {
                                            assert_eq!(desired, Desired::Running);
                                            assert!(!live_on("h1") && !live_on("h2"));
                                            assert!(hosts[host].alive && hosts[host].accepts);
                                            assert_eq!(host, "h1");
                                        }
                                        Action::Delete { host, .. } => {
                                            assert_eq!(desired, Desired::Deleted);
                                            assert!(live_on(host));
                                        }
                                        Action::Forget { .. } => {
                                            assert_eq!(desired, Desired::Deleted);
                                            assert!(!live_on("h1") && !live_on("h2"));
                                            assert!(hosts["h1"].alive);
                                        }
                                        Action::Adopt { host, .. } => {
                                            assert_eq!(desired, Desired::Running);
                                            assert!(live_on(host) && !live_on("h1"));
                                        }
                                        Action::Unmanaged { .. } => panic!("x is known"),
                                    }
                                }
                                // A wanted VM on its live home needs nothing.
                                if desired == Desired::Running && live_on("h1") {
                                    assert!(acts.is_empty());
                                }
                                assert_eq!(plan(&[vm("x", "h1", desired)], &hosts, &b), acts);
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn unknown_vms_are_reported_not_touched() {
        let hosts = BTreeMap::from([("h1".to_string(), seen(true, true, &["stray"]))]);
        assert_eq!(
            plan(&[], &hosts, &BTreeSet::new()),
            vec![Action::Unmanaged {
                vm: "stray".into(),
                host: "h1".into()
            }]
        );
        // A deleted VM whose host record is gone is forgotten.
        let v = vm("x", "gone", Desired::Deleted);
        assert_eq!(
            plan(&[v], &hosts, &BTreeSet::new()),
            vec![
                Action::Forget { vm: "x".into() },
                Action::Unmanaged {
                    vm: "stray".into(),
                    host: "h1".into()
                }
            ]
        );
    }
}
