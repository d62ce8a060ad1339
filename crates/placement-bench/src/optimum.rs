//! Part (b)(ii): small instances solved exactly by enumeration, to see how
//! far VM-by-VM rebalancing with the engine ends from the optimum of total
//! traffic x distance (same constraints: capacity, pair anti-affinity).

use crate::rebalance;
use crate::synth::{gravity, random_placement};
use duplex_core::placement::rebalance::incoming_order;
use duplex_core::placement::rng::SplitMix64;
use duplex_core::placement::{
    Cluster, ClusterState, Engine, FatTree, HostInfo, HostState, LeafSpine, Params, Topology,
    TrafficMatrix, VmInfo,
};
use serde::Serialize;

struct Instance {
    topo: Topology,
    state: ClusterState,
    traffic: TrafficMatrix,
}

/// `hosts` hosts of a 3x2 leaf-spine (distances 0/2/4) or spread over a
/// k=4 fat-tree (0/2/4/6), 8 vCPU / 32 GiB each; `vms` VMs of 1-4 vCPU
/// (4 GiB per vCPU, at most 70 % of the cluster) in groups of 2-4 with
/// gravity traffic, maybe one ACT/SBY pair; random initial placement.
fn instance(seed: u64, hosts: usize, vms: usize) -> anyhow::Result<Instance> {
    let mut r = SplitMix64::new(seed);
    let (topo, names): (Topology, Vec<String>) = if r.chance(0.5) {
        let t = Topology::leaf_spine(&LeafSpine {
            racks: 3,
            hosts_per_rack: 2,
            spines: 2,
            link_gbps: 100.0,
        })?;
        let mut n = t.host_names().to_vec();
        r.shuffle(&mut n);
        n.truncate(hosts);
        (t, n)
    } else {
        let t = Topology::fat_tree(&FatTree {
            k: 4,
            link_gbps: 100.0,
        })?;
        let mut n: Vec<String> = [
            "p0-e0-h0", "p0-e0-h1", "p0-e1-h0", "p1-e0-h0", "p1-e0-h1", "p2-e1-h0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        r.shuffle(&mut n);
        n.truncate(hosts);
        (t, n)
    };
    let mut hi: Vec<HostInfo> = names
        .iter()
        .map(|n| HostInfo {
            name: n.clone(),
            cpu: 8,
            mem_mib: 32 * 1024,
            used_cpu: 0,
            used_mem_mib: 0,
            state: HostState::Ready,
            site: "dc1".into(),
            migrations_in_flight: 0,
        })
        .collect();
    let budget = (hosts as u32 * 8) * 7 / 10;
    let mut vi: Vec<VmInfo> = Vec::new();
    let mut used = 0;
    for i in 0..vms {
        let mut cpu = [1u32, 1, 2, 2, 3, 4][r.index(6)];
        let left = vms - i - 1;
        cpu = cpu.min(budget.saturating_sub(used + left as u32)).max(1);
        used += cpu;
        vi.push(VmInfo {
            name: format!("v{i}"),
            host: None,
            cpu,
            mem_mib: u64::from(cpu) * 4096,
            dirty_bytes_per_s: 1e6 * 200f64.powf(r.unit()),
            pair_peer: None,
            include: vec![],
            exclude: vec![],
            site: None,
        });
    }
    let mut traffic = TrafficMatrix::new();
    let mut start = 0;
    while start < vms {
        let size = (2 + r.index(3)).min(vms - start);
        let group: Vec<String> = vi[start..start + size]
            .iter()
            .map(|v| v.name.clone())
            .collect();
        if size >= 2 {
            let total = size as f64 * 10e6 * r.range_f64(0.5, 2.0);
            gravity(&mut r, &mut traffic, &group, total);
        }
        // A little traffic between groups too.
        if start > 0 && r.chance(0.5) {
            let a = r.index(start);
            traffic.add_rate(&vi[a].name, &group[0], 1e6 * r.range_f64(0.5, 5.0))?;
        }
        start += size;
    }
    if vms >= 2 && r.chance(0.5) {
        let (a, b) = (vi[0].name.clone(), vi[1].name.clone());
        vi[0].pair_peer = Some(b);
        vi[1].pair_peer = Some(a);
    }
    random_placement(&mut r, &mut hi, &mut vi)?;
    Ok(Instance {
        topo,
        state: ClusterState { hosts: hi, vms: vi },
        traffic,
    })
}

/// Exhaustive branch and bound over all assignments. Returns the optimum
/// cost and the number of complete feasible assignments reached.
fn exhaustive(inst: &Instance) -> (f64, u64) {
    let h = inst.state.hosts.len();
    let v = inst.state.vms.len();
    let tid: Vec<u32> = inst
        .state
        .hosts
        .iter()
        .map(|x| inst.topo.host_id(&x.name).unwrap_or(0))
        .collect();
    let dist: Vec<Vec<f64>> = (0..h)
        .map(|a| {
            (0..h)
                .map(|b| f64::from(inst.topo.distance(tid[a], tid[b]).unwrap_or(0)))
                .collect()
        })
        .collect();
    let vm = &inst.state.vms;
    let rate: Vec<Vec<f64>> = (0..v)
        .map(|a| {
            (0..v)
                .map(|b| inst.traffic.rate_between(&vm[a].name, &vm[b].name))
                .collect()
        })
        .collect();
    let peer: Vec<Option<usize>> = vm
        .iter()
        .map(|x| {
            x.pair_peer
                .as_ref()
                .and_then(|p| vm.iter().position(|y| &y.name == p))
        })
        .collect();
    struct S<'a> {
        h: usize,
        v: usize,
        dist: &'a [Vec<f64>],
        rate: &'a [Vec<f64>],
        peer: &'a [Option<usize>],
        vms: &'a [VmInfo],
        cap: Vec<(u32, u64)>,
        used: Vec<(u32, u64)>,
        at: Vec<usize>,
        best: f64,
        leaves: u64,
    }
    fn go(s: &mut S, i: usize, cost: f64) {
        if cost >= s.best {
            return;
        }
        if i == s.v {
            s.leaves += 1;
            if cost < s.best {
                s.best = cost;
            }
            return;
        }
        for host in 0..s.h {
            let (c, m) = (s.vms[i].cpu, s.vms[i].mem_mib);
            if s.used[host].0 + c > s.cap[host].0 || s.used[host].1 + m > s.cap[host].1 {
                continue;
            }
            if let Some(p) = s.peer[i] {
                if p < i && s.at[p] == host {
                    continue;
                }
            }
            let mut add = 0.0;
            for j in 0..i {
                add += s.rate[i][j] * s.dist[host][s.at[j]];
            }
            s.used[host].0 += c;
            s.used[host].1 += m;
            s.at[i] = host;
            go(s, i + 1, cost + add);
            s.used[host].0 -= c;
            s.used[host].1 -= m;
        }
    }
    let mut s = S {
        h,
        v,
        dist: &dist,
        rate: &rate,
        peer: &peer,
        vms: vm,
        cap: inst
            .state
            .hosts
            .iter()
            .map(|x| (x.cpu, x.mem_mib))
            .collect(),
        used: vec![(0, 0); h],
        at: vec![0; v],
        best: f64::INFINITY,
        leaves: 0,
    };
    go(&mut s, 0, 0.0);
    (s.best, s.leaves)
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RatioStats {
    /// Mean of cost / optimum over instances with a non-zero optimum.
    pub mean_ratio: f64,
    pub max_ratio: f64,
    /// Σ cost / Σ optimum.
    pub aggregate_ratio: f64,
    /// Instances where the arm reached the optimum (within 1e-9 relative).
    pub optimal_share: f64,
    /// Instances within 1.05x of the optimum.
    pub within_5pct_share: f64,
}

fn stats(costs: &[f64], opts: &[f64]) -> RatioStats {
    let mut st = RatioStats::default();
    let (mut n, mut sum, mut sc, mut so, mut opt_hits, mut w5) = (0, 0.0, 0.0, 0.0, 0, 0);
    for (&c, &o) in costs.iter().zip(opts) {
        sc += c;
        so += o;
        let ratio = if o > 0.0 {
            c / o
        } else if c <= 0.0 {
            1.0
        } else {
            f64::INFINITY
        };
        if ratio.is_finite() {
            n += 1;
            sum += ratio;
            st.max_ratio = st.max_ratio.max(ratio);
        }
        if c <= o * (1.0 + 1e-9) + 1e-9 {
            opt_hits += 1;
        }
        if c <= o * 1.05 + 1e-9 {
            w5 += 1;
        }
    }
    st.mean_ratio = if n > 0 { sum / n as f64 } else { 0.0 };
    st.aggregate_ratio = if so > 0.0 { sc / so } else { 1.0 };
    st.optimal_share = opt_hits as f64 / costs.len().max(1) as f64;
    st.within_5pct_share = w5 as f64 / costs.len().max(1) as f64;
    st
}

#[derive(Debug, Clone, Serialize)]
pub struct OptimumRow {
    pub hosts: usize,
    pub vms: usize,
    pub instances: usize,
    /// hosts^vms.
    pub assignments: u64,
    /// Complete assignments the branch and bound reached (the rest were pruned).
    pub leaves_reached_mean: f64,
    pub exhaustive_ms_mean: f64,
    /// Engine rebalancing, traffic term only (memory and utilization weights 0).
    pub engine_traffic_only: RatioStats,
    /// Same, single moves only (no lookahead).
    pub engine_single_moves_only: RatioStats,
    /// Engine rebalancing, default parameters (the memory term can keep a VM put).
    pub engine_default: RatioStats,
    pub blind: RatioStats,
    pub initial_random: RatioStats,
}

/// Whether `vms` VMs are more than the exact group step places at once:
/// the engine's search cannot enumerate such a cluster.
pub fn beyond_exact(vms: usize) -> bool {
    vms > duplex_core::placement::exact::MAX_MEMBERS
}

pub fn run(hosts: usize, vms: usize, instances: usize, seed: u64) -> anyhow::Result<OptimumRow> {
    let (mut opt, mut eng_t, mut eng_d, mut bl, mut init) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut eng_single = Vec::new();
    let mut leaves = 0u64;
    let mut ms = 0.0;
    for i in 0..instances {
        let inst = instance(
            seed ^ ((hosts as u64) << 40) ^ ((vms as u64) << 32) ^ i as u64,
            hosts,
            vms,
        )?;
        let t0 = std::time::Instant::now();
        let (best, lv) = exhaustive(&inst);
        ms += t0.elapsed().as_secs_f64() * 1e3;
        leaves += lv;
        anyhow::ensure!(best.is_finite(), "instance {i} has no feasible assignment");
        let cluster = Cluster::new(&inst.state, &inst.topo)?;
        let traffic_only = Params {
            memory_weight: 0.0,
            utilization_weight: 0.0,
            ..Params::default()
        };
        let mut e = Engine::from_cluster(
            &inst.topo,
            cluster.clone(),
            &inst.traffic,
            traffic_only.clone(),
        )?;
        let order = incoming_order(&e);
        init.push(e.network_cost().traffic_hops);
        rebalance::engine(&mut e, &order, 100, true);
        eng_t.push(e.network_cost().traffic_hops);
        let mut e = Engine::from_cluster(&inst.topo, cluster.clone(), &inst.traffic, traffic_only)?;
        rebalance::engine(&mut e, &order, 100, false);
        eng_single.push(e.network_cost().traffic_hops);
        let mut e = Engine::from_cluster(
            &inst.topo,
            cluster.clone(),
            &inst.traffic,
            Params::default(),
        )?;
        rebalance::engine(&mut e, &order, 100, true);
        eng_d.push(e.network_cost().traffic_hops);
        let mut e = Engine::from_cluster(&inst.topo, cluster, &inst.traffic, Params::default())?;
        rebalance::blind(&mut e, &order, 100);
        bl.push(e.network_cost().traffic_hops);
        // The engine never beats the optimum (sanity of both sides).
        for c in [eng_t[i], eng_single[i], eng_d[i], bl[i], init[i]] {
            anyhow::ensure!(
                c >= best * (1.0 - 1e-9) - 1e-6,
                "instance {i}: {c} below optimum {best}"
            );
        }
        opt.push(best);
    }
    Ok(OptimumRow {
        hosts,
        vms,
        instances,
        assignments: (hosts as u64).pow(vms as u32),
        leaves_reached_mean: leaves as f64 / instances.max(1) as f64,
        exhaustive_ms_mean: ms / instances.max(1) as f64,
        engine_traffic_only: stats(&eng_t, &opt),
        engine_single_moves_only: stats(&eng_single, &opt),
        engine_default: stats(&eng_d, &opt),
        blind: stats(&bl, &opt),
        initial_random: stats(&init, &opt),
    })
}
