//! `/metrics` in Prometheus text format: gauges computed at scrape time
//! from the store and the agents' reports, plus API latency.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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

/// The API latency histogram lives for the process; state gauges are
/// filled per scrape.
pub struct Metrics {
    pub api: Family<RouteLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            api: Family::new_with_constructor(|| {
                Histogram::new(
                    [
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
                    ]
                    .into_iter(),
                )
            }),
        }
    }
}

/// Counts for one scrape.
pub struct Snapshot {
    pub hosts: Vec<(&'static str, i64)>,
    pub vms: Vec<(&'static str, i64)>,
    pub pairs: Vec<(&'static str, i64)>,
    pub ops_running: i64,
    pub leader: bool,
    pub fence: u64,
}

impl Metrics {
    pub fn render(&self, s: &Snapshot) -> String {
        let mut reg = Registry::default();
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
        fam(&mut reg, "duplex_hosts", "Hosts by state", &s.hosts);
        fam(&mut reg, "duplex_vms", "VMs by observed status", &s.vms);
        fam(&mut reg, "duplex_pairs", "Pairs by role health", &s.pairs);
        let ops = Gauge::<i64>::default();
        ops.set(s.ops_running);
        reg.register("duplex_operations_in_flight", "Operations running", ops);
        let leader = Gauge::<i64>::default();
        leader.set(i64::from(s.leader));
        reg.register(
            "duplex_controller_leader",
            "1 if this controller leads",
            leader,
        );
        let fence = Gauge::<i64>::default();
        fence.set(s.fence as i64);
        reg.register(
            "duplex_controller_fence_token",
            "Fencing token of this controller's lease",
            fence,
        );
        reg.register(
            "duplex_api_request_duration_seconds",
            "API latency by route",
            self.api.clone(),
        );
        let mut out = String::new();
        if encode(&mut out, &reg).is_err() {
            out.push_str("# encoding failed\n");
        }
        out
    }
}
