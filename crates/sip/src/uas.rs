//! The pure core of the SIP service: datagram in, datagrams and state
//! updates out. No sockets, no clock (`now` is passed in, in milliseconds),
//! no randomness but a seeded PRNG for tags.
//!
//! # Replication and the ordering rule
//!
//! Every change to a dialog is described by a [`SyncOp`] in
//! [`Output::sync`]: `Put` when a 200 OK to an INVITE creates (or a
//! re-INVITE refreshes) a dialog and when its ACK confirms it, `Del` when a
//! BYE ends it or its 2xx is never ACKed. The key is
//! `dialog/<call-id>/<local-tag>/<remote-tag>`; the value is the
//! [`Dialog`] as JSON, which holds the 200 OK bytes, the INVITE transaction
//! key and the remote CSeq: enough for the other VM to answer a
//! retransmitted INVITE with the identical 200 OK, take the ACK, and answer a
//! later BYE with 200 OK.
//!
//! Sync ops are numbered in the order this `Uas` issues them, across
//! outputs, from 1 ([`SyncSeq`]). A [`Reply`] with `after_sync: Some(n)`
//! must not be sent before the middleware answered op `n` (its answers come
//! in order, so that means every op up to `n`). The 200 OK to an INVITE
//! waits for its dialog's `Put` (and so does any retransmission of it while
//! the `Put` is unanswered), the 200 OK to a BYE for its `Del`: what a
//! client was told before a switchover is on the other VM. So do the
//! 100 Trying and 180 Ringing of a new call: a provisional answer stops the
//! client's INVITE retransmissions (RFC 3261 §17.1.1.2), so sent before the
//! `Put` it would leave the client waiting, after a switchover, for a final
//! answer from a VM that never saw its INVITE. Answers that change nothing
//! are sent at once. The shell
//! sends the sync ops in order and holds replies accordingly; without
//! replication it may treat every op as answered at once.
//!
//! On the standby, [`Uas::apply`] installs replicated dialogs (and, for one
//! whose ACK is still awaited, the INVITE transaction that retransmits its
//! 2xx); [`Uas::load`] does the same from a full dump.

use crate::dialog::{self, Dialog, DialogId, DialogValueError, Dialogs, InviteRecord, Route};
use crate::message::{self, Header, Message, Method, ParseError, StartLine};
use crate::rng::SplitMix64;
use crate::transaction::{Reply, SyncSeq, Transactions, TxKey, LINGER};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;

/// A replicated state change (protocol in docs/conventions.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOp {
    Put {
        key: String,
        value: Value,
    },
    /// `reply`: the answer the client is owed once the change is stored
    /// (a BYE's 200 OK), carried with it so that the VM that takes the
    /// change late, the new ACT, sends it ([`Uas::take_over`]).
    Del {
        key: String,
        reply: Option<Owed>,
    },
}

impl SyncOp {
    pub fn key(&self) -> &str {
        match self {
            SyncOp::Put { key, .. } | SyncOp::Del { key, .. } => key,
        }
    }

    /// A `Del` that owes nothing.
    pub fn del(key: impl Into<String>) -> SyncOp {
        SyncOp::Del {
            key: key.into(),
            reply: None,
        }
    }
}

/// A reply a client is owed, and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owed {
    pub to: SocketAddr,
    pub data: Vec<u8>,
}

/// Result of one [`Uas::handle`] or [`Uas::tick`].
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Output {
    pub replies: Vec<Reply>,
    /// To replicate, in order; numbered on from the previous output's.
    pub sync: Vec<SyncOp>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// New and retransmitted requests, by method (unknown ones as `OTHER`).
    pub requests: BTreeMap<String, u64>,
    /// Responses produced (not counting retransmissions), by code.
    pub responses: BTreeMap<u16, u64>,
    /// Retransmitted requests answered from a transaction or dialog
    /// (including ACK copies), without new processing.
    pub retransmissions_absorbed: u64,
    /// Timer-driven response retransmissions (INVITE 2xx until ACK).
    pub responses_retransmitted: u64,
    /// Unparseable datagrams that could not be answered.
    pub malformed_dropped: u64,
    /// 400 Bad Request sent for malformed but answerable requests.
    pub bad_requests_sent: u64,
    /// Empty / CRLF-only datagrams.
    pub keepalives: u64,
    /// Responses received (a UAS sends no requests).
    pub responses_ignored: u64,
    /// ACKs matching neither a transaction nor a dialog.
    pub acks_unmatched: u64,
    /// Dialogs dropped because their 2xx was never ACKed.
    pub ack_timeouts: u64,
    /// Replicated entries that could not be applied.
    pub sync_rejected: u64,
    /// Dialogs dropped because their `Put` was refused (see [`Uas::forget`]).
    pub unstored_forgotten: u64,
    /// 2xx sent at once for a dialog or a BYE taken over from the old ACT
    /// ([`Uas::take_over`]).
    pub taken_over_answered: u64,
    /// BYEs of a dialog already ended (e.g. by the peer just before a
    /// handover) answered 200 again instead of 481.
    pub bye_after_end: u64,
    /// Dialogs taken over from the old ACT that this VM already answered
    /// anew (the INVITE's retransmission reached it first): dropped.
    pub taken_over_superseded: u64,
}

#[derive(Debug, Clone)]
pub struct UasConfig {
    /// Listening address; Contact uses it (or, if unspecified, the address
    /// the request was sent to, from its Request-URI).
    pub local: SocketAddr,
    /// Seed of the tag generator: give each process a different one.
    pub seed: u64,
    /// INVITEs beyond this many dialogs get 503.
    pub max_dialogs: usize,
    /// New requests beyond this many live transactions get a 503 that is
    /// not kept (bounds memory under a flood; each lives 32 s).
    pub max_transactions: usize,
}

impl UasConfig {
    pub fn new(local: SocketAddr, seed: u64) -> UasConfig {
        UasConfig {
            local,
            seed,
            max_dialogs: 100_000,
            max_transactions: 200_000,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub loaded: usize,
    pub rejected: usize,
}

pub struct Uas {
    cfg: UasConfig,
    dialogs: Dialogs,
    txs: Transactions,
    rng: SplitMix64,
    counters: Counters,
    /// Latest `now` seen (used to arm timers of applied state).
    clock: u64,
    /// Dialogs ended by a BYE (here, or on the peer and replicated), until
    /// when: a retransmission of that BYE gets 200 again, not 481 — its
    /// first 200 may have been lost when the ACT handed over.
    ended: BTreeMap<String, u64>,
    issued: u64,
}

const SERVER: &str = concat!("duplex-sip/", env!("CARGO_PKG_VERSION"));

impl Uas {
    pub fn new(cfg: UasConfig) -> Uas {
        let rng = SplitMix64::new(cfg.seed);
        Uas {
            cfg,
            dialogs: Dialogs::default(),
            txs: Transactions::default(),
            rng,
            counters: Counters::default(),
            clock: 0,
            issued: 0,
            ended: BTreeMap::new(),
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn dialogs(&self) -> &Dialogs {
        &self.dialogs
    }

    pub fn transactions(&self) -> &Transactions {
        &self.txs
    }

    /// Number of the last sync op issued (0: none yet).
    pub fn sync_issued(&self) -> SyncSeq {
        SyncSeq(self.issued)
    }

    fn emit(&mut self, out: &mut Output, op: SyncOp) -> SyncSeq {
        self.issued += 1;
        out.sync.push(op);
        SyncSeq(self.issued)
    }

    fn new_tag(&mut self) -> String {
        format!("{:016x}", self.rng.next_u64())
    }

    fn contact(&self, uri: &str) -> String {
        let hostport = match self.cfg.local.ip().is_unspecified() {
            true => message::uri_hostport(uri).map(str::to_string),
            false => None,
        };
        format!(
            "<sip:duplex@{}>",
            hostport.unwrap_or_else(|| self.cfg.local.to_string())
        )
    }

    fn count_response(&mut self, code: u16) {
        *self.counters.responses.entry(code).or_default() += 1;
    }

    /// One datagram from `from` at `now` (ms).
    pub fn handle(&mut self, datagram: &[u8], from: SocketAddr, now: u64) -> Output {
        self.clock = self.clock.max(now);
        let mut out = Output::default();
        let msg = match message::parse(datagram) {
            Ok(m) => m,
            Err(ParseError::Empty) => {
                self.counters.keepalives += 1;
                return out;
            }
            Err(e) => {
                self.malformed(datagram, from, &e, &mut out);
                return out;
            }
        };
        let Some(method) = msg.method().cloned() else {
            self.counters.responses_ignored += 1;
            return out;
        };
        // Unknown methods share one counter: the map stays small whatever arrives.
        let name = match &method {
            Method::Other(_) => "OTHER",
            m => m.as_str(),
        };
        *self.counters.requests.entry(name.to_string()).or_default() += 1;
        if let Err(e) = self.request(&msg, method, from, now, &mut out) {
            // Cannot happen after parse() validated the message; answer as malformed anyway.
            self.malformed(datagram, from, &e, &mut out);
        }
        out
    }

    fn request(
        &mut self,
        msg: &Message,
        method: Method,
        from: SocketAddr,
        now: u64,
        out: &mut Output,
    ) -> Result<(), ParseError> {
        let key = TxKey::for_request(msg)?;
        if method == Method::Ack {
            return self.ack(msg, &key, now, out);
        }
        if let Some(reply) = self.txs.retransmission(&key) {
            self.counters.retransmissions_absorbed += 1;
            out.replies.push(Reply { to: from, ..reply });
            return Ok(());
        }
        if method == Method::Invite {
            // A copy of the INVITE of a dialog replicated from the peer (or
            // whose transaction is gone): the same 200 OK again.
            if let Some(d) = self.dialogs.by_invite(&key) {
                let reply = Reply {
                    to: from,
                    data: d.invite.response.clone().into_bytes(),
                    after_sync: d.pending,
                };
                self.counters.retransmissions_absorbed += 1;
                out.replies.push(reply);
                return Ok(());
            }
        }
        let uri = match &msg.start {
            StartLine::Request { uri, .. } => uri.as_str(),
            StartLine::Response { .. } => "",
        };
        let server = Header::new("Server", SERVER);
        if self.txs.len() >= self.cfg.max_transactions {
            let tag = self.new_tag();
            let r = message::response(
                &msg.headers,
                from,
                503,
                "Service Unavailable",
                Some(&tag),
                vec![server],
            );
            out.replies.push(Reply {
                to: from,
                data: r.to_bytes(),
                after_sync: None,
            });
            self.count_response(503);
            return Ok(());
        }
        let mut route = dialog::route(&self.dialogs, msg)?;
        if matches!(route, Route::Reject { code: 481, .. }) && msg.method() == Some(&Method::Bye) {
            if let Some(id) = DialogId::of_request(msg)? {
                if self.ended.contains_key(&id.key()) {
                    self.counters.bye_after_end += 1;
                    route = Route::Bye(id);
                }
            }
        }
        match route {
            Route::NewDialog if self.dialogs.len() >= self.cfg.max_dialogs => {
                self.final_response(
                    msg,
                    from,
                    key,
                    503,
                    "Service Unavailable",
                    None,
                    vec![server],
                    None,
                    now,
                    out,
                );
            }
            Route::NewDialog => {
                let tag = self.new_tag();
                let mut provisional = Vec::new();
                for (code, reason, tag) in
                    [(100, "Trying", None), (180, "Ringing", Some(tag.as_str()))]
                {
                    let r = message::response(
                        &msg.headers,
                        from,
                        code,
                        reason,
                        tag,
                        vec![server.clone()],
                    );
                    provisional.push(r.to_bytes());
                    self.count_response(code);
                }
                let d = Dialog {
                    call_id: msg.call_id()?.to_string(),
                    local_tag: tag,
                    remote_tag: msg.from_tag()?.unwrap_or_default(),
                    peer: from,
                    remote_cseq: 0,
                    confirmed: false,
                    invite: InviteRecord {
                        branch: String::new(),
                        sent_by: String::new(),
                        cseq: 0,
                        response: String::new(),
                    },
                    pending: None,
                };
                let first = out.replies.len();
                self.accept_invite(msg, from, key, d, uri, now, out)?;
                // A provisional answer ends the client's INVITE
                // retransmissions (RFC 3261 §17.1.1.2), so it promises as
                // much as the 200: it waits for the dialog's `Put` too.
                let after_sync = Some(self.sync_issued());
                let held = provisional.into_iter().map(|data| Reply {
                    to: from,
                    data,
                    after_sync,
                });
                out.replies.splice(first..first, held);
            }
            Route::ReInvite(id) => {
                if let Some(d) = self.dialogs.get(&id).cloned() {
                    self.accept_invite(msg, from, key, d, uri, now, out)?;
                }
            }
            Route::Bye(id) => {
                self.ended.insert(id.key(), now.saturating_add(LINGER));
                let removed = self.dialogs.remove_key(&id.key());
                let after = match removed {
                    Some(d) => {
                        // The UAC has the 2xx even if its ACK got lost.
                        self.txs.ack_2xx(&d.invite_key());
                        Some(self.emit(out, SyncOp::del(d.key())))
                    }
                    None => None,
                };
                self.final_response(
                    msg,
                    from,
                    key,
                    200,
                    "OK",
                    None,
                    vec![server],
                    after,
                    now,
                    out,
                );
                // The Del carries the 200: if the handover overtakes it,
                // the new ACT answers the BYE instead of its retransmission.
                if let (Some(_), Some(SyncOp::Del { reply, .. }), Some(r)) =
                    (after, out.sync.last_mut(), out.replies.last())
                {
                    *reply = Some(Owed {
                        to: r.to,
                        data: r.data.clone(),
                    });
                }
            }
            Route::Options => {
                let extra = vec![
                    Header::new("Allow", dialog::ALLOW),
                    Header::new("Accept", "application/sdp"),
                    server,
                ];
                self.final_response(msg, from, key, 200, "OK", None, extra, None, now, out);
            }
            Route::Cancel => {
                let invite = key.invite_of();
                let (code, reason) = match self.txs.contains(&invite) {
                    // Its final response is already out: nothing to cancel.
                    true => (200, "OK"),
                    false => (481, "Call/Transaction Does Not Exist"),
                };
                let tag = self.dialogs.by_invite(&invite).map(|d| d.local_tag.clone());
                self.final_response(
                    msg,
                    from,
                    key,
                    code,
                    reason,
                    tag,
                    vec![server],
                    None,
                    now,
                    out,
                );
            }
            Route::Reject { code, reason } => {
                let mut extra = vec![server];
                if code == 405 {
                    extra.push(Header::new("Allow", dialog::ALLOW));
                }
                self.final_response(msg, from, key, code, reason, None, extra, None, now, out);
            }
            Route::Ack => {}
        }
        Ok(())
    }

    /// 200 OK to an INVITE of dialog `d` (new or re-INVITE): the dialog
    /// records it and is replicated; the 200 waits for that `Put`.
    #[allow(clippy::too_many_arguments)]
    fn accept_invite(
        &mut self,
        msg: &Message,
        from: SocketAddr,
        key: TxKey,
        mut d: Dialog,
        uri: &str,
        now: u64,
        out: &mut Output,
    ) -> Result<(), ParseError> {
        let extra = vec![
            Header::new("Contact", self.contact(uri)),
            Header::new("Allow", dialog::ALLOW),
            Header::new("Server", SERVER),
        ];
        let ok =
            message::response(&msg.headers, from, 200, "OK", Some(&d.local_tag), extra).to_bytes();
        let text = String::from_utf8_lossy(&ok).into_owned();
        let cseq = msg.cseq()?.seq;
        d.peer = from;
        d.remote_cseq = d.remote_cseq.max(cseq);
        d.confirmed = false;
        d.invite = InviteRecord {
            branch: key.branch.clone(),
            sent_by: key.sent_by.clone(),
            cseq,
            response: text,
        };
        let seq = self.emit(
            out,
            SyncOp::Put {
                key: d.key(),
                value: d.to_value(),
            },
        );
        let data = d.invite.response.clone().into_bytes();
        d.pending = Some(seq);
        self.dialogs.insert(d);
        let reply = Reply {
            to: from,
            data,
            after_sync: Some(seq),
        };
        self.txs.complete(key, 200, reply.clone(), now);
        self.count_response(200);
        out.replies.push(reply);
        Ok(())
    }

    /// A final response that ends a new transaction (kept for retransmissions).
    #[allow(clippy::too_many_arguments)]
    fn final_response(
        &mut self,
        msg: &Message,
        from: SocketAddr,
        key: TxKey,
        code: u16,
        reason: &str,
        tag: Option<String>,
        extra: Vec<Header>,
        after_sync: Option<SyncSeq>,
        now: u64,
        out: &mut Output,
    ) {
        let tag = match msg.to_tag() {
            Ok(Some(_)) => None,
            _ => Some(tag.unwrap_or_else(|| self.new_tag())),
        };
        let r = message::response(&msg.headers, from, code, reason, tag.as_deref(), extra);
        let reply = Reply {
            to: from,
            data: r.to_bytes(),
            after_sync,
        };
        self.txs.complete(key, code, reply.clone(), now);
        self.count_response(code);
        out.replies.push(reply);
    }

    fn ack(
        &mut self,
        msg: &Message,
        key: &TxKey,
        now: u64,
        out: &mut Output,
    ) -> Result<(), ParseError> {
        if self.txs.ack_non_2xx(key, now) {
            return Ok(());
        }
        let Some(id) = DialogId::of_request(msg)? else {
            self.counters.acks_unmatched += 1;
            return Ok(());
        };
        let cseq = msg.cseq()?.seq;
        let confirmed = match self.dialogs.get_mut(&id) {
            None => {
                self.counters.acks_unmatched += 1;
                return Ok(());
            }
            Some(d) if d.confirmed || d.invite.cseq != cseq => None,
            Some(d) => {
                d.confirmed = true;
                Some((d.invite_key(), d.key(), d.to_value()))
            }
        };
        match confirmed {
            Some((invite, key, value)) => {
                self.txs.ack_2xx(&invite);
                self.emit(out, SyncOp::Put { key, value });
            }
            None => self.counters.retransmissions_absorbed += 1,
        }
        Ok(())
    }

    fn malformed(&mut self, datagram: &[u8], from: SocketAddr, err: &ParseError, out: &mut Output) {
        match message::salvage(datagram) {
            Some(s) if s.method != Method::Ack => {
                let warning: String = err
                    .to_string()
                    .chars()
                    .map(|c| {
                        if c == '"' || c == '\\' || c.is_control() {
                            '\''
                        } else {
                            c
                        }
                    })
                    .take(120)
                    .collect();
                let extra = vec![
                    Header::new("Warning", format!("399 duplex \"{warning}\"")),
                    Header::new("Server", SERVER),
                ];
                let tag = self.new_tag();
                let r = message::response(&s.headers, from, 400, "Bad Request", Some(&tag), extra);
                out.replies.push(Reply {
                    to: from,
                    data: r.to_bytes(),
                    after_sync: None,
                });
                self.counters.bad_requests_sent += 1;
                self.count_response(400);
            }
            _ => self.counters.malformed_dropped += 1,
        }
    }

    /// Timers at `now`: 2xx retransmissions, expiry, ACK timeouts.
    pub fn tick(&mut self, now: u64) -> Output {
        self.clock = self.clock.max(now);
        let mut out = Output::default();
        self.ended.retain(|_, until| *until > now);
        let due = self.txs.tick(now);
        self.counters.responses_retransmitted += due.retransmits.len() as u64;
        out.replies = due.retransmits;
        for invite in due.ack_timeouts {
            let key = match self.dialogs.by_invite(&invite) {
                Some(d) if !d.confirmed => d.key(),
                _ => continue,
            };
            self.dialogs.remove_key(&key);
            self.counters.ack_timeouts += 1;
            self.emit(&mut out, SyncOp::del(key));
        }
        out
    }

    /// [`Uas::apply`] at `now`: a dialog still awaiting its ACK gets its
    /// first 2xx retransmission T1 after now, not after the last tick (the
    /// standby's clock may be that old). Its ACK, confirming it, is on its
    /// way; a retransmission due at once would meet it the moment this VM
    /// takes over.
    pub fn apply_at(&mut self, op: SyncOp, now: u64) -> Result<(), DialogValueError> {
        self.clock = self.clock.max(now);
        self.apply(op)
    }

    /// Applies a replicated change (the standby path). A `Del` of an
    /// unknown key is fine; a `Put` that is not a dialog is refused.
    pub fn apply(&mut self, op: SyncOp) -> Result<(), DialogValueError> {
        match op {
            SyncOp::Put { key, value } => {
                let d = match Dialog::from_entry(&key, value) {
                    Ok(d) => d,
                    Err(e) => {
                        self.counters.sync_rejected += 1;
                        return Err(e);
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
    pub fn take_over(&mut self, op: SyncOp) -> Result<Output, DialogValueError> {
        if let SyncOp::Put { key, value } = &op {
            let d = Dialog::from_entry(key, value.clone())?;
            if self
                .dialogs
                .by_invite(&d.invite_key())
                .is_some_and(|own| own.key() != *key)
            {
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

    /// Drops a dialog this VM created but could not store (`Put` number
    /// `seq` was refused: this VM is no longer ACT), with the INVITE
    /// transaction that would retransmit its 2xx: the VM that is ACT now
    /// answers the client's retransmitted INVITE instead. Only if that
    /// `Put` is the one that created it (or answered its re-INVITE): a
    /// refused confirmation, or a dialog put again after a reconnection
    /// (on the SBY, one replicated here just before an older dump), stays
    /// as it is held — the ACT has it.
    pub fn forget(&mut self, key: &str, seq: SyncSeq) {
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
            .collect();
        for (key, value) in missing {
            self.emit(&mut out, SyncOp::Put { key, value });
        }
        out
    }
}
