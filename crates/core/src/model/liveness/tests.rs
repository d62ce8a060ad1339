use super::*;
use crate::agent_api::HostCapacity;

const T: Timing = Timing {
    suspect_after_ms: 3000,
    self_fence_margin_ms: 1000,
};

fn host(state: HostState, fence: Option<HostFence>) -> Host {
    Host {
        v: 1,
        name: "h1".into(),
        url: "http://h1:7070".into(),
        capacity: HostCapacity {
            vcpus: 2,
            memory_mib: 1024,
        },
        state,
        site: "default".into(),
        rack: None,
        accel: None,
        registered_ms: 0,
        before_failure: (state == HostState::Failed).then_some(HostState::Spare),
        fence,
    }
}

fn fences() -> Vec<Option<HostFence>> {
    let f = |proof: Option<Proof>| {
        Some(HostFence {
            decided_ms: 5,
            proof,
            confirmed_ms: proof.map(|_| 10),
        })
    };
    vec![None, f(None), f(Some(Proof::Device)), f(Some(Proof::Lease))]
}

/// Every sight the host pass can gather, with silences on both sides of
/// every threshold.
fn sights() -> Vec<Sight> {
    let mut out = Vec::new();
    for silent_ms in [0, 2999, 3000, 3001, 7999, 8999, 9000, 60_000] {
        for reported_ms in [None, Some(9), Some(11)] {
            for probe in [Probe::NotTried, Probe::Answered, Probe::Unreachable] {
                for peer_lost in [false, true] {
                    for self_fence_ms in [None, Some(8000)] {
                        for fence in fences() {
                            for holds_vms in [false, true] {
                                out.push(Sight {
                                    silent_ms,
                                    reported_ms,
                                    probe,
                                    peer_lost,
                                    self_fence_ms,
                                    fence,
                                    holds_vms,
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

#[test]
fn a_host_is_fenced_only_on_proof() {
    for s in sights() {
        let lost = s.silent_ms > 3000 || s.probe == Probe::Unreachable;
        let proof = s.fence.and_then(|f| f.proof);
        match fate(&s, &T) {
            Fate::Fenced(Proof::Lease) if proof.is_none() => {
                let lease = s.self_fence_ms.expect("a lease proof needs a lease");
                assert!(s.silent_ms >= lease + 1000, "{s:?}");
            }
            Fate::Fenced(p) => {
                let back = s.reported_ms.is_some_and(|r| r > 10);
                assert!(
                    lost || !back,
                    "a fenced host that reports again is back: {s:?}"
                );
                if let Some(q) = proof {
                    assert_eq!(p, q, "{s:?}");
                }
            }
            Fate::Gone => assert!(lost && proof.is_none(), "{s:?}"),
            Fate::Returned { clean } => {
                let back = s.reported_ms.is_some_and(|r| r > 10);
                assert!(
                    !lost && proof.is_some() && back && clean != s.holds_vms,
                    "{s:?}"
                )
            }
            Fate::Probe => assert!(
                !lost && s.peer_lost && s.probe == Probe::NotTried && proof.is_none(),
                "{s:?}"
            ),
            Fate::Alive => assert!(!lost && proof.is_none(), "{s:?}"),
        }
    }
}

#[test]
fn a_peer_alone_never_fails_a_host_the_controller_reaches() {
    for s in sights().into_iter().filter(|s| s.fence.is_none()) {
        if s.silent_ms <= 3000 && s.probe != Probe::Unreachable {
            assert!(matches!(fate(&s, &T), Fate::Alive | Fate::Probe), "{s:?}");
        }
    }
}

#[test]
fn live_and_held_fenced() {
    let proven = Some(HostFence {
        decided_ms: 5,
        proof: Some(Proof::Lease),
        confirmed_ms: Some(10),
    });
    for state in HostState::ALL {
        for fence in fences() {
            for silent in [None, Some(0), Some(3000), Some(3001)] {
                for reported in [None, Some(9), Some(11)] {
                    let h = host(state, fence);
                    let fresh = silent.is_some_and(|s| s <= 3000);
                    let back = fence.is_some_and(|f| f.back_by(reported));
                    let want = fresh && (state != HostState::Failed || back);
                    assert_eq!(
                        live(&h, silent, reported, &T),
                        want,
                        "{state:?} {fence:?} {silent:?} {reported:?}"
                    );
                }
            }
            for (silent, lease) in [
                (0, None),
                (7999, Some(8000)),
                (8000, Some(8000)),
                (9000, None),
            ] {
                let proof = fence.is_some_and(|f| f.proof.is_some());
                let lease_over = lease.is_some_and(|l| silent >= l);
                assert_eq!(held_fenced(fence, silent, lease), proof || lease_over);
            }
        }
    }
    assert!(held_fenced(proven, 0, None));
}

#[test]
fn apply_writes_each_fate_once() {
    let fates = [
        Fate::Alive,
        Fate::Probe,
        Fate::Gone,
        Fate::Fenced(Proof::Device),
        Fate::Fenced(Proof::Lease),
        Fate::Returned { clean: false },
        Fate::Returned { clean: true },
    ];
    for state in HostState::ALL {
        for fence in fences() {
            for f in fates {
                let mut h = host(state, fence);
                let first = apply(&mut h, f, 9);
                let again = h.clone();
                assert_eq!(
                    apply(&mut h, f, 10),
                    Change::None,
                    "{state:?} {fence:?} {f:?}"
                );
                assert_eq!(h, again, "a second apply changes nothing");
                match f {
                    Fate::Gone | Fate::Fenced(_) => {
                        assert_eq!(h.state, HostState::Failed);
                        assert!(
                            h.before_failure.is_some()
                                && h.before_failure != Some(HostState::Failed)
                        );
                        assert!(h.fence.is_some());
                    }
                    Fate::Alive | Fate::Returned { clean: true } => {
                        assert_ne!(h.state, HostState::Failed);
                        assert_eq!((h.fence, h.before_failure), (None, None));
                    }
                    Fate::Probe | Fate::Returned { clean: false } => {
                        assert_eq!(first, Change::None);
                        assert_eq!(h, host(state, fence));
                    }
                }
                if let Fate::Fenced(p) = f {
                    let kept = fence.and_then(|x| x.proof);
                    assert_eq!(h.fence.and_then(|x| x.proof), Some(kept.unwrap_or(p)));
                }
            }
        }
    }
}

#[test]
fn a_late_host_keeps_its_state_and_a_called_off_fence_leaves_nothing() {
    let pending = Some(HostFence {
        decided_ms: 1,
        proof: None,
        confirmed_ms: None,
    });
    let mut h = host(HostState::Failed, pending);
    assert_eq!(apply(&mut h, Fate::Alive, 2), Change::CalledOff);
    assert_eq!((h.state, h.fence), (HostState::Spare, None));
    let mut h = host(HostState::Maintenance, None);
    assert_eq!(apply(&mut h, Fate::Gone, 2), Change::Failed);
    assert_eq!(
        apply(&mut h, Fate::Fenced(Proof::Device), 3),
        Change::Confirmed(Proof::Device)
    );
    assert_eq!(
        apply(&mut h, Fate::Returned { clean: true }, 4),
        Change::Restored
    );
    assert_eq!(h.state, HostState::Maintenance);
}
