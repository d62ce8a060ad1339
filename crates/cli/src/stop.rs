//! When a long-running client command (the probes) stops: at SIGINT or
//! SIGTERM, or after `limit`.

use std::time::Duration;

pub async fn signalled_or(limit: Option<Duration>) {
    use tokio::signal::unix::{signal, SignalKind};
    let limit = async {
        match limit {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = limit => {}
        },
        Err(_) => tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = limit => {}
        },
    }
}
