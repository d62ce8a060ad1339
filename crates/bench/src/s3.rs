//! S3: the ACT's kernel panics (the seed's watchdog NG: its first failure
//! already needs an OS restart) under SIP load, with the fast path and
//! with the full escalation, alternating run by run in one lab (h1, h2
//! the pair, h3 spare):
//! (a) fast path (the default policy): the ACT is isolated, the SBY
//!     promoted, the failed member re-created on the spare host;
//! (b) full escalation (`--fast-path off`): the restart unit climbs from
//!     the cause's phase, PH2.5: the SBY takes over first, then the old
//!     ACT reboots in place and is made SBY again.
//!
//! Per run: time from the panic to the first call answered after it
//! (restore service), and to the pair healthy again with the SBY holding
//! the ACT's state and the restart concluded (restore duplex operation);
//! calls failed, retransmissions, and the phase the controller chose.
//! Probation windows are set to 1 s so that every run's panic is a first
//! failure.

use crate::s1::moves::cli;
use crate::stats::{self, cell, first_answer, summarize, Summary};
use crate::Lab;
use anyhow::Context;
use duplex_core::guest_proto::{Fault, Op, FAULT_DELAY_MS};
use serde::Serialize;
use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

const RATE_CPS: f64 = 20.0;
const CALL_MS: u64 = 1000;
/// Load before the panic, and after the pair is whole again.
const BEFORE: Duration = Duration::from_secs(5);
const AFTER: Duration = Duration::from_secs(3);
/// Longest wait for the pair to be whole again.
const WAIT: Duration = Duration::from_secs(180);
const PAIR: &str = "sip";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Way {
    FastPath,
    FullEscalation,
}

impl Way {
    fn label(self) -> &'static str {
        match self {
            Way::FastPath => "(a) fast path: SBY promoted, ACT re-created on the spare host",
            Way::FullEscalation => "(b) full escalation: SBY first, then PH2.5 reboot in place",
        }
    }
    fn fast_path(self) -> &'static str {
        match self {
            Way::FastPath => "on",
            Way::FullEscalation => "off",
        }
    }
}

#[derive(Debug, Serialize)]
struct RunResult {
    way: Way,
    /// The phase the controller chose (`autoheal` for the fast path).
    phase: String,
    /// How the failure was found (the restart record's detail).
    found: String,
    /// Panic to the first call answered after it.
    service_ms: Option<f64>,
    /// Panic to the pair healthy again (SBY in sync, restart concluded).
    duplex_ms: f64,
    calls: u64,
    failed: u64,
    retransmissions: u64,
}

#[derive(Debug, Serialize)]
struct ArmResult {
    arm: &'static str,
    way: Way,
    service_ms: Summary,
    duplex_ms: Summary,
    failed: Summary,
    retransmissions: Summary,
}

#[derive(Serialize)]
struct S3Result {
    benchmark: &'static str,
    run: stats::RunInfo,
    rate_cps: f64,
    call_length_ms: u64,
    arms: Vec<ArmResult>,
    /// Medians of (b) over (a).
    service_ratio: Option<f64>,
    duplex_ratio: Option<f64>,
    runs: Vec<RunResult>,
}

pub async fn run(runs: usize, out: &Path) -> anyhow::Result<()> {
    let lab = Lab::up(3).await?;
    let accel = lab.accel().await;
    let vip = set_up(&lab).await?;
    let mut results = Vec::new();
    for r in 0..runs {
        for way in [Way::FastPath, Way::FullEscalation] {
            let res = one_run(&lab, way, vip, r).await?;
            eprintln!("  run {} {way:?}: {res:?}", r + 1);
            results.push(res);
        }
    }
    let arms: Vec<ArmResult> = [Way::FastPath, Way::FullEscalation]
        .into_iter()
        .map(|w| summarize_arm(w, &results))
        .collect();
    let ratio = |f: fn(&ArmResult) -> &Summary| {
        let (a, b) = (f(&arms[0]), f(&arms[1]));
        (a.n > 0 && b.n > 0 && a.median > 0.0).then(|| b.median / a.median)
    };
    let result = S3Result {
        benchmark: "s3",
        run: stats::run_info(&accel).await,
        rate_cps: RATE_CPS,
        call_length_ms: CALL_MS,
        service_ratio: ratio(|a| &a.service_ms),
        duplex_ratio: ratio(|a| &a.duplex_ms),
        arms,
        runs: results,
    };
    stats::write(out, "s3", &result, &markdown(&result))
}

fn summarize_arm(way: Way, runs: &[RunResult]) -> ArmResult {
    let mine: Vec<&RunResult> = runs.iter().filter(|r| r.way == way).collect();
    let f = |g: &dyn Fn(&RunResult) -> Option<f64>| -> Summary {
        summarize(&mine.iter().filter_map(|r| g(r)).collect::<Vec<_>>())
    };
    ArmResult {
        arm: way.label(),
        way,
        service_ms: f(&|r| r.service_ms),
        duplex_ms: f(&|r| Some(r.duplex_ms)),
        failed: f(&|r| Some(r.failed as f64)),
        retransmissions: f(&|r| Some(r.retransmissions as f64)),
    }
}

/// The pair `sip` (ACT on h1, SBY on h2), h3 spare; returns the service
/// address.
async fn set_up(lab: &Lab) -> anyhow::Result<Ipv4Addr> {
    let vip = lab.vm_ip(50)?;
    let (a, b) = (lab.vm_ip(101)?, lab.vm_ip(102)?);
    cli(&["host", "state", "h3", "spare"]).await?;
    cli(&[
        "pair",
        "create",
        PAIR,
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

/// The pair's policy for `way`, every probation window 1 s.
async fn set_policy(way: Way) -> anyhow::Result<()> {
    let probations: Vec<String> = [
        "PH0.5", "PH1.0", "PH2.0", "PH2.5", "PH3.0", "PH3.5", "autoheal",
    ]
    .iter()
    .flat_map(|p| ["--probation".to_string(), format!("{p}=1")])
    .collect();
    let mut args = vec!["pair", "policy", PAIR, "--fast-path", way.fast_path()];
    args.extend(probations.iter().map(String::as_str));
    cli(&args).await.map(|_| ())
}

/// The pair healthy (its SBY holding the ACT's state); returns it.
async fn healthy() -> anyhow::Result<Value> {
    let t0 = Instant::now();
    loop {
        let p = cli(&["pair", "show", PAIR]).await?;
        if p["health"] == "healthy" && p["phase"] == "ready" {
            return Ok(p);
        }
        anyhow::ensure!(t0.elapsed() < WAIT, "pair not healthy within {WAIT:?}: {p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The member in `role` and its host.
fn member(p: &Value, role: &str) -> anyhow::Result<(String, String)> {
    let m = p["members_status"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["role"] == role))
        .with_context(|| format!("no {role} in {p}"))?;
    Ok((
        m["vm"].as_str().unwrap_or_default().to_string(),
        m["host"].as_str().unwrap_or_default().to_string(),
    ))
}

fn history_len(h: &Value) -> usize {
    h["history"].as_array().map_or(0, Vec::len)
}

/// Waits for `vm`'s restart after `before` entries to be concluded, then
/// for the pair to be healthy; returns the phase, how the failure was
/// found, and when.
async fn whole_again(vm: &str, before: usize) -> anyhow::Result<(String, String, Instant)> {
    let t0 = Instant::now();
    let (phase, found) = loop {
        let h = cli(&["vm", "history", vm]).await?;
        if let Some(e) = h["history"].as_array().and_then(|a| a.get(before)) {
            if !e["outcome"].is_null() {
                anyhow::ensure!(e["outcome"]["ok"] == true, "the restart failed: {e}");
                let text = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                break (text("phase"), text("detail"));
            }
        }
        anyhow::ensure!(t0.elapsed() < WAIT, "no restart of {vm}: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    healthy().await?;
    Ok((phase, found, Instant::now()))
}

async fn one_run(lab: &Lab, way: Way, vip: Ipv4Addr, r: usize) -> anyhow::Result<RunResult> {
    set_policy(way).await?;
    let p = healthy().await?;
    let (act, host) = member(&p, "act")?;
    let before = history_len(&cli(&["vm", "history", &act]).await?);
    let work = std::env::temp_dir().join(format!("duplex-bench-s3-{}-{r}", std::process::id()));
    let (sipp, started) = lab.sipp_load(vip, &work, (RATE_CPS, CALL_MS), WAIT * 2)?;
    tokio::time::sleep(BEFORE).await;
    let n: u8 = host.trim_start_matches('h').parse().context("host name")?;
    lab.agent(n)?
        .guest(
            &act,
            &Op::InjectFault {
                fault: Fault::Panic,
            },
        )
        .await?;
    let panic = Instant::now() + Duration::from_millis(FAULT_DELAY_MS);
    let (phase, found, whole) = whole_again(&act, before).await?;
    tokio::time::sleep(AFTER).await;
    sipp.stop();
    let report = sipp.wait().await?;
    if way == Way::FastPath {
        // The next fast path needs a spare host again: the one the failed
        // member left.
        if let Err(e) = cli(&["host", "state", &host, "spare"]).await {
            eprintln!("    {host} not made spare again: {e:#}");
        }
    }
    let panic_ms = (panic - started).as_secs_f64() * 1000.0;
    let res = RunResult {
        way,
        phase,
        found,
        service_ms: first_answer(&report, panic_ms)?,
        duplex_ms: (whole - panic).as_secs_f64() * 1000.0,
        calls: report.total_calls,
        failed: report.failed + report.abandoned,
        retransmissions: report.retransmissions,
    };
    let _ = std::fs::remove_dir_all(&work);
    Ok(res)
}

fn markdown(r: &S3Result) -> String {
    let ratio = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.2}×"));
    let mut md = format!(
        "# S3: the ACT's kernel panics, fast path against full escalation\n\nsipp at {} calls/s of {} ms against the service \
         address; the ACT's guest panics (`vm fault panic`) {} s into the load; the two ways alternate run by run in one lab \
         (h1, h2 the pair, h3 spare); {} runs per arm, median (min–max). {} vCPUs, accel {}, commit {}.\n\n",
        r.rate_cps,
        r.call_length_ms,
        BEFORE.as_secs(),
        r.runs.len() / 2,
        r.run.cpus,
        r.run.accel,
        r.run.commit
    );
    md += "| arm | panic → first answered call (ms) | panic → duplex again (ms) | calls failed | retransmissions |\n|---|---|---|---|---|\n";
    for a in &r.arms {
        md += &format!(
            "| {} | {} | {} | {} | {} |\n",
            a.arm,
            cell(&a.service_ms),
            cell(&a.duplex_ms),
            cell(&a.failed),
            cell(&a.retransmissions)
        );
    }
    md += &format!(
        "\n(b) / (a), medians: service {}, duplex operation {}.\n\n\
         \"Duplex again\": the restart concluded and the pair healthy, its SBY holding the ACT's state. \
         \"First answered call\": the earliest INVITE→200 sipp recorded after the panic (the guest panics {} ms after \
         answering the order). A call counts failed if sipp failed it or it was still open at the end.\n\n\
         ## Runs\n\n| run | way | phase | found | first answer (ms) | duplex again (ms) | failed | retransmissions | calls |\n|---|---|---|---|---|---|---|---|---|\n",
        ratio(r.service_ratio),
        ratio(r.duplex_ratio),
        FAULT_DELAY_MS
    );
    for (i, x) in r.runs.iter().enumerate() {
        md += &format!(
            "| {} | {:?} | {} | {} | {} | {:.0} | {} | {} | {} |\n",
            i / 2 + 1,
            x.way,
            x.phase,
            x.found,
            x.service_ms.map_or("-".into(), |v| format!("{v:.0}")),
            x.duplex_ms,
            x.failed,
            x.retransmissions,
            x.calls
        );
    }
    md
}
