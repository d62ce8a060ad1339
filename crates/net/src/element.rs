//! One VM's network element: QEMU's netdev stream on one side, the host tap
//! on the other, the pipeline in between (counting, isolation while the
//! host is fenced, extra stages, the handover). QEMU connects to the element's
//! unix socket (it may reconnect, e.g. the destination QEMU of a migration).

use crate::counters::{CountStage, Counters};
use crate::framing::{read_frame, write_frame};
use crate::handover::{Handover, HandoverStage};
use crate::isolate::{IsolateStage, Isolation};
use crate::stage::{Direction, Pipeline, Stage};
use crate::tap::Tap;
use duplex_core::agent_api::{HandoverOrder, HandoverStatus, TrafficReport};
use duplex_core::mac::Mac;
use std::sync::{Arc, Mutex};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

/// Frames queued towards one side before new ones are dropped (counted).
const QUEUE: usize = 1024;
/// How often stages get a chance to release frames on their own (expiry).
const TICK: std::time::Duration = std::time::Duration::from_millis(100);

pub struct ElementHandle {
    vm: String,
    counters: Arc<Mutex<Counters>>,
    pipeline: Arc<Mutex<Pipeline>>,
    inject: mpsc::Sender<(Direction, Vec<u8>)>,
    handover: Arc<Mutex<Handover>>,
    wake: Arc<Notify>,
    task: JoinHandle<()>,
    pub tap_name: String,
    isolation: Isolation,
}

impl ElementHandle {
    pub fn report(&self) -> TrafficReport {
        let drops = self
            .pipeline
            .lock()
            .map(|p| p.drops.clone())
            .unwrap_or_default();
        match self.counters.lock() {
            Ok(mut c) => c.report(&self.vm, &drops, std::time::Instant::now()),
            Err(_) => TrafficReport::default(),
        }
    }

    /// Sends a frame as if it came from `dir`'s source (e.g. an announce).
    pub async fn inject(&self, dir: Direction, frame: Vec<u8>) {
        let _ = self.inject.send((dir, frame)).await;
    }

    /// Carries out a handover order (see [`crate::handover`]); frames it
    /// lets go leave at once.
    pub fn handover(&self, order: HandoverOrder) -> HandoverStatus {
        let status = match self.handover.lock() {
            Ok(mut h) => {
                h.order(order, std::time::Instant::now());
                h.status()
            }
            Err(p) => p.into_inner().status(),
        };
        self.wake.notify_one();
        status
    }

    pub fn handover_status(&self) -> HandoverStatus {
        match self.handover.lock() {
            Ok(h) => h.status(),
            Err(p) => p.into_inner().status(),
        }
    }

    /// Cuts the VM off the network (`true`) or lets it back (`false`).
    pub fn isolate(&self, on: bool) {
        self.isolation.set(on);
    }

    pub fn is_isolated(&self) -> bool {
        self.isolation.is_on()
    }

    /// Stops the element and waits until its task has ended, so that the
    /// tap it owned is gone when this returns (a VM started again at once
    /// creates a tap of the same name).
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for ElementHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the element for `vm` (whose MAC is `mac`). `extra` stages run
/// after counting; the handover stage runs last.
pub fn start(
    vm: &str,
    mac: Mac,
    listener: UnixListener,
    tap: Tap,
    extra: Vec<Box<dyn Stage>>,
) -> ElementHandle {
    let counters = Arc::new(Mutex::new(Counters::default()));
    let handover = Arc::new(Mutex::new(Handover::new(mac)));
    let isolation = Isolation::default();
    let mut stages: Vec<Box<dyn Stage>> = vec![
        Box::new(CountStage(counters.clone())),
        Box::new(IsolateStage(isolation.clone())),
    ];
    stages.extend(extra);
    stages.push(Box::new(HandoverStage(handover.clone())));
    let wake = Arc::new(Notify::new());
    let pipeline = Arc::new(Mutex::new(Pipeline::new(stages)));
    let (inject, inject_rx) = mpsc::channel(QUEUE);
    let tap_name = tap.name.clone();
    let task = tokio::spawn(run(
        vm.to_string(),
        listener,
        Arc::new(tap),
        pipeline.clone(),
        inject_rx,
        wake.clone(),
    ));
    ElementHandle {
        vm: vm.to_string(),
        counters,
        pipeline,
        inject,
        handover,
        wake,
        task,
        tap_name,
        isolation,
    }
}

async fn run(
    vm: String,
    listener: UnixListener,
    tap: Arc<Tap>,
    pipeline: Arc<Mutex<Pipeline>>,
    mut inject: mpsc::Receiver<(Direction, Vec<u8>)>,
    wake: Arc<Notify>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (in_tx, mut in_rx) = mpsc::channel::<(Direction, Vec<u8>)>(QUEUE);
    // Tap -> element.
    let _tap_reader = AbortOnDrop({
        let (tap, in_tx) = (tap.clone(), in_tx.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                match tap.read(&mut buf).await {
                    Ok(n) => {
                        if in_tx
                            .send((Direction::ToGuest, buf[..n].to_vec()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "tap read failed");
                        return;
                    }
                }
            }
        })
    });
    // Element -> tap.
    let (tap_tx, mut tap_rx) = mpsc::channel::<Vec<u8>>(QUEUE);
    let _tap_writer = AbortOnDrop({
        let tap = tap.clone();
        tokio::spawn(async move {
            while let Some(f) = tap_rx.recv().await {
                if let Err(e) = tap.write(&f).await {
                    tracing::warn!(error = %e, "tap write failed");
                }
            }
        })
    });
    // Element -> VM, through the current QEMU connection (if any).
    let mut vm_tx: Option<mpsc::Sender<Vec<u8>>> = None;
    let mut conn_tasks: Vec<AbortOnDrop> = Vec::new();
    let deliver = |out: Vec<(Direction, Vec<u8>)>, vm_tx: &Option<mpsc::Sender<Vec<u8>>>| {
        for (dir, f) in out {
            let res = match dir {
                Direction::FromGuest => tap_tx.try_send(f).map_err(|_| "tap backlog full"),
                Direction::ToGuest => match vm_tx {
                    Some(tx) => tx
                        .try_send(f)
                        .map_err(|_| "guest backlog full (VM not reading)"),
                    None => Err("VM not connected"),
                },
            };
            if let Err(reason) = res {
                if let Ok(mut p) = pipeline.lock() {
                    p.count_drop(reason);
                }
            }
        }
    };
    loop {
        tokio::select! {
            conn = listener.accept() => {
                let Ok((stream, _)) = conn else { continue };
                tracing::info!(vm = %vm, "QEMU connected to the network element");
                conn_tasks.clear();
                let (mut r, mut w) = stream.into_split();
                let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUE);
                vm_tx = Some(tx);
                let in_tx = in_tx.clone();
                let vm_name = vm.clone();
                conn_tasks.push(AbortOnDrop(tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        match read_frame(&mut r, &mut buf).await {
                            Ok(true) => {
                                if in_tx.send((Direction::FromGuest, std::mem::take(&mut buf))).await.is_err() { return; }
                            }
                            Ok(false) => { tracing::info!(vm = %vm_name, "QEMU closed the netdev stream"); return; }
                            Err(e) => { tracing::warn!(vm = %vm_name, error = %e, "netdev stream error"); return; }
                        }
                    }
                })));
                conn_tasks.push(AbortOnDrop(tokio::spawn(async move {
                    while let Some(f) = rx.recv().await {
                        if write_frame(&mut w, &f).await.is_err() { return; }
                    }
                })));
            }
            Some((dir, frame)) = in_rx.recv() => {
                let out = match pipeline.lock() { Ok(mut p) => p.process(dir, frame), Err(_) => Vec::new() };
                deliver(out, &vm_tx);
            }
            Some((dir, frame)) = inject.recv() => {
                deliver(vec![(dir, frame)], &vm_tx);
            }
            _ = wake.notified() => {
                let out = match pipeline.lock() { Ok(mut p) => p.poll_released(), Err(_) => Vec::new() };
                deliver(out, &vm_tx);
            }
            _ = tick.tick() => {
                let out = match pipeline.lock() { Ok(mut p) => p.poll_released(), Err(_) => Vec::new() };
                deliver(out, &vm_tx);
            }
        }
        if conn_tasks.first().is_some_and(|t| t.0.is_finished()) {
            conn_tasks.clear();
            vm_tx = None;
        }
    }
}

/// Sub-tasks end with the element (dropping the tap with them).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
