//! etcd leadership: a lease kept alive in the background and the election
//! key taken with `create_revision(key) == 0`; the token is that put's revision.

use super::watching::OpenWatchError;
use super::{describe_err, revision_i64, Backoff, Fence, Inner};
use crate::{AbortOnDrop, LeaderHandle, Leadership, StoreError, RESERVED_PREFIX};
use etcd_client::{Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, TxnOpResponse};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{sleep, timeout, Instant};

fn election_key(election: &str) -> String {
    format!("{RESERVED_PREFIX}election/{election}")
}

/// Waits until this instance leads `election` (see [`crate::Store::campaign`]).
pub(super) async fn campaign(
    inner: &Arc<Inner>,
    election: &str,
    ttl: Duration,
) -> Result<Leadership, StoreError> {
    let key = election_key(election);
    let ttl_secs = i64::try_from(ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0))
        .unwrap_or(i64::MAX)
        .max(1);
    let mut backoff = Backoff::new();
    let mut announced = false;
    loop {
        match inner.try_lead(&key, ttl_secs).await {
            Ok(Attempt::Won {
                token,
                lease,
                granted,
                deadline,
            }) => {
                let (lost_tx, lost) = watch::channel(false);
                let lost_tx = Arc::new(lost_tx);
                let task = tokio::spawn(keep_alive_task(
                    inner.clone(),
                    lease,
                    granted,
                    deadline,
                    lost_tx.clone(),
                ));
                *inner
                    .fence
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Fence {
                    key: key.clone(),
                    token,
                    lost: lost.clone(),
                });
                tracing::info!(election, token, lease, id = %inner.id, "leading");
                return Ok(Leadership {
                    token,
                    lost,
                    election: election.to_string(),
                    handle: Box::new(EtcdLeader {
                        inner: inner.clone(),
                        lease,
                        lost: lost_tx,
                        keep_alive: AbortOnDrop(task),
                    }),
                });
            }
            Ok(Attempt::Held { revision, holder }) => {
                if !announced {
                    tracing::info!(election, holder = %holder, "election held by another candidate; waiting");
                    announced = true;
                }
                if let Err(e) = inner.wait_for_release(&key, revision).await {
                    let delay = backoff.next();
                    tracing::warn!(
                        election,
                        "waiting for the election: {e}; retrying in {} ms",
                        delay.as_millis()
                    );
                    sleep(delay).await;
                } else {
                    backoff = Backoff::new();
                }
            }
            Err(e @ StoreError::Unavailable { .. }) => {
                let delay = backoff.next();
                tracing::warn!(
                    election,
                    "campaign: {e}; retrying in {} ms",
                    delay.as_millis()
                );
                sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Outcome of one try at the election key.
enum Attempt {
    Won {
        token: u64,
        lease: i64,
        /// The TTL etcd granted (may exceed the one asked for).
        granted: Duration,
        /// When the lease will have expired at the latest if never renewed.
        deadline: Instant,
    },
    Held {
        revision: i64,
        holder: String,
    },
}

impl Inner {
    async fn try_lead(&self, key: &str, ttl_secs: i64) -> Result<Attempt, StoreError> {
        let sent = Instant::now();
        let mut leases = self.client.lease_client();
        let grant = self
            .call("lease grant", leases.grant(ttl_secs, None))
            .await?;
        let lease = grant.id();
        let granted = Duration::from_secs(u64::try_from(grant.ttl()).unwrap_or(0));
        let txn = Txn::new()
            .when(vec![Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then(vec![TxnOp::put(
                key,
                self.id.as_str(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else(vec![TxnOp::get(key, None)]);
        let mut kv = self.client.kv_client();
        let resp = match self.call("campaign", kv.txn(txn)).await {
            Ok(r) => r,
            Err(e) => {
                self.revoke(lease).await;
                return Err(e);
            }
        };
        if resp.succeeded() {
            let token = self.header_revision(resp.header().map(|h| h.revision()))?;
            return Ok(Attempt::Won {
                token,
                lease,
                granted,
                deadline: sent + granted,
            });
        }
        self.revoke(lease).await;
        let holder = match resp.op_responses().first() {
            Some(TxnOpResponse::Get(g)) => g
                .kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
                .unwrap_or_default(),
            _ => String::new(),
        };
        let revision = revision_i64(self.header_revision(resp.header().map(|h| h.revision()))?);
        Ok(Attempt::Held { revision, holder })
    }

    /// Best-effort lease revoke (the lease expires by itself anyway).
    async fn revoke(&self, lease: i64) {
        let mut leases = self.client.lease_client();
        if let Err(e) = self.call("lease revoke", leases.revoke(lease)).await {
            tracing::debug!(lease, "lease revoke failed: {e}");
        }
    }

    /// Returns once the election key has been deleted after `revision` (or
    /// something went wrong, after which the caller simply tries again).
    async fn wait_for_release(&self, key: &str, revision: i64) -> Result<(), StoreError> {
        let mut stream = match self.open_watch(key, false, revision + 1).await {
            Ok(s) => s,
            Err(OpenWatchError::Compacted(_)) => return Ok(()),
            Err(OpenWatchError::Other(e)) => return Err(e),
        };
        loop {
            // No timeout here: a quiet watch is the normal case.
            match stream.message().await {
                Ok(Some(resp)) => {
                    if resp.canceled() {
                        return Ok(());
                    }
                    if resp
                        .events()
                        .iter()
                        .any(|e| e.event_type() == EventType::Delete)
                    {
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.error("watch election", &e)),
            }
        }
    }
}

/// Renews the lease every ttl/3 and reports loss: when etcd says the lease
/// is gone, or when it could not be renewed before it would have expired.
async fn keep_alive_task(
    inner: Arc<Inner>,
    lease: i64,
    ttl: Duration,
    mut deadline: Instant,
    lost: Arc<watch::Sender<bool>>,
) {
    let period = (ttl / 3).max(Duration::from_millis(100));
    let mut keeper: Option<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)> = None;
    let mut wait = period;
    loop {
        let now = Instant::now();
        if now >= deadline {
            tracing::error!(
                lease,
                "leader lease could not be renewed in time: leadership lost"
            );
            let _ = lost.send(true);
            return;
        }
        sleep(wait.min(deadline - now)).await;
        let now = Instant::now();
        if now >= deadline {
            continue;
        }
        let limit = inner.opts.request_timeout.min(deadline - now);
        let sent = Instant::now();
        let renewed: Result<i64, String> = timeout(limit, async {
            match keeper.as_mut() {
                None => {
                    // Opening the stream renews once and fails if the lease is gone.
                    let mut leases = inner.client.lease_client();
                    let k = leases
                        .keep_alive(lease)
                        .await
                        .map_err(|e| describe_err(&e))?;
                    keeper = Some(k);
                    Ok(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(1))
                }
                Some((k, s)) => {
                    k.keep_alive().await.map_err(|e| describe_err(&e))?;
                    match s.message().await.map_err(|e| describe_err(&e))? {
                        Some(resp) => Ok(resp.ttl()),
                        None => Err("keep-alive stream closed".to_string()),
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} ms", limit.as_millis())));
        match renewed {
            Ok(secs) if secs > 0 => {
                deadline = sent + Duration::from_secs(secs.unsigned_abs());
                wait = period;
            }
            Ok(_) => {
                tracing::error!(lease, "leader lease has expired: leadership lost");
                let _ = lost.send(true);
                return;
            }
            Err(reason) if reason.contains("lease not found") => {
                tracing::error!(lease, "leader lease has expired: leadership lost");
                let _ = lost.send(true);
                return;
            }
            Err(reason) => {
                tracing::warn!(
                    lease,
                    endpoint = %inner.endpoint,
                    "cannot renew leader lease: {reason}; {} ms left before it expires",
                    deadline.saturating_duration_since(Instant::now()).as_millis()
                );
                keeper = None;
                wait = Duration::from_millis(250);
            }
        }
    }
}

/// etcd leadership: the keep-alive task (stopped on drop) and the lease.
struct EtcdLeader {
    inner: Arc<Inner>,
    lease: i64,
    lost: Arc<watch::Sender<bool>>,
    keep_alive: AbortOnDrop,
}

#[async_trait::async_trait]
impl LeaderHandle for EtcdLeader {
    async fn resign(self: Box<Self>) -> Result<(), StoreError> {
        let EtcdLeader {
            inner,
            lease,
            lost,
            keep_alive,
        } = *self;
        drop(keep_alive);
        let _ = lost.send(true);
        let mut leases = inner.client.lease_client();
        inner.call("lease revoke", leases.revoke(lease)).await?;
        tracing::info!(lease, "resigned leadership");
        Ok(())
    }
}
