//! One conformance suite, run against both backends (real redb file, real etcd).

mod common;

use common::EtcdFixture;
use duplex_store::{EmbeddedStore, Entry, Expect, Store, StoreError, WatchEvent, WatchStream};
use std::time::Duration;

const TTL: Duration = Duration::from_secs(2);

fn assert_conflict(r: Result<impl std::fmt::Debug, StoreError>, key: &str, found: Option<u64>) {
    match r {
        Err(e @ StoreError::Conflict { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(key),
                "conflict message should name `{key}`: {msg}"
            );
            let StoreError::Conflict {
                key: k, found: f, ..
            } = e
            else {
                unreachable!()
            };
            assert_eq!(k, key);
            assert_eq!(f, found, "found revision in: {msg}");
        }
        other => panic!("expected a conflict on {key}, got {other:?}"),
    }
}

async fn next_event(w: &mut WatchStream) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(5), w.recv())
        .await
        .expect("watch event within 5 s")
        .expect("watch still open")
}

/// get/put/delete with every precondition, and increasing revisions.
async fn crud(s: &dyn Store) {
    assert_eq!(s.get("t/a").await.unwrap(), None);

    let r1 = s.put("t/a", b"1", Expect::Absent).await.unwrap();
    assert!(r1 > 0);
    assert_eq!(
        s.get("t/a").await.unwrap(),
        Some(Entry {
            key: "t/a".into(),
            value: b"1".to_vec(),
            revision: r1
        })
    );
    assert_conflict(s.put("t/a", b"x", Expect::Absent).await, "t/a", Some(r1));
    assert_conflict(
        s.put("t/a", b"x", Expect::Revision(r1 + 100)).await,
        "t/a",
        Some(r1),
    );
    let r2 = s.put("t/a", b"2", Expect::Revision(r1)).await.unwrap();
    assert!(r2 > r1);
    // A stale revision no longer matches.
    assert_conflict(
        s.put("t/a", b"x", Expect::Revision(r1)).await,
        "t/a",
        Some(r2),
    );
    let r3 = s.put("t/a", b"3", Expect::Any).await.unwrap();
    assert!(r3 > r2);
    assert_eq!(s.get("t/a").await.unwrap().unwrap().value, b"3");
    // Revision of an absent key never matches.
    assert_conflict(s.put("t/b", b"x", Expect::Revision(r3)).await, "t/b", None);

    // Binary and empty values round-trip.
    let bin = [0u8, 255, 10, 0, 13];
    s.put("t/bin", &bin, Expect::Any).await.unwrap();
    assert_eq!(s.get("t/bin").await.unwrap().unwrap().value, bin);
    s.put("t/empty", b"", Expect::Any).await.unwrap();
    assert_eq!(s.get("t/empty").await.unwrap().unwrap().value, b"");

    // Delete honours its precondition.
    assert_conflict(s.delete("t/a", Expect::Revision(r1)).await, "t/a", Some(r3));
    assert_conflict(s.delete("t/a", Expect::Absent).await, "t/a", Some(r3));
    assert!(s.delete("t/a", Expect::Revision(r3)).await.unwrap());
    assert_eq!(s.get("t/a").await.unwrap(), None);
    assert!(!s.delete("t/a", Expect::Any).await.unwrap());
    assert!(!s.delete("t/a", Expect::Absent).await.unwrap());
    assert_conflict(s.delete("t/a", Expect::Revision(r3)).await, "t/a", None);

    // Revisions are monotonic across keys, also after a delete.
    let mut last = s.put("t/a", b"again", Expect::Absent).await.unwrap();
    assert!(last > r3);
    for i in 0..5 {
        let r = s
            .put(&format!("t/seq{i}"), b"v", Expect::Any)
            .await
            .unwrap();
        assert!(r > last, "revision {r} after {last}");
        last = r;
    }

    // Reserved and empty keys are refused.
    assert!(matches!(
        s.put("_duplex/election/x", b"v", Expect::Any).await,
        Err(StoreError::InvalidKey { .. })
    ));
    assert!(matches!(
        s.put("", b"v", Expect::Any).await,
        Err(StoreError::InvalidKey { .. })
    ));
}

/// list is sorted by key and bounded by the prefix.
async fn listing(s: &dyn Store) {
    for k in ["l/c", "l/a", "l/b", "l/a/x", "la", "k", "m/a"] {
        s.put(k, k.as_bytes(), Expect::Any).await.unwrap();
    }
    let keys = |v: Vec<Entry>| v.into_iter().map(|e| e.key).collect::<Vec<_>>();
    assert_eq!(
        keys(s.list("l/").await.unwrap()),
        ["l/a", "l/a/x", "l/b", "l/c"]
    );
    assert_eq!(keys(s.list("l/a").await.unwrap()), ["l/a", "l/a/x"]);
    assert_eq!(
        keys(s.list("l").await.unwrap()),
        ["l/a", "l/a/x", "l/b", "l/c", "la"]
    );
    assert!(s.list("zzz/").await.unwrap().is_empty());
    let all = keys(s.list("").await.unwrap());
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted);
    assert!(all.contains(&"k".to_string()) && all.contains(&"m/a".to_string()));
    assert!(!all.iter().any(|k| k.starts_with("_duplex/")), "{all:?}");
    let e = s.list("l/b").await.unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].value, b"l/b");
    assert!(e[0].revision > 0);
}

/// watch sees puts and deletes under its prefix, made after the call, in order.
async fn watching(s: &dyn Store) {
    s.put("w/before", b"old", Expect::Any).await.unwrap();
    let mut w = s.watch("w/").await.unwrap();
    s.put("x/outside", b"no", Expect::Any).await.unwrap();
    let r1 = s.put("w/1", b"a", Expect::Absent).await.unwrap();
    let r2 = s.put("w/1", b"b", Expect::Revision(r1)).await.unwrap();
    let _ = s.put("w/1", b"c", Expect::Revision(r1)).await.unwrap_err();
    assert!(s.delete("w/1", Expect::Any).await.unwrap());
    assert!(s.delete("w/before", Expect::Any).await.unwrap());

    assert_eq!(
        next_event(&mut w).await,
        WatchEvent::Put(Entry {
            key: "w/1".into(),
            value: b"a".to_vec(),
            revision: r1
        })
    );
    assert_eq!(
        next_event(&mut w).await,
        WatchEvent::Put(Entry {
            key: "w/1".into(),
            value: b"b".to_vec(),
            revision: r2
        })
    );
    let WatchEvent::Delete { key, revision: d1 } = next_event(&mut w).await else {
        panic!("expected a delete")
    };
    assert_eq!(key, "w/1");
    assert!(d1 > r2);
    let WatchEvent::Delete { key, revision: d2 } = next_event(&mut w).await else {
        panic!("expected a delete")
    };
    assert_eq!(key, "w/before");
    assert!(d2 > d1);
    // Nothing else (x/outside is not under w/).
    assert!(
        tokio::time::timeout(Duration::from_millis(300), w.recv())
            .await
            .is_err(),
        "no further event expected"
    );
}

/// Leadership: increasing tokens, fenced writes, resign.
async fn leadership(s: &dyn Store) {
    let l1 = s.campaign("conformance", TTL).await.unwrap();
    assert!(l1.token > 0);
    assert!(!l1.is_lost());
    assert_eq!(l1.election(), "conformance");
    s.put("lead/a", b"1", Expect::Any).await.unwrap();
    let t1 = l1.token;
    l1.resign().await.unwrap();
    match s.put("lead/a", b"2", Expect::Any).await {
        Err(StoreError::NotLeader { token }) => assert_eq!(token, t1),
        other => panic!("expected NotLeader after resign, got {other:?}"),
    }
    match s.delete("lead/a", Expect::Any).await {
        Err(StoreError::NotLeader { .. }) => {}
        other => panic!("expected NotLeader after resign, got {other:?}"),
    }
    let l2 = s.campaign("conformance", TTL).await.unwrap();
    assert!(l2.token > t1, "token {} after {t1}", l2.token);
    s.put("lead/a", b"3", Expect::Any).await.unwrap();
    // The backend's own election keys stay out of sight.
    let all = s.list("").await.unwrap();
    assert!(
        !all.iter().any(|e| e.key.starts_with("_duplex/")),
        "{all:?}"
    );
    // Another election has its own tokens but also fences nothing extra.
    let l3 = s.campaign("other", TTL).await.unwrap();
    assert!(l3.token > 0);
    l3.resign().await.unwrap();
    l2.resign().await.unwrap();
}

/// What `crud` and `listing` wrote, seen through another handle.
async fn persisted(s: &dyn Store) {
    assert_eq!(s.get("t/a").await.unwrap().unwrap().value, b"again");
    assert_eq!(
        s.get("t/bin").await.unwrap().unwrap().value,
        [0u8, 255, 10, 0, 13]
    );
    assert_eq!(s.list("l/").await.unwrap().len(), 4);
    assert_eq!(s.get("lead/a").await.unwrap().unwrap().value, b"3");
}

async fn suite(s: &dyn Store) {
    crud(s).await;
    listing(s).await;
    watching(s).await;
    leadership(s).await; // last: it leaves the store fenced
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_conformance() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/state.redb");
    let s = EmbeddedStore::open(&path).await.unwrap();
    assert!(s.describe().contains("state.redb"), "{}", s.describe());
    suite(&s).await;
    let last = s.put("t/last", b"x", Expect::Any).await;
    assert!(matches!(last, Err(StoreError::NotLeader { .. })));
    drop(s);

    // Reopen the file: everything is still there, revisions continue.
    let s = EmbeddedStore::open(&path).await.unwrap();
    persisted(&s).await;
    let before = s.get("t/a").await.unwrap().unwrap().revision;
    let r = s.put("t/new", b"x", Expect::Absent).await.unwrap();
    assert!(r > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_conformance() {
    let etcd = EtcdFixture::start().await;
    let s = etcd.connect().await;
    assert!(s.describe().contains(&etcd.url()), "{}", s.describe());
    suite(&s).await;

    // A second client sees the data.
    let other = etcd.connect().await;
    persisted(&other).await;
    // ... and is not fenced by the first one's leadership.
    other.put("t/new", b"x", Expect::Absent).await.unwrap();
}
