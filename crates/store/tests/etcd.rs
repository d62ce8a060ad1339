//! etcd specifics against a real etcd: leader takeover and fencing, etcd
//! down at start and mid-run.

mod common;

use common::{test_options, EtcdFixture};
use duplex_store::etcd_server::free_port;
use duplex_store::{EtcdOptions, EtcdStore, Expect, Store, StoreError, WatchEvent};
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_takeover_and_fencing() {
    let etcd = EtcdFixture::start().await;
    let a = etcd.connect().await;
    let b = etcd.connect().await;

    let la = a.campaign("controller", TTL).await.unwrap();
    a.put("vms/web1", b"from a", Expect::Absent).await.unwrap();

    let b2 = b.clone();
    let mut contender = tokio::spawn(async move { b2.campaign("controller", TTL).await });
    // The first leader keeps its lease alive well past the TTL; b waits.
    tokio::time::sleep(TTL * 2).await;
    assert!(
        !contender.is_finished(),
        "b became leader while a still led"
    );
    assert!(!la.is_lost());
    a.put("vms/web1", b"still a", Expect::Any).await.unwrap();

    // a vanishes: its keep-alive stops, the lease is not revoked.
    let old_token = la.token;
    let gone = Instant::now();
    drop(la);
    let lb = tokio::time::timeout(TTL * 4, &mut contender)
        .await
        .expect("b leads within 4×TTL")
        .unwrap()
        .unwrap();
    let takeover = gone.elapsed();
    println!(
        "leader takeover after the leader vanished: {:.2} s (ttl {} s)",
        takeover.as_secs_f64(),
        TTL.as_secs()
    );
    assert!(lb.token > old_token, "token {} after {old_token}", lb.token);

    // The deposed leader has not noticed, but etcd refuses its writes.
    for r in [
        a.put("vms/web1", b"stale a", Expect::Any).await.map(|_| ()),
        a.put("vms/web2", b"stale a", Expect::Absent)
            .await
            .map(|_| ()),
        a.put("vms/web1", b"stale a", Expect::Revision(1))
            .await
            .map(|_| ()),
        a.delete("vms/web1", Expect::Any).await.map(|_| ()),
    ] {
        match r {
            Err(StoreError::NotLeader { token }) => assert_eq!(token, old_token),
            other => panic!("expected NotLeader from the deposed leader, got {other:?}"),
        }
    }
    assert_eq!(b.get("vms/web1").await.unwrap().unwrap().value, b"still a");
    assert_eq!(b.get("vms/web2").await.unwrap(), None);

    // The new leader writes; its conflicts are still conflicts.
    let cur = b.get("vms/web1").await.unwrap().unwrap();
    b.put("vms/web1", b"from b", Expect::Revision(cur.revision))
        .await
        .unwrap();
    assert!(matches!(
        b.put("vms/web1", b"x", Expect::Revision(cur.revision))
            .await,
        Err(StoreError::Conflict { .. })
    ));

    // A clean resign hands over at once.
    let c = etcd.connect().await;
    let c2 = c.clone();
    let contender = tokio::spawn(async move { c2.campaign("controller", TTL).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resigned = Instant::now();
    let b_token = lb.token;
    lb.resign().await.unwrap();
    let lc = tokio::time::timeout(TTL, contender)
        .await
        .expect("c leads at once after resign")
        .unwrap()
        .unwrap();
    println!(
        "leader handover after resign: {:.3} s",
        resigned.elapsed().as_secs_f64()
    );
    assert!(lc.token > b_token);
    assert!(matches!(
        b.put("vms/web1", b"x", Expect::Any).await,
        Err(StoreError::NotLeader { .. })
    ));
    lc.resign().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_fires_when_etcd_dies() {
    let mut etcd = EtcdFixture::start().await;
    let s = etcd.connect().await;
    let mut l = s.campaign("controller", TTL).await.unwrap();
    let token = l.token;
    etcd.kill();
    let died = Instant::now();
    tokio::time::timeout(TTL * 3, l.lost.wait_for(|lost| *lost))
        .await
        .expect("lost within 3×TTL")
        .unwrap();
    println!(
        "lost noticed {:.2} s after etcd died",
        died.elapsed().as_secs_f64()
    );
    // Known locally: refused without asking etcd.
    match s.put("k", b"v", Expect::Any).await {
        Err(StoreError::NotLeader { token: t }) => assert_eq!(t, token),
        other => panic!("expected NotLeader, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_at_start() {
    common::init_tracing();
    let port = free_port().unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let opts = EtcdOptions {
        connect_timeout: Duration::from_millis(1500),
        ..EtcdOptions::default()
    };
    let t = Instant::now();
    let err = match EtcdStore::connect(std::slice::from_ref(&endpoint), opts).await {
        Err(e) => e,
        Ok(_) => panic!("connected to a port where nothing listens"),
    };
    let took = t.elapsed();
    let msg = err.to_string();
    println!("etcd down at start ({:.2} s): {msg}", took.as_secs_f64());
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(msg.contains(&endpoint), "{msg}");
    assert!(msg.contains("--etcd-endpoints"), "{msg}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// Waits until every thread of process `pid` is stopped (state `T`).
fn wait_stopped(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let stopped = || {
        let dir = format!("/proc/{pid}/task");
        std::fs::read_dir(&dir).is_ok_and(|tasks| {
            tasks.flatten().all(|t| {
                std::fs::read_to_string(t.path().join("stat"))
                    .ok()
                    .and_then(|st| {
                        st.rsplit_once(')')
                            .map(|(_, rest)| rest.trim_start().starts_with('T'))
                    })
                    .unwrap_or(false)
            })
        })
    };
    while !stopped() {
        assert!(Instant::now() < deadline, "etcd (pid {pid}) did not stop");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_mid_run_then_back() {
    let mut etcd = EtcdFixture::start().await;
    let s = etcd.connect().await;
    let r = s.put("vms/web1", b"v1", Expect::Absent).await.unwrap();
    let mut w = s.watch("vms/").await.unwrap();

    // A hung etcd (SIGSTOP: accepts connections, never answers) times out.
    let pid = etcd.server.as_ref().unwrap().pid() as i32;
    // SAFETY: kill(2) on the etcd this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    // kill(2) returns before every thread has stopped: a request sent at
    // once can still be answered.
    wait_stopped(pid);
    let t = Instant::now();
    let res = s.get("vms/web1").await;
    let took = t.elapsed();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    match res {
        Err(e @ StoreError::Unavailable { .. }) => {
            println!("etcd hung: {:.3} s: {e}", took.as_secs_f64());
        }
        other => panic!("expected Unavailable from a hung etcd, got {other:?}"),
    }
    assert!(
        took < Duration::from_secs(5),
        "op took {took:?} with etcd hung"
    );
    assert_eq!(s.get("vms/web1").await.unwrap().unwrap().revision, r);

    etcd.kill();
    for _ in 0..3 {
        let t = Instant::now();
        let res = s.get("vms/web1").await;
        let took = t.elapsed();
        match res {
            Err(e @ StoreError::Unavailable { .. }) => {
                println!("etcd down: {:.3} s: {e}", took.as_secs_f64());
                assert!(e.to_string().contains(&etcd.url()), "{e}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert!(
            took < Duration::from_secs(5),
            "op took {took:?} with etcd down"
        );
    }
    let t = Instant::now();
    assert!(matches!(
        s.put("vms/web2", b"x", Expect::Any).await,
        Err(StoreError::Unavailable { .. })
    ));
    assert!(t.elapsed() < Duration::from_secs(5));

    // Back on the same data dir and port: the same client works again.
    etcd.restart().await;
    let back = Instant::now();
    let entry = loop {
        match s.get("vms/web1").await {
            Ok(e) => break e,
            Err(e) if back.elapsed() < Duration::from_secs(20) => {
                println!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("etcd is back but the store still fails: {e}"),
        }
    };
    println!(
        "first successful call {:.3} s after etcd was back",
        back.elapsed().as_secs_f64()
    );
    let entry = entry.expect("data survived the restart");
    assert_eq!(entry.value, b"v1");
    assert_eq!(entry.revision, r);
    let r2 = s.put("vms/web1", b"v2", Expect::Revision(r)).await.unwrap();
    assert!(r2 > r);

    // The watch resumed by itself and sees the change.
    let ev = tokio::time::timeout(Duration::from_secs(15), w.recv())
        .await
        .expect("watch event after etcd came back")
        .expect("watch still open");
    match ev {
        WatchEvent::Put(e) => {
            assert_eq!(e.key, "vms/web1");
            assert_eq!(e.value, b"v2");
            assert_eq!(e.revision, r2);
        }
        other => panic!("unexpected {other:?}"),
    }

    // And a fresh client agrees.
    let other = EtcdStore::connect(&[etcd.url()], test_options())
        .await
        .unwrap();
    assert_eq!(other.get("vms/web1").await.unwrap().unwrap().value, b"v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_server_outlives_its_handle() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let peer = free_port().unwrap();
    let pid = duplex_store::etcd_server::EtcdServer::spawn_detached(
        &dir.path().join("data"),
        port,
        peer,
        &dir.path().join("etcd.log"),
    )
    .unwrap();
    struct KillOnDrop(i32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            // SAFETY: kill(2) on the etcd this test started.
            unsafe {
                libc::kill(self.0, libc::SIGKILL);
            }
        }
    }
    let _guard = KillOnDrop(pid as i32);
    let url = duplex_store::etcd_server::client_url(port);
    duplex_store::etcd_server::wait_ready(&url, Duration::from_secs(20), None)
        .await
        .unwrap();
    // Its own session: the session id is its pid.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    assert_eq!(fields[3], pid.to_string(), "session id of etcd: {stat}");
    let s = EtcdStore::connect(&[url], test_options()).await.unwrap();
    s.put("k", b"v", Expect::Any).await.unwrap();
}
