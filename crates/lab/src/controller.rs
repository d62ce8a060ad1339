//! The lab's controller (and, with `--store etcd`, its etcd): daemons in
//! the root namespace, listening on the management address, with their
//! data under the lab's state directory.

use crate::agent::{http_client, log_tail, spawn_daemon};
use crate::error::LabError;
use crate::plan::LabPlan;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Port of the lab controller on the management address.
pub const CONTROLLER_PORT: u16 = 7080;
/// etcd of lab index i listens on 127.0.0.1:(ETCD_BASE_PORT + 2i) (+1 for peers).
pub const ETCD_BASE_PORT: u16 = 23000;
const CONTROLLER_WAIT: Duration = Duration::from_secs(60);
/// Short lease in the lab so failover shows quickly.
const LAB_LEASE_TTL_MS: u64 = 3000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabStore {
    #[default]
    Embedded,
    Etcd,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdState {
    pub pid: i32,
    pub url: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerState {
    pub pid: i32,
    /// `https://10.i.0.1:7080`.
    pub url: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub store: LabStore,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdState>,
}

fn etcd_bin() -> PathBuf {
    std::env::var_os("DUPLEX_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/etcd".into())
}

fn service_failed(plan: &LabPlan, what: &str, detail: String, log: &Path) -> LabError {
    LabError::ServiceFailed {
        lab: plan.lab().to_string(),
        what: what.into(),
        detail,
        log: log.to_path_buf(),
        log_tail: log_tail(log),
    }
}

/// How long the lab waits for its new etcd to answer.
const ETCD_WAIT: Duration = Duration::from_secs(20);
/// Where the lab keeps the password of its etcd's `root` user (0600).
const ETCD_ROOT_PASSWORD: &str = "root-password";

/// Starts the lab's etcd with TLS (the lab PKI's store certificate) and
/// client certificates required, waits until it answers, and turns its
/// authentication on so that only the controller's certificate may use it.
async fn start_etcd(plan: &LabPlan) -> Result<EtcdState, LabError> {
    use duplex_core::identity::Identity;
    let dir = plan.state_dir().join("etcd");
    std::fs::create_dir_all(&dir).map_err(|e| LabError::io("cannot create", &dir, e))?;
    let bundle = |id: &Identity| duplex_tls::Bundle::new(crate::pki::bundle(plan.lab(), id));
    let secure =
        duplex_controller::etcd_secure(&bundle(&Identity::Store), &bundle(&Identity::Controller))
            .map_err(|e| LabError::Tls(e.to_string()))?;
    let fresh = !dir.join("data").join("member").exists();
    let port = ETCD_BASE_PORT + 2 * u16::from(plan.index());
    let (client, peer) = (
        duplex_store::etcd_server::secure_client_url(port),
        format!("http://127.0.0.1:{}", port + 1),
    );
    let name = format!("{}-etcd", plan.lab());
    let log = dir.join("etcd.log");
    let mut cmd = std::process::Command::new(etcd_bin());
    cmd.args(["--name", &name])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args([
            "--initial-cluster",
            &format!("{name}={peer}"),
            "--initial-cluster-state",
            "new",
        ])
        .args(secure.server.args())
        .current_dir(&dir);
    let child =
        spawn_daemon(cmd, &log).map_err(|(cmdline, source)| LabError::Spawn { cmdline, source })?;
    let failed = |e: duplex_store::StoreError| service_failed(plan, "etcd", e.to_string(), &log);
    duplex_store::etcd_server::wait_ready(&client, ETCD_WAIT, Some(&secure.admin))
        .await
        .map_err(failed)?;
    if fresh {
        let pw = duplex_store::etcd_auth::enable(&client, &secure.admin, &secure.users)
            .await
            .map_err(failed)?;
        write_secret(&dir.join(ETCD_ROOT_PASSWORD), &pw)?;
    }
    Ok(EtcdState {
        pid: child.id() as i32,
        url: client,
        data_dir: dir,
        log,
    })
}

/// Writes `text` to a new file only its owner may read.
fn write_secret(path: &Path, text: &str) -> Result<(), LabError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| LabError::io("cannot write", path, e))
}

/// The lab's power switch as a fence command for its controller.
pub fn power_switch(duplex_bin: &Path, lab: &str) -> String {
    format!(
        "{} lab fault power-off --lab {lab} {{host}}",
        duplex_bin.display()
    )
}

/// The lab's network for placement: hosts in `racks` contiguous blocks
/// (h1.. in rack-1, ...), each rack switch linked to one spine at 10 Gb/s.
pub fn topology_json(hosts: u8, racks: u8) -> serde_json::Value {
    let hosts = hosts.max(1);
    let racks = racks.clamp(1, hosts);
    let rack_of = |n: u8| (u16::from(n - 1) * u16::from(racks) / u16::from(hosts)) + 1;
    let mut switches: Vec<String> = (1..=racks).map(|r| format!("rack-{r}")).collect();
    switches.push("spine".into());
    serde_json::json!({
        "switches": switches,
        "hosts": (1..=hosts)
            .map(|n| serde_json::json!({"name": format!("h{n}"), "attach": format!("rack-{}", rack_of(n))}))
            .collect::<Vec<_>>(),
        "links": (1..=racks)
            .map(|r| serde_json::json!({"a": format!("rack-{r}"), "b": "spine", "capacity_gbps": 10.0}))
            .collect::<Vec<_>>(),
    })
}

/// Starts the controller (after etcd, if asked) and waits until it leads.
/// With `racks` > 1 it places over [`topology_json`].
pub(crate) async fn start(
    plan: &LabPlan,
    duplex_bin: &Path,
    opts: &crate::UpOptions,
) -> Result<ControllerState, LabError> {
    let etcd = match opts.store {
        LabStore::Etcd => Some(start_etcd(plan).await?),
        LabStore::Embedded => None,
    };
    let st = spawn(plan, duplex_bin, etcd, opts, 0)?;
    wait_answering(plan, &st, true).await?;
    Ok(st)
}

/// Starts standby controller `n` (1, 2, ...) on the leader's etcd, on port
/// [`CONTROLLER_PORT`] + `n`; waits until it answers (as a follower).
pub(crate) async fn start_standby(
    plan: &LabPlan,
    duplex_bin: &Path,
    leader: &ControllerState,
    opts: &crate::UpOptions,
    n: u16,
) -> Result<ControllerState, LabError> {
    let st = spawn(plan, duplex_bin, leader.etcd.clone(), opts, n)?;
    wait_answering(plan, &st, false).await?;
    Ok(st)
}

/// Spawns controller process `n` of the lab (0: the first).
fn spawn(
    plan: &LabPlan,
    duplex_bin: &Path,
    etcd: Option<EtcdState>,
    opts: &crate::UpOptions,
    n: u16,
) -> Result<ControllerState, LabError> {
    let racks = opts.racks;
    let (dir_name, id) = match n {
        0 => ("controller".to_string(), format!("{}-ctl", plan.lab())),
        n => (format!("controller-{n}"), format!("{}-ctl{n}", plan.lab())),
    };
    let store = if etcd.is_some() {
        LabStore::Etcd
    } else {
        LabStore::Embedded
    };
    let dir = plan.state_dir().join(dir_name);
    std::fs::create_dir_all(&dir).map_err(|e| LabError::io("cannot create", &dir, e))?;
    let listen = format!("{}:{}", plan.mgmt_ip(), CONTROLLER_PORT + n);
    let log = dir.join("controller.log");
    let mut cmd = std::process::Command::new(duplex_bin);
    cmd.args(["controller", "--listen", &listen, "--data-dir"])
        .arg(&dir)
        .arg("--tls-dir")
        .arg(crate::pki::bundle(
            plan.lab(),
            &duplex_core::identity::Identity::Controller,
        ))
        .args(["--id", &id])
        .args(["--lease-ttl-ms", &LAB_LEASE_TTL_MS.to_string()])
        // The lab segment's gateway (the management port) witnesses
        // which member of a pair is cut off the service network.
        .args(["--service-witness", &plan.mgmt_ip().to_string()])
        // One external disk for every controller of the lab (S3's restart
        // counters must outlive the one that leads).
        .arg("--external-disk")
        .arg(plan.state_dir().join("external-disk"))
        .current_dir(&dir);
    if let Some(e) = &etcd {
        cmd.args(["--store", "etcd", "--etcd-endpoints", &e.url]);
    }
    if opts.power_fence {
        cmd.arg("--fence-command")
            .arg(power_switch(duplex_bin, plan.lab()));
    }
    if racks > 1 {
        let path = dir.join("topology.json");
        let text = serde_json::to_vec_pretty(&topology_json(plan.hosts(), racks))
            .map_err(|e| LabError::Task(e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| LabError::io("cannot write", &path, e))?;
        cmd.arg("--topology").arg(&path);
    }
    let child =
        spawn_daemon(cmd, &log).map_err(|(cmdline, source)| LabError::Spawn { cmdline, source })?;
    let st = ControllerState {
        pid: child.id() as i32,
        url: format!("https://{listen}"),
        data_dir: dir,
        log,
        store,
        etcd,
    };
    Ok(st)
}

/// Waits until the controller answers `/healthz` (and leads, if `lead`).
async fn wait_answering(plan: &LabPlan, st: &ControllerState, lead: bool) -> Result<(), LabError> {
    let http = http_client(plan.lab())?;
    let deadline = Instant::now() + CONTROLLER_WAIT;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        if !crate::procs::alive(st.pid) {
            return Err(service_failed(
                plan,
                "the controller",
                "it exited".into(),
                &st.log,
            ));
        }
        match http.get(format!("{}/healthz", st.url)).send().await {
            Ok(r) => match r.json::<serde_json::Value>().await {
                Ok(v) if !lead || v["leader"] == serde_json::json!(true) => return Ok(()),
                Ok(v) => last = format!("answers but does not lead yet: {v}"),
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(service_failed(
        plan,
        "the controller",
        format!(
            "not {} within {} s ({last})",
            if lead { "leading" } else { "answering" },
            CONTROLLER_WAIT.as_secs()
        ),
        &st.log,
    ))
}

/// Agent arguments that make it report to the lab's controllers (it
/// follows whichever leads).
pub(crate) fn agent_args(all: &[ControllerState]) -> Vec<String> {
    let urls: Vec<&str> = all.iter().map(|c| c.url.as_str()).collect();
    vec!["--controller".into(), urls.join(",")]
}

/// Waits until every host has registered with the controller.
pub(crate) async fn wait_registered(plan: &LabPlan, st: &ControllerState) -> Result<(), LabError> {
    let http = http_client(plan.lab())?;
    let deadline = Instant::now() + CONTROLLER_WAIT;
    let mut seen = 0;
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{}/v1/hosts", st.url)).send().await {
            if let Ok(v) = r.json::<Vec<serde_json::Value>>().await {
                seen = v.iter().filter(|h| h["state"] == "ready").count();
                if seen >= plan.hosts() as usize {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(service_failed(
        plan,
        "host registration",
        format!(
            "{seen} of {} hosts registered with the controller",
            plan.hosts()
        ),
        &st.log,
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn hosts_fill_racks_in_blocks() {
        let t = super::topology_json(4, 2);
        let attach: Vec<&str> = t["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["attach"].as_str().unwrap())
            .collect();
        assert_eq!(attach, ["rack-1", "rack-1", "rack-2", "rack-2"]);
        let cfg: duplex_core::placement::TopologyConfig = serde_json::from_value(t).unwrap();
        assert!(duplex_core::placement::Topology::from_config(&cfg).is_ok());
        let t = super::topology_json(3, 9);
        assert_eq!(t["switches"].as_array().unwrap().len(), 4);
    }
}
