//! `/metrics` in Prometheus text format: durations of what the controller
//! does (API requests, operations, switchovers, migrations, failovers of a
//! replicated VM, store requests) as histograms for the process's life,
//! and gauges and counters computed at scrape time from the store and the
//! agents' reports (hosts, VMs and pairs by state, each host's heartbeat
//! age, each VM's network element: packets, bytes, drops by reason, frames
//! held by stage).

use duplex_core::agent_api::TrafficReport;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// The operation's kind (`pair_migrate`, `pair_failover`, ...).
    pub kind: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    /// `get`, `list`, `put` or `delete`.
    pub op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlowLabels {
    host: String,
    vm: String,
    /// `rx` (to the VM) or `tx` (from it).
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhyLabels {
    host: String,
    vm: String,
    why: String,
}

/// Seconds: from API calls (ms) to whole workflows (minutes).
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
const WORKFLOW_BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

fn latency() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}

fn workflow() -> Histogram {
    Histogram::new(WORKFLOW_BUCKETS.iter().copied())
}

fn histograms<L>(make: fn() -> Histogram) -> Family<L, Histogram>
where
    L: Clone + std::hash::Hash + Eq,
{
    Family::new_with_constructor(make)
}

/// Histograms kept for the process's life; the rest is filled per scrape.
pub struct Metrics {
    pub api: Family<RouteLabels, Histogram>,
    /// Every operation, from its start to its end.
    pub operations: Family<OpLabels, Histogram>,
    /// Every switchover of a pair (those inside moves and drains too).
    pub switchovers: Family<OutcomeLabels, Histogram>,
    /// Every live migration the controller ordered, and its downtime.
    pub migrations: Family<OutcomeLabels, Histogram>,
    pub migration_downtime: Histogram,
    /// A replicated VM run on its replica after its host was lost.
    pub failovers: Family<OutcomeLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            api: histograms(latency),
            operations: histograms(workflow),
            switchovers: histograms(workflow),
            migrations: histograms(workflow),
            migration_downtime: latency(),
            failovers: histograms(workflow),
        }
    }
}

/// Store requests' latency, kept by the repository that makes them.
pub fn store_latency() -> Family<StoreLabels, Histogram> {
    histograms(latency)
}

/// Observes `secs` in `family` under `outcome`.
pub fn observe(family: &Family<OutcomeLabels, Histogram>, outcome: &str, secs: f64) {
    family
        .get_or_create(&OutcomeLabels {
            outcome: outcome.to_string(),
        })
        .observe(secs);
}

/// What one scrape found.
pub struct Snapshot {
    pub hosts: Vec<(&'static str, i64)>,
    pub vms: Vec<(&'static str, i64)>,
    pub pairs: Vec<(&'static str, i64)>,
    pub ops_running: i64,
    pub leader: bool,
    pub fence: u64,
    /// Each reporting host's silence, seconds.
    pub heartbeat_age: Vec<(String, f64)>,
    /// Each VM's element counters, with its host.
    pub traffic: Vec<(String, TrafficReport)>,
}

impl Metrics {
    pub fn render(&self, s: &Snapshot, store: &Family<StoreLabels, Histogram>) -> String {
        let mut reg = Registry::default();
        self.register_histograms(&mut reg, store);
        register_states(&mut reg, s);
        register_hosts(&mut reg, s);
        register_elements(&mut reg, s);
        let mut out = String::new();
        if encode(&mut out, &reg).is_err() {
            out.push_str("# encoding failed\n");
        }
        out
    }

    fn register_histograms(&self, reg: &mut Registry, store: &Family<StoreLabels, Histogram>) {
        reg.register(
            "duplex_api_request_duration_seconds",
            "API latency by route",
            self.api.clone(),
        );
        reg.register(
            "duplex_operation_duration_seconds",
            "Operations from start to end, by kind and outcome",
            self.operations.clone(),
        );
        reg.register(
            "duplex_switchover_duration_seconds",
            "Pair switchovers (on order, in moves and drains), by outcome",
            self.switchovers.clone(),
        );
        reg.register(
            "duplex_migration_duration_seconds",
            "Live migrations, by outcome",
            self.migrations.clone(),
        );
        reg.register(
            "duplex_migration_downtime_seconds",
            "Live migrations' downtime (the VM paused)",
            self.migration_downtime.clone(),
        );
        reg.register(
            "duplex_replica_failover_duration_seconds",
            "A replicated VM run on its replica after its host was lost, by outcome",
            self.failovers.clone(),
        );
        reg.register(
            "duplex_store_request_duration_seconds",
            "Store requests by kind",
            store.clone(),
        );
    }
}

fn register_states(reg: &mut Registry, s: &Snapshot) {
    let fam = |reg: &mut Registry, name: &str, help: &str, rows: &[(&'static str, i64)]| {
        let f = Family::<StateLabels, Gauge>::default();
        for (state, n) in rows {
            f.get_or_create(&StateLabels {
                state: state.to_string(),
            })
            .set(*n);
        }
        reg.register(name, help, f);
    };
    fam(reg, "duplex_hosts", "Hosts by state", &s.hosts);
    fam(reg, "duplex_vms", "VMs by observed status", &s.vms);
    fam(reg, "duplex_pairs", "Pairs by role health", &s.pairs);
    let gauge = |reg: &mut Registry, name: &str, help: &str, v: i64| {
        let g = Gauge::<i64>::default();
        g.set(v);
        reg.register(name, help, g);
    };
    gauge(
        reg,
        "duplex_operations_in_flight",
        "Operations running",
        s.ops_running,
    );
    gauge(
        reg,
        "duplex_controller_leader",
        "1 if this controller leads",
        i64::from(s.leader),
    );
    gauge(
        reg,
        "duplex_controller_fence_token",
        "Fencing token of this controller's lease",
        s.fence as i64,
    );
}

fn register_hosts(reg: &mut Registry, s: &Snapshot) {
    let age = Family::<HostLabels, Gauge<f64, AtomicU64>>::default();
    for (host, secs) in &s.heartbeat_age {
        age.get_or_create(&HostLabels { host: host.clone() })
            .set(*secs);
    }
    reg.register(
        "duplex_host_heartbeat_age_seconds",
        "Time since each host's last accepted report",
        age,
    );
}

/// Each VM's element totals (since the element started: a VM that moves
/// or restarts starts again from 0, which `rate()` takes as a reset).
fn register_elements(reg: &mut Registry, s: &Snapshot) {
    let packets = Family::<FlowLabels, Counter>::default();
    let bytes = Family::<FlowLabels, Counter>::default();
    let dropped = Family::<WhyLabels, Counter>::default();
    let held = Family::<WhyLabels, Gauge>::default();
    for (host, t) in &s.traffic {
        let flow = |direction: &str| FlowLabels {
            host: host.clone(),
            vm: t.vm.clone(),
            direction: direction.to_string(),
        };
        packets.get_or_create(&flow("rx")).inc_by(t.rx_packets);
        packets.get_or_create(&flow("tx")).inc_by(t.tx_packets);
        bytes.get_or_create(&flow("rx")).inc_by(t.rx_bytes);
        bytes.get_or_create(&flow("tx")).inc_by(t.tx_bytes);
        let why = |why: &str| WhyLabels {
            host: host.clone(),
            vm: t.vm.clone(),
            why: why.to_string(),
        };
        for d in &t.drops {
            dropped.get_or_create(&why(&d.reason)).inc_by(d.packets);
        }
        for h in &t.held {
            held.get_or_create(&why(&h.stage))
                .set(i64::try_from(h.frames).unwrap_or(i64::MAX));
        }
    }
    reg.register(
        "duplex_vm_packets",
        "Frames through each VM's network element, by direction",
        packets,
    );
    reg.register(
        "duplex_vm_bytes",
        "Bytes through each VM's network element, by direction",
        bytes,
    );
    reg.register(
        "duplex_vm_dropped_frames",
        "Frames each VM's network element did not deliver, by reason",
        dropped,
    );
    reg.register(
        "duplex_vm_held_frames",
        "Frames each VM's network element holds now, by stage",
        held,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use duplex_core::agent_api::{DropCount, HeldCount};

    #[test]
    fn a_scrape_names_every_family_with_its_labels() {
        let m = Metrics::default();
        observe(&m.switchovers, "swapped", 0.08);
        m.operations
            .get_or_create(&OpLabels {
                kind: "pair_migrate".into(),
                outcome: "succeeded".into(),
            })
            .observe(3.0);
        let store = store_latency();
        store
            .get_or_create(&StoreLabels { op: "get".into() })
            .observe(0.002);
        let s = Snapshot {
            hosts: vec![("ready", 2)],
            vms: vec![],
            pairs: vec![],
            ops_running: 0,
            leader: true,
            fence: 3,
            heartbeat_age: vec![("h1".into(), 0.4)],
            traffic: vec![(
                "h1".into(),
                TrafficReport {
                    vm: "pa".into(),
                    rx_packets: 10,
                    tx_packets: 7,
                    drops: vec![DropCount {
                        reason: "isolated".into(),
                        packets: 2,
                    }],
                    held: vec![HeldCount {
                        stage: "epoch".into(),
                        frames: 5,
                    }],
                    ..TrafficReport::default()
                },
            )],
        };
        let out = m.render(&s, &store);
        for line in [
            "duplex_switchover_duration_seconds_count{outcome=\"swapped\"} 1",
            "duplex_operation_duration_seconds_sum{kind=\"pair_migrate\",outcome=\"succeeded\"} 3.0",
            "duplex_store_request_duration_seconds_count{op=\"get\"} 1",
            "duplex_host_heartbeat_age_seconds{host=\"h1\"} 0.4",
            "duplex_vm_packets_total{host=\"h1\",vm=\"pa\",direction=\"rx\"} 10",
            "duplex_vm_packets_total{host=\"h1\",vm=\"pa\",direction=\"tx\"} 7",
            "duplex_vm_dropped_frames_total{host=\"h1\",vm=\"pa\",why=\"isolated\"} 2",
            "duplex_vm_held_frames{host=\"h1\",vm=\"pa\",why=\"epoch\"} 5",
        ] {
            assert!(out.contains(line), "missing `{line}` in:\n{out}");
        }
    }

    /// Every series the Grafana dashboard queries is one a scrape has.
    #[test]
    fn the_dashboard_queries_only_what_is_exported() {
        let m = Metrics::default();
        for f in [&m.switchovers, &m.migrations, &m.failovers] {
            observe(f, "succeeded", 1.0);
        }
        m.migration_downtime.observe(0.01);
        let labels = OpLabels {
            kind: "host_drain".into(),
            outcome: "failed".into(),
        };
        m.operations.get_or_create(&labels).observe(1.0);
        let route = RouteLabels {
            method: "GET".into(),
            route: "/v1/vms".into(),
            status: 200,
        };
        m.api.get_or_create(&route).observe(0.01);
        let store = store_latency();
        store
            .get_or_create(&StoreLabels { op: "put".into() })
            .observe(0.01);
        let t = TrafficReport {
            vm: "v".into(),
            drops: vec![DropCount {
                reason: "x".into(),
                packets: 1,
            }],
            held: vec![HeldCount {
                stage: "epoch".into(),
                frames: 1,
            }],
            ..TrafficReport::default()
        };
        let s = Snapshot {
            hosts: vec![("ready", 1)],
            vms: vec![("running", 1)],
            pairs: vec![("healthy", 1)],
            ops_running: 1,
            leader: true,
            fence: 1,
            heartbeat_age: vec![("h1".into(), 1.0)],
            traffic: vec![("h1".into(), t)],
        };
        let out = m.render(&s, &store);
        let dash = include_str!("../../../docs/grafana-dashboard.json");
        let v: serde_json::Value = serde_json::from_str(dash).expect("the dashboard is JSON");
        let mut names = 0;
        for p in v["panels"].as_array().expect("panels") {
            for t in p["targets"].as_array().expect("targets") {
                let expr = t["expr"].as_str().expect("expr");
                for (i, _) in expr.match_indices("duplex_") {
                    let name: String = expr[i..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    assert!(out.contains(&format!("\n{name}")), "{name} is not exported");
                    names += 1;
                }
            }
        }
        assert!(names > 15, "the dashboard queries too little: {names}");
    }
}
