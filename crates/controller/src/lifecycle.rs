//! The pair lifecycle's shell: a workflow claims a pair (phase and journal
//! in one compare-and-set, by `duplex_core::pair_lifecycle::begin`), writes
//! each step's intent before carrying it out, and releases the pair at its
//! end (by `pair_lifecycle::end`). A write that finds the journal naming
//! another operation fails: the pair was taken from this flow (recovered
//! by a new leader), and the flow stops.

use crate::ctl::Ctl;
use crate::repo::{RepoError, PAIRS};
use duplex_core::model::{Pair, PairPhase};
use duplex_core::pair_lifecycle::{begin, end, Intent, Journal, Workflow};
use duplex_store::StoreError;
use std::time::Duration;

/// Retries of one journal write while the store is unavailable, and the
/// pause before the n-th (n times this).
const STORE_RETRIES: u32 = 4;
const STORE_BACKOFF: Duration = Duration::from_millis(200);

pub fn key(name: &str) -> String {
    format!("{PAIRS}{name}")
}

/// Why a flow cannot go on with the pair.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("pair {pair}: {reason}")]
    Refused { pair: String, reason: String },
    #[error("pair {pair} was taken over by operation {by}; this one stops")]
    Lost { pair: String, by: String },
}

fn owned(p: &Pair, op: &str) -> Result<(), LifecycleError> {
    match &p.journal {
        Some(j) if j.op == op => Ok(()),
        other => Err(LifecycleError::Lost {
            pair: p.name.clone(),
            by: other
                .as_ref()
                .map(|j| j.op.clone())
                .unwrap_or_else(|| "none".into()),
        }),
    }
}

/// Claims pair `name` for workflow `w` run by operation `op`, applying
/// `also` in the same write (e.g. raising the role token). Returns the
/// phase it was in, and the pair as claimed.
pub async fn claim(
    ctl: &Ctl,
    name: &str,
    w: Workflow,
    op: &str,
    mut also: impl FnMut(&mut Pair),
) -> Result<(PairPhase, Pair), LifecycleError> {
    let mut before = PairPhase::Ready;
    let r = ctl
        .repo
        .update::<Pair, String, _>(&key(name), |p| {
            before = p.phase;
            p.phase = begin(p.phase, w).map_err(|e| e.to_string())?;
            p.journal = Some(Journal {
                op: op.into(),
                workflow: w,
                intent: None,
            });
            also(p);
            Ok(())
        })
        .await?;
    let pair = r.map_err(|reason| LifecycleError::Refused {
        pair: name.into(),
        reason,
    })?;
    Ok((before, pair))
}

/// Takes over pair `name`, left by operation `from` (`None`: no journal),
/// for workflow `w` of operation `op`; the phase is set to `phase`.
pub async fn adopt(
    ctl: &Ctl,
    name: &str,
    from: Option<&str>,
    (w, phase): (Workflow, PairPhase),
    op: &str,
) -> Result<Pair, LifecycleError> {
    let r = ctl
        .repo
        .update::<Pair, String, _>(&key(name), |p| {
            if p.journal.as_ref().map(|j| j.op.as_str()) != from {
                return Err("taken by another operation meanwhile".into());
            }
            p.phase = phase;
            p.journal = Some(Journal {
                op: op.into(),
                workflow: w,
                intent: None,
            });
            Ok(())
        })
        .await?;
    r.map_err(|reason| LifecycleError::Refused {
        pair: name.into(),
        reason,
    })
}

/// Writes the step `intent` (and `also`) on the pair before it is taken.
pub async fn step(
    ctl: &Ctl,
    name: &str,
    op: &str,
    intent: Intent,
    mut also: impl FnMut(&mut Pair),
) -> Result<Pair, LifecycleError> {
    update(ctl, name, op, |p| {
        if let Some(j) = &mut p.journal {
            j.intent = Some(intent.clone());
        }
        also(p);
    })
    .await
}

/// Raises the pair's role token and writes the step `intent(new token)`,
/// in one write, before orders carrying the token go out.
pub async fn step_raising_token(
    ctl: &Ctl,
    name: &str,
    op: &str,
    intent: impl Fn(u64) -> Intent,
) -> Result<Pair, LifecycleError> {
    update(ctl, name, op, |p| {
        p.token += 1;
        if let Some(j) = &mut p.journal {
            j.intent = Some(intent(p.token));
        }
    })
    .await
}

/// Changes the pair while operation `op` owns it. A store that is
/// briefly unavailable is tried again a few times.
pub async fn update(
    ctl: &Ctl,
    name: &str,
    op: &str,
    mut f: impl FnMut(&mut Pair),
) -> Result<Pair, LifecycleError> {
    let mut attempt = 0;
    loop {
        let r = ctl
            .repo
            .update::<Pair, LifecycleError, _>(&key(name), |p| {
                owned(p, op)?;
                f(p);
                Ok(())
            })
            .await;
        match r {
            Err(RepoError::Store(StoreError::Unavailable { .. })) if attempt < STORE_RETRIES => {
                attempt += 1;
                tokio::time::sleep(STORE_BACKOFF * attempt).await;
            }
            r => return r?,
        }
    }
}

/// Ends workflow `w` of operation `op` on the pair (phase by
/// `pair_lifecycle::end`, journal cleared), applying `also` in the same
/// write (retried by [`update`] while the store is briefly unavailable).
/// If it still fails, the pair is left to the recovery pass, which finds
/// it orphaned.
pub async fn release(
    ctl: &Ctl,
    name: &str,
    (w, op): (Workflow, &str),
    ok: bool,
    mut also: impl FnMut(&mut Pair),
) -> Result<Pair, LifecycleError> {
    let res = update(ctl, name, op, |p| {
        p.phase = end(p.phase, w, ok);
        p.journal = None;
        also(p);
    })
    .await;
    if let Err(e) = &res {
        tracing::warn!(pair = %name, op, "cannot record the end of {}: {e}", w.as_str());
    }
    res
}

/// Starts workflow `w` on pair `name` as a new operation of `kind`: claims
/// the pair (with `also` in the same write), records the operation, and
/// runs `flow` under the office. Returns the operation and the pair as
/// claimed.
pub async fn launch<F, Fut>(
    ctl: &std::sync::Arc<Ctl>,
    name: &str,
    (w, kind): (Workflow, duplex_core::model::OpKind),
    also: impl FnMut(&mut Pair),
    flow: F,
) -> Result<(duplex_core::model::Operation, Pair), LifecycleError>
where
    F: FnOnce(std::sync::Arc<Ctl>, Pair, crate::ops::OpHandle) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let id = crate::ops::new_id(ctl);
    let guard = ctl.office.reserve(&id);
    let (before, pair) = claim(ctl, name, w, &id, also).await?;
    let subject = format!("pair/{name}");
    match crate::ops::record(ctl, id.clone(), kind, &subject).await {
        Ok((op, handle)) => {
            ctl.office
                .spawn(guard, flow(ctl.clone(), pair.clone(), handle));
            Ok((op, pair))
        }
        Err(e) => {
            // Nothing was ordered yet: give the pair back as it was.
            let _ = release(ctl, name, (w, &id), false, |p| p.phase = before).await;
            Err(e.into())
        }
    }
}
