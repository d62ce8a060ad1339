//! The rebalancer at size: a simulated cluster (`duplex_sim::cluster`: the
//! real controller, its loops and API over simulated hosts that report
//! CPU time and element counters every second; 1,000 hosts, 5,000 VMs of
//! 4 vCPUs by default) under load that shifts: every shift a new tenth of
//! the VMs runs hot (3.9 vCPUs busy, the rest 0.5-2.5) and receives a new
//! flow of 1-5 MB/s from a random VM. Two arms from the same seed and
//! schedule, one after the other: the rebalancer off, and on (sustain and
//! cooldown shortened to 15 s and 60 s so that a shift fits in 2 minutes).
//! Sampled every 10 s: hosts over the high mark (as the controller
//! measures them) and the traffic × hops of the flows (bytes/s times the
//! links between the hosts of their ends, from the topology). Counted:
//! moves (and per hour of this compressed schedule), VMs moved more than
//! once and VMs that came back to a host they had left (oscillation),
//! hosts the rebalancer found stuck and moves that failed to start.

use anyhow::{bail, Context};
use axum::http::{Method, StatusCode};
use duplex_core::placement::rng::SplitMix64;
use duplex_core::placement::Topology;
use duplex_sim::cluster::{vm_name, Cluster, Size};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

/// Between samples.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// The cluster settles (first CPU rates, traffic rates) this long first.
const SETTLE: Duration = Duration::from_secs(20);
/// Share of the VMs hot in each shift, and what they keep busy.
const HOT_SHARE: f64 = 0.10;
const HOT_VCPUS: f64 = 3.9;
/// What the others keep busy (uniform).
const BASE_VCPUS: (f64, f64) = (0.5, 2.5);
/// A hot VM's new inbound flow (bytes/s, log-uniform).
const HOT_FLOW: (f64, f64) = (1e6, 5e6);
/// Events read per request.
const EVENT_PAGE: usize = 500;

#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub hosts: usize,
    pub vms: usize,
    pub shifts: usize,
    pub shift_every: Duration,
    pub seed: u64,
}

#[derive(Serialize, Clone)]
struct Sample {
    t_s: f64,
    hosts_over_high: usize,
    traffic_hops_mb: f64,
    moves: usize,
}

#[derive(Serialize)]
struct Arm {
    rebalancer: bool,
    samples: Vec<Sample>,
    moves: usize,
    moves_per_hour: f64,
    vms_moved: usize,
    vms_moved_twice: usize,
    /// VMs back on a host they had left.
    returns: usize,
    stuck_events: usize,
    failed_events: usize,
    /// Hosts over the high mark at each shift's end.
    over_at_shift_end: Vec<usize>,
    seconds: f64,
}

#[derive(Serialize)]
struct Report {
    hosts: usize,
    vms: usize,
    shifts: usize,
    shift_every_s: u64,
    seed: u64,
    policy: Value,
    arms: Vec<Arm>,
}

fn policy(on: bool) -> Value {
    json!({"enabled": on, "high": 0.85, "low": 0.70, "sustain_ms": 15000,
           "cooldown_ms": 60000, "max_in_flight": 4})
}

pub async fn run(p: Params, out: &Path) -> anyhow::Result<()> {
    if p.hosts < 4 || p.vms < p.hosts || p.shifts == 0 {
        bail!("need at least 4 hosts, as many VMs as hosts, and 1 shift");
    }
    let mut arms = Vec::new();
    for on in [false, true] {
        eprintln!("arm: rebalancer {}", if on { "on" } else { "off" });
        arms.push(arm(&p, on).await?);
    }
    let report = Report {
        hosts: p.hosts,
        vms: p.vms,
        shifts: p.shifts,
        shift_every_s: p.shift_every.as_secs(),
        seed: p.seed,
        policy: policy(true),
        arms,
    };
    crate::stats::write(out, "relief", &report, &markdown(&report))
}

/// Where every VM runs now.
fn placement(c: &Cluster) -> BTreeMap<String, String> {
    let w = duplex_sim::hosts::lock(&c.world);
    w.hosts
        .iter()
        .flat_map(|(h, s)| s.vms.keys().map(move |v| (v.clone(), h.clone())))
        .collect()
}

/// Σ rate × links between the hosts of a flow's ends, in MB/s·hop.
fn traffic_hops(c: &Cluster, topo: &Topology, at: &BTreeMap<String, String>) -> f64 {
    let id = |vm: usize| topo.host_id(at.get(&vm_name(vm))?);
    let mut sum = 0.0;
    for (a, b, rate) in c.flow_rates() {
        if let (Some(ha), Some(hb)) = (id(a), id(b)) {
            sum += rate * f64::from(topo.distance(ha, hb).unwrap_or(0));
        }
    }
    sum / 1e6
}

async fn hosts_over_high(c: &Cluster) -> anyhow::Result<usize> {
    let hosts = c.ctl.hosts().await?;
    let caps: Vec<_> = hosts.iter().map(|h| (h.name.clone(), h.capacity)).collect();
    let loads = c.ctl.host_loads(&caps);
    Ok(loads.iter().filter(|l| l.peak() > 0.85).count())
}

/// Every event of `kinds`, oldest first.
async fn events(c: &Cluster, kinds: &[&str]) -> anyhow::Result<Vec<Value>> {
    let (mut all, mut after) = (Vec::new(), None::<String>);
    loop {
        let mut path = format!("/v1/events?limit={EVENT_PAGE}");
        if let Some(a) = &after {
            path.push_str(&format!("&after={a}"));
        }
        let (s, page) = c.operator(Method::GET, &path, None).await;
        if s != StatusCode::OK {
            bail!("events: {s} {page}");
        }
        let page = page.as_array().cloned().unwrap_or_default();
        let Some(last) = page.last() else { break };
        after = last["id"].as_str().map(str::to_string);
        let n = page.len();
        all.extend(
            page.into_iter()
                .filter(|e| kinds.iter().any(|k| e["kind"].as_str() == Some(*k))),
        );
        if n < EVENT_PAGE {
            break;
        }
    }
    Ok(all)
}

/// Makes a new tenth of the VMs hot (the last shift's back to their
/// base), each with a new inbound flow; the last shift's flows stop.
fn shift(c: &Cluster, rng: &mut SplitMix64, base: &[f64], hot: &mut Vec<Hot>) {
    for h in hot.iter() {
        c.set_cpu(&vm_name(h.vm), base[h.vm]);
        c.set_flow(h.from, h.vm, h.before);
    }
    hot.clear();
    let n = ((base.len() as f64) * HOT_SHARE).round() as usize;
    let mut chosen = BTreeSet::new();
    while chosen.len() < n {
        chosen.insert(rng.index(base.len()));
    }
    let (lo, hi) = (HOT_FLOW.0.ln(), HOT_FLOW.1.ln());
    for vm in chosen {
        let from = (vm + 1 + rng.index(base.len() - 1)) % base.len();
        let before = c.flow_rate(from, vm);
        c.set_cpu(&vm_name(vm), HOT_VCPUS);
        c.set_flow(from, vm, rng.range_f64(lo, hi).exp());
        hot.push(Hot { vm, from, before });
    }
}

/// A hot VM, who sends to it, and at what rate before.
struct Hot {
    vm: usize,
    from: usize,
    before: f64,
}

async fn arm(p: &Params, on: bool) -> anyhow::Result<Arm> {
    let size = Size {
        hosts: p.hosts,
        vms: p.vms,
        racks: (p.hosts / 20).max(2),
        sites: 1,
    };
    let c = Cluster::start(size, p.seed)
        .await
        .map_err(anyhow::Error::msg)?;
    let topo = Topology::from_config(c.topology()).context("the cluster's topology")?;
    let (s, a) = c
        .operator(Method::POST, "/v1/rebalancer/policy", Some(policy(on)))
        .await;
    if s != StatusCode::OK {
        bail!("setting the policy: {s} {a}");
    }
    let mut rng = SplitMix64::new(p.seed ^ 0x5e1f);
    let base: Vec<f64> = (0..p.vms)
        .map(|_| rng.range_f64(BASE_VCPUS.0, BASE_VCPUS.1))
        .collect();
    for (i, b) in base.iter().enumerate() {
        c.set_cpu(&vm_name(i), *b);
    }
    tokio::time::sleep(SETTLE).await;
    let t0 = Instant::now();
    let first = placement(&c);
    let mut visited: BTreeMap<String, Vec<String>> = first
        .iter()
        .map(|(v, h)| (v.clone(), vec![h.clone()]))
        .collect();
    let (mut samples, mut hot, mut over_at_end) = (Vec::new(), Vec::new(), Vec::new());
    let mut moves = 0;
    for k in 0..p.shifts {
        shift(&c, &mut rng, &base, &mut hot);
        let end = t0 + p.shift_every * (k as u32 + 1);
        loop {
            let next = Instant::now() + SAMPLE_EVERY;
            tokio::time::sleep_until(next.min(end).into()).await;
            let at = placement(&c);
            for (vm, h) in &at {
                let seen = visited.entry(vm.clone()).or_default();
                if seen.last() != Some(h) {
                    seen.push(h.clone());
                    moves += 1;
                }
            }
            let over = hosts_over_high(&c).await?;
            samples.push(Sample {
                t_s: t0.elapsed().as_secs_f64(),
                hosts_over_high: over,
                traffic_hops_mb: traffic_hops(&c, &topo, &at),
                moves,
            });
            eprintln!(
                "  t={:.0}s over={over} moves={moves}",
                t0.elapsed().as_secs_f64()
            );
            if Instant::now() >= end {
                over_at_end.push(over);
                break;
            }
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    let moved: Vec<&Vec<String>> = visited.values().filter(|h| h.len() > 1).collect();
    let returns = moved
        .iter()
        .filter(|h| h.iter().collect::<BTreeSet<_>>().len() < h.len())
        .count();
    let stuck = events(&c, &["placement.relief_stuck"]).await?.len();
    let failed = events(&c, &["placement.relief_failed"]).await?.len();
    Ok(Arm {
        rebalancer: on,
        samples,
        moves,
        moves_per_hour: moves as f64 / seconds * 3600.0,
        vms_moved: moved.len(),
        vms_moved_twice: moved.iter().filter(|h| h.len() > 2).count(),
        returns,
        stuck_events: stuck,
        failed_events: failed,
        over_at_shift_end: over_at_end,
        seconds,
    })
}

fn markdown(r: &Report) -> String {
    let mut s = format!(
        "# S4 in the running cluster: the rebalancer at size\n\n\
         `bench/relief` (seed {}): a simulated cluster (the real controller, its loops and API over \
         simulated hosts reporting CPU time and element counters every second), {} hosts of 16 vCPUs \
         in {} racks, {} VMs of 4 vCPUs. Every {} s a new tenth of the VMs runs hot ({HOT_VCPUS} vCPUs \
         busy; the others 0.5-2.5) and receives a new flow of 1-5 MB/s from a random VM; the last \
         shift's hot VMs return to their base and their flows stop. Policy: high 0.85, low 0.70, \
         sustain 15 s, cooldown 60 s (the defaults are 30 s and 120 s; shortened so a shift fits), \
         4 moves at once. Both arms from the same seed and schedule, one after the other. A move is \
         a VM seen on another host than at the last sample; moves per hour are of this compressed \
         schedule.\n\n",
        r.seed,
        r.hosts,
        (r.hosts / 20).max(2),
        r.vms,
        r.shift_every_s
    );
    s.push_str("| rebalancer | moves | per hour | VMs moved | moved twice+ | back on a host they left | stuck | failed | hosts over high at each shift's end |\n|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for a in &r.arms {
        s.push_str(&format!(
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {:?} |\n",
            if a.rebalancer { "on" } else { "off" },
            a.moves,
            a.moves_per_hour,
            a.vms_moved,
            a.vms_moved_twice,
            a.returns,
            a.stuck_events,
            a.failed_events,
            a.over_at_shift_end
        ));
    }
    s.push_str("\n## Over time\n\nHosts over the high mark (as the controller measures them) and traffic × hops (MB/s·hop) per sample, off / on.\n\n| t (s) | over, off | over, on | traffic×hops, off | traffic×hops, on | moves, on |\n|---:|---:|---:|---:|---:|---:|\n");
    if let [off, on] = &r.arms[..] {
        for (a, b) in off.samples.iter().zip(&on.samples) {
            s.push_str(&format!(
                "| {:.0} | {} | {} | {:.1} | {:.1} | {} |\n",
                b.t_s,
                a.hosts_over_high,
                b.hosts_over_high,
                a.traffic_hops_mb,
                b.traffic_hops_mb,
                b.moves
            ));
        }
    }
    s
}
