//! What a certificate says: whom it names, when it is valid, who signed it.

use duplex_core::identity::Identity;
use std::time::{SystemTime, UNIX_EPOCH};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The facts of a leaf certificate Duplex relies on.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub identity: Identity,
    pub not_before: i64,
    pub not_after: i64,
    pub serial_hex: String,
    issuer: Vec<u8>,
}

impl Leaf {
    pub fn parse(der: &[u8]) -> Result<Leaf, String> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let names: Vec<&str> = match cert.subject_alternative_name() {
            Ok(Some(ext)) => ext
                .value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    GeneralName::DNSName(n) => Some(*n),
                    _ => None,
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => return Err(format!("unreadable subject alternative names: {e}")),
        };
        let identity = Identity::from_names(names).map_err(|e| e.to_string())?;
        Ok(Leaf {
            identity,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            serial_hex: cert.tbs_certificate.raw_serial_as_string(),
            issuer: cert.issuer().as_raw().to_vec(),
        })
    }

    pub fn check_current(&self, now: SystemTime) -> Result<(), String> {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if now < self.not_before {
            return Err(format!(
                "the certificate is not valid before unix time {} (now {now}; is the clock right?)",
                self.not_before
            ));
        }
        if now > self.not_after {
            return Err(format!(
                "the certificate expired at unix time {} (now {now}); issue a new one with `duplex pki rotate`",
                self.not_after
            ));
        }
        Ok(())
    }

    /// The CA named as issuer is `ca` (by name; the signature is checked
    /// by every peer's TLS stack).
    pub fn check_issued_by(&self, ca: &[u8]) -> Result<(), String> {
        let (_, ca) = X509Certificate::from_der(ca)
            .map_err(|e| format!("the CA certificate is not X.509: {e}"))?;
        if ca.subject().as_raw() != self.issuer.as_slice() {
            return Err("the certificate was not issued by the bundle's CA (ca.crt)".into());
        }
        Ok(())
    }
}

/// The identity a peer's certificate names.
pub fn identity_of(der: &[u8]) -> Result<Identity, String> {
    Leaf::parse(der).map(|l| l.identity)
}
