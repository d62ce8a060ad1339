//! S5 side by side in one two-site lab (h1 in site a, h2 in site b, WAN of
//! 40 ms RTT), in each site a request ledger client (`duplex ledger-probe`,
//! numbered UDP requests judged by the guest) and sipp (the built-in UAC
//! against the guest's SIP service at its service address, claimed by the
//! guest itself):
//!
//! - (a) Duplex: a VM replicated across the sites, switching on its policy
//!   (the other site's oldest buffered request waited `--max-age-ms`);
//! - (b) one VM active in site a, site b's clients crossing the WAN (site
//!   b's router routes the VM's address to site a).
//!
//! The arms take turns, `runs` each. Per site: requests lost, answered
//! twice, processed out of order or twice, response time p50/p99/max; per
//! arm the WAN's bytes per second; for (a) every switch's time (from its
//! start to the VM running on the other side, which then processes the
//! buffered requests first) and the state sent (the last checkpoint, then
//! the new replica's first round). Then site a is lost (h1 powered off)
//! with both VMs on it: (a) the replica runs the VM in site b from its
//! last state and processes site b's buffer; (c) cold recovery of the
//! plain VM: a new one booted in site b from the image.

use crate::s1::moves::cli;
use crate::stats;
use crate::Lab;
use anyhow::Context;
use duplex_core::guest_proto::{Op, TargetRole};
use duplex_lab::ledger_probe::LedgerReport;
use duplex_sipp::SippReport;
use serde::Serialize;
use serde_json::Value;
use std::time::{Duration, Instant};

const DUPLEX_VM: &str = "s5d";
const PLAIN_VM: &str = "s5p";
const COLD_VM: &str = "s5c";
const WAIT: Duration = Duration::from_secs(180);
const GRACE_S: f64 = 12.0;
/// sipp per site: calls/s, and each call's length.
pub const SIP_RATE_CPS: f64 = 5.0;
pub const SIP_CALL_MS: u64 = 1000;
pub const GRACE_S_PUB: f64 = GRACE_S;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    Duplex,
    AcrossWan,
}

#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub arm: Arm,
    pub run: usize,
    pub site_a: LedgerReport,
    pub site_b: LedgerReport,
    /// sipp in each site at the same time.
    pub sip_a: SippReport,
    pub sip_b: SippReport,
    pub wan_bytes_per_s: f64,
    /// (a): each switch's time to the VM running on the other side, and
    /// its total, ms.
    pub switches_ms: Vec<(u64, u64)>,
    /// (a): the new replica's first round after a switch, bytes (mean).
    pub first_round_bytes: f64,
    /// (a): a checkpoint's bytes (median over the last epochs).
    pub checkpoint_bytes: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Loss {
    /// Duplex: site b's requests (buffered where the replica was).
    pub duplex_b: LedgerReport,
    /// Site a's requests answered before the loss that the VM running on
    /// lacks, and the lag shown just before.
    pub duplex_forgotten: u64,
    pub duplex_lag_ms: u64,
    /// From the power-off to the VM running in site b (its buffer then
    /// processed first).
    pub duplex_back_ms: f64,
    /// Cold recovery: site b's requests to the plain VM's address.
    pub cold_b: LedgerReport,
    /// From the power-off to the new VM's first answer, and to its
    /// address being free (the old VM forgotten).
    pub cold_back_ms: f64,
    pub cold_address_free_ms: f64,
    /// Site a's requests the plain VM had answered: all forgotten.
    pub cold_forgotten: u64,
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub info: stats::RunInfo,
    pub rate_per_site: u32,
    pub secs: f64,
    pub max_age_ms: u64,
    pub wan_rtt_ms: u32,
    pub points: Vec<Point>,
    pub loss: Option<Loss>,
}

/// A ledger client in a namespace, as a child process.
struct Probe(tokio::process::Child);

impl Probe {
    fn start(ns: &str, target: &str, client: u32, rate: u32, secs: f64) -> anyhow::Result<Probe> {
        let interval_us = 1_000_000 / rate.max(1);
        let child = tokio::process::Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(crate::duplex_bin())
            .args(["ledger-probe", "--target", target])
            .args(["--client", &client.to_string()])
            .args(["--interval-us", &interval_us.to_string()])
            .args(["--duration-s", &secs.to_string()])
            .args(["--grace-s", &GRACE_S.to_string()])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting ledger-probe")?;
        Ok(Probe(child))
    }

    async fn report(self) -> anyhow::Result<LedgerReport> {
        let out = self.0.wait_with_output().await?;
        anyhow::ensure!(out.status.success(), "ledger-probe failed");
        Ok(serde_json::from_slice(&out.stdout)?)
    }
}

/// sipp's UAC in namespace `ns` against `vip`:5060 for `secs`.
fn sipp(ns: &str, vip: &str, secs: f64, tag: &str) -> anyhow::Result<duplex_sipp::RunningSipp> {
    let work = std::env::temp_dir().join(format!("duplex-bench-s5-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let vip: std::net::Ipv4Addr = vip.parse()?;
    let mut run = duplex_sipp::SippRun::new(std::net::SocketAddr::from((vip, 5060)), work);
    (run.rate_cps, run.call_length_ms) = (SIP_RATE_CPS, SIP_CALL_MS);
    run.calls = Some((SIP_RATE_CPS * secs) as u64);
    run.timeout = Duration::from_secs_f64(secs + 60.0);
    let prefix = ["ip", "netns", "exec", ns].map(String::from).to_vec();
    Ok(duplex_sipp::spawn(&run, &prefix)?)
}

/// The guest's SIP service of `vm` (on host `h<n>`) answers at `vip`:
/// configured with no peer, ACT (the guest claims the address itself).
async fn serve_sip(lab: &Lab, n: u8, vm: &str, vip: &str) -> anyhow::Result<()> {
    let agent = lab.agent(n)?;
    let configure = Op::Configure {
        vip: vip.parse()?,
        vip_prefix_len: 24,
        peer: None,
        witness: None,
        key: None,
    };
    agent.guest(vm, &configure).await?;
    let act = Op::SetRole {
        role: TargetRole::Act,
        token: 1,
    };
    agent.guest(vm, &act).await?;
    Ok(())
}

fn ns(site: char) -> String {
    match site {
        'a' => format!("{}-client", Lab::NAME),
        _ => format!("{}-clientb", Lab::NAME),
    }
}

async fn sh(args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Bytes through site a's end of the WAN (both ways).
async fn wan_bytes() -> anyhow::Result<u64> {
    let sw = format!("{}-sw", Lab::NAME);
    let mut total = 0;
    for dir in ["rx", "tx"] {
        let path = format!("/sys/class/net/wan/statistics/{dir}_bytes");
        total += sh(&["ip", "netns", "exec", &sw, "cat", &path])
            .await?
            .trim()
            .parse::<u64>()?;
    }
    Ok(total)
}

async fn until(
    what: &str,
    mut ok: impl FnMut(&Value) -> bool,
    args: &[&str],
) -> anyhow::Result<Value> {
    let t0 = Instant::now();
    loop {
        if let Ok(v) = cli(args).await {
            if ok(&v) {
                return Ok(v);
            }
        }
        anyhow::ensure!(t0.elapsed() < WAIT, "{what} not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn replica_ready(v: &Value) -> bool {
    v["paused"]["seen"]["applied"].as_u64().is_some()
        && v["active"]["seen"]["lag_ms"].as_u64().is_some()
}

/// The `vm.site_switched` messages since `skip` of them.
async fn switches(skip: usize) -> anyhow::Result<Vec<String>> {
    let ev = cli(&["events", "--last", "500"]).await?;
    let all: Vec<String> = ev
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "vm.site_switched")
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect();
    Ok(all.into_iter().skip(skip).collect())
}

/// The number after `key` in a switch message (`running there N ms`,
/// `done in N ms`).
fn ms_after(msg: &str, key: &str) -> Option<u64> {
    let rest = &msg[msg.find(key)? + key.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

pub async fn run(
    lab: &Lab,
    out: &std::path::Path,
    runs: usize,
    rate: u32,
    secs: f64,
    max_age_ms: u64,
) -> anyhow::Result<()> {
    let info = stats::run_info(&lab.accel().await).await;
    let i = lab.index();
    let (dip, pip) = (format!("10.{i}.0.71"), format!("10.{i}.0.72"));
    // The SIP services' addresses.
    let (dvip, pvip) = (format!("10.{i}.0.81"), format!("10.{i}.0.82"));
    let port = duplex_core::ledger::PORT;
    cli(&[
        "vm",
        "create",
        DUPLEX_VM,
        "--ip",
        &dip,
        "--memory-mib",
        "128",
        "--replicated",
        "--hold-at",
        "none",
        "--host",
        "h1",
    ])
    .await?;
    cli(&[
        "vm",
        "create",
        PLAIN_VM,
        "--ip",
        &pip,
        "--memory-mib",
        "128",
        "--host",
        "h1",
    ])
    .await?;
    serve_sip(lab, 1, DUPLEX_VM, &dvip).await?;
    serve_sip(lab, 1, PLAIN_VM, &pvip).await?;
    cli(&["site", "replicate", DUPLEX_VM, "--to", "b"]).await?;
    until(
        "the replica in site b",
        replica_ready,
        &["site", "show", DUPLEX_VM],
    )
    .await?;
    // Site b's router sends the plain VM's addresses across the WAN.
    let swb = format!("{}-swb", Lab::NAME);
    let wan_a = format!("10.{i}.255.1");
    for a in [&pip, &pvip] {
        sh(&[
            "ip",
            "netns",
            "exec",
            &swb,
            "ip",
            "route",
            "replace",
            &format!("{a}/32"),
            "via",
            &wan_a,
        ])
        .await?;
    }
    cli(&[
        "site",
        "policy",
        DUPLEX_VM,
        "--max-age-ms",
        &max_age_ms.to_string(),
        "--min-stay-ms",
        "1000",
    ])
    .await?;

    let mut points = Vec::new();
    let mut client = 10;
    for run in 0..runs {
        for arm in [Arm::Duplex, Arm::AcrossWan] {
            let (ip, vip) = match arm {
                Arm::Duplex => (&dip, &dvip),
                Arm::AcrossWan => (&pip, &pvip),
            };
            let target = format!("{ip}:{port}");
            until(
                "a ready replica",
                replica_ready,
                &["site", "show", DUPLEX_VM],
            )
            .await?;
            let seen = switches(0).await?.len();
            let (w0, t0) = (wan_bytes().await?, Instant::now());
            let a = Probe::start(&ns('a'), &target, client, rate, secs)?;
            let b = Probe::start(&ns('b'), &target, client + 1, rate, secs)?;
            let sa = sipp(&ns('a'), vip, secs, &format!("{client}a"))?;
            let sb = sipp(&ns('b'), vip, secs, &format!("{client}b"))?;
            client += 2;
            let (site_a, site_b) = (a.report().await?, b.report().await?);
            let (sip_a, sip_b) = (sa.wait().await?, sb.wait().await?);
            let wan = (wan_bytes().await? - w0) as f64 / t0.elapsed().as_secs_f64();
            let msgs = if arm == Arm::Duplex {
                switches(seen).await?
            } else {
                Vec::new()
            };
            let switches_ms = msgs
                .iter()
                .filter_map(|m| Some((ms_after(m, "running there ")?, ms_after(m, "done in ")?)))
                .collect();
            let (first_round_bytes, checkpoint_bytes) = state_bytes(lab, arm).await?;
            eprintln!("s5 {arm:?} run {run}: a {site_a:?}\n  b {site_b:?}\n  sip a {}\n  sip b {}\n  WAN {wan:.0} B/s, switches {switches_ms:?}", sip_a.summary(), sip_b.summary());
            points.push(Point {
                arm,
                run,
                site_a,
                site_b,
                sip_a,
                sip_b,
                wan_bytes_per_s: wan,
                switches_ms,
                first_round_bytes,
                checkpoint_bytes,
            });
        }
    }
    let loss = site_loss(lab, &dip, &pip, rate, &swb).await;
    if let Err(e) = &loss {
        eprintln!("s5: the site loss part failed: {e:#}");
    }
    let results = Results {
        info,
        rate_per_site: rate,
        secs,
        max_age_ms,
        wan_rtt_ms: 40,
        points,
        loss: loss.ok(),
    };
    stats::write(out, "s5", &results, &crate::s5_report::markdown(&results))
}

/// (a): the active side's first round and median checkpoint, bytes.
async fn state_bytes(lab: &Lab, arm: Arm) -> anyhow::Result<(f64, f64)> {
    if arm != Arm::Duplex {
        return Ok((0.0, 0.0));
    }
    let v = cli(&["vm", "show", DUPLEX_VM]).await?;
    let n: u8 = v["host"]
        .as_str()
        .unwrap_or("h1")
        .trim_start_matches('h')
        .parse()?;
    let p = lab.agent(n)?.protection(DUPLEX_VM).await?;
    let mut bytes: Vec<f64> = p.recent.iter().map(|t| t.bytes as f64).collect();
    bytes.sort_by(|a, b| a.total_cmp(b));
    let median = bytes.get(bytes.len() / 2).copied().unwrap_or(0.0);
    Ok((p.base_pages as f64 * 4096.0, median))
}

/// Site a (h1) is lost with both VMs on it.
async fn site_loss(lab: &Lab, dip: &str, pip: &str, rate: u32, swb: &str) -> anyhow::Result<Loss> {
    let port = duplex_core::ledger::PORT;
    cli(&["site", "policy", DUPLEX_VM, "--off"]).await?;
    // The Duplex VM must run in site a for this.
    let v = until(
        "a ready replica",
        replica_ready,
        &["site", "show", DUPLEX_VM],
    )
    .await?;
    if v["active"]["host"] != "h1" {
        cli(&["site", "switch", DUPLEX_VM]).await?;
        until(
            "a ready replica",
            |v| replica_ready(v) && v["active"]["host"] == "h1",
            &["site", "show", DUPLEX_VM],
        )
        .await?;
    }
    let lag = cli(&["site", "show", DUPLEX_VM]).await?["active"]["seen"]["lag_ms"]
        .as_u64()
        .unwrap_or(0);
    let secs = 25.0;
    let (dt, pt) = (format!("{dip}:{port}"), format!("{pip}:{port}"));
    let da = Probe::start(&ns('a'), &dt, 100, rate, 4.0)?;
    let db = Probe::start(&ns('b'), &dt, 101, rate, secs)?;
    let pa = Probe::start(&ns('a'), &pt, 102, rate, 4.0)?;
    let pb = Probe::start(&ns('b'), &pt, 103, rate, secs)?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let off = Instant::now();
    sh(&[
        crate::duplex_bin().to_str().unwrap_or("duplex"),
        "lab",
        "fault",
        "power-off",
        "h1",
        "--lab",
        Lab::NAME,
    ])
    .await?;
    // Cold recovery: the plain VM's address is served in site b by a new
    // VM from the image (the old one is deleted; its host is gone).
    sh(&[
        "ip",
        "netns",
        "exec",
        swb,
        "ip",
        "route",
        "del",
        &format!("{pip}/32"),
    ])
    .await?;
    let _ = cli(&["vm", "delete", PLAIN_VM, "--no-wait"]).await;
    let moved = until(
        "s5d running in site b",
        |v| v["host"] == "h2" && v["status"] == "running",
        &["vm", "show", DUPLEX_VM],
    );
    let duplex_back = async {
        moved.await?;
        anyhow::Ok(off.elapsed())
    };
    // The address is free once the controller forgot the old VM (its
    // host fenced); then a new VM boots from the image.
    let cold = async {
        let t0 = Instant::now();
        while let Err(e) = cli(&[
            "vm",
            "create",
            COLD_VM,
            "--ip",
            pip,
            "--memory-mib",
            "128",
            "--host",
            "h2",
            "--no-wait",
        ])
        .await
        {
            anyhow::ensure!(t0.elapsed() < WAIT, "cold VM: {e:#}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let created = off.elapsed();
        let probe = Probe::start(&ns('b'), &pt, 104, rate, 60.0)?
            .report()
            .await?;
        anyhow::Ok((created, probe))
    };
    let (duplex_back, cold) = tokio::join!(duplex_back, cold);
    let (duplex_back, (cold_created, cold_probe)) = (duplex_back?, cold?);
    let (da, db, pa, pb) = (
        da.report().await?,
        db.report().await?,
        pa.report().await?,
        pb.report().await?,
    );
    // What the running VM remembers of site a's requests.
    let seen = sh(&[
        "ip",
        "netns",
        "exec",
        &ns('b'),
        crate::duplex_bin().to_str().unwrap_or("duplex"),
        "ledger-probe",
        "--target",
        &dt,
        "--client",
        "100",
        "--query",
    ])
    .await?;
    let remembered = serde_json::from_str::<Value>(&seen)?["count"]
        .as_u64()
        .unwrap_or(0);
    let cold_first = cold_probe
        .first_answer_ms
        .context("the cold VM never answered")?;
    eprintln!("s5 loss: duplex b {db:?} back after {duplex_back:?}\n  cold b {pb:?}\n  cold VM created {cold_created:?} after the power-off, answering {cold_first} ms later");
    let _ = lab;
    Ok(Loss {
        duplex_forgotten: da.answered.saturating_sub(remembered),
        duplex_lag_ms: lag,
        duplex_back_ms: duplex_back.as_secs_f64() * 1e3,
        duplex_b: db,
        cold_back_ms: cold_created.as_secs_f64() * 1e3 + cold_first,
        cold_address_free_ms: cold_created.as_secs_f64() * 1e3,
        cold_b: pb,
        cold_forgotten: pa.answered,
    })
}
