//! The network element as it was before its data path got its own thread
//! (commit f7a4d16): a tokio task per direction and side, channels between
//! them, a `Vec` per frame. Kept here only as `bench/element`'s baseline,
//! over today's pipeline (`duplex_net::element::parts`), so the comparison
//! isolates the data path.

use duplex_net::element::Parts;
use duplex_net::framing::{read_frame, write_frame};
use duplex_net::stage::{Direction, Pipeline};
use duplex_net::tap::Tap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::unix::AsyncFd;
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Frames queued towards one side before new ones are dropped (counted).
const QUEUE: usize = 1024;
const TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// Runs until the task is aborted.
pub fn start(listener: UnixListener, tap: Tap, parts: &Parts) -> JoinHandle<()> {
    tokio::spawn(run(listener, tap, parts.pipeline.clone()))
}

async fn read_tap(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|fd| {
            // SAFETY: read(2) into a buffer we own, of its length.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        }) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

async fn write_tap(fd: &AsyncFd<OwnedFd>, frame: &[u8]) -> std::io::Result<()> {
    loop {
        let mut guard = fd.writable().await?;
        match guard.try_io(|fd| {
            // SAFETY: write(2) from a buffer we own, of its length.
            let n = unsafe { libc::write(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        }) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

async fn run(listener: UnixListener, tap: Tap, pipeline: Arc<Mutex<Pipeline>>) {
    // SAFETY: the OwnedFd stays open and unchanged for the AsyncFd's life.
    let Ok(fd) = (unsafe { AsyncFd::register(tap.fd) }) else {
        return;
    };
    let fd = Arc::new(fd);
    let mut tick = tokio::time::interval(TICK);
    let (in_tx, mut in_rx) = mpsc::channel::<(Direction, Vec<u8>)>(QUEUE);
    let _tap_reader = AbortOnDrop({
        let (fd, in_tx) = (fd.clone(), in_tx.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok(n) = read_tap(&fd, &mut buf).await {
                if in_tx
                    .send((Direction::ToGuest, buf[..n].to_vec()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
    });
    let (tap_tx, mut tap_rx) = mpsc::channel::<Vec<u8>>(QUEUE);
    let _tap_writer = AbortOnDrop({
        let fd = fd.clone();
        tokio::spawn(async move {
            while let Some(f) = tap_rx.recv().await {
                let _ = write_tap(&fd, &f).await;
            }
        })
    });
    let mut vm_tx: Option<mpsc::Sender<Vec<u8>>> = None;
    let mut conn_tasks: Vec<AbortOnDrop> = Vec::new();
    let deliver = |out: Vec<(Direction, Vec<u8>)>, vm_tx: &Option<mpsc::Sender<Vec<u8>>>| {
        for (dir, f) in out {
            let res = match dir {
                Direction::FromGuest => tap_tx.try_send(f).map_err(|_| "tap backlog full"),
                Direction::ToGuest => match vm_tx {
                    Some(tx) => tx.try_send(f).map_err(|_| "guest backlog full"),
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
    // As before: every frame goes through the lock, then released frames.
    let process = |dir: Direction, frame: Vec<u8>| -> Vec<(Direction, Vec<u8>)> {
        let Ok(mut p) = pipeline.lock() else {
            return Vec::new();
        };
        let now = Instant::now();
        let mut out = Vec::new();
        if p.process(dir, &frame, now) {
            out.push((dir, frame));
        }
        out.extend(p.poll_released(now, duplex_net::stage::Room::ANY));
        out
    };
    loop {
        tokio::select! {
            conn = listener.accept() => {
                let Ok((stream, _)) = conn else { continue };
                conn_tasks.clear();
                let (mut r, mut w) = stream.into_split();
                let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUE);
                vm_tx = Some(tx);
                let in_tx = in_tx.clone();
                conn_tasks.push(AbortOnDrop(tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while let Ok(true) = read_frame(&mut r, &mut buf).await {
                        if in_tx.send((Direction::FromGuest, std::mem::take(&mut buf))).await.is_err() {
                            return;
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
                let out = process(dir, frame);
                deliver(out, &vm_tx);
            }
            _ = tick.tick() => {
                let out = match pipeline.lock() { Ok(mut p) => p.poll_released(Instant::now(), duplex_net::stage::Room::ANY), Err(_) => Vec::new() };
                deliver(out, &vm_tx);
            }
        }
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
