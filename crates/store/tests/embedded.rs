//! Embedded-store specifics: file locking, epochs across reopen, damaged files.

mod common;

use duplex_store::{EmbeddedStore, Expect, Store, StoreError};
use std::time::Duration;

#[tokio::test]
async fn second_open_is_locked() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let first = EmbeddedStore::open(&path).await.unwrap();
    match EmbeddedStore::open(&path).await {
        Err(e @ StoreError::Locked { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains("another"), "{msg}");
        }
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("expected Locked, the second open succeeded"),
    }
    // Once the first is closed the file opens again.
    drop(first);
    EmbeddedStore::open(&path).await.unwrap();
}

#[tokio::test]
async fn epoch_tokens_increase_across_reopen() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let mut last = 0;
    for _ in 0..3 {
        let s = EmbeddedStore::open(&path).await.unwrap();
        for _ in 0..2 {
            let l = s
                .campaign("controller", Duration::from_secs(5))
                .await
                .unwrap();
            assert!(l.token > last, "token {} after {last}", l.token);
            assert!(!*l.lost.borrow());
            s.put("k", b"v", Expect::Any).await.unwrap();
            last = l.token;
        }
        // Dropped without resign, as a crash would.
    }
    assert_eq!(last, 6);
}

#[tokio::test]
async fn superseded_leadership_is_fenced() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let s = EmbeddedStore::open(dir.path().join("state.redb"))
        .await
        .unwrap();
    let old = s
        .campaign("controller", Duration::from_secs(5))
        .await
        .unwrap();
    // A clone shares the file; a newer campaign through it supersedes `old`.
    let s2 = s.clone();
    let new = s2
        .campaign("controller", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(new.token > old.token);
    s.put("k", b"v", Expect::Any).await.unwrap(); // clones share the fence
    old.resign().await.unwrap(); // resigning a superseded leadership...
    s.put("k", b"v2", Expect::Any).await.unwrap(); // ...does not fence the new one
    new.resign().await.unwrap();
    assert!(matches!(
        s.put("k", b"v3", Expect::Any).await,
        Err(StoreError::NotLeader { .. })
    ));
}

#[tokio::test]
async fn damaged_file_is_an_error_naming_it() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let junk: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&path, junk).unwrap();
    match EmbeddedStore::open(&path).await {
        Err(e) => {
            let msg = e.to_string();
            println!("damaged file: {msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        }
        Ok(_) => panic!("a junk file opened as a store"),
    }
}

#[tokio::test]
async fn corrupt_value_is_an_error_naming_file_and_key() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    drop(EmbeddedStore::open(&path).await.unwrap());
    {
        // Write a value the store cannot have written: shorter than its header.
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("kv");
            let mut t = txn.open_table(def).unwrap();
            t.insert("vms/bad", b"abc".as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let s = EmbeddedStore::open(&path).await.unwrap();
    for r in [
        s.get("vms/bad").await.map(|_| ()),
        s.list("vms/").await.map(|_| ()),
        s.put("vms/bad", b"x", Expect::Revision(1))
            .await
            .map(|_| ()),
        s.delete("vms/bad", Expect::Absent).await.map(|_| ()),
    ] {
        match r {
            Err(e @ StoreError::Corrupt { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&path.display().to_string()), "{msg}");
                assert!(msg.contains("vms/bad"), "{msg}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
    // Other keys still work, and an unconditional write repairs the key.
    s.put("vms/good", b"x", Expect::Absent).await.unwrap();
    let r = s.put("vms/bad", b"fixed", Expect::Any).await.unwrap();
    assert_eq!(s.get("vms/bad").await.unwrap().unwrap().revision, r);
}
