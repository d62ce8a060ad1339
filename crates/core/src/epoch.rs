//! S2's epoch protocol on the primary (pure): when to take a checkpoint,
//! when an epoch commits, and what to do when the backup stops answering.
//! Time comes in as an argument (milliseconds on any monotonic clock).
//!
//! ```text
//!   epoch n runs ──► Capture{n}: pause, close epoch n in the transmit
//!                    buffer (frames after it belong to n+1), capture the
//!                    device state and the pages changed since n-1, resume,
//!                    send to the backup
//!   ack of n    ──► Commit{n}: frames of epochs <= n leave
//! ```
//!
//! The commit rule: a frame the VM sent before checkpoint n's pause depends
//! at most on the state checkpoint n holds, so it may leave once the backup
//! has applied n (acknowledged). A frame labelled with a later epoch than
//! the one that produced it only waits longer, so the element closes the
//! epoch while the VM is paused and frames still on their way from QEMU
//! count towards the next one.
//!
//! Modes:
//! - `Running`: checkpoints every `period`, at most `max_in_flight`
//!   unacknowledged; a slow backup stretches the epoch, never skips one.
//! - `Stalled`: the oldest checkpoint is unacknowledged for `ack_timeout`.
//!   No new checkpoints; held output stays held (the transmit buffer drops
//!   beyond its bound, as a congested link would). The primary never
//!   releases uncommitted output on its own: the backup may only be cut off
//!   and about to take over. A late ack resumes `Running`.
//! - A handoff (S5, a site switch): the next checkpoint is the last; the
//!   VM stays paused after it, and once the backup acknowledges it the
//!   backup holds exactly the VM's state: it may run it. Cancelled, the
//!   epochs go on (the shell resumes the VM).
//! - `Unprotected`: the controller decided the backup will not take over
//!   (it is gone) and said so in the store first; everything held leaves,
//!   no checkpoints, until replication starts again with a new backup.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Longest epoch an operator may ask for.
pub const MAX_PERIOD_MS: u64 = 10_000;
/// Shortest epoch (below it the pause dominates the guest's run time).
pub const MIN_PERIOD_MS: u64 = 10;
/// Most checkpoints sent and not yet acknowledged.
pub const MAX_IN_FLIGHT: usize = 2;
/// Stalled this long on a host that still reports, the epochs start over
/// towards a new replica (longer than a host takes to be found gone, so a
/// dying primary is fenced, and its replica activated, first).
pub const RESYNC_AFTER_MS: u64 = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochConfig {
    pub period_ms: u64,
    /// An unacknowledged checkpoint older than this stalls the epochs.
    pub ack_timeout_ms: u64,
}

impl Default for EpochConfig {
    fn default() -> Self {
        EpochConfig {
            period_ms: 100,
            ack_timeout_ms: 1_000,
        }
    }
}

impl EpochConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(MIN_PERIOD_MS..=MAX_PERIOD_MS).contains(&self.period_ms) {
            return Err(format!(
                "epoch period {} ms is outside {MIN_PERIOD_MS}..={MAX_PERIOD_MS}",
                self.period_ms
            ));
        }
        if self.ack_timeout_ms < self.period_ms {
            return Err(format!(
                "ack timeout {} ms is shorter than the epoch ({} ms)",
                self.ack_timeout_ms, self.period_ms
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Mode {
    Running,
    Stalled { since_ms: u64 },
    Unprotected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Time passed.
    Tick,
    /// Checkpoint `epoch` was taken and sent (the VM runs again).
    Captured { epoch: u64 },
    /// Taking or sending it failed; the VM runs again, nothing was sent.
    CaptureFailed { epoch: u64 },
    /// The backup applied checkpoint `epoch`.
    Acked { epoch: u64 },
    /// The controller's order: the backup is gone, run unprotected.
    Unprotect,
    /// Hand the VM over to the backup: one last checkpoint, then none.
    Handoff,
    /// The handoff is called off: checkpoints go on.
    CancelHandoff,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Pause, close `epoch` in the transmit buffer, capture, resume, send.
    Capture { epoch: u64 },
    /// Release held output of epochs up to `epoch`.
    Commit { epoch: u64 },
    /// The backup stopped answering: tell the controller.
    Stalled { epoch: u64 },
    /// Release everything held and stop holding.
    ReleaseAll,
    /// As `Capture`, but the VM stays paused: the last checkpoint.
    FinalCapture { epoch: u64 },
    /// The backup applied the last checkpoint: it holds the VM's state.
    HandedOff { epoch: u64 },
}

/// Where a handoff stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "handoff", rename_all = "snake_case")]
pub enum Handoff {
    None,
    /// The last checkpoint is to be taken.
    Wanted,
    /// It was sent: its acknowledgement hands the VM over.
    Sent {
        epoch: u64,
    },
    Done {
        epoch: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Primary {
    pub cfg: EpochConfig,
    pub mode: Mode,
    /// The epoch the next checkpoint closes (the first is 1).
    pub next: u64,
    /// The newest epoch the backup applied (0: none yet; it cannot take
    /// over).
    pub committed: u64,
    /// Sent, unacknowledged, oldest first: (epoch, when captured).
    pub in_flight: VecDeque<(u64, u64)>,
    /// A capture is under way.
    pub capturing: bool,
    pub last_capture_ms: Option<u64>,
    pub handoff: Handoff,
}

impl Primary {
    pub fn new(cfg: EpochConfig) -> Self {
        Primary {
            cfg,
            mode: Mode::Running,
            next: 1,
            committed: 0,
            in_flight: VecDeque::new(),
            capturing: false,
            last_capture_ms: None,
            handoff: Handoff::None,
        }
    }

    /// Epochs towards a backup that already holds the VM's consistent
    /// state as of `epoch` (S5: the side the VM just left): the next
    /// checkpoint is `epoch + 1`, with the pages changed since.
    pub fn starting_after(cfg: EpochConfig, epoch: u64) -> Self {
        Primary {
            next: epoch.saturating_add(1),
            committed: epoch,
            ..Primary::new(cfg)
        }
    }

    /// Whether output is being held at all (from the first capture until
    /// the controller says unprotected).
    pub fn holding(&self) -> bool {
        self.mode != Mode::Unprotected && (self.next > 1 || self.capturing)
    }

    pub fn step(mut self, event: Event, now_ms: u64) -> (Primary, Vec<Effect>) {
        let mut fx = Vec::new();
        match event {
            Event::Tick => {}
            Event::Captured { epoch } if self.capturing && epoch == self.next => {
                self.capturing = false;
                self.in_flight.push_back((epoch, now_ms));
                self.next += 1;
                if self.handoff == Handoff::Wanted {
                    self.handoff = Handoff::Sent { epoch };
                }
            }
            Event::CaptureFailed { epoch } if self.capturing && epoch == self.next => {
                // The epoch stays open; its output waits for the next try.
                self.capturing = false;
            }
            Event::Acked { epoch } => self.on_ack(epoch, &mut fx),
            Event::Unprotect if self.mode != Mode::Unprotected => {
                self.mode = Mode::Unprotected;
                self.in_flight.clear();
                fx.push(Effect::ReleaseAll);
            }
            Event::Handoff if self.mode != Mode::Unprotected && self.handoff == Handoff::None => {
                self.handoff = Handoff::Wanted;
                // Taken at once, not at the end of the epoch.
                self.last_capture_ms = None;
            }
            Event::CancelHandoff => self.handoff = Handoff::None,
            // Stale or out-of-place: changes nothing.
            Event::Captured { .. }
            | Event::CaptureFailed { .. }
            | Event::Unprotect
            | Event::Handoff => {}
        }
        self.check_stall(now_ms, &mut fx);
        self.maybe_capture(now_ms, &mut fx);
        (self, fx)
    }

    fn on_ack(&mut self, epoch: u64, fx: &mut Vec<Effect>) {
        if self.mode == Mode::Unprotected {
            return;
        }
        // Acks come in order; one for a later epoch acknowledges the ones
        // before it too (the backup applies in order).
        if !self.in_flight.iter().any(|(e, _)| *e == epoch) {
            return;
        }
        while self.in_flight.front().is_some_and(|(e, _)| *e <= epoch) {
            self.in_flight.pop_front();
        }
        self.committed = epoch;
        fx.push(Effect::Commit { epoch });
        if let Handoff::Sent { epoch: last } = self.handoff {
            if epoch >= last {
                self.handoff = Handoff::Done { epoch: last };
                fx.push(Effect::HandedOff { epoch: last });
            }
        }
        if matches!(self.mode, Mode::Stalled { .. }) {
            self.mode = Mode::Running;
        }
    }

    fn check_stall(&mut self, now_ms: u64, fx: &mut Vec<Effect>) {
        if self.mode != Mode::Running {
            return;
        }
        if let Some((epoch, at)) = self.in_flight.front().copied() {
            if now_ms.saturating_sub(at) >= self.cfg.ack_timeout_ms {
                self.mode = Mode::Stalled { since_ms: now_ms };
                fx.push(Effect::Stalled { epoch });
            }
        }
    }

    fn maybe_capture(&mut self, now_ms: u64, fx: &mut Vec<Effect>) {
        let due = self
            .last_capture_ms
            .is_none_or(|at| now_ms.saturating_sub(at) >= self.cfg.period_ms);
        let wanted = matches!(self.handoff, Handoff::None | Handoff::Wanted);
        if self.mode == Mode::Running
            && wanted
            && !self.capturing
            && self.in_flight.len() < MAX_IN_FLIGHT
            && due
        {
            self.capturing = true;
            self.last_capture_ms = Some(now_ms);
            let epoch = self.next;
            fx.push(match self.handoff {
                Handoff::Wanted => Effect::FinalCapture { epoch },
                _ => Effect::Capture { epoch },
            });
        }
    }

    /// When the next tick can change something (the shell sleeps until
    /// then, or until an event).
    pub fn next_wake_ms(&self) -> Option<u64> {
        match self.mode {
            Mode::Running => {
                let capture = self.last_capture_ms.map_or(0, |at| at + self.cfg.period_ms);
                let stall = self
                    .in_flight
                    .front()
                    .map(|(_, at)| at + self.cfg.ack_timeout_ms);
                Some(stall.map_or(capture, |s| s.min(capture)))
            }
            Mode::Stalled { .. } | Mode::Unprotected => None,
        }
    }
}

#[cfg(test)]
#[path = "epoch_tests.rs"]
mod tests;
