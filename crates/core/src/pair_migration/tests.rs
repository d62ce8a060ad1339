//! Tests of the pair-migration plan: readable examples, an exhaustive
//! enumeration of every answer at every step for every setup shape (checked
//! against an independent tracker of what the answers imply), and a seeded
//! simulation against a small world model with random faults.

use super::*;
use crate::placement::rng::SplitMix64;

fn setup(hosts: [&str; 2], active: usize, targets: [Option<&str>; 2], switch_back: bool) -> Setup {
    Setup {
        members: ["sa".into(), "sb".into()],
        hosts: hosts.map(String::from),
        active,
        targets: targets.map(|t| t.map(String::from)),
        switch_back,
    }
}

fn migrated() -> Event {
    Event::Migrated {
        ok: true,
        error: None,
    }
}

fn migration_failed(e: &str) -> Event {
    Event::Migrated {
        ok: false,
        error: Some(e.into()),
    }
}

fn roles(i: usize) -> Event {
    Event::Roles { active: Some(i) }
}

fn switched(result: SwitchResult) -> Event {
    Event::Switched { result }
}

fn migrate(member: usize, to: &str) -> Command {
    Command::Migrate {
        member,
        to: to.into(),
    }
}

fn outcome(
    ok: bool,
    hosts: [&str; 2],
    active: Option<usize>,
    migrations: u32,
    switchovers: u32,
) -> Outcome {
    Outcome {
        ok,
        reason: None,
        hosts: hosts.map(String::from),
        active,
        migrations,
        switchovers,
    }
}

/// Runs a plan with the given answers; returns the commands (the first one
/// included) and the plan.
fn run(s: Setup, answers: Vec<Event>) -> (Vec<Command>, Plan) {
    let (mut plan, first) = Plan::start(s).unwrap();
    let mut cmds = vec![first];
    for ev in answers {
        cmds.push(plan.step(ev));
    }
    (cmds, plan)
}

/// The outcome with its reason taken out (returned separately).
fn split(cmd: &Command) -> (Outcome, Option<String>) {
    let mut o = cmd.outcome().expect("a Finish").clone();
    let reason = o.reason.take();
    (o, reason)
}

// ---------------------------------------------------------------------
// Examples
// ---------------------------------------------------------------------

#[test]
fn happy_path_without_switch_back() {
    let s = setup(["h1", "h2"], 0, [Some("h3"), Some("h4")], false);
    let (mut plan, first) = Plan::start(s).unwrap();
    assert_eq!(first, Command::ConfirmRoles);
    assert_eq!(plan.describe(), "step 1/4: confirm roles of sa and sb");

    assert_eq!(plan.step(roles(0)), migrate(1, "h4"));
    assert_eq!(plan.describe(), "step 2/4: migrate sb (SBY) h2 -> h4");
    assert_eq!(plan.step(migrated()), Command::Switchover { from: 0 });
    assert_eq!(plan.describe(), "step 3/4: switchover sa -> sb");
    assert_eq!(plan.step(switched(SwitchResult::Swapped)), migrate(0, "h3"));
    assert_eq!(plan.describe(), "step 4/4: migrate sa (now SBY) h1 -> h3");
    let end = plan.step(migrated());
    assert_eq!(
        end,
        Command::Finish(outcome(true, ["h3", "h4"], Some(1), 2, 1))
    );
    assert!(plan.is_finished());
    assert_eq!(
        plan.describe(),
        "done after 4 steps: sa on h3 (SBY), sb on h4 (ACT), 2 migration(s), 1 switchover(s)"
    );
    // Idempotent after Finish, whatever comes.
    assert_eq!(plan.step(Event::TimedOut), end);
    assert_eq!(plan.step(migrated()), end);
    assert_eq!(plan.outstanding(), &end);
}

#[test]
fn happy_path_with_switch_back() {
    let s = setup(["h1", "h2"], 0, [Some("h3"), Some("h4")], true);
    let (cmds, plan) = run(
        s,
        vec![
            roles(0),
            migrated(),
            switched(SwitchResult::Swapped),
            migrated(),
            switched(SwitchResult::Swapped),
        ],
    );
    assert_eq!(
        cmds,
        [
            Command::ConfirmRoles,
            migrate(1, "h4"),
            Command::Switchover { from: 0 },
            migrate(0, "h3"),
            Command::Switchover { from: 1 },
            Command::Finish(outcome(true, ["h3", "h4"], Some(0), 2, 2)),
        ]
    );
    assert!(plan
        .describe()
        .starts_with("done after 5 steps: sa on h3 (ACT)"));
}

#[test]
fn patent_case_both_on_one_host_to_the_same_target() {
    // JP6247648B2: both VMs on the source host, both to the destination,
    // then back to the original roles.
    let s = setup(["src", "src"], 1, [Some("dst"), Some("dst")], true);
    let (cmds, _) = run(
        s,
        vec![
            roles(1),
            migrated(),
            switched(SwitchResult::Swapped),
            migrated(),
            switched(SwitchResult::Swapped),
        ],
    );
    assert_eq!(
        cmds,
        [
            Command::ConfirmRoles,
            migrate(0, "dst"),
            Command::Switchover { from: 1 },
            migrate(1, "dst"),
            Command::Switchover { from: 0 },
            Command::Finish(outcome(true, ["dst", "dst"], Some(1), 2, 2)),
        ]
    );
}

#[test]
fn sby_migration_failure_leaves_everything_as_it_was() {
    let s = setup(["h1", "h1"], 0, [Some("h2"), Some("h2")], true);
    let (cmds, plan) = run(s, vec![roles(0), migration_failed("no memory on h2")]);
    let (o, reason) = split(cmds.last().unwrap());
    assert_eq!(o, outcome(false, ["h1", "h1"], Some(0), 0, 0));
    let reason = reason.unwrap();
    assert!(reason.contains("no memory on h2"), "{reason}");
    assert!(reason.contains("sb (SBY)"), "{reason}");
    assert!(plan.describe().starts_with("stopped at step 2/5: "));

    // A timeout is the same: the aborted migration leaves the VM home.
    let s = setup(["h1", "h1"], 0, [Some("h2"), Some("h2")], true);
    let (cmds, _) = run(s, vec![roles(0), Event::TimedOut]);
    let (o, reason) = split(cmds.last().unwrap());
    assert_eq!(o, outcome(false, ["h1", "h1"], Some(0), 0, 0));
    assert!(reason.unwrap().contains("timed out"));
}

#[test]
fn the_guests_are_trusted_over_the_record() {
    // Recorded ACT is sa, but the guests say sb: sa is the SBY, moved first.
    let s = setup(["h1", "h2"], 0, [Some("h3"), Some("h4")], false);
    let (cmds, _) = run(
        s,
        vec![
            roles(1),
            migrated(),
            switched(SwitchResult::Swapped),
            migrated(),
        ],
    );
    assert_eq!(
        cmds,
        [
            Command::ConfirmRoles,
            migrate(0, "h3"),
            Command::Switchover { from: 1 },
            migrate(1, "h4"),
            Command::Finish(outcome(true, ["h3", "h4"], Some(0), 2, 1)),
        ]
    );
}

#[test]
fn only_the_sby_moves_so_nothing_to_switch_back() {
    let s = setup(["h1", "h2"], 0, [None, Some("h3")], true);
    let (cmds, _) = run(s, vec![roles(0), migrated()]);
    assert_eq!(
        cmds,
        [
            Command::ConfirmRoles,
            migrate(1, "h3"),
            Command::Finish(outcome(true, ["h1", "h3"], Some(0), 1, 0)),
        ]
    );
}

#[test]
fn only_the_act_moves() {
    // The target equal to the current host counts as "stays".
    let s = setup(["h1", "h2"], 0, [Some("h3"), Some("h2")], false);
    let (cmds, _) = run(
        s,
        vec![roles(0), switched(SwitchResult::Swapped), migrated()],
    );
    assert_eq!(
        cmds,
        [
            Command::ConfirmRoles,
            Command::Switchover { from: 0 },
            migrate(0, "h3"),
            Command::Finish(outcome(true, ["h3", "h2"], Some(1), 1, 1)),
        ]
    );
}

#[test]
fn roles_not_confirmed() {
    for ev in [Event::Roles { active: None }, Event::TimedOut, roles(7)] {
        let s = setup(["h1", "h2"], 1, [Some("h3"), None], false);
        let (cmds, _) = run(s, vec![ev]);
        let (o, reason) = split(&cmds[1]);
        assert_eq!(o, outcome(false, ["h1", "h2"], Some(1), 0, 0));
        assert!(reason.unwrap().starts_with("roles not confirmed"));
    }
}

#[test]
fn switchover_failures() {
    let base = || setup(["h1", "h2"], 0, [Some("h3"), Some("h4")], true);
    let to_switch = || vec![roles(0), migrated()];

    let mut ev = to_switch();
    ev.push(switched(SwitchResult::RolledBack));
    let (cmds, _) = run(base(), ev);
    let (o, reason) = split(cmds.last().unwrap());
    assert_eq!(o, outcome(false, ["h1", "h4"], Some(0), 1, 0));
    assert!(reason.unwrap().starts_with("switchover rolled back"));

    for end in [switched(SwitchResult::Failed), Event::TimedOut] {
        let mut ev = to_switch();
        ev.push(end);
        let (cmds, plan) = run(base(), ev);
        let (o, reason) = split(cmds.last().unwrap());
        assert_eq!(o, outcome(false, ["h1", "h4"], None, 1, 0));
        assert!(reason.unwrap().contains("roles unknown: check the guests"));
        assert!(plan.describe().contains("(role unknown)"));
    }
}

#[test]
fn old_act_migration_failure_leaves_a_healthy_swapped_pair() {
    let s = setup(["h1", "h2"], 0, [Some("h3"), Some("h4")], true);
    let (cmds, _) = run(
        s,
        vec![
            roles(0),
            migrated(),
            switched(SwitchResult::Swapped),
            migration_failed("boom"),
        ],
    );
    let (o, reason) = split(cmds.last().unwrap());
    assert_eq!(o, outcome(false, ["h1", "h4"], Some(1), 1, 1));
    let reason = reason.unwrap();
    assert!(
        reason.contains("boom") && reason.contains("roles swapped"),
        "{reason}"
    );
}

#[test]
fn switch_back_failures() {
    let to_back = || {
        vec![
            roles(0),
            migrated(),
            switched(SwitchResult::Swapped),
            migrated(),
        ]
    };
    let base = || setup(["h1", "h2"], 0, [Some("h3"), Some("h4")], true);

    let mut ev = to_back();
    ev.push(switched(SwitchResult::RolledBack));
    let (cmds, _) = run(base(), ev);
    let (o, reason) = split(cmds.last().unwrap());
    assert_eq!(o, outcome(false, ["h3", "h4"], Some(1), 2, 1));
    assert_eq!(
        reason.unwrap(),
        "switch-back rolled back; the pair is healthy with roles swapped"
    );

    for end in [switched(SwitchResult::Failed), Event::TimedOut] {
        let mut ev = to_back();
        ev.push(end);
        let (cmds, _) = run(base(), ev);
        let (o, _) = split(cmds.last().unwrap());
        assert_eq!(o, outcome(false, ["h3", "h4"], None, 2, 1));
    }
}

#[test]
fn an_answer_that_does_not_fit_is_a_protocol_error() {
    let s = setup(["h1", "h2"], 0, [Some("h3"), Some("h4")], true);
    let (cmds, plan) = run(s, vec![roles(0), switched(SwitchResult::Swapped)]);
    let (o, reason) = split(cmds.last().unwrap());
    assert_eq!(o, outcome(false, ["h1", "h2"], Some(0), 0, 0));
    assert_eq!(
        reason.unwrap(),
        "protocol error: got switched (Swapped) while waiting for migrate sb to h4"
    );
    assert!(plan.is_finished());

    // While a switchover runs, the roles are unknown after a wrong answer.
    let s = setup(["h1", "h2"], 0, [Some("h3"), None], true);
    let (cmds, _) = run(s, vec![roles(0), migrated()]);
    let (o, reason) = split(cmds.last().unwrap());
    assert_eq!(o.active, None);
    assert!(reason
        .unwrap()
        .starts_with("protocol error: got migrated (ok)"));
}

#[test]
fn invalid_setups() {
    let ok = || setup(["h1", "h2"], 0, [Some("h3"), None], false);
    let err = |f: &dyn Fn(&mut Setup)| {
        let mut s = ok();
        f(&mut s);
        Plan::start(s).unwrap_err()
    };
    assert_eq!(err(&|s| s.active = 2), PlanError::BadActive(2));
    assert_eq!(err(&|s| s.members[1].clear()), PlanError::EmptyMember(1));
    assert_eq!(
        err(&|s| s.members[1] = "sa".into()),
        PlanError::SameMembers("sa".into())
    );
    assert_eq!(err(&|s| s.hosts[0].clear()), PlanError::EmptyHost(0));
    assert_eq!(
        err(&|s| s.targets[1] = Some(String::new())),
        PlanError::EmptyTarget(1)
    );
    assert_eq!(err(&|s| s.targets = [None, None]), PlanError::NothingToMove);
    assert_eq!(
        err(&|s| s.targets = [Some("h1".into()), Some("h2".into())]),
        PlanError::NothingToMove
    );
    assert!(PlanError::NothingToMove
        .to_string()
        .contains("nothing to move"));
    assert!(PlanError::SameMembers("sa".into())
        .to_string()
        .contains("`sa`"));
    // Same host at start, same target: both allowed.
    assert!(Plan::start(setup(["h1", "h1"], 1, [Some("h2"), Some("h2")], false)).is_ok());
}

#[test]
fn the_plan_serializes_for_the_operation_record() {
    let s = setup(["h1", "h2"], 0, [Some("h3"), Some("h4")], true);
    let (_, plan) = run(s, vec![roles(0), migrated()]);
    let v = serde_json::to_value(&plan).unwrap();
    assert_eq!(v["stage"]["stage"], "switching_over");
    assert_eq!(v["stage"]["act"], 0);
    assert_eq!(v["hosts"][1], "h4");
    assert_eq!(v["outstanding"]["command"], "switchover");
    assert_eq!(v["outstanding"]["from"], 0);
}

// ---------------------------------------------------------------------
// Exhaustive enumeration
// ---------------------------------------------------------------------

/// Every event the controller could send, fitting or not.
fn all_events() -> Vec<Event> {
    vec![
        roles(0),
        roles(1),
        Event::Roles { active: None },
        roles(2),
        migrated(),
        migration_failed("boom"),
        Event::Migrated {
            ok: false,
            error: None,
        },
        switched(SwitchResult::Swapped),
        switched(SwitchResult::RolledBack),
        switched(SwitchResult::Failed),
        Event::TimedOut,
    ]
}

/// Every setup shape: members on one host or two; each target none, a
/// member's own host, the other member's host, or one of two fresh hosts
/// (so targets equal to each other too); switch-back on and off; recorded
/// ACT 0 or 1. The guests' answer (recorded ACT, the other, none) is
/// enumerated as an event.
fn all_setups() -> Vec<Setup> {
    let choices = [None, Some("h1"), Some("h2"), Some("h3"), Some("h4")];
    let mut out = vec![];
    for hosts in [["h1", "h1"], ["h1", "h2"]] {
        for t0 in choices {
            for t1 in choices {
                for active in 0..2 {
                    for switch_back in [false, true] {
                        out.push(setup(hosts, active, [t0, t1], switch_back));
                    }
                }
            }
        }
    }
    out
}

/// What the answers so far imply, computed independently of the plan.
#[derive(Clone, Debug)]
struct Tracker {
    setup: Setup,
    /// Start hosts with every reported successful migration applied.
    hosts: [String; 2],
    /// The ACT as the answers say (`None` before confirmation).
    act: Option<usize>,
    /// A switchover's end was not reported as Swapped or RolledBack.
    roles_unknown: bool,
    migrations_ordered: u32,
    switchovers_ordered: u32,
    migrations_done: u32,
    switchovers_done: u32,
    commands: u32,
}

impl Tracker {
    fn new(setup: &Setup) -> Tracker {
        Tracker {
            setup: setup.clone(),
            hosts: setup.hosts.clone(),
            act: None,
            roles_unknown: false,
            migrations_ordered: 0,
            switchovers_ordered: 0,
            migrations_done: 0,
            switchovers_done: 0,
            commands: 0,
        }
    }

    fn target(&self, i: usize) -> Option<&String> {
        self.setup.targets[i]
            .as_ref()
            .filter(|t| **t != self.setup.hosts[i])
    }

    /// Checks a command issued by the plan (`ctx` names the path).
    fn command(&mut self, cmd: &Command, ctx: &str) {
        match cmd {
            Command::ConfirmRoles => {
                assert_eq!(self.commands, 0, "ConfirmRoles not first: {ctx}");
            }
            Command::Migrate { member, to } => {
                assert!(*member < 2, "{ctx}");
                assert!(!self.roles_unknown, "migrate with roles unknown: {ctx}");
                assert_eq!(
                    self.act,
                    Some(1 - member),
                    "migrating a member not known as SBY: {ctx}"
                );
                assert_eq!(Some(to), self.target(*member), "{ctx}");
                assert_ne!(*to, self.hosts[*member], "migrate to where it is: {ctx}");
                self.migrations_ordered += 1;
            }
            Command::Switchover { from } => {
                assert!(!self.roles_unknown, "{ctx}");
                assert_eq!(self.act, Some(*from), "switchover not from the ACT: {ctx}");
                self.switchovers_ordered += 1;
            }
            Command::Finish(o) => self.finish(o, ctx),
        }
        if !cmd.is_finish() {
            self.commands += 1;
        }
        assert!(self.migrations_ordered <= 2, "{ctx}");
        assert!(self.switchovers_ordered <= 2, "{ctx}");
        assert!(self.commands <= 5, "{ctx}");
    }

    /// Applies the answer `ev` to `last`.
    fn answer(&mut self, last: &Command, ev: &Event) {
        match (last, ev) {
            (Command::ConfirmRoles, Event::Roles { active: Some(i) }) if *i < 2 => {
                self.act = Some(*i);
            }
            (Command::Migrate { member, to }, Event::Migrated { ok: true, .. }) => {
                self.hosts[*member] = to.clone();
                self.migrations_done += 1;
            }
            (Command::Switchover { from }, Event::Switched { result }) => match result {
                SwitchResult::Swapped => {
                    self.act = Some(1 - from);
                    self.switchovers_done += 1;
                }
                SwitchResult::RolledBack => {}
                SwitchResult::Failed => self.roles_unknown = true,
            },
            // A timeout or a wrong answer: the switchover's end is unknown.
            (Command::Switchover { .. }, _) => self.roles_unknown = true,
            _ => {}
        }
    }

    fn finish(&self, o: &Outcome, ctx: &str) {
        assert_eq!(o.ok, o.reason.is_none(), "{ctx}");
        if let Some(r) = &o.reason {
            assert!(!r.is_empty(), "{ctx}");
        }
        assert_eq!(o.hosts, self.hosts, "hosts not the successful moves: {ctx}");
        assert_eq!(o.migrations, self.migrations_done, "{ctx}");
        assert_eq!(o.switchovers, self.switchovers_done, "{ctx}");
        let expected_active = if self.roles_unknown {
            None
        } else if self.act.is_none() {
            // Roles never confirmed: nothing was ordered; the record.
            assert_eq!(self.commands, 1, "{ctx}");
            Some(self.setup.active)
        } else {
            self.act
        };
        assert_eq!(o.active, expected_active, "{ctx}");
        if o.ok {
            for i in 0..2 {
                let want = self.target(i).unwrap_or(&self.setup.hosts[i]);
                assert_eq!(&o.hosts[i], want, "ok but not moved: {ctx}");
            }
            assert!(o.active.is_some(), "{ctx}");
        }
    }
}

#[derive(Default, Debug)]
struct Counts {
    setups: usize,
    rejected: usize,
    paths: usize,
    nodes: usize,
    ok_paths: usize,
    max_depth: usize,
}

fn explore(plan: &Plan, tracker: &Tracker, path: &mut Vec<Event>, setup: &Setup, c: &mut Counts) {
    c.nodes += 1;
    let d = plan.describe();
    assert!(!d.is_empty());
    let ctx = format!("{setup:?} after {path:?}");
    assert!(path.len() <= 5, "no Finish within 5 answers: {ctx}");
    if plan.is_finished() {
        c.paths += 1;
        c.max_depth = c.max_depth.max(path.len());
        let fin = plan.outstanding().clone();
        assert!(fin.is_finish());
        if fin.outcome().unwrap().ok {
            c.ok_paths += 1;
            assert!(d.starts_with("done after "), "{d}");
        } else {
            assert!(d.starts_with("stopped at step "), "{d}");
        }
        // Nothing after Finish: the same Finish for any event, no change.
        for ev in all_events() {
            let mut p = plan.clone();
            assert_eq!(p.step(ev), fin, "{ctx}");
            assert_eq!(&p, plan);
        }
        // Replay: the same inputs give the same commands and state.
        let (cmds, replayed) = run(setup.clone(), path.clone());
        assert_eq!(&replayed, plan, "replay differs: {ctx}");
        assert_eq!(cmds.last(), Some(&fin));
        assert_eq!(
            serde_json::to_string(&replayed).unwrap(),
            serde_json::to_string(plan).unwrap()
        );
        // Exactly one Finish on the path.
        assert_eq!(cmds.iter().filter(|c| c.is_finish()).count(), 1);
        return;
    }
    assert!(d.starts_with("step "), "{d}");
    for ev in all_events() {
        let mut p = plan.clone();
        let mut t = tracker.clone();
        let last = p.outstanding().clone();
        t.answer(&last, &ev);
        path.push(ev.clone());
        let cmd = p.step(ev);
        assert_eq!(p.outstanding(), &cmd);
        assert_eq!(p.is_finished(), cmd.is_finish());
        t.command(&cmd, &format!("{setup:?} after {path:?}"));
        explore(&p, &t, path, setup, c);
        path.pop();
    }
}

#[test]
fn exhaustive_every_answer_at_every_step() {
    let mut c = Counts::default();
    for s in all_setups() {
        let (plan, first) = match Plan::start(s.clone()) {
            Ok(x) => x,
            Err(e) => {
                assert_eq!(e, PlanError::NothingToMove, "{s:?}");
                let t = Tracker::new(&s);
                assert!(t.target(0).is_none() && t.target(1).is_none());
                c.rejected += 1;
                continue;
            }
        };
        c.setups += 1;
        assert_eq!(first, Command::ConfirmRoles);
        assert_eq!(plan.outstanding(), &first);
        let mut t = Tracker::new(&s);
        t.command(&first, "start");
        explore(&plan, &t, &mut vec![], &s, &mut c);
    }
    eprintln!("exhaustive: {c:?}");
    // 2 layouts x 25 target pairs x 2 x 2, minus the nothing-to-move ones.
    assert_eq!(c.setups + c.rejected, 200);
    assert_eq!(c.rejected, 32);
    assert!(c.ok_paths > 0 && c.max_depth == 5);
}

// ---------------------------------------------------------------------
// Deterministic simulation with random faults
// ---------------------------------------------------------------------

/// The real state of a pair, as the executor sees it. Roles are one ACT
/// (`Some(i)`) or none; two ACTs cannot be represented, and the switchover
/// machine (`crate::switchover`) never produces them.
#[derive(Debug, Clone)]
struct World {
    hosts: [String; 2],
    act: Option<usize>,
}

fn random_roles(r: &mut SplitMix64) -> Option<usize> {
    match r.below(3) {
        0 => Some(0),
        1 => Some(1),
        _ => None,
    }
}

#[derive(Default, Debug)]
struct SimCounts {
    runs: usize,
    skipped_setups: usize,
    ok: usize,
    unconfirmed: usize,
    roles_unknown: usize,
    other_failures: usize,
    switchovers: u32,
    migrations: u32,
}

/// Answers a command by applying it to the world, with random failures.
fn execute(r: &mut SplitMix64, w: &mut World, cmd: &Command) -> Event {
    match cmd {
        Command::ConfirmRoles => {
            if r.chance(0.1) {
                Event::TimedOut
            } else {
                Event::Roles { active: w.act }
            }
        }
        Command::Migrate { member, to } => {
            assert_ne!(w.act, Some(*member), "the plan migrated the ACT: {w:?}");
            assert_ne!(&w.hosts[*member], to, "migration to where it is");
            match r.below(20) {
                0..=14 => {
                    w.hosts[*member] = to.clone();
                    migrated()
                }
                15..=17 => migration_failed("copy did not converge"),
                _ => Event::TimedOut, // aborted: the VM stays on its source
            }
        }
        Command::Switchover { from } => {
            assert_eq!(w.act, Some(*from), "switchover not from the ACT: {w:?}");
            match r.below(10) {
                0..=6 => {
                    w.act = Some(1 - from);
                    switched(SwitchResult::Swapped)
                }
                7 => switched(SwitchResult::RolledBack),
                8 => {
                    w.act = random_roles(r);
                    switched(SwitchResult::Failed)
                }
                _ => {
                    w.act = random_roles(r);
                    Event::TimedOut
                }
            }
        }
        Command::Finish(_) => unreachable!("not executed"),
    }
}

fn random_setup(r: &mut SplitMix64) -> Setup {
    let pool = ["h0", "h1", "h2", "h3"];
    let mut host = || pool[r.index(pool.len())];
    let hosts = [host(), host()];
    let mut target = || {
        if r.chance(0.3) {
            None
        } else {
            Some(pool[r.index(pool.len())])
        }
    };
    let targets = [target(), target()];
    setup(hosts, r.index(2), targets, r.chance(0.5))
}

#[test]
fn simulation_with_random_faults() {
    let mut r = SplitMix64::new(0x5eed_0001);
    let mut c = SimCounts::default();
    while c.runs < 10_000 {
        let s = random_setup(&mut r);
        let (mut plan, mut cmd) = match Plan::start(s.clone()) {
            Ok(x) => x,
            Err(e) => {
                assert_eq!(e, PlanError::NothingToMove);
                c.skipped_setups += 1;
                continue;
            }
        };
        c.runs += 1;
        let mut world = World {
            hosts: s.hosts.clone(),
            act: match r.below(10) {
                0..=6 => Some(s.active),
                7..=8 => Some(1 - s.active),
                _ => None,
            },
        };
        let start_world = world.clone();
        let mut confirmed = false;
        let mut steps = 0;
        while !cmd.is_finish() {
            let ev = execute(&mut r, &mut world, &cmd);
            if cmd == Command::ConfirmRoles {
                confirmed = matches!(ev, Event::Roles { active: Some(_) });
            }
            cmd = plan.step(ev);
            steps += 1;
            assert!(steps <= 5, "no Finish within 5 steps: {s:?}");
            assert!(!plan.describe().is_empty());
        }
        let o = cmd.outcome().unwrap();
        assert_eq!(o.hosts, world.hosts, "{s:?} {o:?}");
        if confirmed {
            if let Some(a) = o.active {
                assert_eq!(world.act, Some(a), "{s:?} {o:?}");
            }
        } else {
            // Nothing was ordered: the pair is as it was, the record kept.
            assert_eq!(o.hosts, start_world.hosts);
            assert_eq!(o.active, Some(s.active));
            assert_eq!((o.migrations, o.switchovers), (0, 0));
        }
        if o.ok {
            let p = plan.setup();
            for i in 0..2 {
                assert_eq!(
                    &world.hosts[i],
                    p.targets[i].as_ref().unwrap_or(&s.hosts[i])
                );
            }
            assert_eq!(world.act, o.active);
            c.ok += 1;
        } else if !confirmed {
            c.unconfirmed += 1;
        } else if o.active.is_none() {
            c.roles_unknown += 1;
        } else {
            c.other_failures += 1;
        }
        c.migrations += o.migrations;
        c.switchovers += o.switchovers;
    }
    eprintln!("simulation: {c:?}");
    assert!(c.ok > 0 && c.unconfirmed > 0 && c.roles_unknown > 0 && c.other_failures > 0);
}

#[test]
fn roles_event_needs_one_act_and_one_sby() {
    use crate::role::Role::{Act, None as NoRole, Quiesced, Sby};
    let all = [None, Some(NoRole), Some(Sby), Some(Act), Some(Quiesced)];
    for a in all {
        for b in all {
            let want = match (a, b) {
                (Some(Act), Some(Sby)) => Some(0),
                (Some(Sby), Some(Act)) => Some(1),
                _ => None,
            };
            assert_eq!(
                roles_event([a, b]),
                Event::Roles { active: want },
                "{a:?} {b:?}"
            );
        }
    }
}

/// An SBY may be slowed until its copy converges; the rest is the default.
#[test]
fn the_standby_migrates_with_auto_converge() {
    let t = super::standby_tuning();
    assert!(t.auto_converge);
    assert_eq!((t.max_bandwidth_mib, t.downtime_limit_ms), (None, None));
    assert_eq!(t.validate(), Ok(()));
}
