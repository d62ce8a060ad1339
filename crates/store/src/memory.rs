//! An in-memory store for the controller's deterministic simulation: the
//! same contract as the other backends (revisions, compare-and-set, fenced
//! writes, watches, leader election), with the faults a real store has
//! under the simulation's control: a write that fails, a leader's lease
//! that is lost. Time is tokio's, so a paused clock drives lease expiry.
//!
//! One [`MemoryStore`] is the store; [`MemoryStore::instance`] is one
//! process's connection to it (each controller of the simulation has its
//! own, fenced by its own leadership).

use crate::{
    check_key, hidden, Entry, Expect, LeaderHandle, Leadership, Store, StoreError, WatchEvent,
    WatchInner, WatchStream,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, watch, Notify};

/// How many changes a watcher may fall behind before its watch ends.
const WATCH_BACKLOG: usize = 1024;

#[derive(Default)]
struct Lease {
    token: u64,
    /// The instance holding it, and its `lost` signal.
    holder: Option<(u64, watch::Sender<bool>)>,
}

struct Shared {
    kv: BTreeMap<String, Entry>,
    revision: u64,
    elections: BTreeMap<String, Lease>,
    /// Writes still to fail (set by the simulation).
    failing_writes: u32,
}

/// The in-memory store (see the module's doc).
#[derive(Clone)]
pub struct MemoryStore {
    shared: Arc<Mutex<Shared>>,
    changes: broadcast::Sender<WatchEvent>,
    freed: Arc<Notify>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            shared: Arc::new(Mutex::new(Shared {
                kv: BTreeMap::new(),
                revision: 0,
                elections: BTreeMap::new(),
                failing_writes: 0,
            })),
            changes: broadcast::channel(WATCH_BACKLOG).0,
            freed: Arc::new(Notify::new()),
        }
    }
}

/// One process's connection to a [`MemoryStore`].
pub struct MemoryInstance {
    store: MemoryStore,
    id: u64,
    /// The leadership this instance holds (election, token), fencing its writes.
    fence: Mutex<Option<(String, u64)>>,
    /// Set when the simulation kills the process: every call fails.
    dead: std::sync::atomic::AtomicBool,
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new connection (process `id`; ids tell instances apart).
    pub fn instance(&self, id: u64) -> MemoryInstance {
        MemoryInstance {
            store: self.clone(),
            id,
            fence: Mutex::new(None),
            dead: Default::default(),
        }
    }

    /// The next `n` writes (put or delete) fail as if the store were unreachable.
    pub fn fail_writes(&self, n: u32) {
        lock(&self.shared).failing_writes = n;
    }

    /// The current leader's lease of `election` ends now (it expired, or the
    /// leader was cut off): it is told, its writes are refused, and a
    /// waiting candidate takes over.
    pub fn expire(&self, election: &str) {
        let mut s = lock(&self.shared);
        if let Some(l) = s.elections.get_mut(election) {
            if let Some((_, lost)) = l.holder.take() {
                let _ = lost.send(true);
            }
        }
        drop(s);
        self.freed.notify_waiters();
    }

    /// The lease of `election` held by instance `id`, if that one leads.
    pub fn leader(&self, election: &str) -> Option<(u64, u64)> {
        let s = lock(&self.shared);
        let l = s.elections.get(election)?;
        l.holder.as_ref().map(|(id, _)| (*id, l.token))
    }

    /// Every entry, for the simulation's checks.
    pub fn dump(&self, prefix: &str) -> Vec<Entry> {
        let s = lock(&self.shared);
        s.kv.range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e.clone())
            .collect()
    }
}

impl MemoryInstance {
    fn shared(&self) -> MutexGuard<'_, Shared> {
        lock(&self.store.shared)
    }

    /// The process is gone: every later call through this instance fails.
    pub fn kill(&self) {
        self.dead.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn alive(&self) -> Result<(), StoreError> {
        if self.dead.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                endpoint: "memory".into(),
                reason: "this process was killed".into(),
            });
        }
        Ok(())
    }

    /// Checks the fault and the fence before a write.
    fn admit(&self, s: &mut Shared) -> Result<(), StoreError> {
        if s.failing_writes > 0 {
            s.failing_writes -= 1;
            return Err(StoreError::Unavailable {
                endpoint: "memory".into(),
                reason: "simulated store failure".into(),
            });
        }
        let fence = self.fence.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some((election, token)) = fence {
            let leads = s.elections.get(&election).is_some_and(|l| {
                l.token == token && l.holder.as_ref().is_some_and(|(id, _)| *id == self.id)
            });
            if !leads {
                return Err(StoreError::NotLeader { token });
            }
        }
        Ok(())
    }

    fn write(&self, key: &str, value: Option<&[u8]>, expect: Expect) -> Result<u64, StoreError> {
        check_key(key)?;
        self.alive()?;
        let mut s = self.shared();
        self.admit(&mut s)?;
        let found = s.kv.get(key).map(|e| e.revision);
        if !expect.matches(found) {
            return Err(StoreError::Conflict {
                key: key.into(),
                expected: expect.to_string(),
                found,
            });
        }
        s.revision += 1;
        let revision = s.revision;
        let event = match value {
            Some(v) => {
                let e = Entry {
                    key: key.into(),
                    value: v.to_vec(),
                    revision,
                };
                s.kv.insert(key.into(), e.clone());
                WatchEvent::Put(e)
            }
            None => {
                s.kv.remove(key);
                WatchEvent::Delete {
                    key: key.into(),
                    revision,
                }
            }
        };
        drop(s);
        let _ = self.store.changes.send(event);
        Ok(revision)
    }
}

#[async_trait::async_trait]
impl Store for MemoryInstance {
    fn describe(&self) -> String {
        format!("memory store (instance {})", self.id)
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.alive()?;
        Ok(self.shared().kv.get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Entry>, StoreError> {
        self.alive()?;
        let s = self.shared();
        Ok(s.kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| !hidden(k, prefix))
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn put(&self, key: &str, value: &[u8], expect: Expect) -> Result<u64, StoreError> {
        self.write(key, Some(value), expect)
    }

    async fn delete(&self, key: &str, expect: Expect) -> Result<bool, StoreError> {
        let existed = self.shared().kv.contains_key(key);
        match self.write(key, None, expect) {
            Ok(_) => Ok(existed),
            Err(StoreError::Conflict { found: None, .. }) if expect == Expect::Any => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn watch(&self, prefix: &str) -> Result<WatchStream, StoreError> {
        Ok(WatchStream {
            inner: WatchInner::Broadcast {
                rx: self.store.changes.subscribe(),
                prefix: prefix.into(),
                ended: false,
            },
        })
    }

    async fn campaign(&self, election: &str, _ttl: Duration) -> Result<Leadership, StoreError> {
        loop {
            self.alive()?;
            let freed = self.store.freed.clone();
            let notified = freed.notified();
            {
                let mut s = self.shared();
                let l = s.elections.entry(election.into()).or_default();
                if l.holder.is_none() {
                    l.token += 1;
                    let (tx, lost) = watch::channel(false);
                    l.holder = Some((self.id, tx));
                    let token = l.token;
                    *self.fence.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((election.into(), token));
                    return Ok(Leadership {
                        token,
                        lost,
                        election: election.into(),
                        handle: Box::new(MemoryLeader {
                            store: self.store.clone(),
                            election: election.into(),
                            id: self.id,
                        }),
                    });
                }
            }
            notified.await;
        }
    }
}

struct MemoryLeader {
    store: MemoryStore,
    election: String,
    id: u64,
}

#[async_trait::async_trait]
impl LeaderHandle for MemoryLeader {
    async fn resign(self: Box<Self>) -> Result<(), StoreError> {
        if self
            .store
            .leader(&self.election)
            .is_some_and(|(id, _)| id == self.id)
        {
            self.store.expire(&self.election);
        }
        Ok(())
    }
}
