//! The registrar (RFC 3261 §10.3): REGISTER binds an address-of-record (the
//! To URI) to contact addresses for a time; a REGISTER without Contact asks
//! for the bindings; `Contact: *` with `Expires: 0` removes them all. Pure:
//! the wall clock (unix ms) is passed in, so a binding's expiry means the
//! same on both VMs of a pair.
//!
//! Each address-of-record's bindings are one replicated value under
//! `binding/<aor>` ([`Bindings`]), put (or deleted, when none are left)
//! before the 200 OK leaves, like a dialog. Expiry needs no replication:
//! each VM drops a binding once its absolute expiry passes.
//!
//! One deliberate difference from §10.3 step 7: a REGISTER whose Call-ID
//! and CSeq equal a binding's is the same request again (its first 200 may
//! have been lost when the ACT handed over, and the client retransmits it
//! to the new ACT), so it is answered from the bindings instead of failing;
//! a lower CSeq fails (500) as the RFC says. There is no authentication:
//! the sample service trusts its clients.

use crate::message::{addr_and_params, header_param, split_list, Message, ParseError};
use crate::methods::Refusal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Replication keys of bindings: `binding/<address-of-record>`.
pub const KEY_PREFIX: &str = "binding/";
/// Expiry when the request names none (§10.2.1.1 suggests an hour).
pub const DEFAULT_EXPIRES_S: u64 = 3600;
/// The longest binding granted; longer requests are shortened.
pub const MAX_EXPIRES_S: u64 = 86_400;
/// Contacts one address-of-record may hold.
pub const MAX_CONTACTS: usize = 16;
/// Addresses-of-record the registrar holds.
pub const MAX_AORS: usize = 100_000;
/// The longest contact or address-of-record URI taken.
pub const MAX_URI: usize = 256;
/// Unanswered writes whose earlier bindings are kept to undo a refusal
/// (the oldest is let go beyond this; its answer is long due).
pub const MAX_UNDO: usize = 4096;

/// One contact bound to an address-of-record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The contact URI as the client gave it.
    pub contact: String,
    pub call_id: String,
    pub cseq: u32,
    /// Unix time (ms) at which it lapses.
    pub expires_at_ms: u64,
}

/// The replicated value: every binding of one address-of-record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bindings {
    pub aor: String,
    pub contacts: Vec<Binding>,
}

impl Bindings {
    pub fn key(&self) -> String {
        key_of(&self.aor)
    }
}

fn key_of(aor: &str) -> String {
    format!("{KEY_PREFIX}{aor}")
}

fn refuse(code: u16, reason: &'static str, why: impl Into<String>) -> Refusal {
    Refusal::new(code, reason, why)
}

/// What a REGISTER did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// Every binding now held, with seconds left (for the 200's Contacts).
    pub contacts: Vec<(String, u64)>,
    /// The change to replicate: the new value, or `None` when the
    /// address-of-record has no binding left; absent when nothing changed.
    pub change: Option<(String, Option<Bindings>)>,
    /// The bindings before the change, for [`Registrar::issued`].
    pub before: Vec<Binding>,
}

#[derive(Debug, thiserror::Error)]
pub enum BindingValueError {
    #[error("value of {key} is not the bindings of an address-of-record: {source}")]
    BadValue {
        key: String,
        source: serde_json::Error,
    },
    #[error("value holds the bindings of {actual}, stored under {key}")]
    KeyMismatch { key: String, actual: String },
}

/// Every address-of-record's bindings.
#[derive(Debug, Default)]
pub struct Registrar {
    by_aor: BTreeMap<String, Vec<Binding>>,
    /// By the number of a write not yet answered: its address-of-record
    /// and the bindings before it, put back if the write is refused.
    undo: BTreeMap<u64, (String, Vec<Binding>)>,
}

/// One Contact of a REGISTER: its URI and the expiry it asks for.
struct Wanted {
    contact: String,
    expires_s: u64,
}

impl Registrar {
    pub fn len(&self) -> usize {
        self.by_aor.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_aor.is_empty()
    }

    /// The bindings of `aor` still valid at `now_ms`.
    pub fn bindings(&self, aor: &str, now_ms: u64) -> Vec<&Binding> {
        self.by_aor
            .get(aor)
            .map(|b| b.iter().filter(|b| b.expires_at_ms > now_ms).collect())
            .unwrap_or_default()
    }

    /// Handles a REGISTER at wall-clock `now_ms`.
    pub fn register(&mut self, msg: &Message, now_ms: u64) -> Result<Registered, Refusal> {
        let bad = |e: ParseError| refuse(400, "Bad Request", e.to_string());
        let aor = aor_of(msg).map_err(bad)?;
        let call_id = msg.call_id().map_err(bad)?.to_string();
        let cseq = msg.cseq().map_err(bad)?.seq;
        let default_s = match msg.header("Expires") {
            None => DEFAULT_EXPIRES_S,
            Some(v) => {
                seconds(v).ok_or_else(|| refuse(400, "Bad Request", "Expires is not a number"))?
            }
        };
        let contacts: Vec<&str> = msg
            .headers_named("Contact")
            .flat_map(|h| split_list(&h.value))
            .collect();
        // Refused before any work: a datagram may hold thousands.
        if contacts.len() > MAX_CONTACTS {
            let why = format!("more than {MAX_CONTACTS} contacts in one REGISTER");
            return Err(refuse(403, "Forbidden", why));
        }
        let mut held: Vec<Binding> = self.bindings(&aor, now_ms).into_iter().cloned().collect();
        let before = held.clone();
        if contacts == ["*"] {
            if default_s != 0 {
                return Err(refuse(400, "Bad Request", "Contact: * needs Expires: 0"));
            }
            for b in &held {
                in_order(b, &call_id, cseq)?;
            }
            held.clear();
        } else {
            if contacts.contains(&"*") {
                return Err(refuse(
                    400,
                    "Bad Request",
                    "Contact: * must be the only contact",
                ));
            }
            for c in contacts {
                let w = wanted(c, default_s).map_err(bad)?;
                update(&mut held, w, &call_id, cseq, now_ms)?;
            }
        }
        if held.len() > MAX_CONTACTS {
            return Err(refuse(
                403,
                "Forbidden",
                format!("more than {MAX_CONTACTS} contacts for {aor}"),
            ));
        }
        if !self.by_aor.contains_key(&aor) && !held.is_empty() && self.by_aor.len() >= MAX_AORS {
            return Err(refuse(503, "Service Unavailable", "registrar full"));
        }
        let contacts = held
            .iter()
            .map(|b| {
                (
                    b.contact.clone(),
                    b.expires_at_ms.saturating_sub(now_ms) / 1000,
                )
            })
            .collect();
        let change = (held != before).then(|| self.set(&aor, held));
        Ok(Registered {
            contacts,
            change,
            before,
        })
    }

    /// Stores `held` as `aor`'s bindings; the change to replicate.
    fn set(&mut self, aor: &str, held: Vec<Binding>) -> (String, Option<Bindings>) {
        let key = key_of(aor);
        if held.is_empty() {
            self.by_aor.remove(aor);
            return (key, None);
        }
        self.by_aor.insert(aor.to_string(), held.clone());
        let value = Bindings {
            aor: aor.to_string(),
            contacts: held,
        };
        (key, Some(value))
    }

    /// Write number `seq` of `key` (a change [`Registrar::register`] made
    /// over `before`) is on its way to the store.
    pub fn issued(&mut self, seq: u64, key: &str, before: Vec<Binding>) {
        let Some(aor) = key.strip_prefix(KEY_PREFIX) else {
            return;
        };
        if self.undo.len() >= MAX_UNDO {
            self.undo.pop_first();
        }
        self.undo.insert(seq, (aor.to_string(), before));
    }

    /// Writes up to number `upto` are answered: none is undone any more.
    pub fn stored(&mut self, upto: u64) {
        self.undo = self.undo.split_off(&upto.saturating_add(1));
    }

    /// Write number `seq` was refused (this VM is no longer ACT; the
    /// client was told nothing): its address-of-record gets the bindings
    /// it had before. Later writes of it, refused in turn, are let go with
    /// it. Whether anything was undone.
    pub fn refused(&mut self, seq: u64) -> bool {
        let Some((aor, before)) = self.undo.remove(&seq) else {
            return false;
        };
        self.undo.retain(|s, (a, _)| *s < seq || *a != aor);
        self.superseded(&aor);
        if before.is_empty() {
            self.by_aor.remove(&aor);
        } else {
            self.by_aor.insert(aor, before);
        }
        true
    }

    /// A replicated value of `aor` came: no write of it here is undone.
    fn superseded(&mut self, aor: &str) {
        if !self.undo.is_empty() {
            self.undo.retain(|_, (a, _)| a != aor);
        }
    }

    /// Drops the bindings lapsed at `now_ms` (each VM on its own).
    pub fn expire(&mut self, now_ms: u64) {
        self.by_aor.retain(|_, b| {
            b.retain(|b| b.expires_at_ms > now_ms);
            !b.is_empty()
        });
    }

    /// A replicated `Put` of `key`.
    pub fn apply_put(
        &mut self,
        key: &str,
        value: serde_json::Value,
    ) -> Result<(), BindingValueError> {
        let b: Bindings =
            serde_json::from_value(value).map_err(|source| BindingValueError::BadValue {
                key: key.to_string(),
                source,
            })?;
        if b.key() != key {
            return Err(BindingValueError::KeyMismatch {
                key: key.to_string(),
                actual: b.aor,
            });
        }
        self.superseded(&b.aor);
        self.by_aor.insert(b.aor, b.contacts);
        Ok(())
    }

    /// A replicated `Del` of `key`.
    pub fn apply_del(&mut self, key: &str) {
        if let Some(aor) = key.strip_prefix(KEY_PREFIX) {
            self.superseded(aor);
            self.by_aor.remove(aor);
        }
    }

    /// Every address-of-record's bindings as replicated entries.
    pub fn entries(&self) -> impl Iterator<Item = Bindings> + '_ {
        self.by_aor.iter().map(|(aor, b)| Bindings {
            aor: aor.clone(),
            contacts: b.clone(),
        })
    }
}

/// §10.3 step 7 for one binding: same Call-ID, so CSeq must be higher
/// (equal: the same request again, see the module doc).
fn in_order(b: &Binding, call_id: &str, cseq: u32) -> Result<(), Refusal> {
    if b.call_id == call_id && cseq < b.cseq {
        return Err(refuse(
            500,
            "Server Internal Error",
            format!("CSeq {cseq} is older than {} of this registration", b.cseq),
        ));
    }
    Ok(())
}

fn update(
    held: &mut Vec<Binding>,
    w: Wanted,
    call_id: &str,
    cseq: u32,
    now_ms: u64,
) -> Result<(), Refusal> {
    let at = held.iter().position(|b| same_uri(&b.contact, &w.contact));
    if let Some(i) = at {
        in_order(&held[i], call_id, cseq)?;
        if held[i].call_id == call_id && held[i].cseq == cseq {
            return Ok(());
        }
        held.remove(i);
    }
    if w.expires_s > 0 {
        held.push(Binding {
            contact: w.contact,
            call_id: call_id.to_string(),
            cseq,
            expires_at_ms: now_ms.saturating_add(w.expires_s.min(MAX_EXPIRES_S) * 1000),
        });
    }
    Ok(())
}

fn wanted(value: &str, default_s: u64) -> Result<Wanted, ParseError> {
    let (uri, params) = addr_and_params("Contact", value)?;
    if uri.len() > MAX_URI {
        return Err(ParseError::BadHeader {
            header: "Contact",
            reason: format!("URI longer than {MAX_URI} bytes"),
        });
    }
    let expires_s = header_param(params, "expires")
        .and_then(seconds)
        .unwrap_or(default_s);
    Ok(Wanted {
        contact: uri.to_string(),
        expires_s,
    })
}

fn seconds(v: &str) -> Option<u64> {
    v.trim().parse().ok()
}

/// The address-of-record of a REGISTER: its To URI without parameters,
/// scheme and host in lower case (§10.3 step 5; the user part is case
/// sensitive).
fn aor_of(msg: &Message) -> Result<String, ParseError> {
    let to = msg.header("To").ok_or(ParseError::BadHeader {
        header: "To",
        reason: "missing".into(),
    })?;
    let (uri, _) = addr_and_params("To", to)?;
    if uri.len() > MAX_URI {
        return Err(ParseError::BadHeader {
            header: "To",
            reason: format!("URI longer than {MAX_URI} bytes"),
        });
    }
    Ok(canonical(uri))
}

fn canonical(uri: &str) -> String {
    let (scheme, user, host, _) = parts(uri);
    format!(
        "{}:{user}{}",
        scheme.to_ascii_lowercase(),
        host.to_ascii_lowercase()
    )
}

/// A URI's scheme, user part (with its `@`; it may hold `;`, §19.1.1),
/// host and the parameters and headers after the host.
fn parts(uri: &str) -> (&str, &str, &str, &str) {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return (uri, "", "", "");
    };
    let (user, host) = match rest.find('@') {
        Some(at) => rest.split_at(at + 1),
        None => ("", rest),
    };
    let end = host.find([';', '?']).unwrap_or(host.len());
    (scheme, user, &host[..end], &host[end..])
}

/// Contacts compare as URIs: scheme and host without regard to case.
fn same_uri(a: &str, b: &str) -> bool {
    canonical(a) == canonical(b) && parts(a).3 == parts(b).3
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::parse;

    fn register(call_id: &str, cseq: u32, extra: &str) -> Message {
        let text = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK{cseq}\r\n\
             From: <sip:bob@Example.com>;tag=ft\r\nTo: Bob <sip:bob@Example.com>\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        parse(text.as_bytes()).unwrap()
    }

    const AOR: &str = "sip:bob@example.com";

    #[test]
    fn binds_refreshes_queries_and_removes() {
        let mut r = Registrar::default();
        let m = register("c1", 1, "Contact: <sip:bob@10.0.0.1:5060>;expires=60\r\n");
        let got = r.register(&m, 1_000).unwrap();
        assert_eq!(got.contacts, [("sip:bob@10.0.0.1:5060".to_string(), 60)]);
        let (key, value) = got.change.unwrap();
        assert_eq!(key, "binding/sip:bob@example.com");
        assert_eq!(value.unwrap().contacts[0].expires_at_ms, 61_000);
        // A query (no Contact) changes nothing.
        let q = r.register(&register("c2", 1, ""), 11_000).unwrap();
        assert_eq!(q.contacts, [("sip:bob@10.0.0.1:5060".to_string(), 50)]);
        assert_eq!(q.change, None);
        // A refresh with the Expires header; a second contact.
        let m = register(
            "c1",
            2,
            "Expires: 120\r\nContact: <sip:bob@10.0.0.1:5060>, sip:bob@10.0.0.2\r\n",
        );
        let got = r.register(&m, 20_000).unwrap();
        assert_eq!(got.contacts.len(), 2);
        assert!(got.contacts.iter().all(|(_, s)| *s == 120));
        // expires=0 removes one; `*` removes the rest.
        let m = register("c1", 3, "Contact: <sip:bob@10.0.0.2>;expires=0\r\n");
        assert_eq!(r.register(&m, 21_000).unwrap().contacts.len(), 1);
        let m = register("c1", 4, "Contact: *\r\nExpires: 0\r\n");
        let got = r.register(&m, 22_000).unwrap();
        assert!(got.contacts.is_empty());
        assert_eq!(got.change, Some((key, None)));
        assert!(r.is_empty());
    }

    #[test]
    fn old_requests_fail_and_the_same_one_again_is_answered() {
        let mut r = Registrar::default();
        let m = register("c1", 5, "Contact: <sip:bob@10.0.0.1>\r\n");
        r.register(&m, 0).unwrap();
        let again = r.register(&m, 500).unwrap();
        assert_eq!(again.change, None, "a retransmission changes nothing");
        assert_eq!(again.contacts.len(), 1);
        let old = register("c1", 4, "Contact: <sip:bob@10.0.0.1>\r\n");
        assert_eq!(r.register(&old, 600).unwrap_err().code, 500);
        // Another Call-ID (another client instance) replaces it.
        let other = register("c9", 1, "Contact: <sip:bob@10.0.0.1>;expires=30\r\n");
        let got = r.register(&other, 700).unwrap();
        assert_eq!(got.contacts, [("sip:bob@10.0.0.1".to_string(), 30)]);
    }

    #[test]
    fn bad_registers_are_refused_by_name() {
        let mut r = Registrar::default();
        for (extra, code) in [
            ("Contact: *\r\n", 400),
            ("Contact: *, <sip:a@b>\r\nExpires: 0\r\n", 400),
            ("Contact: <sip:a@b\r\n", 400),
            ("Expires: soon\r\nContact: <sip:a@b>\r\n", 400),
        ] {
            let got = r.register(&register("c1", 1, extra), 0);
            assert_eq!(
                got.as_ref().map_err(|e| e.code),
                Err(code),
                "{extra}: {got:?}"
            );
        }
        let many: String = (0..=MAX_CONTACTS)
            .map(|i| format!("Contact: <sip:bob@10.0.0.{i}>\r\n"))
            .collect();
        assert_eq!(
            r.register(&register("c1", 1, &many), 0).unwrap_err().code,
            403
        );
        assert!(r.is_empty());
    }

    #[test]
    fn bindings_lapse_by_the_wall_clock_and_replicate_whole() {
        let mut r = Registrar::default();
        let m = register("c1", 1, "Contact: <sip:bob@10.0.0.1>;expires=10\r\n");
        let (key, value) = r.register(&m, 0).unwrap().change.unwrap();
        let mut other = Registrar::default();
        let json = serde_json::to_value(value.unwrap()).unwrap();
        other.apply_put(&key, json.clone()).unwrap();
        assert_eq!(other.bindings(AOR, 9_999).len(), 1);
        assert!(other.bindings(AOR, 10_000).is_empty());
        other.expire(10_000);
        assert!(other.is_empty());
        assert!(matches!(
            other.apply_put("binding/sip:eve@example.com", json),
            Err(BindingValueError::KeyMismatch { .. })
        ));
        assert!(other
            .apply_put(&key, serde_json::json!({"aor": 1}))
            .is_err());
        r.apply_del(&key);
        assert!(r.is_empty());
    }

    #[test]
    fn addresses_of_record_compare_without_case_in_scheme_and_host() {
        assert_eq!(
            canonical("SIP:Bob@EXAMPLE.com;transport=udp"),
            "sip:Bob@example.com"
        );
        assert!(same_uri("sip:bob@H.example:5060", "sip:bob@h.example:5060"));
        assert!(!same_uri("sip:bob@h", "sip:Bob@h"));
        // A `;` in the user part is the user's, not a parameter.
        assert_ne!(
            canonical("sip:+1212;ext=1@a.com"),
            canonical("sip:+1212;ext=2@b.com")
        );
        assert_eq!(
            canonical("sip:+1212;ext=1@A.com;user=phone"),
            "sip:+1212;ext=1@a.com"
        );
        assert!(!same_uri("sip:bob@h;transport=tcp", "sip:bob@h"));
    }
}
