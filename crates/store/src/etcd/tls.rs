//! Mutual TLS to etcd: the client presents its certificate (etcd takes the
//! certificate's common name as the user, see [`super::auth`]) and checks
//! that the server's certificate is the cluster store's, by name, under
//! the cluster's CA.

use etcd_client::{Certificate, Identity, TlsOptions};

/// PEM of the CA, the client's certificate and key, and the name the
/// server's certificate must carry.
#[derive(Clone)]
pub struct EtcdTls {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub server_name: String,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("server_name", &self.server_name)
            .field("key_pem", &"(secret)")
            .finish()
    }
}

impl EtcdTls {
    pub(crate) fn options(&self) -> TlsOptions {
        TlsOptions::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(self.server_name.clone())
    }
}

/// The scheme an endpoint must have: https with TLS, http without.
pub(crate) fn check_scheme(endpoints: &[String], tls: bool) -> Result<(), String> {
    let want = if tls { "https://" } else { "http://" };
    match endpoints.iter().find(|e| !e.starts_with(want)) {
        None => Ok(()),
        Some(e) if tls => Err(format!(
            "etcd endpoint `{e}` is not https://: the store is reached over TLS only"
        )),
        Some(e) => Err(format!(
            "etcd endpoint `{e}` is not http://, and no TLS identity was given for it"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_match_the_transport() {
        let e = |s: &str| vec![s.to_string()];
        assert!(check_scheme(&e("https://127.0.0.1:2379"), true).is_ok());
        assert!(check_scheme(&e("http://127.0.0.1:2379"), false).is_ok());
        assert!(check_scheme(&e("http://127.0.0.1:2379"), true)
            .unwrap_err()
            .contains("over TLS only"));
        assert!(check_scheme(&e("https://127.0.0.1:2379"), false).is_err());
    }
}
