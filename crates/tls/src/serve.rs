//! The HTTPS server loop: TLS 1.2/1.3 with the cluster's CA, one task per
//! connection, each request of a connection carrying the caller's
//! [`Peer`]. Routes decide with it who may do what.

use crate::bundle::Bundle;
use crate::error::TlsError;
use crate::reload::Reloading;
use axum::Router;
use duplex_core::identity::Identity;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 512;
/// A client must finish its handshake within this.
pub const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// Who is calling: the identity its certificate names, or why there is
/// none (no certificate, or one that names no Duplex identity).
#[derive(Debug, Clone)]
pub struct Peer(pub Result<Identity, String>);

impl Peer {
    pub const NO_CERTIFICATE: &'static str =
        "no client certificate: present one issued by the cluster's CA (`duplex pki issue`)";
}

pub type Acceptor = Reloading<TlsAcceptor>;

pub fn acceptor(bundle: Bundle) -> Result<Acceptor, TlsError> {
    Reloading::new(bundle, |m| {
        Ok(TlsAcceptor::from(Arc::new(crate::config::server(m)?)))
    })
}

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<Acceptor>,
    app: Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.map_err(std::io::Error::other)?,
            _ = &mut shutdown => return Ok(()),
        };
        let (tcp, addr) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return Ok(()),
        };
        let acceptor = tls.get();
        let app = app.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let stream = match tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(%addr, "TLS handshake refused: {e}");
                    return;
                }
                Err(_) => {
                    tracing::info!(%addr, "TLS handshake not finished within {} s", HANDSHAKE_LIMIT.as_secs());
                    return;
                }
            };
            let peer = Peer(match stream.get_ref().1.peer_certificates() {
                Some([leaf, ..]) => crate::peer::identity_of(leaf),
                _ => Err(Peer::NO_CERTIFICATE.to_string()),
            });
            let svc = app.map_request(move |mut req: axum::http::Request<Incoming>| {
                req.extensions_mut().insert(peer.clone());
                req
            });
            let svc = TowerToHyperService::new(svc);
            let conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            if let Err(e) = conn {
                tracing::debug!(%addr, "connection ended: {e}");
            }
        });
    }
}
