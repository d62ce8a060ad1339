//! One VM on this host: its files, its QEMU, its network element, its
//! control channel, and what is known about it.

use crate::control::ControlClient;
use duplex_core::agent_api::{MigrationInfo, TrafficReport, VmFailure, VmInfo, VmState, VmSummary};
use duplex_core::escalation::Cause;
use duplex_core::guest_proto::{
    Heartbeat, ServiceFailed, HEARTBEAT_EVENT, HEARTBEAT_MS, SERVICE_FAILED_EVENT,
};
use duplex_core::guest_watch::{Sign, Watch};
use duplex_core::vm_spec::VmSpec;
use duplex_net::element::ElementHandle;
use duplex_qemu::qmp::QmpEvent;
use duplex_qemu::{QemuProcess, Qmp};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Files of one VM under `<data_dir>/vms/<name>/`.
#[derive(Debug, Clone)]
pub struct VmPaths {
    pub dir: PathBuf,
    pub net: PathBuf,
    pub ctl: PathBuf,
    pub qmp: PathBuf,
    pub serial: PathBuf,
    pub qemu_log: PathBuf,
}

impl VmPaths {
    /// Where the console log of a VM that migrated away is kept (its last
    /// stay here): `<vms dir>/../departed/<name>.serial.log`, out of the
    /// VMs' directory so no VM's name can clash with it.
    pub fn departed_serial(&self) -> Option<PathBuf> {
        let name = self.dir.file_name()?;
        let mut file = name.to_os_string();
        file.push(".serial.log");
        Some(self.dir.parent()?.parent()?.join("departed").join(file))
    }

    pub fn new(dir: PathBuf) -> Self {
        VmPaths {
            net: dir.join("net.sock"),
            ctl: dir.join("ctl.sock"),
            qmp: dir.join("qmp.sock"),
            serial: dir.join("serial.log"),
            qemu_log: dir.join("qemu.log"),
            dir,
        }
    }
}

/// What is known about a VM, readable without waiting.
#[derive(Debug, Clone)]
pub struct VmStatus {
    pub state: VmState,
    pub boot_ms: Option<u64>,
    pub guest: Option<Value>,
    pub migration: Option<MigrationInfo>,
    pub pid: Option<u32>,
    /// Latest guest heartbeat and when it arrived.
    pub heartbeat: Option<(std::time::Instant, Value)>,
    /// When QEMU reported the guest reset (reboot after a panic, a reset
    /// on request), if no heartbeat came since: the guest has no role.
    pub reset_at: Option<std::time::Instant>,
    /// After an incoming migration: the guest answered here and its
    /// takeover path was rehearsed (or that was given up on).
    pub arrived: bool,
    /// Isolated by the controller's order ([`crate::host::Host::isolate`]).
    pub isolated: bool,
    /// The latest failure found, and when.
    pub failure: Option<(std::time::Instant, Failure)>,
    /// Which signs of a failure were reported since its last heartbeat
    /// (a panic, its silence and its reboot are one failure), and whether
    /// the next reset was ordered.
    pub watch: Watch,
}

/// A failure as the agent keeps it (see [`VmFailure`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub id: String,
    pub cause: Cause,
    pub detail: String,
}

/// A guest that sent no heartbeat for this long (five beats) is silent.
pub const GUEST_SILENT_MS: u64 = 5 * HEARTBEAT_MS;

/// What runs for a VM: QEMU and the network element.
pub struct Runtime {
    pub qemu: QemuProcess,
    pub element: ElementHandle,
}

pub struct Vm {
    pub spec: VmSpec,
    pub paths: VmPaths,
    pub tap: String,
    pub status: Mutex<VmStatus>,
    pub rt: tokio::sync::Mutex<Option<Runtime>>,
    pub ctl: tokio::sync::Mutex<Option<ControlClient>>,
    /// Shortcut to QEMU's QMP without taking the runtime lock.
    pub qmp: Mutex<Option<Arc<Qmp>>>,
    /// Notified when the guest loses or finds its peer: the agent reports
    /// at once.
    pub urgent: Arc<tokio::sync::Notify>,
    /// The root disk base (file name in its image's directory) the VM runs
    /// on, set by its launch; none for a diskless VM.
    pub disk_base: Mutex<Option<String>>,
    /// A replicated VM's RAM file (S2), which the agent reads.
    pub ram_file: Option<PathBuf>,
    /// A replicated VM's transmit buffer (S2), set by its launch.
    pub txbuf: Mutex<Option<Arc<Mutex<duplex_net::txbuf::TxBuffer>>>>,
    /// Its epochs towards a backup, while they run.
    pub protection: Mutex<Option<crate::protect::Protection>>,
    /// S5: the element it is to launch on (it buffered for the VM while
    /// the VM ran in the other site); taken by the launch.
    pub standin: Mutex<Option<crate::site::StandIn>>,
    /// S5: the state it was started from here, as the replica it came
    /// from holds it (epoch, page hashes): epochs towards the side it left
    /// go on from there.
    pub shared_base: Mutex<Option<(u64, duplex_replica::scan::PageHashes)>>,
}

impl Vm {
    /// `tap`: a name no other VM of this host uses (see
    /// [`duplex_net::tap::free_tap_name`]).
    pub fn new(spec: VmSpec, paths: VmPaths, tap: String, state: VmState) -> Self {
        Vm {
            tap,
            spec,
            paths,
            status: Mutex::new(VmStatus {
                state,
                boot_ms: None,
                guest: None,
                migration: None,
                pid: None,
                heartbeat: None,
                reset_at: None,
                arrived: false,
                isolated: false,
                failure: None,
                watch: Watch::default(),
            }),
            rt: tokio::sync::Mutex::new(None),
            ctl: tokio::sync::Mutex::new(None),
            qmp: Mutex::new(None),
            urgent: Arc::default(),
            disk_base: Mutex::new(None),
            ram_file: None,
            txbuf: Mutex::new(None),
            protection: Mutex::new(None),
            standin: Mutex::new(None),
            shared_base: Mutex::new(None),
        }
    }

    pub fn status(&self) -> VmStatus {
        match self.status.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn update(&self, f: impl FnOnce(&mut VmStatus)) {
        match self.status.lock() {
            Ok(mut s) => f(&mut s),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// The root disk base the VM runs on, if it has a disk.
    pub fn disk_base(&self) -> Option<String> {
        self.disk_base.lock().ok().and_then(|b| b.clone())
    }

    pub fn txbuf(&self) -> Option<Arc<Mutex<duplex_net::txbuf::TxBuffer>>> {
        self.txbuf.lock().ok().and_then(|b| b.clone())
    }

    pub fn qmp(&self) -> Option<Arc<Qmp>> {
        self.qmp.lock().ok().and_then(|q| q.clone())
    }

    pub fn info(&self) -> VmInfo {
        let s = self.status();
        VmInfo {
            // Secret user files never leave the host in answers or reports.
            spec: self.spec.redacted(),
            mac: self.spec.mac(),
            state: s.state,
            pid: s.pid,
            tap: self.tap.clone(),
            boot_ms: s.boot_ms,
            guest: s.guest,
            serial_log: self.paths.serial.display().to_string(),
            migration: s.migration,
            heartbeat_age_ms: s
                .heartbeat
                .as_ref()
                .map(|(at, _)| at.elapsed().as_millis() as u64),
            heartbeat: s.heartbeat.map(|(_, v)| v),
            reset_age_ms: s.reset_at.map(|at| at.elapsed().as_millis() as u64),
            isolated: s.isolated,
            failure: s.failure.map(|(at, f)| VmFailure {
                id: f.id,
                cause: f.cause,
                detail: f.detail,
                age_ms: at.elapsed().as_millis() as u64,
            }),
            protection: crate::protect::summary(self),
        }
    }

    /// Records a failure of this VM and has it reported at once.
    pub fn fail(&self, cause: Cause, detail: String) {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        static STARTED: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
        let started = STARTED.get_or_init(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default()
        });
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let id = format!("{}@{started}.{n}", self.spec.name);
        tracing::error!(vm = %self.spec.name, ?cause, %detail, %id, "VM failure");
        self.update(|s| {
            s.failure = Some((std::time::Instant::now(), Failure { id, cause, detail }))
        });
        self.urgent.notify_one();
    }

    /// The watchdog's look (every pass of the exit watch): a running guest
    /// that answered once and sent no heartbeat for [`GUEST_SILENT_MS`]
    /// is reported silent, once until it beats again.
    pub fn check_silence(&self) {
        let s = self.status();
        let age = s
            .heartbeat
            .as_ref()
            .map(|(at, _)| at.elapsed().as_millis() as u64);
        let silent = s.state == VmState::Running && age.is_some_and(|a| a > GUEST_SILENT_MS);
        if silent && self.sign(Sign::Silent) {
            self.fail(
                Cause::GuestSilent,
                format!(
                    "no heartbeat from the guest for {} ms",
                    age.unwrap_or_default()
                ),
            );
        }
    }

    /// Feeds `sign` to the VM's watch; whether it is a new failure.
    pub fn sign(&self, sign: Sign) -> bool {
        let mut report = false;
        self.update(|s| (s.watch, report) = s.watch.on(sign));
        report
    }

    /// Its console showed the kernel's panic `line`: reported at once,
    /// and the silence and the reboot that follow are the same failure.
    pub fn panicked(&self, line: &str) {
        if self.sign(Sign::PanicLine) {
            self.fail(
                Cause::GuestSilent,
                format!("the guest's kernel panicked (its console: {line})"),
            );
        }
    }

    /// The counters of its network element (with the output its epochs
    /// hold); `None` if none runs.
    pub async fn traffic(&self) -> Option<TrafficReport> {
        let mut r = self.rt.lock().await.as_ref().map(|r| r.element.report())?;
        if let Some(held) = self
            .txbuf()
            .and_then(|b| b.lock().ok().map(|b| b.report().held_now))
        {
            r.held.push(duplex_core::agent_api::HeldCount {
                stage: duplex_core::agent_api::HELD_EPOCH.to_string(),
                frames: held,
            });
        }
        Some(r)
    }

    /// Where the control channel delivers this VM's guest events.
    pub fn event_sink(self: &Arc<Self>) -> crate::control::EventSink {
        let vm = Arc::downgrade(self);
        Arc::new(move |event: &str, data: &Value| {
            if event == SERVICE_FAILED_EVENT {
                let Some(vm) = vm.upgrade() else { return };
                match serde_json::from_value::<ServiceFailed>(data.clone()) {
                    Ok(f) => vm.fail(f.cause, f.detail),
                    Err(e) => {
                        tracing::warn!(vm = %vm.spec.name, error = %e, %data, "bad service_failed event from the guest")
                    }
                }
                return;
            }
            if event == HEARTBEAT_EVENT {
                if let Some(vm) = vm.upgrade() {
                    let mut turned = false;
                    vm.update(|s| {
                        let before = s.heartbeat.as_ref().map(|(_, v)| alarm(v));
                        turned = before.unwrap_or_default() != alarm(data);
                        s.heartbeat = Some((std::time::Instant::now(), data.clone()));
                        s.reset_at = None;
                        (s.watch, _) = s.watch.on(Sign::Heartbeat);
                    });
                    if turned {
                        let (peer_lost, cut_off, peer_synced) = alarm(data);
                        tracing::warn!(vm = %vm.spec.name, peer_lost, cut_off, ?peer_synced, "guest lost or found its peer or the witness, or its peer's sync turned; reporting now");
                        vm.urgent.notify_one();
                    }
                }
            }
        })
    }

    /// Follows QEMU's events for this VM: a `RESET` (the guest rebooted,
    /// or was reset) drops the last heartbeat, which spoke for the guest
    /// before it, and marks the VM reset until the next one.
    pub fn watch_resets(self: &Arc<Self>, mut events: broadcast::Receiver<QmpEvent>) {
        let vm = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(e) if e.name == "RESET" => {
                        let Some(vm) = vm.upgrade() else { break };
                        tracing::warn!(vm = %vm.spec.name, data = %e.data, "guest reset");
                        vm.update(|s| {
                            s.heartbeat = None;
                            s.reset_at = Some(std::time::Instant::now());
                        });
                        if vm.sign(Sign::Reset) {
                            vm.fail(
                                Cause::GuestSilent,
                                format!("the guest rebooted by itself (kernel panic or reset from inside; QEMU says {})", e.data),
                            );
                        }
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }

    pub fn summary(&self) -> VmSummary {
        VmSummary {
            name: self.spec.name.clone(),
            state: self.status().state,
            ip: self.spec.ip,
            mac: self.spec.mac(),
        }
    }
}

/// Whether a heartbeat says the guest lost its peer, and the witness, and
/// (an ACT) whether its peer holds its writes: reported at once on change.
fn alarm(beat: &Value) -> (bool, bool, Option<bool>) {
    serde_json::from_value::<Heartbeat>(beat.clone())
        .map(|b| {
            let (lost, cut_off) = b.alarm();
            (lost, cut_off, b.peer_synced)
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_departed_vms_console_is_kept_beside_the_vm_dirs() {
        let p = VmPaths::new("/run/duplex/h1/vms/sb".into());
        assert_eq!(
            p.departed_serial(),
            Some("/run/duplex/h1/departed/sb.serial.log".into())
        );
    }
}
