//! Fencing tokens. Every order a controller sends carries its leader lease's
//! epoch in the `duplex-fence` header. The agent remembers (durably, in
//! `<data_dir>/fence`) the highest token it has obeyed and refuses orders
//! with a lower one: they come from a controller that lost its lease.
//! Orders without the header come from an operator and are accepted.

use crate::AgentError;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use duplex_core::agent_api::FENCE_HEADER;
use std::cmp::Ordering as Cmp;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Name of the token's file under the agent's data directory.
pub const FENCE_FILE: &str = "fence";

/// What to do with an order, given the highest token seen and its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Same controller as the latest one: obey.
    Obey,
    /// A newer controller: persist its token first, then obey.
    Advance,
    /// A controller older than one already obeyed: refuse.
    Stale,
}

/// The whole fencing rule.
pub fn judge(seen: u64, offered: u64) -> Verdict {
    match offered.cmp(&seen) {
        Cmp::Less => Verdict::Stale,
        Cmp::Equal => Verdict::Obey,
        Cmp::Greater => Verdict::Advance,
    }
}

pub use duplex_core::agent_api::FenceState;

/// The token an admitted order carried (a request extension), so handlers
/// can forward it (live migration's calls to the destination agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FenceToken(pub u64);

/// The highest token this agent has obeyed, and its file.
#[derive(Debug)]
pub struct Fence {
    path: PathBuf,
    /// Serializes check + persist, so two concurrent orders cannot both pass
    /// against a stale value.
    gate: tokio::sync::Mutex<u64>,
    /// The same value, readable without waiting (reports, `/v1/host`).
    current: AtomicU64,
}

impl Fence {
    /// Loads `<data_dir>/fence`: a missing file is token 0; an unreadable or
    /// corrupt one is an error (never silently reset to 0).
    pub fn load(data_dir: &Path) -> Result<Fence, AgentError> {
        let path = data_dir.join(FENCE_FILE);
        let seen = read_file(&path)?;
        if seen > 0 {
            tracing::info!(fence = seen, file = %path.display(), "highest fencing token obeyed so far");
        }
        Ok(Fence {
            path,
            gate: tokio::sync::Mutex::new(seen),
            current: AtomicU64::new(seen),
        })
    }

    /// Highest token obeyed (0: none yet).
    pub fn current(&self) -> u64 {
        self.current.load(Ordering::SeqCst)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Admits an order carrying `offered`, persisting it first if it is new.
    pub async fn admit(&self, offered: u64) -> Result<(), AgentError> {
        self.admit_from(offered, true).await
    }

    /// [`Fence::admit`] for a caller that may raise the fence or not
    /// (`duplex_core::identity::raises_fence`).
    pub async fn admit_from(&self, offered: u64, may_raise: bool) -> Result<(), AgentError> {
        let mut seen = self.gate.lock().await;
        match judge(*seen, offered) {
            Verdict::Obey => Ok(()),
            Verdict::Advance if !may_raise => Err(AgentError::Forbidden(format!(
                "order carries fencing token {offered}, above the {} this agent obeys, \
                 and only the controller raises it; this order was not executed",
                *seen
            ))),
            Verdict::Stale => {
                tracing::warn!(
                    offered,
                    seen = *seen,
                    "refused an order from a stale controller"
                );
                Err(AgentError::StaleFence(format!(
                    "order carries fencing token {offered} but this agent has already obeyed \
                     token {}: a newer controller leads; this order was not executed",
                    *seen
                )))
            }
            Verdict::Advance => {
                let path = self.path.clone();
                let written = tokio::task::spawn_blocking(move || write_file(&path, offered))
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
                if let Err(source) = written {
                    return Err(AgentError::Io {
                        what: format!(
                            "cannot persist fencing token {offered} to {}; this order was not executed",
                            self.path.display()
                        ),
                        source,
                    });
                }
                tracing::info!(
                    from = *seen,
                    to = offered,
                    "a newer controller leads: fencing token persisted"
                );
                *seen = offered;
                self.current.store(offered, Ordering::SeqCst);
                Ok(())
            }
        }
    }
}

/// A token as written in the header or the file: decimal digits only.
fn parse_token(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The order's token, if it carries one.
pub fn from_headers(headers: &HeaderMap) -> Result<Option<u64>, AgentError> {
    let mut values = headers.get_all(FENCE_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AgentError::BadFence(format!(
            "header `{FENCE_HEADER}` appears more than once; an order carries one fencing token"
        )));
    }
    let text = String::from_utf8_lossy(value.as_bytes());
    parse_token(text.trim()).map(Some).ok_or_else(|| {
        AgentError::BadFence(format!(
            "header `{FENCE_HEADER}`: `{}` is not a fencing token (a decimal number up to {})",
            snippet(&text),
            u64::MAX
        ))
    })
}

fn snippet(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(MAX).collect::<String>())
    }
}

fn read_file(path: &Path) -> Result<u64, AgentError> {
    const WHY: &str = "refusing to start rather than forget which controller leads";
    match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(AgentError::Config(format!(
            "cannot read the fencing token file {}: {e}; {WHY}",
            path.display()
        ))),
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            parse_token(text.trim()).ok_or_else(|| {
                AgentError::Config(format!(
                    "the fencing token file {} is corrupt: it holds {:?}, not a decimal number; {WHY} \
                     (restore it, or write the current controller's token into it)",
                    path.display(),
                    snippet(&text)
                ))
            })
        }
    }
}

/// Writes the token durably: temp file, fsync, rename, fsync the directory.
fn write_file(path: &Path, token: u64) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(format!("{token}\n").as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Middleware: checks (and persists) the fencing token of every mutating
/// request before its handler runs.
pub async fn enforce(State(fence): State<Arc<Fence>>, mut req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    match from_headers(req.headers()) {
        Err(e) => return e.into_response(),
        Ok(None) => {
            tracing::debug!(method = %req.method(), path = %req.uri().path(),
                "order without a fencing token (an operator's); accepted");
        }
        Ok(Some(token)) => {
            let may_raise = match req.extensions().get::<duplex_tls::Peer>() {
                Some(duplex_tls::Peer(Ok(who))) => duplex_core::identity::raises_fence(who),
                _ => false,
            };
            if let Err(e) = fence.admit_from(token, may_raise).await {
                return e.into_response();
            }
            req.extensions_mut().insert(FenceToken(token));
        }
    }
    next.run(req).await
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use axum::routing::post;
    use axum::{Extension, Router};
    use duplex_core::agent_api::ErrorBody;
    use std::sync::atomic::AtomicUsize;

    /// A fresh, empty directory under the system's temp dir.
    pub(crate) fn temp_dir(name: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "duplex-agent-test-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn judge_covers_every_order() {
        assert_eq!(judge(0, 0), Verdict::Obey);
        assert_eq!(judge(5, 5), Verdict::Obey);
        assert_eq!(judge(u64::MAX, u64::MAX), Verdict::Obey);
        assert_eq!(judge(0, 1), Verdict::Advance);
        assert_eq!(judge(3, 5), Verdict::Advance);
        assert_eq!(judge(0, u64::MAX), Verdict::Advance);
        assert_eq!(judge(5, 3), Verdict::Stale);
        assert_eq!(judge(1, 0), Verdict::Stale);
        assert_eq!(judge(u64::MAX, 0), Verdict::Stale);
        assert_eq!(judge(u64::MAX, u64::MAX - 1), Verdict::Stale);
    }

    #[test]
    fn tokens_are_plain_decimal() {
        assert_eq!(parse_token("0"), Some(0));
        assert_eq!(parse_token("42"), Some(42));
        assert_eq!(parse_token("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "-1",
            "+1",
            "1.0",
            "0x10",
            "abc",
            "1 2",
            "18446744073709551616",
        ] {
            assert_eq!(parse_token(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn header_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(from_headers(&h).unwrap(), None);
        h.insert(FENCE_HEADER, "7".parse().unwrap());
        assert_eq!(from_headers(&h).unwrap(), Some(7));
        h.insert(FENCE_HEADER, "seven".parse().unwrap());
        let e = from_headers(&h).unwrap_err();
        assert!(matches!(e, AgentError::BadFence(_)), "{e:?}");
        assert!(e.to_string().contains("duplex-fence") && e.to_string().contains("seven"));
        h.insert(FENCE_HEADER, "7".parse().unwrap());
        h.append(FENCE_HEADER, "8".parse().unwrap());
        assert!(matches!(
            from_headers(&h).unwrap_err(),
            AgentError::BadFence(_)
        ));
    }

    #[test]
    fn file_missing_is_zero_and_corrupt_is_refused() {
        let d = temp_dir("fence-file");
        assert_eq!(Fence::load(&d).unwrap().current(), 0);
        std::fs::write(d.join(FENCE_FILE), "12\n").unwrap();
        assert_eq!(Fence::load(&d).unwrap().current(), 12);
        for corrupt in ["", "\n", "twelve", "-3", "12 13", "99999999999999999999"] {
            std::fs::write(d.join(FENCE_FILE), corrupt).unwrap();
            let e = Fence::load(&d).unwrap_err().to_string();
            assert!(e.contains(&d.join(FENCE_FILE).display().to_string()), "{e}");
            assert!(e.contains("corrupt"), "{e}");
        }
        std::fs::write(d.join(FENCE_FILE), [0xff, 0xfe]).unwrap();
        assert!(Fence::load(&d).is_err());
        // A directory where the file should be: unreadable.
        std::fs::remove_file(d.join(FENCE_FILE)).unwrap();
        std::fs::create_dir(d.join(FENCE_FILE)).unwrap();
        let e = Fence::load(&d).unwrap_err().to_string();
        assert!(e.contains("cannot read"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn admit_persists_before_obeying_and_refuses_older() {
        let d = temp_dir("fence-admit");
        let f = Fence::load(&d).unwrap();
        f.admit(0).await.unwrap();
        assert!(!d.join(FENCE_FILE).exists(), "token 0 is no news");
        f.admit(3).await.unwrap();
        assert_eq!(std::fs::read_to_string(d.join(FENCE_FILE)).unwrap(), "3\n");
        assert!(!d.join("fence.tmp").exists());
        f.admit(3).await.unwrap();
        let e = f.admit(2).await.unwrap_err();
        assert!(matches!(e, AgentError::StaleFence(_)));
        assert_eq!(f.current(), 3);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn concurrent_orders_never_lower_the_token() {
        let d = temp_dir("fence-race");
        let f = Arc::new(Fence::load(&d).unwrap());
        let tasks: Vec<_> = (1..=20u64)
            .rev()
            .map(|t| {
                let f = f.clone();
                tokio::spawn(async move { (t, f.admit(t).await.is_ok()) })
            })
            .collect();
        let mut max_ok = 0;
        for t in tasks {
            let (tok, ok) = t.await.unwrap();
            if ok {
                max_ok = max_ok.max(tok);
            }
        }
        assert_eq!(max_ok, 20);
        assert_eq!(f.current(), 20);
        assert_eq!(Fence::load(&d).unwrap().current(), 20);
        let _ = std::fs::remove_dir_all(&d);
    }

    struct Served {
        base: String,
        runs: Arc<AtomicUsize>,
        server: tokio::task::JoinHandle<()>,
    }

    /// A router with only the fence middleware in front of a handler that
    /// counts its runs and echoes the token it was given.
    async fn serve(fence: Arc<Fence>) -> Served {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let app = Router::new()
            .route(
                "/v1/order",
                post(move |token: Option<Extension<FenceToken>>| {
                    let counted = counted.clone();
                    async move {
                        counted.fetch_add(1, Ordering::SeqCst);
                        axum::Json(token.map(|Extension(FenceToken(t))| t))
                    }
                })
                .get(|| async { "read" }),
            )
            .route_layer(axum::middleware::from_fn_with_state(fence, enforce))
            // What mutual TLS tells the middleware: the controller calls.
            .layer(Extension(duplex_tls::Peer(Ok(
                duplex_core::identity::Identity::Controller,
            ))));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Served { base, runs, server }
    }

    #[tokio::test]
    async fn http_orders_are_fenced() {
        let d = temp_dir("fence-http");
        let s = serve(Arc::new(Fence::load(&d).unwrap())).await;
        let http = reqwest::Client::new();
        let url = format!("{}/v1/order", s.base);
        let order = |token: Option<&str>| {
            let mut r = http.post(&url);
            if let Some(t) = token {
                r = r.header(FENCE_HEADER, t);
            }
            r.send()
        };

        // No header: an operator; accepted, nothing persisted.
        let r = order(None).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Option<u64>>().await.unwrap(), None);
        assert_eq!(s.runs.load(Ordering::SeqCst), 1);
        assert!(!d.join(FENCE_FILE).exists());

        // Higher: obeyed, persisted, and handed to the handler.
        let r = order(Some("5")).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Option<u64>>().await.unwrap(), Some(5));
        assert_eq!(s.runs.load(Ordering::SeqCst), 2);
        assert_eq!(std::fs::read_to_string(d.join(FENCE_FILE)).unwrap(), "5\n");

        // Equal: obeyed.
        assert_eq!(order(Some("5")).await.unwrap().status(), 200);
        assert_eq!(s.runs.load(Ordering::SeqCst), 3);

        // Lower: 409 stale_fence, and the handler did not run.
        let r = order(Some("3")).await.unwrap();
        assert_eq!(r.status(), 409);
        let body: ErrorBody = r.json().await.unwrap();
        assert_eq!(body.error.code, "stale_fence");
        assert!(
            body.error.message.contains("token 3") && body.error.message.contains("token 5"),
            "{}",
            body.error.message
        );
        assert_eq!(s.runs.load(Ordering::SeqCst), 3);

        // Garbage: 400 bad_fence naming the header and the value.
        let r = order(Some("five")).await.unwrap();
        assert_eq!(r.status(), 400);
        let body: ErrorBody = r.json().await.unwrap();
        assert_eq!(body.error.code, "bad_fence");
        assert!(body.error.message.contains(FENCE_HEADER) && body.error.message.contains("five"));
        assert_eq!(s.runs.load(Ordering::SeqCst), 3);

        // Reads are not orders: a stale token on GET is ignored.
        let r = http
            .get(&url)
            .header(FENCE_HEADER, "1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        s.server.abort();

        // "Restart": a new agent on the same data dir still refuses token 3.
        let fence = Arc::new(Fence::load(&d).unwrap());
        assert_eq!(fence.current(), 5);
        let s = serve(fence).await;
        let r = http
            .post(format!("{}/v1/order", s.base))
            .header(FENCE_HEADER, "3")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 409);
        assert_eq!(s.runs.load(Ordering::SeqCst), 0);
        let r = http
            .post(format!("{}/v1/order", s.base))
            .header(FENCE_HEADER, "6")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(s.runs.load(Ordering::SeqCst), 1);
        assert_eq!(std::fs::read_to_string(d.join(FENCE_FILE)).unwrap(), "6\n");
        s.server.abort();
        let _ = std::fs::remove_dir_all(&d);
    }
}
