//! Starting host agents inside their namespaces, and asking them `/v1/host`.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::error::LabError;
use crate::ip::cmdline;
use crate::netns::netns_std_command;
use crate::plan::{HostPlan, BRIDGE};

/// Lines of `agent.log` shown when an agent fails to come up.
const LOG_TAIL_LINES: usize = 20;

/// Starts host `h`'s agent as a daemon in its namespace:
/// `ip netns exec <ns> <duplex_bin> agent --name h<n> --listen <ip>:7070
/// --data-dir <dir> --tls-dir <its bundle> --image-dir <image_dir>
/// --bridge br0 --allow-faults [--site a|b] <extra…>`,
/// in its own session, stdin null, stdout+stderr appended to `agent.log`.
pub(crate) fn spawn(
    lab: &str,
    h: &HostPlan,
    duplex_bin: &Path,
    image_dir: &Path,
    extra: &[String],
) -> Result<Child, LabError> {
    let log_path = h.data_dir.join("agent.log");
    let mut cmd = netns_std_command(&h.ns, duplex_bin);
    cmd.arg("agent")
        .args(["--name", &h.name, "--listen", &h.listen, "--data-dir"])
        .arg(&h.data_dir)
        .arg("--tls-dir")
        .arg(crate::pki::bundle(lab, &agent_identity(h)?))
        .arg("--image-dir")
        .arg(image_dir)
        .args(["--bridge", BRIDGE])
        // A lab is for drills: its guests take injected faults.
        .arg("--allow-faults")
        .args(h.site.iter().flat_map(|s| ["--site", s.name()]))
        .args(extra)
        .current_dir(&h.data_dir);
    spawn_daemon(cmd, &log_path).map_err(|(cmdline, source)| LabError::AgentSpawn {
        host: h.name.clone(),
        cmdline,
        source,
    })
}

fn agent_identity(h: &HostPlan) -> Result<duplex_core::identity::Identity, LabError> {
    duplex_core::identity::Identity::agent(&h.name).map_err(|e| LabError::Tls(e.to_string()))
}

/// Starts `cmd` as a daemon in its own session, stdin null, stdout and
/// stderr appended to `log_path` (after a line with the command). Err
/// carries the command line and why.
pub(crate) fn spawn_daemon(
    mut cmd: std::process::Command,
    log_path: &Path,
) -> Result<Child, (String, std::io::Error)> {
    let line = cmdline(cmd.get_program(), cmd.get_args());
    let fail = |e: std::io::Error| (line.clone(), e);
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(fail)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    writeln!(log, "=== duplex lab up, unix time {stamp}: {line}").map_err(fail)?;
    let log2 = log.try_clone().map_err(fail)?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2));
    // SAFETY: the closure only calls setsid(2), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    tracing::info!("starting {line}");
    cmd.spawn().map_err(fail)
}

/// The last lines of a log file (or a note why there are none).
pub(crate) fn log_tail(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(LOG_TAIL_LINES);
            let tail = lines[start..].join("\n");
            if tail.trim().is_empty() {
                "(empty)".to_string()
            } else {
                tail
            }
        }
        Err(e) => format!("(cannot read: {e})"),
    }
}

/// HTTPS client of lab `lab`'s operator, for its agents and controller:
/// no proxy (lab addresses are local), short timeouts.
pub(crate) fn http_client(lab: &str) -> Result<reqwest::Client, LabError> {
    crate::pki::operator_client(lab, |b| {
        b.no_proxy()
            .connect_timeout(Duration::from_millis(800))
            .timeout(Duration::from_millis(1500))
    })
}

/// Answer of `GET <url>/v1/host`.
pub(crate) struct HostAnswer {
    pub status: u16,
    /// The body as JSON, or as a JSON string if it is not JSON.
    pub body: serde_json::Value,
}

/// `GET <url>/v1/host`; `Err` carries a one-line reason.
pub(crate) async fn get_host(client: &reqwest::Client, url: &str) -> Result<HostAnswer, String> {
    let resp = client
        .get(format!("{url}/v1/host"))
        .send()
        .await
        .map_err(|e| error_chain(&e))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(|e| error_chain(&e))?;
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    Ok(HostAnswer { status, body })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
