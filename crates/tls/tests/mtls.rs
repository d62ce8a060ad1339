//! Mutual TLS end to end on loopback: who a server sees, and every kind of
//! bad certificate refused.

use axum::routing::get;
use axum::{Extension, Router};
use duplex_core::identity::{Identity, Scope};
use duplex_tls::bundle::{Bundle, CERT_FILE, KEY_FILE};
use duplex_tls::client::Clients;
use duplex_tls::pki::{IssueRequest, Pki};
use duplex_tls::test_pki::TestPki;
use duplex_tls::Peer;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

async fn whoami(Extension(peer): Extension<Peer>) -> String {
    match peer.0 {
        Ok(id) => id.dns_name(),
        Err(e) => format!("anonymous: {e}"),
    }
}

/// Serves `whoami` with `bundle`; returns its `https://127.0.0.1:port`.
async fn server(bundle: Bundle) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let tls = Arc::new(duplex_tls::serve::acceptor(bundle).unwrap());
    let app = Router::new().route("/", get(whoami));
    tokio::spawn(duplex_tls::serve::serve(
        listener,
        tls,
        app,
        std::future::pending(),
    ));
    url
}

fn client(bundle: Bundle) -> reqwest::Client {
    Clients::new(bundle, |b| b).unwrap().get()
}

async fn ask(c: &reqwest::Client, url: &str) -> Result<String, String> {
    match c.get(url).send().await {
        Ok(r) => Ok(r.text().await.unwrap()),
        Err(e) => Err(duplex_tls_chain(&e)),
    }
}

fn duplex_tls_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[tokio::test]
async fn the_server_sees_who_calls() {
    let d = tempfile::tempdir().unwrap();
    let pki = TestPki::new(d.path()).unwrap();
    let url = server(pki.controller().unwrap()).await;
    let agent = client(pki.agent("h1").unwrap());
    assert_eq!(ask(&agent, &url).await.unwrap(), "h1.agent.duplex");
    let op = client(pki.operator(Scope::Read).unwrap());
    assert_eq!(ask(&op, &url).await.unwrap(), "tester.read.operator.duplex");
    // No certificate: the handshake finishes, the server knows it is nobody.
    let anon = reqwest::Client::builder()
        .use_preconfigured_tls(anonymous_config(&pki))
        .build()
        .unwrap();
    let a = ask(&anon, &url).await.unwrap();
    assert!(a.starts_with("anonymous: no client certificate"), "{a}");
}

fn anonymous_config(pki: &TestPki) -> rustls::ClientConfig {
    let m = pki.operator(Scope::Read).unwrap().load().unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(m.ca[0].clone()).unwrap();
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[tokio::test]
async fn another_cas_certificates_are_refused_both_ways() {
    let d = tempfile::tempdir().unwrap();
    let ours = TestPki::new(&d.path().join("a")).unwrap();
    let theirs = TestPki::new(&d.path().join("b")).unwrap();
    let url = server(ours.controller().unwrap()).await;
    // A client that trusts our CA but presents another's certificate:
    // the server refuses it.
    let e = ask(&raw_client(&ours, &theirs.agent("h1").unwrap().dir), &url)
        .await
        .unwrap_err();
    assert!(e.contains("UnknownCA"), "{e}");
    // A server of another CA: our client refuses it.
    let fake = server(theirs.controller().unwrap()).await;
    let e = ask(&client(ours.agent("h1").unwrap()), &fake)
        .await
        .unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");
}

#[tokio::test]
async fn expired_and_revoked_certificates_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let pki = TestPki::new(d.path()).unwrap();
    let url = server(pki.controller().unwrap()).await;
    // Expired: issued for a window in the past.
    let now = time::OffsetDateTime::now_utc();
    let mut req = IssueRequest::new(Identity::agent("old").unwrap());
    req.ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    req.validity = Some((
        now - time::Duration::days(30),
        now - time::Duration::days(1),
    ));
    let e = Pki::open(d.path()).unwrap().issue(&req).unwrap();
    // Our own bundle loader refuses to use it...
    let err = Bundle::new(&e.bundle).load().unwrap_err().to_string();
    assert!(err.contains("expired"), "{err}");
    // ...and a client that presents it anyway is refused by the server.
    let expired = raw_client(&pki, &e.bundle);
    assert!(ask(&expired, &url).await.is_err());
    // Revoked: works, then the CRL lists it and the server refuses it.
    let bob = pki.agent("bob").unwrap();
    let bob_client = client(bob.clone());
    assert_eq!(ask(&bob_client, &url).await.unwrap(), "bob.agent.duplex");
    Pki::open(d.path())
        .unwrap()
        .revoke("bob.agent.duplex")
        .unwrap();
    // The server picks the new CRL up within a reload period.
    let mut refused = false;
    for _ in 0..40 {
        tokio::time::sleep(duplex_tls::reload::CHECK_EVERY / 4).await;
        let fresh = raw_client(&pki, &bob.dir);
        if ask(&fresh, &url).await.is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "a revoked certificate was still accepted");
}

/// A client presenting the bundle in `dir` without our own checks.
fn raw_client(pki: &TestPki, dir: &std::path::Path) -> reqwest::Client {
    use rustls_pki_types::pem::PemObject;
    let ca = pki.operator(Scope::Read).unwrap().load().unwrap().ca;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca[0].clone()).unwrap();
    let chain = rustls_pki_types::CertificateDer::pem_file_iter(dir.join(CERT_FILE))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(dir.join(KEY_FILE)).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls(cfg)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_server_is_checked_against_the_address_it_is_reached_at() {
    let d = tempfile::tempdir().unwrap();
    let pki = TestPki::new(d.path()).unwrap();
    // Issued for another address than the one it serves on.
    let mut req = IssueRequest::new(Identity::agent("h2").unwrap());
    req.ips = vec![IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9))];
    let e = Pki::open(d.path()).unwrap().issue(&req).unwrap();
    let url = server(Bundle::new(&e.bundle)).await;
    let err = ask(&client(pki.controller().unwrap()), &url)
        .await
        .unwrap_err();
    assert!(err.contains("certificate not valid for name"), "{err}");
}

#[tokio::test]
async fn rotation_replaces_the_certificate_and_revokes_the_old_one() {
    let d = tempfile::tempdir().unwrap();
    let pki = TestPki::new(d.path()).unwrap();
    let b = pki.agent("h1").unwrap();
    let old = std::fs::read(b.path(CERT_FILE)).unwrap();
    let p = Pki::open(d.path()).unwrap();
    let again = p.issue(&{
        let mut r = IssueRequest::new(Identity::agent("h1").unwrap());
        r.ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
        r
    });
    assert!(again.unwrap_err().to_string().contains("duplex pki rotate"));
    let new = p.rotate("h1.agent.duplex", None).unwrap();
    assert_ne!(std::fs::read(b.path(CERT_FILE)).unwrap(), old);
    assert_eq!(new.bundle, b.dir);
    let list = p.list().unwrap();
    let mine: Vec<_> = list
        .iter()
        .filter(|e| e.name == "h1.agent.duplex")
        .collect();
    assert_eq!(mine.len(), 2);
    assert!(mine[0].revoked_at.is_some() && mine[1].revoked_at.is_none());
    assert!(b.load().is_ok());
}

#[test]
fn a_ca_is_made_once_and_servers_need_addresses() {
    let d = tempfile::tempdir().unwrap();
    Pki::init(d.path()).unwrap();
    let e = Pki::init(d.path()).err().unwrap().to_string();
    assert!(e.contains("already holds a CA"), "{e}");
    let e = Pki::open(d.path())
        .unwrap()
        .issue(&IssueRequest::new(Identity::Controller))
        .unwrap_err()
        .to_string();
    assert!(e.contains("--ip"), "{e}");
    let e = Pki::open(&d.path().join("nothing"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("duplex pki init"), "{e}");
}
