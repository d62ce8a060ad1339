//! Lines of the middleware's replication protocol (docs/conventions.md,
//! "Service state replication"): encoding of requests, decoding of answers
//! and unsolicited events. Pure.

use crate::uas::{Owed, SyncOp};
use serde_json::{json, Map, Value};

/// The request line that asks the middleware to hand a reply this VM
/// could not send (it just gave up the service address) to the new ACT.
pub fn send_line(o: &Owed) -> Option<String> {
    let data = std::str::from_utf8(&o.data).ok()?;
    Some(format!(
        "{}\n",
        json!({"op": "send", "to": o.to.to_string(), "data": data})
    ))
}

/// `get_all` request line.
pub fn get_all_line() -> String {
    format!("{}\n", json!({"op": "get_all"}))
}

/// The request line for a sync op.
pub fn request_line(op: &SyncOp) -> String {
    let v = match op {
        SyncOp::Put { key, value } => json!({"op": "put", "key": key, "value": value}),
        SyncOp::Del { key, reply } => {
            let mut v = json!({"op": "del", "key": key});
            // SIP text; one that is not UTF-8 is not carried (the client's
            // retransmission is answered instead).
            if let Some(data) = reply
                .as_ref()
                .and_then(|r| std::str::from_utf8(&r.data).ok())
            {
                v["reply"] = json!({"to": reply.as_ref().map(|r| r.to.to_string()), "data": data});
            }
            v
        }
    };
    format!("{v}\n")
}

/// A line from the middleware.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// Unsolicited (on the SBY): the peer's write.
    Event(SyncOp),
    /// Unsolicited (on the ACT, `"late":true`): a write the old ACT's
    /// service made just after the handover, taken by this ACT, whose
    /// service now answers the client in its place.
    Taken(SyncOp),
    /// The answer to the oldest unanswered request.
    Answer(Answer),
    /// Unsolicited (on the ACT, `{"event":"send",...}`): a reply the old
    /// ACT's service could not send (its address was gone), to send here.
    Send(Owed),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `{"ok":true}`: the peer holds it.
    Replicated,
    /// `{"ok":true,"replicated":false}`: stored, no reachable peer.
    Unreplicated,
    /// `{"ok":true,"entries":{...}}`: answer to `get_all`.
    Entries(Map<String, Value>),
    /// `{"ok":false,"error":"..."}` (e.g. `not_active`).
    Refused(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("neither an answer nor an event: {0}")]
    Unknown(String),
}

fn short(line: &str) -> String {
    line.chars().take(120).collect()
}

/// A `del`'s `reply` (`{"to":"ip:port","data":"..."}`); one that is
/// malformed is ignored: the client's retransmission gets the answer.
fn owed(v: Option<&Value>) -> Option<Owed> {
    let v = v?;
    Some(Owed {
        to: v.get("to")?.as_str()?.parse().ok()?,
        data: v.get("data")?.as_str()?.as_bytes().to_vec(),
    })
}

pub fn decode_line(line: &str) -> Result<Incoming, LineError> {
    let v: Value =
        serde_json::from_str(line.trim()).map_err(|e| LineError::NotJson(e.to_string()))?;
    if v.get("event").and_then(Value::as_str) == Some("send") {
        return owed(Some(&v))
            .map(Incoming::Send)
            .ok_or_else(|| LineError::Unknown(short(line)));
    }
    if let Some(ev) = v.get("event").and_then(Value::as_str) {
        let key = v
            .get("key")
            .and_then(Value::as_str)
            .ok_or_else(|| LineError::Unknown(short(line)))?
            .to_string();
        let op = match ev {
            "put" => SyncOp::Put {
                key,
                value: v.get("value").cloned().unwrap_or(Value::Null),
            },
            "del" => SyncOp::Del {
                key,
                reply: owed(v.get("reply")),
            },
            _ => return Err(LineError::Unknown(short(line))),
        };
        return Ok(match v.get("late") {
            Some(Value::Bool(true)) => Incoming::Taken(op),
            _ => Incoming::Event(op),
        });
    }
    match v.get("ok").and_then(Value::as_bool) {
        Some(true) => {
            if let Some(entries) = v.get("entries").and_then(Value::as_object) {
                Ok(Incoming::Answer(Answer::Entries(entries.clone())))
            } else if v.get("replicated") == Some(&Value::Bool(false)) {
                Ok(Incoming::Answer(Answer::Unreplicated))
            } else {
                Ok(Incoming::Answer(Answer::Replicated))
            }
        }
        Some(false) => {
            let err = v
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("unspecified error")
                .to_string();
            Ok(Incoming::Answer(Answer::Refused(err)))
        }
        None => Err(LineError::Unknown(short(line))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_requests() {
        let put = SyncOp::Put {
            key: "dialog/a/b/c".into(),
            value: json!({"x": 1}),
        };
        let v: Value = serde_json::from_str(&request_line(&put)).unwrap();
        assert_eq!(
            v,
            json!({"op": "put", "key": "dialog/a/b/c", "value": {"x": 1}})
        );
        let v: Value = serde_json::from_str(&request_line(&SyncOp::del("k"))).unwrap();
        assert_eq!(v, json!({"op": "del", "key": "k"}));
        let bye_ok = SyncOp::Del {
            key: "k".into(),
            reply: Some(Owed {
                to: "10.0.0.2:5060".parse().unwrap(),
                data: b"SIP/2.0 200 OK\r\n\r\n".to_vec(),
            }),
        };
        let v: Value = serde_json::from_str(&request_line(&bye_ok)).unwrap();
        assert_eq!(
            v,
            json!({"op": "del", "key": "k",
                   "reply": {"to": "10.0.0.2:5060", "data": "SIP/2.0 200 OK\r\n\r\n"}})
        );
        // What the middleware hands on is decoded back to the same op.
        let late = format!(
            "{{\"event\":\"del\",\"late\":true,\"key\":\"k\",\"reply\":{}}}",
            v["reply"]
        );
        assert_eq!(decode_line(&late), Ok(Incoming::Taken(bye_ok.clone())));
        // A reply the old ACT could not send: asked for, and pushed here.
        let SyncOp::Del { reply: Some(o), .. } = bye_ok else {
            unreachable!()
        };
        let ask: Value = serde_json::from_str(&send_line(&o).unwrap()).unwrap();
        assert_eq!(ask["op"], "send");
        let mut pushed = ask.clone();
        pushed["event"] = pushed["op"].take();
        pushed["late"] = json!(true);
        assert_eq!(decode_line(&pushed.to_string()), Ok(Incoming::Send(o)));
        assert!(matches!(
            decode_line("{\"event\":\"send\",\"to\":\"x\"}"),
            Err(LineError::Unknown(_))
        ));
        assert!(request_line(&put).ends_with('\n') && get_all_line() == "{\"op\":\"get_all\"}\n");
    }

    #[test]
    fn decodes_answers_and_events() {
        assert_eq!(
            decode_line("{\"ok\":true}\n"),
            Ok(Incoming::Answer(Answer::Replicated))
        );
        assert_eq!(
            decode_line("{\"ok\":true,\"replicated\":false}"),
            Ok(Incoming::Answer(Answer::Unreplicated))
        );
        assert_eq!(
            decode_line("{\"ok\":false,\"error\":\"not_active: only the ACT may write\"}"),
            Ok(Incoming::Answer(Answer::Refused(
                "not_active: only the ACT may write".into()
            )))
        );
        match decode_line("{\"ok\":true,\"entries\":{\"k\":{\"a\":1}}}") {
            Ok(Incoming::Answer(Answer::Entries(m))) => assert_eq!(m["k"], json!({"a": 1})),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            decode_line("{\"event\":\"put\",\"key\":\"k\",\"value\":[1]}"),
            Ok(Incoming::Event(SyncOp::Put {
                key: "k".into(),
                value: json!([1])
            }))
        );
        assert_eq!(
            decode_line("{\"event\":\"put\",\"key\":\"k\",\"value\":1,\"late\":true}"),
            Ok(Incoming::Taken(SyncOp::Put {
                key: "k".into(),
                value: json!(1)
            }))
        );
        assert_eq!(
            decode_line("{\"event\":\"del\",\"key\":\"k\"}"),
            Ok(Incoming::Event(SyncOp::del("k")))
        );
        // A malformed reply is dropped, the Del kept.
        assert_eq!(
            decode_line(
                "{\"event\":\"del\",\"key\":\"k\",\"reply\":{\"to\":\"nowhere\",\"data\":\"x\"}}"
            ),
            Ok(Incoming::Event(SyncOp::del("k")))
        );
        assert!(matches!(
            decode_line("{\"event\":\"zap\",\"key\":\"k\"}"),
            Err(LineError::Unknown(_))
        ));
        assert!(matches!(
            decode_line("{\"event\":\"put\"}"),
            Err(LineError::Unknown(_))
        ));
        assert!(matches!(decode_line("{}"), Err(LineError::Unknown(_))));
        assert!(matches!(decode_line("nope"), Err(LineError::NotJson(_))));
    }
}
