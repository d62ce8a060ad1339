//! Operations: a record under `ops/` per long-running request, with
//! progress; a new leader fails the ones its predecessor left running.

use crate::ctl::Ctl;
use crate::events::now_ms;
use crate::repo::{RepoError, OPS};
use duplex_core::model::{OpKind, OpState, Operation, Severity};
use duplex_store::Expect;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub struct OpHandle {
    ctl: Arc<Ctl>,
    pub id: String,
    kind: OpKind,
    started: std::time::Instant,
}

/// Operations numbered in this process.
static NUMBERED: AtomicU64 = AtomicU64::new(0);

/// A fresh operation id, `op-<fencing token>-<ms>-<n>`: unique by
/// construction, not by chance. Only the leader records operations, every
/// leadership has a token no other had (a controller that restarts must
/// win the lease again, with a new token), and within one process the
/// number never repeats. The time only makes ids readable and sortable.
pub fn new_id(ctl: &Ctl) -> String {
    let n = NUMBERED.fetch_add(1, Ordering::Relaxed);
    format!("op-{}-{}-{n:06}", ctl.office.token(), now_ms())
}

/// Records a new running operation with id `id` (from [`new_id`]).
pub async fn record(
    ctl: &Arc<Ctl>,
    id: String,
    kind: OpKind,
    subject: &str,
) -> Result<(Operation, OpHandle), RepoError> {
    let op = Operation {
        v: duplex_core::model::SCHEMA_VERSION,
        id: id.clone(),
        kind,
        subject: subject.into(),
        state: OpState::Running,
        progress: "started".into(),
        started_ms: now_ms(),
        finished_ms: None,
        error: None,
    };
    ctl.repo
        .put(&format!("{OPS}{id}"), &op, Expect::Absent)
        .await?;
    ctl.ops_running.fetch_add(1, Ordering::Relaxed);
    Ok((
        op,
        OpHandle {
            ctl: ctl.clone(),
            id,
            kind,
            started: std::time::Instant::now(),
        },
    ))
}

impl OpHandle {
    async fn set(&self, f: impl FnMut(&mut Operation) -> Result<(), std::convert::Infallible>) {
        let key = format!("{OPS}{}", self.id);
        if let Err(e) = self.ctl.repo.update(&key, f).await {
            tracing::warn!(op = %self.id, "cannot record progress: {e}");
        }
    }

    pub async fn progress(&self, line: impl Into<String>) {
        let line = line.into();
        tracing::info!(op = %self.id, "{line}");
        self.set(|o| {
            o.progress = line.clone();
            Ok(())
        })
        .await;
    }

    /// Reports the outcome as event `done` (info) or `failed` (error) about
    /// `subject`, with the result's message, then finishes the operation.
    pub async fn conclude(
        self,
        subject: &str,
        (done, failed): (&str, &str),
        result: Result<String, String>,
    ) {
        let (severity, kind, message) = match &result {
            Ok(m) => (Severity::Info, done, m.clone()),
            Err(e) => (Severity::Error, failed, e.clone()),
        };
        self.ctl.events.emit(severity, kind, subject, message).await;
        self.finish(result).await;
    }

    pub async fn finish(self, result: Result<String, String>) {
        let (state, progress, error) = match result {
            Ok(msg) => (OpState::Succeeded, msg, None),
            Err(e) => (OpState::Failed, "failed".to_string(), Some(e)),
        };
        let labels = crate::metrics::OpLabels {
            kind: self.kind.as_str().to_string(),
            outcome: state.as_str().to_string(),
        };
        self.ctl
            .metrics
            .operations
            .get_or_create(&labels)
            .observe(self.started.elapsed().as_secs_f64());
        self.set(|o| {
            o.state = state;
            o.progress = progress.clone();
            o.error = error.clone();
            o.finished_ms = Some(now_ms());
            Ok(())
        })
        .await;
        self.ctl.ops_running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Stops operation `id`, running in this process, and records it failed
/// with `reason`: its subject is left to whoever finds it (the recovery
/// pass, for a pair's journal).
pub async fn preempt(ctl: &Arc<Ctl>, id: &str, reason: &str) {
    if !ctl.office.abort(id) {
        return;
    }
    ctl.ops_running.fetch_sub(1, Ordering::Relaxed);
    let key = format!("{OPS}{id}");
    let res = ctl
        .repo
        .update::<Operation, std::convert::Infallible, _>(&key, |o| {
            o.state = OpState::Failed;
            o.progress = "failed".into();
            o.error = Some(reason.to_string());
            o.finished_ms = Some(now_ms());
            Ok(())
        })
        .await;
    if let Err(e) = res {
        tracing::warn!(op = %id, "preempted, but cannot record it: {e}");
    }
}

/// Operations still `running` that run nowhere in this process belonged
/// to a controller that is gone (or whose last write failed): they are
/// marked failed so nobody waits for them forever. Run by the recovery
/// pass on taking office and every little while after.
pub async fn fail_orphans(ctl: &Arc<Ctl>) -> Result<(), RepoError> {
    for r in ctl.repo.list::<Operation>(OPS).await? {
        if r.value.state != OpState::Running || ctl.office.runs(&r.value.id) {
            continue;
        }
        let mut op = r.value;
        op.state = OpState::Failed;
        op.error = Some("the controller running it stopped; check the subject and retry".into());
        op.finished_ms = Some(now_ms());
        let key = format!("{OPS}{}", op.id);
        if ctl
            .repo
            .put(&key, &op, Expect::Revision(r.revision))
            .await
            .is_ok()
        {
            ctl.events
                .emit(
                    Severity::Warning,
                    "operation.abandoned",
                    &op.subject,
                    format!(
                        "operation {} was left running by a controller that stopped: marked failed",
                        op.id
                    ),
                )
                .await;
        }
    }
    Ok(())
}
