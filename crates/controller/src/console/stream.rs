//! `GET /v1/stream`: the console's live feed (server-sent events). The
//! first message holds every row of every table and the latest events,
//! marked `full` (a page that reconnects replaces what it shows with it:
//! rows deleted meanwhile go, events are not shown twice); then, at most
//! every [`TICK`] or at once on a new event, a message with only what
//! changed and the new events. No page polls a whole list.

use super::rows::{self, diff};
use crate::ctl::Ctl;
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// Longest a change waits before it is sent.
const TICK: Duration = Duration::from_secs(1);
/// Messages queued for a slow browser before the feed waits for it.
const QUEUE: usize = 4;
/// Events in the first message, and most in any later one.
const EVENTS: usize = 200;

#[derive(Serialize)]
struct Message<'a> {
    /// Everything, not a change: the page starts over from it.
    full: bool,
    tables: &'a rows::Update,
    events: &'a [duplex_core::model::Event],
}

pub async fn stream(State(ctl): State<Arc<Ctl>>) -> Result<Response, ApiError> {
    // The first snapshot here: a store that cannot be read is an error
    // the page sees, not an empty console.
    let first = super::snapshot(&ctl).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(QUEUE);
    tokio::spawn(feed(ctl, first, tx));
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|m| (Ok::<_, std::convert::Infallible>(m), rx))
    });
    Ok((
        [
            (CONTENT_TYPE, "text/event-stream"),
            (CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

fn sse(m: &Message) -> String {
    let data = serde_json::to_string(m).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    format!("event: update\ndata: {data}\n\n")
}

async fn feed(ctl: Arc<Ctl>, first: rows::Snapshot, tx: tokio::sync::mpsc::Sender<String>) {
    let mut events = ctl.events.list(None, EVENTS).await.unwrap_or_default();
    let mut after = events.last().map(|e| e.id.clone());
    let mut last = rows::Snapshot::default();
    let mut now = first;
    let mut full = true;
    loop {
        let update = diff(&last, &now);
        if !update.is_empty() || !events.is_empty() || full {
            let m = sse(&Message {
                full,
                tables: &update,
                events: &events,
            });
            if tx.send(m).await.is_err() {
                return; // the page is gone
            }
            full = false;
        }
        last = now;
        let notified = ctl.events.notify.notified();
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = notified => {}
            _ = tx.closed() => return,
        }
        if !ctl.is_leader() {
            return; // the page reconnects to the leader
        }
        events = ctl
            .events
            .list(after.as_deref(), EVENTS)
            .await
            .unwrap_or_default();
        if let Some(e) = events.last() {
            after = Some(e.id.clone());
        }
        now = match super::snapshot(&ctl).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("console feed: {}", e.message);
                last.clone()
            }
        };
    }
}
