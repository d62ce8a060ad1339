//! `POST /v1/agents/{host}/heartbeat`: agents register and report.

use super::{ApiJson, ApiResult, Shared};
use crate::error::ApiError;
use crate::events::now_ms;
use crate::repo::HOSTS;
use axum::extract::Path;
use axum::Json;
use duplex_core::agent_api::{HeartbeatAck, HostReport, AGENT_HEARTBEAT_MS};
use duplex_core::model::host::default_site;
use duplex_core::model::{liveness, valid_name, Host, HostState, Severity};
use duplex_store::Expect;

pub async fn heartbeat(
    ctl: Shared,
    Path(host): Path<String>,
    ApiJson(report): ApiJson<HostReport>,
) -> ApiResult<HeartbeatAck> {
    let ctl = ctl.0;
    if !valid_name(&host) {
        return Err(ApiError::bad_request(format!(
            "path: `{host}` is not a valid host name (1-32 chars of a-z, 0-9, '-', starting with a letter)"
        )));
    }
    if report.host.name != host {
        return Err(ApiError::bad_request(format!(
            "field `host.name`: `{}` does not match the path's host `{host}`",
            report.host.name
        )));
    }
    if !(report.url.starts_with("http://") || report.url.starts_with("https://")) {
        return Err(ApiError::bad_request(format!(
            "field `url`: `{}` is not an http(s) URL",
            report.url
        )));
    }
    if report.capacity.memory_mib == 0 || report.capacity.vcpus == 0 {
        return Err(ApiError::bad_request(
            "field `capacity`: memory_mib and vcpus must be positive",
        ));
    }
    if let Some(site) = &report.site {
        check_site(site)?;
    }
    let key = format!("{HOSTS}{host}");
    let existing = ctl.repo.get::<Host>(&key).await?;
    // The agent keeps its own fence while this is true (see the rule).
    let silent_before = ctl.lock_observed().silent_ms(&host);
    let fence = existing.as_ref().and_then(|r| r.value.fence);
    let host_fenced = liveness::held_fenced(fence, silent_before, report.self_fence_ms);
    match existing {
        None => {
            let rec = Host {
                v: duplex_core::model::SCHEMA_VERSION,
                name: host.clone(),
                url: report.url.clone(),
                capacity: report.capacity,
                state: HostState::Ready,
                site: report.site.clone().unwrap_or_else(default_site),
                rack: crate::placement::rack_of(ctl.topology.as_ref(), &host),
                accel: Some(report.host.accel.clone()),
                registered_ms: now_ms(),
                before_failure: None,
                fence: None,
            };
            ctl.repo.put(&key, &rec, Expect::Absent).await?;
            ctl.events
                .emit(
                    Severity::Info,
                    "host.registered",
                    &format!("host/{host}"),
                    format!(
                        "{host} registered at {} ({} vCPUs, {} MiB, {:?})",
                        report.url,
                        report.capacity.vcpus,
                        report.capacity.memory_mib,
                        report.host.accel.kind
                    ),
                )
                .await;
        }
        Some(r) => {
            let h = &r.value;
            let moved = report.site.as_ref().filter(|s| **s != h.site);
            let changed = h.url != report.url
                || h.capacity != report.capacity
                || h.accel.as_ref() != Some(&report.host.accel)
                || moved.is_some();
            if changed {
                let mut rec = h.clone();
                rec.url = report.url.clone();
                rec.capacity = report.capacity;
                rec.accel = Some(report.host.accel.clone());
                if let Some(site) = moved {
                    tracing::info!(host, from = %h.site, to = %site, "host reports another site");
                    rec.site = site.clone();
                }
                ctl.repo
                    .put(&key, &rec, Expect::Revision(r.revision))
                    .await?;
            }
        }
    }
    if report.seq == 1 {
        tracing::info!(host, "agent (re)started and reports");
    }
    // An agent behind our fencing token is raised to it at once, so that
    // orders from any earlier leader are refused from now on.
    if report.fence < ctl.fence() {
        let agent = ctl.agent(&report.url);
        let name = host.clone();
        tokio::spawn(async move {
            match agent.raise_fence().await {
                Ok(n) => tracing::info!(host = %name, fence = n, "agent fenced to our token"),
                Err(e) => tracing::warn!(host = %name, "cannot raise the agent's fence: {e}"),
            }
        });
    }
    ctl.ingest_traffic(&report.traffic);
    ctl.ingest_usage(&host, report.usage.as_ref());
    let fresh = {
        let mut obs = ctl.lock_observed();
        let fresh = obs.get(&host).is_none();
        obs.record(&host, report);
        fresh
    };
    if fresh {
        ctl.kick.notify_one();
    }
    // A guest that lost its peer: the host watch looks now, not at its
    // next period.
    if ctl.lock_observed().any_peer_lost(&host) {
        ctl.urgent.notify_one();
    }
    Ok(Json(HeartbeatAck {
        interval_ms: AGENT_HEARTBEAT_MS,
        fence: ctl.fence(),
        host_fenced,
    }))
}

/// Longest site name an agent may report.
const MAX_SITE_NAME: usize = 32;

/// A reported site name: 1..=32 characters of `[a-z0-9-]`.
fn check_site(site: &str) -> Result<(), ApiError> {
    let ok = !site.is_empty()
        && site.len() <= MAX_SITE_NAME
        && site
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "field `site`: `{site}` is not a valid site name (1-{MAX_SITE_NAME} chars of a-z, 0-9, '-')"
        )))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn site_names() {
        for ok in ["a", "b", "default", "dc-2"] {
            assert!(super::check_site(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "a_b", "a b", &"x".repeat(33)] {
            assert!(super::check_site(bad).is_err(), "{bad}");
        }
    }
}
