use super::*;
use crate::model::pair::{example, MemberView};
use crate::model::repair;
use crate::role::{Role, RoleCommand, RoleState, REPORTS as ROLES};

#[test]
fn slots_round_trip_as_numbers() {
    for s in Slot::BOTH {
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(j, s.i().to_string());
        assert_eq!(serde_json::from_str::<Slot>(&j).unwrap(), s);
        assert_eq!(s.other().other(), s);
    }
    assert!(serde_json::from_str::<Slot>("2").is_err());
}

#[test]
fn begin_and_end_over_every_phase_and_workflow() {
    for phase in PairPhase::ALL {
        for w in Workflow::ALL {
            match begin(phase, w) {
                Ok(next) => {
                    assert_ne!(w, Workflow::Create);
                    assert_eq!(next, w.phase());
                    // Only a delete may begin outside ready, and never over a role workflow.
                    if w != Workflow::Delete {
                        assert_eq!(phase, PairPhase::Ready);
                    } else {
                        assert!(!matches!(
                            phase,
                            PairPhase::SwitchingOver | PairPhase::Moving | PairPhase::Repairing
                        ));
                    }
                    // Whatever the outcome, the workflow leaves an at-rest
                    // phase or one that is run again (delete).
                    for ok in [true, false] {
                        let after = end(next, w, ok);
                        assert_ne!(orphan(after), Orphan::Settle, "{w:?} {ok}");
                    }
                }
                Err(_) => assert!(w == Workflow::Create || phase != PairPhase::Ready),
            }
            // A workflow never ends another's phase.
            for ok in [true, false] {
                let after = end(phase, w, ok);
                let own = phase == w.phase()
                    || (w == Workflow::Create && phase == PairPhase::Configuring);
                if !own {
                    assert_eq!(after, phase, "{w:?} ended {phase:?}");
                }
            }
        }
    }
}

#[test]
fn only_transient_phases_are_taken_up() {
    for phase in PairPhase::ALL {
        let o = orphan(phase);
        assert_eq!(
            o == Orphan::AtRest,
            matches!(phase, PairPhase::Ready | PairPhase::Failed)
        );
    }
}

/// Applies the fixes to guests in `roles` with the real role machine;
/// checks at every step that at most one is ACT.
fn apply(roles: [Option<Role>; 2], fixes: &[Fix]) -> [Option<Role>; 2] {
    let mut st = roles.map(|r| r.map(|role| RoleState { role, token: 1 }));
    for f in fixes {
        let (s, cmd) = match f {
            Fix::Activate(s) => (*s, RoleCommand::BecomeActive),
            Fix::Standby(s) => (*s, RoleCommand::BecomeStandby),
        };
        let g = st[s.i()].expect("an order to a silent guest");
        st[s.i()] = Some(g.apply(cmd, 2).unwrap().0);
        let acts = st.iter().filter(|g| g.map(|g| g.role) == Some(Role::Act));
        // Two ACTs only if there were two to begin with, and never created.
        let before = roles.iter().filter(|r| **r == Some(Role::Act)).count();
        assert!(acts.count() <= before.max(1), "{roles:?} {fixes:?}");
    }
    st.map(|g| g.map(|g| g.role))
}

#[test]
fn every_report_combination_settles_safely() {
    for active in Slot::BOTH {
        for r0 in ROLES {
            for r1 in ROLES {
                let roles = [r0, r1];
                match recover(active, roles) {
                    Recovery::Wait { reason } => {
                        // Only when nobody answers ACT and somebody is silent.
                        assert!(!roles.contains(&Some(Role::Act)), "{roles:?}");
                        assert!(roles.contains(&None), "{roles:?}");
                        assert!(!reason.is_empty());
                    }
                    Recovery::Settle { active: a, fixes } => {
                        let after = apply(roles, &fixes);
                        assert_eq!(after[a.i()], Some(Role::Act), "{roles:?} {fixes:?}");
                        let other = after[a.other().i()];
                        assert!(other.is_none() || other == Some(Role::Sby), "{roles:?}");
                        // A guest that was ACT stays ACT when it is the only one.
                        let acts: Vec<Slot> = Slot::BOTH
                            .into_iter()
                            .filter(|s| roles[s.i()] == Some(Role::Act))
                            .collect();
                        if acts.len() == 1 {
                            assert_eq!(a, acts[0]);
                        }
                        // Nobody is made ACT while a member is silent.
                        if roles.contains(&None) {
                            assert_eq!(acts.len(), 1);
                        }
                        // A quiesced ACT is restored when nobody is ACT.
                        if acts.is_empty() && roles.contains(&Some(Role::Quiesced)) {
                            assert_eq!(roles[a.i()], Some(Role::Quiesced));
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn examples() {
    use Role::*;
    let (a, b) = (Slot::A, Slot::B);
    // Interrupted after prepare: the old ACT is restored.
    assert_eq!(
        recover(a, [Some(Quiesced), Some(Sby)]),
        Recovery::Settle {
            active: a,
            fixes: vec![Fix::Activate(a)]
        }
    );
    // Interrupted after activate: the new ACT stays, the old is demoted first.
    assert_eq!(
        recover(a, [Some(Quiesced), Some(Act)]),
        Recovery::Settle {
            active: b,
            fixes: vec![Fix::Standby(a), Fix::Activate(b)]
        }
    );
    // Interrupted after commit: only the record trails.
    assert_eq!(
        recover(a, [Some(Sby), Some(Act)]),
        Recovery::Settle {
            active: b,
            fixes: vec![Fix::Activate(b)]
        }
    );
    assert!(matches!(
        recover(a, [Some(Quiesced), Option::None]),
        Recovery::Wait { .. }
    ));
}

/// The repair of a ready pair and the settlement of an orphaned one are
/// two decisions over the same reports: wherever the repair acts, both
/// leave the same member ACT.
#[test]
fn repair_and_settlement_agree_on_the_act() {
    for active in Slot::BOTH {
        let pair = example(PairPhase::Ready, active.i());
        for r0 in ROLES {
            for r1 in ROLES {
                let view = |role| MemberView {
                    role,
                    ..MemberView::default()
                };
                let Some(r) = repair::decide(&pair, [view(r0), view(r1)]) else {
                    continue;
                };
                let Recovery::Settle {
                    active: settled, ..
                } = recover(active, [r0, r1])
                else {
                    panic!("{r:?} on {:?}, but settling would wait", [r0, r1]);
                };
                assert_eq!(
                    settled.i(),
                    r.new_active(active.i()),
                    "{r:?} on {:?}",
                    [r0, r1]
                );
            }
        }
    }
}
