//! The pure core of the SIP service: datagram in, datagrams and state
//! updates out. No sockets, no clock (`now` is passed in, in milliseconds),
//! no randomness but a seeded PRNG for tags.
//!
//! # Replication and the ordering rule
//!
//! Every change to a dialog is described by a [`SyncOp`] in
//! [`Output::sync`]: `Put` when a 200 OK to an INVITE creates (or a
//! re-INVITE or an UPDATE with an offer refreshes) a dialog and when its
//! ACK confirms it, `Del` when a BYE ends it or its 2xx is never ACKed; and
//! `Put`/`Del` of an address-of-record's bindings when a REGISTER changes
//! them ([`crate::registrar`], key `binding/<aor>`). The key is
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

mod replication;

use crate::dialog::{self, Dialog, DialogId, DialogValueError, Dialogs, InviteRecord, Route};
use crate::message::{self, Header, Message, Method, ParseError, StartLine};
use crate::methods::{self, Refusal};
use crate::registrar::{BindingValueError, Registrar};
use crate::rng::SplitMix64;
use crate::sdp;
use crate::transaction::{Reply, SyncSeq, Transactions, TxKey, LINGER};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// A replicated entry that cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error(transparent)]
    Dialog(#[from] DialogValueError),
    #[error(transparent)]
    Binding(#[from] BindingValueError),
}

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
    /// Dialogs dropped, and bindings put back as they were, because their
    /// write was refused (see [`Uas::forget`]).
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
    /// 2xx to an INVITE the old ACT could not send, not sent here: this
    /// VM answered that INVITE with a dialog of its own ([`Uas::sends_handed_on`]).
    pub handed_on_superseded: u64,
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
    /// Unix time (ms) at `now` = 0: registrations lapse by the wall clock,
    /// which both VMs of a pair share (`now` is each process's own).
    pub wall_base_ms: u64,
}

impl UasConfig {
    pub fn new(local: SocketAddr, seed: u64) -> UasConfig {
        UasConfig {
            local,
            seed,
            max_dialogs: 100_000,
            max_transactions: 200_000,
            wall_base_ms: 0,
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
    registrar: Registrar,
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
            registrar: Registrar::default(),
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

    pub fn registrar(&self) -> &Registrar {
        &self.registrar
    }

    /// Unix time (ms) at `now`.
    fn wall(&self, now: u64) -> u64 {
        self.cfg.wall_base_ms.saturating_add(now)
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
        // The method first (§8.2.1), then the extensions (§8.2.2.3).
        let required = match methods::refusal(&method) {
            None => methods::unsupported(msg),
            Some(_) => Vec::new(),
        };
        if !required.is_empty() {
            let extra = vec![Header::new("Unsupported", required.join(", ")), server];
            self.final_response(
                msg,
                from,
                key,
                420,
                "Bad Extension",
                None,
                extra,
                None,
                now,
                out,
            );
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
                let body = match self.description(msg, &tag, 1, uri) {
                    Ok(body) => body,
                    Err(r) => {
                        self.refuse(msg, from, key, r, now, out);
                        return Ok(());
                    }
                };
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
                    sdp_version: 0,
                    offer_pending: false,
                    update: None,
                    pending: None,
                };
                let first = out.replies.len();
                self.accept_invite(msg, from, key, d, uri, body, now, out)?;
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
                    // A refused offer leaves the session as it was (§14.2).
                    match self.description(msg, &d.local_tag, d.sdp_version + 1, uri) {
                        Ok(body) => self.accept_invite(msg, from, key, d, uri, body, now, out)?,
                        Err(r) => self.refuse(msg, from, key, r, now, out),
                    }
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
            Route::InDialog(_)
                if method == Method::Info && msg.header("Info-Package").is_some() =>
            {
                // No Info Package is offered in Recv-Info (RFC 6086 §4.2.2).
                let extra = vec![Header::new("Recv-Info", ""), server];
                let r = "Bad Info Package";
                self.final_response(msg, from, key, 469, r, None, extra, None, now, out);
            }
            Route::InDialog(id) if method == Method::Update && !msg.body.is_empty() => {
                self.update_session(msg, from, key, &id, uri, now, out)?;
            }
            Route::InDialog(id) => {
                let cseq = msg.cseq()?.seq;
                if let Some(d) = self.dialogs.get_mut(&id) {
                    d.remote_cseq = d.remote_cseq.max(cseq);
                }
                self.ok(msg, from, key, vec![server], now, out);
            }
            Route::Register => self.register(msg, from, key, now, out),
            Route::Accept => self.ok(msg, from, key, vec![server], now, out),
            Route::Options => {
                let extra = vec![
                    Header::new("Allow", methods::ALLOW),
                    Header::new("Accept", "application/sdp"),
                    server,
                ];
                self.ok(msg, from, key, extra, now, out);
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
                    extra.push(Header::new("Allow", methods::ALLOW));
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
        body: Option<String>,
        now: u64,
        out: &mut Output,
    ) -> Result<(), ParseError> {
        let extra = vec![
            Header::new("Contact", self.contact(uri)),
            Header::new("Allow", methods::ALLOW),
            Header::new("Server", SERVER),
        ];
        let mut ok = message::response(&msg.headers, from, 200, "OK", Some(&d.local_tag), extra);
        if let Some(body) = body {
            ok = ok.with_body(sdp::CONTENT_TYPE, body.into_bytes());
            d.sdp_version += 1;
            // Its own offer when the INVITE brought none: the ACK answers.
            d.offer_pending = msg.body.is_empty();
        }
        let ok = ok.to_bytes();
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

    /// REGISTER: the registrar's answer; a change of bindings is
    /// replicated before the 200 leaves, like a dialog.
    fn register(
        &mut self,
        msg: &Message,
        from: SocketAddr,
        key: TxKey,
        now: u64,
        out: &mut Output,
    ) {
        let server = Header::new("Server", SERVER);
        match self.registrar.register(msg, self.wall(now)) {
            Ok(done) => {
                // A REGISTER that changes nothing still must not tell of a
                // binding before it is replicated: it waits for every
                // write issued so far.
                let issued = (self.issued > 0).then(|| self.sync_issued());
                let after = done.change.map(|(key, value)| {
                    let op = match value {
                        Some(b) => SyncOp::Put {
                            key: key.clone(),
                            value: serde_json::to_value(b).unwrap_or(Value::Null),
                        },
                        None => SyncOp::del(key.clone()),
                    };
                    let seq = self.emit(out, op);
                    self.registrar.issued(seq.0, &key, done.before);
                    seq
                });
                let after = after.or(issued);
                let mut extra: Vec<Header> = done
                    .contacts
                    .into_iter()
                    .map(|(uri, s)| Header::new("Contact", format!("<{uri}>;expires={s}")))
                    .collect();
                extra.push(server);
                self.final_response(msg, from, key, 200, "OK", None, extra, after, now, out);
            }
            Err(r) => self.refuse(msg, from, key, r, now, out),
        }
    }

    /// UPDATE with an offer (RFC 3311 §5.2): the answer, a new version of
    /// the session's description, replicated before the 200 leaves.
    #[allow(clippy::too_many_arguments)]
    fn update_session(
        &mut self,
        msg: &Message,
        from: SocketAddr,
        key: TxKey,
        id: &DialogId,
        uri: &str,
        now: u64,
        out: &mut Output,
    ) -> Result<(), ParseError> {
        let Some(mut d) = self.dialogs.get(id).cloned() else {
            return Ok(());
        };
        let cseq = msg.cseq()?.seq;
        if let Some(u) = d
            .update
            .as_ref()
            .filter(|u| u.cseq == cseq && u.branch == key.branch)
        {
            // Its retransmission, here after a switchover: the same answer.
            self.counters.retransmissions_absorbed += 1;
            let data = u.response.clone().into_bytes();
            out.replies.push(Reply {
                to: from,
                data,
                after_sync: None,
            });
            return Ok(());
        }
        if d.offer_pending {
            let r = Refusal::new(
                491,
                "Request Pending",
                "this UAS's offer awaits its answer in the ACK",
            );
            self.refuse(msg, from, key, r, now, out);
            return Ok(());
        }
        let body = match self.description(msg, &d.local_tag, d.sdp_version + 1, uri) {
            Ok(Some(body)) => body,
            // Not reached: an UPDATE with a body is an offer or refused.
            Ok(None) => {
                let extra = vec![Header::new("Server", SERVER)];
                self.ok(msg, from, key, extra, now, out);
                return Ok(());
            }
            Err(r) => {
                self.refuse(msg, from, key, r, now, out);
                return Ok(());
            }
        };
        // UPDATE refreshes the target: its 2xx has a Contact (RFC 3311 §5.2).
        let extra = vec![
            Header::new("Contact", self.contact(uri)),
            Header::new("Server", SERVER),
        ];
        let r = message::response(&msg.headers, from, 200, "OK", None, extra)
            .with_body(sdp::CONTENT_TYPE, body.into_bytes());
        d.remote_cseq = d.remote_cseq.max(cseq);
        d.sdp_version += 1;
        d.update = Some(InviteRecord {
            branch: key.branch.clone(),
            sent_by: key.sent_by.clone(),
            cseq,
            response: String::from_utf8_lossy(&r.to_bytes()).into_owned(),
        });
        let put = SyncOp::Put {
            key: d.key(),
            value: d.to_value(),
        };
        self.dialogs.insert(d);
        let after = self.emit(out, put);
        self.complete(key, from, 200, r, Some(after), now, out);
        Ok(())
    }

    /// The session description a 2xx to `msg` carries, as version
    /// `version` of the session of the dialog whose local tag is `tag`:
    /// the answer to its offer, or an offer for an INVITE that brought
    /// none; `None` for another request without one. Refused when its body
    /// is no offer this UAS can answer (415, 488).
    fn description(
        &self,
        msg: &Message,
        tag: &str,
        version: u64,
        uri: &str,
    ) -> Result<Option<String>, Refusal> {
        let origin = sdp::Origin {
            session_id: sdp::session_id(tag),
            version,
        };
        let ip = match self.cfg.local.ip() {
            ip if ip.is_unspecified() => message::uri_ip(uri).unwrap_or(ip),
            ip => ip,
        };
        if msg.body.is_empty() {
            let invite = msg.method() == Some(&Method::Invite);
            return Ok(invite.then(|| sdp::offer(ip, origin)));
        }
        if !msg.body_is(sdp::CONTENT_TYPE) {
            let why = format!("only {} bodies are taken", sdp::CONTENT_TYPE);
            return Err(Refusal::new(415, "Unsupported Media Type", why));
        }
        sdp::answer(&msg.body, ip, origin)
            .map(Some)
            .map_err(|e| Refusal::new(488, "Not Acceptable Here", e.to_string()))
    }

    /// A final response refusing `msg`, with a `Warning` saying why.
    fn refuse(
        &mut self,
        msg: &Message,
        from: SocketAddr,
        key: TxKey,
        r: Refusal,
        now: u64,
        out: &mut Output,
    ) {
        let mut extra = vec![
            Header::new("Warning", format!("399 duplex \"{}\"", quotable(&r.why))),
            Header::new("Server", SERVER),
        ];
        if r.code == 415 {
            extra.push(Header::new("Accept", sdp::CONTENT_TYPE));
        }
        self.final_response(
            msg, from, key, r.code, r.reason, None, extra, None, now, out,
        );
    }

    /// 200 OK with `extra` headers, changing nothing replicated.
    fn ok(
        &mut self,
        msg: &Message,
        from: SocketAddr,
        key: TxKey,
        extra: Vec<Header>,
        now: u64,
        out: &mut Output,
    ) {
        self.final_response(msg, from, key, 200, "OK", None, extra, None, now, out);
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
        self.complete(key, from, code, r, after_sync, now, out);
    }

    /// Sends final response `r` (status `code`) of transaction `key`, kept
    /// for its retransmissions.
    #[allow(clippy::too_many_arguments)]
    fn complete(
        &mut self,
        key: TxKey,
        to: SocketAddr,
        code: u16,
        r: Message,
        after_sync: Option<SyncSeq>,
        now: u64,
        out: &mut Output,
    ) {
        let reply = Reply {
            to,
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
                d.offer_pending = false;
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
                let warning = quotable(&err.to_string());
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
        self.registrar.expire(self.wall(now));
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
}

/// `text` fit for a quoted string in a `Warning` (at most 120 characters).
fn quotable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == '"' || c == '\\' || c.is_control() {
                '\''
            } else {
                c
            }
        })
        .take(120)
        .collect()
}
