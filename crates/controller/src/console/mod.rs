//! The operator's web console, served by the controller at `/ui`: one
//! page (HTML, CSS and script built into the binary, no build step) that
//! shows hosts by site and rack, pairs with their roles and running
//! operations, and the events, live from `/v1/stream`, and acts through
//! the API with the operator's session (`duplex console`).

pub mod rows;
pub mod session;
pub mod stream;

use crate::ctl::Ctl;
use crate::error::ApiError;
use crate::repo::OPS;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use duplex_core::model::{OpState, Operation};
use rows::{HostRow, Rows};
use std::sync::Arc;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");
/// Finished operations the console keeps showing (the newest).
const FINISHED_OPS: usize = 50;
/// The page loads nothing from elsewhere and runs no inline script.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

/// `/ui` and its assets, `/ui/login`, `/ui/logout` (open: the page has no
/// data of its own; everything it shows comes through the API).
pub fn routes() -> Router<Arc<Ctl>> {
    Router::new()
        .route("/ui", get(|| asset("text/html; charset=utf-8", INDEX)))
        .route("/ui/", get(|| asset("text/html; charset=utf-8", INDEX)))
        .route("/ui/app.js", get(|| asset("text/javascript", SCRIPT)))
        .route("/ui/app.css", get(|| asset("text/css", STYLE)))
        .route("/ui/login", get(session::login))
        .route("/ui/logout", post(session::logout))
}

async fn asset(kind: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, kind),
            (CACHE_CONTROL, "no-cache"),
            (CONTENT_SECURITY_POLICY, CSP),
        ],
        body,
    )
}

/// Every row the console shows, as the API shows it.
pub async fn snapshot(ctl: &Arc<Ctl>) -> Result<rows::Snapshot, ApiError> {
    let (hosts, vms, pairs) = (ctl.hosts().await?, ctl.vms().await?, ctl.pairs().await?);
    let mut ops: Vec<Operation> = ctl
        .repo
        .list::<Operation>(OPS)
        .await?
        .into_iter()
        .map(|r| r.value)
        .collect();
    ops.sort_by_key(|o| std::cmp::Reverse(o.started_ms));
    let mut finished = 0;
    ops.retain(|o| {
        o.state == OpState::Running || {
            finished += 1;
            finished <= FINISHED_OPS
        }
    });
    let listing = crate::listing::Listing::new(&vms, &hosts);
    let mut s = rows::Snapshot::default();
    let host_rows: Rows = hosts
        .iter()
        .map(|h| {
            let v = ctl.host_view(h.clone());
            let row = HostRow {
                name: h.name.clone(),
                site: h.site.clone(),
                rack: h.rack.clone(),
                state: h.state.as_str().to_string(),
                late_s: rows::late_s(v.silent_ms),
                vcpus: h.capacity.vcpus,
                memory_mib: h.capacity.memory_mib,
                cpu_pct: v.load.as_ref().map(|l| rows::pct(l.cpu)),
                mem_pct: v.load.as_ref().map(|l| rows::pct(l.mem)),
                vms: v.vms,
            };
            (h.name.clone(), value(&row))
        })
        .collect();
    let vm_rows: Rows = vms
        .iter()
        .map(|v| {
            (
                v.spec.name.clone(),
                value(&ctl.vm_view(v.clone(), &listing, false)),
            )
        })
        .collect();
    let pair_rows: Rows = pairs
        .iter()
        .map(|p| (p.name.clone(), value(&ctl.pair_view(p.clone(), &listing))))
        .collect();
    let op_rows: Rows = ops.iter().map(|o| (o.id.clone(), value(o))).collect();
    let matrix = ctl.traffic_matrix(&vms);
    s.tables
        .insert("flows", rows::flows(matrix.entries(), rows::MAX_FLOWS));
    s.tables.insert("hosts", host_rows);
    s.tables.insert("vms", vm_rows);
    s.tables.insert("pairs", pair_rows);
    s.tables.insert("ops", op_rows);
    Ok(s)
}

/// A row as the API shows it.
fn value<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}
