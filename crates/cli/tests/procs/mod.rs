//! Real `duplex controller` and `duplex agent` processes on loopback, each
//! with a bundle of a throwaway PKI, and HTTPS calls to them as any
//! identity: shared by the controller API tests and the security tests.
#![allow(dead_code)]

use duplex_store::etcd_server::EtcdServer;
use duplex_tls::test_pki::TestPki;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_duplex");

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    pub child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(args: &[String], log: &Path) -> Proc {
        let out = std::fs::File::create(log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(BIN)
            .args(args)
            .env("DUPLEX_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        Proc {
            child,
            log: log.to_path_buf(),
        }
    }
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    pub fn term(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
    }
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("== {}\n{}", self.log.display(), self.log());
        }
        self.kill9();
    }
}

/// A real etcd on loopback as the controller needs it: TLS with the
/// PKI's store certificate, client certificates required, and (on a new
/// data directory) authentication on with only the controller as user.
pub async fn secure_etcd(
    data_dir: &Path,
    client_port: u16,
    peer_port: u16,
    log: &Path,
    pki: &TestPki,
) -> EtcdServer {
    let store = pki.bundle(&duplex_core::identity::Identity::Store).unwrap();
    let secure = duplex_controller::etcd_secure(&store, &pki.controller().unwrap()).unwrap();
    EtcdServer::start_secure(data_dir, client_port, peer_port, log, &secure)
        .await
        .unwrap()
}

pub enum Backend<'a> {
    Embedded,
    Etcd(&'a EtcdServer),
}

pub fn controller(
    dir: &Path,
    port: u16,
    backend: &Backend,
    ttl_ms: u64,
    id: &str,
    pki: &TestPki,
) -> Proc {
    let mut args: Vec<String> = vec![
        "controller".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        dir.display().to_string(),
        "--tls-dir".into(),
        pki.controller().unwrap().dir.display().to_string(),
        "--id".into(),
        id.into(),
        "--lease-ttl-ms".into(),
        ttl_ms.to_string(),
    ];
    if let Backend::Etcd(e) = backend {
        args.extend([
            "--store".into(),
            "etcd".into(),
            "--etcd-endpoints".into(),
            e.client_url(),
        ]);
    }
    std::fs::create_dir_all(dir).unwrap();
    Proc::spawn(&args, &dir.join(format!("{id}.log")))
}

pub fn agent(dir: &Path, name: &str, port: u16, controllers: &[String], pki: &TestPki) -> Proc {
    let data = dir.join(name);
    std::fs::create_dir_all(&data).unwrap();
    let args: Vec<String> = vec![
        "agent".into(),
        "--name".into(),
        name.into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        data.display().to_string(),
        "--tls-dir".into(),
        pki.agent(name).unwrap().dir.display().to_string(),
        "--controller".into(),
        controllers.join(","),
        "--memory-mib".into(),
        "4096".into(),
    ];
    Proc::spawn(&args, &dir.join(format!("agent-{name}.log")))
}

/// A new PKI for one test, in `dir/pki`.
pub fn pki(dir: &Path) -> TestPki {
    TestPki::new(&dir.join("pki")).unwrap()
}

/// An HTTPS client presenting the bundle in `who`, or no certificate at
/// all (it still checks the server against the CA that made `ca_of`).
pub fn http(who: Option<&Path>) -> reqwest::Client {
    let shape = |b: reqwest::ClientBuilder| b.no_proxy().timeout(Duration::from_secs(15));
    match who {
        Some(dir) => duplex_tls::client::Clients::new(duplex_tls::Bundle::new(dir), shape)
            .unwrap()
            .get(),
        None => anonymous(),
    }
}

/// A client with no certificate that trusts any server (it checks what
/// the server refuses, not the server).
pub fn anonymous() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// One API call as `who` (a bundle directory; `None`: no certificate):
/// (status, JSON body or the text as a JSON string).
pub async fn call(method: &str, url: &str, who: Option<&Path>, body: Option<&str>) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = http(who).request(m, url);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        }
        Err(e) => (0, Value::String(e.to_string())),
    }
}

pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f().await {
            return t0.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within {limit:?}");
}

pub async fn health(base: &str) -> Value {
    call("GET", &format!("{base}/healthz"), None, None).await.1
}

pub async fn wait_leader(base: &str) -> u64 {
    wait_for(
        &format!("{base} leads"),
        Duration::from_secs(60),
        || async { health(base).await["leader"] == json!(true) },
    )
    .await;
    health(base).await["fence"].as_u64().unwrap()
}

pub fn code(v: &Value) -> String {
    v["error"]["code"].as_str().unwrap_or("").to_string()
}
pub fn msg(v: &Value) -> String {
    v["error"]["message"].as_str().unwrap_or("").to_string()
}

pub async fn wait_host_ready(base: &str, tok: &Path, name: &str) {
    wait_for(
        &format!("host {name} registered"),
        Duration::from_secs(60),
        || async {
            let (s, v) = call("GET", &format!("{base}/v1/hosts/{name}"), Some(tok), None).await;
            s == 200 && v["state"] == json!("ready")
        },
    )
    .await;
}
