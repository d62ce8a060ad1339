//! One running QEMU process and its QMP connection.

use crate::runas::RunAs;
use crate::{Launch, QemuError, Qmp};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

pub struct QemuProcess {
    child: Child,
    pub pid: u32,
    pub qmp: std::sync::Arc<Qmp>,
    pub started: Instant,
    pub log: PathBuf,
}

/// How long QEMU may take to open its QMP socket.
const QMP_TIMEOUT: Duration = Duration::from_secs(10);

impl QemuProcess {
    /// Starts QEMU with `launch`'s arguments; its stdout/stderr go to `log`.
    /// As `user` if given (see [`crate::runas`]), else as this process.
    pub async fn spawn(
        bin: &Path,
        launch: &Launch,
        log: &Path,
        user: Option<&RunAs>,
    ) -> Result<Self, QemuError> {
        let file_err = |e| QemuError::File {
            path: log.to_path_buf(),
            source: e,
        };
        let out = std::fs::File::create(log).map_err(file_err)?;
        let err = out.try_clone().map_err(file_err)?;
        let _ = std::fs::remove_file(&launch.qmp_socket);
        let _ = std::fs::remove_file(&launch.ctl_socket);
        let started = Instant::now();
        let mut cmd = Command::new(bin);
        let user = user.cloned();
        // SAFETY: the closure only makes async-signal-safe system calls
        // (setgroups, setgid, setuid, prctl) and allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(u) = &user {
                    u.become_user()?;
                }
                // After the user change, which would clear it.
                die_with_parent()
            });
        }
        let mut child = cmd
            .args(launch.args())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| QemuError::not_found_or_spawn(bin, e))?;
        let pid = child.id().unwrap_or(0);
        tracing::info!(vm = %launch.name, pid, "qemu started");
        let qmp = tokio::select! {
            r = Qmp::connect(&launch.qmp_socket, QMP_TIMEOUT) => r,
            status = child.wait() => {
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                return Err(QemuError::EarlyExit { status, log_tail: tail(log, 20) });
            }
        };
        let qmp = match qmp {
            Ok(q) => q,
            Err(e) => {
                let _ = child.kill().await;
                return Err(match e {
                    QemuError::QmpTimeout { .. } | QemuError::Disconnected => {
                        QemuError::EarlyExit {
                            status: e.to_string(),
                            log_tail: tail(log, 20),
                        }
                    }
                    other => other,
                });
            }
        };
        Ok(QemuProcess {
            child,
            pid,
            qmp: std::sync::Arc::new(qmp),
            started,
            log: log.to_path_buf(),
        })
    }

    /// Returns the exit status if QEMU has exited.
    pub fn try_exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(s)) => Some(s.to_string()),
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    /// Asks QEMU to quit, and kills it if it does not within a second.
    pub async fn stop(mut self) {
        let _ =
            tokio::time::timeout(Duration::from_millis(500), self.qmp.execute("quit", None)).await;
        if tokio::time::timeout(Duration::from_secs(1), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// QEMU dies with the agent that started it (`PR_SET_PDEATHSIG`): a VM
/// whose agent is gone can no longer be fenced, moved or stopped by
/// anyone, so it must not outlive it (the controller counts on an agent
/// that stopped reporting to have stopped its VMs, or fenced them, within
/// its self-fence lease). The agent never re-adopts a running QEMU anyway.
fn die_with_parent() -> std::io::Result<()> {
    // SAFETY: prctl with these arguments only sets a flag of this process.
    let r = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    if r == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Last `n` lines of a file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
