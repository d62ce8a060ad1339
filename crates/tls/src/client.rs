//! HTTPS clients that present a bundle's certificate and check the
//! server's against the bundle's CA; `https://` only. Rebuilt when the
//! bundle's files change.

use crate::bundle::Bundle;
use crate::error::TlsError;
use crate::reload::Reloading;
use std::sync::Arc;

/// Turns the bare builder into the caller's (timeouts, proxy settings).
pub type Shape = fn(reqwest::ClientBuilder) -> reqwest::ClientBuilder;

/// A reqwest client over a bundle, kept current.
pub struct Clients {
    inner: Reloading<reqwest::Client>,
}

impl Clients {
    pub fn new(bundle: Bundle, shape: Shape) -> Result<Clients, TlsError> {
        let inner = Reloading::new(bundle, move |m| {
            let cfg = crate::config::client(m)?;
            shape(reqwest::Client::builder())
                .use_preconfigured_tls(cfg)
                .https_only(true)
                .build()
                .map_err(|e| TlsError::Config(format!("HTTPS client: {e}")))
        })?;
        Ok(Clients { inner })
    }

    /// The client for the next requests (cheap: a shared handle).
    pub fn get(&self) -> reqwest::Client {
        (*self.inner.get()).clone()
    }

    pub fn bundle(&self) -> &Bundle {
        self.inner.bundle()
    }
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clients({})", self.bundle().dir.display())
    }
}

/// Shared clients, as most holders keep them.
pub type SharedClients = Arc<Clients>;
