//! A bundle: the TLS material one process holds, in one directory.
//!
//! ```text
//! ca.crt    the cluster CA's certificate (what peers are checked against)
//! tls.crt   this process's certificate, naming its identity
//! tls.key   its private key (mode 0600)
//! crl.pem   the CA's revocation list (revoked peers are refused)
//! ```

use crate::error::TlsError;
use crate::peer;
use duplex_core::identity::Identity;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub const CA_FILE: &str = "ca.crt";
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";
pub const CRL_FILE: &str = "crl.pem";
const FILES: [&str; 4] = [CA_FILE, CERT_FILE, KEY_FILE, CRL_FILE];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub dir: PathBuf,
}

/// A bundle's contents, parsed and checked.
#[derive(Debug)]
pub struct Material {
    pub ca: Vec<CertificateDer<'static>>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// Whom this bundle's certificate names.
    pub identity: Identity,
}

/// When a bundle's files last changed (a missing file is `None`).
pub type Stamp = Vec<Option<SystemTime>>;

impl Bundle {
    pub fn new(dir: impl Into<PathBuf>) -> Bundle {
        Bundle { dir: dir.into() }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn stamp(&self) -> Stamp {
        FILES
            .iter()
            .map(|f| {
                std::fs::metadata(self.path(f))
                    .and_then(|m| m.modified())
                    .ok()
            })
            .collect()
    }

    /// Reads and checks every file: the certificate must name one identity,
    /// be current, and be signed by the bundle's CA.
    pub fn load(&self) -> Result<Material, TlsError> {
        let ca = certs(&self.path(CA_FILE))?;
        let chain = certs(&self.path(CERT_FILE))?;
        let key_path = self.path(KEY_FILE);
        let key = PrivateKeyDer::from_pem_file(&key_path)
            .map_err(|e| TlsError::file(&key_path, format!("no private key: {e}")))?;
        let crl_path = self.path(CRL_FILE);
        let crls = if crl_path.exists() {
            CertificateRevocationListDer::pem_file_iter(&crl_path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| TlsError::file(&crl_path, format!("not a PEM CRL: {e}")))?
        } else {
            Vec::new()
        };
        let cert_path = self.path(CERT_FILE);
        let leaf = peer::Leaf::parse(&chain[0]).map_err(|e| TlsError::file(&cert_path, e))?;
        leaf.check_current(SystemTime::now())
            .map_err(|e| TlsError::file(&cert_path, e))?;
        leaf.check_issued_by(&ca[0])
            .map_err(|e| TlsError::file(&cert_path, e))?;
        Ok(Material {
            identity: leaf.identity,
            ca,
            chain,
            key,
            crls,
        })
    }
}

/// A bundle's files as PEM text, for clients that take PEM (etcd's).
pub struct Pem {
    pub ca: Vec<u8>,
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub identity: Identity,
}

impl Bundle {
    /// The bundle's PEM files, after [`load`](Self::load) checked them.
    pub fn pem(&self) -> Result<Pem, TlsError> {
        let identity = self.load()?.identity;
        let read = |f: &str| {
            let p = self.path(f);
            std::fs::read(&p).map_err(TlsError::io("cannot read", &p))
        };
        Ok(Pem {
            ca: read(CA_FILE)?,
            cert: read(CERT_FILE)?,
            key: read(KEY_FILE)?,
            identity,
        })
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    if !path.exists() {
        return Err(TlsError::file(
            path,
            "missing (a bundle is made by `duplex pki issue`)",
        ));
    }
    let v = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::file(path, format!("not a PEM certificate: {e}")))?;
    if v.is_empty() {
        return Err(TlsError::file(path, "holds no certificate"));
    }
    Ok(v)
}
