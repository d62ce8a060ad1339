//! A late write's way to the new ACT: offered over a connection of its
//! own (op `late`), again while the peer is still taking over.

use super::{ask, seal, PEER_PORT, PEER_TIMEOUT};
use duplex_core::replica_key::ReplicaKey;
use serde_json::{json, Value};
use std::io::BufReader;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// The peer's answer to a late write while it is not ACT yet.
pub(super) const NOT_ACT_YET: &str = "not_act_yet";
/// Pause between offers of a late write to a peer not ACT yet.
const LATE_RETRY: Duration = Duration::from_millis(50);

/// Offers a late write to the peer until `deadline`: the peer may still be
/// taking over (it answers [`NOT_ACT_YET`]). Between offers, `take_here`
/// may take it instead (this VM is ACT again, the handover rolled back).
/// True if taken by either.
pub(super) fn hand_on(
    peer: Ipv4Addr,
    key: Option<&ReplicaKey>,
    req: &Value,
    prev: Option<&Value>,
    deadline: std::time::Instant,
    take_here: impl Fn() -> bool,
) -> bool {
    let addr = SocketAddr::from((peer, PEER_PORT));
    let mut msg = json!({"op": "late", "write": req});
    if let Some(p) = prev {
        msg["prev"] = p.clone();
    }
    loop {
        let answer = TcpStream::connect_timeout(&addr, PEER_TIMEOUT)
            .ok()
            .and_then(|s| {
                let _ = s.set_read_timeout(Some(PEER_TIMEOUT));
                let _ = s.set_nodelay(true);
                let mut r = BufReader::new(s);
                let mut halves = seal::client(&mut r, key).ok()?;
                ask(&mut r, &mut halves, &msg)
            });
        match answer {
            Some(a) if a["ok"] == json!(true) => return true,
            Some(a) if a["error"] != json!(NOT_ACT_YET) => {
                eprintln!(
                    "duplex guest: late {} of {} not taken by {peer}: {}",
                    req["op"], req["key"], a["error"]
                );
                return false;
            }
            // Not ACT yet, or not reachable: try again while it may come up.
            _ if std::time::Instant::now() + LATE_RETRY < deadline => {
                std::thread::sleep(LATE_RETRY);
                if take_here() {
                    return true;
                }
            }
            _ => {
                eprintln!(
                    "duplex guest: late {} of {} not taken: {peer} did not become ACT in time",
                    req["op"], req["key"]
                );
                return false;
            }
        }
    }
}
