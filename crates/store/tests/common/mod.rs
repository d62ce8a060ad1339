//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use duplex_store::etcd_server::{free_port, EtcdServer};
use duplex_store::{EtcdOptions, EtcdStore};
use std::path::PathBuf;
use std::time::Duration;
use tempfile::TempDir;

/// Logs to the test's output (shown for failing tests); RUST_LOG overrides.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("duplex_store=debug"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A real etcd in a temp dir on free ports; killed when dropped, also when
/// the test fails (the server is dropped before its directory).
pub struct EtcdFixture {
    pub server: Option<EtcdServer>,
    pub dir: TempDir,
    pub client_port: u16,
    pub peer_port: u16,
}

impl EtcdFixture {
    pub async fn start() -> EtcdFixture {
        init_tracing();
        let dir = tempfile::tempdir().expect("temp dir");
        let client_port = free_port().expect("free port");
        let peer_port = free_port().expect("free port");
        let mut f = EtcdFixture {
            server: None,
            dir,
            client_port,
            peer_port,
        };
        f.restart().await;
        f
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    pub fn url(&self) -> String {
        duplex_store::etcd_server::client_url(self.client_port)
    }

    /// (Re)starts etcd on the same data dir and ports.
    pub async fn restart(&mut self) {
        let server = EtcdServer::start(
            &self.data_dir(),
            self.client_port,
            self.peer_port,
            &self.log(),
        )
        .await
        .unwrap_or_else(|e| panic!("starting etcd: {e}"));
        self.server = Some(server);
    }

    /// SIGKILLs etcd.
    pub fn kill(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.kill();
        }
    }

    pub async fn connect(&self) -> EtcdStore {
        EtcdStore::connect(&[self.url()], test_options())
            .await
            .unwrap_or_else(|e| panic!("connecting to etcd: {e}"))
    }
}

impl Drop for EtcdFixture {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Short timeouts so that failures show quickly.
pub fn test_options() -> EtcdOptions {
    EtcdOptions {
        connect_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(2),
        candidate_id: None,
        tls: None,
    }
}
