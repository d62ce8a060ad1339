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
}
