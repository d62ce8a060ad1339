//! The agent <-> guest control channel protocol, version 1.
//!
//! Framing: one JSON object per line (`\n`), UTF-8, at most [`MAX_LINE`]
//! bytes. Three kinds of frame:
//!
//! ```text
//! {"kind":"req","v":1,"id":7,"op":"status"}                      agent -> guest
//! {"kind":"res","v":1,"id":7,"ok":{...}}                         guest -> agent
//! {"kind":"res","v":1,"id":7,"err":{"code":"unknown_op","message":"..."}}
//! {"kind":"evt","v":1,"event":"ready","data":{...}}              guest -> agent
//! ```
//!
//! A request that cannot be understood is answered with an `err` response
//! carrying its id when the id could be read (id 0 otherwise); it never ends
//! the session on either side.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::Ipv4Addr;

pub const VERSION: u32 = 1;
pub const MAX_LINE: usize = 64 * 1024;
/// Name of the virtio-serial port carrying this protocol.
pub const PORT_NAME: &str = "org.duplex.ctl";

/// Operations the agent may ask of the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// Versions, name, boot id.
    Hello,
    /// Role, service health, restart counters.
    Status,
    /// The pair's service address, the peer's address (state sync, peer
    /// heartbeat) and the witness: an address on the service network (its
    /// gateway, say) the guest pings to tell, when it loses its peer,
    /// whether it is the one cut off.
    Configure {
        vip: Ipv4Addr,
        vip_prefix_len: u8,
        #[serde(default)]
        peer: Option<Ipv4Addr>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        witness: Option<Ipv4Addr>,
        /// The pair's replication key: every message to and from the peer
        /// is authenticated with it (`None`: a pair made before keys).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<crate::replica_key::ReplicaKey>,
    },
    /// Become ACT or SBY.
    SetRole { role: TargetRole, token: u64 },
    /// Switchover step 1, on the ACT: release the service address.
    SwitchoverPrepare { token: u64 },
    /// Switchover step 3, on the old ACT once the peer is ACT: become SBY.
    SwitchoverCommit { token: u64 },
    /// Perform one in-guest restart phase.
    RestartPhase { phase: RestartPhase },
    /// Benchmark load: a process that keeps rewriting `mib` MiB of memory
    /// at `mib_per_s` (the dirty rate that makes live migration's final
    /// pause grow). `mib` 0 stops it. `while_act`: the process runs only
    /// while this VM is ACT (stopped, not ended, while it is not), as the
    /// work of a service that serves on the ACT alone would.
    MemoryLoad {
        mib: u32,
        mib_per_s: u32,
        #[serde(default)]
        while_act: bool,
    },
    /// Inject a fault for a test or a drill (S3's failure classes); the
    /// agent forwards it only when started with `--allow-faults`.
    InjectFault { fault: Fault },
    /// S3's LAF backup: a page of the service's replicated store, in key
    /// order, after key `after` (from the start if `None`); answered with
    /// a [`crate::service_data::BackupPage`].
    Backup {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
    },
    /// PH3.0 / PH3.5: a page of the data set a re-created VM starts from
    /// (LAF or REF); `first` replaces what the store holds. Refused once
    /// the VM has a role: its pair's state is newer then.
    Restore {
        entries: serde_json::Map<String, Value>,
        first: bool,
        /// What it is, for the guest's log ("LAF v3 of pa").
        source: String,
    },
    /// Run the takeover path once with nothing at stake (the agent sends it
    /// after a VM arrived by live migration): under emulation, code not run
    /// since the move is translated first, which made the first takeover
    /// after a move several times slower than the next.
    Rehearse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetRole {
    Act,
    Sby,
}

/// The restart phases the guest performs itself (S3's PH0.5-PH2.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RestartPhase {
    /// One process reset: the service process is killed and restarted.
    #[serde(rename = "PH0.5")]
    Ph0_5,
    /// Application re-initialized: service stopped, reset hook, started.
    #[serde(rename = "PH1.0")]
    Ph1_0,
    /// Application and middleware re-initialized: the middleware restarts
    /// itself too.
    #[serde(rename = "PH2.0")]
    Ph2_0,
}

/// A fault is inflicted this long after the guest answered the order
/// (so that the answer gets out first).
pub const FAULT_DELAY_MS: u64 = 200;

/// A fault the guest inflicts on itself (`Op::InjectFault`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// SIGKILL the service process.
    KillService,
    /// SIGSTOP the service process and its children: it stops answering.
    HangService,
    /// The middleware ends at once (as a crash would).
    KillMiddleware,
    /// The guest kernel panics (`/proc/sysrq-trigger`).
    Panic,
    /// The service's data is declared damaged: the service is stopped
    /// and reported as one that exits with code 65 at start would be.
    DamageData,
}

impl Fault {
    pub const ALL: [Fault; 5] = [
        Fault::KillService,
        Fault::HangService,
        Fault::KillMiddleware,
        Fault::Panic,
        Fault::DamageData,
    ];
}

/// Name of the event the middleware sends when it finds the service (or
/// itself) failed; its data is a [`ServiceFailed`]. It is sent once per
/// failure; the restart that follows is the controller's to order.
pub const SERVICE_FAILED_EVENT: &str = "service_failed";

/// The data of the `service_failed` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceFailed {
    pub cause: crate::escalation::Cause,
    pub detail: String,
}

impl Op {
    /// The role command and token an op carries, if it is one.
    pub fn role_command(&self) -> Option<(crate::role::RoleCommand, u64)> {
        use crate::role::RoleCommand as C;
        match *self {
            Op::SetRole {
                role: TargetRole::Act,
                token,
            } => Some((C::BecomeActive, token)),
            Op::SetRole {
                role: TargetRole::Sby,
                token,
            } => Some((C::BecomeStandby, token)),
            Op::SwitchoverPrepare { token } => Some((C::SwitchoverPrepare, token)),
            Op::SwitchoverCommit { token } => Some((C::SwitchoverCommit, token)),
            _ => None,
        }
    }
}

/// Period of the guest's `heartbeat` event (the watchdog input).
pub const HEARTBEAT_MS: u64 = 1000;
/// Name of the guest's periodic event, sent at once too when it loses or
/// regains its peer.
pub const HEARTBEAT_EVENT: &str = "heartbeat";

/// UDP port of the guest-to-guest heartbeat on the service network.
pub const PEER_BEAT_PORT: u16 = 7002;
/// Period of the guest-to-guest heartbeat.
pub const PEER_BEAT_MS: u64 = 100;
/// Silence after which a guest says its peer is lost (four beats).
pub const PEER_LOST_MS: u64 = 400;

/// What a guest hears of its pair peer (or of the witness, which it pings
/// as often as it beats), once it has heard it at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHeard {
    /// Time since its last beat (or echo reply).
    pub silent_ms: u64,
    /// Silent longer than [`PEER_LOST_MS`].
    pub lost: bool,
}

/// The data of the `heartbeat` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub seq: u64,
    pub role: crate::role::Role,
    /// The service supervisor's status.
    pub service: Value,
    /// `None`: no peer configured, or never heard since it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerHeard>,
    /// What it hears of the witness; `None`: no witness configured, or
    /// never answered since it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness: Option<PeerHeard>,
    /// On the ACT: its peer holds every write (a live replication link
    /// that missed nothing since its snapshot). `None`: not ACT, or a
    /// guest that does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_synced: Option<bool>,
    /// The guest kernel's boot id: a heartbeat with a new one comes from
    /// a guest that booted again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
}

impl Heartbeat {
    /// It stopped hearing its peer.
    pub fn peer_lost(&self) -> bool {
        self.peer.is_some_and(|p| p.lost)
    }

    /// It stopped hearing the witness: it is cut off the service network.
    pub fn cut_off(&self) -> bool {
        self.witness.is_some_and(|w| w.lost)
    }

    /// What the agent reports at once when it changes: (peer lost, cut off).
    pub fn alarm(&self) -> (bool, bool) {
        (self.peer_lost(), self.cut_off())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProtoError {
    pub code: String,
    pub message: String,
}

/// Error codes a guest answers before it acts: the op changed nothing.
pub const REFUSED: &str = "refused";
pub const NOT_CONFIGURED: &str = "not_configured";
/// Error code of a role change whose effect failed midway: it may have
/// changed something.
pub const EFFECT_FAILED: &str = "effect_failed";

impl ProtoError {
    /// The guest refused before acting (stale token, a transition its role
    /// machine forbids, no configuration yet): nothing to undo.
    pub fn changed_nothing(&self) -> bool {
        self.code == REFUSED || self.code == NOT_CONFIGURED
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Request {
        id: u64,
        op: Op,
    },
    Response {
        id: u64,
        result: Result<Value, ProtoError>,
    },
    Event {
        event: String,
        data: Value,
    },
}

/// Why a line could not be decoded; `id` is set when the line was a request
/// whose id could be read, so the error can be answered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecodeError {
    pub id: Option<u64>,
    pub code: &'static str,
    pub message: String,
}

impl DecodeError {
    fn new(id: Option<u64>, code: &'static str, message: impl Into<String>) -> Self {
        DecodeError {
            id,
            code,
            message: message.into(),
        }
    }

    /// The response frame that answers this error.
    pub fn reply(&self) -> Frame {
        Frame::Response {
            id: self.id.unwrap_or(0),
            result: Err(ProtoError {
                code: self.code.to_string(),
                message: self.message.clone(),
            }),
        }
    }
}

pub fn encode(frame: &Frame) -> String {
    let v = match frame {
        Frame::Request { id, op } => {
            let mut v = serde_json::to_value(op).unwrap_or_else(|_| json!({}));
            if let Value::Object(m) = &mut v {
                m.insert("kind".into(), json!("req"));
                m.insert("v".into(), json!(VERSION));
                m.insert("id".into(), json!(id));
            }
            v
        }
        Frame::Response { id, result } => match result {
            Ok(ok) => json!({"kind":"res","v":VERSION,"id":id,"ok":ok}),
            Err(e) => json!({"kind":"res","v":VERSION,"id":id,"err":e}),
        },
        Frame::Event { event, data } => {
            json!({"kind":"evt","v":VERSION,"event":event,"data":data})
        }
    };
    let mut s = v.to_string();
    s.push('\n');
    s
}

pub fn decode(line: &str) -> Result<Frame, DecodeError> {
    let line = line.trim_end_matches(['\n', '\r']);
    if line.len() > MAX_LINE {
        return Err(DecodeError::new(
            None,
            "too_long",
            format!("line of {} bytes exceeds {MAX_LINE}", line.len()),
        ));
    }
    let v: Value = serde_json::from_str(line)
        .map_err(|e| DecodeError::new(None, "bad_json", e.to_string()))?;
    let Value::Object(mut m) = v else {
        return Err(DecodeError::new(
            None,
            "bad_frame",
            "a frame must be a JSON object",
        ));
    };
    let id = m.get("id").and_then(Value::as_u64);
    let kind = m.remove("kind");
    match m.remove("v").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(VERSION) => {}
        Some(v) => {
            return Err(DecodeError::new(
                id,
                "bad_version",
                format!("version {v} not supported (speaks {VERSION})"),
            ))
        }
        None => return Err(DecodeError::new(id, "bad_frame", "missing field `v`")),
    }
    match kind.as_ref().and_then(Value::as_str) {
        Some("req") => {
            let id = id.ok_or_else(|| {
                DecodeError::new(None, "bad_frame", "request without a numeric `id`")
            })?;
            m.remove("id");
            let op_name = m.get("op").and_then(Value::as_str).map(str::to_string);
            let given: Vec<String> = m.keys().cloned().collect();
            let op: Op = serde_json::from_value(Value::Object(m)).map_err(|e| match op_name {
                Some(name) if !KNOWN_OPS.contains(&name.as_str()) => {
                    DecodeError::new(Some(id), "unknown_op", format!("unknown op `{name}`"))
                }
                _ => DecodeError::new(Some(id), "bad_args", e.to_string()),
            })?;
            // serde ignores extra fields next to a unit variant's tag: refuse
            // them here so a typo never passes silently.
            let known = serde_json::to_value(&op).unwrap_or(Value::Null);
            if let Some(extra) = given.iter().find(|k| known.get(k.as_str()).is_none()) {
                return Err(DecodeError::new(
                    Some(id),
                    "bad_args",
                    format!("unexpected field `{extra}`"),
                ));
            }
            Ok(Frame::Request { id, op })
        }
        Some("res") => {
            let id = id.ok_or_else(|| {
                DecodeError::new(None, "bad_frame", "response without a numeric `id`")
            })?;
            let result = match (m.remove("ok"), m.remove("err")) {
                (Some(ok), None) => Ok(ok),
                (None, Some(err)) => Err(serde_json::from_value(err)
                    .map_err(|e| DecodeError::new(None, "bad_frame", format!("bad `err`: {e}")))?),
                _ => {
                    return Err(DecodeError::new(
                        None,
                        "bad_frame",
                        "a response has exactly one of `ok`, `err`",
                    ))
                }
            };
            Ok(Frame::Response { id, result })
        }
        Some("evt") => {
            let event = m
                .remove("event")
                .and_then(|e| e.as_str().map(str::to_string))
                .ok_or_else(|| {
                    DecodeError::new(None, "bad_frame", "event without a string `event`")
                })?;
            let data = m.remove("data").unwrap_or(Value::Null);
            Ok(Frame::Event { event, data })
        }
        Some(other) => Err(DecodeError::new(
            id,
            "bad_frame",
            format!("unknown kind `{other}`"),
        )),
        None => Err(DecodeError::new(
            id,
            "bad_frame",
            "missing string field `kind`",
        )),
    }
}

const KNOWN_OPS: &[&str] = &[
    "hello",
    "status",
    "configure",
    "set_role",
    "switchover_prepare",
    "switchover_commit",
    "restart_phase",
    "memory_load",
    "inject_fault",
    "backup",
    "restore",
    "rehearse",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_before_acting_changed_nothing() {
        let e = |code: &str| ProtoError {
            code: code.into(),
            message: String::new(),
        };
        assert!(e(REFUSED).changed_nothing() && e(NOT_CONFIGURED).changed_nothing());
        assert!(!e(EFFECT_FAILED).changed_nothing() && !e("conflict").changed_nothing());
    }

    #[test]
    fn round_trips() {
        let frames = vec![
            Frame::Request {
                id: 1,
                op: Op::Hello,
            },
            Frame::Request {
                id: u64::MAX,
                op: Op::Status,
            },
            Frame::Response {
                id: 2,
                result: Ok(json!({"role":"none"})),
            },
            Frame::Response {
                id: 3,
                result: Err(ProtoError {
                    code: "x".into(),
                    message: "y".into(),
                }),
            },
            Frame::Event {
                event: "ready".into(),
                data: json!({"boot_id":"b"}),
            },
        ];
        for f in frames {
            let line = encode(&f);
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            assert_eq!(decode(&line).unwrap(), f);
        }
    }

    #[test]
    fn op_names_cover_every_op() {
        for op in [
            Op::Hello,
            Op::Status,
            Op::Configure {
                vip: Ipv4Addr::new(10, 0, 0, 9),
                vip_prefix_len: 24,
                peer: None,
                witness: Some(Ipv4Addr::new(10, 0, 0, 1)),
                key: Some(crate::replica_key::ReplicaKey([7; 32])),
            },
            Op::SetRole {
                role: TargetRole::Sby,
                token: 1,
            },
            Op::SwitchoverPrepare { token: 1 },
            Op::SwitchoverCommit { token: 1 },
            Op::RestartPhase {
                phase: RestartPhase::Ph2_0,
            },
            Op::MemoryLoad {
                mib: 1,
                mib_per_s: 1,
                while_act: true,
            },
            Op::InjectFault {
                fault: Fault::HangService,
            },
            Op::Backup { after: None },
            Op::Restore {
                entries: serde_json::Map::new(),
                first: true,
                source: "REF v1 of a".into(),
            },
            Op::Rehearse,
        ] {
            let v = serde_json::to_value(&op).unwrap();
            assert!(KNOWN_OPS.contains(&v["op"].as_str().unwrap()));
        }
    }

    #[test]
    fn malformed_input_is_an_answerable_error() {
        let cases: &[(&str, Option<u64>, &str)] = &[
            ("", None, "bad_json"),
            ("not json", None, "bad_json"),
            ("[1,2]", None, "bad_frame"),
            (r#"{"kind":"req","id":1}"#, Some(1), "bad_frame"),
            (
                r#"{"kind":"req","v":2,"id":4,"op":"hello"}"#,
                Some(4),
                "bad_version",
            ),
            (r#"{"kind":"req","v":1,"op":"hello"}"#, None, "bad_frame"),
            (
                r#"{"kind":"req","v":1,"id":5,"op":"reboot_host"}"#,
                Some(5),
                "unknown_op",
            ),
            (
                r#"{"kind":"req","v":1,"id":6,"op":"hello","extra":1}"#,
                Some(6),
                "bad_args",
            ),
            (r#"{"kind":"req","v":1,"id":7}"#, Some(7), "bad_args"),
            (
                r#"{"kind":"res","v":1,"id":7,"ok":1,"err":{}}"#,
                None,
                "bad_frame",
            ),
            (r#"{"kind":"evt","v":1}"#, None, "bad_frame"),
            (r#"{"kind":"zzz","v":1,"id":9}"#, Some(9), "bad_frame"),
        ];
        for (line, id, code) in cases {
            let e = decode(line).unwrap_err();
            assert_eq!((e.id, e.code), (*id, *code), "{line}: {e}");
            assert!(matches!(e.reply(), Frame::Response { result: Err(_), .. }));
        }
        let long = "x".repeat(MAX_LINE + 1);
        assert_eq!(decode(&long).unwrap_err().code, "too_long");
    }
}
