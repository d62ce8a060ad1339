//! S2 side by side in one lab, idle guest and busy guest (memory being
//! rewritten), the arms taking turns: (a) no protection (a VM that is not
//! replicated), (b) everything held until its epoch commits (Remus/COLO
//! style: one rule holding every packet), (c) Duplex with the default
//! classification (media-like packets sent at once, the rest held). Per
//! arm: round trips of a class-1 stream (RTP-like payload) and a class-2
//! stream (text) to the guest's UDP echo; for the replicated arms the
//! epochs' pause with its breakdown, pages and bytes, commit delay, epoch
//! length achieved, and the agent's and QEMU's CPU; (d) the same with the
//! held output in the Duplex switch (embodiment B; another replicated VM
//! created with `--hold-at switch`). The lab runs on the Duplex switch, so
//! every arm's packets take the same path. Then one failover of arm (c)
//! and one of arm (d): the VM's host is powered off under the probe; what
//! each stream lost, duplicated, and its longest gap.

pub mod probe;
mod report;

use crate::s1::moves::cli;
use crate::stats;
use crate::Lab;
use anyhow::Context;
use duplex_core::agent_api::{EpochTiming, ProtectionInfo};
use duplex_core::guest_proto::Op;
use serde::Serialize;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

/// The replicated VMs (output held in the host, in the switch) and the
/// plain one.
const REPLICATED: &str = "s2r";
const SWITCHED: &str = "s2s";
const PLAIN: &str = "s2p";
const ECHO_PORT: u16 = 7;
/// The busy guest: this much memory rewritten at this rate.
const BUSY_MIB: u32 = 16;
const BUSY_MIB_PER_S: u32 = 64;
const WAIT: Duration = Duration::from_secs(180);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    Plain,
    HoldAll,
    Classified,
    Switched,
}

impl Arm {
    pub fn label(self) -> &'static str {
        match self {
            Arm::Plain => "(a) no protection",
            Arm::HoldAll => "(b) everything held until commit",
            Arm::Classified => "(c) Duplex, classified",
            Arm::Switched => "(d) Duplex, classified, held in the switch",
        }
    }

    fn vm(self) -> &'static str {
        match self {
            Arm::Plain => PLAIN,
            Arm::HoldAll | Arm::Classified => REPLICATED,
            Arm::Switched => SWITCHED,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub lost: u64,
    pub duplicated: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Epochs {
    pub epochs: usize,
    pub epoch_ms: f64,
    pub pause_us: [f64; 3],
    /// Means of stop, save, scan, cont (µs).
    pub breakdown_us: [f64; 4],
    pub pages_p50: f64,
    pub pages_max: f64,
    pub kb_p50: f64,
    pub commit_us_p50: f64,
    pub commit_us_p99: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub busy: bool,
    pub arm: Arm,
    pub run: usize,
    pub class1: Latency,
    pub class2: Latency,
    pub epochs: Option<Epochs>,
    /// CPU of one core, % (agent, QEMU) during the probe.
    pub cpu_agent_pct: f64,
    pub cpu_qemu_pct: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failover {
    pub arm: Arm,
    pub class1_gap_ms: f64,
    pub class2_gap_ms: f64,
    pub class1_lost: u64,
    pub class2_lost: u64,
    pub duplicated: u64,
    pub events: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub info: stats::RunInfo,
    pub rate_per_stream: u32,
    pub secs: f64,
    pub points: Vec<Point>,
    pub failovers: Vec<Failover>,
}

pub fn pct(xs: &[f64], q: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n => v[((n as f64 - 1.0) * q).round() as usize],
    }
}

fn latency(s: &probe::Stream) -> Latency {
    Latency {
        p50_us: pct(&s.rtt_us, 0.5),
        p99_us: pct(&s.rtt_us, 0.99),
        max_us: pct(&s.rtt_us, 1.0),
        lost: s.sent.saturating_sub(s.received),
        duplicated: s.duplicated,
    }
}

async fn probe_child(
    ip: Ipv4Addr,
    ns: &str,
    rate: u32,
    secs: f64,
) -> anyhow::Result<probe::Probed> {
    let exe = std::env::current_exe()?;
    let out = tokio::process::Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe)
        .args([
            "s2-probe",
            "--to",
            &ip.to_string(),
            "--port",
            &ECHO_PORT.to_string(),
        ])
        .args(["--rate", &rate.to_string(), "--secs", &secs.to_string()])
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "s2-probe: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// User+system CPU ticks of a process.
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let after = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let at = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    at(11) + at(12)
}

async fn vm_host(vm: &str) -> anyhow::Result<(u8, Option<u32>)> {
    let v = cli(&["vm", "show", vm]).await?;
    let host = v["host"].as_str().context("vm host")?;
    let n = host.trim_start_matches('h').parse().context("host name")?;
    Ok((n, v["info"]["pid"].as_u64().map(|p| p as u32)))
}

async fn protection(lab: &Lab, n: u8, vm: &str) -> anyhow::Result<ProtectionInfo> {
    Ok(lab.agent(n)?.protection(vm).await?)
}

fn epochs(timings: &[EpochTiming], secs: f64) -> Epochs {
    let f =
        |g: fn(&EpochTiming) -> u64| -> Vec<f64> { timings.iter().map(|t| g(t) as f64).collect() };
    let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let pause = f(|t| t.pause_us);
    let commits: Vec<f64> = f(|t| t.commit_us)
        .into_iter()
        .filter(|c| *c > 0.0)
        .collect();
    Epochs {
        epochs: timings.len(),
        epoch_ms: secs * 1e3 / timings.len().max(1) as f64,
        pause_us: [pct(&pause, 0.5), pct(&pause, 0.99), pct(&pause, 1.0)],
        breakdown_us: [
            mean(f(|t| t.stop_us)),
            mean(f(|t| t.save_us)),
            mean(f(|t| t.scan_us)),
            mean(f(|t| t.cont_us)),
        ],
        pages_p50: pct(&f(|t| t.pages), 0.5),
        pages_max: pct(&f(|t| t.pages), 1.0),
        kb_p50: pct(&f(|t| t.bytes), 0.5) / 1e3,
        commit_us_p50: pct(&commits, 0.5),
        commit_us_p99: pct(&commits, 0.99),
    }
}

async fn set_hold_all(on: bool) -> anyhow::Result<()> {
    if on {
        cli(&[
            "rules",
            "add",
            "all",
            "--class",
            "hold",
            "--priority",
            "0",
            "--note",
            "bench: hold everything",
        ])
        .await?;
    } else if cli(&["rules", "show", "all"]).await.is_ok() {
        cli(&["rules", "delete", "all"]).await?;
    }
    // Pushed at once; give every host a moment to have it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

async fn memory_load(lab: &Lab, busy: bool) -> anyhow::Result<()> {
    for vm in [REPLICATED, SWITCHED, PLAIN] {
        let (n, _) = vm_host(vm).await?;
        let op = Op::MemoryLoad {
            mib: if busy { BUSY_MIB } else { 0 },
            mib_per_s: BUSY_MIB_PER_S,
            while_act: false,
        };
        lab.agent(n)?
            .guest(vm, &op)
            .await
            .with_context(|| format!("memory load in {vm}"))?;
    }
    Ok(())
}

async fn point(
    lab: &Lab,
    arm: Arm,
    busy: bool,
    run: usize,
    rate: u32,
    secs: f64,
) -> anyhow::Result<Point> {
    set_hold_all(arm == Arm::HoldAll).await?;
    let vm = arm.vm();
    let (n, qemu) = vm_host(vm).await?;
    let ip: Ipv4Addr = cli(&["vm", "show", vm]).await?["spec"]["ip"]
        .as_str()
        .context("vm ip")?
        .parse()?;
    let agent_pid = lab.agent_pid(n)?;
    let before = match arm {
        Arm::Plain => None,
        _ => Some(protection(lab, n, vm).await?.captured),
    };
    let (a0, q0, t0) = (
        cpu_ticks(agent_pid),
        qemu.map_or(0, cpu_ticks),
        Instant::now(),
    );
    let probed = probe_child(ip, lab.client_ns(), rate, secs).await?;
    let wall = t0.elapsed().as_secs_f64();
    let (a1, q1) = (cpu_ticks(agent_pid), qemu.map_or(0, cpu_ticks));
    let tick = 100.0; // USER_HZ
    let epochs = match before {
        None => None,
        Some(from) => {
            let p = protection(lab, n, vm).await?;
            let fresh = p.captured.saturating_sub(from) as usize;
            let recent = &p.recent[p.recent.len().saturating_sub(fresh)..];
            Some(epochs(recent, wall))
        }
    };
    Ok(Point {
        busy,
        arm,
        run,
        class1: latency(&probed.class1),
        class2: latency(&probed.class2),
        epochs,
        cpu_agent_pct: (a1 - a0) as f64 / tick / wall * 100.0,
        cpu_qemu_pct: q1.saturating_sub(q0) as f64 / tick / wall * 100.0,
    })
}

async fn wait_protected(vm: &str) -> anyhow::Result<()> {
    let t0 = Instant::now();
    loop {
        let v = cli(&["vm", "show", vm]).await?;
        let p = &v["info"]["protection"];
        if p["phase"] == "running" && p["committed"].as_u64().unwrap_or(0) > 0 {
            return Ok(());
        }
        anyhow::ensure!(t0.elapsed() < WAIT, "{vm} never protected: {v}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Arm `arm`'s VM under the probe; its host powered off after a few
/// seconds.
async fn failover(lab: &Lab, arm: Arm, rate: u32) -> anyhow::Result<Failover> {
    set_hold_all(false).await?;
    wait_protected(arm.vm()).await?;
    let (n, _) = vm_host(arm.vm()).await?;
    let ip: Ipv4Addr = cli(&["vm", "show", arm.vm()]).await?["spec"]["ip"]
        .as_str()
        .context("vm ip")?
        .parse()?;
    let ns = lab.client_ns().to_string();
    let probing = tokio::spawn(async move { probe_child(ip, &ns, rate, 20.0).await });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let host = format!("h{n}");
    let off = tokio::process::Command::new(crate::duplex_bin())
        .args(["lab", "fault", "power-off", &host, "--lab", Lab::NAME])
        .output()
        .await?;
    anyhow::ensure!(
        off.status.success(),
        "power-off {host}: {}",
        String::from_utf8_lossy(&off.stderr).trim()
    );
    let probed = probing.await??;
    let events = cli(&["events", "--last", "30"]).await?;
    let events = events
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    format!(
                        "{} {} {}",
                        e["at"].as_str().unwrap_or(""),
                        e["kind"].as_str().unwrap_or(""),
                        e["message"].as_str().unwrap_or("")
                    )
                })
                .filter(|e| {
                    e.contains("fence")
                        || e.contains("failover")
                        || e.contains("protected")
                        || e.contains("failed")
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Failover {
        arm,
        class1_gap_ms: probed.class1.max_gap_ms,
        class2_gap_ms: probed.class2.max_gap_ms,
        class1_lost: probed.class1.sent.saturating_sub(probed.class1.received),
        class2_lost: probed.class2.sent.saturating_sub(probed.class2.received),
        duplicated: probed.class1.duplicated + probed.class2.duplicated,
        events,
    })
}

pub async fn run(lab: &Lab, out: &Path, runs: usize, rate: u32, secs: f64) -> anyhow::Result<()> {
    let ip = |k: u8| lab.vm_ip(k).map(|i| i.to_string());
    cli(&[
        "vm",
        "create",
        REPLICATED,
        "--ip",
        &ip(60)?,
        "--memory-mib",
        "128",
        "--replicated",
        "--host",
        "h1",
    ])
    .await?;
    cli(&[
        "vm",
        "create",
        SWITCHED,
        "--ip",
        &ip(62)?,
        "--memory-mib",
        "128",
        "--replicated",
        "--hold-at",
        "switch",
        "--host",
        "h2",
    ])
    .await?;
    cli(&[
        "vm",
        "create",
        PLAIN,
        "--ip",
        &ip(61)?,
        "--memory-mib",
        "128",
        "--host",
        "h3",
    ])
    .await?;
    wait_protected(REPLICATED).await?;
    wait_protected(SWITCHED).await?;
    // Asked now: the failover powers h1 off.
    let accel = lab.accel().await;
    let mut points = Vec::new();
    for busy in [false, true] {
        memory_load(lab, busy).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        for run in 0..runs {
            let mut arms = [Arm::Plain, Arm::HoldAll, Arm::Classified, Arm::Switched];
            if run % 2 == 1 {
                arms.reverse();
            }
            for arm in arms {
                let p = point(lab, arm, busy, run, rate, secs).await?;
                eprintln!(
                    "{} {}: class 1 p50 {:.0} µs p99 {:.0}, class 2 p50 {:.0} p99 {:.0}",
                    if busy { "busy" } else { "idle" },
                    arm.label(),
                    p.class1.p50_us,
                    p.class1.p99_us,
                    p.class2.p50_us,
                    p.class2.p99_us
                );
                points.push(p);
            }
        }
    }
    memory_load(lab, false).await?;
    let mut failovers = Vec::new();
    for arm in [Arm::Classified, Arm::Switched] {
        match failover(lab, arm, rate).await {
            Ok(f) => failovers.push(f),
            Err(e) => eprintln!("failover run of {}: {e}", arm.label()),
        }
    }
    let res = Results {
        info: stats::run_info(&accel).await,
        rate_per_stream: rate,
        secs,
        points,
        failovers,
    };
    let md = report::markdown(&res);
    stats::write(out, "s2", &res, &md)
}
