//! Server transactions (RFC 3261 §17.2, with RFC 6026's Accepted state) for
//! a UAS that answers every request at once: a transaction is created with
//! its final response and lives on only to absorb retransmissions.
//!
//! - Key (§17.2.3): top-Via branch + sent-by + method, where ACK takes its
//!   INVITE's method; CANCEL is a transaction of its own. A branch without
//!   the RFC 3261 magic cookie falls back to Call-ID, From tag, CSeq and the
//!   whole top Via.
//! - A retransmitted request gets the last response again, byte for byte.
//! - INVITE, 2xx: *Accepted*. The 2xx is retransmitted (T1, doubling up to
//!   T2) until the dialog's ACK arrives (*Confirmed*); the entry is kept
//!   64*T1 (Timer L) to absorb late INVITE copies. No ACK within 64*T1 is
//!   reported as an ACK timeout.
//! - INVITE, non-2xx: *Completed*, retransmitted (Timer G) until the ACK
//!   (same branch) arrives, then kept T4 (Timer I); 64*T1 at most (Timer H).
//! - Non-INVITE: *Completed*, kept 64*T1 (Timer J).
//!
//! No clock inside: every call takes `now` in milliseconds.

use crate::message::{Message, Method, ParseError, BRANCH_COOKIE};
use std::collections::HashMap;
use std::net::SocketAddr;

pub const T1: u64 = 500;
pub const T2: u64 = 4_000;
pub const T4: u64 = 5_000;
/// 64*T1: Timers H, J and L for UDP.
pub const LINGER: u64 = 64 * T1;

/// Number of a sync op in the order a [`crate::uas::Uas`] issued them (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SyncSeq(pub u64);

/// A datagram to send. `after_sync`: send only once that sync op (and so
/// every earlier one) was answered by the middleware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub to: SocketAddr,
    pub data: Vec<u8>,
    pub after_sync: Option<SyncSeq>,
}

impl Reply {
    /// Whether a VM that lost the service address while this reply waited
    /// for its write hands it on to the new ACT: any reply but a
    /// provisional one. Replies are handed on one by one, in no order, so
    /// a 1xx could reach the client after the 200 that followed it (seen
    /// in CI: sipp aborted calls on a 180 after their ACK); without it the
    /// client retransmits the INVITE and the new ACT answers with the
    /// replicated 200.
    pub fn handed_on(&self) -> bool {
        self.after_sync.is_some() && !self.data.starts_with(b"SIP/2.0 1")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxKey {
    pub branch: String,
    pub sent_by: String,
    pub method: Method,
}

impl TxKey {
    pub fn for_request(msg: &Message) -> Result<TxKey, ParseError> {
        let via = msg.top_via()?;
        let mut method = msg.cseq()?.method;
        if method == Method::Ack {
            method = Method::Invite;
        }
        let branch = match via.branch() {
            Some(b) if b.starts_with(BRANCH_COOKIE) => b.to_string(),
            _ => {
                // RFC 2543 peer (§17.2.3, simplified): what stays the same
                // across retransmissions of one request.
                let cseq = msg.cseq()?;
                format!(
                    "2543|{}|{}|{}|{}",
                    msg.call_id()?,
                    msg.from_tag()?.unwrap_or_default(),
                    cseq.seq,
                    via
                )
            }
        };
        Ok(TxKey {
            branch,
            sent_by: via.sent_by(),
            method,
        })
    }

    /// The INVITE transaction a CANCEL with this key targets.
    pub fn invite_of(&self) -> TxKey {
        TxKey {
            method: Method::Invite,
            ..self.clone()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxState {
    /// Final response sent (non-INVITE, or INVITE non-2xx awaiting ACK).
    Completed,
    /// INVITE 2xx sent, awaiting the dialog's ACK.
    Accepted,
    /// ACK received; only absorbing copies now.
    Confirmed,
}

#[derive(Debug, Clone)]
struct ServerTx {
    state: TxState,
    invite: bool,
    last: Reply,
    retransmit_at: Option<u64>,
    interval: u64,
    expires_at: u64,
}

/// What [`Transactions::tick`] found due.
#[derive(Debug, Default)]
pub struct TickResult {
    pub retransmits: Vec<Reply>,
    /// INVITE transactions whose 2xx was never ACKed.
    pub ack_timeouts: Vec<TxKey>,
    pub expired: usize,
}

#[derive(Debug, Default)]
pub struct Transactions {
    map: HashMap<TxKey, ServerTx>,
}

impl Transactions {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn contains(&self, key: &TxKey) -> bool {
        self.map.contains_key(key)
    }

    pub fn state(&self, key: &TxKey) -> Option<TxState> {
        self.map.get(key).map(|t| t.state)
    }

    /// A request matching an existing transaction: its last response, to
    /// send again. None: a new request.
    pub fn retransmission(&self, key: &TxKey) -> Option<Reply> {
        self.map.get(key).map(|t| t.last.clone())
    }

    /// Records the final response of a new transaction.
    pub fn complete(&mut self, key: TxKey, code: u16, reply: Reply, now: u64) {
        let invite = key.method == Method::Invite;
        let (state, retransmit_at) = match (invite, (200..300).contains(&code)) {
            (true, true) => (TxState::Accepted, Some(now.saturating_add(T1))),
            (true, false) => (TxState::Completed, Some(now.saturating_add(T1))),
            (false, _) => (TxState::Completed, None),
        };
        let tx = ServerTx {
            state,
            invite,
            last: reply,
            retransmit_at,
            interval: T1,
            expires_at: now.saturating_add(LINGER),
        };
        self.map.insert(key, tx);
    }

    /// An INVITE 2xx replicated from the peer and not yet ACKed: rebuilt so
    /// that this side keeps retransmitting it (an existing entry is kept).
    pub fn restore_accepted(&mut self, key: TxKey, reply: Reply, now: u64) {
        self.map.entry(key).or_insert(ServerTx {
            state: TxState::Accepted,
            invite: true,
            last: reply,
            retransmit_at: Some(now.saturating_add(T1)),
            interval: T1,
            expires_at: now.saturating_add(LINGER),
        });
    }

    /// An ACK with the INVITE's branch, for a non-2xx final response: true
    /// if it matched (and is absorbed). ACKs for 2xx go to the dialog.
    pub fn ack_non_2xx(&mut self, key: &TxKey, now: u64) -> bool {
        match self.map.get_mut(key) {
            Some(t) if t.invite && t.state == TxState::Completed => {
                t.state = TxState::Confirmed;
                t.retransmit_at = None;
                t.expires_at = t.expires_at.min(now.saturating_add(T4));
                true
            }
            Some(t) => t.invite && t.state == TxState::Confirmed && !is_2xx(&t.last.data),
            None => false,
        }
    }

    /// Drops a transaction outright (its response is void).
    pub fn forget(&mut self, key: &TxKey) {
        self.map.remove(key);
    }

    /// The dialog saw the ACK for this INVITE's 2xx: stop retransmitting.
    pub fn ack_2xx(&mut self, key: &TxKey) {
        if let Some(t) = self.map.get_mut(key) {
            if t.state == TxState::Accepted {
                t.state = TxState::Confirmed;
                t.retransmit_at = None;
            }
        }
    }

    /// Retransmissions due and expired entries at `now`.
    pub fn tick(&mut self, now: u64) -> TickResult {
        let mut r = TickResult::default();
        self.map.retain(|key, t| {
            if now >= t.expires_at {
                if t.state == TxState::Accepted {
                    r.ack_timeouts.push(key.clone());
                }
                r.expired += 1;
                return false;
            }
            if t.retransmit_at.is_some_and(|at| now >= at) {
                r.retransmits.push(t.last.clone());
                t.interval = (t.interval * 2).min(T2);
                t.retransmit_at = Some(now.saturating_add(t.interval));
            }
            true
        });
        r
    }
}

fn is_2xx(data: &[u8]) -> bool {
    data.starts_with(b"SIP/2.0 2")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_held_final_replies_are_handed_on() {
        let reply = |data: &str, after: Option<u64>| Reply {
            to: "127.0.0.1:5060".parse().unwrap(),
            data: data.as_bytes().to_vec(),
            after_sync: after.map(SyncSeq),
        };
        assert!(reply("SIP/2.0 200 OK\r\n", Some(1)).handed_on());
        assert!(reply("SIP/2.0 481 Call/Transaction Does Not Exist\r\n", Some(1)).handed_on());
        assert!(!reply("SIP/2.0 180 Ringing\r\n", Some(1)).handed_on());
        assert!(!reply("SIP/2.0 100 Trying\r\n", Some(1)).handed_on());
        assert!(
            !reply("SIP/2.0 200 OK\r\n", None).handed_on(),
            "not held: not owed"
        );
    }

    fn key(m: Method) -> TxKey {
        TxKey {
            branch: "z9hG4bK1".into(),
            sent_by: "h:5060".into(),
            method: m,
        }
    }

    fn reply(s: &str) -> Reply {
        Reply {
            to: "127.0.0.1:5061".parse().unwrap(),
            data: s.as_bytes().to_vec(),
            after_sync: None,
        }
    }

    #[test]
    fn invite_2xx_retransmits_with_backoff_until_ack() {
        let mut t = Transactions::default();
        t.complete(key(Method::Invite), 200, reply("SIP/2.0 200 OK"), 0);
        assert!(t.tick(499).retransmits.is_empty());
        assert_eq!(t.tick(500).retransmits.len(), 1); // T1
        assert!(t.tick(1499).retransmits.is_empty());
        assert_eq!(t.tick(1500).retransmits.len(), 1); // +2*T1
        t.ack_2xx(&key(Method::Invite));
        assert!(t.tick(10_000).retransmits.is_empty());
        assert_eq!(t.state(&key(Method::Invite)), Some(TxState::Confirmed));
        let r = t.tick(LINGER);
        assert!(r.ack_timeouts.is_empty());
        assert_eq!(r.expired, 1);
        assert!(t.is_empty());
    }

    #[test]
    fn invite_2xx_without_ack_times_out() {
        let mut t = Transactions::default();
        t.complete(key(Method::Invite), 200, reply("SIP/2.0 200 OK"), 1000);
        let mut sent = 0;
        for now in (1000..1000 + LINGER).step_by(100) {
            sent += t.tick(now).retransmits.len();
        }
        // 0.5, 1.5, 3.5, 7.5, then every 4 s (T2) up to 32 s.
        assert_eq!(sent, 10);
        assert_eq!(
            t.tick(1000 + LINGER).ack_timeouts,
            vec![key(Method::Invite)]
        );
    }

    #[test]
    fn non_invite_kept_for_timer_j_and_not_retransmitted() {
        let mut t = Transactions::default();
        t.complete(key(Method::Bye), 200, reply("SIP/2.0 200 OK"), 0);
        assert!(t.tick(LINGER - 1).retransmits.is_empty());
        assert_eq!(
            t.retransmission(&key(Method::Bye)).unwrap().data,
            b"SIP/2.0 200 OK"
        );
        assert_eq!(t.tick(LINGER).expired, 1);
        assert!(t.retransmission(&key(Method::Bye)).is_none());
    }

    #[test]
    fn ack_for_non_2xx_confirms_and_shortens() {
        let mut t = Transactions::default();
        t.complete(
            key(Method::Invite),
            503,
            reply("SIP/2.0 503 Service Unavailable"),
            0,
        );
        assert!(t.ack_non_2xx(&key(Method::Invite), 100));
        assert!(t.ack_non_2xx(&key(Method::Invite), 200)); // retransmitted ACK absorbed
        assert_eq!(t.tick(100 + T4).expired, 1);
        t.complete(key(Method::Invite), 200, reply("SIP/2.0 200 OK"), 0);
        assert!(!t.ack_non_2xx(&key(Method::Invite), 100));
    }
}
