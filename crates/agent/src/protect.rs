//! The primary's S2 epochs: fills the backup's replica (the base round),
//! then runs the epoch machine (`duplex_core::epoch`): every effect it
//! gives is carried out here and its outcome fed back as an event.
//! Checkpoints go to the backup in order from one sender task; the backup's
//! acknowledgements commit epochs, which releases their held output.

use crate::host::Host;
use crate::protect_capture::{self, Source};
use crate::vm::Vm;
use crate::AgentError;
use duplex_core::agent_api::{
    EpochAck, EpochTiming, ErrorBody, ProtectPhase, ProtectRequest, ProtectionInfo,
    ProtectionSummary, RECENT_EPOCHS,
};
use duplex_core::epoch::{Effect, Event, Mode, Primary, MAX_IN_FLIGHT};
use duplex_net::switch_proto::Msg;
use duplex_replica::ram::RamView;
use duplex_replica::scan::{PageHashes, Pages};
use duplex_replica::wire::Checkpoint;
use duplex_replica::PAGE;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Pages per base-round message (16 MiB).
const BASE_CHUNK_PAGES: usize = 4096;
/// Longest one checkpoint's transfer may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Tries per checkpoint (the backup acknowledges a repeat again).
const SEND_TRIES: u32 = 3;
const SEND_RETRY_PAUSE: Duration = Duration::from_millis(50);

pub enum Order {
    /// The controller's word: the backup will not take over.
    Unprotect,
    /// S5: one last checkpoint, the VM left paused; the answer is its
    /// epoch once the backup applied it.
    Handoff(oneshot::Sender<u64>),
    /// The handoff is called off (the caller resumes the VM).
    CancelHandoff,
}

/// A VM's running epochs, kept by the VM; dropping it stops them.
pub struct Protection {
    orders: mpsc::Sender<Order>,
    pub info: Arc<Mutex<ProtectionInfo>>,
    /// Since when the epochs are stalled.
    stalled_at: Arc<Mutex<Option<Instant>>>,
    /// When the newest checkpoint the backup applied was taken.
    committed_at: Arc<Mutex<Option<Instant>>>,
    /// The last checkpoint's epoch once a handoff is done.
    handed_off: Arc<Mutex<Option<u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Protection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts epochs of a replicated VM towards `req.backup`.
pub async fn start(
    host: &Arc<Host>,
    name: &str,
    req: ProtectRequest,
    fence: Option<u64>,
) -> Result<ProtectionInfo, AgentError> {
    let vm = host.get(name)?;
    req.epochs.validate().map_err(AgentError::BadRequest)?;
    let to = req.backup.trim_end_matches('/').to_string();
    crate::stream_addr::agent_ip(&to)
        .map_err(|e| AgentError::BadRequest(format!("field `backup`: {e}")))?;
    let (Some(ram_file), Some(txbuf)) = (vm.ram_file.clone(), vm.txbuf()) else {
        return Err(AgentError::Conflict(format!(
            "VM `{name}` is not replicated (create it with `replicated: true`)"
        )));
    };
    let qmp = vm
        .qmp()
        .ok_or_else(|| AgentError::Conflict(format!("VM `{name}` has no running QEMU")))?;
    let switch = crate::switch_link::for_vm(host.switch.as_ref(), vm.spec.hold_at, name)?;
    // Epochs towards a new backup: the controller ordered it, so the old
    // backup will not take over; its held output leaves now (in the
    // switch: what any other port holds of it is a lost primary's).
    if let Ok(mut p) = vm.protection.lock() {
        p.take();
    }
    let msgs = match txbuf.lock() {
        Ok(mut b) => {
            b.hold_at(vm.spec.hold_at, vm.spec.mac());
            b.restart()
        }
        Err(_) => Vec::new(),
    };
    if let Some(link) = switch {
        link.send(&msgs)?;
    }
    if let Some(rt) = vm.rt.lock().await.as_ref() {
        // What the restart released goes out now.
        rt.element.wake();
    }
    let len = u64::from(vm.spec.memory_mib) << 20;
    let ram = RamView::open(&ram_file, len).map_err(|e| AgentError::Unavailable(e.to_string()))?;
    let info = Arc::new(Mutex::new(ProtectionInfo {
        backup: to.clone(),
        epochs: req.epochs,
        phase: ProtectPhase::Base,
        committed: 0,
        captured: 0,
        failed_captures: 0,
        base_pages: 0,
        last_error: None,
        recent: Vec::new(),
    }));
    let src = Source {
        qmp,
        ram: Arc::new(ram),
        txbuf,
        state_file: vm.paths.dir.join(STATE_FILE),
    };
    let (orders, order_rx) = mpsc::channel(4);
    let link = Link {
        host: host.clone(),
        url: format!("{to}/v1/replicas/{name}/epochs"),
        fence,
    };
    let stalled_at = Arc::new(Mutex::new(None));
    let committed_at = Arc::new(Mutex::new(None));
    let handed_off = Arc::new(Mutex::new(None));
    let shared = match req.shared_epoch {
        Some(e) => Some(shared_base(&vm, e)?),
        None => None,
    };
    let engine = Engine {
        vm: vm.clone(),
        src,
        link,
        info: info.clone(),
        stalled_at: stalled_at.clone(),
        committed_at: committed_at.clone(),
        handed_off: handed_off.clone(),
        cfg: req.epochs,
        shared,
    };
    let task = tokio::spawn(engine.run(order_rx));
    let snapshot = lock(&info).clone();
    if let Ok(mut p) = vm.protection.lock() {
        *p = Some(Protection {
            orders,
            info,
            stalled_at,
            committed_at,
            handed_off,
            task,
        });
    }
    tracing::info!(vm = %name, backup = %to, "S2 epochs starting");
    Ok(snapshot)
}

pub fn info(vm: &Vm) -> Option<ProtectionInfo> {
    let p = vm.protection.lock().ok()?;
    p.as_ref().map(|p| lock(&p.info).clone())
}

/// Where QEMU writes a checkpoint's device state, in the VM's directory.
pub const STATE_FILE: &str = "checkpoint.state";

/// The last checkpoint's epoch if the VM was handed off whole.
pub fn handed_off(vm: &Vm) -> Option<u64> {
    let guard = vm.protection.lock().ok()?;
    let epoch = *lock(&guard.as_ref()?.handed_off);
    epoch
}

/// The state this VM was started from, if it is `epoch` (S5).
fn shared_base(vm: &Vm, epoch: u64) -> Result<(u64, PageHashes), AgentError> {
    let mut base = vm
        .shared_base
        .lock()
        .map_err(|_| AgentError::Unavailable("poisoned".into()))?;
    match base.take() {
        Some((e, h)) if e == epoch => Ok((e, h)),
        other => {
            let had = other.as_ref().map(|(e, _)| *e);
            *base = other;
            Err(AgentError::Conflict(format!(
                "VM `{}` was not started here from epoch {epoch} (from {had:?}): its backup needs a full first round",
                vm.spec.name
            )))
        }
    }
}

/// What the host reports of a VM's epochs.
pub fn summary(vm: &Vm) -> Option<ProtectionSummary> {
    let guard = vm.protection.lock().ok()?;
    let p = guard.as_ref()?;
    let stalled_for_ms = lock(&p.stalled_at).map(|at| at.elapsed().as_millis() as u64);
    let lag_ms = lock(&p.committed_at).map(|at| at.elapsed().as_millis() as u64);
    let i = lock(&p.info);
    Some(ProtectionSummary {
        backup: i.backup.clone(),
        phase: i.phase,
        committed: i.committed,
        stalled_for_ms,
        lag_ms,
    })
}

/// The controller's word that the backup will not take over.
pub async fn unprotect(vm: &Vm) -> Result<(), AgentError> {
    order(vm, Order::Unprotect).await
}

/// Gives the epochs an order.
pub async fn order(vm: &Vm, order: Order) -> Result<(), AgentError> {
    let orders = vm
        .protection
        .lock()
        .ok()
        .and_then(|p| p.as_ref().map(|p| p.orders.clone()));
    match orders {
        Some(o) => o
            .send(order)
            .await
            .map_err(|_| AgentError::Unavailable("the epochs have stopped".into())),
        None => Err(AgentError::Conflict(format!(
            "VM `{}` has no epochs running",
            vm.spec.name
        ))),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where checkpoints go.
#[derive(Clone)]
struct Link {
    host: Arc<Host>,
    url: String,
    fence: Option<u64>,
}

impl Link {
    async fn put(&self, cp: &Checkpoint) -> Result<EpochAck, String> {
        // Shared, not copied, between tries.
        let body = axum::body::Bytes::from(cp.encode());
        let mut last = String::new();
        for _ in 0..SEND_TRIES {
            match self.put_once(body.clone()).await {
                Ok(ack) => return Ok(ack),
                Err(e) => last = e,
            }
            tokio::time::sleep(SEND_RETRY_PAUSE).await;
        }
        Err(last)
    }

    async fn put_once(&self, body: axum::body::Bytes) -> Result<EpochAck, String> {
        let mut req = self
            .host
            .http
            .get()
            .put(&self.url)
            .timeout(SEND_TIMEOUT)
            .header("content-type", "application/octet-stream")
            .body(body);
        if let Some(token) = self.fence {
            req = req.header(duplex_core::agent_api::FENCE_HEADER, token.to_string());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("backup unreachable at {}: {e}", self.url))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| format!("reading the backup's answer: {e}"))?;
        if !status.is_success() {
            let msg = serde_json::from_str::<ErrorBody>(&text)
                .map(|b| b.error.message)
                .unwrap_or(text);
            return Err(format!("backup refused the checkpoint ({status}): {msg}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("bad answer from the backup: {e}"))
    }
}

struct Engine {
    vm: Arc<Vm>,
    src: Source,
    link: Link,
    info: Arc<Mutex<ProtectionInfo>>,
    stalled_at: Arc<Mutex<Option<Instant>>>,
    committed_at: Arc<Mutex<Option<Instant>>>,
    handed_off: Arc<Mutex<Option<u64>>>,
    cfg: duplex_core::epoch::EpochConfig,
    /// The backup already holds this epoch's state, RAM as hashed.
    shared: Option<(u64, PageHashes)>,
}

impl Engine {
    fn note_error(&self, e: &str) {
        tracing::warn!(vm = %self.vm.spec.name, error = %e, "S2 epochs");
        lock(&self.info).last_error = Some(e.to_string());
    }

    async fn run(mut self, mut orders: mpsc::Receiver<Order>) {
        let len = self.src.ram.bytes().len();
        let (machine, hashes) = match self.shared.take() {
            Some((epoch, hashes)) => (Primary::starting_after(self.cfg, epoch), hashes),
            None => match self.fill_backup(PageHashes::zeroed(len)).await {
                Ok(h) => (Primary::new(self.cfg), h),
                Err(e) => {
                    self.note_error(&format!("filling the backup: {e}"));
                    lock(&self.info).phase = ProtectPhase::Failed;
                    return;
                }
            },
        };
        let (to_send, sending) = mpsc::channel::<(Checkpoint, Instant)>(MAX_IN_FLIGHT + 1);
        let (ack_tx, mut acks) = mpsc::channel::<(u64, Instant)>(MAX_IN_FLIGHT + 1);
        let sender = tokio::spawn(send_loop(
            self.link.clone(),
            sending,
            ack_tx,
            self.info.clone(),
        ));
        let mut state = Loop {
            machine,
            hashes,
            t0: Instant::now(),
            events: VecDeque::from([Event::Tick]),
            handoff_reply: None,
        };
        loop {
            while let Some(ev) = state.events.pop_front() {
                let now = state.now_ms();
                let (next, effects) = state.machine.clone().step(ev, now);
                state.machine = next;
                for fx in effects {
                    self.carry_out(fx, &mut state, &to_send).await;
                }
                self.publish(&state.machine);
            }
            let sleep = state
                .machine
                .next_wake_ms()
                .map(|at| Duration::from_millis(at.saturating_sub(state.now_ms())))
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                ack = acks.recv() => match ack {
                    Some((epoch, captured)) => {
                        self.note_commit(epoch, captured);
                        state.events.push_back(Event::Acked { epoch });
                    }
                    None => break,
                },
                order = orders.recv() => match order {
                    Some(Order::Unprotect) => state.events.push_back(Event::Unprotect),
                    Some(Order::Handoff(reply)) => {
                        state.handoff_reply = Some(reply);
                        state.events.push_back(Event::Handoff);
                    }
                    Some(Order::CancelHandoff) => {
                        // The VM runs on: what was handed off is not its
                        // state any more.
                        state.handoff_reply = None;
                        *lock(&self.handed_off) = None;
                        state.events.push_back(Event::CancelHandoff);
                    }
                    None => break,
                },
                _ = tokio::time::sleep(sleep) => state.events.push_back(Event::Tick),
            }
        }
        sender.abort();
    }

    /// The base round, in chunks: afterwards the backup holds a copy of
    /// RAM as it was during the round (not consistent; epoch 1 makes it so).
    async fn fill_backup(&self, hashes: PageHashes) -> Result<PageHashes, String> {
        let (hashes, pages) = protect_capture::base(&self.src, hashes).await?;
        lock(&self.info).base_pages = pages.len() as u64;
        let ram_len = self.src.ram.bytes().len() as u64;
        for (k, chunk) in pages.index.chunks(BASE_CHUNK_PAGES).enumerate() {
            let at = k * BASE_CHUNK_PAGES * PAGE;
            let cp = Checkpoint {
                epoch: 0,
                consistent: false,
                ram_len,
                device_state: Vec::new(),
                pages: Pages {
                    index: chunk.to_vec(),
                    data: pages.data[at..at + chunk.len() * PAGE].to_vec(),
                },
            };
            self.link.put(&cp).await?;
        }
        Ok(hashes)
    }

    async fn carry_out(
        &self,
        fx: Effect,
        state: &mut Loop,
        to_send: &mpsc::Sender<(Checkpoint, Instant)>,
    ) {
        match fx {
            Effect::Capture { epoch } | Effect::FinalCapture { epoch } if !self.capturable() => {
                // Paused by order (nothing to send, and a checkpoint's
                // `cont` would resume it) or moving away: try next epoch.
                state.events.push_back(Event::CaptureFailed { epoch });
            }
            Effect::Capture { epoch } | Effect::FinalCapture { epoch } => {
                let last = matches!(fx, Effect::FinalCapture { .. });
                let hashes = std::mem::replace(&mut state.hashes, PageHashes::zeroed(0));
                let (hashes, taken) = protect_capture::take(&self.src, epoch, hashes, last).await;
                state.hashes = hashes;
                match taken {
                    Ok((cp, timing)) => {
                        self.note_capture(timing);
                        // Bounded by MAX_IN_FLIGHT: the machine never has
                        // more captured and unacknowledged.
                        let _ = to_send.send((cp, Instant::now())).await;
                        state.events.push_back(Event::Captured { epoch });
                    }
                    Err(e) => {
                        self.note_error(&format!("checkpoint {epoch}: {e}"));
                        lock(&self.info).failed_captures += 1;
                        state.events.push_back(Event::CaptureFailed { epoch });
                    }
                }
            }
            Effect::HandedOff { epoch } => {
                tracing::info!(vm = %self.vm.spec.name, epoch, "S5 handoff: the backup holds the paused VM's state");
                *lock(&self.handed_off) = Some(epoch);
                if let Some(reply) = state.handoff_reply.take() {
                    let _ = reply.send(epoch);
                }
            }
            Effect::Commit { epoch } => self.release(|b| b.commit(epoch)).await,
            Effect::ReleaseAll => self.release(|b| b.unprotect()).await,
            Effect::Stalled { epoch } => {
                self.note_error(&format!(
                    "the backup has not acknowledged checkpoint {epoch}: output is held"
                ));
                self.vm.urgent.notify_one();
            }
        }
    }

    /// Whether a checkpoint may pause and resume the guest now.
    fn capturable(&self) -> bool {
        self.vm.status().state == duplex_core::agent_api::VmState::Running
    }

    /// Changes the transmit buffer and wakes the element to send what it
    /// released; tells the switch if the output waits there.
    async fn release(&self, f: impl FnOnce(&mut duplex_net::txbuf::TxBuffer) -> Option<Msg>) {
        let msg = self.src.txbuf.lock().ok().and_then(|mut b| f(&mut b));
        if let (Some(m), Some(link)) = (msg, self.link.host.switch.as_ref()) {
            if let Err(e) = link.send(&[m]) {
                self.note_error(&e.to_string());
            }
        }
        if let Some(rt) = self.vm.rt.lock().await.as_ref() {
            rt.element.wake();
        }
    }

    fn note_capture(&self, timing: EpochTiming) {
        let mut i = lock(&self.info);
        i.captured += 1;
        if i.recent.len() >= RECENT_EPOCHS {
            i.recent.remove(0);
        }
        i.recent.push(timing);
    }

    fn note_commit(&self, epoch: u64, captured: Instant) {
        *lock(&self.committed_at) = Some(captured);
        let mut i = lock(&self.info);
        if let Some(t) = i.recent.iter_mut().rev().find(|t| t.epoch == epoch) {
            t.commit_us = captured.elapsed().as_micros() as u64;
        }
    }

    fn publish(&self, m: &Primary) {
        let mut stalled = lock(&self.stalled_at);
        match (m.mode, *stalled) {
            (Mode::Stalled { .. }, None) => *stalled = Some(Instant::now()),
            (Mode::Stalled { .. }, Some(_)) => {}
            _ => *stalled = None,
        }
        drop(stalled);
        let mut i = lock(&self.info);
        i.committed = m.committed;
        i.phase = match m.mode {
            Mode::Running => ProtectPhase::Running,
            Mode::Stalled { .. } => ProtectPhase::Stalled,
            Mode::Unprotected => ProtectPhase::Unprotected,
        };
    }
}

struct Loop {
    machine: Primary,
    hashes: PageHashes,
    t0: Instant,
    events: VecDeque<Event>,
    /// Who waits for a handoff.
    handoff_reply: Option<oneshot::Sender<u64>>,
}

impl Loop {
    fn now_ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }
}

/// Sends checkpoints in order; an acknowledged one is reported back with
/// when it was captured. A checkpoint that cannot be delivered is not
/// acknowledged: the machine stalls and the controller decides.
async fn send_loop(
    link: Link,
    mut rx: mpsc::Receiver<(Checkpoint, Instant)>,
    acks: mpsc::Sender<(u64, Instant)>,
    info: Arc<Mutex<ProtectionInfo>>,
) {
    while let Some((cp, captured)) = rx.recv().await {
        match link.put(&cp).await {
            Ok(EpochAck {
                applied: Some(epoch),
            }) => {
                if acks.send((epoch, captured)).await.is_err() {
                    return;
                }
            }
            Ok(EpochAck { applied: None }) => {}
            Err(e) => {
                tracing::warn!(epoch = cp.epoch, error = %e, "S2 checkpoint not delivered");
                lock(&info).last_error = Some(format!("checkpoint {}: {e}", cp.epoch));
            }
        }
    }
}
