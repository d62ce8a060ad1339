//! S5: a switch whose controller died half-way leaves the VM paused on
//! the side it was leaving (handed off), its clients' traffic buffered.
//! The leader settles it from what both sides report
//! (`Switch::left_half_done`): if the other side runs the VM (its
//! activation went through), the switch is finished from where it was
//! left; otherwise it is called off and the VM resumes where it was. Never
//! both: the other side runs the VM only if it was activated, and then the
//! old side is only ever made its replica.

use crate::ctl::Ctl;
use crate::site::{continue_switch, ends_of, site_of, Ends, Memo};
use duplex_core::model::{Severity, Vm};
use duplex_core::site::{HandoffInfo, SiteSide};
use duplex_core::site_switch::{Switch, Takeover};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a VM stays handed off with no switch running before the leader
/// settles it (longer than a switch's activation takes).
pub const SETTLE_AFTER: Duration = Duration::from_secs(10);

/// Handed-off VMs no switch works on, and since when they are seen so.
#[derive(Default)]
pub struct Stranded {
    since: HashMap<String, Instant>,
}

impl Stranded {
    /// Whether `vm` (not busy) is stranded, from what its home and its
    /// replica's host report; settles it once it has been for
    /// [`SETTLE_AFTER`].
    pub async fn check(
        &mut self,
        ctl: &Arc<Ctl>,
        vm: &Vm,
        home: Option<&SiteSide>,
        backup: Option<&SiteSide>,
    ) -> bool {
        let name = &vm.spec.name;
        let left = home
            .zip(backup)
            .and_then(|(h, b)| Switch::left_half_done(h, b));
        let Some(takeover) = left else {
            self.since.remove(name);
            return false;
        };
        let since = *self.since.entry(name.clone()).or_insert_with(Instant::now);
        if since.elapsed() >= SETTLE_AFTER {
            self.since.remove(name);
            if let Err(e) = settle(ctl, name, takeover).await {
                tracing::warn!(vm = %name, "settling a switch left half-done: {e}");
            }
        }
        true
    }

    pub fn forget_others(&mut self, vms: &[Vm]) {
        self.since
            .retain(|name, _| vms.iter().any(|v| &v.spec.name == name));
    }
}

async fn settle(ctl: &Arc<Ctl>, name: &str, t: Takeover) -> Result<(), String> {
    let recorded = ends_of(ctl, name).await.map_err(|e| e.message)?;
    // The switch's own ends: from the side it was leaving.
    let e = if t.recorded {
        Ends {
            from_site: site_of(ctl, &recorded.to.0).await,
            vm: recorded.vm,
            from: recorded.to,
            to: recorded.from,
        }
    } else {
        recorded
    };
    let (from, to, epoch) = (&e.from.0, &e.to.0, t.epoch);
    let why = if t.switch.moved() {
        format!("finishing a switch its controller left: {name} runs on {to} (handed off by {from} at epoch {epoch})")
    } else {
        format!("calling off a switch its controller left: {name} is paused on {from} and {to} did not run it")
    };
    ctl.events
        .emit(
            Severity::Warning,
            "vm.site_switch_settled",
            &format!("vm/{name}"),
            why.clone(),
        )
        .await;
    let memo = Memo {
        handed: Some(HandoffInfo {
            epoch,
            pause_ms: 0,
            buffer: None,
        }),
        shared_epoch: None,
    };
    continue_switch(ctl, e, Some(why), t.switch, memo)
        .await
        .map(drop)
        .map_err(|x| x.message)
}
