//! The cluster's PKI and mutual TLS on every control connection.
//!
//! - [`pki`]: the CA's directory: `duplex pki init`, issuing certificates
//!   bound to an [`Identity`](duplex_core::identity::Identity), rotation and
//!   revocation (a CRL).
//! - [`bundle`]: what one process holds (`ca.crt`, `tls.crt`, `tls.key`,
//!   `crl.pem`), loaded and checked.
//! - [`config`]: rustls configs from a bundle: servers ask every client for
//!   a certificate of the CA, clients check the server's against the CA.
//! - [`reload`]: a value built from a bundle, rebuilt when its files change
//!   (rotation and revocation take effect without a restart).
//! - [`serve`]: the HTTPS server loop for an axum router; each request
//!   carries the caller's [`Peer`](serve::Peer) identity.
//! - [`client`]: reqwest clients presenting a bundle's certificate.

pub mod bundle;
pub mod client;
pub mod config;
mod error;
mod files;
pub mod peer;
pub mod pki;
pub mod reload;
pub mod serve;
pub mod test_pki;

pub use bundle::Bundle;
pub use error::TlsError;
pub use serve::Peer;
