//! What the agents last reported, kept in memory only: a new leader starts
//! empty and gives every host the full failure timeout to report.

use duplex_core::agent_api::{HostReport, VmInfo, VmState};
use duplex_core::guest_proto::Heartbeat;
use duplex_core::model::pair::MemberView;
use duplex_core::role::Role;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use tokio::time::Instant;

/// A guest heartbeat older than this does not count as a role report.
const FRESH_GUEST_MS: u64 = 3000;
/// After a live migration, how long a host report that contradicts it
/// (the VM still incoming on the destination, still on the source) is
/// taken as older than the move: a report is at most one heartbeat old,
/// plus its transit.
const MOVE_SETTLE: Duration = Duration::from_secs(3);

/// A live migration this controller saw complete.
struct Arrival {
    from: String,
    to: String,
    info: VmInfo,
    at: Instant,
}

pub struct Seen {
    pub report: HostReport,
    pub at: Instant,
    /// The same moment in unix ms (to compare with records' times).
    pub at_ms: u64,
}

pub struct Observed {
    hosts: HashMap<String, Seen>,
    /// Roles a workflow confirmed by asking the guest directly; newer than
    /// a heartbeat that left the guest before it, so they win until then.
    confirmed: HashMap<String, (Role, Instant)>,
    /// Recent moves, by VM: they correct reports sent before them.
    arrivals: HashMap<String, Arrival>,
    since: Instant,
}

impl Default for Observed {
    fn default() -> Self {
        Observed {
            hosts: HashMap::new(),
            confirmed: HashMap::new(),
            arrivals: HashMap::new(),
            since: Instant::now(),
        }
    }
}

impl Observed {
    /// Forget everything (on taking office).
    pub fn reset(&mut self) {
        *self = Observed::default();
    }

    pub fn record(&mut self, host: &str, mut report: HostReport) {
        self.arrivals.retain(|_, a| a.at.elapsed() < MOVE_SETTLE);
        for a in self.arrivals.values() {
            if a.from == host {
                report.vms.retain(|v| v.spec.name != a.info.spec.name);
            } else if a.to == host {
                let stale = |v: &VmInfo| v.state == VmState::Incoming;
                match report
                    .vms
                    .iter_mut()
                    .find(|v| v.spec.name == a.info.spec.name)
                {
                    Some(v) if stale(v) => *v = a.info.clone(),
                    Some(_) => {}
                    None => report.vms.push(a.info.clone()),
                }
            }
        }
        self.hosts.insert(
            host.to_string(),
            Seen {
                report,
                at: Instant::now(),
                at_ms: crate::events::now_ms(),
            },
        );
    }

    /// Records a live migration that just completed, with what the
    /// destination said of the VM: the view shows it there at once, and
    /// reports sent before the move do not undo that.
    pub fn moved(&mut self, from: &str, to: &str, mut info: VmInfo) {
        let vm = info.spec.name.clone();
        // Its ages count from now, a report's from when it came: the
        // guest's next heartbeat comes with the host's next report.
        (info.heartbeat, info.heartbeat_age_ms, info.reset_age_ms) = (None, None, None);
        if let Some(s) = self.hosts.get_mut(from) {
            s.report.vms.retain(|v| v.spec.name != vm);
        }
        if let Some(s) = self.hosts.get_mut(to) {
            s.report.vms.retain(|v| v.spec.name != vm);
            s.report.vms.push(info.clone());
        }
        let arrival = Arrival {
            from: from.to_string(),
            to: to.to_string(),
            info,
            at: Instant::now(),
        };
        self.arrivals.insert(vm, arrival);
    }

    /// Every host that reported, with what it last said.
    pub fn all(&self) -> impl Iterator<Item = (&String, &Seen)> {
        self.hosts.iter()
    }

    pub fn get(&self, host: &str) -> Option<&Seen> {
        self.hosts.get(host)
    }

    /// Milliseconds since the host last reported (or since this controller
    /// started watching, if it has not reported to it yet).
    pub fn silent_ms(&self, host: &str) -> u64 {
        let t = self.hosts.get(host).map(|s| s.at).unwrap_or(self.since);
        t.elapsed().as_millis() as u64
    }

    /// When the host's last report came, if one did.
    pub fn reported_at(&self, host: &str) -> Option<Instant> {
        self.hosts.get(host).map(|s| s.at)
    }

    /// Whether `host` counts as live for its VMs (`liveness::live`).
    pub fn live(
        &self,
        host: &duplex_core::model::Host,
        t: &duplex_core::model::liveness::Timing,
    ) -> bool {
        let silent = self.get(&host.name).map(|_| self.silent_ms(&host.name));
        duplex_core::model::liveness::live(host, silent, self.reported_ms(&host.name), t)
    }

    /// Whether any VM on `host` says, in its latest report, that it lost
    /// its pair peer.
    pub fn any_peer_lost(&self, host: &str) -> bool {
        self.hosts.get(host).is_some_and(|s| {
            s.report
                .vms
                .iter()
                .any(|v| self.peer_lost(host, &v.spec.name))
        })
    }

    /// Unix ms of the host's last report, if one came.
    pub fn reported_ms(&self, host: &str) -> Option<u64> {
        self.hosts.get(host).map(|s| s.at_ms)
    }

    /// The self-fence lease the host's agent last reported.
    pub fn self_fence_ms(&self, host: &str) -> Option<u64> {
        self.hosts.get(host)?.report.self_fence_ms
    }

    /// Whether `vm`'s guest on `host` said, in its host's latest report
    /// and within the freshness limit, that it lost its pair peer.
    pub fn peer_lost(&self, host: &str, vm: &str) -> bool {
        let Some(seen) = self.hosts.get(host) else {
            return false;
        };
        let since_report = seen.at.elapsed().as_millis() as u64;
        seen.report
            .vms
            .iter()
            .find(|v| v.spec.name == vm)
            .filter(|v| {
                v.heartbeat_age_ms
                    .is_some_and(|a| a + since_report <= FRESH_GUEST_MS)
            })
            .and_then(|v| v.heartbeat.as_ref())
            .is_some_and(|b| alarm(b).peer_lost)
    }

    pub fn vm_names(&self, host: &str) -> BTreeSet<String> {
        self.hosts
            .get(host)
            .map(|s| s.report.vms.iter().map(|v| v.spec.name.clone()).collect())
            .unwrap_or_default()
    }

    /// Replicated VMs on `host` with no epochs towards a backup that may
    /// take over (S2).
    pub fn unprotected(&self, host: &str) -> BTreeSet<String> {
        self.hosts
            .get(host)
            .map(|s| {
                s.report
                    .vms
                    .iter()
                    .filter(|v| v.needs_backup())
                    .map(|v| v.spec.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every failure a host reports now, as (VM, failure id).
    pub fn failures(&self) -> Vec<(String, String)> {
        self.hosts
            .values()
            .flat_map(|s| s.report.vms.iter())
            .filter_map(|v| Some((v.spec.name.clone(), v.failure.as_ref()?.id.clone())))
            .collect()
    }

    pub fn vm(&self, host: &str, vm: &str) -> Option<&VmInfo> {
        self.hosts
            .get(host)?
            .report
            .vms
            .iter()
            .find(|v| v.spec.name == vm)
    }

    /// Records a role the guest itself just confirmed.
    pub fn confirm(&mut self, vm: &str, role: Role) {
        self.confirmed
            .insert(vm.to_string(), (role, Instant::now()));
    }

    /// The role and service health the VM's guest last reported.
    pub fn member_view(&self, host: &str, vm: &str) -> MemberView {
        let Some(seen) = self.hosts.get(host) else {
            return MemberView::default();
        };
        let Some(info) = seen.report.vms.iter().find(|v| v.spec.name == vm) else {
            return MemberView::default();
        };
        // Isolated on the controller's order: paused, it reports nothing
        // that counts, whatever its guest last said (the failover pass,
        // which sees the isolation, decides for its pair).
        if info.isolated {
            return MemberView::default();
        }
        // The heartbeat's age now: its age in the report plus the report's
        // own (a silent host's last report does not stay fresh).
        let since_report = seen.at.elapsed().as_millis() as u64;
        let fresh = info
            .heartbeat_age_ms
            .is_some_and(|a| a + since_report <= FRESH_GUEST_MS);
        let hb = info.heartbeat.as_ref().filter(|_| fresh);
        let ago = |ms: Option<u64>| {
            seen.at
                .checked_sub(std::time::Duration::from_millis(ms.unwrap_or(0)))
        };
        // When the guest sent that heartbeat.
        let sent = hb.and_then(|_| ago(info.heartbeat_age_ms));
        // QEMU saw the guest reset since its last heartbeat: it boots
        // again with no role, unless a workflow confirmed one since.
        if let Some(reset) = info.reset_age_ms.and_then(|ms| ago(Some(ms))) {
            let role = match self.confirmed.get(vm) {
                Some((r, at)) if *at > reset => *r,
                _ => Role::None,
            };
            return MemberView {
                role: Some(role),
                ..MemberView::default()
            };
        }
        let confirmed = self
            .confirmed
            .get(vm)
            .filter(|(_, at)| match sent {
                // A heartbeat is sent before its report arrives: an answer
                // the guest gave at that same instant is the newer one.
                Some(s) => *at >= s,
                None => at.elapsed().as_millis() as u64 <= FRESH_GUEST_MS,
            })
            .map(|(r, _)| *r);
        if let Some(role) = confirmed {
            // A health verdict from before a confirmed role change is moot;
            // an ACT's word on its peer's sync is not (a repair confirms
            // the ACT it leaves in place, whose peer may still lack state).
            let peer_synced = hb
                .filter(|_| role == Role::Act)
                .and_then(|h| alarm(h).peer_synced);
            return MemberView {
                role: Some(role),
                peer_synced,
                ..MemberView::default()
            };
        }
        let Some(hb) = hb else {
            return MemberView::default();
        };
        MemberView {
            role: hb
                .get("role")
                .and_then(|r| serde_json::from_value::<Role>(r.clone()).ok()),
            healthy: hb
                .get("service")
                .and_then(|s| s.get("healthy"))
                .and_then(|h| h.as_bool()),
            ..alarm(hb)
        }
    }
}

/// What a heartbeat says of the guest's peer and witness.
fn alarm(hb: &serde_json::Value) -> MemberView {
    let Ok(b) = serde_json::from_value::<Heartbeat>(hb.clone()) else {
        return MemberView::default();
    };
    let (peer_lost, cut_off) = b.alarm();
    MemberView {
        peer_lost,
        cut_off,
        peer_synced: b.peer_synced,
        ..MemberView::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vm(state: &str) -> VmInfo {
        serde_json::from_value(json!({
            "spec": {"name": "v", "ip": "10.0.0.5"}, "mac": "52:54:00:00:00:05",
            "state": state, "pid": 1, "tap": "t", "boot_ms": null,
            "guest": {"name": "v"}, "serial_log": "s", "migration": null,
            "heartbeat": {"role": "sby"}, "heartbeat_age_ms": 10
        }))
        .unwrap()
    }

    fn report(host: &str, vms: Vec<VmInfo>) -> HostReport {
        serde_json::from_value(json!({
            "host": {"name": host, "version": "0", "accel": {"kind": "tcg", "reason": ""},
                     "qemu": "q", "listen": "l", "vms": []},
            "url": "u", "capacity": {"vcpus": 2, "memory_mib": 1024},
            "vms": vms, "traffic": [], "fence": 1, "seq": 1
        }))
        .unwrap()
    }

    #[test]
    fn a_move_shows_at_once_and_older_reports_do_not_undo_it() {
        let mut o = Observed::default();
        o.record("h1", report("h1", vec![vm("migrating_out")]));
        o.record("h2", report("h2", vec![vm("incoming")]));
        o.moved("h1", "h2", vm("running"));
        assert!(o.vm("h1", "v").is_none());
        let there = o.vm("h2", "v").unwrap();
        assert_eq!(there.state, VmState::Running);
        assert!(
            there.heartbeat.is_none(),
            "its age would count from the wrong time"
        );

        // Reports the hosts sent before the move.
        o.record("h1", report("h1", vec![vm("migrating_out")]));
        o.record("h2", report("h2", vec![vm("incoming")]));
        assert!(o.vm("h1", "v").is_none());
        assert_eq!(o.vm("h2", "v").unwrap().state, VmState::Running);
        o.record("h2", report("h2", vec![]));
        assert_eq!(o.vm("h2", "v").unwrap().state, VmState::Running);

        // A report from after the move is taken as it is.
        o.record("h2", report("h2", vec![vm("paused")]));
        assert_eq!(o.vm("h2", "v").unwrap().state, VmState::Paused);
    }

    /// A role a workflow confirmed outranks the heartbeat's role and
    /// health, but an ACT's word that its peer lacks state still counts.
    #[test]
    fn a_confirmed_act_keeps_its_word_on_its_peers_sync() {
        let mut o = Observed::default();
        let mut info = vm("running");
        info.heartbeat = Some(json!({
            "seq": 3, "role": "act", "service": {"healthy": false}, "peer_synced": false
        }));
        o.record("h1", report("h1", vec![info]));
        let seen = o.member_view("h1", "v");
        assert_eq!(
            (seen.role, seen.peer_synced),
            (Some(Role::Act), Some(false))
        );
        o.confirm("v", Role::Act);
        let act = o.member_view("h1", "v");
        assert_eq!(
            (act.role, act.healthy, act.peer_synced),
            (Some(Role::Act), None, Some(false))
        );
        o.confirm("v", Role::Sby);
        assert_eq!(o.member_view("h1", "v").peer_synced, None);
    }

    #[test]
    fn reports_are_taken_as_they_are_once_the_move_settled() {
        let mut o = Observed::default();
        o.moved("h1", "h2", vm("running"));
        o.arrivals.get_mut("v").unwrap().at -= MOVE_SETTLE;
        o.record("h1", report("h1", vec![vm("running")]));
        o.record("h2", report("h2", vec![]));
        assert_eq!(o.vm("h1", "v").unwrap().state, VmState::Running);
        assert!(o.vm("h2", "v").is_none());
    }
}
