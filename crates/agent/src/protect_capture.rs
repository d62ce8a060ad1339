//! Taking one S2 checkpoint of a running VM: pause it, close the epoch in
//! its transmit buffer, save its device state, take the pages that changed,
//! resume it. The guest is resumed on every path out, whatever failed.

use duplex_core::agent_api::EpochTiming;
use duplex_net::txbuf::TxBuffer;
use duplex_qemu::{checkpoint, Qmp};
use duplex_replica::ram::RamView;
use duplex_replica::scan::{PageHashes, Pages};
use duplex_replica::wire::Checkpoint;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What a capture needs of the VM.
pub struct Source {
    pub qmp: Arc<Qmp>,
    pub ram: Arc<RamView>,
    pub txbuf: Arc<Mutex<TxBuffer>>,
    /// Where QEMU writes the device state (in the VM's directory).
    pub state_file: std::path::PathBuf,
}

/// Scans `ram` on a blocking thread (it reads the whole RAM).
async fn scan(
    ram: &Arc<RamView>,
    hashes: PageHashes,
    paused: bool,
) -> Result<(PageHashes, Pages), String> {
    let ram = ram.clone();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (hashes, pages) = tokio::task::spawn_blocking(move || {
        let mut hashes = hashes;
        let pages = hashes.take_changed_parallel(ram.bytes(), paused, workers);
        (hashes, pages)
    })
    .await
    .map_err(|e| format!("page scan: {e}"))?;
    let pages = pages.ok_or("page scan: a worker failed")?;
    Ok((hashes, pages))
}

/// The base round, the guest running: every page the backup lacks.
pub async fn base(src: &Source, hashes: PageHashes) -> Result<(PageHashes, Pages), String> {
    scan(&src.ram, hashes, false).await
}

/// Checkpoint `epoch`. The hashes come back in every case: as taken if it
/// succeeded, all zero (everything is sent next time) if it failed. With
/// `last` the guest stays paused after a checkpoint taken whole (a
/// handoff); a failed one resumes it in any case.
pub async fn take(
    src: &Source,
    epoch: u64,
    hashes: PageHashes,
    last: bool,
) -> (PageHashes, Result<(Checkpoint, EpochTiming), String>) {
    let t0 = Instant::now();
    if let Err(e) = checkpoint::pause(&src.qmp).await {
        return (hashes, Err(format!("pausing the guest: {e}")));
    }
    let stopped = t0.elapsed();
    if let Ok(mut b) = src.txbuf.lock() {
        b.close_epoch(epoch);
    }
    let (hashes, taken) = while_paused(src, hashes).await;
    let before_cont = Instant::now();
    let resumed = match (&taken, last) {
        (Ok(_), true) => Ok(()),
        _ => checkpoint::resume(&src.qmp).await,
    };
    let cont = before_cont.elapsed();
    let pause = t0.elapsed();
    let result = match (taken, resumed) {
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(format!("resuming the guest: {e}")),
        (Ok((save, scan_time, pages)), Ok(())) => read_state(&src.state_file).map(|state| {
            let timing = EpochTiming {
                epoch,
                stop_us: micros(stopped),
                save_us: micros(save),
                scan_us: micros(scan_time),
                cont_us: micros(cont),
                pause_us: micros(pause),
                pages: pages.len() as u64,
                bytes: (pages.data.len() + state.len()) as u64,
                commit_us: 0,
            };
            let cp = Checkpoint {
                epoch,
                consistent: true,
                ram_len: src.ram.bytes().len() as u64,
                device_state: state,
                pages,
            };
            (cp, timing)
        }),
    };
    // A checkpoint not taken whole leaves the hashes claiming pages that
    // were never sent: start them over (the next one sends every page).
    let hashes = match &result {
        Ok(_) => hashes,
        Err(_) => PageHashes::zeroed(src.ram.bytes().len()),
    };
    (hashes, result)
}

type Paused = (std::time::Duration, std::time::Duration, Pages);

async fn while_paused(src: &Source, hashes: PageHashes) -> (PageHashes, Result<Paused, String>) {
    let t = Instant::now();
    if let Err(e) = checkpoint::save_device_state(&src.qmp, &src.state_file).await {
        return (hashes, Err(format!("saving the device state: {e}")));
    }
    let save = t.elapsed();
    let t = Instant::now();
    // The scan owns the hashes while it runs; a failed scan task (it
    // panicked) loses them, so start from zero: everything is sent again.
    let len = src.ram.bytes().len();
    match scan(&src.ram, hashes, true).await {
        Ok((hashes, pages)) => (hashes, Ok((save, t.elapsed(), pages))),
        Err(e) => (PageHashes::zeroed(len), Err(e)),
    }
}

fn read_state(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("reading the device state {}: {e}", path.display()))
}

fn micros(d: std::time::Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}
