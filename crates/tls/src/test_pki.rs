//! A throwaway PKI for tests: a CA in a directory the test owns, and a
//! bundle per identity, valid for the loopback address.

use crate::bundle::Bundle;
use crate::error::TlsError;
use crate::pki::{IssueRequest, Pki};
use duplex_core::identity::{Identity, Scope};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

pub struct TestPki {
    pub dir: PathBuf,
}

impl TestPki {
    /// A new CA in `dir` (which must not hold one).
    pub fn new(dir: &Path) -> Result<TestPki, TlsError> {
        Pki::init(dir)?;
        Ok(TestPki {
            dir: dir.to_path_buf(),
        })
    }

    /// The bundle of `id` (issued at the first call), valid for 127.0.0.1.
    pub fn bundle(&self, id: &Identity) -> Result<Bundle, TlsError> {
        let dir = self.dir.join(crate::pki::ISSUED_DIR).join(id.dns_name());
        if !dir.join(crate::bundle::CERT_FILE).exists() {
            let mut req = IssueRequest::new(id.clone());
            req.ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
            Pki::open(&self.dir)?.issue(&req)?;
        }
        Ok(Bundle::new(dir))
    }

    pub fn controller(&self) -> Result<Bundle, TlsError> {
        self.bundle(&Identity::Controller)
    }

    pub fn agent(&self, host: &str) -> Result<Bundle, TlsError> {
        self.bundle(&Identity::agent(host)?)
    }

    pub fn operator(&self, scope: Scope) -> Result<Bundle, TlsError> {
        self.bundle(&Identity::operator("tester", scope)?)
    }

    /// A bundle of `id` whose certificate expired yesterday (in
    /// `expired/<name>`).
    pub fn expired(&self, id: &Identity) -> Result<Bundle, TlsError> {
        let now = time::OffsetDateTime::now_utc();
        let mut req = IssueRequest::new(id.clone());
        req.ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
        req.out = Some(self.dir.join("expired").join(id.dns_name()));
        req.validity = Some((
            now - time::Duration::days(30),
            now - time::Duration::days(1),
        ));
        let e = Pki::open(&self.dir)?.issue(&req)?;
        Ok(Bundle::new(e.bundle))
    }

    /// A client that presents the certificate in `dir` as it is (none of
    /// our own checks: expired, revoked or foreign ones too), trusting
    /// this PKI's CA: what an attacker holding those files would send.
    pub fn raw_client(&self, dir: &Path) -> Result<reqwest::Client, TlsError> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |e: &dyn std::fmt::Display| TlsError::Config(e.to_string());
        let ca = CertificateDer::from_pem_file(self.dir.join(crate::bundle::CA_FILE))
            .map_err(|e| bad(&e))?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca)?;
        let cert = CertificateDer::from_pem_file(dir.join(crate::bundle::CERT_FILE))
            .map_err(|e| bad(&e))?;
        let key =
            PrivateKeyDer::from_pem_file(dir.join(crate::bundle::KEY_FILE)).map_err(|e| bad(&e))?;
        let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert], key)?;
        reqwest::Client::builder()
            .use_preconfigured_tls(cfg)
            .no_proxy()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| bad(&e))
    }
}
