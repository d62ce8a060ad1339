//! The supervised service: its hooks (from `/etc/duplex/service.json` in
//! the image, or in the VM's root disk) and the process the middleware
//! keeps running. Nothing here knows what the service does.

use duplex_core::escalation::Cause;
use duplex_core::guest_proto::ServiceFailed;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const CONFIG_PATH: &str = "/etc/duplex/service.json";
pub const SYNC_SOCKET: &str = "/run/duplex/sync.sock";
/// Where /init mounts a VM's root disk; a service configured there runs
/// chrooted into it.
pub const SYSROOT: &str = "/sysroot";
/// The PATH hooks run with (Debian's).
const HOOK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const DEFAULT_HOOK_TIMEOUT_MS: u64 = 5000;
/// How long a service that failed stays down for the controller's restart
/// order (S3's restart control unit decides the phase) before the
/// middleware restarts it itself, as it would with no controller at all.
pub const ORDER_WAIT: Duration = Duration::from_secs(10);
/// The exit status by which a service says its data is damaged (BSD's
/// `EX_DATAERR`): a restart needs its data restored (PH3.0 and up).
pub const DATA_DAMAGED_EXIT: i32 = 65;
/// Failures kept for the control channel until it takes them.
const MAX_PENDING_FAILURES: usize = 16;

/// Hook commands. In every word `{vip}`, `{peer}` (the pair peer's
/// address, empty until known), `{address}` (this VM's own) and
/// `{sync_socket}` are replaced; the same values are in the environment as
/// `DUPLEX_VIP`, `DUPLEX_PEER`, `DUPLEX_ADDRESS`, `DUPLEX_SYNC_SOCKET`,
/// beside the user data's variables. `start` runs the service (it must
/// stay in the foreground, in a process group of its own, which a restart
/// ends whole; exit status [`DATA_DAMAGED_EXIT`] says its data is
/// damaged); the others are short commands, each optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: String,
    pub start: Vec<String>,
    /// Asks the service to stop (its own way); without it, or if it fails,
    /// the process gets SIGTERM. Either way SIGKILL after `stop_timeout_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    #[serde(default)]
    pub stop_timeout_ms: Option<u64>,
    #[serde(default)]
    pub become_active: Option<Vec<String>>,
    #[serde(default)]
    pub become_standby: Option<Vec<String>>,
    /// Exit 0 = healthy. Run on the ACT only (the SBY does not serve).
    #[serde(default)]
    pub health: Option<Vec<String>>,
    /// Application re-initialization (PH1.0), run while the service is stopped.
    #[serde(default)]
    pub reset: Option<Vec<String>>,
    /// How long a short hook may run (default 5000 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_timeout_ms: Option<u64>,
}

/// The sample SIP service, as the image ships it.
pub const DEFAULT_CONFIG: &str = r#"{
  "name": "sip",
  "start": ["/bin/duplex", "sip", "--listen", "{vip}:5060", "--sync-socket", "{sync_socket}"],
  "stop_timeout_ms": 2000,
  "health": ["/bin/duplex", "sip-health", "{vip}:5060"]
}
"#;

impl ServiceConfig {
    /// The service of this VM and the root it runs in: the root disk's
    /// (chrooted) if it has one, else the image's, else the sample SIP
    /// service.
    pub fn load() -> Result<(ServiceConfig, Option<PathBuf>), String> {
        let on_disk = Path::new(SYSROOT).join(CONFIG_PATH.trim_start_matches('/'));
        let (path, root) = if on_disk.is_file() {
            (on_disk, Some(PathBuf::from(SYSROOT)))
        } else {
            (PathBuf::from(CONFIG_PATH), None)
        };
        let text = std::fs::read_to_string(&path).unwrap_or_else(|_| DEFAULT_CONFIG.to_string());
        let config = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok((config, root))
    }

    pub fn hook_timeout(&self) -> Duration {
        Duration::from_millis(self.hook_timeout_ms.unwrap_or(DEFAULT_HOOK_TIMEOUT_MS))
    }
}

/// What a hook's words and environment are filled from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vars {
    pub vip: Ipv4Addr,
    pub peer: Option<Ipv4Addr>,
}

/// How hooks are started: the root they run in and the environment of the
/// VM (its own address, the user data's variables).
#[derive(Debug, Clone, Default)]
pub struct Launcher {
    pub root: Option<PathBuf>,
    pub address: Option<Ipv4Addr>,
    pub env: Vec<(String, String)>,
}

impl Launcher {
    fn fill(&self, cmd: &[String], vars: Vars) -> Vec<String> {
        let peer = vars.peer.map(|p| p.to_string()).unwrap_or_default();
        let address = self.address.map(|a| a.to_string()).unwrap_or_default();
        cmd.iter()
            .map(|a| {
                a.replace("{vip}", &vars.vip.to_string())
                    .replace("{peer}", &peer)
                    .replace("{address}", &address)
                    .replace("{sync_socket}", SYNC_SOCKET)
            })
            .collect()
    }

    /// The command for a hook, chrooted when the service has a root.
    pub fn command(&self, cmd: &[String], vars: Vars) -> Result<Command, String> {
        let argv = self.fill(cmd, vars);
        let (prog, args) = argv.split_first().ok_or("empty hook command")?;
        let mut c = match &self.root {
            Some(root) => {
                let mut c = Command::new("/bin/chroot");
                c.arg(root).arg(prog);
                c
            }
            None => Command::new(prog),
        };
        c.args(args).stdin(Stdio::null());
        if self.root.is_some() {
            c.env("PATH", HOOK_PATH);
        }
        c.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c.env("DUPLEX_VIP", vars.vip.to_string())
            .env(
                "DUPLEX_PEER",
                vars.peer.map(|p| p.to_string()).unwrap_or_default(),
            )
            .env(
                "DUPLEX_ADDRESS",
                self.address.map(|a| a.to_string()).unwrap_or_default(),
            )
            .env("DUPLEX_SYNC_SOCKET", SYNC_SOCKET);
        Ok(c)
    }

    /// Runs a short hook to completion (bounded): whether it exited 0, and
    /// the start of what it printed (stdout and stderr).
    pub fn run_hook(
        &self,
        cmd: &[String],
        vars: Vars,
        timeout: Duration,
    ) -> Result<HookRun, String> {
        self.run(cmd, vars, timeout, true)
    }

    /// [`Launcher::run_hook`] for a hook whose output nobody reads (the
    /// health check, every tick): no pipes, no reader threads.
    pub fn run_quiet(&self, cmd: &[String], vars: Vars, timeout: Duration) -> Result<bool, String> {
        self.run(cmd, vars, timeout, false).map(|r| r.ok)
    }

    fn run(
        &self,
        cmd: &[String],
        vars: Vars,
        timeout: Duration,
        keep_output: bool,
    ) -> Result<HookRun, String> {
        let mut c = self.command(cmd, vars)?;
        if keep_output {
            c.stdout(Stdio::piped()).stderr(Stdio::piped());
        } else {
            c.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let prog = cmd.first().cloned().unwrap_or_default();
        let mut child = c.spawn().map_err(|e| format!("{prog}: {e}"))?;
        let readers = [
            child.stdout.take().map(|o| read_bounded(Box::new(o))),
            child.stderr.take().map(|e| read_bounded(Box::new(e))),
        ];
        let deadline = Instant::now() + timeout;
        let ok = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s.success(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "{prog} did not finish within {} ms",
                        timeout.as_millis()
                    ));
                }
                Err(e) => return Err(e.to_string()),
            }
        };
        let mut output = String::new();
        for r in readers.into_iter().flatten() {
            output.push_str(&r.join().unwrap_or_default());
        }
        Ok(HookRun { ok, output })
    }
}

/// What a short hook did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRun {
    pub ok: bool,
    /// The first [`HOOK_OUTPUT_LIMIT`] bytes it printed.
    pub output: String,
}

/// How much of a hook's output is kept (the rest is read and dropped).
pub const HOOK_OUTPUT_LIMIT: usize = 4096;

/// Reads a pipe to its end in a thread, keeping the first
/// [`HOOK_OUTPUT_LIMIT`] bytes, so a chatty hook never blocks on a full pipe.
fn read_bounded(mut from: Box<dyn std::io::Read + Send>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            let room = HOOK_OUTPUT_LIMIT.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
        String::from_utf8_lossy(&kept).into_owned()
    })
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct ServiceStatus {
    pub name: String,
    pub running: bool,
    pub pid: Option<u32>,
    pub starts: u64,
    pub last_exit: Option<String>,
    pub healthy: Option<bool>,
    /// Down after a failure, waiting for the controller's restart order.
    pub held: bool,
}

/// Keeps the service process running while `wanted`.
pub struct Supervisor {
    pub config: ServiceConfig,
    pub launcher: Launcher,
    inner: Mutex<Inner>,
    /// Where the running service's process group is noted, so that a
    /// middleware started after a crash of its predecessor ends the
    /// service that one left behind (it runs in its own group and
    /// outlives it, holding its ports).
    group_file: Option<PathBuf>,
}

struct Inner {
    child: Option<Child>,
    wanted: Option<Vars>,
    status: ServiceStatus,
    /// Since when the failed service waits for a restart order.
    held: Option<Instant>,
    failures: std::collections::VecDeque<ServiceFailed>,
    /// A drill declared its data damaged: its end is reported as a
    /// service exiting with [`DATA_DAMAGED_EXIT`].
    damaged: bool,
}

/// What a health check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Passed,
    Failed,
    /// The hook did not finish in time: the service hangs.
    TimedOut,
}

/// Ends the service process and what it left in its group, and reaps it.
fn end_group(c: &mut Child) {
    signal_group(c.id(), libc::SIGKILL);
    let _ = c.kill();
    let _ = c.wait();
}

/// Whether process `pid` is stopped (SIGSTOP: state `T` in
/// `/proc/PID/stat`, after the command name in parentheses).
fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| {
            t.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
        })
        .is_some_and(|state| state == 'T')
}

/// Signals the process group led by `pid` (the service's, see
/// `process_group(0)` at its start).
fn signal_group(pid: u32, signal: i32) {
    // SAFETY: kill(2) on the group of our own child; no memory involved.
    unsafe { libc::kill(-(pid as i32), signal) };
}

impl Supervisor {
    pub fn new(config: ServiceConfig, launcher: Launcher) -> Self {
        let status = ServiceStatus {
            name: config.name.clone(),
            ..Default::default()
        };
        Supervisor {
            config,
            launcher,
            inner: Mutex::new(Inner {
                child: None,
                wanted: None,
                status,
                held: None,
                failures: Default::default(),
                damaged: false,
            }),
            group_file: None,
        }
    }

    /// Notes the service's process group in `path` (see `group_file`).
    pub fn with_group_file(mut self, path: PathBuf) -> Self {
        self.group_file = Some(path);
        self
    }

    /// Ends the service a crashed predecessor left running, if any.
    pub fn end_left_over(&self) {
        let Some(path) = &self.group_file else { return };
        let left = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok());
        if let Some(pid) = left {
            eprintln!("duplex guest: ending the service (group {pid}) a previous middleware left");
            signal_group(pid, libc::SIGKILL);
        }
        let _ = std::fs::remove_file(path);
    }

    fn note_group(&self, pid: Option<u32>) {
        let Some(path) = &self.group_file else { return };
        let _ = match pid {
            Some(pid) => std::fs::write(path, pid.to_string()),
            None => std::fs::remove_file(path),
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> ServiceStatus {
        let g = self.lock();
        ServiceStatus {
            held: g.held.is_some(),
            ..g.status.clone()
        }
    }

    pub fn set_health(&self, h: Option<bool>) {
        self.lock().status.healthy = h;
    }

    /// Wants the service running for this service address and peer.
    pub fn want(&self, vars: Vars) {
        self.lock().wanted = Some(vars);
        self.tick();
    }

    /// Runs one of the service's short hooks with the wanted values.
    pub fn hook(&self, cmd: &[String], vars: Vars) -> Result<HookRun, String> {
        self.launcher
            .run_hook(cmd, vars, self.config.hook_timeout())
    }

    /// Runs the health hook (its output is dropped).
    pub fn health(&self, cmd: &[String], vars: Vars) -> Health {
        match self
            .launcher
            .run_quiet(cmd, vars, self.config.hook_timeout())
        {
            Ok(true) => Health::Passed,
            Ok(false) => Health::Failed,
            Err(_) => Health::TimedOut,
        }
    }

    /// Runs the health hook: whether it passed.
    pub fn healthy(&self, cmd: &[String], vars: Vars) -> bool {
        self.health(cmd, vars) == Health::Passed
    }

    /// Queues a failure for the control channel (the oldest are dropped
    /// past [`MAX_PENDING_FAILURES`]).
    pub fn report(&self, failure: ServiceFailed) {
        let mut g = self.lock();
        if g.failures.len() == MAX_PENDING_FAILURES {
            g.failures.pop_front();
        }
        g.failures.push_back(failure);
    }

    /// The failures found since the last call.
    pub fn take_failures(&self) -> Vec<ServiceFailed> {
        self.lock().failures.drain(..).collect()
    }

    /// Whether the service is down after a failure, waiting for a restart
    /// order.
    pub fn held(&self) -> bool {
        self.lock().held.is_some()
    }

    /// Reaps the service if it exited (a failure: it stays down for the
    /// restart order, up to [`ORDER_WAIT`]); starts it if wanted and not
    /// running.
    pub fn tick(&self) {
        let mut g = self.lock();
        if let Some(c) = g.child.as_mut() {
            let pid = c.id();
            let failure = match c.try_wait() {
                Ok(None) => return,
                Ok(Some(s)) => {
                    let text = s.to_string();
                    eprintln!("duplex guest: service {} {text}", g.status.name);
                    g.status.last_exit = Some(text.clone());
                    let damaged = std::mem::take(&mut g.damaged);
                    let cause = match s.code() {
                        Some(DATA_DAMAGED_EXIT) => Cause::DataDamaged,
                        _ if damaged => Cause::DataDamaged,
                        _ => Cause::ProcessExited,
                    };
                    let why = if damaged {
                        " (its data declared damaged by a drill)"
                    } else {
                        ""
                    };
                    ServiceFailed {
                        cause,
                        detail: format!("service {} {text}{why}", g.status.name),
                    }
                }
                Err(e) => {
                    g.status.last_exit = Some(e.to_string());
                    ServiceFailed {
                        cause: Cause::ProcessExited,
                        detail: format!("service {}: {e}", g.status.name),
                    }
                }
            };
            // What it left behind in its group goes with it.
            signal_group(pid, libc::SIGKILL);
            g.child = None;
            g.status.running = false;
            g.status.pid = None;
            self.note_group(None);
            g.held = Some(Instant::now());
            drop(g);
            self.report(failure);
            g = self.lock();
        }
        match g.held {
            Some(at) if at.elapsed() < ORDER_WAIT => return,
            Some(_) => {
                eprintln!(
                    "duplex guest: no restart ordered within {} s; restarting the service",
                    ORDER_WAIT.as_secs()
                );
                g.held = None;
            }
            None => {}
        }
        let Some(vars) = g.wanted else { return };
        let prog = self.config.start.first().cloned().unwrap_or_default();
        let spawned = self
            .launcher
            .command(&self.config.start, vars)
            .and_then(|mut c| c.process_group(0).spawn().map_err(|e| e.to_string()));
        match spawned {
            Ok(c) => {
                g.status.pid = Some(c.id());
                g.status.running = true;
                g.status.starts += 1;
                self.note_group(Some(c.id()));
                g.child = Some(c);
            }
            Err(e) => g.status.last_exit = Some(format!("cannot start {prog}: {e}")),
        }
    }

    /// Kills the process and its group at once (PH0.5) and ends any wait
    /// for an order; the next tick starts it again.
    pub fn kill(&self) {
        let mut g = self.lock();
        if let Some(c) = g.child.as_mut() {
            end_group(c);
        }
        g.child = None;
        g.held = None;
        g.status.running = false;
        g.status.pid = None;
        self.note_group(None);
        g.status.last_exit = Some("killed (process reset)".into());
    }

    /// Sends `signal` to the service's process group (fault injection).
    pub fn signal(&self, signal: i32) -> Result<u32, String> {
        let g = self.lock();
        let pid = g.status.pid.ok_or("the service is not running")?;
        signal_group(pid, signal);
        Ok(pid)
    }

    /// A drill: the service's data is declared damaged; the service is
    /// killed and its end reported as [`Cause::DataDamaged`].
    pub fn declare_damaged(&self) -> Result<u32, String> {
        let mut g = self.lock();
        let pid = g.status.pid.ok_or("the service is not running")?;
        g.damaged = true;
        signal_group(pid, libc::SIGKILL);
        Ok(pid)
    }

    /// Stops the process gracefully (the stop hook or SIGTERM, then
    /// SIGKILL) and keeps it stopped until `want` is called again.
    pub fn stop(&self) {
        let timeout = Duration::from_millis(self.config.stop_timeout_ms.unwrap_or(2000));
        let mut g = self.lock();
        let vars = g.wanted.take();
        g.held = None;
        if let Some(mut c) = g.child.take() {
            // A stopped (hung) service is ended without running again:
            // let go, it would act on the requests queued while it hung
            // after this VM handed the service over (and its late writes
            // would undo the new ACT's state).
            if !is_stopped(c.id()) {
                self.ask_to_stop(&mut c, vars, timeout);
            }
            end_group(&mut c);
        }
        g.status.running = false;
        g.status.pid = None;
        self.note_group(None);
    }

    /// The stop hook, or SIGTERM if there is none or it failed; then
    /// waits up to `timeout` for the process to end.
    fn ask_to_stop(&self, c: &mut Child, vars: Option<Vars>, timeout: Duration) {
        let asked = match (&self.config.stop, vars) {
            (Some(cmd), Some(vars)) => self
                .launcher
                .run_hook(cmd, vars, timeout)
                .is_ok_and(|r| r.ok),
            _ => false,
        };
        if !asked {
            signal_group(c.id(), libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the service runs (after a restart), up to `within`.
    pub fn wait_running(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            self.tick();
            if self.lock().status.running {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service named `name` started by `start`, with no hooks.
    fn config(name: &str, start: Vec<String>) -> ServiceConfig {
        ServiceConfig {
            name: name.into(),
            start,
            stop: None,
            stop_timeout_ms: None,
            become_active: None,
            become_standby: None,
            health: None,
            reset: None,
            hook_timeout_ms: None,
        }
    }

    fn vars() -> Vars {
        Vars {
            vip: Ipv4Addr::new(10, 0, 0, 5),
            peer: Some(Ipv4Addr::new(10, 0, 0, 6)),
        }
    }

    #[test]
    fn hooks_get_the_environment() {
        let l = Launcher {
            root: None,
            address: Some(Ipv4Addr::new(10, 0, 0, 7)),
            env: vec![("UPSTREAM".into(), "10.9.9.9".into())],
        };
        let script = "test \"$UPSTREAM $DUPLEX_VIP $DUPLEX_PEER $DUPLEX_ADDRESS\" = \"10.9.9.9 10.0.0.5 10.0.0.6 10.0.0.7\"";
        let cmd = ["/bin/sh".to_string(), "-c".into(), script.into()];
        assert!(l.run_hook(&cmd, vars(), Duration::from_secs(5)).unwrap().ok);
        let cmd = [
            "/bin/sh".to_string(),
            "-c".into(),
            "test \"$UPSTREAM\" = other".into(),
        ];
        assert!(!l.run_hook(&cmd, vars(), Duration::from_secs(5)).unwrap().ok);
        // Output is kept, bounded; a hook that prints a lot still ends.
        let cmd = [
            "/bin/sh".to_string(),
            "-c".into(),
            "echo hi; head -c 200000 /dev/zero; echo err >&2".into(),
        ];
        let run = l.run_hook(&cmd, vars(), Duration::from_secs(5)).unwrap();
        assert!(run.ok && run.output.starts_with("hi\n") && run.output.ends_with("err\n"));
        assert_eq!(run.output.len(), HOOK_OUTPUT_LIMIT + 4);
    }

    #[test]
    fn the_stop_hook_stops_the_service_its_own_way() {
        let dir = std::env::temp_dir().join(format!("duplex-stop-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let marker = dir.join("stopped");
        let c = ServiceConfig {
            name: "sleeper".into(),
            start: vec!["sleep".into(), "37.25".into()],
            // Records that it ran, then ends the service its own way.
            stop: Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                format!(
                    "touch {} && pkill -x -f 'sleep 37.25'; true",
                    marker.display()
                ),
            ]),
            stop_timeout_ms: Some(3000),
            become_active: None,
            become_standby: None,
            health: None,
            reset: None,
            hook_timeout_ms: None,
        };
        let s = Supervisor::new(c, Launcher::default());
        s.want(vars());
        assert!(s.status().running);
        s.stop();
        assert!(marker.exists(), "the stop hook ran");
        assert!(!s.status().running);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_service_left_by_a_crashed_middleware_is_ended_by_the_next() {
        let file = std::env::temp_dir().join(format!("duplex-group-{}", std::process::id()));
        let c = ServiceConfig {
            stop: None,
            stop_timeout_ms: Some(500),
            hook_timeout_ms: None,
            ..config(
                "sleeper",
                vec!["/bin/sh".into(), "-c".into(), "sleep 30 & wait".into()],
            )
        };
        let first = Supervisor::new(c.clone(), Launcher::default()).with_group_file(file.clone());
        first.want(vars());
        assert!(first.wait_running(Duration::from_secs(5)));
        let pid = first.status().pid.unwrap() as i32;
        // The first middleware "crashes": nothing stops its service.
        std::mem::forget(first);
        let next = Supervisor::new(c, Launcher::default()).with_group_file(file.clone());
        next.end_left_over();
        let deadline = Instant::now() + Duration::from_secs(5);
        // SAFETY: kill(2) with signal 0 only probes the group.
        while unsafe { libc::kill(-pid, 0) } == 0 {
            // Reap our own child (the test process is its parent).
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
            assert!(
                Instant::now() < deadline,
                "the left-over group {pid} still runs"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!file.exists());
    }

    #[test]
    fn a_failed_service_is_reported_and_waits_for_its_order() {
        let c = ServiceConfig {
            stop: None,
            stop_timeout_ms: Some(500),
            hook_timeout_ms: None,
            ..config(
                "damaged",
                vec!["/bin/sh".into(), "-c".into(), "sleep 0.2; exit 65".into()],
            )
        };
        let s = Supervisor::new(c, Launcher::default());
        s.want(vars());
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.status().running {
            assert!(Instant::now() < deadline, "the service never ended");
            std::thread::sleep(Duration::from_millis(50));
            s.tick();
        }
        let failed = s.take_failures();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0].cause, Cause::DataDamaged);
        // It stays down: the restart is the controller's to order.
        s.tick();
        let st = s.status();
        assert!(st.held && !st.running && st.starts == 1, "{st:?}");
        assert!(s.take_failures().is_empty());
        // The order (PH0.5) starts it again at once.
        s.kill();
        assert!(s.wait_running(Duration::from_secs(2)));
        assert_eq!(s.status().starts, 2);
        s.stop();
    }

    #[test]
    fn a_hung_health_check_is_told_from_a_failed_one() {
        let c = ServiceConfig {
            stop: None,
            stop_timeout_ms: None,
            hook_timeout_ms: Some(200),
            ..config("x", vec!["true".into()])
        };
        let s = Supervisor::new(c, Launcher::default());
        assert_eq!(s.health(&["true".into()], vars()), Health::Passed);
        assert_eq!(s.health(&["false".into()], vars()), Health::Failed);
        let hang = ["sleep".to_string(), "5".into()];
        assert_eq!(s.health(&hang, vars()), Health::TimedOut);
    }

    #[test]
    fn a_hung_service_is_ended_without_running_again() {
        let mark = std::env::temp_dir().join(format!("duplex-hung-{}", std::process::id()));
        let _ = std::fs::remove_file(&mark);
        let script = format!(
            "trap 'touch {m}; exit 0' TERM; while :; do sleep 0.05; done",
            m = mark.display()
        );
        let c = ServiceConfig {
            stop: Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("touch {}", mark.display()),
            ]),
            stop_timeout_ms: Some(1000),
            ..config("hung", vec!["/bin/sh".into(), "-c".into(), script])
        };
        let s = Supervisor::new(c, Launcher::default());
        s.want(vars());
        assert!(s.wait_running(Duration::from_secs(5)));
        // (Sent again until seen: the stop of a just-started shell can be
        // missed when the crate's tests run side by side.)
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pid = s.signal(libc::SIGSTOP).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            if is_stopped(pid) {
                break;
            }
            assert!(Instant::now() < deadline, "{pid} never stopped");
        }
        s.stop();
        assert!(!s.status().running);
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            !mark.exists(),
            "the hung service ran again (its TERM trap or the stop hook ran)"
        );
    }

    #[test]
    fn default_config_parses_and_fills() {
        let c: ServiceConfig = serde_json::from_str(DEFAULT_CONFIG).unwrap();
        let argv = Launcher::default().fill(&c.start, vars());
        assert!(argv.contains(&"10.0.0.5:5060".to_string()));
        assert!(argv.contains(&SYNC_SOCKET.to_string()));
        let l = Launcher {
            address: Some(Ipv4Addr::new(10, 0, 0, 7)),
            ..Launcher::default()
        };
        let words = ["{peer}".to_string(), "a={address}".into(), "{vip}".into()];
        assert_eq!(
            l.fill(&words, vars()),
            ["10.0.0.6", "a=10.0.0.7", "10.0.0.5"]
        );
        assert!(
            serde_json::from_str::<ServiceConfig>(r#"{"name":"x","start":["a"],"bogus":1}"#)
                .is_err()
        );
    }

    #[test]
    fn supervises_restarts_and_stops_a_real_process() {
        let c = ServiceConfig {
            stop: None,
            stop_timeout_ms: Some(500),
            hook_timeout_ms: None,
            ..config("sleeper", vec!["sleep".into(), "30".into()])
        };
        let s = Supervisor::new(c, Launcher::default());
        s.want(vars());
        let first = s.status().pid.unwrap();
        s.kill();
        assert!(s.wait_running(Duration::from_secs(2)));
        let st = s.status();
        assert_ne!(st.pid.unwrap(), first);
        assert_eq!(st.starts, 2);
        s.stop();
        s.tick();
        assert!(!s.status().running);
        assert!(s.hook(&["true".into()], vars()).unwrap().ok);
        assert!(!s.hook(&["false".into()], vars()).unwrap().ok);
        assert!(s.healthy(&["true".into()], vars()));
        assert!(!s.healthy(&["false".into()], vars()));
    }
}
