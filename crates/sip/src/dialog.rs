//! Dialogs (RFC 3261 §12) of the UAS, and what each request does (§8.2,
//! §12.2.2, §15): the table, the replicated form of a dialog, and the
//! routing decision. Pure: no I/O, no clock.
//!
//! A dialog is keyed by Call-ID + local tag (our To-tag) + remote tag (the
//! From-tag). It is created when the 200 OK to an INVITE is produced and is
//! *confirmed* when the ACK arrives. Its replicated value (see [`Dialog`])
//! carries the 200 OK text itself, so the other VM can answer a
//! retransmitted INVITE with the identical bytes.

use crate::message::{Message, Method, ParseError};
use crate::methods;
use crate::transaction::{Reply, SyncSeq, TxKey};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;

/// Replication keys of dialogs: `dialog/<call-id>/<local-tag>/<remote-tag>`.
pub const KEY_PREFIX: &str = "dialog/";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

impl DialogId {
    /// The dialog a request claims to belong to: None without a To-tag.
    pub fn of_request(msg: &Message) -> Result<Option<DialogId>, ParseError> {
        let Some(local_tag) = msg.to_tag()? else {
            return Ok(None);
        };
        Ok(Some(DialogId {
            call_id: msg.call_id()?.to_string(),
            local_tag,
            remote_tag: msg.from_tag()?.unwrap_or_default(),
        }))
    }

    /// Tags are tokens (no `/`), so the key is unambiguous even when the
    /// Call-ID contains `/`.
    pub fn key(&self) -> String {
        format!(
            "{KEY_PREFIX}{}/{}/{}",
            self.call_id, self.local_tag, self.remote_tag
        )
    }
}

/// The INVITE transaction whose 2xx created (or last refreshed) the dialog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteRecord {
    /// Transaction key parts (see [`TxKey`]).
    pub branch: String,
    pub sent_by: String,
    pub cseq: u32,
    /// The 200 OK as sent, byte for byte.
    pub response: String,
}

/// One dialog; its JSON form is the replicated value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
    /// Where the INVITE came from (responses go there).
    pub peer: SocketAddr,
    /// Highest CSeq number seen from the remote side.
    pub remote_cseq: u32,
    /// ACK received.
    pub confirmed: bool,
    pub invite: InviteRecord,
    /// The version of the last session description sent in it (0: none;
    /// RFC 3264 §8: one more with each new one).
    #[serde(default)]
    pub sdp_version: u64,
    /// The 2xx of an INVITE carried this UAS's offer and its ACK (with
    /// the answer) has not come: an offer in an UPDATE now gets 491
    /// (RFC 3311 §5.2).
    #[serde(default)]
    pub offer_pending: bool,
    /// The last UPDATE with an offer and its 200 OK, byte for byte: its
    /// retransmission gets the same answer on either VM, not a new version.
    #[serde(default)]
    pub update: Option<InviteRecord>,
    /// Local only: the sync op carrying this dialog's 200 OK, while unanswered.
    #[serde(skip)]
    pub pending: Option<SyncSeq>,
}

#[derive(Debug, thiserror::Error)]
pub enum DialogValueError {
    #[error("key {0:?} is not a dialog key")]
    NotADialogKey(String),
    #[error("value of {key} is not a dialog: {source}")]
    BadValue {
        key: String,
        source: serde_json::Error,
    },
    #[error("value names dialog {actual}, stored under {key}")]
    KeyMismatch { key: String, actual: String },
}

impl Dialog {
    pub fn id(&self) -> DialogId {
        DialogId {
            call_id: self.call_id.clone(),
            local_tag: self.local_tag.clone(),
            remote_tag: self.remote_tag.clone(),
        }
    }

    pub fn key(&self) -> String {
        self.id().key()
    }

    /// The INVITE's 2xx, as a VM that holds this dialog by replication
    /// sends it: to the client, already stored on both sides.
    pub fn replicated_2xx(&self) -> Reply {
        Reply {
            to: self.peer,
            data: self.invite.response.clone().into_bytes(),
            after_sync: None,
        }
    }

    pub fn invite_key(&self) -> TxKey {
        TxKey {
            branch: self.invite.branch.clone(),
            sent_by: self.invite.sent_by.clone(),
            method: Method::Invite,
        }
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// A replicated entry back into a dialog, checked against its key.
    pub fn from_entry(key: &str, value: serde_json::Value) -> Result<Dialog, DialogValueError> {
        if !key.starts_with(KEY_PREFIX) {
            return Err(DialogValueError::NotADialogKey(key.to_string()));
        }
        let d: Dialog =
            serde_json::from_value(value).map_err(|source| DialogValueError::BadValue {
                key: key.to_string(),
                source,
            })?;
        if d.key() != key {
            return Err(DialogValueError::KeyMismatch {
                key: key.to_string(),
                actual: d.key(),
            });
        }
        Ok(d)
    }
}

/// The dialog table, indexed by key and by the INVITE transaction.
#[derive(Debug, Default)]
pub struct Dialogs {
    by_key: HashMap<String, Dialog>,
    by_invite: HashMap<TxKey, String>,
}

impl Dialogs {
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    pub fn get(&self, id: &DialogId) -> Option<&Dialog> {
        self.by_key.get(&id.key())
    }

    pub fn get_mut(&mut self, id: &DialogId) -> Option<&mut Dialog> {
        self.by_key.get_mut(&id.key())
    }

    pub fn get_key(&self, key: &str) -> Option<&Dialog> {
        self.by_key.get(key)
    }

    /// The dialog created by this INVITE transaction.
    pub fn by_invite(&self, key: &TxKey) -> Option<&Dialog> {
        self.by_invite.get(key).and_then(|k| self.by_key.get(k))
    }

    /// Inserts or replaces (keeping the index right).
    pub fn insert(&mut self, d: Dialog) {
        let key = d.key();
        self.remove_key(&key);
        self.by_invite.insert(d.invite_key(), key.clone());
        self.by_key.insert(key, d);
    }

    pub fn remove_key(&mut self, key: &str) -> Option<Dialog> {
        let d = self.by_key.remove(key)?;
        self.by_invite.remove(&d.invite_key());
        Some(d)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Dialog> {
        self.by_key.values()
    }
}

/// What to do with a new (not retransmitted) request. ACKs are not routed
/// here: they match a transaction or a dialog and are never answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// INVITE outside any dialog: create one (100, 180, 200).
    NewDialog,
    /// INVITE inside a known dialog: 200 again with the same tag.
    ReInvite(DialogId),
    /// BYE of a known dialog: 200 and remove it.
    Bye(DialogId),
    /// INFO, UPDATE or MESSAGE inside a known dialog: 200 (an UPDATE
    /// with an offer changes the session's version, replicated; the rest
    /// change nothing a switchover must carry; the remote CSeq is kept
    /// locally).
    InDialog(DialogId),
    /// MESSAGE outside any dialog: 200.
    Accept,
    /// REGISTER: the registrar's answer.
    Register,
    /// 200 with `Allow`.
    Options,
    /// 200 if the INVITE transaction exists (its final response is already
    /// out, so nothing is cancelled), else 481.
    Cancel,
    /// Answer with this final status only (405 gets `Allow`).
    Reject { code: u16, reason: &'static str },
    /// ACK (see above).
    Ack,
}

const NO_DIALOG: Route = Route::Reject {
    code: 481,
    reason: "Call/Transaction Does Not Exist",
};

/// §12.2.2: a request lower than the remote CSeq is out of order (500).
fn in_dialog(
    dialogs: &Dialogs,
    msg: &Message,
    make: fn(DialogId) -> Route,
) -> Result<Route, ParseError> {
    let Some(id) = DialogId::of_request(msg)? else {
        return Ok(NO_DIALOG);
    };
    let Some(d) = dialogs.get(&id) else {
        return Ok(NO_DIALOG);
    };
    if msg.cseq()?.seq < d.remote_cseq {
        return Ok(Route::Reject {
            code: 500,
            reason: "Server Internal Error",
        });
    }
    Ok(make(id))
}

pub fn route(dialogs: &Dialogs, msg: &Message) -> Result<Route, ParseError> {
    let Some(method) = msg.method() else {
        return Ok(Route::Reject {
            code: 400,
            reason: "Bad Request",
        });
    };
    match method {
        Method::Invite if msg.to_tag()?.is_none() => Ok(Route::NewDialog),
        Method::Invite => in_dialog(dialogs, msg, Route::ReInvite),
        Method::Bye => in_dialog(dialogs, msg, Route::Bye),
        Method::Ack => Ok(Route::Ack),
        Method::Options => Ok(Route::Options),
        Method::Cancel => Ok(Route::Cancel),
        Method::Register => Ok(Route::Register),
        Method::Message if msg.to_tag()?.is_none() => Ok(Route::Accept),
        Method::Info | Method::Update | Method::Message => in_dialog(dialogs, msg, Route::InDialog),
        // No reliable provisional response is ever sent (RFC 3262 §3).
        Method::Prack => Ok(NO_DIALOG),
        other => {
            let (code, reason) = methods::refusal(other).unwrap_or((405, "Method Not Allowed"));
            Ok(Route::Reject { code, reason })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::parse;

    fn dialog(call_id: &str) -> Dialog {
        Dialog {
            call_id: call_id.into(),
            local_tag: "lt".into(),
            remote_tag: "rt".into(),
            peer: "10.0.0.1:5060".parse().unwrap(),
            remote_cseq: 5,
            confirmed: false,
            invite: InviteRecord {
                branch: "z9hG4bKa".into(),
                sent_by: "10.0.0.1:5060".into(),
                cseq: 5,
                response: "SIP/2.0 200 OK\r\n\r\n".into(),
            },
            sdp_version: 1,
            offer_pending: false,
            update: None,
            pending: Some(SyncSeq(3)),
        }
    }

    fn req(method: &str, to_tag: &str, cseq: u32) -> Message {
        let text = format!(
            "{method} sip:x@h SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKb\r\nFrom: <sip:a@h>;tag=rt\r\n\
             To: <sip:x@h>{to_tag}\r\nCall-ID: c1/x\r\nCSeq: {cseq} {method}\r\n\r\n"
        );
        parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn value_round_trip_checks_key_and_drops_local_fields() {
        let d = dialog("c1/x");
        assert_eq!(d.key(), "dialog/c1/x/lt/rt");
        let back = Dialog::from_entry(&d.key(), d.to_value()).unwrap();
        assert_eq!(
            back,
            Dialog {
                pending: None,
                ..d.clone()
            }
        );
        assert!(matches!(
            Dialog::from_entry("dialog/other/lt/rt", d.to_value()),
            Err(DialogValueError::KeyMismatch { .. })
        ));
        assert!(matches!(
            Dialog::from_entry("x", d.to_value()),
            Err(DialogValueError::NotADialogKey(_))
        ));
        assert!(matches!(
            Dialog::from_entry("dialog/a/b/c", serde_json::json!({"call_id": 3})),
            Err(DialogValueError::BadValue { .. })
        ));
    }

    #[test]
    fn table_keeps_invite_index() {
        let mut t = Dialogs::default();
        let d = dialog("c1/x");
        t.insert(d.clone());
        t.insert(d.clone());
        assert_eq!(t.len(), 1);
        assert_eq!(t.by_invite(&d.invite_key()).map(|d| d.key()), Some(d.key()));
        assert!(t.remove_key(&d.key()).is_some());
        assert!(t.by_invite(&d.invite_key()).is_none());
        assert!(t.is_empty());
    }

    #[test]
    fn routing() {
        let mut t = Dialogs::default();
        t.insert(dialog("c1/x"));
        assert_eq!(route(&t, &req("INVITE", "", 1)).unwrap(), Route::NewDialog);
        assert!(matches!(
            route(&t, &req("INVITE", ";tag=lt", 6)).unwrap(),
            Route::ReInvite(_)
        ));
        assert!(matches!(
            route(&t, &req("BYE", ";tag=lt", 6)).unwrap(),
            Route::Bye(_)
        ));
        assert_eq!(
            route(&t, &req("BYE", ";tag=lt", 4)).unwrap(),
            Route::Reject {
                code: 500,
                reason: "Server Internal Error"
            }
        );
        assert_eq!(route(&t, &req("BYE", ";tag=zz", 6)).unwrap(), NO_DIALOG);
        assert_eq!(route(&t, &req("BYE", "", 6)).unwrap(), NO_DIALOG);
        assert_eq!(route(&t, &req("OPTIONS", "", 1)).unwrap(), Route::Options);
        assert_eq!(route(&t, &req("CANCEL", "", 1)).unwrap(), Route::Cancel);
        assert_eq!(route(&t, &req("REGISTER", "", 1)).unwrap(), Route::Register);
        assert_eq!(
            route(&t, &req("SUBSCRIBE", "", 1)).unwrap(),
            Route::Reject {
                code: 405,
                reason: "Method Not Allowed"
            }
        );
        assert_eq!(
            route(&t, &req("FROB", "", 1)).unwrap(),
            Route::Reject {
                code: 501,
                reason: "Not Implemented"
            }
        );
    }

    #[test]
    fn requests_inside_a_dialog_need_it() {
        let mut t = Dialogs::default();
        t.insert(dialog("c1/x"));
        for m in ["INFO", "UPDATE", "MESSAGE"] {
            assert!(
                matches!(
                    route(&t, &req(m, ";tag=lt", 6)).unwrap(),
                    Route::InDialog(_)
                ),
                "{m}"
            );
            assert_eq!(route(&t, &req(m, ";tag=zz", 6)).unwrap(), NO_DIALOG, "{m}");
            assert!(
                matches!(
                    route(&t, &req(m, ";tag=lt", 4)).unwrap(),
                    Route::Reject { code: 500, .. }
                ),
                "{m} out of order"
            );
        }
        assert_eq!(route(&t, &req("INFO", "", 6)).unwrap(), NO_DIALOG);
        assert_eq!(route(&t, &req("UPDATE", "", 6)).unwrap(), NO_DIALOG);
        assert_eq!(route(&t, &req("MESSAGE", "", 1)).unwrap(), Route::Accept);
        assert_eq!(route(&t, &req("PRACK", ";tag=lt", 6)).unwrap(), NO_DIALOG);
    }
}
