//! The supervised service: its hooks (from `/etc/duplex/service.json` in
//! the image, or in the VM's root disk) and the process the middleware
//! keeps running. Nothing here knows what the service does.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
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

/// Hook commands. In every word `{vip}`, `{peer}` (the pair peer's
/// address, empty until known), `{address}` (this VM's own) and
/// `{sync_socket}` are replaced; the same values are in the environment as
/// `DUPLEX_VIP`, `DUPLEX_PEER`, `DUPLEX_ADDRESS`, `DUPLEX_SYNC_SOCKET`,
/// beside the user data's variables. `start` runs the service (it must
/// stay in the foreground); the others are short commands, each optional.
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
}

/// Keeps the service process running while `wanted`.
pub struct Supervisor {
    pub config: ServiceConfig,
    pub launcher: Launcher,
    inner: Mutex<Inner>,
}

struct Inner {
    child: Option<Child>,
    wanted: Option<Vars>,
    status: ServiceStatus,
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
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> ServiceStatus {
        self.lock().status.clone()
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

    /// Runs the health hook: whether it passed (its output is dropped).
    pub fn healthy(&self, cmd: &[String], vars: Vars) -> bool {
        self.launcher
            .run_quiet(cmd, vars, self.config.hook_timeout())
            .unwrap_or(false)
    }

    /// Starts the service if wanted and not running; reaps it if it exited.
    pub fn tick(&self) {
        let mut g = self.lock();
        if let Some(c) = g.child.as_mut() {
            match c.try_wait() {
                Ok(None) => return,
                Ok(Some(s)) => {
                    let s = s.to_string();
                    eprintln!("duplex guest: service {} exited: {s}", g.status.name);
                    g.status.last_exit = Some(s);
                }
                Err(e) => g.status.last_exit = Some(e.to_string()),
            }
            g.child = None;
            g.status.running = false;
            g.status.pid = None;
        }
        let Some(vars) = g.wanted else { return };
        let prog = self.config.start.first().cloned().unwrap_or_default();
        let spawned = self
            .launcher
            .command(&self.config.start, vars)
            .and_then(|mut c| c.spawn().map_err(|e| e.to_string()));
        match spawned {
            Ok(c) => {
                g.status.pid = Some(c.id());
                g.status.running = true;
                g.status.starts += 1;
                g.child = Some(c);
            }
            Err(e) => g.status.last_exit = Some(format!("cannot start {prog}: {e}")),
        }
    }

    /// Kills the process at once (PH0.5); the next tick restarts it.
    pub fn kill(&self) {
        let mut g = self.lock();
        if let Some(c) = g.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        g.child = None;
        g.status.running = false;
        g.status.pid = None;
        g.status.last_exit = Some("killed (process reset)".into());
    }

    /// Stops the process gracefully (the stop hook or SIGTERM, then
    /// SIGKILL) and keeps it stopped until `want` is called again.
    pub fn stop(&self) {
        let timeout = Duration::from_millis(self.config.stop_timeout_ms.unwrap_or(2000));
        let mut g = self.lock();
        let vars = g.wanted.take();
        if let Some(mut c) = g.child.take() {
            let asked = match (&self.config.stop, vars) {
                (Some(cmd), Some(vars)) => self
                    .launcher
                    .run_hook(cmd, vars, timeout)
                    .is_ok_and(|r| r.ok),
                _ => false,
            };
            if !asked {
                // SAFETY: kill(2) on our own child.
                unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            }
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        g.status.running = false;
        g.status.pid = None;
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
            name: "sleeper".into(),
            start: vec!["sleep".into(), "30".into()],
            stop: None,
            stop_timeout_ms: Some(500),
            become_active: None,
            become_standby: None,
            health: None,
            reset: None,
            hook_timeout_ms: None,
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
