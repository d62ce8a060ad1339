//! The console at size: a simulated cluster (`duplex_sim::cluster`: the
//! real controller over simulated hosts that report every second, 1,000
//! hosts and 5,000 VMs by default) served over TLS as the controller
//! serves it, the real page in Debian's headless chromium. Measured:
//! - page load: from navigation to the first tab on screen with every
//!   table received (and the first message's size), one fresh session per
//!   run;
//! - tab switch: the script's time to render a tab from what the page
//!   holds (layout and paint not included);
//! - live update: from a message's arrival to the start of the frame after
//!   the one that drew it (laid out and painted), per tab, while pairs
//!   switch over and hosts change state;
//! - the controller's CPU with one page open against none, alternating
//!   (the feed rebuilds each page's rows every second).

mod browser;

use crate::stats::{self, summarize, Summary};
use anyhow::{bail, Context};
use axum::http::{Method, StatusCode};
use browser::{tab, until, Driver};
use duplex_sim::cluster::{host_name, pair_name, Cluster, Size};
use serde::Serialize;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tabs measured, in order.
const TABS: [&str; 5] = ["pairs", "hosts", "vms", "topology", "feed"];
/// Rounds of changes per tab, and the time between them.
const ROUNDS: usize = 8;
const ROUND_GAP: Duration = Duration::from_secs(2);
/// Pairs switched over and hosts flipped per round.
const SWITCHES: usize = 5;
const FLIPS: usize = 10;
/// Seconds per CPU window.
const CPU_WINDOW: Duration = Duration::from_secs(15);
/// The cluster settles (first reports, traffic rates) this long first.
const SETTLE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub hosts: usize,
    pub vms: usize,
    pub runs: usize,
}

#[derive(Serialize)]
struct Load {
    ms: f64,
    first_message_bytes: u64,
}

#[derive(Serialize)]
struct TabResult {
    tab: &'static str,
    switch_ms: Summary,
    updates: usize,
    apply_ms: Summary,
    apply_p95_ms: f64,
    bytes: Summary,
}

#[derive(Serialize)]
struct Cpu {
    /// Controller CPU seconds per second, no page open / one page open.
    without_page: Vec<f64>,
    with_page: Vec<f64>,
}

#[derive(Serialize)]
struct Report {
    hosts: usize,
    vms: usize,
    pairs: usize,
    racks: usize,
    sites: usize,
    loads: Vec<Load>,
    tabs: Vec<TabResult>,
    cpu: Cpu,
}

pub async fn run(p: Params, out: &Path) -> anyhow::Result<()> {
    let size = Size {
        hosts: p.hosts,
        vms: p.vms,
        racks: (p.hosts / 20).max(1),
        sites: if p.hosts >= 40 { 2 } else { 1 },
    };
    eprintln!(
        "console: starting a simulated cluster of {} hosts, {} VMs",
        size.hosts, size.vms
    );
    let cluster = Cluster::start(size, 1).await.map_err(anyhow::Error::msg)?;
    let pki_dir = tempfile::tempdir()?;
    let port = serve(&cluster, pki_dir.path()).await?;
    tokio::time::sleep(SETTLE).await;
    let driver = Driver::start().await?;
    let mut loads = Vec::new();
    let mut cpu = Cpu {
        without_page: Vec::new(),
        with_page: Vec::new(),
    };
    let mut last = None;
    for run in 0..p.runs.max(1) {
        if let Some(old) = last.take() {
            let _ = fantoccini::Client::close(old).await;
        }
        cpu.without_page.push(cpu_per_s(CPU_WINDOW).await);
        let c = driver.browser().await?;
        let load = open(&cluster, &c, port).await?;
        eprintln!(
            "console: run {}: page on screen after {:.0} ms ({} bytes first)",
            run + 1,
            load.ms,
            load.first_message_bytes
        );
        loads.push(load);
        cpu.with_page.push(cpu_per_s(CPU_WINDOW).await);
        last = Some(c);
    }
    let c = last.context("no page was opened")?;
    let mut tabs = Vec::new();
    for (i, name) in TABS.into_iter().enumerate() {
        tabs.push(measure_tab(&cluster, &c, name, i).await?);
    }
    let _ = c.close().await;
    let report = Report {
        hosts: size.hosts,
        vms: size.vms,
        pairs: cluster.pairs,
        racks: size.racks,
        sites: size.sites,
        loads,
        tabs,
        cpu,
    };
    stats::write(out, "console", &report, &markdown(&report))
}

/// Serves the cluster's API over TLS on a loopback port (a throwaway CA).
async fn serve(cluster: &Cluster, dir: &Path) -> anyhow::Result<u16> {
    let pki = duplex_tls::test_pki::TestPki::new(dir)?;
    let tls = Arc::new(duplex_tls::serve::acceptor(pki.controller()?)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let app = cluster.router.clone();
    tokio::spawn(async move {
        let never = std::future::pending::<()>();
        if let Err(e) = duplex_tls::serve::serve(listener, tls, app, never).await {
            eprintln!("console: serving stopped: {e}");
        }
    });
    Ok(port)
}

/// A fresh session's page: the time until it is on screen.
async fn open(cluster: &Cluster, c: &fantoccini::Client, port: u16) -> anyhow::Result<Load> {
    let (status, grant) = cluster
        .operator(Method::POST, "/v1/sessions", Some(json!({})))
        .await;
    if status != StatusCode::CREATED {
        bail!("no console session: {status} {grant}");
    }
    let url = grant["url"].as_str().context("no login address")?;
    let query = url.split_once('?').context("no token in the address")?.1;
    c.goto(&format!("https://127.0.0.1:{port}/ui/login?{query}"))
        .await?;
    let shown = until(
        c,
        "its first message",
        "const t = window.duplexTimings; return t && t.shown !== null && [t.shown, t.first_bytes];",
    )
    .await?;
    Ok(Load {
        ms: shown[0].as_f64().unwrap_or(f64::NAN),
        first_message_bytes: shown[1].as_u64().unwrap_or(0),
    })
}

async fn measure_tab(
    cluster: &Cluster,
    c: &fantoccini::Client,
    name: &'static str,
    nth: usize,
) -> anyhow::Result<TabResult> {
    let switch = format!(
        "const t = performance.now(); document.querySelector('nav button[data-tab={name}]').click(); return performance.now() - t;"
    );
    let away = if name == "feed" { "pairs" } else { "feed" };
    let mut switch_ms = Vec::new();
    for _ in 0..3 {
        tab(c, away).await?;
        let ms = c.execute(&switch, vec![]).await?;
        switch_ms.push(ms.as_f64().unwrap_or(f64::NAN));
    }
    c.execute("window.duplexTimings.applies = []; return true;", vec![])
        .await?;
    for round in 0..ROUNDS {
        changes(cluster, nth * ROUNDS + round).await;
        tokio::time::sleep(ROUND_GAP).await;
    }
    let applies = c
        .execute(
            "return window.duplexTimings.applies.map((a) => [a.ms, a.bytes]);",
            vec![],
        )
        .await?;
    let applies: Vec<(f64, f64)> = serde_json::from_value(applies).context("timings")?;
    let ms: Vec<f64> = applies.iter().map(|a| a.0).collect();
    let r = TabResult {
        tab: name,
        switch_ms: summarize(&switch_ms),
        updates: applies.len(),
        apply_p95_ms: p95(&ms),
        apply_ms: summarize(&ms),
        bytes: summarize(&applies.iter().map(|a| a.1).collect::<Vec<_>>()),
    };
    eprintln!(
        "console: {name}: {} updates, median {:.1} ms, p95 {:.1} ms",
        r.updates, r.apply_ms.median, r.apply_p95_ms
    );
    Ok(r)
}

/// Round `n`'s changes: pairs switched over, hosts to maintenance and
/// back (those of the round before are set ready again).
async fn changes(cluster: &Cluster, n: usize) {
    for i in 0..SWITCHES {
        let p = (n * SWITCHES + i) % cluster.pairs.max(1);
        let path = format!("/v1/pairs/{}/switchover", pair_name(p));
        let (s, e) = cluster.operator(Method::POST, &path, None).await;
        if !s.is_success() {
            eprintln!("console: switchover of {}: {s} {e}", pair_name(p));
        }
    }
    for i in 0..FLIPS {
        let hosts = cluster.size.hosts;
        let set = |h: usize, state: &str| {
            let path = format!("/v1/hosts/{}/state", host_name(h % hosts));
            (path, json!({ "state": state }))
        };
        for (path, body) in [
            set(n.saturating_sub(1) * FLIPS + i, "ready"),
            set(n * FLIPS + i, "maintenance"),
        ] {
            let (s, e) = cluster.operator(Method::POST, &path, Some(body)).await;
            if !s.is_success() {
                eprintln!("console: {path}: {s} {e}");
            }
        }
    }
}

/// This process's CPU seconds per second over `window`.
async fn cpu_per_s(window: Duration) -> f64 {
    let (c0, t0) = (cpu_seconds(), Instant::now());
    tokio::time::sleep(window).await;
    (cpu_seconds() - c0) / t0.elapsed().as_secs_f64()
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes the struct it is given and nothing else.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return f64::NAN;
    }
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn p95(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n => v[((n as f64 * 0.95).ceil() as usize).clamp(1, n) - 1],
    }
}

fn markdown(r: &Report) -> String {
    let loads: Vec<f64> = r.loads.iter().map(|l| l.ms).collect();
    let bytes = r.loads.first().map(|l| l.first_message_bytes).unwrap_or(0);
    let l = summarize(&loads);
    let mut md = format!(
        "# Console at size\n\n\
         `duplex-bench console`: the real controller serving a simulated cluster of {} hosts \
         ({} racks, {} sites), {} VMs ({} pairs), hosts reporting every second with traffic \
         between VMs; the page in headless chromium (Debian's), over TLS on loopback.\n\n\
         ## Page load\n\n\
         From navigation to the first tab on screen with every table received (a fresh session \
         each run): median **{:.0} ms** (min {:.0}, max {:.0}, {} runs); the first message is {:.1} MB.\n\n\
         ## Live updates\n\n\
         Each round {SWITCHES} pairs switch over and {FLIPS} hosts go to maintenance ({FLIPS} back), \
         {ROUNDS} rounds {} s apart per tab. *apply*: from a message's arrival to the start of the \
         frame after the one that drew it (so layout and paint included); *tab*: the script's time \
         to render the tab from what the page holds (layout and paint not included).\n\n\
         | tab | tab (median ms) | updates | apply median (ms) | apply p95 (ms) | apply max (ms) | message median (kB) |\n\
         |---|---|---|---|---|---|---|\n",
        r.hosts,
        r.racks,
        r.sites,
        r.vms,
        r.pairs,
        l.median,
        l.min,
        l.max,
        l.n,
        bytes as f64 / 1e6,
        ROUND_GAP.as_secs(),
    );
    for t in &r.tabs {
        md += &format!(
            "| {} | {:.1} | {} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
            t.tab,
            t.switch_ms.median,
            t.updates,
            t.apply_ms.median,
            t.apply_p95_ms,
            t.apply_ms.max,
            t.bytes.median / 1e3
        );
    }
    let (a, b) = (summarize(&r.cpu.without_page), summarize(&r.cpu.with_page));
    md += &format!(
        "\n## Controller CPU\n\n\
         The bench's process (controller, simulated hosts and their reports) in {}-s windows, \
         no page open and one page open alternating: median {:.2} CPU-s/s without a page, \
         {:.2} with one: the feed of one page costs about **{:.2} CPU-s/s** at this size \
         (it rebuilds the page's rows every second).\n",
        CPU_WINDOW.as_secs(),
        a.median,
        b.median,
        b.median - a.median
    );
    md
}

#[cfg(test)]
mod tests {
    #[test]
    fn p95_is_an_observed_value() {
        assert_eq!(super::p95(&[1.0, 2.0, 3.0]), 3.0);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(super::p95(&v), 95.0);
        assert!(super::p95(&[]).is_nan());
    }
}
