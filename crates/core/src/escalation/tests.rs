//! Every sequence of up to three failures (each cause, standing and gap),
//! then long seeded sequences, against the rules the module promises.

use super::*;

const CAUSES: [Cause; 7] = [
    Cause::ProcessExited,
    Cause::HealthFailed,
    Cause::ServiceHung,
    Cause::MiddlewareSilent,
    Cause::GuestSilent,
    Cause::QemuCrashed,
    Cause::DataDamaged,
];
const STANDINGS: [Standing; 3] = [Standing::ActWithSby, Standing::Alone, Standing::Sby];
/// Gaps before a failure: at once, past the 10-minute probations, past all.
const GAPS_MS: [u64; 3] = [1_000, 20 * 60_000, 3 * 3_600_000];

type Step = (Cause, Standing, u64);

fn steps() -> Vec<Step> {
    let mut all = Vec::new();
    for c in CAUSES {
        for s in STANDINGS {
            for g in GAPS_MS {
                all.push((c, s, g));
            }
        }
    }
    all
}

/// Runs a sequence, checking each decision; returns the plans.
fn run(policy: &Policy, seq: &[Step]) -> Vec<Plan> {
    let mut counters = Counters::default();
    let mut now = 1_000_000u64;
    let mut plans = Vec::new();
    for &(cause, standing, gap) in seq {
        now += gap;
        let live = counters.expired(policy, now);
        let (plan, next) = decide(&counters, policy, cause, standing, now);
        check(policy, &live, &next, cause, standing, plan);
        counters = next;
        plans.push(plan);
    }
    plans
}

fn total(c: &Counters) -> u64 {
    c.phases.iter().map(|p| u64::from(p.runs)).sum()
}

fn check(
    policy: &Policy,
    live: &Counters,
    next: &Counters,
    cause: Cause,
    standing: Standing,
    plan: Plan,
) {
    let ctx = format!("{cause:?} {standing:?} {plan:?} after {live:?}");
    // Exactly the planned phase is counted once more.
    assert_eq!(total(next), total(live) + 1, "{ctx}");
    assert_eq!(
        next.phases[plan.phase.index()].runs,
        live.phases[plan.phase.index()].runs.saturating_add(1),
        "{ctx}"
    );
    // Never narrower than the cause needs.
    assert!(plan.phase >= cause.minimum_phase(), "{ctx}");
    // The fast path exactly when the seed says.
    let fast = policy.fast_path
        && live.is_clear()
        && cause.minimum_phase().restarts_os()
        && standing == Standing::ActWithSby;
    assert_eq!(plan.fast_path, fast, "{ctx}");
    if plan.fast_path {
        assert_eq!(plan.phase, Phase::Autoheal, "{ctx}");
        assert!(!plan.failover_first, "{ctx}");
        return;
    }
    // Every phase skipped on the way up had used up its threshold.
    for p in Phase::ALL {
        if p >= cause.minimum_phase() && p < plan.phase {
            assert!(
                live.phases[p.index()].runs >= policy.of(p).threshold,
                "{p:?}: {ctx}"
            );
        }
    }
    // The chosen phase still had room (autoheal always has).
    if plan.phase != Phase::Autoheal {
        assert!(
            live.phases[plan.phase.index()].runs < policy.of(plan.phase).threshold,
            "{ctx}"
        );
    }
    // A failing ACT with an SBY hands over first.
    assert_eq!(
        plan.failover_first,
        standing == Standing::ActWithSby,
        "{ctx}"
    );
}

#[test]
fn every_sequence_of_three_failures() {
    let all = steps();
    for policy in [
        Policy::default(),
        Policy {
            fast_path: false,
            ..Policy::default()
        },
    ] {
        for a in &all {
            for b in &all {
                for c in &all {
                    run(&policy, &[*a, *b, *c]);
                }
            }
        }
    }
}

#[test]
fn seeded_long_sequences() {
    let all = steps();
    let mut seed = 0x5eed_u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..2_000 {
        let seq: Vec<Step> = (0..40)
            .map(|_| all[(rand() % all.len() as u64) as usize])
            .collect();
        run(&Policy::default(), &seq);
    }
}

#[test]
fn repeated_process_exits_climb_phase_by_phase() {
    let policy = Policy::default();
    let seq = vec![(Cause::ProcessExited, Standing::Sby, 1_000); 16];
    let phases: Vec<Phase> = run(&policy, &seq).iter().map(|p| p.phase).collect();
    use Phase::*;
    assert_eq!(
        phases,
        [
            Ph0_5, Ph0_5, Ph0_5, Ph1_0, Ph1_0, Ph1_0, Ph2_0, Ph2_0, Ph2_5, Ph2_5, Ph3_0, Ph3_5,
            Autoheal, Autoheal, Autoheal, Autoheal
        ]
    );
}

#[test]
fn probation_forgets_and_the_fast_path_is_for_a_first_os_level_failure() {
    let policy = Policy::default();
    // A first panic of the ACT: the fast path.
    let p = run(
        &policy,
        &[(Cause::GuestSilent, Standing::ActWithSby, 1_000)],
    );
    assert!(p[0].fast_path && p[0].phase == Phase::Autoheal);
    // A panic after a process exit within probation: escalation, PH2.5.
    let p = run(
        &policy,
        &[
            (Cause::ProcessExited, Standing::ActWithSby, 1_000),
            (Cause::GuestSilent, Standing::ActWithSby, 1_000),
        ],
    );
    assert_eq!((p[1].phase, p[1].fast_path), (Phase::Ph2_5, false));
    // ... but once probation has passed, the panic is a first failure again.
    let p = run(
        &policy,
        &[
            (Cause::ProcessExited, Standing::ActWithSby, 1_000),
            (Cause::GuestSilent, Standing::ActWithSby, 20 * 60_000),
        ],
    );
    assert!(p[1].fast_path);
    // The SBY's panic never takes the fast path: it reboots (PH2.5).
    let p = run(&policy, &[(Cause::QemuCrashed, Standing::Sby, 1_000)]);
    assert_eq!((p[0].phase, p[0].fast_path), (Phase::Ph2_5, false));
    // Damaged data starts at the LAF backup, then REF.
    let seq = vec![(Cause::DataDamaged, Standing::Alone, 1_000); 3];
    let phases: Vec<Phase> = run(&policy, &seq).iter().map(|p| p.phase).collect();
    assert_eq!(phases, [Phase::Ph3_0, Phase::Ph3_5, Phase::Autoheal]);
}

#[test]
fn phases_name_themselves_as_the_seed_does() {
    let names: Vec<String> = Phase::ALL
        .iter()
        .map(|p| serde_json::to_string(p).unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "\"PH0.5\"",
            "\"PH1.0\"",
            "\"PH2.0\"",
            "\"PH2.5\"",
            "\"PH3.0\"",
            "\"PH3.5\"",
            "\"autoheal\""
        ]
    );
    assert_eq!(
        Phase::Ph1_0.in_guest(),
        Some(crate::guest_proto::RestartPhase::Ph1_0)
    );
    assert_eq!(Phase::Ph2_5.in_guest(), None);
    assert_eq!(Phase::Autoheal.next(), Phase::Autoheal);
}

#[test]
fn a_policy_change_sets_only_what_it_gives_and_refuses_bad_values() {
    let base = Policy::default();
    let change: PolicyChange = serde_json::from_str(
        r#"{"phases": {"PH0.5": {"threshold": 5}, "PH2.5": {"probation_ms": 60000}}, "fast_path": false}"#,
    )
    .unwrap();
    let next = base.changed(&change).unwrap();
    assert_eq!(next.of(Phase::Ph0_5).threshold, 5);
    assert_eq!(
        next.of(Phase::Ph0_5).probation_ms,
        base.of(Phase::Ph0_5).probation_ms
    );
    assert_eq!(next.of(Phase::Ph2_5).probation_ms, 60_000);
    assert!(!next.fast_path);
    for p in [
        Phase::Ph1_0,
        Phase::Ph2_0,
        Phase::Ph3_0,
        Phase::Ph3_5,
        Phase::Autoheal,
    ] {
        assert_eq!(next.of(p), base.of(p));
    }
    let zero: PolicyChange =
        serde_json::from_str(r#"{"phases": {"PH1.0": {"threshold": 0}}}"#).unwrap();
    assert_eq!(
        base.changed(&zero),
        Err("phases.PH1.0.threshold: must be at least 1".into())
    );
    let long: PolicyChange =
        serde_json::from_str(r#"{"phases": {"PH1.0": {"probation_ms": 99999999999}}}"#).unwrap();
    assert!(base.changed(&long).unwrap_err().contains("probation_ms"));
    assert!(serde_json::from_str::<PolicyChange>(r#"{"phases": {"PH9": {}}}"#).is_err());
    assert!(serde_json::from_str::<PolicyChange>(r#"{"fastpath": true}"#).is_err());
    // The view names every phase.
    assert_eq!(next.view().phases.len(), Phase::ALL.len());
    // The LAF schedule: a day by default, a minute to 30 days allowed.
    assert_eq!(next.laf_every_ms, 24 * 3_600_000);
    let hourly: PolicyChange = serde_json::from_str(r#"{"laf_every_ms": 3600000}"#).unwrap();
    assert_eq!(base.changed(&hourly).unwrap().laf_every_ms, 3_600_000);
    for bad in [0u64, 59_999, 31 * 24 * 3_600_000] {
        let c = PolicyChange {
            laf_every_ms: Some(bad),
            ..PolicyChange::default()
        };
        assert!(
            base.changed(&c).unwrap_err().contains("laf_every_ms"),
            "{bad}"
        );
    }
    // A policy stored before the schedule existed reads with the default.
    let mut old = serde_json::to_value(base).unwrap();
    old.as_object_mut().unwrap().remove("laf_every_ms");
    let read: Policy = serde_json::from_value(old).unwrap();
    assert_eq!(read, base);
}

#[test]
fn standing_and_reboot_for_every_input() {
    use crate::role::Role;
    for role in [None, Some(Role::Act), Some(Role::Sby)] {
        assert_eq!(standing(false, false, role), Standing::Alone);
        assert_eq!(standing(true, true, role), Standing::Sby);
        let act = standing(true, false, role);
        assert_eq!(
            act == Standing::ActWithSby,
            role == Some(Role::Sby),
            "{role:?}"
        );
    }
    assert_eq!(reboot(true, true), Reboot::StartQemu);
    assert_eq!(reboot(true, false), Reboot::StartQemu);
    assert_eq!(reboot(false, true), Reboot::LetItBoot);
    assert_eq!(reboot(false, false), Reboot::Reset);
    let roles = std::iter::once(None).chain(Role::ALL.map(Some));
    for role in roles {
        for how in [Reboot::StartQemu, Reboot::LetItBoot, Reboot::Reset] {
            let has_role = matches!(role, Some(Role::Act | Role::Sby));
            assert_eq!(
                reloads(how, role),
                !(how == Reboot::LetItBoot && has_role),
                "{how:?} {role:?}"
            );
        }
    }
}
