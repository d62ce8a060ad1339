//! S4 benchmark (`bench/s4`): network-aware placement at scale.
//!
//! (a) decisions per second and latency per decision, 100 to 10,000 hosts,
//!     leaf-spine and fat-tree, 10 VMs per host;
//! (b) quality: (i) rebalancing a random placement with the engine vs a
//!     network-blind RAM weigher, (ii) against the exhaustive optimum on
//!     instances small enough to enumerate.
//!
//! Writes bench/results/s4.json and bench/results/s4.md. Deterministic
//! clusters (seeded); only the timings vary between runs.

mod optimum;
mod quality;
mod rebalance;
mod report;
mod speed;
mod synth;

use clap::Parser;
use std::path::PathBuf;
use synth::Kind;

#[derive(Parser, Debug)]
#[command(about = "S4 benchmark: network-aware placement speed and quality")]
struct Args {
    /// Smaller run: sizes up to 1,000 hosts, fewer small instances.
    #[arg(long)]
    quick: bool,
    /// Host counts to run (default 100,1000,3000,10000; --quick: 100,1000).
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<usize>,
    #[arg(long, default_value_t = 4_423_646)]
    seed: u64,
    /// Decisions timed per size.
    #[arg(long, default_value_t = 5000)]
    decisions: usize,
    /// Most rebalancing passes over all VMs (part b-i).
    #[arg(long, default_value_t = 3)]
    passes: usize,
    /// Small instances per (hosts, VMs) configuration (part b-ii).
    #[arg(long)]
    instances: Option<usize>,
    /// Parts to run: any of speed, quality, optimum.
    #[arg(long, value_delimiter = ',', default_value = "speed,quality,optimum")]
    parts: Vec<String>,
    #[arg(long, default_value = "bench/results")]
    out_dir: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let sizes = if !a.sizes.is_empty() {
        a.sizes.clone()
    } else if a.quick {
        vec![100, 1000]
    } else {
        vec![100, 1000, 3000, 10_000]
    };
    let instances = a.instances.unwrap_or(if a.quick { 30 } else { 100 });
    let mut speed = Vec::new();
    let mut quality = Vec::new();
    for &n in &sizes {
        for kind in [Kind::LeafSpine, Kind::FatTree] {
            let seed = a.seed ^ (n as u64).wrapping_mul(0x9E37_79B9) ^ kind as u64;
            if !a.parts.iter().any(|p| p == "speed") {
                continue;
            }
            let row = speed::run(kind, n, seed, a.decisions)?;
            eprintln!(
                "speed   {:<10} {:>6} hosts {:>7} VMs: {:>8.0} decisions/s, p50 {:.1} us, p99 {:.1} us",
                row.fabric, row.hosts, row.vms, row.decisions_per_s, row.p50_us, row.p99_us
            );
            speed.push(row);
        }
        for kind in [Kind::LeafSpine, Kind::FatTree] {
            if !a.parts.iter().any(|p| p == "quality") {
                continue;
            }
            let seed = a.seed ^ (n as u64).wrapping_mul(0x9E37_79B9) ^ kind as u64;
            let row = quality::run(kind, n, seed, a.passes)?;
            eprintln!(
                "quality {:<10} {:>6} hosts: cross-rack {:.3e} (engine) vs {:.3e} (blind) B/s, -{:.1} %",
                row.fabric,
                row.hosts,
                row.engine.cost.cross_rack_bps,
                row.blind.cost.cross_rack_bps,
                row.cross_rack_reduction_vs_blind * 100.0
            );
            quality.push(row);
        }
    }
    let mut opt = Vec::new();
    // The small instances, then two beyond the exact group step's window
    // (more VMs than it places at once): there the ratio says what the
    // search finds when it cannot enumerate the cluster.
    let configs: &[(usize, usize)] = if a.parts.iter().any(|p| p == "optimum") {
        &[
            (4, 6),
            (4, 8),
            (5, 7),
            (5, 8),
            (6, 6),
            (6, 7),
            (5, 10),
            (6, 10),
        ]
    } else {
        &[]
    };
    for &(h, v) in configs {
        let row = optimum::run(h, v, instances, a.seed)?;
        eprintln!(
            "optimum {h} hosts {v} VMs: engine/opt mean {:.4} max {:.4}, optimal {:.0} %",
            row.engine_traffic_only.mean_ratio,
            row.engine_traffic_only.max_ratio,
            row.engine_traffic_only.optimal_share * 100.0
        );
        opt.push(row);
    }
    report::write(&a.out_dir, a.seed, a.passes, &sizes, &speed, &quality, &opt)
}
