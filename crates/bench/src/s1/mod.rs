//! S1: moving a pair off a host under SIP load, the Duplex way (the SBY
//! takes over, the old ACT is live-migrated as SBY; nothing that serves
//! clients is paused) against plain live migration of the ACT (as Nova or
//! KubeVirt do it), also under a memory load in the guest, plus a control
//! without any move and `duplex host drain` of a host carrying the ACT and
//! a lone VM.
//!
//! One lab, one pair (ACT `sa` on h1, SBY `sb` on h3), one sipp run per
//! arm at the same steady rate; each arm makes `2 × moves` moves,
//! [`SETTLE`] apart, and the pair is put back between arms. sipp counts
//! failures and retransmissions; its per-call response times are split
//! into those that overlapped a move and the rest.

pub(crate) mod moves;
mod report;
mod restarts;

use crate::stats::{self, RunInfo};
use crate::Lab;
use anyhow::Context;
use duplex_core::guest_proto::Op;
use duplex_sipp::parse::{parse_rtt_csv, RttSample};
use duplex_sipp::SippRun;
use moves::{cli, host_of, placement, timed};
use report::{split, table, ArmResult};
use serde::Serialize;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

/// The steady rate: the highest clean rate of the guest's SIP benchmark
/// (`bench/results/sip.md`).
const RATE_CPS: f64 = 20.0;
const CALL_MS: u64 = 1000;
const SETTLE: Duration = Duration::from_secs(8);
/// The memory load in `sa`'s guest for the loaded arms.
const LOAD_MIB: u32 = 96;
const LOAD_MIB_PER_S: u32 = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// No move at all: the control.
    None,
    /// `pair migrate --from <ACT's host> --to <free host>`: the SBY takes
    /// over, the old ACT moves as SBY (what a drain does with a pair).
    Pair,
    /// `pair migrate --from h1/h2 --to h2/h1 --switch-back`: as `Pair`,
    /// then the roles are switched back onto the VM just migrated.
    PairSwitchBack,
    /// `vm migrate sa --to h2/h1 --auto-converge`: the ACT is migrated.
    Plain,
    /// `host drain <ACT's host>` with a lone VM `solo` on that host too.
    Drain,
}

impl Way {
    fn as_str(self) -> &'static str {
        match self {
            Way::None => "none",
            Way::Pair => "pair_migrate",
            Way::PairSwitchBack => "pair_migrate_switch_back",
            Way::Plain => "plain_live_migration",
            Way::Drain => "host_drain",
        }
    }
}

struct Arm {
    name: &'static str,
    way: Way,
    load: bool,
}

const ARMS: &[Arm] = &[
    Arm {
        name: "steady (no move)",
        way: Way::None,
        load: false,
    },
    Arm {
        name: "(a) Duplex pair migration",
        way: Way::Pair,
        load: false,
    },
    Arm {
        name: "(b) plain live migration of the ACT",
        way: Way::Plain,
        load: false,
    },
    Arm {
        name: "(a) Duplex pair migration, memory load",
        way: Way::Pair,
        load: true,
    },
    Arm {
        name: "(a) Duplex pair migration --switch-back",
        way: Way::PairSwitchBack,
        load: false,
    },
    Arm {
        name: "Duplex host drain (pair + lone VM)",
        way: Way::Drain,
        load: false,
    },
    // Last: throttling the ACT to make its migration converge can leave
    // the pair unable to serve (seen once: the guest rebooted).
    Arm {
        name: "(c) plain live migration, memory load",
        way: Way::Plain,
        load: true,
    },
];

#[derive(Serialize)]
struct S1Result {
    benchmark: &'static str,
    run: RunInfo,
    rate_cps: f64,
    call_length_ms: u64,
    moves_per_arm: usize,
    arms: Vec<ArmResult>,
    /// Why the arms after the last one could not run.
    stopped: Option<String>,
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Untimed preparation, then the command of move `i` of an arm.
async fn next_move(way: Way, i: usize) -> anyhow::Result<Vec<String>> {
    let (from, to) = if i.is_multiple_of(2) {
        ("h1", "h2")
    } else {
        ("h2", "h1")
    };
    Ok(match way {
        Way::None => Vec::new(),
        Way::Plain => strings(&[
            "vm",
            "migrate",
            "sa",
            "--to",
            to,
            "--auto-converge",
            "--plain",
        ]),
        Way::PairSwitchBack => strings(&[
            "pair",
            "migrate",
            "sip",
            "--from",
            from,
            "--to",
            to,
            "--switch-back",
        ]),
        Way::Pair => {
            let p = placement().await?;
            strings(&[
                "pair",
                "migrate",
                "sip",
                "--from",
                &p.act_host,
                "--to",
                p.free_host(),
            ])
        }
        Way::Drain => {
            moves::all_hosts_ready().await?;
            let p = placement().await?;
            if host_of("solo").await? != p.act_host {
                // Right after a drain the controller may still see `solo`
                // arriving: try again for a while.
                let mut tries = 0;
                while let Err(e) = cli(&["vm", "migrate", "solo", "--to", &p.act_host]).await {
                    tries += 1;
                    anyhow::ensure!(tries < 20, "moving solo onto {}: {e:#}", p.act_host);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            strings(&["host", "drain", &p.act_host])
        }
    })
}

/// Starts (`mib` > 0) or stops the memory load in both members' guests,
/// running only on the one that is ACT: the work of the service, which
/// follows the ACT role.
async fn memory_load(lab: &Lab, mib: u32, mib_per_s: u32) -> anyhow::Result<()> {
    for vm in ["sa", "sb"] {
        let host = host_of(vm).await?;
        let n: u8 = host.trim_start_matches('h').parse().context("host name")?;
        let op = Op::MemoryLoad {
            mib,
            mib_per_s,
            while_act: true,
        };
        lab.agent(n)?
            .guest(vm, &op)
            .await
            .with_context(|| format!("memory load in {vm}"))?;
    }
    Ok(())
}

async fn run_arm(
    lab: &Lab,
    (arm, name): (&Arm, String),
    vip: Ipv4Addr,
    moves: usize,
    out: &Path,
) -> anyhow::Result<ArmResult> {
    eprintln!("  arm {name}");
    // A guest that restarted in the arm before is being repaired.
    wait_healthy().await?;
    moves::restore().await.context("putting the pair back")?;
    let boots = restarts::boot_ids().await;
    if arm.load {
        memory_load(lab, LOAD_MIB, LOAD_MIB_PER_S).await?;
    }
    let work = std::env::temp_dir().join(format!(
        "duplex-bench-s1-{}-{}",
        std::process::id(),
        arm.way.as_str()
    ));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    // sipp runs until stopped after the last move; the duration only
    // bounds a run whose moves all hit MOVE_LIMIT.
    let span = SETTLE * (2 * moves as u32 + 1) + Duration::from_secs(6 * moves as u64);
    let mut run = SippRun::new(std::net::SocketAddr::from((vip, 5060)), work.clone());
    run.rate_cps = RATE_CPS;
    run.call_length_ms = CALL_MS;
    run.calls = None;
    run.duration = Some(span + moves::MOVE_LIMIT * (2 * moves as u32));
    // A call left without an answer this long is failed, not waited for.
    run.recv_timeout = Some(Duration::from_secs(10));
    run.timeout = run.duration.unwrap_or(span) + Duration::from_secs(60);
    let prefix = strings(&["ip", "netns", "exec", lab.client_ns()]);
    let sipp = duplex_sipp::spawn(&run, &prefix)?;
    let t0 = Instant::now();
    let mut done = Vec::new();
    if arm.way == Way::None {
        // The control runs as long as the others do.
        tokio::time::sleep(span).await;
    } else {
        for i in 0..2 * moves {
            tokio::time::sleep(SETTLE / 2).await;
            let args = next_move(arm.way, i).await?;
            tokio::time::sleep(SETTLE / 2).await;
            let m = timed(&args, t0).await;
            eprintln!(
                "    move {}/{}: {}: {} in {:.0} ms",
                i + 1,
                2 * moves,
                m.command,
                if m.ok { "ok" } else { "FAILED" },
                m.end_ms - m.start_ms
            );
            let failed = !m.ok;
            done.push(m);
            if failed {
                break;
            }
        }
        tokio::time::sleep(SETTLE).await;
    }
    sipp.stop();
    let report = sipp.wait().await?;
    if arm.load {
        if let Err(e) = memory_load(lab, 0, 0).await {
            eprintln!("    stopping the memory load: {e:#}");
        }
    }
    eprintln!("    {}", report.summary());
    let guest_restarts = restarts::restarted(&boots, &restarts::boot_ids().await);
    let lab_dir = Path::new(duplex_lab::RUN_DIR).join(format!("lab-{}", Lab::NAME));
    let mut consoles = Vec::new();
    for vm in &guest_restarts {
        let label = name.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        match restarts::keep_consoles(&lab_dir, out, &label, vm) {
            Ok(f) => {
                eprintln!("    {vm}'s guest restarted; its consoles: {}", f.display());
                consoles.push(f.display().to_string());
            }
            Err(e) => eprintln!("    {vm}'s guest restarted; keeping its consoles: {e}"),
        }
    }
    let samples = rtt_samples(&report.work_dir)?;
    let (during, steady) = split(&samples, &done);
    let migrations = || done.iter().flat_map(|m| m.migrations.iter());
    let plain = arm.way == Way::Plain;
    Ok(ArmResult {
        arm: name,
        way: arm.way.as_str(),
        memory_load: arm.load.then_some((LOAD_MIB, LOAD_MIB_PER_S)),
        during_moves: during,
        steady,
        // Duplex migrates only SBYs and lone VMs: the ACT never pauses.
        act_pause_ms: match plain {
            true => migrations().map(|m| m.downtime_ms).max(),
            false => Some(0).filter(|_| !done.is_empty()),
        },
        any_pause_ms: migrations().map(|m| m.downtime_ms).max(),
        switchover_ms_max: done
            .iter()
            .flat_map(|m| m.switchovers_ms.iter().copied())
            .max(),
        throttle_pct_max: migrations().map(|m| m.throttle_pct).max(),
        move_ms_max: done
            .iter()
            .map(|m| m.end_ms - m.start_ms)
            .max_by(|a, b| a.total_cmp(b)),
        moves: done.clone(),
        sipp: report,
        guest_restarts,
        consoles,
    })
}

fn rtt_samples(dir: &Path) -> anyhow::Result<Vec<RttSample>> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.to_string_lossy()
            .ends_with(duplex_sipp::config::RTT_SUFFIX)
        {
            let text = std::fs::read_to_string(&p)?;
            return parse_rtt_csv(&text).with_context(|| p.display().to_string());
        }
    }
    Ok(Vec::new())
}

async fn wait_healthy() -> anyhow::Result<()> {
    for _ in 0..100 {
        if let Ok(p) = cli(&["pair", "show", "sip"]).await {
            if p["health"] == "healthy" {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    anyhow::bail!("the pair never became healthy")
}

pub async fn run(lab: &Lab, out: &Path, moves: usize, drain_runs: usize) -> anyhow::Result<()> {
    let (ip_a, ip_b, vip) = (lab.vm_ip(1)?, lab.vm_ip(2)?, lab.vm_ip(0)?);
    // Consoles kept by an earlier run belong to its results, not this one's.
    let _ = std::fs::remove_dir_all(out.join("s1-consoles"));
    let (ma, mb) = (format!("sa={ip_a}"), format!("sb={ip_b}"));
    let vip_s = vip.to_string();
    cli(&[
        "pair", "create", "sip", "--vip", &vip_s, "--member", &ma, "--member", &mb, "--hosts",
        "h1,h3",
    ])
    .await?;
    wait_healthy().await?;
    let solo_ip = lab.vm_ip(3)?.to_string();
    cli(&["vm", "create", "solo", "--ip", &solo_ip, "--host", "h2"]).await?;
    // Warm-up, not reported: fresh guests (code not yet translated under
    // TCG, caches cold) answer the first calls slowly.
    let warm = std::env::temp_dir().join(format!("duplex-bench-s1-{}-warm", std::process::id()));
    std::fs::create_dir_all(&warm)?;
    let mut run = SippRun::new(std::net::SocketAddr::from((vip, 5060)), warm);
    run.rate_cps = RATE_CPS;
    run.call_length_ms = CALL_MS;
    run.calls = Some((RATE_CPS * 20.0) as u64);
    run.timeout = Duration::from_secs(80);
    let prefix = strings(&["ip", "netns", "exec", lab.client_ns()]);
    eprintln!("  warm-up (20 s, not reported)");
    let r = duplex_sipp::run(&run, &prefix).await?;
    eprintln!("    {}", r.summary());
    let mut arms = Vec::new();
    let mut stopped = None;
    let mut runs = Vec::new();
    for arm in ARMS {
        let n = if arm.way == Way::Drain { drain_runs } else { 1 };
        for k in 1..=n {
            let name = match n {
                1 => arm.name.to_string(),
                _ => format!("{} (run {k}/{n})", arm.name),
            };
            runs.push((arm, name));
        }
    }
    for (arm, name) in runs {
        match run_arm(lab, (arm, name.clone()), vip, moves, out).await {
            Ok(a) => arms.push(a),
            Err(e) => {
                eprintln!("  arm {name} could not run: {e:#}");
                stopped = Some(format!("arm {name} and those after it: {e:#}"));
                break;
            }
        }
    }
    let mut md = format!(
        "# S1: moving a pair off a host under SIP load\n\n\
         sipp's built-in UAC at {RATE_CPS:.0} calls/s, {CALL_MS} ms calls, one sipp run per arm; {} moves per arm, {} s apart; TCG (see `run`).\n\
         The pair starts each arm with ACT `sa` on h1 and SBY `sb` on h3.\n\n\
         - (a) `duplex pair migrate sip --from <ACT's host> --to <free host>`: the SBY takes over, the old ACT is live-migrated as SBY.\n\
         - (a) `--switch-back`: between h1 and h2, then the roles are switched back onto the VM just migrated.\n\
         - (b), (c) `duplex vm migrate sa --to h2|h1 --auto-converge`: plain pre-copy live migration of the ACT, as Nova or KubeVirt do it (with auto-converge permitted: without it, (c) never converges).\n\
         - Drain: `duplex host drain <ACT's host>`, with a lone VM `solo` moved onto that host first (untimed).\n\
         - Memory load: a process rewriting {LOAD_MIB} MiB at {LOAD_MIB_PER_S} MiB/s in the guest of whichever member is ACT (stopped on the SBY), as the service's own work would.\n\n\
         \"During moves\": calls whose INVITE → 200 overlapped a move. Failed counts abandoned calls too. \
         ACT pause: QEMU downtime of the VM serving calls; longest switchover: how long the service address was held between two VMs. \
         Guest restarts: members whose guest booted again during the arm (the controller then repairs the pair; their console logs are kept in `s1-consoles/`).\n\n",
        2 * moves,
        SETTLE.as_secs()
    );
    md.push_str(&table(&arms));
    if let Some(why) = &stopped {
        md.push_str(&format!("\nNot run: {why}\n"));
    }
    println!("{md}");
    let result = S1Result {
        benchmark: "s1",
        run: stats::run_info("see boot.json").await,
        rate_cps: RATE_CPS,
        call_length_ms: CALL_MS,
        moves_per_arm: 2 * moves,
        arms,
        stopped,
    };
    stats::write(out, "s1", &result, &md)
}
