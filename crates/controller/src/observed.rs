//! What the agents last reported, kept in memory only: a new leader starts
//! empty and gives every host the full failure timeout to report.

use duplex_core::agent_api::{HostReport, VmInfo};
use duplex_core::model::pair::MemberView;
use duplex_core::role::Role;
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

/// A guest heartbeat older than this does not count as a role report.
const FRESH_GUEST_MS: u64 = 3000;

pub struct Seen {
    pub report: HostReport,
    pub at: Instant,
}

pub struct Observed {
    hosts: HashMap<String, Seen>,
    /// Roles a workflow confirmed by asking the guest directly; newer than
    /// a heartbeat that left the guest before it, so they win until then.
    confirmed: HashMap<String, (Role, Instant)>,
    since: Instant,
}

impl Default for Observed {
    fn default() -> Self {
        Observed {
            hosts: HashMap::new(),
            confirmed: HashMap::new(),
            since: Instant::now(),
        }
    }
}

impl Observed {
    /// Forget everything (on taking office).
    pub fn reset(&mut self) {
        *self = Observed::default();
    }

    pub fn record(&mut self, host: &str, report: HostReport) {
        self.hosts.insert(
            host.to_string(),
            Seen {
                report,
                at: Instant::now(),
            },
        );
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

    pub fn vm_names(&self, host: &str) -> BTreeSet<String> {
        self.hosts
            .get(host)
            .map(|s| s.report.vms.iter().map(|v| v.spec.name.clone()).collect())
            .unwrap_or_default()
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
        let fresh = info.heartbeat_age_ms.is_some_and(|a| a <= FRESH_GUEST_MS);
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
                healthy: None,
            };
        }
        let confirmed = self
            .confirmed
            .get(vm)
            .filter(|(_, at)| match sent {
                Some(s) => *at > s,
                None => at.elapsed().as_millis() as u64 <= FRESH_GUEST_MS,
            })
            .map(|(r, _)| *r);
        if let Some(role) = confirmed {
            // A health verdict from before a confirmed role change is moot.
            return MemberView {
                role: Some(role),
                healthy: None,
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
        }
    }
}
