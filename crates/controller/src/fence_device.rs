//! Fence devices: how the controller makes sure a host it found gone can no
//! longer serve, before it promotes anyone in its place. The one built in
//! runs a command (`--fence-command`): an IPMI or Redfish power-off in a
//! real deployment, the lab's power switch (`duplex lab fault power-off`)
//! in the lab. Without a device, the controller waits out the agent's
//! self-fence lease instead (`duplex_core::model::liveness`).

use duplex_core::model::Host;
use std::time::Duration;

/// How long a fence command may run before it counts as failed.
pub const FENCE_TIMEOUT: Duration = Duration::from_secs(30);
/// Output of a failed command kept for the event.
const OUTPUT_LIMIT: usize = 400;

#[async_trait::async_trait]
pub trait FenceDevice: Send + Sync {
    /// Fences `host`; `Ok` only once the host is known off (the device
    /// confirmed). The message says how.
    async fn fence(&self, host: &Host) -> Result<String, String>;
}

/// Runs `argv` with `{host}` and `{url}` replaced by the host's name and
/// agent URL (also in `DUPLEX_FENCE_HOST` and `DUPLEX_FENCE_URL`); exit
/// status 0 confirms the fence.
#[derive(Debug, Clone)]
pub struct CommandDevice {
    pub argv: Vec<String>,
}

impl CommandDevice {
    /// From the words of `--fence-command`; `None` if there are none.
    pub fn parse(line: &str) -> Option<CommandDevice> {
        let argv: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        (!argv.is_empty()).then_some(CommandDevice { argv })
    }

    fn args_for(&self, host: &Host) -> Vec<String> {
        self.argv
            .iter()
            .map(|a| a.replace("{host}", &host.name).replace("{url}", &host.url))
            .collect()
    }
}

fn clip(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let s = s.trim();
    match s.char_indices().nth(OUTPUT_LIMIT) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[async_trait::async_trait]
impl FenceDevice for CommandDevice {
    async fn fence(&self, host: &Host) -> Result<String, String> {
        let args = self.args_for(host);
        let (program, rest) = args.split_first().ok_or("empty fence command")?;
        let run = tokio::process::Command::new(program)
            .args(rest)
            .env("DUPLEX_FENCE_HOST", &host.name)
            .env("DUPLEX_FENCE_URL", &host.url)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let shown = args.join(" ");
        let out = match tokio::time::timeout(FENCE_TIMEOUT, run).await {
            Err(_) => {
                return Err(format!(
                    "`{shown}` did not finish within {} s",
                    FENCE_TIMEOUT.as_secs()
                ))
            }
            Ok(Err(e)) => return Err(format!("cannot run `{shown}`: {e}")),
            Ok(Ok(o)) => o,
        };
        if out.status.success() {
            Ok(format!("`{shown}` confirmed"))
        } else {
            Err(format!(
                "`{shown}` failed ({}): {}",
                out.status,
                clip(&[out.stderr, out.stdout].concat())
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duplex_core::agent_api::HostCapacity;
    use duplex_core::model::HostState;

    fn host() -> Host {
        Host {
            v: 1,
            name: "h2".into(),
            url: "http://10.0.0.2:7070".into(),
            capacity: HostCapacity {
                vcpus: 1,
                memory_mib: 1,
            },
            state: HostState::Failed,
            site: "default".into(),
            rack: None,
            accel: None,
            registered_ms: 0,
            before_failure: None,
            fence: None,
        }
    }

    #[tokio::test]
    async fn a_command_confirms_by_its_exit_status() {
        let ok = CommandDevice::parse("test {host} = h2").unwrap();
        assert_eq!(ok.args_for(&host()), ["test", "h2", "=", "h2"]);
        assert!(ok.fence(&host()).await.is_ok());
        let env = CommandDevice {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "test \"$DUPLEX_FENCE_HOST\" = h2".into(),
            ],
        };
        assert!(env.fence(&host()).await.is_ok());
        let e = CommandDevice {
            argv: vec!["sh".into(), "-c".into(), "echo nope >&2; exit 3".into()],
        }
        .fence(&host())
        .await
        .unwrap_err();
        assert!(e.contains("nope") && e.contains("exit status: 3"), "{e}");
        let missing = CommandDevice::parse("/nonexistent/fence {host}").unwrap();
        assert!(missing
            .fence(&host())
            .await
            .unwrap_err()
            .contains("cannot run"));
        assert!(CommandDevice::parse("  ").is_none());
    }
}
