//! The replica's tests (over real TCP on loopback where the peer matters).

use super::*;
use duplex_core::replica_key::ReplicaKey;
use std::io::BufRead;
use std::sync::atomic::AtomicBool;

struct Roles(AtomicBool, Option<Ipv4Addr>);
impl RoleView for Roles {
    fn is_active(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    fn peer(&self) -> Option<Ipv4Addr> {
        self.1
    }
}

#[test]
fn sby_refuses_writes_and_act_degrades_without_peer() {
    let r = Replica::default();
    let sby = Roles(AtomicBool::new(false), None);
    let a = r.handle_service(&json!({"op":"put","key":"k","value":1}), &sby);
    assert_eq!(a["ok"], json!(false));
    let act = Roles(AtomicBool::new(true), None);
    let a = r.handle_service(&json!({"op":"put","key":"k","value":1}), &act);
    assert_eq!(a, json!({"ok": true, "replicated": false}));
    assert_eq!(
        r.handle_service(&json!({"op":"get_all"}), &act)["entries"]["k"],
        json!(1)
    );
    assert_eq!(
        r.handle_service(&json!({"op":"nope"}), &act)["ok"],
        json!(false)
    );
}

/// A write is in the store once taken in, before the peer heard of it
/// (what the handover barrier relies on when the peer is slow).
#[test]
fn writes_are_stored_when_taken_in_and_replicated_after() {
    let r = Replica::default();
    let act = Roles(AtomicBool::new(true), None);
    let mut taken = Vec::new();
    for k in ["a", "b"] {
        let t = r.take_service(&json!({"op":"put","key":k,"value":1}), &act);
        assert!(matches!(t, Taken::Replicate(_)), "{t:?}");
        taken.push(t);
    }
    assert_eq!(r.len(), 2, "both stored before either was sent");
    for t in taken {
        assert_eq!(r.finish(t, &act), json!({"ok": true, "replicated": false}));
    }
    let sby = Roles(AtomicBool::new(false), None);
    let t = r.take_service(&json!({"op":"del","key":"a"}), &sby);
    assert!(matches!(t, Taken::Answer(ref v) if v["ok"] == json!(false)));
    assert_eq!(r.len(), 2, "a refused write changes nothing");
}

/// A write that reaches the old ACT's middleware just after the
/// handover goes to the new ACT, which takes it unless it conflicts.
#[test]
fn late_writes_are_handed_on_and_taken_if_new() {
    let old = Replica::default();
    let peer = Roles(AtomicBool::new(false), Some(Ipv4Addr::LOCALHOST));
    let put = json!({"op":"put","key":"d1","value":1});
    let t = old.take_service(&put, &peer);
    assert!(matches!(t, Taken::Answer(_)), "never ACT: refused, {t:?}");
    old.disconnect();
    assert!(matches!(
        old.take_service(&put, &peer),
        Taken::HandOn { prev: None, .. }
    ));
    assert!(old.is_empty(), "not stored on the old ACT");

    let new = Replica::default();
    let act = Roles(AtomicBool::new(true), None);
    let late = |w: &Value| new.handle_peer(&json!({"op":"late","write":w}), &act);
    assert_eq!(late(&put)["ok"], json!(true));
    assert_eq!(new.len(), 1);
    new.handing_over.store(true, Ordering::SeqCst);
    let other = json!({"op":"put","key":"d2","value":1});
    assert_eq!(
        late(&other)["error"],
        json!(NOT_ACT_YET),
        "its own handover began"
    );
    new.handing_over.store(false, Ordering::SeqCst);
    let newer = json!({"op":"put","key":"d1","value":2});
    assert_eq!(late(&newer)["error"], json!("superseded"));
    let over =
        |w: &Value, prev: Value| new.handle_peer(&json!({"op":"late","write":w,"prev":prev}), &act);
    assert_eq!(
        over(&newer, json!(0))["error"],
        json!("superseded"),
        "the old ACT knew another value"
    );
    assert_eq!(
        new.handle_service(&json!({"op":"get_all"}), &act)["entries"]["d1"],
        json!(1)
    );
    // Over the value the old ACT had (a dialog confirmed by its ACK just
    // before the handover): nothing written here since, so taken.
    assert_eq!(over(&newer, json!(1))["ok"], json!(true));
    assert_eq!(
        new.handle_service(&json!({"op":"get_all"}), &act)["entries"]["d1"],
        json!(2)
    );
    // The old ACT offers the value it held, not what reached it since.
    let old_act = Replica::default();
    let alone = Roles(AtomicBool::new(true), None);
    old_act.handle_service(&json!({"op":"put","key":"d1","value":1}), &alone);
    old_act.disconnect();
    // A peer never contacted here.
    let now_sby = Roles(AtomicBool::new(false), Some(Ipv4Addr::new(192, 0, 2, 1)));
    match old_act.take_service(&newer, &now_sby) {
        Taken::HandOn { write, prev } => assert_eq!((write, prev), (newer.clone(), Some(json!(1)))),
        other => panic!("{other:?}"),
    }
    assert_eq!(late(&json!({"op":"del","key":"d1"}))["ok"], json!(true));
    assert!(new.is_empty());
    assert_eq!(
        late(&json!({"op":"del","key":"d1"}))["error"],
        json!("superseded")
    );
    let sby = Roles(AtomicBool::new(false), None);
    let a = new.handle_peer(&json!({"op":"late","write":put}), &sby);
    assert_eq!(
        a["error"],
        json!(NOT_ACT_YET),
        "only an ACT takes late writes"
    );
}

/// Once the barrier has begun, writes are handed on, not taken: they
/// could miss the peer. A failed barrier (the VM stays ACT) ends that.
#[test]
fn writes_during_the_barrier_are_handed_on() {
    let r = Replica::default();
    // A peer never contacted here (port 7001 on loopback belongs to
    // another test).
    let act = Roles(AtomicBool::new(true), Some(Ipv4Addr::new(192, 0, 2, 1)));
    let put = json!({"op":"put","key":"k","value":1});
    r.handing_over.store(true, Ordering::SeqCst);
    assert!(matches!(r.take_service(&put, &act), Taken::HandOn { .. }));
    assert!(r.is_empty());
    // Without a peer the barrier fails at once.
    let alone = Roles(AtomicBool::new(true), None);
    assert!(r.sync_peer(&alone, Duration::from_millis(200)).is_err());
    // The handover is off and this VM still ACT: a write it was handing
    // on is taken here as its own, and the service told so.
    let handed = Taken::HandOn {
        write: put.clone(),
        prev: None,
    };
    let a = r.finish(handed, &alone);
    assert_eq!(a, json!({"ok": true, "replicated": false}));
    assert_eq!(r.len(), 1);
    let del = json!({"op":"del","key":"k"});
    assert!(matches!(r.take_service(&del, &alone), Taken::Replicate(_)));
    assert!(r.is_empty());
    assert!(matches!(r.take_service(&put, &alone), Taken::Replicate(_)));
    assert_eq!(r.len(), 1);
}

#[test]
fn peer_updates_apply_on_sby_only_and_snapshot_replaces() {
    let r = Replica::default();
    let sby = Roles(AtomicBool::new(false), None);
    assert_eq!(
        r.handle_peer(&json!({"op":"put","key":"a","value":"x"}), &sby)["ok"],
        json!(true)
    );
    assert_eq!(
        r.handle_peer(&json!({"op":"snapshot","entries":{"b":2}}), &sby)["ok"],
        json!(true)
    );
    assert_eq!(
        r.handle_service(&json!({"op":"get_all"}), &sby)["entries"],
        json!({"b":2})
    );
    assert_eq!(
        r.handle_peer(&json!({"op":"del","key":"b"}), &sby)["ok"],
        json!(true)
    );
    assert!(r.is_empty());
    let act = Roles(AtomicBool::new(true), None);
    assert_eq!(
        r.handle_peer(&json!({"op":"put","key":"a","value":1}), &act)["ok"],
        json!(false)
    );
}

/// Over real TCP on loopback: the handover barrier sends nothing more
/// when the peer has every update, and a full snapshot when the peer
/// lost its store (e.g. it restarted) without the ACT noticing.
///
/// Both hold the pair's key: every line is authenticated, and a
/// connection from the peer's very address (a forged source) without the
/// key, with another key, or replaying a line, changes nothing.
#[test]
fn handover_barrier_resends_only_what_the_peer_lacks() {
    let key = ReplicaKey([5; 32]);
    let sby_store = Arc::new(Replica::default());
    // Its peer, the ACT, connects from loopback: only it is let in.
    let sby_roles: Arc<dyn RoleView> = Arc::new(Keyed(
        Roles(AtomicBool::new(false), Some(Ipv4Addr::LOCALHOST)),
        key,
    ));
    serve_peer(sby_store.clone(), sby_roles.clone()).unwrap();
    let act = Replica::default();
    let act_roles = Keyed(Roles(AtomicBool::new(true), Some(Ipv4Addr::LOCALHOST)), key);
    for k in ["a", "b"] {
        let a = act.handle_service(&json!({"op":"put","key":k,"value":1}), &act_roles);
        assert_eq!(a, json!({"ok": true}));
    }
    assert_eq!(sby_store.len(), 2);
    assert_eq!(act.sync_peer(&act_roles, Duration::from_secs(2)), Ok(2));
    // The peer loses its store behind the ACT's back.
    sby_store.handle_peer(&json!({"op":"snapshot","entries":{}}), &*sby_roles);
    assert!(sby_store.is_empty());
    assert_eq!(act.sync_peer(&act_roles, Duration::from_secs(2)), Ok(2));
    assert_eq!(sby_store.len(), 2);
    assert_eq!(
        sby_store.handle_service(&json!({"op":"get_all"}), &*sby_roles)["entries"],
        json!({"a": 1, "b": 1})
    );

    // Attacks from the peer's address: a plain snapshot, a hello with
    // another key, and a replay of a line tagged for another connection.
    let wipe = json!({"op":"snapshot","entries":{}});
    let attempt = |k: Option<ReplicaKey>, line: Option<String>| {
        let s = TcpStream::connect((Ipv4Addr::LOCALHOST, PEER_PORT)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut r = BufReader::new(s);
        let mut halves = match k {
            Some(k) => seal::client(&mut r, Some(&k)).unwrap(),
            None => seal::plain(),
        };
        let line = line.unwrap_or_else(|| halves.0.line(&wipe));
        r.get_mut().write_all(line.as_bytes()).unwrap();
        let mut answer = String::new();
        let n = r.read_line(&mut answer).unwrap_or(0);
        (n, answer, halves)
    };
    let (n, answer, _) = attempt(None, None);
    assert_eq!(
        n, 0,
        "a plain line gets no answer, only a closed connection: {answer}"
    );
    let (n, _, _) = attempt(Some(ReplicaKey([6; 32])), None);
    assert_eq!(n, 0, "another key gets nowhere");
    let tagged_elsewhere = {
        let (mut s, _) = seal_for_test(key);
        s.line(&wipe)
    };
    let (n, _, _) = attempt(Some(key), Some(tagged_elsewhere));
    assert_eq!(n, 0, "a line tagged for another connection is refused");
    assert_eq!(sby_store.len(), 2, "no attack changed the SBY's state");

    // The peer comes back empty (it rebooted) after the ACT's link went:
    // the ACT brings it up to date at once, with nothing written.
    sby_store.handle_peer(&json!({"op":"snapshot","entries":{}}), &*sby_roles);
    // (The barriers above began handovers; this ACT stays ACT.)
    act.handing_over.store(false, Ordering::SeqCst);
    *lock(&act.link) = None;
    assert!(act.catch_up(&act_roles));
    assert_eq!(sby_store.len(), 2, "the returning peer was not caught up");
    // With the link up there is nothing to do.
    assert!(act.catch_up(&act_roles));
    assert!(act.in_sync());

    // A peer the heartbeat lost may come back with nothing: until it has
    // a snapshot the ACT says it lacks writes (the pair is not healthy).
    assert!(!act.catch_up(&LostPeer(Ipv4Addr::LOCALHOST)));
    assert!(!act.in_sync());
    sby_store.handle_peer(&json!({"op":"snapshot","entries":{}}), &*sby_roles);
    assert!(act.catch_up(&act_roles));
    assert!(act.in_sync());
    assert_eq!(sby_store.len(), 2, "the returning peer was not caught up");
}

/// Halves of a connection that never happened (its own nonces).
fn seal_for_test(key: ReplicaKey) -> (seal::Seal, seal::Unseal) {
    let (a, b) = UnixStream::pair().unwrap();
    let t =
        std::thread::spawn(move || seal::server(&mut BufReader::new(b), Some(&key)).map(|_| ()));
    let h = seal::client(&mut BufReader::new(a), Some(&key)).unwrap();
    t.join().unwrap().unwrap();
    h
}

/// [`Roles`] with the pair's key.
struct Keyed(Roles, ReplicaKey);

impl RoleView for Keyed {
    fn is_active(&self) -> bool {
        self.0.is_active()
    }
    fn peer(&self) -> Option<Ipv4Addr> {
        self.0.peer()
    }
    fn key(&self) -> Option<ReplicaKey> {
        Some(self.1)
    }
    /// The peer (loopback) is heard: `catch_up` may connect.
    fn peer_heard(&self) -> bool {
        true
    }
}

/// A reply the old ACT's service could not send (the handover took the
/// address first) goes to the new ACT's services, and is not stored.
#[test]
fn a_reply_the_old_act_could_not_send_goes_to_the_new_acts_services() {
    let old = Replica::default();
    // A peer never contacted here.
    let peer = Roles(AtomicBool::new(false), Some(Ipv4Addr::new(192, 0, 2, 1)));
    let send = json!({"op":"send","to":"10.0.0.2:5060","data":"SIP/2.0 200 OK\r\n\r\n"});
    assert!(
        matches!(old.take_service(&send, &peer), Taken::Answer(ref v) if v["ok"] == json!(false)),
        "never ACT: nothing to hand on"
    );
    old.disconnect();
    assert!(matches!(
        old.take_service(&send, &peer),
        Taken::HandOn { prev: None, .. }
    ));

    let new = Replica::default();
    let (mine, theirs) = UnixStream::pair().unwrap();
    lock(&new.subscribers).push(Arc::new(Mutex::new(mine)));
    let late = json!({"op":"late","write":send});
    let sby = Roles(AtomicBool::new(false), None);
    assert_eq!(new.handle_peer(&late, &sby)["error"], json!(NOT_ACT_YET));
    let act = Roles(AtomicBool::new(true), None);
    assert_eq!(new.handle_peer(&late, &act)["ok"], json!(true));
    let mut line = String::new();
    BufReader::new(theirs).read_line(&mut line).unwrap();
    let ev: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        ev,
        json!({"event":"send","late":true,"to":"10.0.0.2:5060","data":"SIP/2.0 200 OK\r\n\r\n"})
    );
    assert!(new.is_empty());
}

struct LostPeer(Ipv4Addr);
impl RoleView for LostPeer {
    fn is_active(&self) -> bool {
        true
    }
    fn peer(&self) -> Option<Ipv4Addr> {
        Some(self.0)
    }
    fn peer_lost(&self) -> bool {
        true
    }
}

/// A peer the heartbeat says is lost is not connected to: the write is
/// answered unreplicated without waiting out a connection to a host that
/// may be powered off (a listener stands in for the peer: a connection
/// attempt would wait in its backlog, so it would show).
#[test]
fn a_lost_peer_is_not_waited_for() {
    let l = std::net::TcpListener::bind(("127.0.0.1", PEER_PORT));
    let r = Replica::default();
    let roles = LostPeer(Ipv4Addr::LOCALHOST);
    let a = r.handle_service(&json!({"op":"put","key":"k","value":1}), &roles);
    assert_eq!(a, json!({"ok": true, "replicated": false}));
    assert!(!r.peer_connected());
    assert!(!r.in_sync(), "a write the peer missed is owed to it");
    if let Ok(l) = l {
        l.set_nonblocking(true).unwrap();
        assert!(l.accept().is_err(), "nobody connected");
    }
}

/// PH3.0 / PH3.5 give a re-created guest its data page by page (the first
/// replaces the store); a LAF backup reads it back page by page.
#[test]
fn restored_pages_make_the_store_and_backup_reads_it_back() {
    let r = Replica::default();
    let page = |kv: &[(&str, i64)]| -> Map<String, Value> {
        kv.iter().map(|(k, v)| (k.to_string(), json!(v))).collect()
    };
    assert_eq!(r.restore(&page(&[("old", 1)]), true), 1);
    assert_eq!(r.restore(&page(&[("a", 1), ("b", 2)]), true), 2);
    assert_eq!(r.restore(&page(&[("c", 3)]), false), 3);
    let mut all = Map::new();
    let mut after = None;
    loop {
        let p = r.backup_page(after.as_deref()).unwrap();
        all.extend(p.entries);
        match p.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(all, page(&[("a", 1), ("b", 2), ("c", 3)]));
}

/// Events pushed while large dumps are being written reach the service as
/// whole lines, neither inside a dump nor cut by one (they share the
/// connection's one writer): before, a push could land between two parts
/// of a dump, and the service lost both. And no dump is older than an
/// event written before it (it is taken when it is written).
#[test]
fn events_never_land_inside_an_answer() {
    let dir = std::env::temp_dir().join(format!("duplex-lines-{}", std::process::id()));
    let path = dir.join("sync.sock");
    let replica = Arc::new(Replica::default());
    let sby: Arc<dyn RoleView> = Arc::new(Roles(AtomicBool::new(false), None));
    let big = "x".repeat(1000);
    for i in 0..500 {
        let put = json!({"op":"put","key":format!("k{i:04}"),"value":big});
        assert_eq!(replica.handle_peer(&put, &*sby)["ok"], json!(true));
    }
    serve_services(replica.clone(), sby.clone(), path.to_str().unwrap()).unwrap();
    let conn = UnixStream::connect(&path).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut w = conn.try_clone().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let pusher = std::thread::spawn({
        let (replica, sby, done) = (replica.clone(), sby.clone(), done.clone());
        move || {
            let mut i = 0u64;
            while !done.load(Ordering::SeqCst) {
                let put = json!({"op":"put","key":"e","value":i});
                replica.handle_peer(&put, &*sby);
                i += 1;
            }
        }
    });
    let dumps = 40;
    let (mut answers, mut pushed, mut last_event) = (0, 0, -1i64);
    // A slow reader: the writers find the connection full and wait, as
    // they do when the service is busy; then they take turns.
    let mut r = BufReader::with_capacity(4096, SlowRead(conn));
    for _ in 0..dumps {
        w.write_all(b"{\"op\":\"get_all\"}\n").unwrap();
    }
    while answers < dumps {
        let mut line = String::new();
        r.read_line(&mut line).expect("a line within 10 s");
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("a line that is not JSON ({e}): {:.120}", line));
        match v.get("event") {
            Some(_) => {
                pushed += 1;
                last_event = v["value"].as_i64().unwrap();
            }
            None => {
                assert!(v["entries"].as_object().unwrap().len() >= 500);
                // Never older than a change that came before it.
                let dumped = v["entries"]["e"].as_i64().unwrap_or(-1);
                assert!(
                    dumped >= last_event,
                    "dump at e={dumped} after event e={last_event}"
                );
                answers += 1;
            }
        }
    }
    done.store(true, Ordering::SeqCst);
    // Closed: a push still waiting to write fails and the pusher ends.
    drop((r, w));
    pusher.join().unwrap();
    assert!(pushed > 0, "no event came while the dumps were written");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads at most 4 KiB at a time, 100 µs apart.
struct SlowRead(UnixStream);

impl std::io::Read for SlowRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        std::thread::sleep(std::time::Duration::from_micros(100));
        let n = buf.len().min(4096);
        std::io::Read::read(&mut self.0, &mut buf[..n])
    }
}
