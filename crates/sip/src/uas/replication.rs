//! The standby's side of replication and the handover: replicated
//! changes applied, a late change taken over from the old ACT, a refused
//! change forgotten, a full dump loaded, and what a reconnected VM puts
//! again.

use super::{EntryError, LoadReport, Output, SyncOp, Uas};
use crate::dialog::{self, Dialog};
use crate::message::{Method, StartLine};
use crate::registrar;
use crate::transaction::{Reply, SyncSeq, TxKey, LINGER};
use serde_json::Value;
use std::collections::HashSet;

impl Uas {
    /// [`Uas::apply`] at `now`: a dialog still awaiting its ACK gets its
    /// first 2xx retransmission T1 after now, not after the last tick (the
    /// standby's clock may be that old). Its ACK, confirming it, is on its
    /// way; a retransmission due at once would meet it the moment this VM
    /// takes over.
    pub fn apply_at(&mut self, op: SyncOp, now: u64) -> Result<(), EntryError> {
        self.clock = self.clock.max(now);
        self.apply(op)
    }

    /// Applies a replicated change (the standby path). A `Del` of an
    /// unknown key is fine; a `Put` that is neither a dialog nor bindings
    /// is refused.
    pub fn apply(&mut self, op: SyncOp) -> Result<(), EntryError> {
        match op {
            SyncOp::Put { key, value } if key.starts_with(registrar::KEY_PREFIX) => {
                if let Err(e) = self.registrar.apply_put(&key, value) {
                    self.counters.sync_rejected += 1;
                    return Err(e.into());
                }
            }
            SyncOp::Del { key, .. } if key.starts_with(registrar::KEY_PREFIX) => {
                self.registrar.apply_del(&key);
            }
            SyncOp::Put { key, value } => {
                let d = match Dialog::from_entry(&key, value) {
                    Ok(d) => d,
                    Err(e) => {
                        self.counters.sync_rejected += 1;
                        return Err(e.into());
                    }
                };
                if d.confirmed {
                    self.txs.ack_2xx(&d.invite_key());
                } else {
                    self.txs
                        .restore_accepted(d.invite_key(), d.replicated_2xx(), self.clock);
                }
                self.dialogs.insert(d);
            }
            SyncOp::Del { key, .. } => {
                if let Some(d) = self.dialogs.remove_key(&key) {
                    self.txs.ack_2xx(&d.invite_key());
                }
                self.ended.insert(key, self.clock.saturating_add(LINGER));
            }
        }
        Ok(())
    }

    /// Takes over a change the old ACT's service made just after a
    /// handover (the middleware stored and replicated it here, and the old
    /// service withheld its answer): applied as [`Uas::apply`] does, and a
    /// dialog whose 2xx awaits its ACK gets that 2xx sent now, not at the
    /// first retransmission, and a `Del` the reply it carries (the BYE's
    /// 200 OK; a retransmitted BYE is answered from the ended dialog).
    ///
    /// A dialog for an INVITE this VM already answers with a dialog of its
    /// own (the client retransmitted the INVITE and it reached this VM
    /// before the old ACT's `Put` did; the old ACT never answered) is not
    /// installed: its record is deleted, so the client hears one answer.
    pub fn take_over(&mut self, op: SyncOp) -> Result<Output, EntryError> {
        let dialog_put = match &op {
            SyncOp::Put { key, value } if key.starts_with(dialog::KEY_PREFIX) => Some((key, value)),
            _ => None,
        };
        if let Some((key, value)) = dialog_put {
            let d = Dialog::from_entry(key, value.clone())?;
            if self.answered_otherwise(&d.invite_key(), &d.local_tag) {
                self.counters.taken_over_superseded += 1;
                let mut out = Output::default();
                self.emit(&mut out, SyncOp::del(key.clone()));
                return Ok(out);
            }
        }
        let (pending, owed) = match &op {
            SyncOp::Put { key, .. } => (Some(key.clone()), None),
            SyncOp::Del { reply, .. } => (None, reply.clone()),
        };
        self.apply(op)?;
        let mut out = Output::default();
        if let Some(o) = owed {
            out.replies.push(Reply {
                to: o.to,
                data: o.data,
                after_sync: None,
            });
            self.counters.taken_over_answered += 1;
        }
        if let Some(d) = pending.and_then(|k| self.dialogs.get_key(&k)) {
            if !d.confirmed {
                out.replies.push(d.replicated_2xx());
                self.counters.taken_over_answered += 1;
            }
        }
        Ok(out)
    }

    /// Whether a reply the old ACT could not send (its address moved here
    /// while the reply waited for its write; the middleware handed it on)
    /// goes out from this VM. Not a 2xx to an INVITE this VM answers with
    /// a dialog of its own: the old ACT's dialog was superseded here
    /// ([`Uas::take_over`]), and a client that took its To tag would send
    /// its ACK and BYE to a dialog nobody holds (seen in the lab: a BYE
    /// answered 481 after an S1 switchover under load). The client hears
    /// this VM's 2xx when it retransmits the INVITE. Anything else, or
    /// what cannot be read, goes out as it came.
    pub fn sends_handed_on(&mut self, data: &[u8]) -> bool {
        let Ok(msg) = crate::message::parse(data) else {
            return true;
        };
        let ok_to_invite = matches!(
            msg.start,
            StartLine::Response {
                code: 200..=299,
                ..
            }
        ) && msg.cseq().is_ok_and(|c| c.method == Method::Invite);
        if !ok_to_invite {
            return true;
        }
        let (Ok(key), Ok(Some(tag))) = (TxKey::for_request(&msg), msg.to_tag()) else {
            return true;
        };
        if self.answered_otherwise(&key, &tag) {
            self.counters.handed_on_superseded += 1;
            return false;
        }
        true
    }

    /// Whether this VM answers `invite` with a dialog of its own, not the
    /// one tagged `local_tag` (the old ACT's): the old one is superseded
    /// here, whether its record ([`Uas::take_over`]) or its 2xx
    /// ([`Uas::sends_handed_on`]) arrives.
    fn answered_otherwise(&self, invite: &TxKey, local_tag: &str) -> bool {
        self.dialogs
            .by_invite(invite)
            .is_some_and(|own| own.local_tag != local_tag)
    }

    /// Drops a dialog this VM created but could not store (`Put` number
    /// `seq` was refused: this VM is no longer ACT), with the INVITE
    /// transaction that would retransmit its 2xx: the VM that is ACT now
    /// answers the client's retransmitted INVITE instead. Only if that
    /// `Put` is the one that created it (or answered its re-INVITE): a
    /// refused confirmation, or a dialog put again after a reconnection
    /// (on the SBY, one replicated here just before an older dump), stays
    /// as it is held — the ACT has it.
    ///
    /// A refused write of bindings is undone: the address-of-record's
    /// bindings are as before it (the client was told nothing).
    pub fn forget(&mut self, key: &str, seq: SyncSeq) {
        if key.starts_with(registrar::KEY_PREFIX) {
            if self.registrar.refused(seq.0) {
                self.counters.unstored_forgotten += 1;
            }
            return;
        }
        let created = self
            .dialogs
            .get_key(key)
            .is_some_and(|d| d.pending == Some(seq));
        if !created {
            return;
        }
        if let Some(d) = self.dialogs.remove_key(key) {
            self.txs.forget(&d.invite_key());
            self.counters.unstored_forgotten += 1;
        }
    }

    /// Every write up to number `upto` is answered (stored or not):
    /// none of them is undone any more.
    pub fn stored(&mut self, upto: SyncSeq) {
        self.registrar.stored(upto.0);
    }

    /// Merges a full dump (`get_all`): every entry is applied as a `Put`.
    pub fn load(&mut self, entries: impl IntoIterator<Item = (String, Value)>) -> LoadReport {
        let mut report = LoadReport::default();
        for (key, value) in entries {
            match self.apply(SyncOp::Put { key, value }) {
                Ok(()) => report.loaded += 1,
                Err(_) => report.rejected += 1,
            }
        }
        report
    }

    /// `Put`s for the local dialogs missing from a dump (after the
    /// middleware connection was re-established).
    pub fn resync(&mut self, present: &HashSet<String>) -> Output {
        let mut out = Output::default();
        let missing: Vec<(String, Value)> = self
            .dialogs
            .iter()
            .filter(|d| !present.contains(&d.key()))
            .map(|d| (d.key(), d.to_value()))
            .chain(
                self.registrar
                    .entries()
                    .filter(|b| !present.contains(&b.key()))
                    .map(|b| (b.key(), serde_json::to_value(b).unwrap_or(Value::Null))),
            )
            .collect();
        for (key, value) in missing {
            self.emit(&mut out, SyncOp::Put { key, value });
        }
        out
    }
}
