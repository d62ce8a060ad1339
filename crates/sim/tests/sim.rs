//! The controller's simulation in CI: many seeded schedules, none may
//! break an invariant. A failure names its seed and the command that
//! replays it alone, with its log.

use std::time::Instant;

/// Schedules per run of each arm (`DUPLEX_SIM_SCHEDULES` overrides all):
/// the base arm, and the arms with silent agents and with host loss, whose
/// schedules run longer (leases, failovers, heals).
const SCHEDULES: u64 = 10_000;
const SILENT_SCHEDULES: u64 = 2_000;
const HOST_LOSS_SCHEDULES: u64 = 3_000;

fn replay_hint(seed: u64) -> String {
    format!("replay: DUPLEX_SIM_SEED={seed} cargo test --release -p duplex-sim --test sim one_seed -- --nocapture")
}

fn check(r: &duplex_sim::Report) -> Result<(), String> {
    if r.violations.is_empty() {
        return Ok(());
    }
    Err(format!(
        "seed {}: {}\n  schedule:\n    {}\n  {}",
        r.seed,
        r.violations.join("\n  "),
        r.log.join("\n    "),
        replay_hint(r.seed)
    ))
}

#[test]
fn seeded_schedules_keep_every_invariant() {
    many(
        duplex_sim::Classes {
            silent_agents: false,
            host_loss: false,
        },
        SCHEDULES,
    );
}

/// With agents that go silent while their VMs run on, and neither a fence
/// device nor a self-fence lease: nothing may be started twice.
#[test]
fn seeded_schedules_with_silent_agents() {
    many(
        duplex_sim::Classes {
            silent_agents: true,
            host_loss: false,
        },
        SILENT_SCHEDULES,
    );
}

/// With hosts that lose power or their management link: agents fence
/// themselves after their lease, the controller fails over and heals.
#[test]
fn seeded_schedules_with_host_loss() {
    many(
        duplex_sim::Classes {
            silent_agents: true,
            host_loss: true,
        },
        HOST_LOSS_SCHEDULES,
    );
}

fn many(classes: duplex_sim::Classes, default_n: u64) {
    let n: u64 = std::env::var("DUPLEX_SIM_SCHEDULES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_n);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let t0 = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|k| {
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let (mut kills, mut recoveries, mut ops) = (0u64, 0u64, 0u64);
                let mut seed = k;
                while seed < n {
                    let r = duplex_sim::run_with(seed, classes);
                    kills += r.kills as u64;
                    recoveries += r.recoveries as u64;
                    ops += r.operations as u64;
                    if let Err(e) = check(&r) {
                        failures.push(e);
                    }
                    seed += threads;
                }
                (failures, kills, recoveries, ops)
            })
        })
        .collect();
    let mut failures = Vec::new();
    let (mut kills, mut recoveries, mut ops) = (0, 0, 0);
    for w in workers {
        let (f, k, r, o) = w.join().expect("a simulation thread panicked");
        failures.extend(f);
        kills += k;
        recoveries += r;
        ops += o;
    }
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "simulation ({classes:?}): {n} schedules in {secs:.1} s ({:.0}/s on {threads} threads): {ops} operations, {kills} controller kills, {recoveries} recoveries, {} failing",
        n as f64 / secs,
        failures.len()
    );
    for f in &failures {
        eprintln!("{}", f.lines().next().unwrap_or_default());
    }
    if let Some(first) = failures.first() {
        panic!(
            "{} of {n} schedules broke an invariant; the first:\n{first}",
            failures.len()
        );
    }
}

#[test]
fn one_seed() {
    let Some(seed) = std::env::var("DUPLEX_SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    else {
        return;
    };
    let silent_agents = std::env::var("DUPLEX_SIM_SILENT_AGENTS").is_ok();
    let host_loss = std::env::var("DUPLEX_SIM_HOST_LOSS").is_ok();
    let classes = duplex_sim::Classes {
        silent_agents: silent_agents || host_loss,
        host_loss,
    };
    let r = duplex_sim::run_with(seed, classes);
    eprintln!("seed {seed}:\n  {}", r.log.join("\n  "));
    eprintln!("  {}", r.events.join("\n  "));
    if let Err(e) = check(&r) {
        panic!("{e}");
    }
}

#[test]
fn a_schedule_replays_the_same() {
    let (a, b) = (duplex_sim::run(7), duplex_sim::run(7));
    assert_eq!(a.log, b.log);
    assert_eq!(a.violations, b.violations);
    assert_eq!(a.obeyed, b.obeyed);
}
