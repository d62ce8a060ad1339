//! Runs a real single-member etcd (`/usr/bin/etcd`, or `$DUPLEX_ETCD`) on
//! 127.0.0.1, for tests and for the lab.
//!
//! [`EtcdServer::start`] runs it as a child that is killed when the
//! [`EtcdServer`] is dropped; [`EtcdServer::start_secure`] does so with
//! TLS, client certificates and authentication on (as the controller
//! requires); [`EtcdServer::spawn_detached`] runs it in its own session so
//! that it outlives the process that started it.

use crate::{EtcdTls, StoreError};
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::{sleep, timeout, Instant};

/// The default etcd binary (Debian's `etcd-server`).
pub const DEFAULT_ETCD: &str = "/usr/bin/etcd";
/// How long [`EtcdServer::start`] waits for etcd to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// The member name; fixed so that a restart on the same data dir matches.
const MEMBER: &str = "duplex";

/// The etcd binary to run: `$DUPLEX_ETCD` if set, else [`DEFAULT_ETCD`].
pub fn etcd_binary() -> PathBuf {
    std::env::var_os("DUPLEX_ETCD")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ETCD))
}

/// A TCP port on 127.0.0.1 that was free a moment ago. Never hands out the
/// same port twice within one process, so consecutive calls differ.
pub fn free_port() -> Result<u16, StoreError> {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|source| StoreError::Io {
            context: "finding a free port on 127.0.0.1".into(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| StoreError::Io {
                context: "finding a free port on 127.0.0.1".into(),
                source,
            })?
            .port();
        if given.insert(port) {
            return Ok(port);
        }
    }
    Err(StoreError::Server("no free port found on 127.0.0.1".into()))
}

/// The client URL of an etcd listening on 127.0.0.1:`client_port`.
pub fn client_url(client_port: u16) -> String {
    format!("http://127.0.0.1:{client_port}")
}

/// The client URL of a secured etcd listening on 127.0.0.1:`client_port`.
pub fn secure_client_url(client_port: u16) -> String {
    format!("https://127.0.0.1:{client_port}")
}

/// A secured etcd's files: its certificate and key, the CA its clients'
/// certificates must come from, and that CA's revocation list.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub crl: Option<PathBuf>,
}

impl ServerTls {
    /// etcd's flags for TLS on its client port, with client certificates
    /// required (their common name is the user once auth is on).
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "--cert-file".into(),
            self.cert.clone().into(),
            "--key-file".into(),
            self.key.clone().into(),
            "--trusted-ca-file".into(),
            self.ca.clone().into(),
            "--client-cert-auth".into(),
        ];
        if let Some(crl) = &self.crl {
            a.extend(["--client-crl-file".into(), crl.clone().into()]);
        }
        a
    }
}

/// How [`EtcdServer::start_secure`] secures etcd: its TLS files, the
/// client identity that sets it up (before auth is on, any certificate of
/// the CA may), and the users (certificate common names) that may use it.
#[derive(Debug, Clone)]
pub struct Secure {
    pub server: ServerTls,
    pub admin: EtcdTls,
    pub users: Vec<String>,
}

/// A running etcd child process; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct EtcdServer {
    child: Option<Child>,
    pid: u32,
    client_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    tls: Option<EtcdTls>,
    /// The password of etcd's `root` user, if this start turned auth on.
    root_password: Option<String>,
}

impl EtcdServer {
    /// Starts etcd with its data in `data_dir` (created or reused) listening
    /// on 127.0.0.1 only, appends its output to `log`, and waits up to
    /// [`START_TIMEOUT`] until it answers. On failure the error includes the
    /// end of the log.
    pub async fn start(
        data_dir: &Path,
        client_port: u16,
        peer_port: u16,
        log: &Path,
    ) -> Result<EtcdServer, StoreError> {
        Self::run(data_dir, client_port, peer_port, log, None).await
    }

    /// [`start`](Self::start) with TLS and client certificates required;
    /// on a new data directory it also turns authentication on for
    /// `secure.users` (see [`crate::etcd_auth`]).
    pub async fn start_secure(
        data_dir: &Path,
        client_port: u16,
        peer_port: u16,
        log: &Path,
        secure: &Secure,
    ) -> Result<EtcdServer, StoreError> {
        let fresh = !data_dir.join("member").exists();
        let mut server = Self::run(data_dir, client_port, peer_port, log, Some(secure)).await?;
        if fresh {
            let url = server.client_url();
            let pw = crate::etcd_auth::enable(&url, &secure.admin, &secure.users).await?;
            server.root_password = Some(pw);
        }
        Ok(server)
    }

    /// The password of etcd's `root` user if this start made it.
    pub fn root_password(&self) -> Option<&str> {
        self.root_password.as_deref()
    }

    async fn run(
        data_dir: &Path,
        client_port: u16,
        peer_port: u16,
        log: &Path,
        secure: Option<&Secure>,
    ) -> Result<EtcdServer, StoreError> {
        let mut cmd = command(
            data_dir,
            client_port,
            peer_port,
            log,
            secure.map(|s| &s.server),
        )?;
        let child = cmd.spawn().map_err(|source| StoreError::Io {
            context: format!("starting {}", etcd_binary().display()),
            source,
        })?;
        let mut server = EtcdServer {
            pid: child.id(),
            child: Some(child),
            client_port,
            data_dir: data_dir.to_path_buf(),
            log: log.to_path_buf(),
            tls: secure.map(|s| s.admin.clone()),
            root_password: None,
        };
        let url = server.client_url();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = server.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    server.child = None;
                    return Err(StoreError::Server(format!(
                        "etcd exited at start ({status}); end of {}:\n{}",
                        log.display(),
                        log_tail(log)
                    )));
                }
            }
            let last = match probe(&url, Duration::from_secs(1), server.tls.as_ref()).await {
                Ok(()) => {
                    tracing::info!(url = %url, pid = server.pid, data_dir = %data_dir.display(), "etcd is up");
                    return Ok(server);
                }
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                server.kill();
                return Err(StoreError::Server(format!(
                    "etcd at {url} did not answer within {} s ({last}); end of {}:\n{}",
                    START_TIMEOUT.as_secs(),
                    log.display(),
                    log_tail(log)
                )));
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts etcd in its own session (setsid), detached from this process
    /// so that it keeps running after this process exits; returns its pid.
    /// Does not wait for it: see [`wait_ready`].
    pub fn spawn_detached(
        data_dir: &Path,
        client_port: u16,
        peer_port: u16,
        log: &Path,
    ) -> Result<u32, StoreError> {
        let mut cmd = command(data_dir, client_port, peer_port, log, None)?;
        // SAFETY: the closure only calls setsid(2), which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| StoreError::Io {
            context: format!("starting {}", etcd_binary().display()),
            source,
        })?;
        let pid = child.id();
        // Reap it if it ends while this process still runs (no zombie);
        // the thread does not keep this process alive.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        tracing::info!(pid, port = client_port, data_dir = %data_dir.display(), "started detached etcd");
        Ok(pid)
    }

    /// The URL clients connect to, e.g. `http://127.0.0.1:2379`
    /// (`https://` when secured).
    pub fn client_url(&self) -> String {
        match self.tls {
            Some(_) => secure_client_url(self.client_port),
            None => client_url(self.client_port),
        }
    }

    /// The etcd process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Kills etcd at once (SIGKILL, as a crash would) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops etcd cleanly (SIGTERM), killing it if it has not exited after 10 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) on our own child, which has not been reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        tracing::warn!(
            pid = self.pid,
            "etcd did not stop on SIGTERM within 10 s; killing it"
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until etcd at `url` answers a status request, for up to `limit`
/// (over TLS as `tls` when given).
pub async fn wait_ready(
    url: &str,
    limit: Duration,
    tls: Option<&EtcdTls>,
) -> Result<(), StoreError> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let err = match probe(url, left.min(Duration::from_secs(1)), tls).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(StoreError::Server(format!(
                "etcd at {url} did not answer within {} ms: {err}",
                limit.as_millis()
            )));
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// One status request to `url`.
async fn probe(url: &str, limit: Duration, tls: Option<&EtcdTls>) -> Result<(), String> {
    let limit = limit.max(Duration::from_millis(50));
    let mut opts = etcd_client::ConnectOptions::new().with_connect_timeout(limit);
    if let Some(t) = tls {
        opts = opts.with_tls(t.options());
    }
    let attempt = async {
        let mut client = etcd_client::Client::connect([url], Some(opts)).await?;
        client.status().await
    };
    match timeout(limit, attempt).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", limit.as_millis())),
    }
}

fn command(
    data_dir: &Path,
    client_port: u16,
    peer_port: u16,
    log: &Path,
    tls: Option<&ServerTls>,
) -> Result<Command, StoreError> {
    if let Some(dir) = log.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            context: format!("creating {}", dir.display()),
            source,
        })?;
    }
    if let Some(dir) = data_dir.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            context: format!("creating {}", dir.display()),
            source,
        })?;
    }
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|source| StoreError::Io {
            context: format!("opening etcd log {}", log.display()),
            source,
        })?;
    let err = out.try_clone().map_err(|source| StoreError::Io {
        context: format!("opening etcd log {}", log.display()),
        source,
    })?;
    let client = match tls {
        Some(_) => secure_client_url(client_port),
        None => client_url(client_port),
    };
    let peer = format!("http://127.0.0.1:{peer_port}");
    let mut cmd = Command::new(etcd_binary());
    cmd.arg("--name")
        .arg(MEMBER)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen-client-urls")
        .arg(&client)
        .arg("--advertise-client-urls")
        .arg(&client)
        .arg("--listen-peer-urls")
        .arg(&peer)
        .arg("--initial-advertise-peer-urls")
        .arg(&peer)
        .arg("--initial-cluster")
        .arg(format!("{MEMBER}={peer}"))
        .arg("--initial-cluster-state")
        .arg("new")
        .arg("--logger")
        .arg("zap")
        .arg("--log-outputs")
        .arg("stderr")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    if let Some(t) = tls {
        cmd.args(t.args());
    }
    Ok(cmd)
}

/// The last lines of the log, for error messages.
fn log_tail(log: &Path) -> String {
    const TAIL: u64 = 3000;
    let read = || -> std::io::Result<String> {
        let mut f = File::open(log)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(TAIL)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(s) if s.trim().is_empty() => "(log is empty)".into(),
        Ok(s) => s,
        Err(e) => format!("(cannot read the log: {e})"),
    }
}
