//! Events: logged, stored under `events/`, and announced to followers.

use crate::repo::{Repo, EVENTS};
use duplex_core::model::event::event_id;
use duplex_core::model::{Event, Severity};
use duplex_store::Expect;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Notify;

/// Events kept in the store; older ones are pruned.
pub const KEEP_EVENTS: usize = 2000;
const PRUNE_EVERY: u64 = 100;

pub struct Events {
    repo: Repo,
    counter: AtomicU64,
    pub notify: Notify,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Events {
    pub fn new(repo: Repo) -> Self {
        Events {
            repo,
            counter: AtomicU64::new(0),
            notify: Notify::new(),
        }
    }

    /// Records an event. Never fails the caller: a store error is logged.
    pub async fn emit(&self, severity: Severity, kind: &str, subject: &str, message: String) {
        match severity {
            Severity::Info => tracing::info!(kind, subject, "{message}"),
            Severity::Warning => tracing::warn!(kind, subject, "{message}"),
            Severity::Error => tracing::error!(kind, subject, "{message}"),
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        let ev = Event {
            v: duplex_core::model::SCHEMA_VERSION,
            id: event_id(now_ms(), n),
            at_ms: now_ms(),
            severity,
            kind: kind.into(),
            subject: subject.into(),
            message,
        };
        let key = format!("{EVENTS}{}", ev.id);
        if let Err(e) = self.repo.put(&key, &ev, Expect::Absent).await {
            tracing::warn!("event not stored: {e}");
        }
        self.notify.notify_waiters();
        if n.is_multiple_of(PRUNE_EVERY) {
            self.prune().await;
        }
    }

    async fn prune(&self) {
        let Ok(all) = self.repo.store.list(EVENTS).await else {
            return;
        };
        let excess = all.len().saturating_sub(KEEP_EVENTS);
        for e in all.iter().take(excess) {
            let _ = self.repo.delete(&e.key, Expect::Any).await;
        }
    }

    /// Events after `after` (an id), oldest first, at most `limit`.
    pub async fn list(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Event>, crate::repo::RepoError> {
        let all: Vec<Event> = self
            .repo
            .list::<Event>(EVENTS)
            .await?
            .into_iter()
            .map(|r| r.value)
            .filter(|e| after.is_none_or(|a| e.id.as_str() > a))
            .collect();
        // Without `after`, the latest `limit`; with it, the next `limit`.
        let skip = if after.is_none() {
            all.len().saturating_sub(limit)
        } else {
            0
        };
        Ok(all.into_iter().skip(skip).take(limit).collect())
    }
}
