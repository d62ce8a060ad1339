//! etcd backend (etcd v3 API; tested against etcd 3.4).
//!
//! Revisions are etcd's mod revisions. Compare-and-set writes are one Txn.
//! Leadership: a lease kept alive by a background task and the election key
//! `_duplex/election/<name>`, taken with `create_revision(key) == 0`; the
//! fencing token is the revision of that put, which is also the key's create
//! revision, so every later write carries `create_revision(key) == token`.

pub mod auth;
mod leader;
pub mod tls;
mod watching;

use crate::{check_key, hidden, Entry, Expect, Leadership, Store, StoreError, WatchStream};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, Txn, TxnOp, TxnOpResponse,
    TxnResponse,
};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{sleep, timeout, Instant};

/// First delay between connection attempts; doubles up to [`BACKOFF_CAP`].
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(5);

// gRPC status codes that mean "could not get an answer" rather than "etcd said no".
const GRPC_CANCELLED: i32 = 1;
const GRPC_UNKNOWN: i32 = 2;
const GRPC_DEADLINE_EXCEEDED: i32 = 4;
const GRPC_UNAVAILABLE: i32 = 14;

/// How [`EtcdStore::connect`] and its requests behave.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// How long [`EtcdStore::connect`] keeps trying (default 30 s).
    pub connect_timeout: Duration,
    /// Limit for each request; past it the request fails with
    /// [`StoreError::Unavailable`] (default 5 s).
    pub request_timeout: Duration,
    /// Value written to the election key while leading, to tell candidates
    /// apart in logs (default: `<host name>/<pid>`).
    pub candidate_id: Option<String>,
    /// Mutual TLS to etcd (endpoints must then be https://); `None` only
    /// for a plain etcd of the store's own tests.
    pub tls: Option<tls::EtcdTls>,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            connect_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(5),
            candidate_id: None,
            tls: None,
        }
    }
}

/// The etcd store. Cheap to clone; clones share the connection and the
/// fencing of [`Store::campaign`].
///
/// The connection recovers by itself: while etcd is unreachable requests
/// fail with [`StoreError::Unavailable`] after at most the request timeout,
/// and they succeed again once it is back.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    /// The endpoints, comma-separated, for messages.
    endpoint: String,
    opts: EtcdOptions,
    id: String,
    fence: Mutex<Option<Fence>>,
}

/// The leadership that fences this instance's writes.
#[derive(Clone)]
struct Fence {
    key: String,
    token: u64,
    lost: watch::Receiver<bool>,
}

/// Exponential backoff: 200 ms doubling up to 5 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(BACKOFF_START)
    }
    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_CAP);
        d
    }
}

impl EtcdStore {
    /// Connects to etcd at `endpoints` (e.g. `http://127.0.0.1:2379`),
    /// retrying with exponential backoff (200 ms up to 5 s between attempts)
    /// for up to `opts.connect_timeout`; each failed attempt is logged.
    pub async fn connect(endpoints: &[String], opts: EtcdOptions) -> Result<EtcdStore, StoreError> {
        let endpoint = endpoints.join(",");
        if endpoints.is_empty() {
            return Err(StoreError::Unavailable {
                endpoint: "(none)".into(),
                reason: "no etcd endpoint given".into(),
            });
        }
        tls::check_scheme(endpoints, opts.tls.is_some()).map_err(|reason| {
            StoreError::Unavailable {
                endpoint: endpoint.clone(),
                reason,
            }
        })?;
        let started = Instant::now();
        let deadline = started + opts.connect_timeout;
        let mut backoff = Backoff::new();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let reason = match try_connect(endpoints, &opts, left).await {
                Ok(client) => {
                    let id = opts.candidate_id.clone().unwrap_or_else(default_id);
                    tracing::info!(endpoint = %endpoint, attempt, "connected to etcd");
                    return Ok(EtcdStore {
                        inner: Arc::new(Inner {
                            client,
                            endpoint,
                            opts,
                            id,
                            fence: Mutex::new(None),
                        }),
                    });
                }
                Err(reason) => reason,
            };
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(endpoint = %endpoint, attempt, "cannot reach etcd: {reason}; giving up");
                return Err(StoreError::Unavailable {
                    endpoint,
                    reason: format!(
                        "{reason} (gave up after {attempt} attempts in {:.1} s)",
                        (now - started).as_secs_f64()
                    ),
                });
            }
            let delay = backoff.next().min(deadline - now);
            tracing::warn!(
                endpoint = %endpoint,
                attempt,
                "cannot reach etcd: {reason}; retrying in {} ms",
                delay.as_millis()
            );
            sleep(delay).await;
        }
    }

    /// The endpoints this store talks to, comma-separated.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }
}

/// One connection attempt: etcd-client connects lazily, so ask for the
/// server's status to see whether anyone answers.
async fn try_connect(
    endpoints: &[String],
    opts: &EtcdOptions,
    left: Duration,
) -> Result<Client, String> {
    let limit = opts
        .request_timeout
        .min(left)
        .max(Duration::from_millis(100));
    let mut copts = ConnectOptions::new()
        .with_connect_timeout(limit)
        // Finds dead connections under open streams (watch, lease keep-alive).
        // etcd refuses pings more often than every 5 s by default.
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
    if let Some(t) = &opts.tls {
        copts = copts.with_tls(t.options());
    }
    let mut client = Client::connect(endpoints, Some(copts))
        .await
        .map_err(|e| describe_err(&e))?;
    match timeout(limit, client.status()).await {
        Ok(Ok(_)) => Ok(client),
        Ok(Err(e)) => Err(describe_err(&e)),
        Err(_) => Err(format!("no answer within {} ms", limit.as_millis())),
    }
}

fn default_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("{host}/{}", std::process::id())
}

/// The error and its causes on one line.
fn describe_err(e: &etcd_client::Error) -> String {
    use std::error::Error as _;
    let (mut text, mut source): (String, Option<&dyn std::error::Error>) = match e {
        // The code only when it says more than "no answer".
        etcd_client::Error::GRpcStatus(s) if is_unavailable(e) => {
            (s.message().to_string(), s.source())
        }
        etcd_client::Error::GRpcStatus(s) => {
            (format!("{:?}: {}", s.code(), s.message()), s.source())
        }
        etcd_client::Error::TransportError(t) => (e.to_string(), t.source()),
        _ => (e.to_string(), None),
    };
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Whether the error means "no answer" (as opposed to "etcd said no").
fn is_unavailable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => matches!(
            s.code() as i32,
            GRPC_CANCELLED | GRPC_UNKNOWN | GRPC_DEADLINE_EXCEEDED | GRPC_UNAVAILABLE
        ),
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

fn revision_i64(r: u64) -> i64 {
    i64::try_from(r).unwrap_or(i64::MAX)
}

impl Inner {
    /// Runs one request with the request timeout.
    async fn call<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        match timeout(self.opts.request_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.error(what, &e)),
            Err(_) => Err(StoreError::Unavailable {
                endpoint: self.endpoint.clone(),
                reason: format!(
                    "{what}: no answer within {} ms",
                    self.opts.request_timeout.as_millis()
                ),
            }),
        }
    }

    fn error(&self, what: &str, e: &etcd_client::Error) -> StoreError {
        let reason = format!("{what}: {}", describe_err(e));
        if is_unavailable(e) {
            StoreError::Unavailable {
                endpoint: self.endpoint.clone(),
                reason,
            }
        } else {
            StoreError::Etcd {
                endpoint: self.endpoint.clone(),
                reason,
            }
        }
    }

    fn bad_answer(&self, what: &str) -> StoreError {
        StoreError::Etcd {
            endpoint: self.endpoint.clone(),
            reason: format!("unexpected answer: {what}"),
        }
    }

    fn entry(&self, kv: &KeyValue) -> Result<Entry, StoreError> {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let revision = u64::try_from(kv.mod_revision())
            .ok()
            .filter(|r| *r > 0)
            .ok_or_else(|| {
                self.bad_answer(&format!("key `{key}` has revision {}", kv.mod_revision()))
            })?;
        Ok(Entry {
            key,
            value: kv.value().to_vec(),
            revision,
        })
    }

    fn header_revision(&self, rev: Option<i64>) -> Result<u64, StoreError> {
        rev.and_then(|r| u64::try_from(r).ok())
            .filter(|r| *r > 0)
            .ok_or_else(|| self.bad_answer("no revision in the response header"))
    }

    /// The current fence, or NotLeader if this instance already knows it lost.
    fn fence(&self) -> Result<Option<Fence>, StoreError> {
        let fence = self
            .fence
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        if let Some(f) = &fence {
            if *f.lost.borrow() {
                return Err(StoreError::NotLeader { token: f.token });
            }
        }
        Ok(fence)
    }

    /// A fenced compare-and-set write: `op` runs only if the fence and
    /// `expect` hold; otherwise the failure is explained from a snapshot of
    /// the key and the election key taken in the same Txn.
    async fn write(
        &self,
        what: &str,
        key: &str,
        op: TxnOp,
        expect: Expect,
    ) -> Result<TxnResponse, StoreError> {
        let fence = self.fence()?;
        let mut when = Vec::new();
        let mut otherwise = vec![TxnOp::get(key, None)];
        if let Some(f) = &fence {
            when.push(Compare::create_revision(
                f.key.as_str(),
                CompareOp::Equal,
                revision_i64(f.token),
            ));
            otherwise.push(TxnOp::get(f.key.as_str(), None));
        }
        match expect {
            Expect::Any => {}
            Expect::Absent => when.push(Compare::create_revision(key, CompareOp::Equal, 0)),
            Expect::Revision(r) => when.push(Compare::mod_revision(
                key,
                CompareOp::Equal,
                revision_i64(r),
            )),
        }
        let txn = Txn::new().when(when).and_then(vec![op]).or_else(otherwise);
        let mut kv = self.client.kv_client();
        let resp = self.call(what, kv.txn(txn)).await?;
        if resp.succeeded() {
            return Ok(resp);
        }
        let answers = resp.op_responses();
        let found_rev = |i: usize| match answers.get(i) {
            Some(TxnOpResponse::Get(g)) => Ok(g.kvs().first().map(|kv| kv.create_revision())),
            _ => Err(self.bad_answer("failed Txn without its reads")),
        };
        if let Some(f) = &fence {
            let leader = found_rev(1)?;
            if leader != Some(revision_i64(f.token)) {
                tracing::warn!(token = f.token, key, "write refused: no longer the leader");
                return Err(StoreError::NotLeader { token: f.token });
            }
        }
        let found = match answers.first() {
            Some(TxnOpResponse::Get(g)) => g
                .kvs()
                .first()
                .and_then(|kv| u64::try_from(kv.mod_revision()).ok()),
            _ => return Err(self.bad_answer("failed Txn without its reads")),
        };
        Err(StoreError::Conflict {
            key: key.to_string(),
            expected: expect.to_string(),
            found,
        })
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    fn describe(&self) -> String {
        format!("etcd {}", self.inner.endpoint)
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let mut kv = self.inner.client.kv_client();
        let resp = self.inner.call("get", kv.get(key, None)).await?;
        resp.kvs()
            .first()
            .map(|kv| self.inner.entry(kv))
            .transpose()
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Entry>, StoreError> {
        let mut kv = self.inner.client.kv_client();
        let opts = GetOptions::new().with_prefix();
        let resp = self.inner.call("list", kv.get(prefix, Some(opts))).await?;
        let mut out = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs() {
            let e = self.inner.entry(kv)?;
            if !hidden(&e.key, prefix) {
                out.push(e);
            }
        }
        // etcd sorts by key bytes already; keep the promise explicit.
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn put(&self, key: &str, value: &[u8], expect: Expect) -> Result<u64, StoreError> {
        check_key(key)?;
        let op = TxnOp::put(key, value, None);
        let resp = self.inner.write("put", key, op, expect).await?;
        self.inner
            .header_revision(resp.header().map(|h| h.revision()))
    }

    async fn delete(&self, key: &str, expect: Expect) -> Result<bool, StoreError> {
        check_key(key)?;
        let op = TxnOp::delete(key, None);
        let resp = self.inner.write("delete", key, op, expect).await?;
        match resp.op_responses().first() {
            Some(TxnOpResponse::Delete(d)) => Ok(d.deleted() > 0),
            _ => Err(self.inner.bad_answer("delete without its result")),
        }
    }

    async fn watch(&self, prefix: &str) -> Result<WatchStream, StoreError> {
        watching::watch(&self.inner, prefix).await
    }

    /// Takes `_duplex/election/<election>` under a lease of `ttl` (rounded
    /// up to whole seconds; etcd may grant more). While another candidate
    /// holds it, waits for its deletion or expiry. Retries while etcd is
    /// unavailable; other errors end the campaign.
    async fn campaign(&self, election: &str, ttl: Duration) -> Result<Leadership, StoreError> {
        leader::campaign(&self.inner, election, ttl).await
    }
}
