//! The traffic matrix: bytes/s between VMs, measured by the hosts.
//!
//! Agents count bytes per peer (keyed by IP) in each VM's network element
//! ([`crate::agent_api::TrafficReport`]). A [`TrafficSampler`] turns successive
//! counter samples into smoothed rates with [`ewma_rate`], and, given a map
//! IP -> VM, into a [`TrafficMatrix`] of directed VM-to-VM rates plus each
//! VM's traffic with peers that are not VMs (clients, gateways).
//!
//! The matrix is sparse (only pairs that talk) and offers a symmetric view:
//! for placement what matters is how much crosses the network between two
//! VMs, whichever way, `rate(a,b) + rate(b,a)` ([`SymmetricTraffic`]).

use crate::agent_api::TrafficReport;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

/// Weight of the newest sample in the moving average. With the agents
/// sampled every 10 s a step change is 90 % visible after 7 samples
/// (1 - 0.7^7 = 0.92) and a one-sample burst decays to 3 % within 10: quick
/// enough to follow a service's load, slow enough that one burst does not
/// trigger a migration.
pub const EWMA_ALPHA: f64 = 0.3;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrafficError {
    #[error("sampling interval {0} s must be positive and finite")]
    Interval(f64),
    #[error("rate {value} B/s from `{from}` to `{to}` must be >= 0 and finite")]
    Rate {
        from: String,
        to: String,
        value: f64,
    },
    #[error("external rate {value} B/s of `{vm}` must be >= 0 and finite")]
    ExternalRate { vm: String, value: f64 },
    #[error("traffic from `{0}` to itself: a VM is not its own peer")]
    SelfTraffic(String),
    #[error("a VM in the traffic matrix has an empty name")]
    EmptyName,
}

/// New smoothed rate (bytes/s) from the previous one and a counter delta
/// over `interval_s` seconds: `α·delta/interval + (1-α)·prev`, α =
/// [`EWMA_ALPHA`]. Without a previous rate the sample itself is the rate.
pub fn ewma_rate(
    prev: Option<f64>,
    delta_bytes: u64,
    interval_s: f64,
) -> Result<f64, TrafficError> {
    if !(interval_s.is_finite() && interval_s > 0.0) {
        return Err(TrafficError::Interval(interval_s));
    }
    let sample = delta_bytes as f64 / interval_s;
    Ok(match prev {
        Some(p) if p.is_finite() && p >= 0.0 => EWMA_ALPHA * sample + (1.0 - EWMA_ALPHA) * p,
        _ => sample,
    })
}

fn check_rate(from: &str, to: &str, v: f64) -> Result<f64, TrafficError> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(TrafficError::Rate {
            from: from.into(),
            to: to.into(),
            value: v,
        })
    }
}

/// Directed VM-to-VM rates (bytes/s), sparse, with VM names interned.
/// Iteration orders are deterministic (by interned id, i.e. first use).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TrafficDoc", into = "TrafficDoc")]
pub struct TrafficMatrix {
    names: Vec<String>,
    index: HashMap<String, u32>,
    directed: BTreeMap<(u32, u32), f64>,
    external_in: BTreeMap<u32, f64>,
    external_out: BTreeMap<u32, f64>,
}

/// JSON form of a [`TrafficMatrix`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficDoc {
    #[serde(default)]
    pub rates: Vec<RateEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external: Vec<ExternalEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateEntry {
    pub from: String,
    pub to: String,
    pub bytes_per_s: f64,
}

/// Traffic between a VM and peers that are not VMs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalEntry {
    pub vm: String,
    #[serde(default)]
    pub in_bytes_per_s: f64,
    #[serde(default)]
    pub out_bytes_per_s: f64,
}

impl TryFrom<TrafficDoc> for TrafficMatrix {
    type Error = TrafficError;
    fn try_from(doc: TrafficDoc) -> Result<Self, TrafficError> {
        let mut m = TrafficMatrix::new();
        for r in &doc.rates {
            m.add_rate(&r.from, &r.to, r.bytes_per_s)?;
        }
        for e in &doc.external {
            m.set_external(&e.vm, e.in_bytes_per_s, e.out_bytes_per_s)?;
        }
        Ok(m)
    }
}

impl From<TrafficMatrix> for TrafficDoc {
    fn from(m: TrafficMatrix) -> Self {
        let rates = m
            .entries()
            .map(|(from, to, r)| RateEntry {
                from: from.into(),
                to: to.into(),
                bytes_per_s: r,
            })
            .collect();
        let mut ids: Vec<u32> = m
            .external_in
            .keys()
            .chain(m.external_out.keys())
            .copied()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let external = ids
            .into_iter()
            .map(|i| ExternalEntry {
                vm: m.names[i as usize].clone(),
                in_bytes_per_s: m.external_in.get(&i).copied().unwrap_or(0.0),
                out_bytes_per_s: m.external_out.get(&i).copied().unwrap_or(0.0),
            })
            .collect();
        TrafficDoc { rates, external }
    }
}

impl TrafficMatrix {
    pub fn new() -> Self {
        Self::default()
    }

    /// Id of a VM name, adding it if new.
    pub fn intern(&mut self, name: &str) -> Result<u32, TrafficError> {
        if name.is_empty() {
            return Err(TrafficError::EmptyName);
        }
        if let Some(&i) = self.index.get(name) {
            return Ok(i);
        }
        let i = self.names.len() as u32;
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), i);
        Ok(i)
    }

    pub fn id(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }

    /// VM names by id.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Replace the rate `from -> to`.
    pub fn set_rate(&mut self, from: &str, to: &str, bytes_per_s: f64) -> Result<(), TrafficError> {
        let (a, b, r) = self.checked(from, to, bytes_per_s)?;
        self.set_rate_ids(a, b, r);
        Ok(())
    }

    /// Add to the rate `from -> to`.
    pub fn add_rate(&mut self, from: &str, to: &str, bytes_per_s: f64) -> Result<(), TrafficError> {
        let (a, b, r) = self.checked(from, to, bytes_per_s)?;
        *self.directed.entry((a, b)).or_insert(0.0) += r;
        Ok(())
    }

    fn checked(&mut self, from: &str, to: &str, v: f64) -> Result<(u32, u32, f64), TrafficError> {
        let r = check_rate(from, to, v)?;
        if from == to {
            return Err(TrafficError::SelfTraffic(from.into()));
        }
        Ok((self.intern(from)?, self.intern(to)?, r))
    }

    /// Replace the rate `a -> b` by ids from [`Self::intern`] (unknown ids and
    /// `a == b` are ignored).
    pub fn set_rate_ids(&mut self, a: u32, b: u32, bytes_per_s: f64) {
        let n = self.names.len() as u32;
        if a == b || a >= n || b >= n || !bytes_per_s.is_finite() || bytes_per_s < 0.0 {
            return;
        }
        if bytes_per_s == 0.0 {
            self.directed.remove(&(a, b));
        } else {
            self.directed.insert((a, b), bytes_per_s);
        }
    }

    /// Set the traffic of `vm` with peers that are not VMs.
    pub fn set_external(
        &mut self,
        vm: &str,
        in_bps: f64,
        out_bps: f64,
    ) -> Result<(), TrafficError> {
        for v in [in_bps, out_bps] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(TrafficError::ExternalRate {
                    vm: vm.into(),
                    value: v,
                });
            }
        }
        let i = self.intern(vm)?;
        self.external_in.insert(i, in_bps);
        self.external_out.insert(i, out_bps);
        Ok(())
    }

    /// Directed rate `from -> to` (0 when unknown).
    pub fn rate(&self, from: &str, to: &str) -> f64 {
        match (self.id(from), self.id(to)) {
            (Some(a), Some(b)) => self.directed.get(&(a, b)).copied().unwrap_or(0.0),
            _ => 0.0,
        }
    }

    /// Symmetric view: bytes/s between `a` and `b`, both directions.
    pub fn rate_between(&self, a: &str, b: &str) -> f64 {
        self.rate(a, b) + self.rate(b, a)
    }

    /// Bytes/s `vm` receives: from VMs plus from external peers. O(entries).
    pub fn incoming(&self, vm: &str) -> f64 {
        let Some(i) = self.id(vm) else { return 0.0 };
        let from_vms: f64 = self
            .directed
            .iter()
            .filter(|((_, b), _)| *b == i)
            .map(|(_, r)| r)
            .sum();
        from_vms + self.external_in.get(&i).copied().unwrap_or(0.0)
    }

    /// Directed entries `(from, to, bytes/s)` in id order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str, f64)> + '_ {
        self.directed.iter().map(|(&(a, b), &r)| {
            (
                self.names[a as usize].as_str(),
                self.names[b as usize].as_str(),
                r,
            )
        })
    }

    /// Directed entries by id.
    pub fn entries_by_id(&self) -> impl Iterator<Item = (u32, u32, f64)> + '_ {
        self.directed.iter().map(|(&(a, b), &r)| (a, b, r))
    }

    /// Bytes/s `vm` receives from peers that are not VMs.
    pub fn external_in(&self, vm: &str) -> f64 {
        self.id(vm)
            .and_then(|i| self.external_in.get(&i).copied())
            .unwrap_or(0.0)
    }

    pub fn external_in_by_id(&self) -> impl Iterator<Item = (u32, f64)> + '_ {
        self.external_in.iter().map(|(&i, &r)| (i, r))
    }

    pub fn is_empty(&self) -> bool {
        self.directed.is_empty()
    }

    /// The symmetric view over this matrix's ids.
    pub fn symmetric(&self) -> SymmetricTraffic {
        SymmetricTraffic::build(self.names.len(), self.entries_by_id())
    }
}

/// Symmetric sparse adjacency (CSR): for each VM id its peers with
/// `rate(a,b) + rate(b,a)`, sorted by peer id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SymmetricTraffic {
    offsets: Vec<u32>,
    peers: Vec<(u32, f64)>,
}

impl SymmetricTraffic {
    /// Build from directed edges over ids `0..n`; edges with an id `>= n`,
    /// self edges and non-positive or non-finite rates are ignored.
    pub fn build(n: usize, edges: impl Iterator<Item = (u32, u32, f64)>) -> Self {
        let mut both: Vec<(u32, u32, f64)> = Vec::new();
        for (a, b, r) in edges {
            if a == b || a as usize >= n || b as usize >= n || !(r.is_finite() && r > 0.0) {
                continue;
            }
            both.push((a, b, r));
            both.push((b, a, r));
        }
        both.sort_unstable_by_key(|x| (x.0, x.1));
        let mut offsets = vec![0u32; n + 1];
        let mut peers: Vec<(u32, f64)> = Vec::with_capacity(both.len());
        let mut owner: Vec<u32> = Vec::with_capacity(both.len());
        for (a, b, r) in both {
            match (owner.last(), peers.last_mut()) {
                (Some(&o), Some(last)) if o == a && last.0 == b => last.1 += r,
                _ => {
                    owner.push(a);
                    peers.push((b, r));
                }
            }
        }
        for &o in &owner {
            offsets[o as usize + 1] += 1;
        }
        for i in 0..n {
            offsets[i + 1] += offsets[i];
        }
        SymmetricTraffic { offsets, peers }
    }

    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Peers of `id` with their symmetric rate (empty for unknown ids).
    #[inline]
    pub fn peers_of(&self, id: u32) -> &[(u32, f64)] {
        let i = id as usize;
        if i + 1 >= self.offsets.len() {
            return &[];
        }
        &self.peers[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// Number of (symmetric) pairs that talk.
    pub fn pair_count(&self) -> usize {
        self.peers.len() / 2
    }
}

#[derive(Debug, Clone, PartialEq)]
struct PeerSample {
    tx_bytes: u64,
    rx_bytes: u64,
    /// Smoothed bytes/s the VM sends to / receives from this peer.
    tx_rate: Option<f64>,
    rx_rate: Option<f64>,
}

/// Turns successive per-peer counter samples into smoothed rates.
#[derive(Debug, Clone, Default)]
pub struct TrafficSampler {
    peers: BTreeMap<(String, Ipv4Addr), PeerSample>,
}

impl TrafficSampler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed one VM's report, taken `interval_s` after the previous one.
    ///
    /// - The first sample of a (VM, peer IP) only sets the baseline.
    /// - A counter that went backwards (the element restarted, e.g. after a
    ///   migration) re-baselines; the rate is kept.
    /// - A known peer missing from the report counts as 0 bytes (decays).
    /// - Peers without an IP (non-IP frames) are not tracked; two entries
    ///   with the same IP (e.g. two MACs behind a router) are summed.
    pub fn ingest(&mut self, report: &TrafficReport, interval_s: f64) -> Result<(), TrafficError> {
        if !(interval_s.is_finite() && interval_s > 0.0) {
            return Err(TrafficError::Interval(interval_s));
        }
        if report.vm.is_empty() {
            return Err(TrafficError::EmptyName);
        }
        let mut now: BTreeMap<Ipv4Addr, (u64, u64)> = BTreeMap::new();
        for p in &report.peers {
            if let Some(ip) = p.ip {
                let e = now.entry(ip).or_insert((0, 0));
                e.0 = e.0.saturating_add(p.tx_bytes);
                e.1 = e.1.saturating_add(p.rx_bytes);
            }
        }
        // Decay peers that vanished from this VM's report.
        let vm = report.vm.clone();
        let lo = (vm.clone(), Ipv4Addr::UNSPECIFIED);
        let hi = (vm.clone(), Ipv4Addr::BROADCAST);
        for ((_, ip), s) in self.peers.range_mut(lo..=hi) {
            if !now.contains_key(ip) {
                if let Some(r) = s.tx_rate {
                    s.tx_rate = Some(ewma_rate(Some(r), 0, interval_s)?);
                }
                if let Some(r) = s.rx_rate {
                    s.rx_rate = Some(ewma_rate(Some(r), 0, interval_s)?);
                }
            }
        }
        for (ip, (tx, rx)) in now {
            match self.peers.get_mut(&(vm.clone(), ip)) {
                None => {
                    self.peers.insert(
                        (vm.clone(), ip),
                        PeerSample {
                            tx_bytes: tx,
                            rx_bytes: rx,
                            tx_rate: None,
                            rx_rate: None,
                        },
                    );
                }
                Some(s) if tx < s.tx_bytes || rx < s.rx_bytes => {
                    s.tx_bytes = tx;
                    s.rx_bytes = rx;
                }
                Some(s) => {
                    s.tx_rate = Some(ewma_rate(s.tx_rate, tx - s.tx_bytes, interval_s)?);
                    s.rx_rate = Some(ewma_rate(s.rx_rate, rx - s.rx_bytes, interval_s)?);
                    s.tx_bytes = tx;
                    s.rx_bytes = rx;
                }
            }
        }
        Ok(())
    }

    /// Forget a VM (deleted); its peers' views of it stay until they decay.
    pub fn forget_vm(&mut self, vm: &str) {
        self.peers.retain(|(v, _), _| v != vm);
    }

    /// The current matrix. Peers whose IP maps to a VM become VM-to-VM
    /// rates; the others are the VM's external traffic. Both ends of a VM
    /// pair count the same bytes (one as tx, the other as rx): the larger
    /// of the two views is kept, so a restarted counter on one side does not
    /// halve the rate.
    pub fn matrix(&self, ip_to_vm: &BTreeMap<Ipv4Addr, String>) -> TrafficMatrix {
        let mut m = TrafficMatrix::new();
        let mut directed: BTreeMap<(u32, u32), f64> = BTreeMap::new();
        let mut ext: BTreeMap<u32, (f64, f64)> = BTreeMap::new();
        for ((vm, ip), s) in &self.peers {
            let (Some(tx), Some(rx)) = (s.tx_rate, s.rx_rate) else {
                continue;
            };
            let Ok(me) = m.intern(vm) else { continue };
            match ip_to_vm.get(ip) {
                Some(peer) if peer == vm => {}
                Some(peer) => {
                    let Ok(p) = m.intern(peer) else { continue };
                    let out = directed.entry((me, p)).or_insert(0.0);
                    *out = out.max(tx);
                    let inn = directed.entry((p, me)).or_insert(0.0);
                    *inn = inn.max(rx);
                }
                None => {
                    let e = ext.entry(me).or_insert((0.0, 0.0));
                    e.0 += rx;
                    e.1 += tx;
                }
            }
        }
        for ((a, b), r) in directed {
            m.set_rate_ids(a, b, r);
        }
        for (i, (inn, out)) in ext {
            m.external_in.insert(i, inn);
            m.external_out.insert(i, out);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_api::PeerCounters;
    use crate::mac::Mac;

    #[test]
    fn ewma_first_sample_then_smoothing() {
        assert_eq!(ewma_rate(None, 1000, 10.0).unwrap(), 100.0);
        let r = ewma_rate(Some(100.0), 3000, 10.0).unwrap();
        assert!((r - (0.3 * 300.0 + 0.7 * 100.0)).abs() < 1e-9);
        // A constant stream converges to its rate.
        let mut r = Some(0.0);
        for _ in 0..50 {
            r = Some(ewma_rate(r, 5000, 5.0).unwrap());
        }
        assert!((r.unwrap() - 1000.0).abs() < 1e-3);
        // 90 % of a step after 7 samples.
        let mut r = Some(0.0);
        for _ in 0..7 {
            r = Some(ewma_rate(r, 100, 1.0).unwrap());
        }
        assert!(r.unwrap() > 90.0 && r.unwrap() < 95.0, "{r:?}");
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                ewma_rate(None, 1, bad),
                Err(TrafficError::Interval(_))
            ));
        }
        // A bad previous rate is replaced by the sample.
        assert_eq!(ewma_rate(Some(f64::NAN), 10, 1.0).unwrap(), 10.0);
    }

    #[test]
    fn matrix_rates_and_symmetric_view() {
        let mut m = TrafficMatrix::new();
        m.set_rate("a", "b", 10.0).unwrap();
        m.add_rate("b", "a", 5.0).unwrap();
        m.add_rate("b", "a", 1.0).unwrap();
        m.set_rate("a", "c", 2.0).unwrap();
        m.set_external("b", 7.0, 1.0).unwrap();
        assert_eq!(m.rate("a", "b"), 10.0);
        assert_eq!(m.rate("b", "a"), 6.0);
        assert_eq!(m.rate_between("b", "a"), 16.0);
        assert_eq!(m.rate("a", "zzz"), 0.0);
        assert_eq!(m.incoming("a"), 6.0);
        assert_eq!(m.incoming("b"), 17.0);
        let s = m.symmetric();
        let a = m.id("a").unwrap();
        let b = m.id("b").unwrap();
        let c = m.id("c").unwrap();
        assert_eq!(s.peers_of(a), &[(b, 16.0), (c, 2.0)]);
        assert_eq!(s.peers_of(b), &[(a, 16.0)]);
        assert_eq!(s.peers_of(c), &[(a, 2.0)]);
        assert_eq!(s.peers_of(99), &[]);
        assert_eq!(s.pair_count(), 2);
        assert!(m.set_rate("a", "a", 1.0).is_err());
        assert!(m
            .set_rate("a", "b", -1.0)
            .unwrap_err()
            .to_string()
            .contains("-1"));
        assert!(m.set_rate("a", "b", f64::NAN).is_err());
        assert!(m.set_rate("", "b", 1.0).is_err());
        // JSON round trip.
        let json = serde_json::to_string(&m).unwrap();
        let back: TrafficMatrix = serde_json::from_str(&json).unwrap();
        assert_eq!(back.rate_between("a", "b"), 16.0);
        assert_eq!(back.external_in("b"), 7.0);
        assert!(serde_json::from_str::<TrafficMatrix>(
            r#"{"rates":[{"from":"x","to":"x","bytes_per_s":1}]}"#
        )
        .is_err());
    }

    fn report(vm: &str, peers: &[(u8, u64, u64)]) -> TrafficReport {
        TrafficReport {
            vm: vm.into(),
            peers: peers
                .iter()
                .map(|&(ip, tx, rx)| PeerCounters {
                    mac: Mac([2, 0, 0, 0, 0, ip]),
                    ip: Some(Ipv4Addr::new(10, 0, 0, ip)),
                    tx_packets: 0,
                    tx_bytes: tx,
                    rx_packets: 0,
                    rx_bytes: rx,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn sampler_builds_matrix_from_agent_counters() {
        let ips: BTreeMap<Ipv4Addr, String> = [(1u8, "a"), (2, "b")]
            .into_iter()
            .map(|(i, n)| (Ipv4Addr::new(10, 0, 0, i), n.to_string()))
            .collect();
        let mut s = TrafficSampler::new();
        // a talks to b (10.0.0.2) and to a client 10.0.0.9.
        s.ingest(&report("a", &[(2, 0, 0), (9, 0, 0)]), 10.0)
            .unwrap();
        s.ingest(&report("b", &[(1, 0, 0)]), 10.0).unwrap();
        assert!(s.matrix(&ips).is_empty(), "baseline only");
        s.ingest(
            &report("a", &[(2, 10_000, 5_000), (9, 1_000, 20_000)]),
            10.0,
        )
        .unwrap();
        // b saw a bit less of a's traffic (counter restarted earlier): max wins.
        s.ingest(&report("b", &[(1, 4_000, 9_000)]), 10.0).unwrap();
        let m = s.matrix(&ips);
        assert_eq!(m.rate("a", "b"), 1000.0);
        assert_eq!(m.rate("b", "a"), 500.0);
        assert_eq!(m.external_in("a"), 2000.0);
        assert_eq!(m.incoming("a"), 2500.0);
        // Counter reset: re-baseline, rate kept.
        s.ingest(&report("a", &[(2, 10, 10), (9, 1_000, 20_000)]), 10.0)
            .unwrap();
        let m = s.matrix(&ips);
        assert_eq!(m.rate("a", "b"), 1000.0);
        // External peer idle for a sample: decays by (1-α).
        assert!((m.external_in("a") - 2000.0 * 0.7).abs() < 1e-9);
        // Everything gone from a's report: a's views decay (external: 1400 -> 980);
        // for a -> b, b's own view (900 B/s received) is now the larger one.
        s.ingest(&report("a", &[]), 10.0).unwrap();
        let m = s.matrix(&ips);
        assert!((m.external_in("a") - 980.0).abs() < 1e-9);
        assert_eq!(m.rate("a", "b"), 900.0);
        assert!(s.ingest(&report("a", &[]), 0.0).is_err());
        s.forget_vm("a");
        let m = s.matrix(&ips);
        assert_eq!(m.external_in("a"), 0.0);
        assert_eq!(m.rate("a", "b"), 900.0);
    }
}
