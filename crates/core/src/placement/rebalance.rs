//! Rebalancing a cluster as a sequence of single-VM migrations, each chosen
//! with the engine.
//!
//! VMs are visited in a given order (by default most incoming traffic
//! first, claims 3-4). A VM moves when the engine's best host has a lower
//! impact factor than staying. A VM that cannot improve alone but still has
//! peers on other hosts gets a bounded lookahead of short move sequences,
//! kept only when the sum of their factor changes is negative:
//!
//! - **make room**: the host of one of its top peers is full; move one of
//!   that host's VMs (the least attached to it) where the engine sends it,
//!   then move the VM next to its peer;
//! - **group**: move the VM together with the VMs on its host it talks to
//!   (transitively), where the engine's group decision sends them;
//! - **gather**: bring the VMs it talks to, transitively, onto one host
//!   (one of theirs, or the best host with room for all), as many as the
//!   filters let go, when the sequence as a whole pays;
//! - **follow**: move the VM to its best host that keeps room for its top
//!   peer, then let its top peers make their own best moves.
//!
//! Once a pass moves nothing, every VM that still talks across hosts has
//! its talking group (and the VMs on the hosts the group may go to)
//! placed exactly ([`super::exact`]: branch and bound over at most 8 VMs
//! on 8 hosts, each move made when it fits).
//!
//! The traffic and utilization terms are a potential over the whole cluster
//! (each is a sum over talking pairs), and a migration's memory term is
//! non-negative, so every accepted step or sequence lowers that potential:
//! rebalancing cannot cycle. Each pass is bounded; passes stop when one
//! moves nothing.

use super::cluster::{HostIx, VmIx};
use super::engine::Engine;
use super::explain::{Choice, Filter};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RebalanceOptions {
    pub max_passes: usize,
    /// Stop after this many migrations.
    pub max_moves: usize,
    /// Try move sequences for VMs that cannot improve alone.
    pub lookahead: bool,
    /// Peers (by rate) whose hosts the lookahead considers.
    pub lookahead_peers: usize,
    /// VMs per full host the make-room step considers evicting.
    pub lookahead_evictions: usize,
    /// Largest group the group step moves together.
    pub max_group: usize,
    /// After the single moves and sequences: place each VM's talking
    /// group exactly ([`super::exact`]).
    pub exact_groups: bool,
}

impl Default for RebalanceOptions {
    fn default() -> Self {
        RebalanceOptions {
            max_passes: 10,
            max_moves: usize::MAX,
            lookahead: true,
            lookahead_peers: 2,
            lookahead_evictions: 2,
            max_group: 16,
            exact_groups: true,
        }
    }
}

/// One migration of a plan, in order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Move {
    pub vm: VmIx,
    pub from: HostIx,
    pub to: HostIx,
    /// Factor of staying minus factor of the new host when the move was
    /// made (negative for the first step of a sequence that pays off later;
    /// 0 for the steps of an exact group placement, which pays as a whole).
    pub gain: f64,
    pub memory_bytes: f64,
    /// 0 for a single move; otherwise the sequence it belongs to (1, 2, ...).
    pub sequence: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub moves: Vec<Move>,
    pub passes: usize,
    pub single_moves: usize,
    pub sequence_moves: usize,
    /// The last pass moved nothing.
    pub converged: bool,
}

/// Placed VMs, most incoming traffic first (ties by index).
pub fn incoming_order(e: &Engine) -> Vec<VmIx> {
    let c = e.cluster();
    let mut v: Vec<VmIx> = (0..c.vm_count() as VmIx)
        .filter(|&v| c.vm_host(v).is_some())
        .collect();
    v.sort_by(|&a, &b| e.incoming(b).total_cmp(&e.incoming(a)).then(a.cmp(&b)));
    v
}

fn gain(c: &Choice) -> f64 {
    c.stay.map_or(0.0, |s| s.total) - c.factor.total
}

/// Rebalance by migrating VMs one by one; the engine's cluster is updated
/// as moves are made, and the plan lists them in order.
pub fn rebalance(e: &mut Engine, order: &[VmIx], opts: &RebalanceOptions) -> Plan {
    let mut plan = Plan::default();
    let mut seq = 0u32;
    for _ in 0..opts.max_passes {
        plan.passes += 1;
        let before = plan.moves.len();
        for &v in order {
            if plan.moves.len() >= opts.max_moves {
                return plan;
            }
            let Some(from) = e.cluster().vm_host(v) else {
                continue;
            };
            match e.decide_ix(v) {
                Ok(c) if c.improves() => {
                    if e.apply_ix(v, c.host).is_ok() {
                        plan.moves.push(Move {
                            vm: v,
                            from,
                            to: c.host,
                            gain: gain(&c),
                            memory_bytes: c.factor.memory_bytes,
                            sequence: 0,
                        });
                        plan.single_moves += 1;
                    }
                    continue;
                }
                _ => {}
            }
            if !opts.lookahead || opts.lookahead_peers == 0 {
                continue;
            }
            let Ok(stay) = e.factor_at(v, from) else {
                continue;
            };
            if stay.traffic <= 0.0 {
                continue;
            }
            let eps = 1e-9 * (stay.total.abs() + 1.0);
            let found = make_room(e, v, opts, eps)
                .or_else(|| group_move(e, v, opts))
                .or_else(|| gather(e, v, opts, eps))
                .or_else(|| follow(e, v, opts, eps));
            if let Some(moves) = found {
                seq += 1;
                plan.sequence_moves += moves.len();
                plan.moves
                    .extend(moves.into_iter().map(|m| Move { sequence: seq, ..m }));
            }
        }
        // Once the moves and sequences find nothing more, the exact group
        // step polishes what they left (run earlier, it would change the
        // path they take).
        if plan.moves.len() == before && opts.lookahead && opts.exact_groups {
            exact_pass(e, order, opts, &mut plan, &mut seq);
        }
        if plan.moves.len() == before {
            plan.converged = true;
            break;
        }
    }
    plan
}

/// Each VM that still talks across hosts has its talking group placed
/// exactly, when that pays.
fn exact_pass(
    e: &mut Engine,
    order: &[VmIx],
    opts: &RebalanceOptions,
    plan: &mut Plan,
    seq: &mut u32,
) {
    let roomy = super::exact::roomiest(e, super::exact::MAX_CANDIDATES);
    for &v in order {
        if plan.moves.len() >= opts.max_moves {
            return;
        }
        let Some(from) = e.cluster().vm_host(v) else {
            continue;
        };
        let Ok(stay) = e.factor_at(v, from) else {
            continue;
        };
        if stay.traffic <= 0.0 {
            continue;
        }
        let group = super::exact::group_of(e, v);
        let eps = 1e-9 * (stay.total.abs() + 1.0);
        let steps = super::exact::improve(e, &group, &roomy, eps);
        if steps.is_empty() {
            continue;
        }
        *seq += 1;
        plan.sequence_moves += steps.len();
        plan.moves.extend(steps.into_iter().map(|s| Move {
            vm: s.vm,
            from: s.from,
            to: s.to,
            gain: 0.0,
            memory_bytes: s.memory_bytes,
            sequence: *seq,
        }));
    }
}

/// The VM's top peers on other hosts, by rate.
fn remote_peers(e: &Engine, v: VmIx, n: usize) -> Vec<(VmIx, HostIx)> {
    let c = e.cluster();
    let Some(hv) = c.vm_host(v) else {
        return Vec::new();
    };
    let mut p: Vec<(VmIx, f64, HostIx)> = e
        .peers_of(v)
        .iter()
        .filter_map(|&(p, r)| c.vm_host(p).filter(|&h| h != hv).map(|h| (p, r, h)))
        .collect();
    p.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    p.into_iter().take(n).map(|(p, _, h)| (p, h)).collect()
}

/// Undo tentative moves, newest first.
fn revert(e: &mut Engine, moves: &[Move]) {
    for m in moves.iter().rev() {
        let _ = e.apply_ix(m.vm, m.from);
    }
}

fn step(e: &mut Engine, v: VmIx, c: &Choice) -> Option<Move> {
    let from = e.cluster().vm_host(v)?;
    e.apply_ix(v, c.host).ok()?;
    Some(Move {
        vm: v,
        from,
        to: c.host,
        gain: gain(c),
        memory_bytes: c.factor.memory_bytes,
        sequence: 0,
    })
}

fn make_room(e: &mut Engine, v: VmIx, opts: &RebalanceOptions, eps: f64) -> Option<Vec<Move>> {
    let from = e.cluster().vm_host(v)?;
    let mut tried: Vec<HostIx> = Vec::new();
    for (_, h) in remote_peers(e, v, opts.lookahead_peers) {
        if tried.contains(&h) {
            continue;
        }
        tried.push(h);
        if e.check_ix(v, h).ok()? != Err(Filter::Capacity) {
            continue;
        }
        // Candidates to evict: VMs on h other than v's peers, least attached to h first.
        let on_h = e.cluster().vms_on(h);
        let peers_of_v: Vec<VmIx> = e.peers_of(v).iter().map(|p| p.0).collect();
        let mut cands: Vec<(f64, VmIx)> = on_h
            .iter()
            .filter(|u| !peers_of_v.contains(u))
            .map(|&u| {
                let attached: f64 = e
                    .peers_of(u)
                    .iter()
                    .filter(|(p, _)| e.cluster().vm_host(*p) == Some(h))
                    .map(|(_, r)| r)
                    .sum();
                (attached, u)
            })
            .collect();
        cands.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for &(_, u) in cands.iter().take(opts.lookahead_evictions) {
            let Ok(cu) = e.decide_ix(u) else { continue };
            let Some(m1) = step(e, u, &cu) else { continue };
            let fits = matches!(e.check_ix(v, h), Ok(Ok(())));
            if fits {
                if let (Ok(fv), Ok(sv)) = (e.factor_at(v, h), e.factor_at(v, from)) {
                    let total = -m1.gain + (fv.total - sv.total);
                    if total < -eps && e.apply_ix(v, h).is_ok() {
                        let m2 = Move {
                            vm: v,
                            from,
                            to: h,
                            gain: sv.total - fv.total,
                            memory_bytes: fv.memory_bytes,
                            sequence: 0,
                        };
                        return Some(vec![m1, m2]);
                    }
                }
            }
            revert(e, &[m1]);
        }
    }
    None
}

/// `v` and the VMs on its host it talks to, transitively, up to `max`.
fn colocated_group(e: &Engine, v: VmIx, max: usize) -> Vec<VmIx> {
    let c = e.cluster();
    let h = c.vm_host(v);
    let mut g = vec![v];
    let mut i = 0;
    while i < g.len() && g.len() < max {
        for &(p, _) in e.peers_of(g[i]) {
            if g.len() < max && c.vm_host(p) == h && !g.contains(&p) {
                g.push(p);
            }
        }
        i += 1;
    }
    g
}

fn group_move(e: &mut Engine, v: VmIx, opts: &RebalanceOptions) -> Option<Vec<Move>> {
    let from = e.cluster().vm_host(v)?;
    let g = colocated_group(e, v, opts.max_group);
    if g.len() < 2 {
        return None;
    }
    let c = e.decide_group_ix(&g).ok()?;
    let eps = 1e-9 * (c.stay.map_or(0.0, |s| s.total.abs()) + 1.0);
    if gain(&c) <= eps {
        return None;
    }
    let mut moves = Vec::with_capacity(g.len());
    for &m in &g {
        let (Ok(sv), Ok(fv)) = (e.factor_at(m, from), e.factor_at(m, c.host)) else {
            revert(e, &moves);
            return None;
        };
        if e.apply_ix(m, c.host).is_err() {
            revert(e, &moves);
            return None;
        }
        moves.push(Move {
            vm: m,
            from,
            to: c.host,
            gain: sv.total - fv.total,
            memory_bytes: fv.memory_bytes,
            sequence: 0,
        });
    }
    Some(moves)
}

/// `v` and the placed VMs it talks to, transitively (any host), up to `max`.
fn component(e: &Engine, v: VmIx, max: usize) -> Vec<VmIx> {
    let c = e.cluster();
    let mut g = vec![v];
    let mut i = 0;
    while i < g.len() && g.len() < max {
        for &(p, _) in e.peers_of(g[i]) {
            if g.len() < max && c.vm_host(p).is_some() && !g.contains(&p) {
                g.push(p);
            }
        }
        i += 1;
    }
    g
}

/// Move every member of `group` not on `h` there, as far as the filters
/// allow; returns the moves and the summed factor change.
fn try_gather(e: &mut Engine, group: &[VmIx], h: HostIx) -> (Vec<Move>, f64) {
    let mut moves = Vec::new();
    let mut total = 0.0;
    for &m in group {
        let Some(from) = e.cluster().vm_host(m) else {
            continue;
        };
        if from == h || !matches!(e.check_ix(m, h), Ok(Ok(()))) {
            continue;
        }
        let (Ok(sv), Ok(fv)) = (e.factor_at(m, from), e.factor_at(m, h)) else {
            continue;
        };
        if e.apply_ix(m, h).is_ok() {
            total += fv.total - sv.total;
            moves.push(Move {
                vm: m,
                from,
                to: h,
                gain: sv.total - fv.total,
                memory_bytes: fv.memory_bytes,
                sequence: 0,
            });
        }
    }
    (moves, total)
}

fn gather(e: &mut Engine, v: VmIx, opts: &RebalanceOptions, eps: f64) -> Option<Vec<Move>> {
    let comp = component(e, v, opts.max_group);
    if comp.len() < 2 {
        return None;
    }
    let c = e.cluster();
    let mut cands: Vec<HostIx> = comp.iter().filter_map(|&m| c.vm_host(m)).collect();
    cands.sort_unstable();
    cands.dedup();
    if cands.len() < 2 {
        return None;
    }
    let (mut cpu, mut mem) = (0u32, 0u64);
    for &m in &comp[1..] {
        let (mc, mm) = c.vm_size(m)?;
        cpu = cpu.saturating_add(mc);
        mem = mem.saturating_add(mm);
    }
    if let Ok(room) = e.decide_with_room_ix(v, cpu, mem) {
        if !cands.contains(&room.host) {
            cands.push(room.host);
        }
    }
    let mut best: Option<(f64, HostIx)> = None;
    for &h in &cands {
        let (moves, total) = try_gather(e, &comp, h);
        revert(e, &moves);
        let better = match best {
            None => true,
            Some((b, _)) => total < b,
        };
        if moves.len() > 1 && total < -eps && better {
            best = Some((total, h));
        }
    }
    let (_, h) = best?;
    Some(try_gather(e, &comp, h).0)
}

fn follow(e: &mut Engine, v: VmIx, opts: &RebalanceOptions, eps: f64) -> Option<Vec<Move>> {
    let peers = remote_peers(e, v, opts.lookahead_peers);
    let &(p1, _) = peers.first()?;
    let (pc, pm) = e.cluster().vm_size(p1)?;
    let cv = e.decide_with_room_ix(v, pc, pm).ok()?;
    let mut moves = vec![step(e, v, &cv)?];
    let mut total = -moves[0].gain;
    for (p, _) in peers {
        if e.cluster().vm_host(p) == Some(cv.host) {
            continue;
        }
        if let Ok(cp) = e.decide_ix(p) {
            if cp.improves() {
                if let Some(m) = step(e, p, &cp) {
                    total -= m.gain;
                    moves.push(m);
                }
            }
        }
    }
    if moves.len() > 1 && total < -eps {
        Some(moves)
    } else {
        revert(e, &moves);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::cluster::{ClusterState, HostInfo, HostState, VmInfo};
    use crate::placement::params::Params;
    use crate::placement::topology::{LeafSpine, Topology};
    use crate::placement::traffic::TrafficMatrix;

    fn host(name: &str, cpu: u32, used: u32) -> HostInfo {
        HostInfo {
            name: name.into(),
            cpu,
            mem_mib: 1 << 20,
            used_cpu: used,
            used_mem_mib: 0,
            state: HostState::Ready,
            site: "s".into(),
            migrations_in_flight: 0,
        }
    }
    fn vm(name: &str, host: &str, cpu: u32) -> VmInfo {
        VmInfo {
            name: name.into(),
            host: Some(host.into()),
            cpu,
            mem_mib: 1,
            dirty_bytes_per_s: 0.0,
            pair_peer: None,
            include: vec![],
            exclude: vec![],
            site: None,
        }
    }
    fn topo() -> Topology {
        Topology::leaf_spine(&LeafSpine {
            racks: 3,
            hosts_per_rack: 1,
            spines: 1,
            link_gbps: 100.0,
        })
        .unwrap()
    }
    fn params() -> Params {
        Params {
            memory_weight: 0.0,
            ..Params::default()
        }
    }

    #[test]
    fn make_room_evicts_a_bystander() {
        // a (alone on full r0) talks to b (r1); r1 is full with b and an
        // idle bystander x; r2 has room for one VM only.
        let t = topo();
        let s = ClusterState {
            hosts: vec![
                host("r0-h0", 2, 2),
                host("r1-h0", 4, 4),
                host("r2-h0", 2, 0),
            ],
            vms: vec![
                vm("a", "r0-h0", 2),
                vm("b", "r1-h0", 2),
                vm("x", "r1-h0", 2),
            ],
        };
        let mut m = TrafficMatrix::new();
        m.set_rate("a", "b", 10e6).unwrap();
        let mut e = Engine::new(&t, &s, &m, params()).unwrap();
        // Alone, a cannot improve: r2 is as far from b as r0.
        assert!(!e.decide("a").map(|d| d.improves()).unwrap_or(false));
        let order = incoming_order(&e);
        let plan = rebalance(&mut e, &order, &RebalanceOptions::default());
        assert_eq!(plan.sequence_moves, 2, "{plan:?}");
        assert_eq!(e.network_cost().traffic_hops, 0.0);
        assert_eq!(e.cluster().vm_host(2), Some(2), "x went to r2");
        assert!(plan.converged);
        // Without lookahead it stays stuck.
        let mut e = Engine::new(&t, &s, &m, params()).unwrap();
        let plan = rebalance(
            &mut e,
            &order,
            &RebalanceOptions {
                lookahead: false,
                ..RebalanceOptions::default()
            },
        );
        assert!(plan.moves.is_empty());
        assert_eq!(e.network_cost().traffic_hops, 40e6);
    }

    #[test]
    fn follow_moves_a_pair_of_talkers_together() {
        // a and b talk; both hosts are full; r2 is empty and fits both.
        let t = topo();
        let s = ClusterState {
            hosts: vec![
                host("r0-h0", 2, 2),
                host("r1-h0", 2, 2),
                host("r2-h0", 4, 0),
            ],
            vms: vec![vm("a", "r0-h0", 2), vm("b", "r1-h0", 2)],
        };
        let mut m = TrafficMatrix::new();
        m.set_rate("a", "b", 10e6).unwrap();
        let mut e = Engine::new(&t, &s, &m, params()).unwrap();
        let order = incoming_order(&e);
        let plan = rebalance(&mut e, &order, &RebalanceOptions::default());
        assert_eq!(plan.moves.len(), 2, "{plan:?}");
        assert_eq!(plan.moves[0].sequence, plan.moves[1].sequence);
        assert!(plan.moves[0].gain <= 0.0 && plan.moves[1].gain > 0.0);
        assert_eq!(e.network_cost().cross_host_bps, 0.0);
    }

    #[test]
    fn a_group_moves_together_next_to_its_remote_peer() {
        // x, y, z talk a lot among themselves on r2 and a little to p on r0;
        // r1 is empty but far; r0 has a second host with room for all three.
        let t = Topology::leaf_spine(&LeafSpine {
            racks: 3,
            hosts_per_rack: 2,
            spines: 1,
            link_gbps: 100.0,
        })
        .unwrap();
        let s = ClusterState {
            hosts: vec![
                host("r0-h0", 2, 2),
                host("r0-h1", 6, 0),
                host("r1-h0", 6, 0),
                host("r2-h0", 6, 6),
            ],
            vms: vec![
                vm("p", "r0-h0", 2),
                vm("x", "r2-h0", 2),
                vm("y", "r2-h0", 2),
                vm("z", "r2-h0", 2),
            ],
        };
        let mut m = TrafficMatrix::new();
        m.set_rate("x", "y", 50e6).unwrap();
        m.set_rate("y", "z", 50e6).unwrap();
        m.set_rate("z", "p", 1e6).unwrap();
        let mut e = Engine::new(&t, &s, &m, params()).unwrap();
        // No single VM improves by leaving its friends.
        for v in 1..4 {
            assert!(!e.decide_ix(v).unwrap().improves());
        }
        let g = e.decide_group_ix(&[3, 2, 1]).unwrap();
        assert_eq!(e.cluster().host_name(g.host), "r0-h1");
        assert_eq!((g.stay.unwrap().traffic, g.factor.traffic), (4e6, 2e6));
        let order = incoming_order(&e);
        let plan = rebalance(&mut e, &order, &RebalanceOptions::default());
        assert_eq!(plan.sequence_moves, 3, "{plan:?}");
        assert_eq!(e.network_cost().traffic_hops, 2e6);
        // Groups that cannot move together are refused with a reason.
        let mut e = Engine::new(&t, &s, &m, params()).unwrap();
        let err = e.decide_group_ix(&[0, 1]).unwrap_err().to_string();
        assert!(err.contains("not on one host"), "{err}");
        assert!(e.decide_group_ix(&[]).is_err());
        assert!(e
            .decide_group_ix(&[1, 1])
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }

    #[test]
    fn a_useless_sequence_is_undone() {
        // a talks to b; the only other host cannot take both: nothing moves.
        let t = topo();
        let s = ClusterState {
            hosts: vec![
                host("r0-h0", 2, 2),
                host("r1-h0", 2, 2),
                host("r2-h0", 3, 0),
            ],
            vms: vec![vm("a", "r0-h0", 2), vm("b", "r1-h0", 2)],
        };
        let mut m = TrafficMatrix::new();
        m.set_rate("a", "b", 10e6).unwrap();
        let mut e = Engine::new(&t, &s, &m, params()).unwrap();
        let before: Vec<_> = (0..2).map(|v| e.cluster().vm_host(v)).collect();
        let plan = rebalance(&mut e, &[0, 1], &RebalanceOptions::default());
        assert!(plan.moves.is_empty(), "{plan:?}");
        let after: Vec<_> = (0..2).map(|v| e.cluster().vm_host(v)).collect();
        assert_eq!(before, after);
        assert_eq!(e.cluster().host_free(2), Some((3, 1 << 20)));
    }
}
