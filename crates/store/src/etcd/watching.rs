//! etcd watches: opened at a known revision, resumed after connection loss.

use super::{describe_err, revision_i64, Backoff, Inner};
use crate::{hidden, AbortOnDrop, StoreError, WatchEvent, WatchInner, WatchStream};
use etcd_client::{EventType, GetOptions, WatchOptions};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::sleep;

/// Watch events buffered for a slow consumer before the watch waits for it.
const WATCH_BUFFER: usize = 1024;

/// Why a watch could not be (re)opened.
pub(super) enum OpenWatchError {
    /// The start revision has been compacted away: changes were lost.
    Compacted(i64),
    Other(StoreError),
}

/// The changes under `prefix` after this call (see [`crate::Store::watch`]).
pub(super) async fn watch(inner: &Arc<Inner>, prefix: &str) -> Result<WatchStream, StoreError> {
    let start = inner.current_revision(prefix).await? + 1;
    let stream = match inner.open_watch(prefix, true, start).await {
        Ok(s) => s,
        Err(OpenWatchError::Other(e)) => return Err(e),
        Err(OpenWatchError::Compacted(oldest)) => {
            return Err(inner.bad_answer(&format!(
                "revision {start} compacted (oldest kept {oldest})"
            )))
        }
    };
    let (tx, rx) = mpsc::channel(WATCH_BUFFER);
    let task = tokio::spawn(watch_task(
        inner.clone(),
        prefix.to_string(),
        start,
        stream,
        tx,
    ));
    Ok(WatchStream {
        inner: WatchInner::Channel {
            rx,
            _task: AbortOnDrop(task),
        },
    })
}

impl Inner {
    /// Opens a watch on `key` (or everything under it if `prefix`) from
    /// `start` and waits until etcd confirms it.
    pub(super) async fn open_watch(
        &self,
        key: &str,
        prefix: bool,
        start: i64,
    ) -> Result<etcd_client::WatchStream, OpenWatchError> {
        let mut opts = WatchOptions::new().with_start_revision(start);
        if prefix {
            opts = opts.with_prefix();
        }
        let mut client = self.client.watch_client();
        let mut stream = self
            .call("watch", client.watch(key, Some(opts)))
            .await
            .map_err(OpenWatchError::Other)?;
        let first = self
            .call("watch", stream.message())
            .await
            .map_err(OpenWatchError::Other)?;
        match first {
            Some(r) if r.canceled() && r.compact_revision() > 0 => {
                Err(OpenWatchError::Compacted(r.compact_revision()))
            }
            Some(r) if r.canceled() => Err(OpenWatchError::Other(
                self.bad_answer(&format!("watch refused: {}", r.cancel_reason())),
            )),
            Some(r) if r.created() => Ok(stream),
            Some(_) => Err(OpenWatchError::Other(
                self.bad_answer("watch answered before it was created"),
            )),
            None => Err(OpenWatchError::Other(StoreError::Unavailable {
                endpoint: self.endpoint.clone(),
                reason: "watch: the stream closed at once".into(),
            })),
        }
    }

    /// The store's current revision.
    async fn current_revision(&self, key: &str) -> Result<i64, StoreError> {
        let mut kv = self.client.kv_client();
        let opts = GetOptions::new().with_prefix().with_count_only();
        let resp = self.call("get", kv.get(key, Some(opts))).await?;
        let rev = self.header_revision(resp.header().map(|h| h.revision()))?;
        Ok(revision_i64(rev))
    }
}

/// Feeds a [`WatchStream`]: converts events, resumes after connection loss
/// from the next revision, ends on compaction or when the consumer is gone.
async fn watch_task(
    inner: Arc<Inner>,
    prefix: String,
    mut next: i64,
    stream: etcd_client::WatchStream,
    tx: mpsc::Sender<WatchEvent>,
) {
    let mut stream = Some(stream);
    let mut backoff = Backoff::new();
    loop {
        let Some(ws) = stream.as_mut() else {
            match inner.open_watch(&prefix, true, next).await {
                Ok(ws) => {
                    tracing::info!(prefix = %prefix, revision = next, "watch resumed");
                    stream = Some(ws);
                    backoff = Backoff::new();
                }
                Err(OpenWatchError::Compacted(oldest)) => {
                    tracing::warn!(prefix = %prefix, revision = next, oldest, "watch history compacted; ending the watch (re-list and watch again)");
                    return;
                }
                Err(OpenWatchError::Other(e)) => {
                    let delay = backoff.next();
                    tracing::warn!(prefix = %prefix, "cannot resume watch: {e}; retrying in {} ms", delay.as_millis());
                    tokio::select! {
                        _ = sleep(delay) => {}
                        _ = tx.closed() => return,
                    }
                }
            }
            continue;
        };
        let msg = tokio::select! {
            m = ws.message() => m,
            _ = tx.closed() => return,
        };
        let resp = match msg {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                tracing::warn!(prefix = %prefix, revision = next, "watch stream closed; resuming");
                stream = None;
                continue;
            }
            Err(e) => {
                tracing::warn!(prefix = %prefix, revision = next, "watch interrupted: {}; resuming", describe_err(&e));
                stream = None;
                continue;
            }
        };
        if resp.canceled() {
            if resp.compact_revision() > 0 {
                tracing::warn!(prefix = %prefix, revision = next, "watch history compacted; ending the watch (re-list and watch again)");
                return;
            }
            tracing::warn!(prefix = %prefix, "watch canceled by etcd: {}; resuming", resp.cancel_reason());
            stream = None;
            continue;
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            next = next.max(kv.mod_revision() + 1);
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            if hidden(&key, &prefix) {
                continue;
            }
            let event = match ev.event_type() {
                EventType::Put => match inner.entry(kv) {
                    Ok(e) => WatchEvent::Put(e),
                    Err(e) => {
                        tracing::warn!(key = %key, "skipping watch event: {e}");
                        continue;
                    }
                },
                EventType::Delete => WatchEvent::Delete {
                    key,
                    revision: u64::try_from(kv.mod_revision()).unwrap_or(0),
                },
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
    }
}
