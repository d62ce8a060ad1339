//! The controller's state store.
//!
//! One async trait, [`Store`], with two backends:
//!
//! - [`EmbeddedStore`] (the default): a single-file [redb] database; no other
//!   process. Only one process can open the file at a time.
//! - [`EtcdStore`]: an etcd v3 cluster (tested against etcd 3.4).
//!
//! Keys are UTF-8 strings such as `vms/web1`; values are opaque bytes. Every
//! write gets a revision that is monotonic per store, and writes can be made
//! conditional on the revision they expect ([`Expect`], compare-and-set).
//!
//! Leader election: [`Store::campaign`] waits until this store instance leads
//! and returns a [`Leadership`] whose fencing `token` is strictly greater than
//! that of every earlier leader of the same election. From then on every
//! write made through that store instance is fenced: it fails with
//! [`StoreError::NotLeader`] once the instance no longer leads.
//!
//! Keys under `_duplex/` are reserved for the store's own bookkeeping (the
//! etcd backend keeps its election keys there): they cannot be written and
//! are not listed or watched unless asked for by that prefix.
//!
//! [`etcd_server`] runs a real `etcd` for tests and for the lab;
//! [`MemoryStore`] is the store of the controller's simulation.
//!
//! [redb]: https://docs.rs/redb

mod embedded;
mod error;
mod etcd;
pub mod etcd_server;
pub mod memory;

use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

pub use embedded::EmbeddedStore;
pub use error::StoreError;
pub use etcd::tls::EtcdTls;
pub use etcd::{auth as etcd_auth, EtcdOptions, EtcdStore};
pub use memory::{MemoryInstance, MemoryStore};

/// Prefix of keys the store keeps for itself (election keys).
pub const RESERVED_PREFIX: &str = "_duplex/";

/// One stored key with its value and the revision of its last change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key, e.g. `vms/web1`.
    pub key: String,
    /// The value as written.
    pub value: Vec<u8>,
    /// Revision of the last write to this key (etcd: its mod revision); > 0.
    pub revision: u64,
}

/// Precondition of a compare-and-set write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Write unconditionally.
    Any,
    /// The key must not exist.
    Absent,
    /// The key must exist with exactly this revision (from [`Entry::revision`]).
    Revision(u64),
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Any => f.write_str("any"),
            Expect::Absent => f.write_str("absent"),
            Expect::Revision(r) => write!(f, "revision {r}"),
        }
    }
}

impl Expect {
    /// Whether a key currently at `found` (None: absent) satisfies this.
    pub fn matches(&self, found: Option<u64>) -> bool {
        match self {
            Expect::Any => true,
            Expect::Absent => found.is_none(),
            Expect::Revision(r) => found == Some(*r),
        }
    }
}

/// A change seen by [`Store::watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or overwritten.
    Put(Entry),
    /// The key was deleted at `revision`.
    Delete { key: String, revision: u64 },
}

impl WatchEvent {
    /// The key this event is about.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(e) => &e.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }

    /// The revision of the change.
    pub fn revision(&self) -> u64 {
        match self {
            WatchEvent::Put(e) => e.revision,
            WatchEvent::Delete { revision, .. } => *revision,
        }
    }
}

/// The changes under a prefix, in revision order, from [`Store::watch`].
///
/// [`WatchStream::recv`] returning `None` means the watch has ended (the
/// consumer fell too far behind, the etcd history it needed was compacted,
/// or the store went away): changes may have been missed, so the caller
/// should list the prefix again and start a new watch. A temporarily
/// unreachable etcd does not end the stream: it resumes where it left off.
pub struct WatchStream {
    inner: WatchInner,
}

enum WatchInner {
    /// Embedded: the store's in-process broadcast of committed writes.
    Broadcast {
        rx: broadcast::Receiver<WatchEvent>,
        prefix: String,
        ended: bool,
    },
    /// etcd: fed by a background task that is aborted when this is dropped.
    Channel {
        rx: mpsc::Receiver<WatchEvent>,
        _task: AbortOnDrop,
    },
}

impl WatchStream {
    /// The next change, or `None` once the watch has ended (see the type's doc).
    pub async fn recv(&mut self) -> Option<WatchEvent> {
        match &mut self.inner {
            WatchInner::Broadcast { rx, prefix, ended } => {
                if *ended {
                    return None;
                }
                loop {
                    match rx.recv().await {
                        Ok(ev) if ev.key().starts_with(prefix.as_str()) => return Some(ev),
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(
                                prefix = %prefix,
                                missed = n,
                                "watch consumer fell behind; ending the watch (re-list and watch again)"
                            );
                            *ended = true;
                            return None;
                        }
                        Err(broadcast::error::RecvError::Closed) => {
                            *ended = true;
                            return None;
                        }
                    }
                }
            }
            WatchInner::Channel { rx, .. } => rx.recv().await,
        }
    }
}

/// Leadership of one election, from [`Store::campaign`].
///
/// Keep it for as long as this process acts as leader. Dropping it without
/// [`Leadership::resign`] stops renewing the lease (etcd) as if the process
/// had vanished: another candidate takes over once the lease expires.
pub struct Leadership {
    /// Fencing token: strictly greater than every token an earlier leader of
    /// the same election had, also across restarts.
    pub token: u64,
    /// Becomes `true` when leadership is lost (etcd: the lease could not be
    /// renewed in time or has expired). The embedded store never loses it.
    pub lost: watch::Receiver<bool>,
    election: String,
    handle: Box<dyn LeaderHandle>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("election", &self.election)
            .field("token", &self.token)
            .field("lost", &*self.lost.borrow())
            .finish()
    }
}

impl Leadership {
    /// The election's name, as passed to [`Store::campaign`].
    pub fn election(&self) -> &str {
        &self.election
    }

    /// Whether leadership has been lost (see [`Leadership::lost`]).
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Gives leadership up at once (etcd: revokes the lease, so another
    /// candidate takes over without waiting for it to expire). Writes through
    /// the store instance fail with [`StoreError::NotLeader`] afterwards.
    pub async fn resign(self) -> Result<(), StoreError> {
        let Leadership { handle, .. } = self;
        handle.resign().await
    }
}

/// Backend-specific part of a [`Leadership`].
#[async_trait::async_trait]
trait LeaderHandle: Send + Sync {
    async fn resign(self: Box<Self>) -> Result<(), StoreError>;
}

/// The controller's state store. Hold it as `Arc<dyn Store>`.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// What this store is, for logs: `embedded store <path>` or `etcd <endpoints>`.
    fn describe(&self) -> String;

    /// The entry at `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError>;

    /// Every entry whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<Entry>, StoreError>;

    /// Writes `value` at `key` if `expect` holds (atomically); returns the new
    /// revision. A failed precondition gives [`StoreError::Conflict`].
    async fn put(&self, key: &str, value: &[u8], expect: Expect) -> Result<u64, StoreError>;

    /// Deletes `key` if `expect` holds (atomically); returns whether it existed.
    async fn delete(&self, key: &str, expect: Expect) -> Result<bool, StoreError>;

    /// The changes under `prefix` made after this call.
    async fn watch(&self, prefix: &str) -> Result<WatchStream, StoreError>;

    /// Waits until this store instance leads `election`. `ttl` is the lease
    /// time to live (etcd): a leader that vanished is replaced after about
    /// that long. Fences every later write through this instance (and its
    /// clones) with the returned leadership.
    ///
    /// etcd: while another candidate leads, this waits for its key to be
    /// deleted or to expire; while etcd is unreachable it keeps retrying
    /// (wrap it in a timeout to bound it). Campaigning again while still
    /// holding a [`Leadership`] of the same election waits for that one to
    /// end. Embedded: returns at once.
    async fn campaign(&self, election: &str, ttl: Duration) -> Result<Leadership, StoreError>;
}

/// Rejects empty keys and keys under [`RESERVED_PREFIX`].
fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::InvalidKey {
            key: key.into(),
            reason: "keys must not be empty".into(),
        });
    }
    if key.starts_with(RESERVED_PREFIX) {
        return Err(StoreError::InvalidKey {
            key: key.into(),
            reason: format!("keys under {RESERVED_PREFIX} are reserved for the store"),
        });
    }
    Ok(())
}

/// Whether a key found under `prefix` is hidden from list/watch.
fn hidden(key: &str, prefix: &str) -> bool {
    key.starts_with(RESERVED_PREFIX) && !prefix.starts_with(RESERVED_PREFIX)
}

// The controller moves these into tasks.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Leadership>();
    send::<WatchStream>();
    send_sync::<StoreError>();
};

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
