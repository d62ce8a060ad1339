//! Capacity placement: which ready host takes a new VM. The controller
//! places through [`place`] alone, so the network-aware engine
//! (`crate::placement`) can replace it in one spot.

use super::host::HostState;
use crate::agent_api::HostCapacity;

/// vCPUs may be overcommitted this many times; memory never is.
pub const VCPU_OVERCOMMIT: u32 = 4;

/// One host as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoom {
    pub name: String,
    pub state: HostState,
    pub capacity: HostCapacity,
    /// Sum over the VMs placed on it.
    pub used: HostCapacity,
}

impl HostRoom {
    fn free_mib(&self) -> u64 {
        self.capacity
            .memory_mib
            .saturating_sub(self.used.memory_mib)
    }
    fn free_vcpus(&self) -> u32 {
        (self.capacity.vcpus * VCPU_OVERCOMMIT).saturating_sub(self.used.vcpus)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub memory_mib: u64,
    pub vcpus: u32,
    /// Hosts it must not go to (the other member of its pair).
    pub avoid: Vec<String>,
    /// The operator named the host.
    pub only: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
    #[error("no host has registered with the controller yet: start an agent with --controller")]
    NoHosts,
    #[error("field `memory_mib`: {memory_mib} MiB is more than any host has ({largest_mib} MiB on the largest)")]
    TooBig { memory_mib: u64, largest_mib: u64 },
    #[error("field `host`: no host `{0}` is registered")]
    UnknownHost(String),
    #[error("no host can take it now: {}", .0.iter().map(|(h, why)| format!("{h}: {why}")).collect::<Vec<_>>().join("; "))]
    NoRoom(Vec<(String, String)>),
}

/// Why `h` cannot take `req`, or `None` if it can.
fn refuse(h: &HostRoom, req: &Request) -> Option<String> {
    if h.state != HostState::Ready {
        return Some(format!("host is {}", h.state.as_str()));
    }
    if req.avoid.contains(&h.name) {
        return Some("holds the other member of the pair".into());
    }
    if h.free_mib() < req.memory_mib {
        return Some(format!(
            "{} MiB free, {} MiB needed",
            h.free_mib(),
            req.memory_mib
        ));
    }
    if h.free_vcpus() < req.vcpus {
        return Some(format!(
            "{} vCPUs free (with {VCPU_OVERCOMMIT}x overcommit), {} needed",
            h.free_vcpus(),
            req.vcpus
        ));
    }
    None
}

/// The host with the most free memory among those that can take `req`;
/// ties go to the smaller name. Same input, same answer.
pub fn place(hosts: &[HostRoom], req: &Request) -> Result<String, PlaceError> {
    if hosts.is_empty() {
        return Err(PlaceError::NoHosts);
    }
    let largest = hosts
        .iter()
        .map(|h| h.capacity.memory_mib)
        .max()
        .unwrap_or(0);
    if req.memory_mib > largest {
        return Err(PlaceError::TooBig {
            memory_mib: req.memory_mib,
            largest_mib: largest,
        });
    }
    let candidates: Vec<&HostRoom> = match &req.only {
        Some(name) => match hosts.iter().find(|h| &h.name == name) {
            Some(h) => vec![h],
            None => return Err(PlaceError::UnknownHost(name.clone())),
        },
        None => hosts.iter().collect(),
    };
    let mut refusals = Vec::new();
    let mut best: Option<&HostRoom> = None;
    for h in candidates {
        match refuse(h, req) {
            Some(why) => refusals.push((h.name.clone(), why)),
            None => {
                let better = match best {
                    None => true,
                    Some(b) => {
                        (h.free_mib(), std::cmp::Reverse(&h.name))
                            > (b.free_mib(), std::cmp::Reverse(&b.name))
                    }
                };
                if better {
                    best = Some(h);
                }
            }
        }
    }
    best.map(|h| h.name.clone())
        .ok_or(PlaceError::NoRoom(refusals))
}

/// A host as autoheal's first choice sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealCandidate<'a> {
    pub name: &'a str,
    pub state: HostState,
    /// Its agent reports within the liveness limit.
    pub live: bool,
    pub free_mib: u64,
}

/// Where autoheal re-creates a VM of `memory_mib` first: a live spare
/// host (kept empty for this) with the memory, not in `avoid` (the failed
/// VM's host, its peer's). `None`: placement chooses among ready hosts.
pub fn spare_for<'a>(
    hosts: &[HealCandidate<'a>],
    memory_mib: u64,
    avoid: &[String],
) -> Option<&'a str> {
    hosts
        .iter()
        .find(|h| {
            h.state == HostState::Spare
                && h.live
                && h.free_mib >= memory_mib
                && !avoid.iter().any(|a| a == h.name)
        })
        .map(|h| h.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str, state: HostState, cap: u64, used: u64) -> HostRoom {
        HostRoom {
            name: name.into(),
            state,
            capacity: HostCapacity {
                vcpus: 2,
                memory_mib: cap,
            },
            used: HostCapacity {
                vcpus: 0,
                memory_mib: used,
            },
        }
    }

    fn req(mem: u64, avoid: &[&str]) -> Request {
        Request {
            memory_mib: mem,
            vcpus: 1,
            avoid: avoid.iter().map(|s| s.to_string()).collect(),
            only: None,
        }
    }

    #[test]
    fn most_free_memory_wins_ties_by_name() {
        let hosts = vec![
            room("h2", HostState::Ready, 4096, 1024),
            room("h1", HostState::Ready, 4096, 1024),
            room("h3", HostState::Ready, 4096, 2048),
        ];
        assert_eq!(place(&hosts, &req(256, &[])).unwrap(), "h1");
        assert_eq!(place(&hosts, &req(256, &["h1"])).unwrap(), "h2");
    }

    #[test]
    fn refusals_name_each_host() {
        let hosts = vec![
            room("h1", HostState::Failed, 4096, 0),
            room("h2", HostState::Ready, 4096, 4000),
            room("h3", HostState::Maintenance, 4096, 0),
        ];
        let e = place(&hosts, &req(256, &[])).unwrap_err().to_string();
        assert!(e.contains("h1: host is failed"), "{e}");
        assert!(e.contains("h2: 96 MiB free"), "{e}");
        assert!(e.contains("h3: host is maintenance"), "{e}");
        assert_eq!(place(&[], &req(1, &[])), Err(PlaceError::NoHosts));
        let big = place(&hosts, &req(5000, &[])).unwrap_err();
        assert!(big.to_string().contains("field `memory_mib`"), "{big}");
        let mut r = req(1, &[]);
        r.only = Some("h9".into());
        assert_eq!(place(&hosts, &r), Err(PlaceError::UnknownHost("h9".into())));
    }

    /// Exhaustive over small clusters: the choice always passes every rule,
    /// no passing host has more free memory, and an error means none passes.
    #[test]
    fn chosen_host_passes_and_is_best() {
        let states = [
            HostState::Ready,
            HostState::Maintenance,
            HostState::Failed,
            HostState::Spare,
        ];
        let useds = [0u64, 1024, 3900];
        let mut n = 0;
        for s1 in states {
            for s2 in states {
                for u1 in useds {
                    for u2 in useds {
                        for avoid in [&[][..], &["h1"][..], &["h2"][..]] {
                            let hosts = vec![room("h1", s1, 4096, u1), room("h2", s2, 4096, u2)];
                            let r = req(256, avoid);
                            let got = place(&hosts, &r);
                            let passing: Vec<&HostRoom> =
                                hosts.iter().filter(|h| refuse(h, &r).is_none()).collect();
                            match got {
                                Ok(name) => {
                                    let h = hosts.iter().find(|h| h.name == name).unwrap();
                                    assert!(refuse(h, &r).is_none());
                                    assert!(passing.iter().all(|p| p.free_mib() <= h.free_mib()));
                                    assert_eq!(place(&hosts, &r), Ok(name));
                                }
                                Err(_) => assert!(passing.is_empty()),
                            }
                            n += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(n, 4 * 4 * 3 * 3 * 3);
    }

    #[test]
    fn autoheal_takes_a_live_spare_with_room_not_avoided() {
        let states = [
            HostState::Ready,
            HostState::Maintenance,
            HostState::Failed,
            HostState::Spare,
        ];
        let names = ["h1", "h2"];
        let avoid = vec!["h1".to_string()];
        for s1 in states {
            for s2 in states {
                for live in [[false, false], [true, false], [false, true], [true, true]] {
                    for free in [[100, 100], [512, 100], [100, 512], [512, 512]] {
                        let hosts: Vec<HealCandidate> = (0..2)
                            .map(|i| HealCandidate {
                                name: names[i],
                                state: [s1, s2][i],
                                live: live[i],
                                free_mib: free[i],
                            })
                            .collect();
                        let fit = |i: usize| {
                            hosts[i].state == HostState::Spare && live[i] && free[i] >= 256
                        };
                        let want = match (fit(0), fit(1)) {
                            (true, _) => Some("h1"),
                            (false, true) => Some("h2"),
                            _ => None,
                        };
                        assert_eq!(spare_for(&hosts, 256, &[]), want);
                        let want_avoiding = fit(1).then_some("h2");
                        assert_eq!(spare_for(&hosts, 256, &avoid), want_avoiding);
                    }
                }
            }
        }
    }
}
