//! Synthetic clusters: a fabric, hosts, 10x as many VMs in groups that talk
//! (gravity model inside each group), some ACT/SBY pairs, and a random
//! feasible initial placement. Everything from one seed.

use duplex_core::placement::rng::SplitMix64;
use duplex_core::placement::{
    ClusterState, FatTree, HostInfo, HostState, LeafSpine, Topology, TrafficMatrix, VmInfo,
};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    LeafSpine,
    FatTree,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::LeafSpine => "leaf-spine",
            Kind::FatTree => "fat-tree",
        }
    }
}

pub const HOST_CPU: u32 = 32;
pub const HOST_MEM_MIB: u64 = 128 * 1024;
pub const VMS_PER_HOST: usize = 10;

/// A fabric of about `target` hosts: leaf-spine with 20 hosts per rack up
/// to 100 hosts, 40 above, 4 spines; fat-tree with the smallest even k
/// giving at least 90 % of `target` hosts.
pub fn fabric(kind: Kind, target: usize, r: &mut SplitMix64) -> anyhow::Result<Topology> {
    let mut t = match kind {
        Kind::LeafSpine => {
            let per = if target <= 100 { 20 } else { 40 };
            Topology::leaf_spine(&LeafSpine {
                racks: target.div_ceil(per) as u32,
                hosts_per_rack: per as u32,
                spines: 4,
                link_gbps: 100.0,
            })?
        }
        Kind::FatTree => {
            let mut k = 2u32;
            while ((k * k * k / 4) as f64) < 0.9 * target as f64 {
                k += 2;
            }
            Topology::fat_tree(&FatTree {
                k,
                link_gbps: 100.0,
            })?
        }
    };
    for rack in 0..t.rack_count() as u32 {
        t.set_rack_uplink_utilization(rack, r.range_f64(0.05, 0.6))?;
    }
    if kind == Kind::FatTree {
        for p in 0..t.pod_count() as u32 {
            t.set_pod_uplink_utilization(p, r.range_f64(0.05, 0.6))?;
        }
    }
    Ok(t)
}

/// Standard normal (Box-Muller).
fn gauss(r: &mut SplitMix64) -> f64 {
    let u1 = r.unit().max(1e-300);
    let u2 = r.unit();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Gravity-model rates inside one group: VM i sends to j
/// `total * w_i * w_j / Σ_{a≠b} w_a w_b`, log-normal weights.
pub fn gravity(r: &mut SplitMix64, m: &mut TrafficMatrix, names: &[String], total: f64) {
    let w: Vec<f64> = names.iter().map(|_| gauss(r).exp()).collect();
    let s: f64 = w.iter().sum();
    let s2: f64 = w.iter().map(|x| x * x).sum();
    let norm = s * s - s2;
    if norm <= 0.0 {
        return;
    }
    for (i, a) in names.iter().enumerate() {
        for (j, b) in names.iter().enumerate() {
            if i != j {
                // Names are distinct and rates finite: cannot fail.
                let _ = m.add_rate(a, b, total * w[i] * w[j] / norm);
            }
        }
    }
}

pub struct Synth {
    pub topo: Topology,
    pub state: ClusterState,
    pub traffic: TrafficMatrix,
    pub groups: usize,
}

/// `hosts` (all of the topology's), 10 VMs per host in groups of 2..=16
/// that talk (group rate 10 MB/s per member, x0.5..2), 1/5 of the groups
/// holding an ACT/SBY pair, VM sizes 1/2/4 vCPU with 4 GiB per vCPU, dirty
/// rates log-uniform 1..200 MB/s; random feasible initial placement.
pub fn cluster(kind: Kind, target: usize, seed: u64) -> anyhow::Result<Synth> {
    let mut r = SplitMix64::new(seed);
    let topo = fabric(kind, target, &mut r)?;
    let mut hosts: Vec<HostInfo> = topo
        .host_names()
        .iter()
        .map(|n| HostInfo {
            name: n.clone(),
            cpu: HOST_CPU,
            mem_mib: HOST_MEM_MIB,
            used_cpu: 0,
            used_mem_mib: 0,
            state: HostState::Ready,
            site: "dc1".into(),
            migrations_in_flight: 0,
        })
        .collect();
    let nv = hosts.len() * VMS_PER_HOST;
    let mut vms: Vec<VmInfo> = Vec::with_capacity(nv);
    let mut traffic = TrafficMatrix::new();
    let mut groups = 0;
    while vms.len() < nv {
        let size = (2 + r.below(15) as usize).min(nv - vms.len()).max(1);
        let first = vms.len();
        for i in 0..size {
            let cpu = match r.below(20) {
                0..=7 => 1,
                8..=14 => 2,
                _ => 4,
            };
            vms.push(VmInfo {
                name: format!("g{groups}-v{i}"),
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
        if size >= 2 && r.chance(0.2) {
            let (a, b) = (vms[first].name.clone(), vms[first + 1].name.clone());
            vms[first].pair_peer = Some(b);
            vms[first + 1].pair_peer = Some(a);
        }
        let names: Vec<String> = vms[first..].iter().map(|v| v.name.clone()).collect();
        let total = size as f64 * 10e6 * r.range_f64(0.5, 2.0);
        gravity(&mut r, &mut traffic, &names, total);
        groups += 1;
    }
    random_placement(&mut r, &mut hosts, &mut vms)?;
    Ok(Synth {
        topo,
        state: ClusterState { hosts, vms },
        traffic,
        groups,
    })
}

/// Put every VM on a random host with room (never with its pair peer).
pub fn random_placement(
    r: &mut SplitMix64,
    hosts: &mut [HostInfo],
    vms: &mut [VmInfo],
) -> anyhow::Result<()> {
    let index: std::collections::HashMap<String, usize> = vms
        .iter()
        .enumerate()
        .map(|(i, v)| (v.name.clone(), i))
        .collect();
    for i in 0..vms.len() {
        let peer_host = vms[i]
            .pair_peer
            .as_ref()
            .and_then(|p| vms[index[p]].host.clone());
        let fits = |h: &HostInfo| {
            h.used_cpu + vms[i].cpu <= h.cpu
                && h.used_mem_mib + vms[i].mem_mib <= h.mem_mib
                && Some(&h.name) != peer_host.as_ref()
        };
        let mut pick = None;
        for _ in 0..64 {
            let h = r.index(hosts.len());
            if fits(&hosts[h]) {
                pick = Some(h);
                break;
            }
        }
        if pick.is_none() {
            pick = hosts.iter().position(fits);
        }
        let Some(h) = pick else {
            anyhow::bail!("synthetic cluster overfull: no room for {}", vms[i].name);
        };
        hosts[h].used_cpu += vms[i].cpu;
        hosts[h].used_mem_mib += vms[i].mem_mib;
        vms[i].host = Some(hosts[h].name.clone());
    }
    Ok(())
}
