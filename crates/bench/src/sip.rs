//! SIP load on an ACT/SBY pair in the lab: the highest call rate the pair
//! sustains cleanly — no failed call, no unexpected message, no
//! retransmission — (sipp's built-in uac scenario, rates rising until one is
//! not clean), then a run at the highest clean rate with a switchover in the
//! middle. Everything measured by sipp.

use crate::stats::{self, RunInfo};
use crate::Lab;
use duplex_controller::pair_exec::{self as pair, SwitchoverReport};
use duplex_sipp::{SippReport, SippRun};
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

const RATES: &[f64] = &[10.0, 20.0, 40.0, 60.0, 80.0, 120.0, 160.0];
const STEP_S: f64 = 15.0;
const CALL_MS: u64 = 1000;

#[derive(Serialize)]
struct Step {
    rate_cps: f64,
    report: SippReport,
}

#[derive(Serialize)]
struct SipResult {
    benchmark: &'static str,
    run: RunInfo,
    call_length_ms: u64,
    steps: Vec<Step>,
    highest_clean_rate_cps: Option<f64>,
    switchover_run: Option<(SippReport, SwitchoverReport)>,
}

fn sipp_run(vip: std::net::Ipv4Addr, rate: f64, secs: f64, tag: &str) -> anyhow::Result<SippRun> {
    let work = std::env::temp_dir().join(format!("duplex-bench-sip-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let mut run = SippRun::new(std::net::SocketAddr::from((vip, 5060)), work);
    run.rate_cps = rate;
    run.call_length_ms = CALL_MS;
    run.calls = Some((rate * secs) as u64);
    run.timeout = Duration::from_secs_f64(secs + 60.0);
    Ok(run)
}

fn row(rate: f64, r: &SippReport) -> String {
    let rt = r.response_time_ms.as_ref();
    format!(
        "| {rate:.0} | {} | {} | {} | {} | {} | {} / {} / {} |\n",
        r.total_calls,
        r.successful,
        r.failed,
        r.retransmissions,
        r.unexpected_messages,
        rt.map(|t| format!("{:.0}", t.p50)).unwrap_or_default(),
        rt.map(|t| format!("{:.0}", t.p99)).unwrap_or_default(),
        rt.map(|t| format!("{:.0}", t.max)).unwrap_or_default(),
    )
}

pub async fn run(lab: &Lab, out: &Path) -> anyhow::Result<()> {
    let (h1, h2) = (
        std::sync::Arc::new(lab.agent(1)?) as _,
        std::sync::Arc::new(lab.agent(2)?) as _,
    );
    let (ip_a, ip_b, vip) = (lab.vm_ip(0)?, lab.vm_ip(1)?, lab.vm_ip(100)?);
    let (a, b) = pair::boot(
        (h1, ("sipa", ip_a)),
        (h2, ("sipb", ip_b)),
        pair::Service {
            vip,
            prefix: 24,
            witness: None,
            // Replication authenticated as in a real pair (the bench's own
            // pair, on its own lab: any key does).
            key: Some(duplex_core::replica_key::ReplicaKey([0x42; 32])),
        },
        1,
    )
    .await?;
    anyhow::ensure!(
        pair::wait_healthy(&a, Duration::from_secs(30)).await,
        "the SIP service on the ACT never became healthy"
    );
    let prefix: Vec<String> = ["ip", "netns", "exec", lab.client_ns()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut steps = Vec::new();
    let mut best = None;
    for &rate in RATES {
        let run = sipp_run(vip, rate, STEP_S, &format!("r{rate}"))?;
        let r = duplex_sipp::run(&run, &prefix).await?;
        eprintln!("  {rate:>4} cps: {}", r.summary());
        // Sustained = every call succeeds without a single retransmission
        // (a retransmission means a response came later than T1 = 500 ms).
        let clean = r.all_successful() && r.unexpected_messages == 0 && r.retransmissions == 0;
        steps.push(Step {
            rate_cps: rate,
            report: r,
        });
        if !clean {
            break;
        }
        best = Some(rate);
    }
    let mut switchover_run = None;
    if let Some(rate) = best {
        eprintln!("  switchover under {rate} cps");
        let run = sipp_run(vip, rate, 20.0, "switch")?;
        let sipp = duplex_sipp::spawn(&run, &prefix)?;
        tokio::time::sleep(Duration::from_secs(9)).await;
        let sw = pair::switchover(&a, &b, 2, vip).await;
        let r = sipp.wait().await?;
        eprintln!("  {}", r.summary());
        switchover_run = Some((r, sw));
    }
    let mut md = format!(
        "# SIP load on an ACT/SBY pair (sipp built-in uac, {CALL_MS} ms calls, {STEP_S:.0} s per rate)\n\n\
         | rate cps | calls | successful | failed | retransmissions | unexpected | response ms p50 / p99 / max |\n|---|---|---|---|---|---|---|\n"
    );
    for s in &steps {
        md.push_str(&row(s.rate_cps, &s.report));
    }
    md.push_str(&format!(
        "\nHighest rate with no failed call and no retransmission: **{}**.\n",
        best.map(|b| format!("{b:.0} cps"))
            .unwrap_or_else(|| "none".into())
    ));
    if let (Some(rate), Some((r, sw))) = (best, &switchover_run) {
        md.push_str(&format!(
            "\n## Switchover at {rate:.0} cps (20 s run, switchover after 9 s: {:?}, {:.0} ms)\n\n\
             | rate cps | calls | successful | failed | retransmissions | unexpected | response ms p50 / p99 / max |\n|---|---|---|---|---|---|---|\n{}",
            sw.outcome,
            sw.total_ms,
            row(rate, r)
        ));
    }
    println!("{md}");
    let result = SipResult {
        benchmark: "sip",
        run: stats::run_info("see boot.json").await,
        call_length_ms: CALL_MS,
        steps,
        highest_clean_rate_cps: best,
        switchover_run,
    };
    stats::write(out, "sip", &result, &md)
}
