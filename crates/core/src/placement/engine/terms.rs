//! The engine's terms one pair of hosts at a time, for searches that place
//! several VMs at once ([`crate::placement::exact`]): what a byte/s
//! between two hosts costs, what a move costs, and which hosts a VM's own
//! filters admit.

use super::{congestion, Engine, Mode, Reject};
use crate::placement::cluster::{HostIx, VmIx};
use crate::placement::precopy::precopy_bytes;

impl Engine<'_> {
    /// What one byte/s between VMs on hosts `a` and `b` adds to the impact
    /// factor: hops times the traffic weight, plus the congestion of the
    /// path between racks times the utilization weight (0 on one host).
    pub fn pair_weight(&self, a: HostIx, b: HostIx) -> f64 {
        if a == b {
            return 0.0;
        }
        let (ra, rb) = (
            self.cluster.hosts[a as usize].rack,
            self.cluster.hosts[b as usize].rack,
        );
        let mut w = self.params.traffic_weight * f64::from(self.topo.rack_hops(ra, rb));
        if ra != rb {
            w += self.params.utilization_weight * congestion(self.topo.rack_utilization(ra, rb));
        }
        w
    }

    /// The memory term of moving `v` to `to` (0 where it runs).
    pub fn move_cost(&self, v: VmIx, to: HostIx) -> f64 {
        let (bytes, hops) = self.move_bytes(v, to);
        self.params.memory_weight * bytes * f64::from(hops)
    }

    /// Bytes the pre-copy model says moving `v` to `to` sends, and the
    /// links they cross (0 where it runs).
    pub fn move_bytes(&self, v: VmIx, to: HostIx) -> (f64, u8) {
        let Some(row) = self.cluster.vms.get(v as usize) else {
            return (0.0, 0);
        };
        let Some(cur) = row.host.filter(|&c| c != to) else {
            return (0.0, 0);
        };
        let (rc, rt) = (
            self.cluster.hosts[cur as usize].rack,
            self.cluster.hosts[to as usize].rack,
        );
        let bw = self
            .params
            .migration_bandwidth_bps
            .min(self.topo.rack_available_bps(rc, rt));
        let p = precopy_bytes(
            row.mem_bytes(),
            row.dirty_bps,
            bw,
            self.params.max_precopy_rounds,
            self.params.nonconverging_factor,
        );
        (p.bytes, self.topo.rack_hops(rc, rt))
    }

    /// For each of `hosts`: may `v` run there as far as its own filters go
    /// (state, site, include/exclude, migrations in flight)? Capacity and
    /// pair anti-affinity are the caller's, who moves several VMs at once;
    /// its current host always may.
    pub fn admitting(&mut self, v: VmIx, hosts: &[HostIx], out: &mut Vec<bool>) {
        out.clear();
        if v as usize >= self.cluster.vm_count() {
            out.resize(hosts.len(), false);
            return;
        }
        let mut ctx = self.prepare(v, Mode::Migrate);
        (ctx.need_cpu, ctx.need_mem_mib, ctx.pair_host) = (0, 0, None);
        for &h in hosts {
            let ok = h as usize >= self.cluster.host_count()
                || Some(h) == ctx.cur
                || matches!(
                    self.filter(&ctx, h),
                    Ok(()) | Err(Reject::Capacity { .. } | Reject::AntiAffinity)
                );
            out.push(ok && (h as usize) < self.cluster.host_count());
        }
    }
}
