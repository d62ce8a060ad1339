//! What the agents must be told so the hosts match the desired VMs.
//!
//! Hosts the controller found gone matter here in three ways:
//! - a host that is silent but not fenced may still run what it last
//!   reported (or anything, if it has not reported to this controller at
//!   all): those VMs are started nowhere else meanwhile (two copies of one
//!   VM must never run);
//! - a fenced host that reports again holds only stale VMs (its pairs
//!   failed over, its lone VMs restarted elsewhere): each is destroyed,
//!   none adopted;
//! - a lone VM whose home host is fenced is restarted on another host;
//!   a replicated one (S2) is activated on its backup instead, from the
//!   last epoch the backup committed, if that host is up.
//!
//! A replicated VM running on its home with no epochs towards a backup
//! that may take over (none run, or its backup host is fenced) is given a
//! backup (`Protect`).

use super::vm::{Desired, Vm};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What a host last reported, and what the controller knows of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSeen {
    /// Reporting now.
    pub alive: bool,
    /// Takes new VMs (ready). A live host in maintenance keeps its VMs but
    /// is not given missing ones.
    pub accepts: bool,
    /// Its fence is confirmed (`liveness`): whatever it runs is stale.
    pub fenced: bool,
    /// Names of the VMs on it (its last report, if it is silent).
    pub vms: BTreeSet<String>,
    /// It has not reported since this controller took office: if it is
    /// silent and not fenced, it may run any VM.
    pub unknown: bool,
    /// Replicated VMs on it with no epochs towards a backup that may take
    /// over (none started, or they ended).
    pub unprotected: BTreeSet<String>,
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
    /// A VM outside any pair whose home host is fenced: choose it a new
    /// home (then it is created there).
    Restart { vm: String, from: String },
    /// A replicated VM whose home host is fenced: run it on its backup
    /// from the last committed epoch (if that fails, `Restart`).
    Activate {
        vm: String,
        from: String,
        on: String,
    },
    /// A replicated VM runs on `host` unprotected: choose a backup, make
    /// the replica there and start epochs towards it.
    Protect { vm: String, host: String },
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
    let seen = Seen::new(hosts);
    for vm in vms.iter().filter(|v| !busy.contains(&v.spec.name)) {
        out.extend(plan_vm(vm, &seen));
    }
    for (host, seen) in hosts.iter().filter(|(_, h)| h.alive) {
        for vm in &seen.vms {
            if seen.fenced && !busy.contains(vm) {
                out.push(Action::Delete {
                    vm: vm.clone(),
                    host: host.clone(),
                });
            } else if !known.contains(vm.as_str()) {
                out.push(Action::Unmanaged {
                    vm: vm.clone(),
                    host: host.clone(),
                });
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// What the hosts report, indexed once per plan: which hosts hold each
/// VM (in host order), so a plan is linear in the cluster's size.
struct Seen<'a> {
    hosts: &'a BTreeMap<String, HostSeen>,
    holders: HashMap<&'a str, Vec<(&'a String, &'a HostSeen)>>,
    /// A silent, unfenced host whose VMs are not known.
    silent_unknown: bool,
}

impl<'a> Seen<'a> {
    fn new(hosts: &'a BTreeMap<String, HostSeen>) -> Seen<'a> {
        let mut holders: HashMap<&str, Vec<_>> = HashMap::new();
        for (n, h) in hosts {
            for vm in &h.vms {
                holders.entry(vm.as_str()).or_default().push((n, h));
            }
        }
        Seen {
            hosts,
            holders,
            silent_unknown: hosts.values().any(|h| !h.alive && !h.fenced && h.unknown),
        }
    }

    fn holders(&self, vm: &str, pred: fn(&HostSeen) -> bool) -> Vec<&'a String> {
        self.holders
            .get(vm)
            .into_iter()
            .flatten()
            .filter(|(_, h)| pred(h))
            .map(|(n, _)| *n)
            .collect()
    }
}

fn plan_vm(vm: &Vm, seen: &Seen) -> Vec<Action> {
    let name = &vm.spec.name;
    let hosts = seen.hosts;
    // Live hosts that may keep it, and silent ones that may still run it.
    let live_holders = seen.holders(name, |h| h.alive && !h.fenced);
    let maybe_running =
        !seen.holders(name, |h| !h.alive && !h.fenced).is_empty() || seen.silent_unknown;
    let home = hosts.get(&vm.host);
    let home_alive = home.is_some_and(|h| h.alive);
    let (vm_, host) = (name.clone(), vm.host.clone());
    let backup_up = vm
        .backup
        .as_ref()
        .filter(|b| **b != vm.host)
        .filter(|b| hosts.get(*b).is_some_and(|h| h.alive && !h.fenced));
    match vm.desired {
        // Both of its sites hold it (S5): a site switch is under way or
        // was left half-done; the leader's site settle finishes it.
        Desired::Running if vm.replica_site.is_some() && live_holders.len() > 1 => vec![],
        Desired::Running if live_holders.contains(&&vm.host) => {
            let unprotected = home.is_some_and(|h| h.unprotected.contains(name));
            // A fenced (or forgotten) backup will never take over: its
            // epochs only hold output back.
            let backup_lost = vm
                .backup
                .as_ref()
                .is_some_and(|b| *b != vm.host && hosts.get(b).is_none_or(|h| h.fenced));
            if vm.spec.replicated && vm.pair.is_none() && (unprotected || backup_lost) {
                vec![Action::Protect { vm: vm_, host }]
            } else {
                vec![]
            }
        }
        Desired::Running if maybe_running => vec![],
        Desired::Running => match live_holders.first() {
            Some(other) => vec![Action::Adopt {
                vm: vm_,
                host: (*other).clone(),
            }],
            None if home.is_some_and(|h| h.alive && h.accepts && !h.fenced) => {
                vec![Action::Create { vm: vm_, host }]
            }
            None if vm.pair.is_none() && home.is_some_and(|h| h.fenced && !h.alive) => {
                match backup_up {
                    Some(on) if vm.spec.replicated => vec![Action::Activate {
                        vm: vm_,
                        from: host,
                        on: on.clone(),
                    }],
                    _ => vec![Action::Restart {
                        vm: vm_,
                        from: host,
                    }],
                }
            }
            None => vec![],
        },
        Desired::Deleted => {
            let mut acts: Vec<Action> = live_holders
                .iter()
                .map(|h| Action::Delete {
                    vm: vm_.clone(),
                    host: (*h).clone(),
                })
                .collect();
            // Forget only once its own host confirms it is gone (or that
            // host no longer exists at all, or is fenced).
            let home_clear = home_alive || home.is_none_or(|h| h.fenced);
            if live_holders.is_empty() && !maybe_running && home_clear {
                acts.push(Action::Forget { vm: vm_ });
            }
            acts
        }
    }
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
            restore: None,
            backup: None,
            replica_site: None,
            site_policy: None,
            created_ms: 0,
        }
    }

    fn seen(alive: bool, accepts: bool, vms: &[&str]) -> HostSeen {
        HostSeen {
            alive,
            accepts,
            fenced: false,
            vms: vms.iter().map(|s| s.to_string()).collect(),
            unknown: false,
            unprotected: BTreeSet::new(),
        }
    }

    /// The states a host can be in for the plan: (alive, accepts, fenced).
    const STATES: [(bool, bool, bool); 5] = [
        (false, false, false),
        (true, false, false),
        (true, true, false),
        (false, false, true),
        (true, false, true),
    ];

    /// Every combination of desired state, pair membership, host states
    /// and where the VM is seen, on two hosts: the plan never deletes a
    /// wanted VM from a host that may keep it, never starts a VM while a
    /// live or merely silent host may run it, creates only on a live
    /// accepting home, destroys whatever a fenced host that returned still
    /// runs, restarts elsewhere only a lone VM whose home is fenced, and
    /// forgets only what no host may still hold.
    #[test]
    fn exhaustive_two_hosts() {
        for desired in [Desired::Running, Desired::Deleted] {
            for paired in [false, true] {
                for s1 in STATES {
                    for s2_ in STATES {
                        for on in [(false, false), (true, false), (false, true), (true, true)] {
                            for busy in [false, true] {
                                for s2 in S2_CASES {
                                    check(desired, paired, [s1, s2_], on, busy, s2);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// S2 facts: (replicated, its backup, epochs to a backup that may
    /// take over missing on the hosts that run it, kept in two sites (S5)).
    const S2_CASES: [(bool, Option<&str>, bool, bool); 9] = [
        (false, None, false, false),
        (true, None, true, false),
        (true, None, false, false),
        (true, Some("h2"), false, false),
        (true, Some("h2"), true, false),
        (true, Some("h1"), false, false),
        (true, Some("h2"), false, true),
        (true, Some("h2"), true, true),
        (true, None, true, true),
    ];

    fn check(
        desired: Desired,
        paired: bool,
        states: [(bool, bool, bool); 2],
        on: (bool, bool),
        busy: bool,
        (replicated, backup, unprotected, sited): (bool, Option<&str>, bool, bool),
    ) {
        let mut v = vm("x", "h1", desired);
        v.pair = paired.then(|| "p".to_string());
        v.spec.replicated = replicated;
        v.backup = backup.map(str::to_string);
        v.replica_site = sited.then(|| "b".to_string());
        let host = |(alive, accepts, fenced): (bool, bool, bool), on: bool| HostSeen {
            fenced,
            // A silent host that never reported: it may run anything.
            unknown: !alive && !on,
            unprotected: if on && unprotected {
                ["x".to_string()].into()
            } else {
                BTreeSet::new()
            },
            ..seen(alive, accepts, if on { &["x"] } else { &[] })
        };
        let hosts = BTreeMap::from([
            ("h1".to_string(), host(states[0], on.0)),
            ("h2".to_string(), host(states[1], on.1)),
        ]);
        let b: BTreeSet<String> = if busy {
            ["x".to_string()].into()
        } else {
            BTreeSet::new()
        };
        let acts = plan(&[v.clone()], &hosts, &b);
        let h = |n: &str| &hosts[n];
        let on_ = |n: &str| h(n).vms.contains("x");
        let keeps = |n: &str| h(n).alive && !h(n).fenced && on_(n);
        let maybe = |n: &str| !h(n).alive && !h(n).fenced && (on_(n) || h(n).unknown);
        if busy {
            assert!(acts.is_empty(), "{acts:?}");
            return;
        }
        let ctx = format!("{desired:?} paired={paired} backup={backup:?} {hosts:?} -> {acts:?}");
        let backup_up = backup.is_some_and(|b| b != "h1" && h(b).alive && !h(b).fenced);
        let backup_lost = backup.is_some_and(|b| b != "h1" && h(b).fenced);
        // Both sites hold it: a site switch's, left to the site settle.
        let switching = sited && keeps("h1") && keeps("h2");
        if switching && desired == Desired::Running {
            assert!(acts.is_empty(), "{ctx}");
        }
        for a in &acts {
            match a {
                Action::Create { host, .. } => {
                    assert_eq!(desired, Desired::Running, "{ctx}");
                    assert!(!["h1", "h2"].iter().any(|n| keeps(n) || maybe(n)), "{ctx}");
                    assert!(h(host).alive && h(host).accepts && !h(host).fenced, "{ctx}");
                    assert_eq!(host, "h1");
                }
                Action::Delete { host, .. } => {
                    let stale = h(host).alive && h(host).fenced && on_(host);
                    assert!(
                        stale || (desired == Desired::Deleted && keeps(host)),
                        "{ctx}"
                    );
                }
                Action::Forget { .. } => {
                    assert_eq!(desired, Desired::Deleted, "{ctx}");
                    assert!(!["h1", "h2"].iter().any(|n| keeps(n) || maybe(n)), "{ctx}");
                    assert!(h("h1").alive || h("h1").fenced, "{ctx}");
                }
                Action::Adopt { host, .. } => {
                    assert_eq!(desired, Desired::Running, "{ctx}");
                    assert!(
                        keeps(host) && !keeps("h1") && !maybe("h1") && !maybe("h2"),
                        "{ctx}"
                    );
                }
                Action::Restart { from, .. } => {
                    assert!(desired == Desired::Running && !paired, "{ctx}");
                    assert!(from == "h1" && h("h1").fenced && !h("h1").alive, "{ctx}");
                    assert!(!["h1", "h2"].iter().any(|n| keeps(n) || maybe(n)), "{ctx}");
                    assert!(!(replicated && backup_up), "a live backup is used: {ctx}");
                }
                Action::Activate { from, on, .. } => {
                    assert!(
                        desired == Desired::Running && !paired && replicated,
                        "{ctx}"
                    );
                    assert!(from == "h1" && h("h1").fenced && !h("h1").alive, "{ctx}");
                    assert!(!["h1", "h2"].iter().any(|n| keeps(n) || maybe(n)), "{ctx}");
                    assert!(Some(on.as_str()) == backup && backup_up, "{ctx}");
                }
                Action::Protect { host, .. } => {
                    assert!(
                        desired == Desired::Running && !paired && replicated,
                        "{ctx}"
                    );
                    assert!(
                        host == "h1" && keeps("h1") && (unprotected || backup_lost),
                        "{ctx}"
                    );
                }
                Action::Unmanaged { .. } => panic!("x is known: {ctx}"),
            }
        }
        // A wanted VM on its live home needs nothing there but, if it is
        // replicated and unprotected, a backup.
        if desired == Desired::Running && keeps("h1") {
            let protect = replicated && !paired && (unprotected || backup_lost) && !switching;
            assert_eq!(
                acts.iter().any(|a| matches!(a, Action::Protect { .. })),
                protect,
                "{ctx}"
            );
            assert!(
                acts.iter()
                    .all(|a| matches!(a, Action::Delete { host, .. } if host == "h2")
                        || matches!(a, Action::Protect { .. })),
                "{ctx}"
            );
        }
        // A replicated VM whose fenced home is gone runs on a live backup.
        let lost = desired == Desired::Running && !paired && h("h1").fenced && !h("h1").alive;
        if lost && !["h1", "h2"].iter().any(|n| keeps(n) || maybe(n)) && replicated && backup_up {
            assert!(
                acts.iter().any(|a| matches!(a, Action::Activate { .. })),
                "{ctx}"
            );
        }
        assert_eq!(plan(&[v], &hosts, &b), acts, "deterministic");
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
