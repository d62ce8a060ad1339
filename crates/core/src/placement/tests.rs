//! Engine tests: unit tests of each filter and term, and property tests over
//! many random small clusters checked against an independent oracle written
//! from the raw [`ClusterState`].

use super::cluster::{ClusterState, HostInfo, HostState, VmInfo};
use super::engine::{Engine, PlacementError};
use super::explain::{Filter, Mode, Verdict};
use super::params::Params;
use super::rng::SplitMix64;
use super::topology::{FatTree, LeafSpine, Topology};
use super::traffic::TrafficMatrix;

fn host(name: &str, cpu: u32, mem_mib: u64) -> HostInfo {
    HostInfo::ready(name, (cpu, mem_mib), (0, 0))
}

fn vm(name: &str, host: Option<&str>, cpu: u32, mem_mib: u64) -> VmInfo {
    VmInfo::placed(name, host, cpu, mem_mib)
}

/// Hosts with their VMs' use booked.
fn booked(mut s: ClusterState) -> ClusterState {
    for v in s.vms.clone() {
        if let Some(h) = &v.host {
            let h = s.hosts.iter_mut().find(|x| &x.name == h).unwrap();
            h.used_cpu += v.cpu;
            h.used_mem_mib += v.mem_mib;
        }
    }
    s
}

fn ls(racks: u32, per: u32) -> Topology {
    Topology::leaf_spine(&LeafSpine {
        racks,
        hosts_per_rack: per,
        spines: 2,
        link_gbps: 100.0,
    })
    .unwrap()
}

fn all_hosts(t: &Topology, cpu: u32, mem: u64) -> Vec<HostInfo> {
    t.host_names().iter().map(|n| host(n, cpu, mem)).collect()
}

// ------------------------------------------------------------ unit tests

#[test]
fn follows_traffic_to_the_peer() {
    let t = ls(2, 2);
    let s = booked(ClusterState {
        hosts: all_hosts(&t, 8, 16384),
        vms: vec![
            vm("a", Some("r0-h0"), 1, 1024),
            vm("b", Some("r1-h0"), 1, 1024),
            vm("c", Some("r1-h1"), 1, 1024),
        ],
    });
    let mut m = TrafficMatrix::new();
    m.set_rate("a", "b", 50e6).unwrap();
    m.set_rate("b", "a", 50e6).unwrap();
    m.set_rate("a", "c", 10e6).unwrap();
    let mut e = Engine::new(&t, &s, &m, Params::default()).unwrap();
    let d = e.decide("a").unwrap();
    assert_eq!(d.to, "r1-h0", "{d:?}");
    assert_eq!(d.factor.traffic, 10e6 * 2.0); // b local, c one rack hop
    assert_eq!(d.stay.unwrap().traffic, 110e6 * 4.0);
    assert!(d.improves());
    assert_eq!(d.factor.memory_hops, 4);
    assert_eq!(d.factor.memory_bytes, 1024.0 * 1024.0 * 1024.0);
    let cost = e.network_cost();
    assert_eq!(cost.cross_rack_bps, 110e6);
    e.apply("a", &d.to).unwrap();
    let cost = e.network_cost();
    assert_eq!((cost.cross_rack_bps, cost.cross_host_bps), (0.0, 10e6));
    assert_eq!(cost.traffic_hops, 20e6);
}

#[test]
fn ties_go_to_the_first_host_by_name() {
    let t = ls(1, 4);
    let s = booked(ClusterState {
        hosts: all_hosts(&t, 8, 8192).into_iter().rev().collect(),
        vms: vec![vm("lonely", Some("r0-h2"), 1, 512)],
    });
    let mut e = Engine::new(&t, &s, &TrafficMatrix::new(), Params::default()).unwrap();
    assert_eq!(e.decide("lonely").unwrap().to, "r0-h0");
    let mut e2 = Engine::new(&t, &s, &TrafficMatrix::new(), Params::default()).unwrap();
    e2.apply("lonely", "r0-h0").unwrap();
    assert_eq!(e2.decide("lonely").unwrap().to, "r0-h1");
}

#[test]
fn every_filter_reports_a_reason() {
    let t = ls(2, 4);
    let mut hosts = all_hosts(&t, 8, 8192);
    hosts[1].state = HostState::Maintenance; // r0-h1
    hosts[2].migrations_in_flight = 2; // r0-h2
    hosts[3].site = "other".into(); // r0-h3
    hosts[5].used_cpu = 8; // r1-h1 full
    let mut a = vm("a", Some("r0-h0"), 2, 1024);
    a.pair_peer = Some("b".into());
    a.exclude = vec!["r1-h2".into()];
    let mut b = vm("b", Some("r1-h0"), 1, 512);
    b.pair_peer = Some("a".into());
    let s = booked(ClusterState {
        hosts,
        vms: vec![a, b],
    });
    let mut e = Engine::new(&t, &s, &TrafficMatrix::new(), Params::default()).unwrap();
    let x = e.explain("a").unwrap();
    assert_eq!(x.mode, Mode::Migrate);
    let verdict = |h: &str| {
        x.hosts
            .iter()
            .find(|v| v.host == h)
            .unwrap()
            .verdict
            .clone()
    };
    let fail = |h: &str| match verdict(h) {
        Verdict::Fail { filter, reason } => (filter, reason),
        Verdict::Pass => panic!("{h} passed"),
    };
    assert_eq!(
        fail("r0-h0"),
        (Filter::CurrentHost, "the VM runs here now".into())
    );
    assert_eq!(fail("r0-h1").0, Filter::HostState);
    assert_eq!(fail("r0-h1").1, "host is maintenance, not ready");
    assert_eq!(fail("r0-h2").0, Filter::MigrationLimit);
    assert_eq!(fail("r0-h2").1, "2 migrations in flight, limit is 2");
    assert_eq!(fail("r0-h3").0, Filter::Site);
    assert!(fail("r0-h3").1.contains("site `other`"));
    assert_eq!(fail("r1-h0").0, Filter::AntiAffinity);
    assert!(fail("r1-h0").1.contains("pair peer `b`"));
    assert_eq!(fail("r1-h1").0, Filter::Capacity);
    assert_eq!(
        fail("r1-h1").1,
        "needs 2 vCPU / 1024 MiB, host has 0 vCPU / 8192 MiB free"
    );
    assert_eq!(fail("r1-h2").0, Filter::Excluded);
    assert_eq!(verdict("r1-h3"), Verdict::Pass);
    assert_eq!(x.chosen.as_deref(), Some("r1-h3"));
    assert!(x.render().contains("chosen: r1-h3"));
    // Include list: only listed hosts, and the migration limit does not apply to creation.
    let mut s2 = s.clone();
    s2.vms[0].include = vec!["r0-h2".into(), "r1-h3".into()];
    s2.vms[0].exclude.clear();
    let mut e = Engine::new(&t, &s2, &TrafficMatrix::new(), Params::default()).unwrap();
    let x = e.explain("a").unwrap();
    let f = x.hosts.iter().find(|v| v.host == "r1-h2").unwrap();
    assert!(matches!(
        f.verdict,
        Verdict::Fail {
            filter: Filter::NotIncluded,
            ..
        }
    ));
    assert_eq!(e.decide("a").unwrap().to, "r1-h3");
    s2.vms[0].host = None;
    s2.hosts[0].used_cpu = 0;
    s2.hosts[0].used_mem_mib = 0;
    let mut e = Engine::new(&t, &s2, &TrafficMatrix::new(), Params::default()).unwrap();
    assert_eq!(e.place_new("a").unwrap().to, "r0-h2");
    // Cross-site allowed by parameter.
    let mut s3 = s.clone();
    s3.hosts[7].state = HostState::Failed;
    s3.hosts[6].state = HostState::Spare;
    s3.hosts[4].state = HostState::Failed;
    let mut e = Engine::new(&t, &s3, &TrafficMatrix::new(), Params::default()).unwrap();
    assert!(matches!(
        e.decide("a"),
        Err(PlacementError::NoHostFits { .. })
    ));
    let p = Params {
        allow_cross_site: true,
        ..Params::default()
    };
    let mut e = Engine::new(&t, &s3, &TrafficMatrix::new(), p).unwrap();
    assert_eq!(e.decide("a").unwrap().to, "r0-h3");
}

#[test]
fn vm_larger_than_every_host_is_a_clear_error() {
    let t = ls(1, 3);
    let mut hosts = all_hosts(&t, 16, 32768);
    hosts[1].used_mem_mib = 8192;
    let s = booked(ClusterState {
        hosts,
        vms: vec![
            vm("big", None, 64, 262_144),
            vm("small", Some("r0-h0"), 8, 16384),
        ],
    });
    let mut e = Engine::new(&t, &s, &TrafficMatrix::new(), Params::default()).unwrap();
    let err = e.place_new("big").unwrap_err();
    assert_eq!(
        err.to_string(),
        "no host fits VM `big` (needs 64 vCPU, 262144 MiB): largest free capacity is \
         16 vCPU (on `r0-h1`) and 32768 MiB (on `r0-h2`); hosts rejected by capacity: 3"
    );
    // Migration of a VM that fits nowhere else.
    let s = booked(ClusterState {
        hosts: all_hosts(&t, 8, 8192),
        vms: vec![
            vm("a", Some("r0-h0"), 8, 8192),
            vm("x", Some("r0-h1"), 4, 1),
            vm("y", Some("r0-h2"), 4, 1),
        ],
    });
    let mut e = Engine::new(&t, &s, &TrafficMatrix::new(), Params::default()).unwrap();
    let err = e.decide("a").unwrap_err().to_string();
    assert!(
        err.contains("VM `a`") && err.contains("largest free capacity is 4 vCPU"),
        "{err}"
    );
    assert!(err.contains("current host: 1, capacity: 2"), "{err}");
}

#[test]
fn mode_and_name_errors() {
    let t = ls(1, 2);
    let s = booked(ClusterState {
        hosts: all_hosts(&t, 8, 8192),
        vms: vec![vm("on", Some("r0-h0"), 1, 1), vm("off", None, 1, 1)],
    });
    let mut e = Engine::new(&t, &s, &TrafficMatrix::new(), Params::default()).unwrap();
    assert!(matches!(e.decide("off"), Err(PlacementError::NotPlaced(_))));
    assert_eq!(
        e.place_new("on").unwrap_err().to_string(),
        "VM `on` already runs on `r0-h0`: use decide to choose where to move it"
    );
    assert_eq!(
        e.decide("nope").unwrap_err().to_string(),
        "unknown VM `nope`"
    );
    assert!(e.apply("on", "zz").is_err());
    assert!(e.decide_ix(99).is_err());
    assert!(e.factor_at(0, 99).is_err());
    let bad = Params {
        traffic_weight: f64::NAN,
        ..Params::default()
    };
    assert!(matches!(
        Engine::new(&t, &s, &TrafficMatrix::new(), bad),
        Err(PlacementError::Param(_))
    ));
    let x = e.explain("off").unwrap();
    assert_eq!(x.mode, Mode::Create);
    assert!(x.hosts.iter().all(|h| h.factor.memory_bytes == 0.0));
}

#[test]
fn memory_term_prefers_near_hosts_and_penalizes_nonconvergence() {
    let t = ls(2, 2);
    let mut a = vm("a", Some("r0-h0"), 1, 4096);
    // λ = dirty / min(migration bandwidth 1.25 GB/s, path) = 0.5
    a.dirty_bytes_per_s = 0.625e9;
    let s = booked(ClusterState {
        hosts: all_hosts(&t, 8, 16384),
        vms: vec![a],
    });
    let mut e = Engine::new(&t, &s, &TrafficMatrix::new(), Params::default()).unwrap();
    let d = e.decide("a").unwrap();
    assert_eq!(d.to, "r0-h1", "same rack is 2 hops, the others 4");
    assert_eq!(d.factor.memory_hops, 2);
    assert!(d.factor.converges);
    // λ = 0.5: ~2x the memory.
    let gib4 = 4096.0 * 1024.0 * 1024.0;
    assert!((d.factor.memory_bytes / gib4 - 2.0).abs() < 1e-6);
    // Dirtying faster than the link: penalty, still finite and ranked.
    let mut s2 = s.clone();
    s2.vms[0].dirty_bytes_per_s = 5e9;
    let mut e = Engine::new(&t, &s2, &TrafficMatrix::new(), Params::default()).unwrap();
    let x = e.explain("a").unwrap();
    let f = x.hosts.iter().find(|h| h.host == "r1-h0").unwrap().factor;
    assert!(!f.converges && f.total.is_finite());
    assert_eq!(f.memory_bytes, gib4 * 31.0 * 10.0);
    // A loaded path lowers the bandwidth left for the migration.
    let mut t2 = ls(2, 2);
    t2.set_rack_uplink_utilization(1, 0.99).unwrap();
    let mut s3 = s.clone();
    s3.hosts[1].state = HostState::Failed;
    let mut e = Engine::new(&t2, &s3, &TrafficMatrix::new(), Params::default()).unwrap();
    let x = e.explain("a").unwrap();
    let f = x.hosts.iter().find(|h| h.host == "r1-h0").unwrap().factor;
    // 100 Gb/s * 1 % = 125 MB/s < 625 MB/s dirty: no convergence.
    assert!(!f.converges);
}

#[test]
fn utilization_term_avoids_loaded_paths() {
    let mut t = ls(3, 1);
    t.set_rack_uplink_utilization(1, 0.9).unwrap();
    let s = booked(ClusterState {
        hosts: all_hosts(&t, 8, 8192),
        vms: vec![vm("a", None, 1, 1), vm("p", Some("r0-h0"), 8, 1)],
    });
    let mut m = TrafficMatrix::new();
    m.set_rate("a", "p", 1e6).unwrap();
    let mut e = Engine::new(&t, &s, &m, Params::default()).unwrap();
    let x = e.explain("a").unwrap();
    let f = |h: &str| x.hosts.iter().find(|v| v.host == h).unwrap().factor;
    assert_eq!(f("r1-h0").traffic, f("r2-h0").traffic);
    assert!((f("r1-h0").utilization - 9e6).abs() < 1e-3);
    assert_eq!(f("r2-h0").utilization, 0.0);
    assert_eq!(x.chosen.as_deref(), Some("r2-h0"));
}

#[test]
fn overloaded_host_gives_up_most_incoming_first() {
    let t = ls(2, 2);
    let s = booked(ClusterState {
        hosts: all_hosts(&t, 8, 8192),
        vms: vec![
            vm("quiet", Some("r0-h0"), 1, 1),
            vm("busy", Some("r0-h0"), 1, 1),
            vm("huge", Some("r0-h0"), 6, 1),
            vm("peer", Some("r1-h0"), 1, 1),
        ],
    });
    let mut m = TrafficMatrix::new();
    m.set_rate("peer", "busy", 9e6).unwrap();
    m.set_rate("quiet", "peer", 50e6).unwrap(); // outgoing does not count
    m.set_external("huge", 20e6, 0.0).unwrap();
    let mut e = Engine::new(&t, &s, &m, Params::default()).unwrap();
    let order = e.vms_by_incoming("r0-h0").unwrap();
    let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["huge", "busy", "quiet"]);
    assert_eq!(order[0].1, 20e6);
    let d = e.select_for_overloaded("r0-h0").unwrap().unwrap();
    assert_eq!((d.vm.as_str(), d.to.as_str()), ("huge", "r0-h1"));
    // When the top VM fits nowhere, the next one goes.
    let mut s2 = s.clone();
    for h in &mut s2.hosts[1..] {
        h.used_cpu = 4;
    }
    let mut e = Engine::new(&t, &s2, &m, Params::default()).unwrap();
    let d = e.select_for_overloaded("r0-h0").unwrap().unwrap();
    assert_eq!((d.vm.as_str(), d.to.as_str()), ("busy", "r1-h0"));
    assert!(e.vms_by_incoming("zz").is_err());
}

// -------------------------------------------------------- property tests

fn random_topology(r: &mut SplitMix64) -> Topology {
    match r.below(3) {
        0 => {
            let mut t = Topology::leaf_spine(&LeafSpine {
                racks: 1 + r.below(4) as u32,
                hosts_per_rack: 1 + r.below(4) as u32,
                spines: 1 + r.below(2) as u32,
                link_gbps: 10.0,
            })
            .unwrap();
            for rk in 0..t.rack_count() as u32 {
                t.set_rack_uplink_utilization(rk, r.unit()).unwrap();
            }
            t
        }
        1 => {
            let mut t = Topology::fat_tree(&FatTree {
                k: if r.chance(0.3) { 2 } else { 4 },
                link_gbps: 10.0,
            })
            .unwrap();
            for rk in 0..t.rack_count() as u32 {
                t.set_rack_uplink_utilization(rk, r.unit()).unwrap();
            }
            for p in 0..t.pod_count() as u32 {
                t.set_pod_uplink_utilization(p, r.unit()).unwrap();
            }
            t
        }
        _ => {
            // Random connected graph: a random tree plus extra links (cycles).
            let n = 1 + r.below(6) as usize;
            let sw: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
            let mut links = Vec::new();
            let mut have = std::collections::HashSet::new();
            for i in 1..n {
                let j = r.index(i);
                have.insert((j, i));
                links.push((j, i));
            }
            for _ in 0..r.below(4) {
                let (a, b) = (r.index(n), r.index(n));
                if a != b && !have.contains(&(a.min(b), a.max(b))) {
                    have.insert((a.min(b), a.max(b)));
                    links.push((a.min(b), a.max(b)));
                }
            }
            let hosts: Vec<String> = (0..1 + r.below(8))
                .map(|i| format!(r#"{{"name":"x{i}","attach":"s{}"}}"#, r.index(n)))
                .collect();
            let links: Vec<String> = links
                .iter()
                .map(|(a, b)| {
                    format!(
                        r#"{{"a":"s{a}","b":"s{b}","capacity_gbps":{},"utilization":{}}}"#,
                        1 + r.below(100),
                        r.unit()
                    )
                })
                .collect();
            let json = format!(
                r#"{{"switches":{:?},"hosts":[{}],"links":[{}]}}"#,
                sw,
                hosts.join(","),
                links.join(",")
            );
            Topology::from_json(&json).unwrap()
        }
    }
}

fn random_cluster(r: &mut SplitMix64, t: &Topology) -> (ClusterState, TrafficMatrix) {
    let names: Vec<String> = t
        .host_names()
        .iter()
        .filter(|_| r.chance(0.85))
        .cloned()
        .collect();
    let mut hosts: Vec<HostInfo> = names
        .iter()
        .map(|n| {
            let mut h = host(n, 2 + r.below(12) as u32, 1024 * (2 + r.below(14)));
            h.state = match r.below(10) {
                0 => HostState::Maintenance,
                1 => HostState::Failed,
                2 => HostState::Spare,
                _ => HostState::Ready,
            };
            if r.chance(0.15) {
                h.site = "b".into();
            }
            h.migrations_in_flight = if r.chance(0.2) { r.below(4) as u32 } else { 0 };
            h
        })
        .collect();
    if hosts.is_empty() {
        hosts.push(host(&t.host_names()[0], 8, 8192));
    }
    let nv = r.below(12) as usize;
    let mut vms: Vec<VmInfo> = Vec::new();
    for i in 0..nv {
        let mut v = vm(
            &format!("v{i}"),
            None,
            1 + r.below(4) as u32,
            256 * (1 + r.below(16)),
        );
        v.dirty_bytes_per_s = if r.chance(0.2) {
            r.range_f64(0.0, 3e9)
        } else {
            0.0
        };
        if r.chance(0.8) {
            // Place where it fits (any state: a failed host may still list VMs).
            let fits: Vec<usize> = (0..hosts.len())
                .filter(|&h| {
                    hosts[h].used_cpu + v.cpu <= hosts[h].cpu
                        && hosts[h].used_mem_mib + v.mem_mib <= hosts[h].mem_mib
                })
                .collect();
            if !fits.is_empty() {
                let h = fits[r.index(fits.len())];
                hosts[h].used_cpu += v.cpu;
                hosts[h].used_mem_mib += v.mem_mib;
                v.host = Some(hosts[h].name.clone());
            }
        }
        if r.chance(0.1) {
            v.exclude = vec![hosts[r.index(hosts.len())].name.clone()];
        }
        if r.chance(0.1) {
            v.include = (0..1 + r.below(3))
                .map(|_| hosts[r.index(hosts.len())].name.clone())
                .collect();
        }
        if r.chance(0.05) {
            v.site = Some(if r.chance(0.5) { "b" } else { "default" }.into());
        }
        vms.push(v);
    }
    // Pairs: consecutive VMs, never on one host.
    let mut i = 0;
    while i + 1 < vms.len() {
        if r.chance(0.4) && (vms[i].host.is_none() || vms[i].host != vms[i + 1].host) {
            vms[i].pair_peer = Some(vms[i + 1].name.clone());
            vms[i + 1].pair_peer = Some(vms[i].name.clone());
            i += 2;
        } else {
            i += 1;
        }
    }
    let mut m = TrafficMatrix::new();
    for _ in 0..r.below(3 * nv as u64 + 1) {
        let (a, b) = (r.index(nv.max(1)), r.index(nv.max(1)));
        if a != b && nv > 0 {
            let rate = if r.chance(0.3) {
                (1 + r.below(4)) as f64 * 1e6 // equal rates make ties
            } else {
                r.range_f64(0.0, 1e8)
            };
            m.add_rate(&vms[a].name, &vms[b].name, rate).unwrap();
        }
    }
    // Traffic with a VM the cluster does not know is ignored.
    if nv > 0 && r.chance(0.2) {
        m.add_rate(&vms[0].name, "ghost", 5e6).unwrap();
    }
    (ClusterState { hosts, vms }, m)
}

fn random_params(r: &mut SplitMix64) -> Params {
    Params {
        traffic_weight: if r.chance(0.1) {
            0.0
        } else {
            r.range_f64(0.1, 2.0)
        },
        utilization_weight: r.range_f64(0.0, 2.0),
        memory_weight: if r.chance(0.3) {
            0.0
        } else {
            r.range_f64(0.0, 1e-2)
        },
        max_concurrent_migrations: 1 + r.below(3) as u32,
        migration_bandwidth_bps: r.range_f64(1e8, 5e9),
        allow_cross_site: r.chance(0.2),
        ..Params::default()
    }
}

/// Independent oracle of the first set of constraints, from the raw state.
fn oracle_passes(s: &ClusterState, p: &Params, v: usize, h: &str, mode: Mode) -> bool {
    let me = &s.vms[v];
    let host = s.hosts.iter().find(|x| x.name == h).unwrap();
    let cur = me
        .host
        .as_deref()
        .map(|c| s.hosts.iter().find(|x| x.name == c).unwrap());
    if me.host.as_deref() == Some(h) || me.exclude.iter().any(|x| x == h) {
        return false;
    }
    if !me.include.is_empty() && !me.include.iter().any(|x| x == h) {
        return false;
    }
    if host.state != HostState::Ready {
        return false;
    }
    let want = me
        .site
        .clone()
        .or_else(|| cur.filter(|_| !p.allow_cross_site).map(|c| c.site.clone()));
    if want.is_some_and(|w| w != host.site) {
        return false;
    }
    if let Some(peer) = &me.pair_peer {
        let ph = s
            .vms
            .iter()
            .find(|x| &x.name == peer)
            .unwrap()
            .host
            .as_deref();
        if ph == Some(h) {
            return false;
        }
    }
    if host.used_cpu + me.cpu > host.cpu || host.used_mem_mib + me.mem_mib > host.mem_mib {
        return false;
    }
    !(mode == Mode::Migrate && host.migrations_in_flight >= p.max_concurrent_migrations)
}

/// Naive traffic term: Σ over peers of rate × topology distance; and a
/// scale for the rounding tolerance (Σ rate × 254).
fn oracle_traffic(
    t: &Topology,
    s: &ClusterState,
    m: &TrafficMatrix,
    v: usize,
    h: &str,
) -> (f64, f64) {
    let me = &s.vms[v].name;
    let hid = t.host_id(h).unwrap();
    let mut sum = 0.0;
    let mut scale = 0.0;
    for p in s.vms.iter().filter(|p| &p.name != me) {
        if let Some(ph) = p.host.as_deref() {
            let rate = m.rate_between(me, &p.name);
            sum += rate * f64::from(t.distance(hid, t.host_id(ph).unwrap()).unwrap());
            scale += rate * 254.0;
        }
    }
    (sum, scale)
}

/// Naive utilization term: Σ over peers in other racks of rate × c(u) with
/// u the path's largest link utilization.
fn oracle_utilization(t: &Topology, s: &ClusterState, m: &TrafficMatrix, v: usize, h: &str) -> f64 {
    let me = &s.vms[v].name;
    let hid = t.host_id(h).unwrap();
    let mut sum = 0.0;
    for p in s.vms.iter().filter(|p| &p.name != me) {
        if let Some(ph) = p.host.as_deref() {
            let pid = t.host_id(ph).unwrap();
            if t.rack_of(hid) != t.rack_of(pid) {
                let u = t.path(hid, pid).unwrap().max_utilization;
                sum += m.rate_between(me, &p.name) * (u / (1.0 - u.min(0.99)));
            }
        }
    }
    sum
}

fn move_in_state(s: &mut ClusterState, v: usize, to: &str) {
    let (cpu, mem) = (s.vms[v].cpu, s.vms[v].mem_mib);
    if let Some(from) = s.vms[v].host.clone() {
        let h = s.hosts.iter_mut().find(|x| x.name == from).unwrap();
        h.used_cpu -= cpu;
        h.used_mem_mib -= mem;
    }
    let h = s.hosts.iter_mut().find(|x| x.name == to).unwrap();
    h.used_cpu += cpu;
    h.used_mem_mib += mem;
    s.vms[v].host = Some(to.into());
}

/// One random scenario: decide/place every VM in a random order, check each
/// decision against the oracle, apply it. Returns the log of decisions.
fn run_scenario(seed: u64) -> Vec<String> {
    let mut r = SplitMix64::new(seed);
    let t = random_topology(&mut r);
    let (mut s, m) = random_cluster(&mut r, &t);
    let p = random_params(&mut r);
    let mut e = Engine::new(&t, &s, &m, p.clone()).unwrap();
    let mut log = Vec::new();
    let mut order: Vec<usize> = (0..s.vms.len()).collect();
    r.shuffle(&mut order);
    for &v in order.iter().chain(order.iter()) {
        let name = s.vms[v].name.clone();
        let mode = if s.vms[v].host.is_some() {
            Mode::Migrate
        } else {
            Mode::Create
        };
        let x = e.explain(&name).unwrap();
        let res = match mode {
            Mode::Migrate => e.decide(&name),
            Mode::Create => e.place_new(&name),
        };
        // The engine's verdicts match the oracle for every host.
        for hv in &x.hosts {
            let want = oracle_passes(&s, &p, v, &hv.host, mode);
            assert_eq!(
                matches!(hv.verdict, Verdict::Pass),
                want,
                "seed {seed}: {name} on {}: {:?}",
                hv.host,
                hv.verdict
            );
            // The grouped traffic term equals the naive sum.
            let (naive, scale) = oracle_traffic(&t, &s, &m, v, &hv.host);
            assert!(
                (hv.factor.traffic - naive).abs() <= 1e-12 * scale,
                "seed {seed}: traffic {} vs naive {naive}",
                hv.factor.traffic
            );
            let naive_u = oracle_utilization(&t, &s, &m, v, &hv.host);
            assert!(
                (hv.factor.utilization - naive_u).abs() <= 1e-11 * scale,
                "seed {seed}: utilization {} vs naive {naive_u}",
                hv.factor.utilization
            );
            assert!(hv.factor.total.is_finite() && hv.factor.total >= 0.0);
        }
        let passing: Vec<_> = x
            .hosts
            .iter()
            .filter(|h| matches!(h.verdict, Verdict::Pass))
            .collect();
        match res {
            Ok(d) => {
                // The chosen host passes every filter ...
                assert!(oracle_passes(&s, &p, v, &d.to, mode), "seed {seed}: {d:?}");
                assert_eq!(x.chosen.as_deref(), Some(d.to.as_str()));
                assert_eq!(x.chosen_factor, Some(d.factor));
                // ... and no passing host has a lower factor; ties go to the first name.
                for h in &passing {
                    assert!(
                        h.factor.total > d.factor.total
                            || (h.factor.total == d.factor.total && h.host >= d.to),
                        "seed {seed}: {} has {} < chosen {} {}",
                        h.host,
                        h.factor.total,
                        d.to,
                        d.factor.total
                    );
                }
                if mode == Mode::Create || d.improves() {
                    e.apply(&name, &d.to).unwrap();
                    move_in_state(&mut s, v, &d.to);
                }
                log.push(format!("{} -> {} {:?}", name, d.to, d.factor));
            }
            Err(PlacementError::NoHostFits { vm, .. }) => {
                assert_eq!(vm, name);
                assert!(passing.is_empty(), "seed {seed}");
                assert!(x.chosen.is_none());
                log.push(format!("{name}: none"));
            }
            Err(other) => panic!("seed {seed}: {other}"),
        }
        // Pair members never land together.
        for a in &s.vms {
            if let (Some(pn), Some(h)) = (&a.pair_peer, &a.host) {
                let b = s.vms.iter().find(|x| &x.name == pn).unwrap();
                assert_ne!(b.host.as_ref(), Some(h), "seed {seed}: pair on {h}");
            }
        }
        // The engine's incremental booking equals a rebuild from the state.
        let mut fresh = Engine::new(&t, &s, &m, p.clone()).unwrap();
        let mut fresh_x = fresh.explain(&name).unwrap();
        let mut inc_x = e.explain(&name).unwrap();
        fresh_x.hosts.iter_mut().for_each(|h| h.rack.clear());
        inc_x.hosts.iter_mut().for_each(|h| h.rack.clear());
        assert_eq!(fresh_x, inc_x, "seed {seed}");
    }
    log
}

#[test]
fn property_decisions_are_valid_optimal_and_deterministic() {
    let mut decisions = 0;
    for seed in 0..400u64 {
        let a = run_scenario(seed);
        let b = run_scenario(seed);
        assert_eq!(a, b, "seed {seed}: not deterministic");
        decisions += a.len();
    }
    assert!(decisions > 2000, "only {decisions} decisions exercised");
}

/// Rebalancing: every move of the plan passes the oracle's filters when it
/// is made, pairs never share a host, the network cost never rises, and
/// the same input gives the same plan.
#[test]
fn property_rebalance_plans_are_valid_and_deterministic() {
    use super::rebalance::{incoming_order, rebalance, RebalanceOptions};
    let mut moves = 0;
    let mut sequences = 0;
    for seed in 0..300u64 {
        let run = |seed: u64| {
            let mut r = SplitMix64::new(seed ^ 0xBA1A);
            let t = random_topology(&mut r);
            let (s, m) = random_cluster(&mut r, &t);
            let p = Params {
                memory_weight: if r.chance(0.5) { 0.0 } else { 1e-4 },
                utilization_weight: 0.0,
                ..random_params(&mut r)
            };
            let opts = RebalanceOptions {
                lookahead: r.chance(0.8),
                lookahead_peers: 1 + r.index(3),
                lookahead_evictions: 1 + r.index(3),
                ..RebalanceOptions::default()
            };
            let mut e = Engine::new(&t, &s, &m, p.clone()).unwrap();
            let before = e.network_cost().traffic_hops;
            let order = incoming_order(&e);
            let plan = rebalance(&mut e, &order, &opts);
            let after = e.network_cost().traffic_hops;
            drop(e);
            (t, s, m, p, plan, before, after)
        };
        let (t, mut s, m, p, plan, before, after) = run(seed);
        let again = run(seed);
        assert_eq!(plan, again.4, "seed {seed}: plan not deterministic");
        assert!(
            after <= before * (1.0 + 1e-12) + 1e-6,
            "seed {seed}: {before} -> {after}"
        );
        for mv in &plan.moves {
            let v = mv.vm as usize;
            let to = {
                let e = Engine::new(&t, &s, &m, p.clone()).unwrap();
                e.cluster().host_name(mv.to).to_string()
            };
            assert!(
                oracle_passes(&s, &p, v, &to, Mode::Migrate),
                "seed {seed}: move {mv:?} breaks a filter"
            );
            move_in_state(&mut s, v, &to);
            for a in &s.vms {
                if let (Some(pn), Some(h)) = (&a.pair_peer, &a.host) {
                    let b = s.vms.iter().find(|x| &x.name == pn).unwrap();
                    assert_ne!(b.host.as_ref(), Some(h), "seed {seed}");
                }
            }
        }
        // Replaying the plan on the raw state gives the engine's final cost.
        let e = Engine::new(&t, &s, &m, p.clone()).unwrap();
        assert!((e.network_cost().traffic_hops - after).abs() <= 1e-6 * (after + 1.0));
        moves += plan.moves.len();
        sequences += plan.sequence_moves;
    }
    assert!(
        moves > 200 && sequences > 20,
        "{moves} moves, {sequences} in sequences"
    );
}
