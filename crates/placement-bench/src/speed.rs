//! Part (a): decisions per second and latency per decision at each size.

use crate::synth::{self, Kind};
use duplex_core::placement::rng::SplitMix64;
use duplex_core::placement::{Cluster, Engine, Params};
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Clone, Serialize)]
pub struct SpeedRow {
    pub fabric: &'static str,
    pub hosts: usize,
    pub racks: usize,
    pub vms: usize,
    pub talking_pairs: usize,
    /// Indexing the cluster and the traffic matrix (once per state).
    pub build_ms: f64,
    pub decisions: usize,
    pub decisions_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Full explanation (every host's verdict and terms, with names).
    pub explain_p50_ms: f64,
}

pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn run(kind: Kind, target: usize, seed: u64, decisions: usize) -> anyhow::Result<SpeedRow> {
    let s = synth::cluster(kind, target, seed)?;
    let t0 = Instant::now();
    let cluster = Cluster::new(&s.state, &s.topo)?;
    let mut e = Engine::from_cluster(&s.topo, cluster, &s.traffic, Params::default())?;
    let build_ms = t0.elapsed().as_secs_f64() * 1e3;
    let nv = e.cluster().vm_count();
    let mut r = SplitMix64::new(seed ^ 0x5eed);
    // Warm-up (page in the arrays).
    for _ in 0..200 {
        let _ = e.decide_ix(r.index(nv) as u32);
    }
    let mut lat = Vec::with_capacity(decisions);
    let mut ok = 0usize;
    let all = Instant::now();
    for _ in 0..decisions {
        let v = r.index(nv) as u32;
        let t = Instant::now();
        let res = e.decide_ix(v);
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        ok += usize::from(res.is_ok());
    }
    let total = all.elapsed().as_secs_f64();
    anyhow::ensure!(
        ok > decisions / 2,
        "only {ok}/{decisions} decisions found a host"
    );
    lat.sort_by(f64::total_cmp);
    let mut ex = Vec::new();
    for _ in 0..20 {
        let name = e.cluster().vm_name(r.index(nv) as u32).to_string();
        let t = Instant::now();
        let x = e.explain(&name)?;
        ex.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(x);
    }
    ex.sort_by(f64::total_cmp);
    Ok(SpeedRow {
        fabric: kind.as_str(),
        hosts: e.cluster().host_count(),
        racks: s.topo.rack_count(),
        vms: nv,
        talking_pairs: (0..nv as u32).map(|v| e.peers_of(v).len()).sum::<usize>() / 2,
        build_ms,
        decisions,
        decisions_per_s: decisions as f64 / total,
        p50_us: pct(&lat, 0.5),
        p99_us: pct(&lat, 0.99),
        max_us: lat.last().copied().unwrap_or(0.0),
        explain_p50_ms: pct(&ex, 0.5),
    })
}
