//! `duplex sip`: the sample SIP service, a UAS over UDP whose dialog state
//! survives a switchover to the standby VM.
//!
//! It answers INVITE with 100 Trying, 180 Ringing and 200 OK (its SDP answers
//! every stream inactive: it takes no media), takes
//! the ACK, answers BYE with 200 OK (481 for an unknown dialog), INFO,
//! UPDATE and MESSAGE inside a dialog with 200 OK, OPTIONS and MESSAGE
//! with 200 OK, CANCEL with 200/481, REGISTER as a registrar; methods it
//! knows but does not serve with 405, others with 501, a required
//! extension with 420, malformed requests with 400 when they can be
//! answered. Every dialog and every address-of-record's bindings are
//! replicated through the middleware (docs/conventions.md, "Service state
//! replication"), synchronously before the 200 OK that creates them leaves,
//! so after a switchover the new ACT answers the same calls and
//! registrations: a retransmitted INVITE with the identical 200 OK, the
//! ACK, a BYE, a REGISTER's refresh or query.
//!
//! Functional core, imperative shell:
//! - [`message`]: SIP parsing and serialization;
//! - [`transaction`]: server transactions (retransmission absorption, timers);
//! - [`dialog`]: the dialog table and what each request does;
//! - [`methods`]: which methods are served, what the rest are answered;
//! - [`registrar`]: REGISTER's bindings, replicated like dialogs;
//! - [`sdp`]: the session descriptions it answers offers with;
//! - [`uas`]: the pure core, `handle(datagram, from, now) -> Output`;
//! - [`sync`]: lines of the middleware protocol;
//! - [`server`]: UDP + unix socket + timer, with tokio.

pub mod dialog;
pub mod message;
pub mod methods;
pub mod registrar;
pub mod rng;
pub mod sdp;
pub mod server;
pub mod sync;
pub mod transaction;
pub mod uas;

pub use server::{Report, Server, ShellStats};
pub use uas::{Counters, Output, Owed, SyncOp, Uas, UasConfig};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SipError {
    #[error("cannot bind UDP {addr} (IP_FREEBIND): {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("no SIP answer from {addr} within {} ms", .waited.as_millis())]
    HealthTimeout { addr: SocketAddr, waited: Duration },
    #[error("{addr} answered OPTIONS with {code}")]
    HealthStatus { addr: SocketAddr, code: u16 },
}

/// `duplex sip --listen ADDR:PORT [--sync-socket PATH]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipOptions {
    /// UDP address to serve (bound with IP_FREEBIND: may be the VIP).
    pub listen: SocketAddr,
    /// The middleware's replication socket; None: no replication.
    pub sync_socket: Option<PathBuf>,
}

/// Default `--listen`.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::UNSPECIFIED,
    5060,
));

impl Default for SipOptions {
    fn default() -> Self {
        SipOptions {
            listen: DEFAULT_LISTEN,
            sync_socket: None,
        }
    }
}

/// Serves until SIGTERM or SIGINT.
pub async fn run(opts: SipOptions) -> Result<(), SipError> {
    let server = Server::bind(opts.listen, opts.sync_socket)?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| SipError::Io {
            what: "install SIGTERM handler",
            source,
        })?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    server.run_until(shutdown).await.map(|_| ())
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> SipError {
    move |source| SipError::Io { what, source }
}

/// Longest wait of [`health_check`].
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends an OPTIONS to `addr` (again after 500 ms) and waits up to 1 s for
/// its 200 OK; returns the round-trip time. Used as the service's health
/// hook (`duplex sip-health ADDR`).
pub async fn health_check(addr: SocketAddr) -> Result<Duration, SipError> {
    let any: SocketAddr = match addr {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = tokio::net::UdpSocket::bind(any)
        .await
        .map_err(io("bind health-check socket"))?;
    sock.connect(addr)
        .await
        .map_err(io("connect health-check socket"))?;
    let local = sock
        .local_addr()
        .map_err(io("health-check local address"))?;
    let id = server::random_seed();
    let call_id = format!("health-{id:016x}");
    let request = format!(
        "OPTIONS sip:{addr} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-health-{id:x};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:health@duplex.invalid>;tag={:x}\r\n\
         To: <sip:{addr}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Accept: application/sdp\r\n\
         Content-Length: 0\r\n\r\n",
        id.rotate_left(17)
    );
    let start = tokio::time::Instant::now();
    let deadline = start + HEALTH_TIMEOUT;
    let mut resend_at = Some(start + Duration::from_millis(500));
    sock.send(request.as_bytes())
        .await
        .map_err(io("send OPTIONS"))?;
    let mut buf = vec![0u8; 65_536];
    loop {
        let wake = resend_at.map_or(deadline, |r| r.min(deadline));
        match tokio::time::timeout_at(wake, sock.recv(&mut buf)).await {
            Err(_) if tokio::time::Instant::now() >= deadline => {
                return Err(SipError::HealthTimeout {
                    addr,
                    waited: start.elapsed(),
                });
            }
            Err(_) => {
                resend_at = None;
                sock.send(request.as_bytes())
                    .await
                    .map_err(io("send OPTIONS"))?;
            }
            Ok(Err(e)) => return Err(io("receive OPTIONS answer")(e)),
            Ok(Ok(n)) => {
                let Ok(msg) = message::parse(&buf[..n]) else {
                    continue;
                };
                if msg.call_id().ok() != Some(call_id.as_str()) {
                    continue;
                }
                match msg.start {
                    message::StartLine::Response { code: 200, .. } => return Ok(start.elapsed()),
                    message::StartLine::Response { code, .. } if code >= 200 => {
                        return Err(SipError::HealthStatus { addr, code });
                    }
                    _ => continue,
                }
            }
        }
    }
}
