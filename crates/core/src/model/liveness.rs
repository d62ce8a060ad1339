//! When a host counts as gone, when it is safely fenced, and when it is
//! back. Pure: the controller's host pass gathers a [`Sight`] per host,
//! asks [`fate`], and writes what [`apply`] changed on the host's record.
//!
//! ```text
//!            peer lost (a guest elsewhere stopped hearing a VM here)
//!   Alive ────────────────────────> Probe (the controller asks the agent itself)
//!     │  silent > suspect_after, or the probe found nobody
//!     v
//!   Gone: marked failed, fence decided ──> the fence device (if any) is run
//!     │  device confirmed, or silent >= the agent's self-fence lease + margin
//!     v
//!   Fenced: its VMs can no longer serve; pairs fail over, lone VMs restart elsewhere
//!     │  reports again
//!     v
//!   Returned: every VM it still holds is destroyed; once it holds none, it
//!   is back in the state it had before
//! ```
//!
//! A host that reports again before its fence was confirmed was only late:
//! the fence is called off and the host keeps its VMs (nothing was
//! promoted in its place, since promotion waits for the fence).

use super::host::{Host, HostState};
use serde::{Deserialize, Serialize};

/// Silence after which a host is gone (three missed heartbeats of
/// [`crate::agent_api::AGENT_HEARTBEAT_MS`]).
pub const HOST_FAILURE_TIMEOUT_MS: u64 = 3000;
/// Added to an agent's self-fence lease before its silence proves it
/// fenced: the agent counts its lease from the report it sent (before the
/// controller received it), and pausing its VMs takes a moment.
pub const SELF_FENCE_MARGIN_MS: u64 = 1000;

/// The thresholds of [`fate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Timing {
    pub suspect_after_ms: u64,
    pub self_fence_margin_ms: u64,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            suspect_after_ms: HOST_FAILURE_TIMEOUT_MS,
            self_fence_margin_ms: SELF_FENCE_MARGIN_MS,
        }
    }
}

/// What makes a fenced host safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Proof {
    /// The fence device (power switch, IPMI/Redfish command) confirmed.
    Device,
    /// The host's agent has been cut off longer than its self-fence lease:
    /// it has stopped its VMs' traffic and paused them itself.
    Lease,
}

/// The fence the controller decided for a host, on the host's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostFence {
    /// Unix ms of the decision.
    pub decided_ms: u64,
    /// Set once the host is known fenced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<Proof>,
    /// Unix ms of the proof.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_ms: Option<u64>,
}

impl HostFence {
    /// Whether the host is fenced and a report received at `reported_ms`
    /// (unix ms) comes from after that: the host is back.
    pub fn back_by(&self, reported_ms: Option<u64>) -> bool {
        match (self.proof, self.confirmed_ms, reported_ms) {
            (Some(_), Some(c), Some(r)) => r > c,
            (Some(_), None, Some(_)) => true,
            _ => false,
        }
    }
}

/// The controller's own direct check of an agent, since its last report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    NotTried,
    Answered,
    Unreachable,
}

/// What the controller knows of one host at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sight {
    /// Time since its last report.
    pub silent_ms: u64,
    /// Unix ms of its last report, if any came.
    pub reported_ms: Option<u64>,
    pub probe: Probe,
    /// A guest on another host says a VM here stopped answering it.
    pub peer_lost: bool,
    /// The lease after which its agent fences itself when cut off (`None`:
    /// it does not).
    pub self_fence_ms: Option<u64>,
    pub fence: Option<HostFence>,
    /// Its last report lists VMs.
    pub holds_vms: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Alive,
    /// Ask the agent directly, now.
    Probe,
    /// Gone but not yet safe: fence it (run the device, or wait out the lease).
    Gone,
    /// Gone and unable to serve.
    Fenced(Proof),
    /// Back after a confirmed fence; `clean`: it holds no VM any more.
    Returned {
        clean: bool,
    },
}

pub fn fate(s: &Sight, t: &Timing) -> Fate {
    let proof = s.fence.and_then(|f| f.proof);
    let lost = s.silent_ms > t.suspect_after_ms || s.probe == Probe::Unreachable;
    let back = s.fence.is_some_and(|f| f.back_by(s.reported_ms));
    if !lost {
        return match proof {
            // A report sent before the fence is no sign of life.
            Some(p) if !back => Fate::Fenced(p),
            Some(_) => Fate::Returned {
                clean: !s.holds_vms,
            },
            None if s.peer_lost && s.probe == Probe::NotTried => Fate::Probe,
            None => Fate::Alive,
        };
    }
    if let Some(p) = proof {
        return Fate::Fenced(p);
    }
    let lease_over = s
        .self_fence_ms
        .is_some_and(|l| s.silent_ms >= l.saturating_add(t.self_fence_margin_ms));
    if lease_over {
        Fate::Fenced(Proof::Lease)
    } else {
        Fate::Gone
    }
}

/// Whether a host counts as live for its VMs: it reports within the
/// limit, and, if marked failed, only once fenced and reporting since (its
/// VMs are then stale, to be destroyed, not kept). One rule for every
/// shell that asks (reconciler, failover, autoheal's choice of host).
pub fn live(h: &Host, silent_ms: Option<u64>, reported_ms: Option<u64>, t: &Timing) -> bool {
    let fresh = silent_ms.is_some_and(|s| s <= t.suspect_after_ms);
    let back = h.fence.is_some_and(|f| f.back_by(reported_ms));
    fresh && (h.state != HostState::Failed || back)
}

/// The answer to a report whose agent was silent `silent_before_ms` before
/// it: whether the controller holds the host fenced, so the agent keeps
/// its own fence. Yes if a fence is proven, and also if the agent was
/// silent for its whole lease: the controller may be proving the fence by
/// that lease at this very moment (and promoting in its place), so the
/// agent must not lift its fence on this answer; the next one, if nothing
/// was proven, lets it.
pub fn held_fenced(
    fence: Option<HostFence>,
    silent_before_ms: u64,
    self_fence_ms: Option<u64>,
) -> bool {
    fence.is_some_and(|f| f.proof.is_some()) || self_fence_ms.is_some_and(|l| silent_before_ms >= l)
}

/// What [`apply`] changed on a host's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    /// Marked failed; a fence is decided.
    Failed,
    Confirmed(Proof),
    /// It reported again before the fence was confirmed: called off.
    CalledOff,
    /// Back in the state it had before.
    Restored,
}

fn fail(h: &mut Host, now_ms: u64) {
    if h.state != HostState::Failed {
        h.before_failure = Some(h.state);
        h.state = HostState::Failed;
    }
    if h.fence.is_none() {
        h.fence = Some(HostFence {
            decided_ms: now_ms,
            proof: None,
            confirmed_ms: None,
        });
    }
}

fn restore(h: &mut Host) {
    h.fence = None;
    if h.state == HostState::Failed {
        h.state = h.before_failure.take().unwrap_or(HostState::Ready);
    }
    h.before_failure = None;
}

/// Writes `fate` on the host's record.
pub fn apply(h: &mut Host, fate: Fate, now_ms: u64) -> Change {
    let had = (h.state, h.fence);
    match fate {
        Fate::Probe => return Change::None,
        Fate::Gone => {
            fail(h, now_ms);
            return if had.0 == HostState::Failed && had.1.is_some() {
                Change::None
            } else {
                Change::Failed
            };
        }
        Fate::Fenced(p) => {
            fail(h, now_ms);
            let before = had.1.and_then(|f| f.proof);
            if let Some(f) = h.fence.as_mut() {
                if f.proof.is_none() {
                    (f.proof, f.confirmed_ms) = (Some(p), Some(now_ms));
                }
            }
            return if before.is_some() {
                Change::None
            } else {
                Change::Confirmed(p)
            };
        }
        Fate::Returned { clean: false } => return Change::None,
        Fate::Returned { clean: true } | Fate::Alive => {}
    }
    match had {
        (_, Some(f)) if f.proof.is_none() => {
            restore(h);
            Change::CalledOff
        }
        (HostState::Failed, _) | (_, Some(_)) => {
            restore(h);
            Change::Restored
        }
        _ => Change::None,
    }
}

#[cfg(test)]
mod tests;
