//! Embedded backend: one redb file, no other process.
//!
//! Tables: `kv` maps a key to its last revision (8 bytes, little endian)
//! followed by the value; `meta` holds the global revision counter;
//! `elections` holds each election's epoch (the last token handed out).
//! Every write runs in one redb write transaction, so compare-and-set and
//! fencing are atomic, and commits are durable before they are reported.

use crate::{
    check_key, hidden, Entry, Expect, LeaderHandle, Leadership, Store, StoreError, WatchEvent,
    WatchInner, WatchStream,
};
use redb::{Database, DatabaseError, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const ELECTIONS: TableDefinition<&str, u64> = TableDefinition::new("elections");
const REVISION: &str = "revision";

/// How many watch events a slow consumer may fall behind before its watch ends.
const WATCH_BUFFER: usize = 4096;

/// The embedded store: a single redb file. Cheap to clone (shared handle).
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    db: Database,
    /// Serialises writers so that watch events go out in revision order.
    writer: Mutex<()>,
    events: broadcast::Sender<WatchEvent>,
    fence: Mutex<Option<Fence>>,
}

/// The leadership that fences this instance's writes.
#[derive(Clone)]
struct Fence {
    election: String,
    token: u64,
    resigned: Arc<AtomicBool>,
}

impl EmbeddedStore {
    /// Opens the store at `path`, creating the file and its parent
    /// directories if needed. Fails with [`StoreError::Locked`] if another
    /// process has it open.
    pub async fn open(path: impl AsRef<Path>) -> Result<EmbeddedStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let p = path.clone();
        let inner = blocking(&path, move || Inner::open(p)).await?;
        tracing::info!(path = %path.display(), "opened embedded store");
        Ok(EmbeddedStore {
            inner: Arc::new(inner),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn fence(&self) -> Option<Fence> {
        lock(&self.inner.fence).clone()
    }

    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        blocking(&self.inner.path, move || f(&inner)).await
    }
}

/// Runs blocking redb work off the async threads; a panic inside (redb
/// meeting a damaged file) becomes an error naming the file.
async fn blocking<T, F>(path: &Path, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("the database engine failed: {e}"),
        }),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Inner {
    fn open(path: PathBuf) -> Result<Inner, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                context: format!("creating directory {} for the state store", dir.display()),
                source,
            })?;
        }
        let db = match Database::create(&path) {
            Ok(db) => db,
            Err(DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::Locked { path }),
            // redb's answer to a file that is not one of its databases.
            Err(DatabaseError::Storage(redb::StorageError::Io(e)))
                if e.kind() == std::io::ErrorKind::InvalidData =>
            {
                return Err(StoreError::Corrupt {
                    path,
                    reason: format!("not a state store database, or damaged ({e}); restore it from a backup, or move it aside to start with an empty store"),
                })
            }
            Err(e) => return Err(db_err(&path, e)),
        };
        let inner = Inner {
            path,
            db,
            writer: Mutex::new(()),
            events: broadcast::channel(WATCH_BUFFER).0,
            fence: Mutex::new(None),
        };
        // Create the tables so that readers never meet a missing one.
        let txn = inner.db.begin_write().map_err(|e| inner.err(e))?;
        {
            txn.open_table(KV).map_err(|e| inner.err(e))?;
            txn.open_table(META).map_err(|e| inner.err(e))?;
            txn.open_table(ELECTIONS).map_err(|e| inner.err(e))?;
        }
        txn.commit().map_err(|e| inner.err(e))?;
        Ok(inner)
    }

    fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        db_err(&self.path, e)
    }

    fn corrupt(&self, reason: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            reason,
        }
    }

    /// Splits a stored `kv` value into (revision, value).
    fn decode(&self, key: &str, raw: &[u8]) -> Result<(u64, Vec<u8>), StoreError> {
        let Some((rev, value)) = raw.split_first_chunk::<8>() else {
            return Err(self.corrupt(format!(
                "value of key `{key}` is {} bytes, shorter than its revision header",
                raw.len()
            )));
        };
        let rev = u64::from_le_bytes(*rev);
        if rev == 0 {
            return Err(self.corrupt(format!("value of key `{key}` has revision 0")));
        }
        Ok((rev, value.to_vec()))
    }

    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(KV).map_err(|e| self.err(e))?;
        let Some(raw) = table.get(key).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        let (revision, value) = self.decode(key, raw.value())?;
        Ok(Some(Entry {
            key: key.to_string(),
            value,
            revision,
        }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<Entry>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(KV).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in table.range(prefix..).map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            if hidden(key, prefix) {
                continue;
            }
            let (revision, value) = self.decode(key, v.value())?;
            out.push(Entry {
                key: key.to_string(),
                value,
                revision,
            });
        }
        Ok(out)
    }

    /// One fenced, compare-and-set write. `value` None deletes. Returns the
    /// new revision, or None for a delete of an absent key.
    fn write(
        &self,
        key: &str,
        value: Option<&[u8]>,
        expect: Expect,
        fence: Option<&Fence>,
    ) -> Result<Option<u64>, StoreError> {
        let _writer = lock(&self.writer);
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let revision = {
            if let Some(f) = fence {
                let elections = txn.open_table(ELECTIONS).map_err(|e| self.err(e))?;
                let epoch = elections
                    .get(f.election.as_str())
                    .map_err(|e| self.err(e))?
                    .map(|g| g.value());
                if f.resigned.load(Ordering::SeqCst) || epoch != Some(f.token) {
                    return Err(StoreError::NotLeader { token: f.token });
                }
            }
            let mut kv = txn.open_table(KV).map_err(|e| self.err(e))?;
            // An unconditional write may replace a damaged value (repair);
            // a conditional one needs its revision.
            let found = match kv.get(key).map_err(|e| self.err(e))? {
                Some(raw) => match self.decode(key, raw.value()) {
                    Ok((rev, _)) => Some(rev),
                    Err(_) if expect == Expect::Any => Some(0),
                    Err(e) => return Err(e),
                },
                None => None,
            };
            if !expect.matches(found) {
                return Err(StoreError::Conflict {
                    key: key.to_string(),
                    expected: expect.to_string(),
                    found,
                });
            }
            if value.is_none() && found.is_none() {
                return Ok(None); // nothing to delete; the transaction aborts
            }
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            let last = meta
                .get(REVISION)
                .map_err(|e| self.err(e))?
                .map(|g| g.value())
                .unwrap_or(0);
            let revision = last + 1;
            meta.insert(REVISION, revision).map_err(|e| self.err(e))?;
            match value {
                Some(v) => {
                    let mut raw = Vec::with_capacity(8 + v.len());
                    raw.extend_from_slice(&revision.to_le_bytes());
                    raw.extend_from_slice(v);
                    kv.insert(key, raw.as_slice()).map_err(|e| self.err(e))?;
                }
                None => {
                    kv.remove(key).map_err(|e| self.err(e))?;
                }
            }
            revision
        };
        txn.commit().map_err(|e| self.err(e))?;
        // Still under the writer lock: events go out in revision order. No
        // receivers is fine.
        let event = match value {
            Some(v) => WatchEvent::Put(Entry {
                key: key.to_string(),
                value: v.to_vec(),
                revision,
            }),
            None => WatchEvent::Delete {
                key: key.to_string(),
                revision,
            },
        };
        let _ = self.events.send(event);
        Ok(Some(revision))
    }

    /// Bumps and durably stores the election's epoch; returns the new one.
    fn next_epoch(&self, election: &str) -> Result<u64, StoreError> {
        let _writer = lock(&self.writer);
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let epoch = {
            let mut elections = txn.open_table(ELECTIONS).map_err(|e| self.err(e))?;
            let last = elections
                .get(election)
                .map_err(|e| self.err(e))?
                .map(|g| g.value())
                .unwrap_or(0);
            let epoch = last + 1;
            elections.insert(election, epoch).map_err(|e| self.err(e))?;
            epoch
        };
        txn.commit().map_err(|e| self.err(e))?;
        Ok(epoch)
    }
}

fn db_err(path: &Path, e: impl Into<redb::Error>) -> StoreError {
    let source: redb::Error = e.into();
    match source {
        redb::Error::DatabaseAlreadyOpen => StoreError::Locked {
            path: path.to_path_buf(),
        },
        redb::Error::Corrupted(reason) => StoreError::Corrupt {
            path: path.to_path_buf(),
            reason,
        },
        source => StoreError::Embedded {
            path: path.to_path_buf(),
            source: Box::new(source),
        },
    }
}

/// Embedded leadership: nothing to renew; resigning only stops the fence.
struct EmbeddedLeader {
    resigned: Arc<AtomicBool>,
    /// Kept so that `lost` never reports a closed channel.
    _lost: watch::Sender<bool>,
}

#[async_trait::async_trait]
impl LeaderHandle for EmbeddedLeader {
    async fn resign(self: Box<Self>) -> Result<(), StoreError> {
        self.resigned.store(true, Ordering::SeqCst);
        let _ = self._lost.send(true);
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    fn describe(&self) -> String {
        format!("embedded store {}", self.inner.path.display())
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let key = key.to_string();
        self.run(move |db| db.get(&key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Entry>, StoreError> {
        let prefix = prefix.to_string();
        self.run(move |db| db.list(&prefix)).await
    }

    async fn put(&self, key: &str, value: &[u8], expect: Expect) -> Result<u64, StoreError> {
        check_key(key)?;
        let (key, value, fence) = (key.to_string(), value.to_vec(), self.fence());
        let rev = self
            .run(move |db| db.write(&key, Some(&value), expect, fence.as_ref()))
            .await?;
        rev.ok_or_else(|| self.inner.corrupt("a put produced no revision".into()))
    }

    async fn delete(&self, key: &str, expect: Expect) -> Result<bool, StoreError> {
        check_key(key)?;
        let (key, fence) = (key.to_string(), self.fence());
        let rev = self
            .run(move |db| db.write(&key, None, expect, fence.as_ref()))
            .await?;
        Ok(rev.is_some())
    }

    async fn watch(&self, prefix: &str) -> Result<WatchStream, StoreError> {
        Ok(WatchStream {
            inner: WatchInner::Broadcast {
                rx: self.inner.events.subscribe(),
                prefix: prefix.to_string(),
                ended: false,
            },
        })
    }

    /// Immediate: only one process can open the file, so it always leads.
    /// The token is the election's durably stored epoch, plus one.
    async fn campaign(&self, election: &str, _ttl: Duration) -> Result<Leadership, StoreError> {
        let name = election.to_string();
        let token = self.run(move |db| db.next_epoch(&name)).await?;
        let resigned = Arc::new(AtomicBool::new(false));
        *lock(&self.inner.fence) = Some(Fence {
            election: election.to_string(),
            token,
            resigned: resigned.clone(),
        });
        let (lost_tx, lost) = watch::channel(false);
        tracing::info!(election, token, store = %self.describe(), "leading");
        Ok(Leadership {
            token,
            lost,
            election: election.to_string(),
            handle: Box::new(EmbeddedLeader {
                resigned,
                _lost: lost_tx,
            }),
        })
    }
}
