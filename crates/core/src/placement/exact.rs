//! Exact placement of a small talking group, every other VM where it is:
//! the group's members (a VM and, transitively, the peers it talks to
//! most, up to [`MAX_MEMBERS`]) tried on every assignment to a few
//! candidate hosts (where they and their peers run, and where the engine
//! would send each alone, up to [`MAX_CANDIDATES`]) by branch and bound,
//! with capacity, pair anti-affinity and each VM's own filters. The cost
//! is the engine's: the traffic and utilization terms of every talking
//! pair with a member, and the memory term of every member that moves. A
//! better assignment is applied as a sequence of moves each of which fits
//! when it is made (none that needs a swap through a full host).
//!
//! What single moves cannot do (move two VMs that only pay together, or
//! trade places) this does within the group; it is what brings the
//! rebalancer to the optimum on small clusters (`bench/s4`, b-ii).

use super::cluster::{HostIx, VmIx};
use super::engine::Engine;
use std::collections::BTreeSet;

/// Largest group placed at once.
pub const MAX_MEMBERS: usize = 8;
/// Hosts a group is tried on.
pub const MAX_CANDIDATES: usize = 8;
/// Assignments (search nodes) tried per group before the best so far is taken.
pub const MAX_NODES: u64 = 5_000;

/// One move of an improvement, in the order it is made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub vm: VmIx,
    pub from: HostIx,
    pub to: HostIx,
    /// Bytes the pre-copy model says the move sends.
    pub memory_bytes: f64,
}

/// `seed` and the VMs it talks to most, transitively; then, while there
/// is room, the VMs sharing a host with them (they compete for its room:
/// a swap of two such VMs is found this way). Placed VMs only.
pub fn group_of(e: &Engine, seed: VmIx) -> Vec<VmIx> {
    let c = e.cluster();
    if c.vm_host(seed).is_none() {
        return Vec::new();
    }
    let mut members = vec![seed];
    let mut i = 0;
    while i < members.len() && members.len() < MAX_MEMBERS {
        let mut peers: Vec<(VmIx, f64)> = e
            .peers_of(members[i])
            .iter()
            .copied()
            .filter(|&(p, _)| c.vm_host(p).is_some() && !members.contains(&p))
            .collect();
        peers.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for (p, _) in peers {
            if members.len() == MAX_MEMBERS {
                break;
            }
            members.push(p);
        }
        i += 1;
    }
    let mut k = 0;
    while k < members.len() && members.len() < MAX_MEMBERS {
        if let Some(h) = c.vm_host(members[k]) {
            for v in c.vms_on(h) {
                if members.len() < MAX_MEMBERS && !members.contains(&v) {
                    members.push(v);
                }
            }
        }
        k += 1;
    }
    members
}

/// The search's view of one group.
struct Problem {
    members: Vec<VmIx>,
    cands: Vec<HostIx>,
    /// [member][cand]: may it run there (its own filters).
    admits: Vec<Vec<bool>>,
    /// [member][cand]: its traffic with non-members plus its move's cost.
    alone: Vec<Vec<f64>>,
    /// (member a, member b, rate) with a < b.
    inner: Vec<(usize, usize, f64)>,
    /// [cand][cand]: cost of a byte/s between them.
    weight: Vec<Vec<f64>>,
    /// Members' sizes, and what each candidate has free once the members
    /// leave it.
    size: Vec<(u32, u64)>,
    free: Vec<(u32, u64)>,
    /// Pairs of members that must not share a host, and a member's host
    /// it must avoid (its pair peer outside the group).
    apart: Vec<(usize, usize)>,
    avoid: Vec<Option<usize>>,
}

/// Improves where `group` runs if an assignment beats the current one by
/// more than `eps`; returns the moves made (none: nothing better, or no
/// order of moves that always fits).
///
/// `roomy` are hosts with much room (see [`roomiest`]), tried after the
/// hosts the group and its peers run on and where the engine sends each.
pub fn improve(e: &mut Engine, group: &[VmIx], roomy: &[HostIx], eps: f64) -> Vec<Step> {
    if group.is_empty() || group.len() > MAX_MEMBERS {
        return Vec::new();
    }
    let cands = candidates(e, group, roomy);
    let group = &widen(e, group, &cands);
    let Some(p) = problem(e, group, cands) else {
        return Vec::new();
    };
    let here: Vec<usize> = group
        .iter()
        .filter_map(|&v| {
            let h = e.cluster().vm_host(v)?;
            p.cands.iter().position(|&c| c == h)
        })
        .collect();
    if here.len() != group.len() {
        return Vec::new();
    }
    let now = cost(&p, &here);
    let mut s = Search {
        p: &p,
        at: Vec::with_capacity(group.len()),
        used: vec![(0, 0); p.cands.len()],
        best: (now - eps, None),
        nodes: 0,
    };
    s.go(0.0);
    match s.best.1 {
        Some(to) => apply(e, &p, &to),
        None => Vec::new(),
    }
}

/// The `n` ready hosts with the most free vCPUs (ties by index): the
/// candidates a group may spread to beyond its own and its peers' hosts.
/// One pass over the hosts: computed once per rebalancing pass.
pub fn roomiest(e: &Engine, n: usize) -> Vec<HostIx> {
    let c = e.cluster();
    let mut roomy: Vec<(u32, HostIx)> = (0..c.host_count() as HostIx)
        .filter(|&h| c.host_state(h) == Some(super::cluster::HostState::Ready))
        .map(|h| (c.host_free(h).map_or(0, |f| f.0), h))
        .collect();
    roomy.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    roomy.into_iter().take(n).map(|(_, h)| h).collect()
}

/// `group` and, while there is room, the VMs on the hosts it may go to:
/// they compete for those hosts' room.
fn widen(e: &Engine, group: &[VmIx], cands: &[HostIx]) -> Vec<VmIx> {
    let mut out = group.to_vec();
    for &h in cands {
        for v in e.cluster().vms_on(h) {
            if out.len() < MAX_MEMBERS && !out.contains(&v) {
                out.push(v);
            }
        }
    }
    out
}

fn candidates(e: &mut Engine, group: &[VmIx], roomy: &[HostIx]) -> Vec<HostIx> {
    let mut out: Vec<HostIx> = Vec::new();
    let add = |h: HostIx, out: &mut Vec<HostIx>| {
        if out.len() < MAX_CANDIDATES && !out.contains(&h) {
            out.push(h);
        }
    };
    for &v in group {
        if let Some(h) = e.cluster().vm_host(v) {
            add(h, &mut out);
        }
    }
    for &v in group {
        if let Ok(c) = e.decide_ix(v) {
            add(c.host, &mut out);
        }
    }
    let members: BTreeSet<VmIx> = group.iter().copied().collect();
    let mut outside: Vec<(f64, HostIx)> = group
        .iter()
        .flat_map(|&v| e.peers_of(v).to_vec())
        .filter(|(p, _)| !members.contains(p))
        .filter_map(|(p, r)| Some((r, e.cluster().vm_host(p)?)))
        .collect();
    outside.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, h) in outside {
        add(h, &mut out);
    }
    // The rest: hosts with much room (all of a small cluster).
    for &h in roomy {
        add(h, &mut out);
    }
    out
}

fn problem(e: &mut Engine, group: &[VmIx], cands: Vec<HostIx>) -> Option<Problem> {
    if group.is_empty() || group.len() > MAX_MEMBERS {
        return None;
    }
    let index = |v: VmIx| group.iter().position(|&m| m == v);
    let mut admits = Vec::with_capacity(group.len());
    let mut row = Vec::new();
    for &v in group {
        e.admitting(v, &cands, &mut row);
        admits.push(row.clone());
    }
    let c = e.cluster();
    let mut alone = vec![vec![0.0; cands.len()]; group.len()];
    let mut inner = Vec::new();
    for (i, &v) in group.iter().enumerate() {
        for &(p, r) in e.peers_of(v) {
            match index(p) {
                Some(j) if j > i => inner.push((i, j, r)),
                Some(_) => {}
                None => {
                    let Some(ph) = c.vm_host(p) else { continue };
                    for (k, &h) in cands.iter().enumerate() {
                        alone[i][k] += r * e.pair_weight(h, ph);
                    }
                }
            }
        }
        for (k, &h) in cands.iter().enumerate() {
            alone[i][k] += e.move_cost(v, h);
        }
    }
    let weight = cands
        .iter()
        .map(|&a| cands.iter().map(|&b| e.pair_weight(a, b)).collect())
        .collect();
    let size: Vec<(u32, u64)> = group
        .iter()
        .map(|&v| c.vm_size(v).unwrap_or((0, 0)))
        .collect();
    let mut free: Vec<(u32, u64)> = cands
        .iter()
        .map(|&h| c.host_free(h).unwrap_or((0, 0)))
        .collect();
    for (i, &v) in group.iter().enumerate() {
        if let Some(k) = c
            .vm_host(v)
            .and_then(|h| cands.iter().position(|&x| x == h))
        {
            free[k].0 += size[i].0;
            free[k].1 += size[i].1;
        }
    }
    let mut apart = Vec::new();
    let mut avoid = vec![None; group.len()];
    for (i, &v) in group.iter().enumerate() {
        let Some(peer) = c.vm_pair_peer(v) else {
            continue;
        };
        match index(peer) {
            Some(j) if j > i => apart.push((i, j)),
            Some(_) => {}
            None => {
                avoid[i] = c
                    .vm_host(peer)
                    .and_then(|h| cands.iter().position(|&x| x == h));
            }
        }
    }
    Some(Problem {
        members: group.to_vec(),
        cands,
        admits,
        alone,
        inner,
        weight,
        size,
        free,
        apart,
        avoid,
    })
}

/// Cost of members at candidates `at`.
fn cost(p: &Problem, at: &[usize]) -> f64 {
    let alone: f64 = at.iter().enumerate().map(|(i, &k)| p.alone[i][k]).sum();
    let inner: f64 = p
        .inner
        .iter()
        .map(|&(a, b, r)| r * p.weight[at[a]][at[b]])
        .sum();
    alone + inner
}

struct Search<'a> {
    p: &'a Problem,
    at: Vec<usize>,
    /// What the members placed so far take of each candidate.
    used: Vec<(u32, u64)>,
    /// Best cost to beat, and the assignment that has it.
    best: (f64, Option<Vec<usize>>),
    nodes: u64,
}

impl Search<'_> {
    /// Places member `at.len()` on each candidate in turn; `partial` is
    /// the cost of the members placed (a lower bound: terms are >= 0).
    fn go(&mut self, partial: f64) {
        let p = self.p;
        let i = self.at.len();
        if i == p.members.len() {
            self.best = (partial, Some(self.at.clone()));
            return;
        }
        for k in 0..p.cands.len() {
            self.nodes += 1;
            if self.nodes > MAX_NODES {
                return;
            }
            if !self.fits(i, k) {
                continue;
            }
            let mut add = p.alone[i][k];
            for &(a, b, r) in &p.inner {
                if b == i {
                    add += r * p.weight[self.at[a]][k];
                }
            }
            if partial + add >= self.best.0 {
                continue;
            }
            self.at.push(k);
            self.used[k].0 += p.size[i].0;
            self.used[k].1 += p.size[i].1;
            self.go(partial + add);
            self.used[k].0 -= p.size[i].0;
            self.used[k].1 -= p.size[i].1;
            self.at.pop();
        }
    }

    fn fits(&self, i: usize, k: usize) -> bool {
        let p = self.p;
        let (u, f, s) = (self.used[k], p.free[k], p.size[i]);
        p.admits[i][k]
            && p.avoid[i] != Some(k)
            && u.0 + s.0 <= f.0
            && u.1 + s.1 <= f.1
            && !p.apart.iter().any(|&(a, b)| b == i && self.at[a] == k)
    }
}

/// Moves the members to `to`, each move when its destination has room
/// and does not hold its pair peer; when none can go (a swap through full
/// hosts), one goes first to a candidate with room (one extra move per
/// member at most). Undone, and nothing returned, when no order works.
fn apply(e: &mut Engine, p: &Problem, to: &[usize]) -> Vec<Step> {
    let mut pending: Vec<(usize, HostIx)> = p
        .members
        .iter()
        .zip(to)
        .enumerate()
        .filter(|(_, (&vm, &k))| e.cluster().vm_host(vm) != Some(p.cands[k]))
        .map(|(i, (_, &k))| (i, p.cands[k]))
        .collect();
    let mut done: Vec<Step> = Vec::new();
    let mut detours = 0;
    while !pending.is_empty() {
        let next = pending
            .iter()
            .position(|&(i, h)| may_go(e, p.members[i], h))
            .map(|at| pending.remove(at));
        let (vm, dest) = match next {
            Some((i, h)) => (p.members[i], h),
            None if detours < p.members.len() => {
                let Some((vm, h)) = detour(e, p, &pending) else {
                    return undo(e, done);
                };
                detours += 1;
                (vm, h)
            }
            None => return undo(e, done),
        };
        let Some(from) = e.cluster().vm_host(vm) else {
            return undo(e, done);
        };
        let memory_bytes = e.move_bytes(vm, dest).0;
        if e.apply_ix(vm, dest).is_err() {
            return undo(e, done);
        }
        done.push(Step {
            vm,
            from,
            to: dest,
            memory_bytes,
        });
    }
    done
}

/// `vm` fits on `h` now and its pair peer is not there.
fn may_go(e: &Engine, vm: VmIx, h: HostIx) -> bool {
    let c = e.cluster();
    let (cpu, mem) = c.vm_size(vm).unwrap_or((0, 0));
    let (fc, fm) = c.host_free(h).unwrap_or((0, 0));
    let peer_there = c.vm_pair_peer(vm).and_then(|p| c.vm_host(p)) == Some(h);
    fc >= cpu && fm >= mem && !peer_there
}

/// A pending member and a candidate host it may wait on (its own filters
/// admit it, it fits, not where it is or is going).
fn detour(e: &Engine, p: &Problem, pending: &[(usize, HostIx)]) -> Option<(VmIx, HostIx)> {
    pending.iter().find_map(|&(i, dest)| {
        let vm = p.members[i];
        let cur = e.cluster().vm_host(vm)?;
        p.cands
            .iter()
            .enumerate()
            .find(|&(k, &h)| h != cur && h != dest && p.admits[i][k] && may_go(e, vm, h))
            .map(|(_, &h)| (vm, h))
    })
}

fn undo(e: &mut Engine, done: Vec<Step>) -> Vec<Step> {
    for s in done.iter().rev() {
        let _ = e.apply_ix(s.vm, s.from);
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::cluster::{ClusterState, HostInfo, HostState, VmInfo};
    use crate::placement::params::Params;
    use crate::placement::topology::Topology;
    use crate::placement::traffic::TrafficMatrix;

    fn topo() -> Topology {
        Topology::two_by_two()
    }

    /// Hosts of two 1-vCPU slots; `vms` as (name, host).
    fn state(t: &Topology, vms: &[(&str, &str)]) -> ClusterState {
        let hosts = t
            .host_names()
            .iter()
            .map(|h| {
                let on = vms.iter().filter(|(_, x)| x == h).count() as u32;
                HostInfo::ready(h, (2, 2048), (on, u64::from(on) * 1024))
            })
            .collect();
        let vms = vms
            .iter()
            .map(|(n, h)| VmInfo::placed(n, Some(h), 1, 1024))
            .collect();
        ClusterState { hosts, vms }
    }

    fn traffic_only() -> Params {
        Params {
            memory_weight: 0.0,
            utilization_weight: 0.0,
            ..Params::default()
        }
    }

    #[test]
    fn a_swap_between_full_hosts_goes_by_a_detour() {
        // r0-h0 holds a and y, r1-h0 holds b and x; a talks to x, b to y.
        // Both hosts are full: no single move helps, a swap of a and b does.
        let t = topo();
        let mut s = state(
            &t,
            &[
                ("a", "r0-h0"),
                ("y", "r0-h0"),
                ("b", "r1-h0"),
                ("x", "r1-h0"),
            ],
        );
        // The other hosts may only serve as a detour: one slot each, taken
        // in r0-h1 by a silent VM.
        s.vms.push(VmInfo {
            name: "quiet".into(),
            host: Some("r0-h1".into()),
            ..s.vms[0].clone()
        });
        s.hosts[1].used_cpu = 1;
        s.hosts[1].used_mem_mib = 1024;
        let mut m = TrafficMatrix::new();
        m.set_rate("a", "x", 5e6).unwrap();
        m.set_rate("b", "y", 5e6).unwrap();
        let mut e = Engine::new(&t, &s, &m, traffic_only()).unwrap();
        let a = e.cluster().vm_ix("a").unwrap();
        assert!(e.network_cost().traffic_hops > 0.0);
        let group = group_of(&e, a);
        assert_eq!(group.len(), 4, "a, x and who shares their hosts: {group:?}");
        let roomy = roomiest(&e, MAX_CANDIDATES);
        let steps = improve(&mut e, &group, &roomy, 1e-9);
        assert!(!steps.is_empty());
        assert_eq!(e.network_cost().traffic_hops, 0.0, "{steps:?}");
        // Every step fitted when it was made: no host over its 2 slots.
        for h in 0..e.cluster().host_count() as HostIx {
            assert!(e.cluster().vms_on(h).len() <= 2);
        }
        // Nothing better now.
        let group = group_of(&e, a);
        assert!(improve(&mut e, &group, &roomy, 1e-9).is_empty());
    }

    #[test]
    fn pair_members_stay_apart_and_filters_hold() {
        // a and b are a pair and talk: they may not share a host, and the
        // best they can do is one rack; r1 is in maintenance.
        let t = topo();
        let mut s = state(&t, &[("a", "r0-h0"), ("b", "r1-h0")]);
        s.vms[0].pair_peer = Some("b".into());
        s.vms[1].pair_peer = Some("a".into());
        s.hosts[3].state = HostState::Maintenance; // r1-h1
        let mut m = TrafficMatrix::new();
        m.set_rate("a", "b", 5e6).unwrap();
        let mut e = Engine::new(&t, &s, &m, traffic_only()).unwrap();
        let a = e.cluster().vm_ix("a").unwrap();
        let group = group_of(&e, a);
        let roomy = roomiest(&e, MAX_CANDIDATES);
        improve(&mut e, &group, &roomy, 1e-9);
        let c = e.cluster();
        let (ha, hb) = (
            c.vm_host(a).unwrap(),
            c.vm_host(c.vm_ix("b").unwrap()).unwrap(),
        );
        assert_ne!(ha, hb, "pair members apart");
        assert_eq!(c.host_rack(ha), c.host_rack(hb), "in one rack");
        assert_ne!(c.host_name(ha), "r1-h1");
        assert_ne!(c.host_name(hb), "r1-h1");
    }
}
