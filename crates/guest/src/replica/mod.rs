//! The replicated key-value store the middleware offers services
//! (protocol in docs/conventions.md). On the ACT a service's `put`/`del` is
//! stored, sent to the peer's middleware over TCP (port 7001 on the service
//! LAN) and answered once the peer acknowledged it: synchronous per update.
//! A service's requests are stored and sent to the peer as soon as they
//! arrive, even while an earlier one waits for the peer's answer (the link
//! is pipelined, [`crate::peer_link`]): a slow peer (being live-migrated,
//! say) delays each answer by its round trip, never keeps an update out of
//! the store or off the wire, so the handover barrier sees every update a
//! service sent before it.
//! On the SBY the peer's updates are stored and pushed to local services.
//! When the link (re)connects the ACT first sends a full snapshot.

mod hand_on;

use crate::peer_link::{PeerLink, Ticket};
use hand_on::{hand_on, NOT_ACT_YET};
use seal::{Seal, Unseal};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod admit;
pub mod seal;

pub const PEER_PORT: u16 = 7001;
const PEER_TIMEOUT: Duration = Duration::from_millis(1000);
/// After a failed connection to the peer, writes do not try again (each
/// try can block for [`PEER_TIMEOUT`]) for this long: they are answered
/// unreplicated at once.
const PEER_RETRY: Duration = Duration::from_secs(1);
/// How long after giving up ACT a service's late write is handed to the
/// peer (see [`Taken::HandOn`]).
const LATE_WINDOW: Duration = Duration::from_secs(5);

/// Whether this middleware currently may write (is ACT).
pub trait RoleView: Send + Sync {
    fn is_active(&self) -> bool;
    fn peer(&self) -> Option<Ipv4Addr>;
    /// The guest-to-guest heartbeat says the peer is gone: writes are
    /// answered unreplicated at once instead of waiting on a connection or
    /// an answer that will not come (the peer's host may be powered off).
    fn peer_lost(&self) -> bool {
        false
    }
    /// The guest-to-guest heartbeat hears the peer now.
    fn peer_heard(&self) -> bool {
        false
    }
    /// The pair's replication key ([`seal`]); `None`: plain lines.
    fn key(&self) -> Option<duplex_core::replica_key::ReplicaKey> {
        None
    }
}

/// A service request after [`Replica::take_service`].
#[derive(Debug)]
pub enum Taken {
    Answer(Value),
    /// `get_all`: the store as it is when the answer is written, under the
    /// connection's writer lock, so that every change pushed after it
    /// comes after it (taken earlier, a change pushed meanwhile would be
    /// undone by the older dump: a deleted dialog back on the SBY).
    Dump,
    /// Stored here and sent to the peer (`None`: no link); the answer
    /// waits for the peer's.
    Replicate(Option<Posted>),
    /// A write that reached the middleware once the handover barrier had
    /// begun, or just after this VM gave up ACT (the service handled a
    /// request that arrived before the handover):
    /// not stored here, but offered to the peer, now ACT, which takes it
    /// if it changes nothing the peer wrote since (`late` message). The
    /// service is told `not_active` either way and forgets what it did;
    /// the new ACT's service gets the write as an event and carries on
    /// (for a dialog: retransmits its 200 OK).
    HandOn {
        write: Value,
        /// The key's value here when the write came (`None`: absent): the
        /// peer takes a `put` over exactly that value.
        prev: Option<Value>,
    },
}

/// A write sent to the peer on one link.
#[derive(Debug)]
pub struct Posted {
    ticket: Ticket,
    /// Which link ([`Replica::links`]) carried it.
    link: u64,
}

#[derive(Default)]
pub struct Replica {
    kv: Mutex<BTreeMap<String, Value>>,
    /// Local service connections, for pushes on the SBY. Each is the
    /// connection's one writer, shared with its answers: a line is written
    /// whole under its lock, so an event never lands inside an answer (a
    /// large `get_all` dump is written in several parts).
    subscribers: Mutex<Vec<Writer<UnixStream>>>,
    /// ACT side: link to the peer (None = not connected). Locked before
    /// `kv` when both are.
    link: Mutex<Option<PeerLink>>,
    /// ACT side: no new connection to the peer before this (one failed).
    retry_at: Mutex<Option<Instant>>,
    /// ACT side: a local write may be missing on the peer (one was not
    /// acknowledged since the last snapshot it took). Cleared only with
    /// `link` locked, by a new link's snapshot; set when a write finds no
    /// link, or the link that carried it (by [`Self::links`]) is still the
    /// current one and did not store it. A write that failed with an
    /// older link is in the newer link's snapshot: writes are stored and
    /// posted with `link` locked, and a snapshot is taken with it locked.
    dirty: std::sync::atomic::AtomicBool,
    /// Links made so far: the current link's number.
    links: std::sync::atomic::AtomicU64,
    /// When this VM last gave up ACT (released the service address).
    left_act: Mutex<Option<std::time::Instant>>,
    /// The handover barrier has begun: writes are no longer taken as this
    /// ACT's own (they could miss the barrier) but handed on. Set and read
    /// with `kv` locked.
    handing_over: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Replica {
    pub fn len(&self) -> usize {
        lock(&self.kv).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn peer_connected(&self) -> bool {
        lock(&self.link).as_ref().is_some_and(|l| !l.is_dead())
    }

    /// On the ACT: no write is known to be missing on the peer. False
    /// from a missed write, a lost peer or a broken link (a restarted
    /// peer's middleware holds nothing) until the next snapshot.
    pub fn in_sync(&self) -> bool {
        !self.dirty.load(Ordering::SeqCst)
    }

    /// SHA-256 of the store's canonical JSON (keys sorted): equal on both
    /// sides exactly when they hold the same entries.
    fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let text = serde_json::to_vec(&*lock(&self.kv)).unwrap_or_default();
        Sha256::digest(&text)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Computes the store's digest once (see `Op::Rehearse`); the key count.
    pub fn rehearse(&self) -> usize {
        let _ = self.digest();
        self.len()
    }

    /// Drops the peer link on leaving ACT; writes that still arrive from a
    /// service for a short while are handed on to the peer.
    pub fn disconnect(&self) {
        *lock(&self.link) = None;
        *lock(&self.left_act) = Some(std::time::Instant::now());
        self.handing_over.store(false, Ordering::SeqCst);
    }

    fn recently_active(&self) -> bool {
        lock(&self.left_act).is_some_and(|t| t.elapsed() < LATE_WINDOW)
    }

    fn apply(&self, op: &Value) -> Result<(), String> {
        apply_to(&mut lock(&self.kv), op)
    }

    fn push(&self, event: &Value) {
        let line = format!("{event}\n");
        lock(&self.subscribers).retain(|s| lock(s).write_all(line.as_bytes()).is_ok());
    }

    /// Sends a write to the peer (with `link` locked, right after it was
    /// stored, so that writes reach the peer in the order they were
    /// stored); connects first if need be. `None`: no link, the peer will
    /// miss it (until the next snapshot).
    fn post(
        &self,
        link: &mut Option<PeerLink>,
        msg: &Value,
        roles: &dyn RoleView,
    ) -> Option<Posted> {
        self.relink(link, roles);
        match link {
            Some(l) => Some(Posted {
                ticket: l.post(msg),
                link: self.links.load(Ordering::SeqCst),
            }),
            None => {
                self.dirty.store(true, Ordering::SeqCst);
                None
            }
        }
    }

    /// Drops a dead link (or one to a lost peer) and, unless the peer is
    /// lost or was tried less than [`PEER_RETRY`] ago, connects anew with a
    /// full snapshot.
    fn relink(&self, link: &mut Option<PeerLink>, roles: &dyn RoleView) {
        if link.as_ref().is_some_and(PeerLink::is_dead) || roles.peer_lost() {
            // Dropping a live link fails the answers still owed at once.
            *link = None;
        }
        if link.is_none() && !roles.peer_lost() {
            let retry_at = *lock(&self.retry_at);
            *link = roles
                .peer()
                .filter(|_| retry_at.is_none_or(|t| Instant::now() >= t))
                .and_then(|peer| {
                    let l = self.connect_with_snapshot(peer, PEER_TIMEOUT, roles);
                    *lock(&self.retry_at) = l.is_none().then(|| Instant::now() + PEER_RETRY);
                    l
                });
        }
    }

    /// On the ACT, brings a peer that is back (rebooted, re-created) up to
    /// date at once, rather than at the service's next write: a peer that
    /// became SBY holds the service's state within a second of being heard
    /// again, even if nothing is written. True if a link is up.
    pub fn catch_up(&self, roles: &dyn RoleView) -> bool {
        // Neither heard nor lost: the heartbeat knows nothing yet (or does
        // not run), and a connection could block writes for its timeout.
        let known = roles.peer_heard() || roles.peer_lost();
        if !roles.is_active() || !known || self.handing_over.load(Ordering::SeqCst) {
            return false;
        }
        // A lost peer's link is dropped here (even with nothing written
        // meanwhile), so the peer gets a snapshot once it is heard again;
        // so is one that missed a write, so the peer gets it now rather
        // than at the next handover. A peer that was lost, or whose link
        // broke, may have restarted with nothing: it owes a snapshot too.
        let mut link = lock(&self.link);
        if roles.peer_lost() || link.as_ref().is_some_and(PeerLink::is_dead) {
            self.dirty.store(true, Ordering::SeqCst);
        }
        if self.dirty.load(Ordering::SeqCst) {
            *link = None;
        }
        self.relink(&mut link, roles);
        link.is_some()
    }

    /// Waits for the peer's answer to a posted write: true if it stored
    /// it. If not, and no newer link's snapshot covers it, the peer lacks
    /// it: it gets a snapshot at the next catch-up or barrier. (`None`:
    /// there was no link, which [`Self::post`] marked already.)
    fn settle(&self, posted: Option<Posted>) -> bool {
        let Some(Posted { ticket, link }) = posted else {
            return false;
        };
        let ok = ticket.wait().is_some_and(|a| a["ok"] == json!(true));
        if !ok {
            let _link = lock(&self.link);
            if self.links.load(Ordering::SeqCst) == link {
                self.dirty.store(true, Ordering::SeqCst);
            }
        }
        ok
    }

    /// A new link to the peer that starts with a full snapshot of the store
    /// (called with `link` locked).
    fn connect_with_snapshot(
        &self,
        peer: Ipv4Addr,
        timeout: Duration,
        roles: &dyn RoleView,
    ) -> Option<PeerLink> {
        let addr = SocketAddr::from((peer, PEER_PORT));
        let s = TcpStream::connect_timeout(&addr, timeout).ok()?;
        let _ = s.set_read_timeout(Some(timeout));
        let _ = s.set_nodelay(true);
        let mut r = BufReader::new(s);
        let mut halves = seal::client(&mut r, roles.key().as_ref())
            .map_err(|e| eprintln!("duplex guest: replication link to {peer}: {e}"))
            .ok()?;
        let snapshot = json!({"op": "snapshot", "entries": Value::Object(lock(&self.kv).clone().into_iter().collect::<Map<_, _>>())});
        if !exchange(&mut r, &mut halves, &snapshot) {
            return None;
        }
        let l = PeerLink::start(r.into_inner(), PEER_TIMEOUT, halves).ok()?;
        self.links.fetch_add(1, Ordering::SeqCst);
        self.dirty.store(false, Ordering::SeqCst);
        Some(l)
    }

    /// Handover barrier, on the ACT before it gives up the service address:
    /// the peer must hold every update (one that could not be replicated in
    /// time is not lost with the switchover). Updates are acknowledged one
    /// by one, so with the link up, none missed since the last snapshot and
    /// the peer's store digest equal to ours there is nothing to send (this
    /// runs while clients' frames are held: it must be quick); otherwise the
    /// peer gets a full snapshot. Err if it
    /// did not take it within `timeout`.
    pub fn sync_peer(&self, roles: &dyn RoleView, timeout: Duration) -> Result<usize, String> {
        {
            // From here on a service's write is handed on, not taken: one
            // taken after the digest or snapshot below would miss the peer.
            let _kv = lock(&self.kv);
            self.handing_over.store(true, Ordering::SeqCst);
        }
        let r = self.sync_peer_now(roles, timeout);
        if r.is_err() {
            // The handover is off: this VM stays ACT and takes writes again.
            self.handing_over.store(false, Ordering::SeqCst);
        }
        r
    }

    fn sync_peer_now(&self, roles: &dyn RoleView, timeout: Duration) -> Result<usize, String> {
        let peer = roles.peer().ok_or("no peer configured")?;
        let mut link = lock(&self.link);
        if !self.dirty.load(Ordering::SeqCst) {
            // One round trip proves the link and that the peer holds the
            // very same store (a restarted peer would not). Every stored
            // write went out before it, so the peer answers after them.
            let mine = self.digest();
            let theirs = link
                .as_mut()
                .and_then(|l| l.ask(&json!({"op": "digest"})))
                .filter(|v| v["ok"] == json!(true))
                .and_then(|v| v["digest"].as_str().map(str::to_string));
            if theirs.as_deref() == Some(mine.as_str()) {
                return Ok(self.len());
            }
        }
        *link = None;
        let r = self
            .connect_with_snapshot(peer, timeout, roles)
            .ok_or_else(|| {
                format!("peer {peer}:{PEER_PORT} did not take a snapshot within {timeout:?}")
            })?;
        *link = Some(r);
        Ok(lock(&self.kv).len())
    }

    /// On the ACT: a write the old ACT's service made just after the
    /// handover. A `put` is taken if the key is new here or still holds
    /// `prev`, the value the old ACT had (this ACT has not written it
    /// since: a dialog's confirmation by its ACK, say), a `del` if the key
    /// is still here; either is stored, replicated like this ACT's own
    /// writes, and pushed to the local services.
    fn take_late(&self, write: &Value, prev: Option<&Value>, roles: &dyn RoleView) -> Value {
        if !roles.is_active() {
            return json!({"ok": false, "error": NOT_ACT_YET});
        }
        if write["op"] == "send" {
            // Nothing to store: the service sends it from here.
            let mut ev = write.clone();
            if let Some(m) = ev.as_object_mut() {
                m.remove("op");
                m.insert("event".into(), json!("send"));
                m.insert("late".into(), json!(true));
            }
            self.push(&ev);
            return json!({"ok": true});
        }
        let Some(key) = write["key"].as_str() else {
            return json!({"ok": false, "error": "late write without a string `key`"});
        };
        let ticket = {
            // Checked and stored under one lock, and never once this ACT's
            // own handover barrier has begun: the write would miss it.
            let mut link = lock(&self.link);
            let mut kv = lock(&self.kv);
            if self.handing_over.load(Ordering::SeqCst) {
                return json!({"ok": false, "error": NOT_ACT_YET});
            }
            let present = kv.contains_key(key);
            let unchanged = prev.is_some() && kv.get(key) == prev;
            match write["op"].as_str() {
                Some("put") if !present || unchanged => {}
                Some("del") if present => {}
                Some("put" | "del") => return json!({"ok": false, "error": "superseded"}),
                other => return json!({"ok": false, "error": format!("unknown late op {other:?}")}),
            }
            if let Err(e) = apply_to(&mut kv, write) {
                return json!({"ok": false, "error": e});
            }
            drop(kv);
            self.post(&mut link, write, roles)
        };
        let event = if write["op"] == "put" { "put" } else { "del" };
        let mut ev = write.clone();
        if let Some(m) = ev.as_object_mut() {
            m.remove("op");
            m.insert("event".into(), json!(event));
            // The service answers the client now: nobody else will.
            m.insert("late".into(), json!(true));
        }
        // Replicated first, as any write is before its answer goes out.
        self.settle(ticket);
        self.push(&ev);
        json!({"ok": true})
    }

    /// A service's request; returns the answer line.
    pub fn handle_service(&self, req: &Value, roles: &dyn RoleView) -> Value {
        self.finish(self.take_service(req, roles), roles)
    }

    /// First half of a service's request, in arrival order: reads answer at
    /// once, writes are stored (the ACT's alone may write) and still owe
    /// the peer.
    pub fn take_service(&self, req: &Value, roles: &dyn RoleView) -> Taken {
        match req["op"].as_str() {
            Some("get_all") => Taken::Dump,
            // A reply the service could not send because this VM just gave
            // up the address: the new ACT's service sends it.
            Some("send") => {
                let leaving = self.handing_over.load(Ordering::SeqCst) || self.recently_active();
                if leaving && roles.peer().is_some() {
                    return Taken::HandOn {
                        write: req.clone(),
                        prev: None,
                    };
                }
                Taken::Answer(json!({"ok": false, "error": "not leaving ACT: nothing to hand on"}))
            }
            Some("put") | Some("del") => {
                if roles.is_active() {
                    let mut link = lock(&self.link);
                    let mut kv = lock(&self.kv);
                    if !self.handing_over.load(Ordering::SeqCst) {
                        return match apply_to(&mut kv, req) {
                            Ok(()) => {
                                drop(kv);
                                Taken::Replicate(self.post(&mut link, req, roles))
                            }
                            Err(e) => Taken::Answer(json!({"ok": false, "error": e})),
                        };
                    }
                }
                let leaving = self.handing_over.load(Ordering::SeqCst) || self.recently_active();
                if leaving && roles.peer().is_some() {
                    let prev = req["key"]
                        .as_str()
                        .and_then(|k| lock(&self.kv).get(k).cloned());
                    return Taken::HandOn {
                        write: req.clone(),
                        prev,
                    };
                }
                Taken::Answer(json!({"ok": false, "error": "not_active: only the ACT may write"}))
            }
            _ => Taken::Answer(json!({"ok": false, "error": format!("unknown request {req}")})),
        }
    }

    /// Second half, in the same order: a stored write goes to the peer.
    pub fn finish(&self, taken: Taken, roles: &dyn RoleView) -> Value {
        match taken {
            Taken::Answer(v) => v,
            Taken::Dump => {
                let entries = lock(&self.kv).clone().into_iter().collect();
                json!({"ok": true, "entries": Value::Object(entries)})
            }
            Taken::HandOn { write: req, prev } => {
                // Taken here again only as the ACT's own write (the
                // handover rolled back): then the service is answered as
                // for any write, and keeps it. Checked before the first
                // offer and between offers.
                if let Taken::Replicate(r) = self.take_service(&req, roles) {
                    return self.finish(Taken::Replicate(r), roles);
                }
                let deadline = std::time::Instant::now() + LATE_WINDOW;
                let here = std::cell::Cell::new(None);
                let take_here = || match self.take_service(&req, roles) {
                    Taken::Replicate(r) => {
                        here.set(Some(self.finish(Taken::Replicate(r), roles)));
                        true
                    }
                    _ => false,
                };
                let key = roles.key();
                let handed = roles.peer().is_some_and(|peer| {
                    hand_on(peer, key.as_ref(), &req, prev.as_ref(), deadline, take_here)
                });
                if let Some(answer) = here.take() {
                    return answer;
                }
                let error = if handed {
                    "not_active: handed on to the new ACT"
                } else {
                    "not_active: only the ACT may write (the new ACT did not take it)"
                };
                json!({"ok": false, "error": error})
            }
            Taken::Replicate(t) => match self.settle(t) {
                true => json!({"ok": true}),
                false => json!({"ok": true, "replicated": false}),
            },
        }
    }

    /// The store becomes `entries`; local services are told what changed.
    fn replace(&self, entries: BTreeMap<String, Value>) {
        let old = std::mem::replace(&mut *lock(&self.kv), entries.clone());
        for k in old.keys().filter(|k| !entries.contains_key(*k)) {
            self.push(&json!({"event": "del", "key": k}));
        }
        for (k, v) in entries.iter().filter(|(k, v)| old.get(*k) != Some(*v)) {
            self.push(&json!({"event": "put", "key": k, "value": v}));
        }
    }

    /// A page of the store after key `after`, for a LAF backup.
    pub fn backup_page(
        &self,
        after: Option<&str>,
    ) -> Result<duplex_core::service_data::BackupPage, duplex_core::service_data::PageError> {
        duplex_core::service_data::page(lock(&self.kv).iter(), after)
    }

    /// Stores a page of restored service data (PH3.0 / PH3.5; the first
    /// replaces the store) and tells local services; the key count after.
    pub fn restore(&self, entries: &Map<String, Value>, first: bool) -> usize {
        let mut next = if first {
            BTreeMap::new()
        } else {
            lock(&self.kv).clone()
        };
        next.extend(entries.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.replace(next);
        self.len()
    }

    /// A line from the ACT peer; the SBY stores and pushes it.
    pub fn handle_peer(&self, msg: &Value, roles: &dyn RoleView) -> Value {
        if msg["op"] == "late" {
            return self.take_late(&msg["write"], msg.get("prev"), roles);
        }
        if roles.is_active() {
            return json!({"ok": false, "error": "this VM is ACT; refusing updates from a peer"});
        }
        match msg["op"].as_str() {
            Some("snapshot") => {
                let entries: BTreeMap<String, Value> = msg["entries"]
                    .as_object()
                    .map(|m| m.clone().into_iter().collect())
                    .unwrap_or_default();
                self.replace(entries);
                json!({"ok": true})
            }
            Some("digest") => json!({"ok": true, "digest": self.digest()}),
            Some(op @ ("put" | "del")) => match self.apply(msg) {
                Ok(()) => {
                    let mut ev = msg.clone();
                    if let Some(m) = ev.as_object_mut() {
                        m.remove("op");
                        m.insert("event".into(), json!(op));
                    }
                    self.push(&ev);
                    json!({"ok": true})
                }
                Err(e) => json!({"ok": false, "error": e}),
            },
            _ => json!({"ok": false, "error": "unknown peer message"}),
        }
    }
}

fn apply_to(kv: &mut BTreeMap<String, Value>, op: &Value) -> Result<(), String> {
    let key = op["key"]
        .as_str()
        .ok_or("missing string `key`")?
        .to_string();
    match op["op"].as_str() {
        Some("put") => {
            kv.insert(key, op.get("value").cloned().unwrap_or(Value::Null));
        }
        Some("del") => {
            kv.remove(&key);
        }
        other => return Err(format!("unknown op {other:?}")),
    }
    Ok(())
}

/// Sends one line and tells whether the peer's answer says `ok`.
fn exchange(r: &mut BufReader<TcpStream>, halves: &mut (Seal, Unseal), msg: &Value) -> bool {
    ask(r, halves, msg).is_some_and(|v| v["ok"] == json!(true))
}

/// Sends one line and returns the peer's answer, whatever it says.
fn ask(r: &mut BufReader<TcpStream>, halves: &mut (Seal, Unseal), msg: &Value) -> Option<Value> {
    let (seal, unseal) = halves;
    r.get_mut().write_all(seal.line(msg).as_bytes()).ok()?;
    let mut answer = Vec::new();
    match admit::read_line(r, &mut answer, admit::MAX_LINE) {
        Ok(Some(())) => unseal
            .open(&answer)
            .map_err(|e| eprintln!("duplex guest: answer from the peer: {e}"))
            .ok(),
        _ => None,
    }
}

/// Serves local services on the unix socket (a thread per connection).
pub fn serve_services(
    replica: Arc<Replica>,
    roles: Arc<dyn RoleView>,
    path: &str,
) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    if let Some(dir) = std::path::Path::new(path).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let listener = UnixListener::bind(path)?;
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let Ok(writer) = conn.try_clone() else {
                continue;
            };
            let writer = Arc::new(Mutex::new(writer));
            lock(&replica.subscribers).push(writer.clone());
            let (replica, roles) = (replica.clone(), roles.clone());
            std::thread::spawn(move || {
                let (r2, roles2) = (replica.clone(), roles.clone());
                serve_lines(
                    BufReader::new(conn),
                    writer,
                    seal::plain(),
                    move |v| replica.take_service(&v, &*roles),
                    move |t| r2.finish(t, &*roles2),
                )
            });
        }
    });
    Ok(())
}

/// Accepts the ACT peer's link on the service LAN: from the configured
/// peer only, a bounded number opening at once, and as many served, the
/// newest in place of the oldest ([`admit`]).
pub fn serve_peer(replica: Arc<Replica>, roles: Arc<dyn RoleView>) -> std::io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", PEER_PORT))?;
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let links = Arc::new(admit::Links::default());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let from = conn.peer_addr().map(|a| a.ip());
            let admitted = from
                .map_err(|e| e.to_string())
                .and_then(|ip| admit::peer(ip, roles.peer()));
            if let Err(e) = admitted {
                eprintln!("duplex guest: {e}");
                continue;
            }
            let Some(slot) = admit::Slot::take(&count) else {
                eprintln!(
                    "duplex guest: refused a replication connection: {} already opening",
                    admit::MAX_PEER_CONNS
                );
                continue;
            };
            let _ = conn.set_nodelay(true);
            let (replica, roles, links) = (replica.clone(), roles.clone(), links.clone());
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn);
                // The hello must come as quickly as any answer would.
                let _ = r.get_ref().set_read_timeout(Some(PEER_TIMEOUT));
                let halves = match seal::server(&mut r, roles.key().as_ref()) {
                    Ok(h) => h,
                    Err(e) => {
                        eprintln!("duplex guest: refused a replication connection: {e}");
                        return;
                    }
                };
                drop(slot);
                let _ = r.get_ref().set_read_timeout(None);
                let (Ok(writer), Ok(closer)) = (r.get_ref().try_clone(), r.get_ref().try_clone())
                else {
                    return;
                };
                let _held = match admit::Links::hold(&links, closer, Instant::now()) {
                    admit::Admitted::Free(h) => h,
                    admit::Admitted::Evicted(h) => {
                        eprintln!(
                            "duplex guest: closed the oldest replication link for a new one ({} at most)",
                            admit::MAX_PEER_CONNS
                        );
                        h
                    }
                    admit::Admitted::Full => {
                        eprintln!(
                            "duplex guest: refused a replication connection: {} open, none older than {:?}",
                            admit::MAX_PEER_CONNS,
                            admit::EVICTABLE_AFTER
                        );
                        return;
                    }
                };
                serve_lines(
                    r,
                    Arc::new(Mutex::new(writer)),
                    halves,
                    move |v| Taken::Answer(replica.handle_peer(&v, &*roles)),
                    |t| match t {
                        Taken::Answer(v) | Taken::HandOn { write: v, .. } => v,
                        Taken::Replicate(_) | Taken::Dump => {
                            json!({"ok": false, "error": "internal: a peer line replicated"})
                        }
                    },
                )
            });
        }
    });
    Ok(())
}

/// Reads lines (opened by `halves`' [`Unseal`]) and takes each in at once
/// (`take`); a second thread completes them (`finish`) and writes the
/// answers (sealed), in the same order. A line that is not JSON gets an
/// error answer; one that is not authentic ends the connection.
fn serve_lines<S: std::io::Read, W: Write + Send + 'static>(
    mut r: BufReader<S>,
    w: Writer<W>,
    (mut seal, mut unseal): (Seal, Unseal),
    mut take: impl FnMut(Value) -> Taken,
    mut finish: impl FnMut(Taken) -> Value + Send + 'static,
) {
    let (tx, rx) = std::sync::mpsc::channel::<Taken>();
    let writer = std::thread::spawn(move || {
        for t in rx {
            // A dump is taken with the writer held (see [`Taken::Dump`]);
            // anything else is finished first (a write waits for the peer).
            let (answer, mut out) = match t {
                Taken::Dump => {
                    let out = lock(&w);
                    (finish(t), out)
                }
                t => {
                    let answer = finish(t);
                    (answer, lock(&w))
                }
            };
            if out.write_all(seal.line(&answer).as_bytes()).is_err() {
                return;
            }
        }
    });
    let mut line = Vec::new();
    loop {
        match admit::read_line(&mut r, &mut line, admit::MAX_LINE) {
            Ok(Some(())) => {}
            Ok(None) => break,
            Err(e) => {
                let _ = tx.send(Taken::Answer(json!({"ok": false, "error": e.to_string()})));
                break;
            }
        }
        let taken = match unseal.open(&line) {
            Ok(v) => take(v),
            Err(e @ seal::Refused::Json(_)) => {
                Taken::Answer(json!({"ok": false, "error": e.to_string()}))
            }
            Err(e @ seal::Refused::Forged(_)) => {
                eprintln!("duplex guest: {e}; closing the connection");
                break;
            }
        };
        if tx.send(taken).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.join();
}

/// A connection's writing half: whoever writes a line holds it.
type Writer<W> = Arc<Mutex<W>>;

#[cfg(test)]
mod tests;
