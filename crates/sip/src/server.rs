//! The imperative shell: a UDP socket, the middleware's sync socket and a
//! timer around the pure [`Uas`].
//!
//! - The UDP socket is bound with `IP_FREEBIND`, so the service binds the
//!   VIP even on the SBY, where the VIP is not (yet) configured.
//! - Each datagram goes through [`Uas::handle`]; its sync ops go to the
//!   middleware in order, and each reply marked `after_sync` is held until
//!   the middleware answered that op (see [`crate::uas`]). Whatever the
//!   answer (`ok`, `replicated:false`, an error, or the socket being
//!   unavailable), the reply is then sent: the service keeps serving,
//!   degraded, and counts it. One exception: an op the middleware refused
//!   (`not_active`: this VM stopped being ACT before the op reached it) is
//!   not stored here, so the replies waiting for it are withheld and a
//!   dialog it would have created is forgotten: kept, it would live on
//!   this VM alone and answer the client later from the wrong VM. (The
//!   middleware hands such a late write on to the new ACT, whose service
//!   then answers the client.)
//! - A sync task owns the unix socket: at (re)connection it asks `get_all`
//!   (loaded with [`Uas::load`], and local dialogs the dump lacks are put
//!   again), writes requests, matches answers to them in order and passes
//!   unsolicited `{"event":...}` lines on for [`Uas::apply`] (the SBY path).
//!   At start the server waits briefly for that first dump before serving.
//!   A request unanswered for [`SYNC_TIMEOUT`] drops the connection.
//! - A tick every [`TICK`] runs [`Uas::tick`] (retransmissions, expiry).

use crate::sync::{decode_line, get_all_line, request_line, send_line, Answer, Incoming};
use crate::transaction::{Reply, SyncSeq};
use crate::uas::{Counters, Output, Owed, SyncOp, Uas, UasConfig};
use crate::SipError;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UdpSocket, UnixStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

pub const TICK: Duration = Duration::from_millis(500);
/// Longest wait for the middleware's answer to one request.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between attempts to (re)connect to the middleware.
pub const RECONNECT: Duration = Duration::from_secs(1);
/// How long the server waits at start for the first `get_all` dump.
pub const INITIAL_DUMP_WAIT: Duration = Duration::from_secs(3);
const STATS_EVERY: Duration = Duration::from_secs(60);
/// Longest wait for the middleware to hand a reply on to the new ACT (it
/// offers it for up to 5 s while the peer takes over).
const HAND_ON_WAIT: Duration = Duration::from_secs(6);

/// Shell-side counters (the protocol ones are in [`Counters`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShellStats {
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub send_errors: u64,
    /// Replies whose write was stored but which could not be sent (the
    /// handover took the address first), handed to the middleware for the
    /// new ACT.
    pub replies_handed_on: u64,
    /// Sync ops the peer acknowledged.
    pub sync_replicated: u64,
    /// Replies not sent because the op they waited for was refused.
    pub replies_withheld: u64,
    /// Answered `replicated:false` (no reachable peer).
    pub sync_unreplicated: u64,
    /// Answered `ok:false` (e.g. `not_active`).
    pub sync_refused: u64,
    /// Not answered: socket absent, lost or timed out.
    pub sync_failed: u64,
    /// Not sent: running without `--sync-socket`.
    pub sync_skipped: u64,
    pub events_applied: u64,
    pub events_rejected: u64,
    pub dumps_loaded: u64,
}

/// Counters at the end of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub uas: Counters,
    pub shell: ShellStats,
}

/// Binds a UDP socket with `IP_FREEBIND` (the address need not be local yet).
pub fn bind_freebind(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: valid fd, pointer to a c_int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_FREEBIND,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let rc = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: valid fd and a sockaddr_in of the size given.
            unsafe {
                libc::bind(
                    fd,
                    (&sin as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: valid fd and a sockaddr_in6 of the size given.
            unsafe {
                libc::bind(
                    fd,
                    (&sin6 as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(std::net::UdpSocket::from(owned))
}

/// A seed for tags that differs between processes and VMs.
pub fn random_seed() -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
    {
        return u64::from_ne_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32)
}

/// Unix time in ms (0 if the clock is before 1970).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the sync task tells the main loop.
#[derive(Debug)]
enum SyncEvent {
    Answered { seq: u64, outcome: Outcome },
    Event(SyncOp),
    Taken(SyncOp),
    Send(Owed),
    Dump(Map<String, Value>),
    Up,
    Down(String),
}

#[derive(Debug)]
enum Outcome {
    Answer(Answer),
    Failed(String),
}

/// A bound server, not yet serving.
pub struct Server {
    sock: Arc<UdpSocket>,
    local: SocketAddr,
    sync_socket: Option<PathBuf>,
}

impl Server {
    pub fn bind(listen: SocketAddr, sync_socket: Option<PathBuf>) -> Result<Server, SipError> {
        let std_sock = bind_freebind(listen).map_err(|source| SipError::Bind {
            addr: listen,
            source,
        })?;
        let local = std_sock.local_addr().map_err(|source| SipError::Io {
            what: "local address",
            source,
        })?;
        let sock = UdpSocket::from_std(std_sock).map_err(|source| SipError::Io {
            what: "register UDP socket",
            source,
        })?;
        Ok(Server {
            sock: Arc::new(sock),
            local,
            sync_socket,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves until `shutdown` completes; returns the counters.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<Report, SipError> {
        let cfg = UasConfig {
            wall_base_ms: unix_ms(),
            ..UasConfig::new(self.local, random_seed())
        };
        let uas = Uas::new(cfg);
        let mut shell = Shell {
            sock: self.sock,
            uas,
            start: Instant::now(),
            issued: 0,
            acked: 0,
            held: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            ops: None,
            sync_path: self.sync_socket.clone(),
            stats: ShellStats::default(),
            sync_up: false,
        };
        let mut events = None;
        if let Some(path) = self.sync_socket {
            let (ops_tx, ops_rx) = mpsc::unbounded_channel();
            let (ev_tx, ev_rx) = mpsc::unbounded_channel();
            tokio::spawn(sync_task(path.clone(), ops_rx, ev_tx));
            shell.ops = Some(ops_tx);
            events = Some(ev_rx);
            info!(listen = %self.local, sync_socket = %path.display(), "SIP service starting, with replication");
        } else {
            info!(listen = %self.local, "SIP service starting, without replication");
        }
        // Load the replicated state before serving (bounded wait).
        if let Some(rx) = events.as_mut() {
            let deadline = Instant::now() + INITIAL_DUMP_WAIT;
            loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(ev)) => {
                        let done = matches!(ev, SyncEvent::Dump(_) | SyncEvent::Down(_));
                        shell.on_sync_event(ev).await;
                        if done {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        warn!("no state dump from the middleware within {INITIAL_DUMP_WAIT:?}; serving anyway");
                        break;
                    }
                }
            }
        }
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_stats = Instant::now();
        let mut logged = Report::default();
        let mut buf = vec![0u8; 65_536];
        let sock = shell.sock.clone();
        loop {
            tokio::select! {
                // Replicated state first: after a switchover the peer's last
                // updates must be in place before the first request is served.
                biased;
                ev = recv_event(&mut events) => match ev {
                    Some(ev) => shell.on_sync_event(ev).await,
                    None => events = None,
                },
                r = sock.recv_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        // Anything replicated meanwhile goes in before this request.
                        while let Some(ev) = events.as_mut().and_then(|rx| rx.try_recv().ok()) {
                            shell.on_sync_event(ev).await;
                        }
                        shell.stats.datagrams_in += 1;
                        let now = shell.now();
                        let out = shell.uas.handle(&buf[..n], from, now);
                        if out.replies.is_empty() && out.sync.is_empty() {
                            debug!(%from, len = n, "datagram: nothing to answer");
                        }
                        shell.dispatch(out).await;
                    }
                    Err(e) => {
                        warn!("UDP receive: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                _ = tick.tick() => {
                    let now = shell.now();
                    let out = shell.uas.tick(now);
                    shell.dispatch(out).await;
                    if last_stats.elapsed() >= STATS_EVERY {
                        last_stats = Instant::now();
                        let report = shell.report();
                        if report != logged {
                            info!(counters = %serde_json::to_string(&report).unwrap_or_default(), dialogs = shell.uas.dialogs().len(), "SIP service counters");
                            logged = report;
                        }
                    }
                }
                _ = &mut shutdown => break,
            }
        }
        let report = shell.report();
        info!(counters = %serde_json::to_string(&report).unwrap_or_default(), "SIP service stopping");
        Ok(report)
    }
}

/// Asks the middleware, over a connection of its own (the main one's
/// answers are numbered), to hand `owed` to the new ACT.
async fn hand_on_reply(path: PathBuf, owed: Owed) {
    let Some(line) = send_line(&owed) else {
        return;
    };
    let ask = async {
        let s = UnixStream::connect(&path).await?;
        let (rd, mut wr) = s.into_split();
        wr.write_all(line.as_bytes()).await?;
        BufReader::new(rd).lines().next_line().await
    };
    match tokio::time::timeout(HAND_ON_WAIT, ask).await {
        Ok(Ok(Some(answer))) => info!(to = %owed.to, %answer, "reply handed on to the new ACT"),
        Ok(Ok(None)) => {
            warn!(to = %owed.to, "handing on a reply: the middleware closed the socket")
        }
        Ok(Err(e)) => warn!(to = %owed.to, "handing on a reply: {e}"),
        Err(_) => warn!(to = %owed.to, "handing on a reply: no answer within {HAND_ON_WAIT:?}"),
    }
}

async fn recv_event(rx: &mut Option<mpsc::UnboundedReceiver<SyncEvent>>) -> Option<SyncEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

struct Shell {
    sock: Arc<UdpSocket>,
    uas: Uas,
    start: Instant,
    /// Sync ops handed to the middleware / answered (in order).
    issued: u64,
    acked: u64,
    /// Replies waiting for a sync answer, by the op number they wait for.
    held: BTreeMap<u64, Vec<Reply>>,
    /// Unanswered ops' keys.
    in_flight: BTreeMap<u64, String>,
    ops: Option<mpsc::UnboundedSender<(u64, SyncOp)>>,
    /// The middleware's socket, for handing on a reply that could not be
    /// sent (see [`Shell::send`]).
    sync_path: Option<PathBuf>,
    stats: ShellStats,
    sync_up: bool,
}

impl Shell {
    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn report(&self) -> Report {
        Report {
            uas: self.uas.counters().clone(),
            shell: self.stats.clone(),
        }
    }

    async fn dispatch(&mut self, out: Output) {
        for op in out.sync {
            self.issued += 1;
            if self.ops.is_some() {
                self.in_flight.insert(self.issued, op.key().to_string());
            }
            match &self.ops {
                Some(tx) if tx.send((self.issued, op)).is_ok() => {}
                // The sync task is gone: answered at once.
                Some(_) => {
                    self.stats.sync_failed += 1;
                    self.acked = self.issued;
                }
                // No replication configured: answered at once.
                None => {
                    self.stats.sync_skipped += 1;
                    self.acked = self.issued;
                }
            }
        }
        debug_assert_eq!(self.issued, self.uas.sync_issued().0);
        for r in out.replies {
            match r.after_sync {
                Some(seq) if seq.0 > self.acked => self.held.entry(seq.0).or_default().push(r),
                _ => self.send(&r).await,
            }
        }
    }

    async fn send(&mut self, r: &Reply) {
        match self.sock.send_to(&r.data, r.to).await {
            Ok(_) => self.stats.datagrams_out += 1,
            Err(e) => {
                // Expected on the SBY: the VIP is not local there.
                self.stats.send_errors += 1;
                debug!(to = %r.to, "UDP send: {e}");
                // A reply its write's replication released, when this VM
                // just gave up the address (the handover overtook the
                // send): the middleware hands it to the new ACT
                // ([`Reply::handed_on`] says which).
                if let (true, Some(path)) = (r.handed_on(), self.sync_path.clone()) {
                    let owed = Owed {
                        to: r.to,
                        data: r.data.clone(),
                    };
                    self.stats.replies_handed_on += 1;
                    tokio::spawn(hand_on_reply(path, owed));
                }
            }
        }
    }

    async fn answered(&mut self, seq: u64, outcome: Outcome) {
        match outcome {
            Outcome::Answer(Answer::Replicated | Answer::Entries(_)) => {
                self.stats.sync_replicated += 1
            }
            Outcome::Answer(Answer::Unreplicated) => {
                self.stats.sync_unreplicated += 1;
                debug!(seq, "sync op stored without a peer (replicated:false)");
            }
            Outcome::Answer(Answer::Refused(e)) => {
                self.stats.sync_refused += 1;
                let withheld = self.held.remove(&seq).map_or(0, |r| r.len());
                self.stats.replies_withheld += withheld as u64;
                if let Some(key) = self.in_flight.get(&seq) {
                    self.uas.forget(key, SyncSeq(seq));
                }
                info!(seq, withheld, "sync op refused ({e}): its replies withheld");
            }
            Outcome::Failed(e) => {
                self.stats.sync_failed += 1;
                debug!(seq, "sync op not answered: {e}");
            }
        }
        if seq != self.acked + 1 {
            warn!(seq, acked = self.acked, "sync answers out of order");
        }
        self.acked = self.acked.max(seq);
        self.uas.stored(SyncSeq(self.acked));
        while let Some(e) = self.in_flight.first_entry() {
            if *e.key() > self.acked {
                break;
            }
            e.remove();
        }
        let later = self.held.split_off(&(self.acked + 1));
        let ready = std::mem::replace(&mut self.held, later);
        for r in ready.into_values().flatten() {
            self.send(&r).await;
        }
    }

    async fn on_sync_event(&mut self, ev: SyncEvent) {
        match ev {
            SyncEvent::Answered { seq, outcome } => self.answered(seq, outcome).await,
            SyncEvent::Event(op) => {
                let key = op.key().to_string();
                let now = self.now();
                match self.uas.apply_at(op, now) {
                    Ok(()) => {
                        self.stats.events_applied += 1;
                        debug!(%key, "replicated change applied");
                    }
                    Err(e) => {
                        self.stats.events_rejected += 1;
                        warn!("replicated change not applied: {e}");
                    }
                }
            }
            SyncEvent::Taken(op) => {
                let key = op.key().to_string();
                match self.uas.take_over(op) {
                    Ok(out) => {
                        self.stats.events_applied += 1;
                        info!(%key, answered = out.replies.len(), "change taken over from the old ACT");
                        self.dispatch(out).await;
                    }
                    Err(e) => {
                        self.stats.events_rejected += 1;
                        warn!("change taken over not applied: {e}");
                    }
                }
            }
            SyncEvent::Send(o) => {
                let reply = Reply {
                    to: o.to,
                    data: o.data,
                    after_sync: None,
                };
                if self.uas.sends_handed_on(&reply.data) {
                    info!(to = %reply.to, "sending a reply the old ACT could not");
                    self.send(&reply).await;
                } else {
                    info!(to = %reply.to, "a 2xx the old ACT could not send dropped: this VM answered that INVITE itself");
                }
            }
            SyncEvent::Dump(entries) => {
                let keys: HashSet<String> = entries.keys().cloned().collect();
                let report = self.uas.load(entries);
                self.stats.dumps_loaded += 1;
                let out = self.uas.resync(&keys);
                info!(
                    loaded = report.loaded,
                    rejected = report.rejected,
                    re_put = out.sync.len(),
                    dialogs = self.uas.dialogs().len(),
                    "replicated state loaded"
                );
                self.dispatch(out).await;
            }
            SyncEvent::Up => {
                self.sync_up = true;
                info!("connected to the middleware's sync socket");
            }
            SyncEvent::Down(reason) => {
                if self.sync_up {
                    warn!(
                        "sync socket lost ({reason}); serving without replication until it is back"
                    );
                } else {
                    debug!("sync socket unavailable: {reason}");
                }
                self.sync_up = false;
            }
        }
    }
}

/// Owns the middleware connection: reconnects, numbers nothing (the ops
/// come numbered), answers ops itself as failed while disconnected.
async fn sync_task(
    path: PathBuf,
    mut ops: mpsc::UnboundedReceiver<(u64, SyncOp)>,
    events: mpsc::UnboundedSender<SyncEvent>,
) {
    let mut warned = false;
    loop {
        let reason = match UnixStream::connect(&path).await {
            Ok(stream) => {
                warned = false;
                let _ = events.send(SyncEvent::Up);
                match session(stream, &mut ops, &events).await {
                    Some(reason) => reason,
                    None => return,
                }
            }
            Err(e) => format!("connect {}: {e}", path.display()),
        };
        if !warned {
            warn!("middleware sync socket: {reason}; retrying every {RECONNECT:?}");
            warned = true;
        }
        if events.send(SyncEvent::Down(reason)).is_err() {
            return;
        }
        let retry = tokio::time::sleep(RECONNECT);
        tokio::pin!(retry);
        loop {
            tokio::select! {
                _ = &mut retry => break,
                op = ops.recv() => match op {
                    Some((seq, _)) => {
                        let outcome = Outcome::Failed("middleware socket unavailable".into());
                        if events.send(SyncEvent::Answered { seq, outcome }).is_err() {
                            return;
                        }
                    }
                    None => return,
                },
            }
        }
    }
}

/// One connection; returns why it ended (None: the server is stopping).
async fn session(
    stream: UnixStream,
    ops: &mut mpsc::UnboundedReceiver<(u64, SyncOp)>,
    events: &mpsc::UnboundedSender<SyncEvent>,
) -> Option<String> {
    let (rd, mut wr) = stream.into_split();
    let mut lines = BufReader::new(rd).lines();
    // Outstanding requests in order: Some(seq) for an op, None for get_all.
    let mut pending: VecDeque<(Option<u64>, Instant)> = VecDeque::new();
    let reason = match wr.write_all(get_all_line().as_bytes()).await {
        Err(e) => format!("write: {e}"),
        Ok(()) => {
            pending.push_back((None, Instant::now()));
            loop {
                let oldest = pending.front().map(|(_, t)| *t + SYNC_TIMEOUT);
                tokio::select! {
                    op = ops.recv() => match op {
                        None => return None,
                        Some((seq, op)) => {
                            pending.push_back((Some(seq), Instant::now()));
                            if let Err(e) = wr.write_all(request_line(&op).as_bytes()).await {
                                break format!("write: {e}");
                            }
                        }
                    },
                    line = lines.next_line() => match line {
                        Ok(Some(line)) => match decode_line(&line) {
                            Ok(Incoming::Event(op)) => {
                                if events.send(SyncEvent::Event(op)).is_err() {
                                    return None;
                                }
                            }
                            Ok(Incoming::Taken(op)) => {
                                if events.send(SyncEvent::Taken(op)).is_err() {
                                    return None;
                                }
                            }
                            Ok(Incoming::Send(o)) => {
                                if events.send(SyncEvent::Send(o)).is_err() {
                                    return None;
                                }
                            }
                            Ok(Incoming::Answer(a)) => {
                                let ev = match (pending.pop_front(), a) {
                                    (Some((Some(seq), _)), a) => SyncEvent::Answered { seq, outcome: Outcome::Answer(a) },
                                    (Some((None, _)), Answer::Entries(m)) => SyncEvent::Dump(m),
                                    (Some((None, _)), other) => {
                                        warn!("get_all answered {other:?}; starting from local state");
                                        SyncEvent::Dump(Map::new())
                                    }
                                    (None, a) => {
                                        warn!("middleware answer with no request outstanding: {a:?}");
                                        continue;
                                    }
                                };
                                if events.send(ev).is_err() {
                                    return None;
                                }
                            }
                            Err(e) => warn!("middleware line ignored: {e}"),
                        },
                        Ok(None) => break "middleware closed the socket".to_string(),
                        Err(e) => break format!("read: {e}"),
                    },
                    _ = sleep_until_opt(oldest) => break format!("no answer within {SYNC_TIMEOUT:?}"),
                }
            }
        }
    };
    for (seq, _) in pending {
        if let Some(seq) = seq {
            let outcome = Outcome::Failed(reason.clone());
            if events.send(SyncEvent::Answered { seq, outcome }).is_err() {
                return None;
            }
        }
    }
    Some(reason)
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
