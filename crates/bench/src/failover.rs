//! The loss of the ACT's host under SIP load (sipp, 20 calls/s of 1 s),
//! three ways side by side in one run, `runs` power-offs each:
//! (a) Duplex: the SBY's guest stops hearing its peer, the controller
//!     probes, fences the host with the lab's power switch, promotes the
//!     SBY and re-creates the lost member on the spare host;
//! (b) Duplex before host-loss handling (no fence device, agents that do
//!     not fence themselves: nothing fails over): the host is powered on
//!     again [`RESTART_AFTER`] later, its ACT re-created there and the pair
//!     repaired;
//! (c) a lone service VM restarted on another host, as Masakari or
//!     vSphere HA would: the controller finds the host silent, fences it,
//!     and restarts the VM elsewhere; its service starts once its guest
//!     answers (this benchmark configures it then, as a boot script would).
//!
//! Per run: time from the power-off to the first answered call after it
//! (sipp's per-call INVITE→200 trace: the earliest answer after the
//! power-off), calls failed, retransmissions, and the time until the pair
//! is healthy again on live hosts.

use crate::s1::moves::cli;
use crate::stats::{self, cell, first_answer, summarize, Summary};
use crate::Lab;
use anyhow::Context;
use duplex_core::guest_proto::{Op, TargetRole};
use serde::Serialize;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

const RATE_CPS: f64 = 20.0;
const CALL_MS: u64 = 1000;
/// Load before the power-off, and after service is whole again.
const BEFORE: Duration = Duration::from_secs(5);
const AFTER: Duration = Duration::from_secs(5);
/// Arm (b): the host comes back this long after losing power.
pub const RESTART_AFTER: Duration = Duration::from_secs(20);
/// Longest wait for service to come back whole.
const WAIT: Duration = Duration::from_secs(180);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Way {
    Duplex,
    Today,
    ColdRestart,
}

impl Way {
    fn label(self) -> &'static str {
        match self {
            Way::Duplex => "(a) Duplex: fence, promote the SBY, re-create on the spare",
            Way::Today => "(b) before host-loss handling: host back after 20 s",
            Way::ColdRestart => "(c) lone VM restarted on another host (Masakari / vSphere HA)",
        }
    }
}

#[derive(Debug, Serialize)]
struct RunResult {
    /// Power-off to the first call answered after it.
    first_answer_ms: Option<f64>,
    /// Power-off to the pair healthy on live hosts (the VM answering, for
    /// the lone VM).
    whole_again_ms: f64,
    calls: u64,
    failed: u64,
    retransmissions: u64,
}

#[derive(Debug, Serialize)]
struct ArmResult {
    arm: &'static str,
    way: Way,
    runs: Vec<RunResult>,
    first_answer_ms: Summary,
    whole_again_ms: Summary,
    failed: Summary,
    retransmissions: Summary,
}

#[derive(Serialize)]
struct FailoverResult {
    benchmark: &'static str,
    run: stats::RunInfo,
    rate_cps: f64,
    call_length_ms: u64,
    restart_after_s: u64,
    arms: Vec<ArmResult>,
}

pub async fn run(runs: usize, out: &Path) -> anyhow::Result<()> {
    let mut arms = Vec::new();
    let mut accel = String::new();
    for way in [Way::Duplex, Way::Today, Way::ColdRestart] {
        eprintln!("arm {}", way.label());
        let lab = match way {
            Way::Today => Lab::up_with(3, false, &["--self-fence-ms", "0"]).await?,
            _ => Lab::up_with(3, true, &[]).await?,
        };
        accel = lab.accel().await;
        let vip = set_up(&lab, way).await?;
        let mut results = Vec::new();
        for r in 0..runs {
            let res = one_run(&lab, way, vip, r).await?;
            eprintln!("  run {}: {res:?}", r + 1);
            results.push(res);
        }
        arms.push(summarize_arm(way, results));
    }
    let result = FailoverResult {
        benchmark: "failover",
        run: stats::run_info(&accel).await,
        rate_cps: RATE_CPS,
        call_length_ms: CALL_MS,
        restart_after_s: RESTART_AFTER.as_secs(),
        arms,
    };
    stats::write(out, "failover", &result, &markdown(&result))
}

fn summarize_arm(way: Way, runs: Vec<RunResult>) -> ArmResult {
    let f = |g: &dyn Fn(&RunResult) -> Option<f64>| -> Summary {
        summarize(&runs.iter().filter_map(g).collect::<Vec<_>>())
    };
    ArmResult {
        arm: way.label(),
        way,
        first_answer_ms: f(&|r| r.first_answer_ms),
        whole_again_ms: f(&|r| Some(r.whole_again_ms)),
        failed: f(&|r| Some(r.failed as f64)),
        retransmissions: f(&|r| Some(r.retransmissions as f64)),
        runs,
    }
}

/// The pair `sip` (ACT on h1, SBY on h2; h3 spare), or the lone VM `solo`
/// on h1 serving the service address. Returns the service address.
async fn set_up(lab: &Lab, way: Way) -> anyhow::Result<Ipv4Addr> {
    let vip = lab.vm_ip(50)?;
    let (a, b) = (lab.vm_ip(101)?, lab.vm_ip(102)?);
    if way == Way::ColdRestart {
        cli(&[
            "vm",
            "create",
            "solo",
            "--ip",
            &a.to_string(),
            "--host",
            "h1",
        ])
        .await?;
        serve(lab, vip).await?;
        return Ok(vip);
    }
    if way == Way::Duplex {
        cli(&["host", "state", "h3", "spare"]).await?;
    }
    cli(&[
        "pair",
        "create",
        "sip",
        "--vip",
        &vip.to_string(),
        "--member",
        &format!("sa={a}"),
        "--member",
        &format!("sb={b}"),
        "--hosts",
        "h1,h2",
    ])
    .await?;
    Ok(vip)
}

/// The host a VM runs on, by the controller's record.
async fn host_of(vm: &str) -> anyhow::Result<String> {
    let v = cli(&["vm", "show", vm]).await?;
    v["host"]
        .as_str()
        .map(str::to_string)
        .context("vm show: no host")
}

/// Starts the lone VM's service on the service address, once its guest
/// answers (as its boot script would).
async fn serve(lab: &Lab, vip: Ipv4Addr) -> anyhow::Result<()> {
    let t0 = Instant::now();
    loop {
        let host = host_of("solo").await?;
        let n: u8 = host.trim_start_matches('h').parse().context("host name")?;
        let agent = lab.agent(n)?;
        let configure = Op::Configure {
            vip,
            vip_prefix_len: 24,
            peer: None,
            witness: None,
            key: None,
        };
        let act = Op::SetRole {
            role: TargetRole::Act,
            token: 1,
        };
        if agent.guest("solo", &configure).await.is_ok() && agent.guest("solo", &act).await.is_ok()
        {
            return Ok(());
        }
        anyhow::ensure!(t0.elapsed() < WAIT, "solo's guest never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Where the service runs now: the pair's ACT, or the lone VM.
async fn serving_host(way: Way) -> anyhow::Result<String> {
    if way == Way::ColdRestart {
        return host_of("solo").await;
    }
    let p = cli(&["pair", "show", "sip"]).await?;
    p["members_status"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["wanted"] == "act"))
        .and_then(|m| m["host"].as_str())
        .map(str::to_string)
        .context("pair show: no ACT")
}

/// Waits until the service is whole again without `gone` (for (b), with
/// it back); returns when.
async fn whole_again(lab: &Lab, way: Way, gone: &str, vip: Ipv4Addr) -> anyhow::Result<Instant> {
    let t0 = Instant::now();
    loop {
        anyhow::ensure!(t0.elapsed() < WAIT, "service not whole within {WAIT:?}");
        if way == Way::ColdRestart {
            if host_of("solo").await? != gone {
                serve(lab, vip).await?;
                return Ok(Instant::now());
            }
        } else if let Ok(p) = cli(&["pair", "show", "sip"]).await {
            let members = p["members_status"].as_array().cloned().unwrap_or_default();
            let off_gone = way == Way::Today || members.iter().all(|m| m["host"] != gone);
            if p["health"] == "healthy" && p["phase"] == "ready" && off_gone {
                return Ok(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn power(
    lab_fault: impl FnOnce() -> Result<String, duplex_lab::LabError> + Send + 'static,
) -> anyhow::Result<()> {
    let said = tokio::task::spawn_blocking(lab_fault).await??;
    eprintln!("    {said}");
    Ok(())
}

/// Waits until the controller has host `h` back (ready or spare, no fence).
async fn host_back(h: &str) -> anyhow::Result<()> {
    let t0 = Instant::now();
    loop {
        let v = cli(&["host", "show", h]).await?;
        if v["state"] != "failed" && v.get("fence").is_none() {
            return Ok(());
        }
        anyhow::ensure!(t0.elapsed() < WAIT, "{h} not back within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Before a run: the pair healthy (the lone VM serves since set-up or the
/// run before).
async fn ready(way: Way) -> anyhow::Result<()> {
    if way == Way::ColdRestart {
        return Ok(());
    }
    let t0 = Instant::now();
    while cli(&["pair", "show", "sip"]).await?["health"] != "healthy" {
        anyhow::ensure!(t0.elapsed() < WAIT, "the pair is not healthy");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(())
}

async fn one_run(lab: &Lab, way: Way, vip: Ipv4Addr, r: usize) -> anyhow::Result<RunResult> {
    ready(way).await?;
    let work =
        std::env::temp_dir().join(format!("duplex-bench-failover-{}-{r}", std::process::id()));
    let (sipp, started) = lab.sipp_load(vip, &work, (RATE_CPS, CALL_MS), WAIT * 2)?;
    tokio::time::sleep(BEFORE).await;
    let gone = serving_host(way).await?;
    let off = Instant::now();
    let (l, g) = (Lab::NAME.to_string(), gone.clone());
    power(move || duplex_lab::fault::power_off(&l, &g)).await?;
    if way == Way::Today {
        tokio::time::sleep(RESTART_AFTER.saturating_sub(off.elapsed())).await;
        let (l, g) = (Lab::NAME.to_string(), gone.clone());
        power_on(l, g).await?;
    }
    let whole = whole_again(lab, way, &gone, vip).await?;
    tokio::time::sleep(AFTER).await;
    sipp.stop();
    let report = sipp.wait().await?;
    if way != Way::Today {
        power_on(Lab::NAME.to_string(), gone.clone()).await?;
    }
    host_back(&gone).await?;
    if way == Way::Duplex {
        // The next run's lost member goes to a spare host again.
        cli(&["host", "state", &gone, "spare"]).await?;
    }
    let off_ms = (off - started).as_secs_f64() * 1000.0;
    let res = RunResult {
        first_answer_ms: first_answer(&report, off_ms)?,
        whole_again_ms: (whole - off).as_secs_f64() * 1000.0,
        calls: report.total_calls,
        failed: report.failed + report.abandoned,
        retransmissions: report.retransmissions,
    };
    let _ = std::fs::remove_dir_all(&work);
    Ok(res)
}

async fn power_on(lab: String, host: String) -> anyhow::Result<()> {
    let said = duplex_lab::fault::heal(&lab, &host).await?;
    eprintln!("    {said}");
    Ok(())
}

fn markdown(r: &FailoverResult) -> String {
    let mut md = format!(
        "# Losing the ACT's host\n\nsipp at {} calls/s of {} ms against the service address; the ACT's host powered off \
         (every process of its namespace killed, its uplink down) {} s into the load; {} runs per arm, median (min–max). \
         {} vCPUs, accel {}, commit {}.\n\n",
        r.rate_cps,
        r.call_length_ms,
        BEFORE.as_secs(),
        r.arms.first().map_or(0, |a| a.runs.len()),
        r.run.cpus,
        r.run.accel,
        r.run.commit
    );
    md += "| arm | power-off → first answered call (ms) | calls failed | retransmissions | power-off → whole again (ms) |\n|---|---|---|---|---|\n";
    for a in &r.arms {
        md += &format!(
            "| {} | {} | {} | {} | {} |\n",
            a.arm,
            cell(&a.first_answer_ms),
            cell(&a.failed),
            cell(&a.retransmissions),
            cell(&a.whole_again_ms)
        );
    }
    md += "\n\"Whole again\": the pair healthy (ACT and SBY confirmed) on live hosts; for (c), the lone VM serving on another host (it has no standby).\n\
           \"First answered call\": the earliest INVITE→200 that sipp recorded after the power-off (its `-trace_rtt` clock starts when sipp does; sipp starts a few ms after the benchmark reads its clock, so these times may be short by that much). \
           A call counts failed if sipp failed it or it was still open at the end.\n\n## Runs\n\n| arm | run | first answer (ms) | failed | retransmissions | whole again (ms) | calls |\n|---|---|---|---|---|---|---|\n";
    for a in &r.arms {
        for (i, x) in a.runs.iter().enumerate() {
            md += &format!(
                "| {:?} | {} | {} | {} | {} | {:.0} | {} |\n",
                a.way,
                i + 1,
                x.first_answer_ms.map_or("-".into(), |v| format!("{v:.0}")),
                x.failed,
                x.retransmissions,
                x.whole_again_ms,
                x.calls
            );
        }
    }
    md
}
