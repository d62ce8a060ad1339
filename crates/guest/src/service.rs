//! The supervised service: its hooks (from `/etc/duplex/service.json` in
//! the image) and the process the middleware keeps running. Nothing here
//! knows what the service does.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const CONFIG_PATH: &str = "/etc/duplex/service.json";
pub const SYNC_SOCKET: &str = "/run/duplex/sync.sock";

/// Hook commands; `{vip}` and `{sync_socket}` are replaced before running.
/// `start` runs the service (it must stay in the foreground); the others are
/// short commands, each optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: String,
    pub start: Vec<String>,
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
    pub fn load() -> Result<ServiceConfig, String> {
        let text =
            std::fs::read_to_string(CONFIG_PATH).unwrap_or_else(|_| DEFAULT_CONFIG.to_string());
        serde_json::from_str(&text).map_err(|e| format!("{CONFIG_PATH}: {e}"))
    }
}

fn fill(cmd: &[String], vip: Ipv4Addr) -> Vec<String> {
    cmd.iter()
        .map(|a| {
            a.replace("{vip}", &vip.to_string())
                .replace("{sync_socket}", SYNC_SOCKET)
        })
        .collect()
}

/// Runs a short hook to completion (bounded); Ok(true) if it exited 0.
pub fn run_hook(cmd: &[String], vip: Ipv4Addr, timeout: Duration) -> Result<bool, String> {
    let argv = fill(cmd, vip);
    let (prog, args) = argv.split_first().ok_or("empty hook command")?;
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("{prog}: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Ok(s.success()),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
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
    }
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
    inner: Mutex<Inner>,
}

struct Inner {
    child: Option<Child>,
    wanted: Option<Ipv4Addr>,
    status: ServiceStatus,
}

impl Supervisor {
    pub fn new(config: ServiceConfig) -> Self {
        let status = ServiceStatus {
            name: config.name.clone(),
            ..Default::default()
        };
        Supervisor {
            config,
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

    /// Wants the service running for this service address.
    pub fn want(&self, vip: Ipv4Addr) {
        self.lock().wanted = Some(vip);
        self.tick();
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
        let Some(vip) = g.wanted else { return };
        let argv = fill(&self.config.start, vip);
        let Some((prog, args)) = argv.split_first() else {
            return;
        };
        match Command::new(prog).args(args).stdin(Stdio::null()).spawn() {
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

    /// Stops the process gracefully (SIGTERM, then SIGKILL) and keeps it
    /// stopped until `want` is called again.
    pub fn stop(&self) {
        let timeout = Duration::from_millis(self.config.stop_timeout_ms.unwrap_or(2000));
        let mut g = self.lock();
        g.wanted = None;
        if let Some(mut c) = g.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
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

    #[test]
    fn default_config_parses_and_fills() {
        let c: ServiceConfig = serde_json::from_str(DEFAULT_CONFIG).unwrap();
        let argv = fill(&c.start, Ipv4Addr::new(10, 0, 0, 5));
        assert!(argv.contains(&"10.0.0.5:5060".to_string()));
        assert!(argv.contains(&SYNC_SOCKET.to_string()));
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
            stop_timeout_ms: Some(500),
            become_active: None,
            become_standby: None,
            health: None,
            reset: None,
        };
        let s = Supervisor::new(c);
        s.want(Ipv4Addr::LOCALHOST);
        let first = s.status().pid.unwrap();
        s.kill();
        assert!(s.wait_running(Duration::from_secs(2)));
        let st = s.status();
        assert_ne!(st.pid.unwrap(), first);
        assert_eq!(st.starts, 2);
        s.stop();
        s.tick();
        assert!(!s.status().running);
        assert_eq!(
            run_hook(
                &["true".into()],
                Ipv4Addr::LOCALHOST,
                Duration::from_secs(1)
            ),
            Ok(true)
        );
        assert_eq!(
            run_hook(
                &["false".into()],
                Ipv4Addr::LOCALHOST,
                Duration::from_secs(1)
            ),
            Ok(false)
        );
    }
}
