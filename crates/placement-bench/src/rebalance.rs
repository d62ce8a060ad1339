//! Rebalancing a cluster VM by VM: with the engine's planner, and with a
//! network-blind scheduler in the style of Nova's RAM weigher (same filters,
//! most free RAM wins).

use duplex_core::placement::{self, Engine, HostIx, RebalanceOptions, VmIx};
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Rebalance {
    pub migrations: usize,
    /// Bytes the pre-copy model says the migrations moved.
    pub moved_gib: f64,
    pub passes: usize,
    pub seconds: f64,
    /// Migrations that were part of a lookahead sequence (engine only).
    pub sequence_moves: usize,
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// The engine arm: [`duplex_core::placement::rebalance`] (single moves
/// plus the lookahead sequences), VMs in `order`.
pub fn engine(e: &mut Engine, order: &[VmIx], max_passes: usize, lookahead: bool) -> Rebalance {
    let t0 = Instant::now();
    let plan = placement::rebalance(
        e,
        order,
        &RebalanceOptions {
            max_passes,
            lookahead,
            ..RebalanceOptions::default()
        },
    );
    Rebalance {
        migrations: plan.moves.len(),
        moved_gib: plan.moves.iter().map(|m| m.memory_bytes).sum::<f64>() / GIB,
        passes: plan.passes,
        seconds: t0.elapsed().as_secs_f64(),
        sequence_moves: plan.sequence_moves,
    }
}

/// Same visits, but each VM goes to the passing host with the most free
/// RAM (first by name on ties), if that has more free RAM than its current
/// host would have without it (i.e. the weigher ranks the current host
/// too). Network-blind: traffic plays no part.
pub fn blind(e: &mut Engine, order: &[VmIx], max_passes: usize) -> Rebalance {
    let t0 = Instant::now();
    let mut out = Rebalance::default();
    let mut cands: Vec<HostIx> = Vec::new();
    for _ in 0..max_passes {
        out.passes += 1;
        let mut moved = 0;
        for &v in order {
            if e.passing_hosts(v, &mut cands).is_err() {
                continue;
            }
            let c = e.cluster();
            let (Some(cur), Some((_, vmem))) = (c.vm_host(v), c.vm_size(v)) else {
                continue;
            };
            let stay_free = c.host_free(cur).map_or(0, |f| f.1) + vmem;
            let mut best: Option<(u64, HostIx)> = None;
            for &h in &cands {
                let free = c.host_free(h).map_or(0, |f| f.1);
                let more = match best {
                    None => true,
                    Some((b, _)) => b < free,
                };
                if more {
                    best = Some((free, h));
                }
            }
            if let Some((free, h)) = best {
                if free > stay_free {
                    if let Ok(f) = e.factor_at(v, h) {
                        out.moved_gib += f.memory_bytes / GIB;
                    }
                    if e.apply_ix(v, h).is_ok() {
                        moved += 1;
                    }
                }
            }
        }
        out.migrations += moved;
        if moved == 0 {
            break;
        }
    }
    out.seconds = t0.elapsed().as_secs_f64();
    out
}
