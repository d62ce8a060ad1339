use super::*;
use crate::placement::rng::SplitMix64;

fn cfg() -> EpochConfig {
    EpochConfig {
        period_ms: 100,
        ack_timeout_ms: 1_000,
    }
}

fn run(p: Primary, events: &[(Event, u64)]) -> (Primary, Vec<Effect>) {
    let mut all = Vec::new();
    let mut p = p;
    for (e, t) in events {
        let (next, fx) = p.step(*e, *t);
        p = next;
        all.extend(fx);
    }
    (p, all)
}

#[test]
fn epochs_capture_then_commit_in_order() {
    let (p, fx) = run(
        Primary::new(cfg()),
        &[
            (Event::Tick, 0),
            (Event::Captured { epoch: 1 }, 10),
            (Event::Tick, 50),
            (Event::Tick, 100),
            (Event::Captured { epoch: 2 }, 110),
            (Event::Acked { epoch: 1 }, 120),
            (Event::Acked { epoch: 2 }, 130),
        ],
    );
    assert_eq!(
        fx,
        vec![
            Effect::Capture { epoch: 1 },
            Effect::Capture { epoch: 2 },
            Effect::Commit { epoch: 1 },
            Effect::Commit { epoch: 2 },
        ]
    );
    assert_eq!((p.committed, p.next, p.in_flight.len()), (2, 3, 0));
    assert!(p.holding());
    assert!(
        !Primary::new(cfg()).holding(),
        "nothing held before the first capture"
    );
}

#[test]
fn a_slow_backup_stretches_epochs_then_stalls_and_a_late_ack_resumes() {
    let (p, fx) = run(
        Primary::new(cfg()),
        &[
            (Event::Tick, 0),
            (Event::Captured { epoch: 1 }, 5),
            (Event::Tick, 100),
            (Event::Captured { epoch: 2 }, 105),
            // Two in flight: no third capture however long it waits.
            (Event::Tick, 300),
            (Event::Tick, 900),
        ],
    );
    assert_eq!(fx.len(), 2, "{fx:?}");
    let (p, fx) = p.step(Event::Tick, 1_005);
    assert_eq!(fx, vec![Effect::Stalled { epoch: 1 }]);
    assert_eq!(p.mode, Mode::Stalled { since_ms: 1_005 });
    let (p, fx) = p.step(Event::Tick, 5_000);
    assert!(fx.is_empty(), "stalled: no capture, nothing released");
    assert_eq!(p.next_wake_ms(), None);
    let (p, fx) = p.step(Event::Acked { epoch: 2 }, 5_001);
    assert_eq!(
        fx,
        vec![Effect::Commit { epoch: 2 }, Effect::Capture { epoch: 3 }]
    );
    assert_eq!(p.mode, Mode::Running);
}

#[test]
fn a_failed_capture_retries_the_same_epoch() {
    let (p, fx) = run(
        Primary::new(cfg()),
        &[
            (Event::Tick, 0),
            (Event::CaptureFailed { epoch: 1 }, 3),
            (Event::Tick, 50),
            (Event::Tick, 100),
        ],
    );
    assert_eq!(
        fx,
        vec![Effect::Capture { epoch: 1 }, Effect::Capture { epoch: 1 }]
    );
    assert_eq!(p.next, 1);
}

#[test]
fn unprotect_releases_everything_once_and_ends_epochs() {
    let (p, fx) = run(
        Primary::new(cfg()),
        &[
            (Event::Tick, 0),
            (Event::Captured { epoch: 1 }, 5),
            (Event::Unprotect, 6),
            (Event::Unprotect, 7),
            (Event::Acked { epoch: 1 }, 8),
            (Event::Tick, 500),
        ],
    );
    assert_eq!(fx, vec![Effect::Capture { epoch: 1 }, Effect::ReleaseAll]);
    assert!(!p.holding());
    assert_eq!(p.committed, 0);
}

#[test]
fn stale_and_unknown_events_change_nothing() {
    let p = Primary::new(cfg());
    for e in [
        Event::Captured { epoch: 1 },
        Event::CaptureFailed { epoch: 1 },
        Event::Acked { epoch: 1 },
        Event::Acked { epoch: 0 },
    ] {
        let (after, fx) = p.clone().step(e, 0);
        // Only the first capture, as a tick would give.
        assert_eq!(fx, vec![Effect::Capture { epoch: 1 }], "{e:?}");
        assert_eq!(after.next, 1);
    }
    assert!(EpochConfig {
        period_ms: 5,
        ack_timeout_ms: 1_000
    }
    .validate()
    .is_err());
    assert!(EpochConfig {
        period_ms: 200,
        ack_timeout_ms: 100
    }
    .validate()
    .is_err());
    cfg().validate().unwrap();
}

/// The S2 guarantee under random timing, lost messages and a failover at
/// a random moment: every frame a client received was produced in an epoch
/// the backup had applied when it took over.
#[test]
fn seeded_simulation_no_client_sees_lost_state() {
    let mut checked = 0;
    for seed in 0..300u64 {
        let mut r = SplitMix64::new(0x5e2_0000 + seed);
        checked += simulate(&mut r, seed);
    }
    // Most runs end in a failover (the rest: unprotected, or no epoch
    // applied yet).
    assert!(checked > 150, "only {checked} runs checked a failover");
}

/// A backup that applies checkpoints in order; lost messages never arrive.
struct World {
    /// Frames held, by the epoch they are labelled with.
    held: Vec<u64>,
    /// Epochs of the frames clients received.
    received: Vec<u64>,
    backup_applied: u64,
    /// Checkpoints on the way to the backup (epoch, arrives at).
    to_backup: Vec<(u64, u64)>,
    /// Acks on the way back (epoch, arrives at).
    to_primary: Vec<(u64, u64)>,
    capturing: Option<u64>,
}

/// 1 if the run ended in a failover whose received frames were checked.
fn simulate(r: &mut SplitMix64, seed: u64) -> u32 {
    let mut p = Primary::new(cfg());
    let mut w = World {
        held: vec![],
        received: vec![],
        backup_applied: 0,
        to_backup: vec![],
        to_primary: vec![],
        capturing: None,
    };
    let fail_at = 200 + r.below(3_000);
    let mut last_commit = 0;
    for now in 0..fail_at {
        // The guest sends a frame now and then: held if holding, labelled
        // with the open epoch (the one the next checkpoint closes).
        if r.chance(0.2) {
            if p.holding() {
                w.held.push(p.next);
            } else {
                w.received.push(p.next);
            }
        }
        let mut events = vec![Event::Tick];
        if let Some(epoch) = w.capturing.take() {
            if r.chance(0.05) {
                events.push(Event::CaptureFailed { epoch });
            } else {
                if !r.chance(0.02) {
                    w.to_backup.push((epoch, now + r.below(40)));
                }
                events.push(Event::Captured { epoch });
            }
        }
        deliver(r, &mut w, now, &mut events);
        if r.chance(0.0001) {
            events.push(Event::Unprotect);
        }
        if r.chance(0.0002) {
            events.push(Event::Handoff);
        }
        for e in events {
            let (next, fx) = p.step(e, now);
            p = next;
            for f in fx {
                match f {
                    Effect::Capture { epoch } | Effect::FinalCapture { epoch } => {
                        assert!(w.capturing.is_none(), "seed {seed}: two captures");
                        w.capturing = Some(epoch);
                    }
                    Effect::Commit { epoch } => {
                        assert!(epoch > last_commit, "seed {seed}: commits go forward");
                        assert!(
                            epoch <= w.backup_applied,
                            "seed {seed}: commit before apply"
                        );
                        last_commit = epoch;
                        w.received.extend(w.held.iter().filter(|e| **e <= epoch));
                        w.held.retain(|e| *e > epoch);
                    }
                    Effect::ReleaseAll => {
                        // Only on the controller's word that the backup
                        // will not take over: the check below stops here.
                        w.received.append(&mut w.held);
                        return 0;
                    }
                    Effect::Stalled { .. } => {}
                    Effect::HandedOff { epoch } => {
                        // The backup runs the VM from here: it must hold
                        // the newest state any released output came from.
                        assert!(epoch <= w.backup_applied, "seed {seed}: handed off early");
                        assert_eq!(epoch, last_commit, "seed {seed}: handed off uncommitted");
                        return 0;
                    }
                }
            }
            assert!(p.in_flight.len() <= MAX_IN_FLIGHT);
        }
    }
    // Failover: the backup resumes from what it applied (with nothing
    // applied there is nothing to resume: no failover, a cold start).
    // Every frame a client received was produced before that checkpoint.
    if w.backup_applied == 0 {
        return 0;
    }
    for e in &w.received {
        assert!(
            *e <= w.backup_applied,
            "seed {seed}: a client saw epoch {e}, the backup has {}",
            w.backup_applied
        );
    }
    1
}

fn deliver(r: &mut SplitMix64, w: &mut World, now: u64, events: &mut Vec<Event>) {
    let (arrived, later): (Vec<_>, Vec<_>) = w.to_backup.iter().partition(|(_, at)| *at <= now);
    w.to_backup = later;
    for (epoch, _) in arrived {
        // In order only: a gap (a lost checkpoint) stops the backup.
        if epoch == w.backup_applied + 1 {
            w.backup_applied = epoch;
            if !r.chance(0.02) {
                w.to_primary.push((epoch, now + r.below(40)));
            }
        }
    }
    let (acks, later): (Vec<_>, Vec<_>) = w.to_primary.iter().partition(|(_, at)| *at <= now);
    w.to_primary = later;
    events.extend(acks.into_iter().map(|(epoch, _)| Event::Acked { epoch }));
}

#[test]
fn a_long_stall_or_ended_epochs_need_a_new_backup() {
    use crate::agent_api::{ProtectPhase, ProtectionSummary};
    let s = |phase, stalled_for_ms| ProtectionSummary {
        backup: "https://b".into(),
        phase,
        committed: 3,
        stalled_for_ms,
        lag_ms: None,
    };
    assert!(!s(ProtectPhase::Running, None).needs_backup());
    assert!(!s(ProtectPhase::Base, None).needs_backup());
    assert!(!s(ProtectPhase::Stalled, Some(RESYNC_AFTER_MS - 1)).needs_backup());
    assert!(s(ProtectPhase::Stalled, Some(RESYNC_AFTER_MS)).needs_backup());
    assert!(s(ProtectPhase::Failed, None).needs_backup());
    assert!(s(ProtectPhase::Unprotected, None).needs_backup());
}

#[test]
fn a_handoff_takes_one_last_checkpoint_at_once_and_no_more() {
    let (p, fx) = run(
        Primary::new(cfg()),
        &[
            (Event::Tick, 0),
            (Event::Captured { epoch: 1 }, 10),
            (Event::Handoff, 20),
            (Event::Captured { epoch: 2 }, 30),
            (Event::Tick, 500),
            (Event::Acked { epoch: 1 }, 510),
            (Event::Acked { epoch: 2 }, 520),
            (Event::Tick, 900),
            (Event::Handoff, 950),
        ],
    );
    assert_eq!(
        fx,
        vec![
            Effect::Capture { epoch: 1 },
            Effect::FinalCapture { epoch: 2 },
            Effect::Commit { epoch: 1 },
            Effect::Commit { epoch: 2 },
            Effect::HandedOff { epoch: 2 },
        ]
    );
    assert_eq!(p.handoff, Handoff::Done { epoch: 2 });
}

#[test]
fn a_failed_last_checkpoint_is_retried_and_a_cancel_resumes_epochs() {
    let (p, fx) = run(
        Primary::new(cfg()),
        &[
            (Event::Handoff, 0),
            (Event::CaptureFailed { epoch: 1 }, 5),
            (Event::Tick, 100),
            (Event::CancelHandoff, 150),
            (Event::CaptureFailed { epoch: 1 }, 160),
            (Event::Tick, 200),
        ],
    );
    assert_eq!(
        fx,
        vec![
            Effect::FinalCapture { epoch: 1 },
            Effect::FinalCapture { epoch: 1 },
            Effect::Capture { epoch: 1 },
        ]
    );
    assert_eq!(p.handoff, Handoff::None);
}

#[test]
fn no_handoff_once_unprotected_and_none_while_stalled() {
    let (p, fx) = run(
        Primary::new(cfg()),
        &[
            (Event::Unprotect, 0),
            (Event::Handoff, 10),
            (Event::Tick, 20),
        ],
    );
    assert_eq!(fx, vec![Effect::ReleaseAll]);
    assert_eq!(p.handoff, Handoff::None);
    let (p, fx) = run(
        Primary::new(cfg()),
        &[
            (Event::Tick, 0),
            (Event::Captured { epoch: 1 }, 10),
            (Event::Tick, 1_010),
            (Event::Handoff, 1_020),
            (Event::Tick, 1_500),
        ],
    );
    assert!(!fx.iter().any(|f| matches!(f, Effect::FinalCapture { .. })));
    assert_eq!(p.handoff, Handoff::Wanted, "taken once the backup answers");
}

#[test]
fn epochs_can_go_on_from_a_state_the_backup_holds() {
    let (p, fx) = run(
        Primary::starting_after(cfg(), 41),
        &[
            (Event::Tick, 0),
            (Event::Captured { epoch: 42 }, 5),
            (Event::Acked { epoch: 42 }, 50),
        ],
    );
    assert_eq!(
        fx,
        vec![Effect::Capture { epoch: 42 }, Effect::Commit { epoch: 42 }]
    );
    assert_eq!((p.committed, p.next), (42, 43));
}
