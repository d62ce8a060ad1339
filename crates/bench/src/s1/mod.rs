//! S1: moving the ACT member of a pair off its host under SIP load, the
//! Duplex way (`pair migrate --switch-back`: the SBY takes over, the old
//! ACT moves as SBY, roles are switched back) against plain live migration
//! of the ACT (as Nova or KubeVirt would do it), each also under a memory
//! load in the ACT guest, plus a run without any move as the control.
//!
//! One lab, one pair (ACT `sa` on h1, SBY `sb` on h3), one sipp run per
//! arm at the same steady rate; each arm moves the ACT member h1 → h2 and
//! back `moves` times, 8 s apart. sipp counts failures and
//! retransmissions; its per-call response times are split into those that
//! overlapped a move and the rest.

use crate::stats::{self, RunInfo};
use crate::Lab;
use anyhow::Context;
use duplex_agent::client::AgentClient;
use duplex_core::guest_proto::Op;
use duplex_sipp::parse::{parse_rtt_csv, response_times, RttSample};
use duplex_sipp::ResponseTimes;
use duplex_sipp::{SippReport, SippRun};
use serde::Serialize;
use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

/// The steady rate: the highest clean rate of the guest's SIP benchmark
/// (`bench/results/sip.md`).
const RATE_CPS: f64 = 20.0;
const CALL_MS: u64 = 1000;
const SETTLE: Duration = Duration::from_secs(8);
/// The memory load in the ACT guest for the loaded arms.
const LOAD_MIB: u32 = 96;
const LOAD_MIB_PER_S: u32 = 200;
/// A move still running after this is reported failed and the arm ends.
const MOVE_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Way {
    /// No move at all: the control.
    None,
    Duplex,
    Plain,
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
        way: Way::Duplex,
        load: false,
    },
    Arm {
        name: "(b) plain live migration of the ACT",
        way: Way::Plain,
        load: false,
    },
    Arm {
        name: "(c) plain live migration, memory load",
        way: Way::Plain,
        load: true,
    },
    Arm {
        name: "(a') Duplex pair migration, memory load",
        way: Way::Duplex,
        load: true,
    },
];

#[derive(Debug, Clone, Serialize)]
struct Move {
    command: String,
    start_ms: f64,
    end_ms: f64,
    ok: bool,
    /// Live migrations the controller reported meanwhile: (VM, downtime
    /// ms, total ms).
    migrations: Vec<(String, u64, u64)>,
}

#[derive(Debug, Clone, Serialize)]
struct ArmResult {
    arm: &'static str,
    way: Way,
    memory_load: Option<(u32, u32)>,
    sipp: SippReport,
    moves: Vec<Move>,
    during_moves: Option<ResponseTimes>,
    steady: Option<ResponseTimes>,
    /// Longest QEMU downtime of the ACT VM (`sa`) over the arm's moves.
    act_pause_ms: Option<u64>,
    /// Longest downtime of any VM migrated (the SBY's, for Duplex).
    any_pause_ms: Option<u64>,
    move_ms_max: Option<f64>,
}

#[derive(Serialize)]
struct S1Result {
    benchmark: &'static str,
    run: RunInfo,
    rate_cps: f64,
    call_length_ms: u64,
    moves_per_arm: usize,
    arms: Vec<ArmResult>,
}

/// Runs the CLI against the bench lab; JSON output.
async fn cli(args: &[&str]) -> anyhow::Result<Value> {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(["-o".into(), "json".into()]);
    let out = tokio::process::Command::new(crate::duplex_bin())
        .args(&all)
        .env("DUPLEX_LAB", Lab::NAME)
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "duplex {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    serde_json::from_slice(&out.stdout).with_context(|| format!("duplex {}", args.join(" ")))
}

/// Splits response times: those whose call setup overlapped a move
/// window, and the rest. Pure.
fn split(samples: &[RttSample], moves: &[Move]) -> (Option<ResponseTimes>, Option<ResponseTimes>) {
    let (during, steady): (Vec<RttSample>, Vec<RttSample>) = samples.iter().partition(|s| {
        let sent = s.date_ms - s.response_time_ms;
        moves
            .iter()
            .any(|m| sent <= m.end_ms && s.date_ms >= m.start_ms)
    });
    (response_times(&during, 1), response_times(&steady, 1))
}

/// `(vm, downtime, total)` from a `vm.migrated` event's message.
fn migration_of(ev: &Value) -> Option<(String, u64, u64)> {
    if ev["kind"] != "vm.migrated" {
        return None;
    }
    let msg = ev["message"].as_str()?;
    let num_after = |key: &str| -> Option<u64> {
        let rest = &msg[msg.find(key)? + key.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    let vm = msg.split_whitespace().next()?.to_string();
    Some((vm, num_after("downtime ")?, num_after("total ")?))
}

async fn events_since(at_ms: u64) -> Vec<Value> {
    match cli(&["events"]).await {
        Ok(Value::Array(v)) => v
            .into_iter()
            .filter(|e| e["at_ms"].as_u64().unwrap_or(0) >= at_ms)
            .collect(),
        _ => Vec::new(),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn one_move(way: Way, from: &str, to: &str, t0: Instant) -> Move {
    let args: Vec<&str> = match way {
        Way::Duplex => vec![
            "pair",
            "migrate",
            "sip",
            "--from",
            from,
            "--to",
            to,
            "--switch-back",
        ],
        _ => vec!["vm", "migrate", "sa", "--to", to],
    };
    let wall = now_ms();
    let start_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let res = match tokio::time::timeout(MOVE_LIMIT, cli(&args)).await {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!(
            "not done within {} s (a live migration that does not converge)",
            MOVE_LIMIT.as_secs()
        )),
    };
    let end_ms = t0.elapsed().as_secs_f64() * 1000.0;
    if let Err(e) = &res {
        eprintln!("    move failed: {e:#}");
    }
    let migrations = events_since(wall)
        .await
        .iter()
        .filter_map(migration_of)
        .collect();
    Move {
        command: format!("duplex {}", args.join(" ")),
        start_ms,
        end_ms,
        ok: res.is_ok(),
        migrations,
    }
}

async fn run_arm(
    arm: &Arm,
    vip: Ipv4Addr,
    act_agent: &AgentClient,
    client_ns: &str,
    moves: usize,
) -> anyhow::Result<ArmResult> {
    eprintln!("  arm {}", arm.name);
    if arm.load {
        act_agent
            .guest(
                "sa",
                &Op::MemoryLoad {
                    mib: LOAD_MIB,
                    mib_per_s: LOAD_MIB_PER_S,
                },
            )
            .await
            .context("starting the memory load in sa")?;
    }
    let work = std::env::temp_dir().join(format!(
        "duplex-bench-s1-{}-{}",
        std::process::id(),
        arm.name.split_whitespace().next().unwrap_or("arm")
    ));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let span = SETTLE * (2 * moves as u32 + 1) + Duration::from_secs(6 * moves as u64);
    let mut run = SippRun::new(std::net::SocketAddr::from((vip, 5060)), work.clone());
    run.rate_cps = RATE_CPS;
    run.call_length_ms = CALL_MS;
    run.calls = None;
    run.duration = Some(span);
    run.timeout = span + Duration::from_secs(60);
    let prefix: Vec<String> = ["ip", "netns", "exec", client_ns]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let sipp = duplex_sipp::spawn(&run, &prefix)?;
    let t0 = Instant::now();
    tokio::time::sleep(SETTLE).await;
    let mut done = Vec::new();
    if arm.way == Way::None {
        // The control runs as long as the others do.
        tokio::time::sleep(span.saturating_sub(SETTLE)).await;
    } else {
        for i in 0..moves {
            for (from, to) in [("h1", "h2"), ("h2", "h1")] {
                let m = one_move(arm.way, from, to, t0).await;
                eprintln!(
                    "    move {}/{moves} {from} -> {to}: {} in {:.0} ms",
                    i + 1,
                    if m.ok { "ok" } else { "FAILED" },
                    m.end_ms - m.start_ms
                );
                let failed = !m.ok;
                done.push(m);
                if failed {
                    break;
                }
                tokio::time::sleep(SETTLE).await;
            }
        }
    }
    sipp.stop();
    let report = sipp.wait().await?;
    if arm.load {
        if let Err(e) = act_agent
            .guest(
                "sa",
                &Op::MemoryLoad {
                    mib: 0,
                    mib_per_s: 0,
                },
            )
            .await
        {
            eprintln!("    stopping the memory load: {e}");
        }
    }
    eprintln!("    {}", report.summary());
    let samples = rtt_samples(&report.work_dir)?;
    let (during, steady) = split(&samples, &done);
    let pause = |only_act: bool| {
        done.iter()
            .flat_map(|m| m.migrations.iter())
            .filter(|(vm, _, _)| !only_act || vm == "sa")
            .map(|(_, d, _)| *d)
            .max()
    };
    Ok(ArmResult {
        arm: arm.name,
        way: arm.way,
        memory_load: arm.load.then_some((LOAD_MIB, LOAD_MIB_PER_S)),
        moves: done.clone(),
        during_moves: during,
        steady,
        act_pause_ms: match arm.way {
            Way::Duplex => Some(0).filter(|_| !done.is_empty()),
            _ => pause(true),
        },
        any_pause_ms: pause(false),
        move_ms_max: done
            .iter()
            .map(|m| m.end_ms - m.start_ms)
            .max_by(|a, b| a.total_cmp(b)),
        sipp: report,
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

fn ms(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.0}")).unwrap_or_else(|| "–".into())
}

fn table(arms: &[ArmResult]) -> String {
    let mut md = String::from(
        "| arm | calls | failed | retrans. | unexpected | dead-call msgs | response p99 / max during moves (ms) | steady p99 / max (ms) | ACT pause (ms) | longest VM pause (ms) | longest move (ms) |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for a in arms {
        let r = &a.sipp;
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} | {} | {} |\n",
            a.arm,
            r.total_calls,
            r.failed + r.abandoned,
            r.retransmissions,
            r.unexpected_messages,
            r.dead_call_messages,
            ms(a.during_moves.as_ref().map(|t| t.p99)),
            ms(a.during_moves.as_ref().map(|t| t.max)),
            ms(a.steady.as_ref().map(|t| t.p99)),
            ms(a.steady.as_ref().map(|t| t.max)),
            a.act_pause_ms
                .map(|v| v.to_string())
                .unwrap_or_else(|| "–".into()),
            a.any_pause_ms
                .map(|v| v.to_string())
                .unwrap_or_else(|| "–".into()),
            ms(a.move_ms_max),
        ));
    }
    md
}

pub async fn run(lab: &Lab, out: &Path, moves: usize) -> anyhow::Result<()> {
    let (ip_a, ip_b, vip) = (lab.vm_ip(1)?, lab.vm_ip(2)?, lab.vm_ip(0)?);
    let (ma, mb) = (format!("sa={ip_a}"), format!("sb={ip_b}"));
    let vip_s = vip.to_string();
    cli(&[
        "pair", "create", "sip", "--vip", &vip_s, "--member", &ma, "--member", &mb, "--hosts",
        "h1,h3",
    ])
    .await?;
    let healthy = async {
        for _ in 0..100 {
            if let Ok(p) = cli(&["pair", "show", "sip"]).await {
                if p["health"] == "healthy" {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        false
    };
    anyhow::ensure!(healthy.await, "the pair never became healthy");
    let act_agent = AgentClient::new(&lab.agent_url(1)?);
    // Warm-up, not reported: fresh guests (code not yet translated under
    // TCG, caches cold) answer the first calls slowly.
    let warm = std::env::temp_dir().join(format!("duplex-bench-s1-{}-warm", std::process::id()));
    std::fs::create_dir_all(&warm)?;
    let mut run = SippRun::new(std::net::SocketAddr::from((vip, 5060)), warm);
    run.rate_cps = RATE_CPS;
    run.call_length_ms = CALL_MS;
    run.calls = Some((RATE_CPS * 20.0) as u64);
    run.timeout = Duration::from_secs(80);
    let prefix: Vec<String> = ["ip", "netns", "exec", lab.client_ns()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    eprintln!("  warm-up (20 s, not reported)");
    let r = duplex_sipp::run(&run, &prefix).await?;
    eprintln!("    {}", r.summary());
    let mut arms = Vec::new();
    for arm in ARMS {
        arms.push(run_arm(arm, vip, &act_agent, lab.client_ns(), moves).await?);
    }
    let mut md = format!(
        "# S1: moving a pair's ACT member off its host under SIP load\n\n\
         sipp built-in UAC at {RATE_CPS:.0} calls/s, {CALL_MS} ms calls; per arm the ACT member moves h1 → h2 and back {moves} times, {} s apart.\n\
         (a) `duplex pair migrate --switch-back`: the SBY takes over, the old ACT is live-migrated as SBY, roles switch back.\n\
         (b) `duplex vm migrate` of the ACT VM: plain pre-copy live migration, as Nova or KubeVirt do it.\n\
         Memory load: a process in the ACT guest rewriting {LOAD_MIB} MiB at {LOAD_MIB_PER_S} MiB/s.\n\
         \"During moves\": calls whose INVITE → 200 overlapped a move. Failed counts abandoned calls too.\n\n",
        SETTLE.as_secs()
    );
    md.push_str(&table(&arms));
    println!("{md}");
    let result = S1Result {
        benchmark: "s1",
        run: stats::run_info("see boot.json").await,
        rate_cps: RATE_CPS,
        call_length_ms: CALL_MS,
        moves_per_arm: moves,
        arms,
    };
    stats::write(out, "s1", &result, &md)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mv(start: f64, end: f64) -> Move {
        Move {
            command: String::new(),
            start_ms: start,
            end_ms: end,
            ok: true,
            migrations: vec![],
        }
    }

    #[test]
    fn split_by_overlap_with_a_move() {
        let s = |at: f64, rt: f64| RttSample {
            date_ms: at,
            response_time_ms: rt,
            rtd: 1,
        };
        // Sent 900, answered 1000: before the move. Sent 950, answered
        // 1200: overlaps. Sent 1900, answered 2100: overlaps the end.
        let samples = [
            s(1000.0, 100.0),
            s(1200.0, 250.0),
            s(2100.0, 200.0),
            s(3000.0, 10.0),
        ];
        let (during, steady) = split(&samples, &[mv(1100.0, 2000.0)]);
        let (during, steady) = (during.unwrap(), steady.unwrap());
        assert_eq!((during.count, during.max), (2, 250.0));
        assert_eq!((steady.count, steady.max), (2, 100.0));
    }

    #[test]
    fn reads_a_migration_event() {
        let ev = serde_json::json!({"kind": "vm.migrated", "message": "sa moved h1 → h2: total 731 ms, downtime 12 ms, 102.0 MiB"});
        assert_eq!(migration_of(&ev), Some(("sa".into(), 12, 731)));
        assert_eq!(migration_of(&serde_json::json!({"kind": "x"})), None);
    }
}
