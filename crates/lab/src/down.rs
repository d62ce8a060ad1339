//! `down`: removes a lab, found by name (works without a state file).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::error::LabError;
use crate::ip::{ip, require_root};
use crate::plan::{self, validate_lab_name};
use crate::{lock, netns, procs};

/// How long processes get between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);
/// How long to wait for SIGKILLed processes to vanish.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// A process `down` ended.
#[derive(Debug, Clone, Serialize)]
pub struct KilledProcess {
    pub pid: i32,
    pub ns: String,
    pub comm: String,
    /// Needed SIGKILL (ignored SIGTERM for 3 s).
    pub forced: bool,
}

/// What `down` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DownReport {
    pub lab: String,
    pub killed: Vec<KilledProcess>,
    pub namespaces: Vec<String>,
    /// Root-namespace links removed (`<lab>mgmt`).
    pub links: Vec<String>,
    pub state_dir: Option<PathBuf>,
    /// Processes still alive after SIGKILL (stuck in the kernel).
    pub survivors: Vec<i32>,
}

impl DownReport {
    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.killed.is_empty()
            && self.namespaces.is_empty()
            && self.links.is_empty()
            && self.state_dir.is_none()
    }
}

impl fmt::Display for DownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "lab `{}` is down", self.lab)?;
        if !self.killed.is_empty() {
            writeln!(f, "  stopped {} process(es):", self.killed.len())?;
            for k in &self.killed {
                let how = if k.forced { "SIGKILL" } else { "SIGTERM" };
                writeln!(
                    f,
                    "    {:>7}  {:<16} in {:<12} ({how})",
                    k.pid, k.comm, k.ns
                )?;
            }
        }
        if !self.namespaces.is_empty() {
            writeln!(f, "  deleted namespaces: {}", self.namespaces.join(", "))?;
        }
        if !self.links.is_empty() {
            writeln!(f, "  deleted links: {}", self.links.join(", "))?;
        }
        if let Some(d) = &self.state_dir {
            writeln!(f, "  removed {}", d.display())?;
        }
        if !self.survivors.is_empty() {
            writeln!(f, "  still alive after SIGKILL: {:?}", self.survivors)?;
        }
        Ok(())
    }
}

/// Takes lab `lab` down: ends every process in its namespaces (SIGTERM,
/// up to 3 s, then SIGKILL; this includes VMs the agents started), deletes
/// the namespaces, the root link `<lab>mgmt` and `/run/duplex/lab-<lab>`.
/// [`LabError::NotUp`] if none of them exists.
///
/// Blocking (up to ~5 s); from async code call it via `spawn_blocking`.
pub fn down(lab: &str) -> Result<DownReport, LabError> {
    validate_lab_name(lab)?;
    require_root()?;
    let _lock = lock::lock()?;
    let report = teardown(lab)?;
    if report.is_empty() {
        return Err(LabError::NotUp {
            lab: lab.to_string(),
        });
    }
    Ok(report)
}

/// Removes everything of lab `lab` that exists; keeps going past failures
/// and returns the first one at the end. Caller holds the lock.
pub(crate) fn teardown(lab: &str) -> Result<DownReport, LabError> {
    let mut report = DownReport {
        lab: lab.to_string(),
        ..DownReport::default()
    };
    let mut first_err: Option<LabError> = None;

    let namespaces = netns::list_with_prefix(&plan::ns_prefix(lab))?;

    // Every process in the lab's namespaces: agents, QEMU, shells.
    let mut victims: Vec<(i32, String)> = Vec::new();
    for ns in &namespaces {
        match netns::pids(ns) {
            Ok(p) => victims.extend(p.into_iter().map(|pid| (pid, ns.clone()))),
            Err(e) => note(e, &mut first_err),
        }
    }
    // The controller and etcd run in the root namespace with their data
    // under the lab's state directory.
    let dir_mark = format!("{}/", plan::state_dir(lab).display());
    for pid in procs::with_cmdline_containing(&dir_mark) {
        if !victims.iter().any(|(p, _)| *p == pid) {
            victims.push((pid, "root".to_string()));
        }
    }
    let own = std::process::id() as i32;
    victims.retain(|(pid, _)| *pid != own);
    if !victims.is_empty() {
        tracing::info!(
            "stopping {} process(es) in the namespaces of lab `{lab}`",
            victims.len()
        );
        let comms: Vec<String> = victims.iter().map(|(p, _)| procs::comm(*p)).collect();
        for (pid, _) in &victims {
            procs::signal(*pid, libc::SIGTERM);
        }
        let pids: Vec<i32> = victims.iter().map(|(p, _)| *p).collect();
        let stubborn = procs::wait_gone(&pids, TERM_GRACE);
        for pid in &stubborn {
            tracing::info!("pid {pid} ignored SIGTERM; sending SIGKILL");
            procs::signal(*pid, libc::SIGKILL);
        }
        report.survivors = procs::wait_gone(&stubborn, KILL_GRACE);
        for ((pid, ns), comm) in victims.into_iter().zip(comms) {
            report.killed.push(KilledProcess {
                forced: stubborn.contains(&pid),
                pid,
                ns,
                comm,
            });
        }
    }

    // Deleting one end of the management veth removes the pair at once;
    // deleting its namespace would do so only later, asynchronously.
    let mg = plan::mgmt_if(lab);
    match netns::root_link_exists(&mg) {
        Ok(true) => {
            tracing::info!("deleting link {mg}");
            match ip(&["link", "delete", &mg]) {
                Ok(_) => report.links.push(mg),
                Err(e) => note(e, &mut first_err),
            }
        }
        Ok(false) => {}
        Err(e) => note(e, &mut first_err),
    }

    for ns in &namespaces {
        tracing::info!("deleting namespace {ns}");
        match netns::delete(ns) {
            Ok(()) => report.namespaces.push(ns.clone()),
            Err(e) => note(e, &mut first_err),
        }
    }

    let dir = plan::state_dir(lab);
    // Replicated VMs' RAM lives in /dev/shm, named after each agent's
    // data directory (a host powered off by a fault left its files).
    if let Ok(hosts) = std::fs::read_dir(&dir) {
        for host in hosts.flatten().filter(|e| e.path().is_dir()) {
            let name = host.file_name().to_string_lossy().into_owned();
            duplex_agent::host::remove_ram_files(&duplex_agent::host::ram_prefix_of(
                &name,
                &host.path(),
            ));
        }
    }
    if dir.exists() {
        tracing::info!("removing {}", dir.display());
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => report.state_dir = Some(dir),
            Err(e) => note(LabError::io("cannot remove", dir, e), &mut first_err),
        }
    }

    match first_err {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// Logs a failure and keeps the first one.
fn note(e: LabError, first_err: &mut Option<LabError>) {
    tracing::warn!("{e}");
    first_err.get_or_insert(e);
}
