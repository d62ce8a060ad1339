//! Taking office: campaign for the lease, raise every agent's fence to our
//! token, fail operations a predecessor left running, then lead until the
//! lease is lost — at which point this controller stops (a deposed leader
//! must not act; its supervisor restarts it as a candidate).

use crate::ctl::Ctl;
use crate::error::ControllerError;
use duplex_core::model::Severity;
use std::sync::Arc;
use std::time::Duration;

/// Election name in the store.
pub const ELECTION: &str = "controller";

/// Campaigns, leads until the lease is lost, and campaigns again; store
/// outages are retried with backoff. Returns only on a start-up error.
pub async fn hold_office(ctl: Arc<Ctl>) -> Result<(), ControllerError> {
    let mut backoff = Duration::from_millis(500);
    loop {
        tracing::info!(id = %ctl.cfg.id, store = %ctl.repo.store.describe(), "campaigning for the leader lease");
        match ctl.repo.store.campaign(ELECTION, ctl.cfg.lease_ttl).await {
            Ok(lease) => {
                backoff = Duration::from_millis(500);
                let token = lease.token;
                lead(&ctl, lease).await;
                let aborted = ctl.office.leave();
                tracing::error!("left office: {aborted} running workflow(s) stopped");
                tracing::error!("{}", ControllerError::Deposed { token });
            }
            Err(e) => {
                tracing::warn!("cannot campaign for the lease (retrying in {backoff:?}): {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Takes office with `lease` and returns when it is lost.
async fn lead(ctl: &Arc<Ctl>, mut lease: duplex_store::Leadership) {
    let token = lease.token;
    ctl.lock_observed().reset();
    ctl.office.take(token, lease.lost.clone());
    ctl.events
        .emit(
            Severity::Info,
            "controller.leader",
            "controller",
            format!(
                "controller {} leads with fencing token {token} ({})",
                ctl.cfg.id,
                ctl.repo.store.describe()
            ),
        )
        .await;
    sweep_fences(ctl).await;
    ctl.kick.notify_one();
    loop {
        if *lease.lost.borrow() {
            break;
        }
        if lease.lost.changed().await.is_err() {
            break;
        }
    }
}

/// Tells every registered agent our token at once, so orders from any
/// earlier leader are refused from now on, even before we order anything.
async fn sweep_fences(ctl: &Arc<Ctl>) {
    let Ok(hosts) = ctl.hosts().await else { return };
    for h in hosts {
        let agent = ctl.agent(&h.url);
        match agent.raise_fence().await {
            Ok(n) => tracing::info!(host = %h.name, fence = n, "agent fenced to our token"),
            Err(e) => {
                tracing::warn!(host = %h.name, "cannot raise the agent's fence now (it will refuse older orders once it obeys ours): {e}")
            }
        }
    }
}
