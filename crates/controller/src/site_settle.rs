//! S5: a switch whose controller died after the handoff leaves the VM
//! paused on the side it was leaving (handed off), its clients' traffic
//! buffered. The leader settles it from what both sides report: if the
//! other side runs the VM (its activation went through), the switch is
//! finished from its recording on; otherwise it is called off and the VM
//! resumes where it was. Never both: the other side runs the VM only if it
//! was activated, and then the old side is only ever made its replica.

use crate::ctl::Ctl;
use crate::site::{continue_switch, ends_of, Memo};
use duplex_core::model::Vm;
use duplex_core::site::HandoffInfo;
use duplex_core::site_switch::Switch;
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
    /// Whether `vm` (not busy) is stranded; settles it once it has been for
    /// [`SETTLE_AFTER`]. `handed_off`: what its active side reports.
    pub async fn check(&mut self, ctl: &Arc<Ctl>, vm: &Vm, handed_off: Option<u64>) -> bool {
        let name = &vm.spec.name;
        let Some(epoch) = handed_off else {
            self.since.remove(name);
            return false;
        };
        let since = *self.since.entry(name.clone()).or_insert_with(Instant::now);
        if since.elapsed() >= SETTLE_AFTER {
            self.since.remove(name);
            if let Err(e) = settle(ctl, name, epoch).await {
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

async fn settle(ctl: &Arc<Ctl>, name: &str, epoch: u64) -> Result<(), String> {
    let e = ends_of(ctl, name).await.map_err(|e| e.message)?;
    let other = ctl
        .agent(&e.to.1)
        .site_side(name)
        .await
        .map_err(|x| format!("asking {} about it: {x}", e.to.0))?;
    let why = if other.active {
        format!(
            "finishing a switch its controller left: {name} runs on {} (handed off by {} at epoch {epoch})",
            e.to.0, e.from.0
        )
    } else {
        format!(
            "calling off a switch its controller left: {name} is paused on {} and {} did not run it",
            e.from.0, e.to.0
        )
    };
    let memo = Memo {
        handed: Some(HandoffInfo {
            epoch,
            pause_ms: 0,
            buffer: None,
        }),
        shared_epoch: None,
    };
    let sw = Switch::settling(other.active);
    continue_switch(ctl, e, Some(why), sw, memo)
        .await
        .map(drop)
        .map_err(|x| x.message)
}
