//! Runs sipp: spawn, stop, time limit, then the report from its files.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{
    command_line, Scenario, SippRun, ERROR_FILE, RTT_SUFFIX, SCREEN_FILE, STAT_FILE, STDERR_FILE,
    STDOUT_FILE,
};
use crate::error::SippError;
use crate::parse::{parse_rtt_csv, parse_stat_csv, response_times, ExitMeaning};
use crate::report::{RunEnd, SippReport};

/// After SIGTERM at the time limit, how long sipp gets to write its files
/// before SIGKILL. Measured: it exits within milliseconds.
const TERM_GRACE: Duration = Duration::from_secs(3);
/// How often a pending stop checks whether sipp is ready for SIGUSR1.
const STOP_POLL: Duration = Duration::from_millis(20);
/// Lines of sipp's stderr kept in reports and errors.
const STDERR_LINES: usize = 10;

/// Runs sipp to the end and reports. `prefix` runs it through another
/// command, e.g. `["ip", "netns", "exec", "dx-client"]` to place calls from
/// a lab namespace; empty: run it here.
pub async fn run(run: &SippRun, prefix: &[String]) -> Result<SippReport, SippError> {
    spawn(run, prefix)?.wait().await
}

/// Starts sipp in the background; [`RunningSipp::wait`] gives the report.
/// The time limit (`run.timeout`, counted from now) holds whether or not
/// anyone waits. Must be called within a tokio runtime.
pub fn spawn(run: &SippRun, prefix: &[String]) -> Result<RunningSipp, SippError> {
    run.validate()?;
    if let Scenario::File(path) = &run.scenario {
        if !path.is_file() {
            return Err(SippError::ScenarioMissing(path.clone()));
        }
    }
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(SippError::Supervisor(
            "spawn must be called within a tokio runtime".into(),
        ));
    }
    prepare_work_dir(&run.work_dir)?;

    let (program, args) = command_line(run, prefix);
    let cmdline = std::iter::once(program.as_str())
        .chain(args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    let out = create(&run.work_dir.join(STDOUT_FILE))?;
    let err = create(&run.work_dir.join(STDERR_FILE))?;
    let child = Command::new(&program)
        .args(&args)
        .current_dir(&run.work_dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| SippError::Spawn {
            cmdline: cmdline.clone(),
            source,
        })?;
    let pid = child.id().unwrap_or(0);
    let started = Instant::now();
    tracing::info!(pid, %cmdline, "sipp started");

    let (stop_tx, stop_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(supervise(
        child,
        started + run.timeout,
        run.work_dir.join(STAT_FILE),
        stop_rx,
    ));
    Ok(RunningSipp {
        run: run.clone(),
        pid,
        cmdline,
        started,
        stop_tx,
        task: Some(task),
    })
}

/// A sipp started by [`spawn`]. Dropping it without [`wait`](Self::wait)
/// kills sipp.
#[derive(Debug)]
pub struct RunningSipp {
    run: SippRun,
    pid: u32,
    cmdline: String,
    started: Instant,
    stop_tx: mpsc::UnboundedSender<()>,
    task: Option<JoinHandle<io::Result<Outcome>>>,
}

impl RunningSipp {
    /// Process id of what was spawned (sipp itself, or the prefix command
    /// that `exec`s it as `ip netns exec` does).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The command line as run.
    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }

    pub fn work_dir(&self) -> &Path {
        &self.run.work_dir
    }

    /// Time since spawn.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Asks sipp to end gracefully: no new calls, open ones finish (SIGUSR1).
    /// Returns at once; [`wait`](Self::wait) for the report. Sent only once
    /// sipp has started its traffic (an early SIGUSR1 would kill it: sipp
    /// installs its handler first, so its stat file appearing means ready).
    /// No effect once sipp has exited.
    pub fn stop(&self) {
        let _ = self.stop_tx.send(());
    }

    /// Waits for sipp to end (by itself, after [`stop`](Self::stop), or at
    /// the time limit) and reads its files.
    pub async fn wait(mut self) -> Result<SippReport, SippError> {
        let task = self.task.take().expect("wait consumes the RunningSipp");
        let outcome = task
            .await
            .map_err(|e| SippError::Supervisor(e.to_string()))?
            .map_err(|source| SippError::Io {
                what: "waiting for sipp, work directory",
                path: self.run.work_dir.clone(),
                source,
            })?;
        let duration = outcome.at.saturating_duration_since(self.started);
        let report = collect(&self.run, self.pid, &outcome, duration);
        match &report {
            Ok(r) => tracing::info!(pid = self.pid, "{}", r.summary()),
            Err(e) => tracing::warn!(pid = self.pid, "sipp run failed: {e}"),
        }
        report
    }
}

impl Drop for RunningSipp {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            // Dropping the supervisor drops the Child: kill_on_drop.
            task.abort();
        }
    }
}

#[derive(Debug)]
struct Outcome {
    status: ExitStatus,
    end: RunEnd,
    at: Instant,
}

/// Owns the child: delivers stop requests, enforces the deadline, reaps.
async fn supervise(
    mut child: Child,
    deadline: Instant,
    stat_path: PathBuf,
    mut stop_rx: mpsc::UnboundedReceiver<()>,
) -> io::Result<Outcome> {
    let mut stop_pending = false;
    let mut stopped = false;
    let mut channel_open = true;
    loop {
        tokio::select! {
            status = child.wait() => {
                let end = if stopped { RunEnd::Stopped } else { RunEnd::Exited };
                return Ok(Outcome { status: status?, end, at: Instant::now() });
            }
            _ = tokio::time::sleep_until(deadline) => break,
            msg = stop_rx.recv(), if channel_open && !stopped => match msg {
                Some(()) => stop_pending = true,
                None => channel_open = false,
            },
            _ = tokio::time::sleep(STOP_POLL), if stop_pending => {}
        }
        if stop_pending && stat_path.exists() {
            if let Some(pid) = child.id() {
                signal(pid, libc::SIGUSR1);
                tracing::debug!(pid, "sipp: SIGUSR1 (graceful stop)");
            }
            stop_pending = false;
            stopped = true;
        }
    }
    if let Some(pid) = child.id() {
        tracing::warn!(pid, "sipp: time limit reached, SIGTERM");
        signal(pid, libc::SIGTERM);
    }
    let status = match tokio::time::timeout(TERM_GRACE, child.wait()).await {
        Ok(status) => status?,
        Err(_) => {
            tracing::warn!("sipp: still running {TERM_GRACE:?} after SIGTERM, SIGKILL");
            child.kill().await?;
            child.wait().await?
        }
    };
    Ok(Outcome {
        status,
        end: RunEnd::TimeLimit,
        at: Instant::now(),
    })
}

fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) has no memory effects; the pid is our unreaped child
    // (tokio's Child::id() is None once it has been reaped).
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Creates `work_dir` and removes the files of an earlier run.
fn prepare_work_dir(dir: &Path) -> Result<(), SippError> {
    let io = |what, source| SippError::Io {
        what,
        path: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(|e| io("cannot create work directory", e))?;
    let entries = fs::read_dir(dir).map_err(|e| io("cannot list work directory", e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ours = [STAT_FILE, ERROR_FILE, SCREEN_FILE, STDOUT_FILE, STDERR_FILE]
            .contains(&name.as_ref())
            || name.ends_with(RTT_SUFFIX);
        if ours {
            fs::remove_file(entry.path()).map_err(|e| SippError::Io {
                what: "cannot remove stale sipp file",
                path: entry.path(),
                source: e,
            })?;
        }
    }
    Ok(())
}

fn create(path: &Path) -> Result<fs::File, SippError> {
    fs::File::create(path).map_err(|source| SippError::Io {
        what: "cannot create",
        path: path.to_path_buf(),
        source,
    })
}

/// Reads sipp's files after it ended.
fn collect(
    run: &SippRun,
    pid: u32,
    outcome: &Outcome,
    duration: Duration,
) -> Result<SippReport, SippError> {
    let dir = &run.work_dir;
    let stderr_tail = tail(&dir.join(STDERR_FILE), STDERR_LINES);
    let exit_code = outcome.status.code();
    let meaning = ExitMeaning::from_code(exit_code);
    if meaning.is_fatal() && outcome.end != RunEnd::TimeLimit {
        return Err(SippError::Fatal {
            exit_code,
            meaning: meaning.describe().to_string(),
            stderr: stderr_tail.join(" | "),
        });
    }

    let stat_path = dir.join(STAT_FILE);
    let stat_text = read(&stat_path, exit_code, &stderr_tail)?;
    let stat = parse_stat_csv(&stat_text).map_err(|source| SippError::Parse {
        path: stat_path.clone(),
        source,
    })?;

    let response_time_ms = match find_rtt_file(dir, pid) {
        Some(path) => {
            let text = read(&path, exit_code, &stderr_tail)?;
            let samples =
                parse_rtt_csv(&text).map_err(|source| SippError::Parse { path, source })?;
            response_times(&samples, 1)
        }
        // sipp creates the file with the first response time measured.
        None if stat.response_time.samples() == 0 || outcome.end == RunEnd::TimeLimit => None,
        None => {
            return Err(SippError::MissingFile {
                path: dir.join(format!("<scenario>_{pid}{RTT_SUFFIX}")),
                exit_code,
                stderr: stderr_tail.join(" | "),
            })
        }
    };

    Ok(SippReport::from_parts(
        stat,
        response_time_ms,
        exit_code,
        outcome.end,
        duration,
        dir.clone(),
        stderr_tail,
    ))
}

fn read(path: &Path, exit_code: Option<i32>, stderr: &[String]) -> Result<String, SippError> {
    match fs::read(path) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SippError::MissingFile {
            path: path.to_path_buf(),
            exit_code,
            stderr: stderr.join(" | "),
        }),
        Err(source) => Err(SippError::Io {
            what: "cannot read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// sipp names it `<scenario>_<pid>_rtt.csv`; prefer our pid, else the
/// newest (a prefix command that forks gives sipp another pid).
fn find_rtt_file(dir: &Path, pid: u32) -> Option<PathBuf> {
    let ours = format!("_{pid}{RTT_SUFFIX}");
    let mut candidates: Vec<(PathBuf, std::time::SystemTime)> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(RTT_SUFFIX))
        .map(|e| {
            let mtime = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (e.path(), mtime)
        })
        .collect();
    if let Some(p) = candidates
        .iter()
        .find(|(p, _)| p.to_string_lossy().ends_with(&ours))
    {
        return Some(p.0.clone());
    }
    candidates.sort_by_key(|(_, t)| *t);
    candidates.pop().map(|(p, _)| p)
}

/// The last `n` non-empty lines of a file (empty if unreadable).
fn tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(bytes) = fs::read(path) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.replace('\t', " "))
        .collect()
}
