//! The S2 ruleset database: one versioned ruleset in the store (the
//! defaults until an operator changes it), edited by compare-and-set, and
//! pushed to every live host whose report shows an older version (a
//! restarted agent starts with the defaults and gets it again).

use crate::ctl::Ctl;
use crate::repo::{RepoError, RULES};
use duplex_core::classify::{default_ruleset, RuleError, Ruleset};
use duplex_store::{Expect, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// How often hosts' ruleset versions are compared with the store's.
const PUSH_PERIOD: Duration = Duration::from_secs(1);
/// How often an edit is retried when another writer got there first.
const EDIT_ATTEMPTS: usize = 5;

/// The ruleset in force, and its store revision (`None`: the defaults,
/// never stored).
async fn stored(ctl: &Ctl) -> Result<(Ruleset, Option<u64>), RepoError> {
    Ok(match ctl.repo.get::<Ruleset>(RULES).await? {
        Some(r) => (r.value, Some(r.revision)),
        None => (default_ruleset(), None),
    })
}

pub async fn current(ctl: &Ctl) -> Result<Ruleset, RepoError> {
    Ok(stored(ctl).await?.0)
}

/// Applies `edit` to the ruleset in force and stores the result (its
/// version one higher); `edit` refuses with the reason.
pub async fn change(
    ctl: &Ctl,
    edit: impl Fn(&Ruleset) -> Result<Ruleset, RuleError>,
) -> Result<Result<Ruleset, RuleError>, RepoError> {
    for _ in 0..EDIT_ATTEMPTS {
        let (set, revision) = stored(ctl).await?;
        let next = match edit(&set) {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        let expect = revision.map_or(Expect::Absent, Expect::Revision);
        match ctl.repo.put(RULES, &next, expect).await {
            Ok(_) => return Ok(Ok(next)),
            Err(RepoError::Store(StoreError::Conflict { .. })) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(RepoError::Contended { key: RULES.into() })
}

/// Pushes the ruleset to hosts that report an older one, while leading.
pub async fn run(ctl: Arc<Ctl>) {
    loop {
        tokio::time::sleep(PUSH_PERIOD).await;
        if !ctl.is_leader() {
            continue;
        }
        if let Err(e) = push(&ctl).await {
            tracing::warn!("pushing the S2 ruleset: {e}");
        }
    }
}

/// Pushes at once (after an edit), rather than at the next period.
pub async fn push_now(ctl: Arc<Ctl>) {
    if let Err(e) = push(&ctl).await {
        tracing::warn!("pushing the S2 ruleset: {e}");
    }
}

async fn push(ctl: &Ctl) -> Result<(), RepoError> {
    let set = current(ctl).await?;
    let hosts = ctl.hosts().await?;
    let behind: Vec<String> = {
        let obs = ctl.lock_observed();
        hosts
            .into_iter()
            .filter(|h| obs.live(h, &ctl.cfg.liveness))
            .filter(|h| {
                // 0: a host that does not classify (a simulated one).
                obs.get(&h.name)
                    .is_some_and(|s| (1..set.version).contains(&s.report.rules_version))
            })
            .map(|h| h.url)
            .collect()
    };
    // One at a time would let a host that stopped answering delay the
    // others by its time limit.
    for url in behind {
        let (agent, set) = (ctl.agent(&url), set.clone());
        tokio::spawn(async move {
            if let Err(e) = agent.set_rules(&set).await {
                tracing::warn!(agent = %url, "ruleset v{} not taken: {e}", set.version);
            }
        });
    }
    Ok(())
}
