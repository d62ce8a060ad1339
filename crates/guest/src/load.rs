//! A memory-dirtying process for benchmarks: it keeps rewriting a buffer at
//! a set rate, as a busy in-memory application would, which is what makes
//! plain live migration's final pause grow. The middleware starts and stops
//! it (`memory_load` op); the process itself is `duplex dirty-memory`.

use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const PAGE: usize = 4096;
const MIB: usize = 1 << 20;
/// Largest buffer accepted.
pub const MAX_MIB: u32 = 4096;

/// The running load process, if any, and whether it runs only on the ACT.
#[derive(Default)]
pub struct MemoryLoad(Mutex<Option<(Child, bool)>>);

impl MemoryLoad {
    /// Replaces the running load (if any) with one of `mib` MiB rewritten
    /// at `mib_per_s`; `mib` 0 only stops it. With `while_act`, see
    /// [`MemoryLoad::follow_role`].
    pub fn set(&self, mib: u32, mib_per_s: u32, while_act: bool) -> Result<Option<u32>, String> {
        if mib > MAX_MIB {
            return Err(format!("mib {mib} is above {MAX_MIB}"));
        }
        if mib > 0 && mib_per_s == 0 {
            return Err("mib_per_s must be at least 1".into());
        }
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((mut old, _)) = g.take() {
            let _ = old.kill();
            let _ = old.wait();
        }
        if mib == 0 {
            return Ok(None);
        }
        let exe = std::env::current_exe().unwrap_or_else(|_| "/bin/duplex".into());
        let child = Command::new(exe)
            .args(["dirty-memory", "--mib", &mib.to_string()])
            .args(["--mib-per-s", &mib_per_s.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the memory load: {e}"))?;
        let pid = child.id();
        *g = Some((child, while_act));
        Ok(Some(pid))
    }

    /// A load that runs only while ACT is continued or stopped (SIGCONT,
    /// SIGSTOP) as this VM becomes or stops being ACT.
    pub fn follow_role(&self, active: bool) {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((child, true)) = g.as_ref() {
            let sig = if active { libc::SIGCONT } else { libc::SIGSTOP };
            // SAFETY: kill(2) on our own child's pid; it is not reaped
            // before `set` replaces it, so the pid is still ours.
            unsafe { libc::kill(child.id() as libc::pid_t, sig) };
        }
    }
}

/// Rewrites `mib` MiB, one byte per page, at `mib_per_s` MiB/s, forever.
pub fn dirty(mib: u32, mib_per_s: u32) -> ! {
    let mut buf = vec![0u8; mib.max(1) as usize * MIB];
    let per_mib = Duration::from_secs_f64(1.0 / f64::from(mib_per_s.max(1)));
    let start = Instant::now();
    let mut done: u32 = 0;
    let mut stamp: u8 = 0;
    loop {
        stamp = stamp.wrapping_add(1);
        for chunk in buf.chunks_mut(MIB) {
            for page in chunk.chunks_mut(PAGE) {
                page[0] = stamp;
            }
            done = done.wrapping_add(1);
            // Paced: never ahead of the rate.
            let due = per_mib * done;
            let now = start.elapsed();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        std::hint::black_box(&buf);
    }
}
