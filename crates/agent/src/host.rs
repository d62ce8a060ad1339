//! This host: its configuration, accelerator, and the VMs it runs. VM
//! lifecycle (launch, boot watch, pause/resume, delete, crash watch).

use crate::config::{AccelChoice, AgentConfig};
use crate::control::ControlClient;
use crate::fence::Fence;
use crate::vm::{Runtime, Vm, VmPaths};
use crate::AgentError;
use duplex_core::agent_api::{
    AccelInfo, AccelKind, HostInfo, MigrationInfo, TrafficReport, VmInfo, VmState, WaitFor,
};
use duplex_core::escalation::Cause;
use duplex_core::guest_proto::Op;
use duplex_core::guest_watch::Sign;
use duplex_core::vm_spec::VmSpec;
use duplex_net::element::ElementHandle;
use duplex_net::tap::Tap;
use duplex_qemu::{Launch, QemuProcess};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest a guest may take from QEMU start to `DUPLEX-INIT` (TCG is slow).
pub const INIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest from QEMU start until the guest answers on the control channel.
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Where this agent's RAM files live in `/dev/shm` (`ram_prefix` + the VM's
/// name + `.ram` or `.replica`).
fn ram_prefix(cfg: &AgentConfig) -> String {
    ram_prefix_of(&cfg.name, &cfg.data_dir)
}

/// [`ram_prefix`] of the agent named `name` with data in `data_dir`.
pub fn ram_prefix_of(name: &str, data_dir: &std::path::Path) -> String {
    use sha2::Digest;
    let dir = sha2::Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    format!("/dev/shm/duplex-{name}-{}-", hex::encode(&dir[..4]))
}

/// Removes RAM files an earlier run of this agent left (it was killed):
/// an agent starts with no VMs and no replicas.
fn remove_stale_ram(cfg: &AgentConfig) {
    remove_ram_files(&ram_prefix(cfg));
}

/// Removes the RAM files whose path starts with `prefix` (an agent's:
/// [`ram_prefix_of`]), when nothing runs that maps them.
pub fn remove_ram_files(prefix: &str) {
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        if path.to_string_lossy().starts_with(prefix) {
            tracing::info!(file = %path.display(), "removing a RAM file an earlier run left");
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// How a VM's QEMU starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Booting: a root disk (if its image has one) on the image's current
    /// base.
    Fresh,
    /// Waiting for a migration stream, with the disk the VM has at the
    /// source: none, or an overlay on the base of this name.
    Incoming { disk_base: Option<String> },
    /// Booting again after QEMU died (S3's PH2.5): the overlay it had is
    /// kept (its current files), on the base it ran on.
    Again { disk_base: Option<String> },
    /// An S2 failover: on the replica's RAM (already at the VM's RAM
    /// file), waiting for the last committed checkpoint's device state.
    Checkpoint,
}

pub struct Host {
    pub cfg: AgentConfig,
    pub accel: AccelInfo,
    pub qemu_version: String,
    vms: Mutex<BTreeMap<String, Arc<Vm>>>,
    /// Latest outgoing migration per VM name (kept after the VM left).
    pub migrations: Mutex<BTreeMap<String, MigrationInfo>>,
    /// HTTPS to peer agents (migrations), with this host's certificate.
    pub http: duplex_tls::client::Clients,
    /// Highest fencing token obeyed, persisted under `data_dir`.
    pub fence: Arc<Fence>,
    /// The lease after which the agent fences itself when cut off.
    pub self_fence: Arc<crate::self_fence::SelfFence>,
    /// Asks the report task to report now (a guest lost its peer).
    pub urgent: Arc<tokio::sync::Notify>,
    /// The S2 ruleset this host's transmit buffers classify with.
    pub rules: Mutex<duplex_core::classify::Ruleset>,
    /// S2 replicas of VMs whose primary runs elsewhere.
    pub replicas: crate::replica::Replicas,
    /// S2 embodiment B: where this host's epoch messages go.
    pub switch: Option<crate::switch_link::SwitchLink>,
}

impl Host {
    pub async fn start(cfg: AgentConfig) -> Result<Arc<Host>, AgentError> {
        let fence = Arc::new(Fence::load(&cfg.data_dir)?);
        let qemu_version = duplex_qemu::version(&cfg.qemu).await?;
        std::fs::create_dir_all(cfg.data_dir.join("vms"))
            .map_err(AgentError::io(format!("create {}", cfg.data_dir.display())))?;
        if let Some(u) = &cfg.qemu_user {
            crate::qemu_user::check_reachable(&cfg.data_dir.join("vms"), u)?;
        }
        let accel = match cfg.accel {
            AccelChoice::Tcg => AccelInfo {
                kind: AccelKind::Tcg,
                reason: "chosen with --accel tcg".into(),
            },
            AccelChoice::Kvm => AccelInfo {
                kind: AccelKind::Kvm,
                reason: "chosen with --accel kvm".into(),
            },
            AccelChoice::Auto => match duplex_image::resolve(&cfg.image_dir, "default") {
                Ok(img) => {
                    duplex_qemu::accel::detect(
                        &cfg.qemu,
                        &img.vmlinuz,
                        &img.initramfs,
                        &cfg.cache_dir.join("accel.json"),
                        Duration::from_secs(10),
                    )
                    .await?
                }
                Err(e) => AccelInfo {
                    kind: AccelKind::Tcg,
                    reason: format!("no image to probe KVM with ({e})"),
                },
            },
        };
        tracing::info!(host = %cfg.name, accel = ?accel.kind, reason = %accel.reason, qemu = %qemu_version, "agent starting");
        remove_stale_ram(&cfg);
        let http = duplex_tls::client::Clients::new(cfg.tls.clone(), |b| {
            b.connect_timeout(Duration::from_secs(3)).no_proxy()
        })
        .map_err(|e| {
            AgentError::Config(format!(
                "this host's TLS bundle: {e}; make it on the CA's machine with `duplex pki issue agent {} --ip <this host's IP> --out <dir>` and pass --tls-dir <dir>",
                cfg.name
            ))
        })?;
        let switch = match &cfg.output_switch {
            Some(ifname) => Some(crate::switch_link::SwitchLink::open(ifname)?),
            None => None,
        };
        Ok(Arc::new(Host {
            switch,
            accel,
            qemu_version,
            vms: Mutex::default(),
            migrations: Mutex::default(),
            self_fence: Arc::new(crate::self_fence::SelfFence::new(self_fence_period(&cfg))),
            http,
            fence,
            cfg,
            urgent: Arc::default(),
            rules: Mutex::new(duplex_core::classify::default_ruleset()),
            replicas: crate::replica::Replicas::default(),
        }))
    }

    /// A host that has not probed anything (no QEMU needed): for tests of
    /// what runs around VMs.
    #[cfg(test)]
    pub(crate) fn for_test(mut cfg: AgentConfig) -> Arc<Host> {
        let pki = duplex_tls::test_pki::TestPki::new(&cfg.data_dir.join("pki")).unwrap();
        cfg.tls = pki.agent(&cfg.name).unwrap();
        let http = duplex_tls::client::Clients::new(cfg.tls.clone(), |b| b).unwrap();
        Arc::new(Host {
            fence: Arc::new(Fence::load(&cfg.data_dir).unwrap()),
            cfg,
            accel: AccelInfo {
                kind: AccelKind::Tcg,
                reason: "test".into(),
            },
            qemu_version: "none".into(),
            vms: Mutex::default(),
            migrations: Mutex::default(),
            http,
            self_fence: Arc::new(crate::self_fence::SelfFence::new(None)),
            urgent: Arc::default(),
            rules: Mutex::new(duplex_core::classify::default_ruleset()),
            replicas: crate::replica::Replicas::default(),
            switch: None,
        })
    }

    pub fn info(&self) -> HostInfo {
        self.info_of(&self.all())
    }

    fn info_of(&self, vms: &[Arc<Vm>]) -> HostInfo {
        HostInfo {
            name: self.cfg.name.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            accel: self.accel.clone(),
            qemu: self.qemu_version.clone(),
            listen: self.cfg.listen.to_string(),
            vms: vms.iter().map(|v| v.summary()).collect(),
        }
    }

    /// Everything a report to the controller holds about this host, from
    /// one listing of its VMs: `GET /v1/host`, every VM's `GET
    /// /v1/vms/{name}`, and the traffic of every VM whose network element
    /// runs and is not busy (a VM being torn down is left out this time).
    pub async fn snapshot(&self) -> (HostInfo, Vec<VmInfo>, Vec<TrafficReport>) {
        let vms = self.all();
        let mut traffic = Vec::with_capacity(vms.len());
        for vm in &vms {
            if let Ok(Some(t)) =
                tokio::time::timeout(Duration::from_millis(100), vm.traffic()).await
            {
                traffic.push(t);
            }
        }
        let infos = vms.iter().map(|v| v.info()).collect();
        (self.info_of(&vms), infos, traffic)
    }

    pub fn all(&self) -> Vec<Arc<Vm>> {
        self.vms
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn get(&self, name: &str) -> Result<Arc<Vm>, AgentError> {
        let found = self.vms.lock().ok().and_then(|m| m.get(name).cloned());
        found.ok_or_else(|| {
            let moved = self.migrations.lock().ok().and_then(|m| {
                m.get(name)
                    .filter(|i| i.stats.is_some())
                    .map(|i| i.to.clone())
            });
            match moved {
                Some(to) => AgentError::NotFound(format!(
                    "VM `{name}` is not on host {}: it migrated to {to}",
                    self.cfg.name
                )),
                None => AgentError::NotFound(format!("no VM `{name}` on host {}", self.cfg.name)),
            }
        })
    }

    /// Reserves the name (and IP) so two requests cannot create the same VM.
    pub fn reserve(&self, spec: &VmSpec, state: VmState) -> Result<Arc<Vm>, AgentError> {
        self.reserve_on(spec, state, None)
    }

    /// As [`Host::reserve`]; with `standin` the VM launches on that
    /// element (and its tap) instead of a new one.
    pub fn reserve_on(
        &self,
        spec: &VmSpec,
        state: VmState,
        standin: Option<crate::site::StandIn>,
    ) -> Result<Arc<Vm>, AgentError> {
        spec.validate()
            .map_err(|e| AgentError::BadRequest(e.to_string()))?;
        let mut vms = self
            .vms
            .lock()
            .map_err(|_| AgentError::Unavailable("VM table poisoned".into()))?;
        if vms.contains_key(&spec.name) {
            return Err(AgentError::Conflict(format!(
                "VM `{}` already exists on host {}",
                spec.name, self.cfg.name
            )));
        }
        if let Some(other) = vms.values().find(|v| v.spec.ip == spec.ip) {
            return Err(AgentError::Conflict(format!(
                "IP {} is already used by VM `{}`",
                spec.ip, other.spec.name
            )));
        }
        if let Some(other) = vms.values().find(|v| v.spec.mac() == spec.mac()) {
            return Err(AgentError::Conflict(format!(
                "MAC {} is already used by VM `{}`",
                spec.mac(),
                other.spec.name
            )));
        }
        let tap = match &standin {
            Some(s) => s.element.tap_name.clone(),
            None => free_tap(&vms, &spec.name)?,
        };
        let paths = VmPaths::new(self.cfg.data_dir.join("vms").join(&spec.name));
        let mut vm = Vm::new(spec.clone(), paths, tap, state);
        vm.urgent = self.urgent.clone();
        vm.ram_file = spec.replicated.then(|| self.ram_file(&spec.name));
        vm.standin = std::sync::Mutex::new(standin);
        let vm = Arc::new(vm);
        vms.insert(spec.name.clone(), vm.clone());
        Ok(vm)
    }

    pub fn forget(&self, name: &str) {
        if let Ok(mut m) = self.vms.lock() {
            m.remove(name);
        }
    }

    /// Starts QEMU and the network element for a reserved VM.
    pub async fn launch(&self, vm: &Arc<Vm>, start: Start) -> Result<(), AgentError> {
        let incoming = matches!(start, Start::Incoming { .. } | Start::Checkpoint);
        let spec = &vm.spec;
        let img = duplex_image::resolve(&self.cfg.image_dir, &spec.image)?;
        let p = &vm.paths;
        match &start {
            Start::Again { .. } => {
                for socket in [&p.net, &p.ctl, &p.qmp] {
                    let _ = std::fs::remove_file(socket);
                }
            }
            _ => {
                let _ = std::fs::remove_dir_all(&p.dir);
            }
        }
        std::fs::create_dir_all(&p.dir)
            .map_err(AgentError::io(format!("create {}", p.dir.display())))?;
        let user = self.cfg.qemu_user.as_ref();
        crate::qemu_user::give(user, &p.dir, 0o700)?;
        let listener = std::os::unix::net::UnixListener::bind(&p.net)
            .map_err(AgentError::io(format!("bind {}", p.net.display())))?;
        crate::qemu_user::give(user, &p.net, 0o600)?;
        // An incoming VM has exactly the disk it had at the source (none,
        // or the base it ran on); a new one takes its image's current base.
        let base = match &start {
            Start::Incoming { disk_base } | Start::Again { disk_base } => {
                disk_base.as_ref().map(|name| img.base(name)).transpose()?
            }
            Start::Fresh => img.rootfs.clone(),
            Start::Checkpoint => None,
        };
        if let (Some(ram), false) = (&vm.ram_file, start == Start::Checkpoint) {
            // A boot starts from zeros, not from an earlier run's RAM.
            let _ = std::fs::remove_file(ram);
        }
        if spec.replicated && base.is_some() {
            return Err(AgentError::BadRequest(format!(
                "VM `{}`: image `{}` has a root disk; S2 replication covers RAM and devices only, so a replicated VM must run a diskless image",
                spec.name, spec.image
            )));
        }
        let kept = p.dir.join(crate::vm_disk::OVERLAY);
        let disk = match &base {
            Some(_) if matches!(start, Start::Again { .. }) && kept.exists() => Some(kept),
            Some(base) => Some(crate::vm_disk::make_overlay(base, &p.dir, user).await?),
            None => None,
        };
        if let Ok(mut b) = vm.disk_base.lock() {
            *b = base.and_then(|b| b.file_name().map(|n| n.to_string_lossy().into_owned()));
        }
        let user_data = crate::vm_disk::write_user_data(spec, &p.dir, user)?;
        let element = self.network(vm, listener).await?;
        let launch = Launch {
            name: spec.name.clone(),
            accel: self.accel.kind,
            memory_mib: spec.memory_mib,
            vcpus: spec.vcpus,
            kernel: img.vmlinuz,
            initrd: img.initramfs,
            kernel_args: spec.kernel_args(),
            mac: spec.mac(),
            net_socket: p.net.clone(),
            ctl_socket: p.ctl.clone(),
            qmp_socket: p.qmp.clone(),
            serial_log: p.serial.clone(),
            incoming,
            disk,
            user_data,
            ram_file: vm.ram_file.clone(),
            from_checkpoint: start == Start::Checkpoint,
        };
        let qemu = QemuProcess::spawn(&self.cfg.qemu, &launch, &p.qemu_log, user).await?;
        let pid = qemu.pid;
        if let Ok(mut q) = vm.qmp.lock() {
            *q = Some(qemu.qmp.clone());
        }
        vm.watch_resets(qemu.qmp.events());
        *vm.rt.lock().await = Some(Runtime { qemu, element });
        vm.update(|s| s.pid = Some(pid));
        Ok(())
    }

    /// Where a replicated VM's RAM lives: a file in `/dev/shm`, named
    /// after this agent's data directory too (a lab runs several agents on
    /// one machine, possibly with the same host names).
    pub fn ram_file(&self, vm: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("{}{vm}.ram", ram_prefix(&self.cfg)))
    }

    /// The VM's network element, QEMU to connect at `listener`: the
    /// stand-in it was reserved on (S5: it buffered for the VM), or a new
    /// one on a new tap.
    async fn network(
        &self,
        vm: &Vm,
        listener: std::os::unix::net::UnixListener,
    ) -> Result<ElementHandle, AgentError> {
        let standin = vm.standin.lock().ok().and_then(|mut s| s.take());
        if let Some(s) = standin {
            s.element
                .listen(listener)
                .map_err(AgentError::io("listen for QEMU"))?;
            if let Ok(mut b) = vm.txbuf.lock() {
                *b = Some(s.txbuf);
            }
            return Ok(s.element);
        }
        let tap = create_tap(&vm.tap, &self.cfg.bridge).await?;
        let (extra, buf) = self.transmit_buffer(vm.spec.replicated);
        if let Ok(mut b) = vm.txbuf.lock() {
            *b = buf;
        }
        let spec = &vm.spec;
        Ok(duplex_net::element::start(
            &spec.name,
            spec.mac(),
            spec.ip,
            listener,
            tap,
            extra,
        )?)
    }

    /// S5: an element for `spec` on a tap of its own, with no VM behind
    /// it yet, buffering what is sent to the VM (see [`crate::site`]).
    pub async fn stand_in(&self, spec: &VmSpec) -> Result<crate::site::StandIn, AgentError> {
        let tap = {
            let vms = self
                .vms
                .lock()
                .map_err(|_| AgentError::Unavailable("VM table poisoned".into()))?;
            free_tap(&vms, &spec.name)?
        };
        let dir = self.cfg.data_dir.join("replicas");
        std::fs::create_dir_all(&dir)
            .map_err(AgentError::io(format!("create {}", dir.display())))?;
        let path = dir.join(format!("{}.net", spec.name));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path)
            .map_err(AgentError::io(format!("bind {}", path.display())))?;
        let tap = create_tap(&tap, &self.cfg.bridge).await?;
        let (extra, buf) = self.transmit_buffer(true);
        let txbuf = buf.ok_or_else(|| AgentError::Unavailable("no transmit buffer".into()))?;
        let element =
            duplex_net::element::start(&spec.name, spec.mac(), spec.ip, listener, tap, extra)?;
        element.site_buffer(duplex_core::site::BufferMode::Buffer);
        Ok(crate::site::StandIn { element, txbuf })
    }

    /// The S2 stage of a replicated VM's element (none for others): a
    /// transmit buffer with this host's ruleset, kept by the VM.
    #[allow(clippy::type_complexity)]
    fn transmit_buffer(
        &self,
        replicated: bool,
    ) -> (
        Vec<Box<dyn duplex_net::stage::Stage>>,
        Option<Arc<Mutex<duplex_net::txbuf::TxBuffer>>>,
    ) {
        if !replicated {
            return (Vec::new(), None);
        }
        let rules = self
            .rules
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        let buf = Arc::new(Mutex::new(duplex_net::txbuf::TxBuffer::new(rules)));
        (
            vec![Box::new(duplex_net::txbuf::TxStage(buf.clone()))],
            Some(buf),
        )
    }

    pub async fn create_vm(
        self: &Arc<Self>,
        spec: VmSpec,
        wait: WaitFor,
    ) -> Result<Arc<Vm>, AgentError> {
        let vm = self.reserve(&spec, VmState::Booting)?;
        let started = Instant::now();
        if let Err(e) = self.launch(&vm, Start::Fresh).await {
            self.teardown(&vm).await;
            self.forget(&spec.name);
            return Err(e);
        }
        tracing::info!(vm = %spec.name, ip = %spec.ip, "VM booting");
        let watcher = tokio::spawn(watch_boot(vm.clone(), started));
        tokio::spawn(watch_exit(self.clone(), vm.clone()));
        let deadline = match wait {
            WaitFor::Started => return Ok(vm),
            WaitFor::Init => INIT_TIMEOUT,
            WaitFor::Ready => READY_TIMEOUT,
        };
        let outcome = tokio::time::timeout(deadline, async {
            loop {
                let s = vm.status();
                let done = match wait {
                    WaitFor::Init => s.boot_ms.is_some(),
                    _ => s.guest.is_some(),
                };
                if done {
                    return Ok(());
                }
                if s.state == VmState::Crashed {
                    return Err(AgentError::Unavailable(format!(
                        "VM `{}` crashed while booting; QEMU log ends:\n{}",
                        spec.name,
                        duplex_qemu::process::tail(&vm.paths.qemu_log, 10)
                    )));
                }
                if watcher.is_finished() {
                    return Err(AgentError::Timeout(format!(
                        "VM `{}` runs but its guest never answered on the control channel; serial log ends:\n{}",
                        spec.name,
                        duplex_qemu::process::tail(&vm.paths.serial, 10)
                    )));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        match outcome {
            Ok(Ok(())) => Ok(vm),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(AgentError::Timeout(format!(
                "VM `{}` not {:?} within {} s (it is kept for inspection); serial log ends:\n{}",
                spec.name,
                wait,
                deadline.as_secs(),
                duplex_qemu::process::tail(&vm.paths.serial, 10)
            ))),
        }
    }

    /// Stops QEMU and the element of a VM (the VM stays in the table).
    pub async fn teardown(&self, vm: &Vm) {
        if let Ok(mut p) = vm.protection.lock() {
            // Dropping it stops the epochs.
            p.take();
        }
        *vm.ctl.lock().await = None;
        if let Ok(mut q) = vm.qmp.lock() {
            *q = None;
        }
        if let Some(rt) = vm.rt.lock().await.take() {
            rt.qemu.stop().await;
            rt.element.stop().await;
        }
        if let Some(ram) = &vm.ram_file {
            // QEMU is gone: nothing maps its RAM any more.
            let _ = std::fs::remove_file(ram);
        }
    }

    pub async fn delete_vm(&self, name: &str) -> Result<(), AgentError> {
        let vm = self.get(name)?;
        self.retire(&vm, |_| {}).await;
        tracing::info!(vm = %name, "VM deleted");
        Ok(())
    }

    /// Takes a VM off this host for good. Its directory is moved aside
    /// first (QEMU keeps its open files), so that a VM of the same name
    /// reserved the moment the name is free (one migrating straight back)
    /// launches in a directory of its own, which this teardown's removal
    /// never touches; then the name is freed, QEMU and the element are
    /// stopped, `last_look` may read the old files, and they are removed.
    pub async fn retire(&self, vm: &Vm, last_look: impl FnOnce(&VmPaths)) {
        static RETIRED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = RETIRED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let aside = vm.paths.dir.with_file_name(format!(
            ".retired-{}-{}-{n}",
            vm.spec.name,
            std::process::id()
        ));
        let moved = match std::fs::rename(&vm.paths.dir, &aside) {
            Ok(()) => Some(VmPaths::new(aside)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(vm = %vm.spec.name, error = %e, "cannot move the VM's directory aside; leaving it");
                None
            }
        };
        self.forget(&vm.spec.name);
        self.teardown(vm).await;
        if let Some(old) = moved {
            last_look(&old);
            let _ = std::fs::remove_dir_all(&old.dir);
        }
    }

    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<Arc<Vm>, AgentError> {
        let vm = self.get(name)?;
        let state = vm.status().state;
        if !paused && vm.status().isolated {
            return Err(AgentError::Conflict(format!(
                "VM `{name}` is isolated on the controller's order; it can only be deleted"
            )));
        }
        let allowed = if paused {
            state == VmState::Running || state == VmState::Booting
        } else {
            state == VmState::Paused
        };
        if !allowed {
            return Err(AgentError::Conflict(format!(
                "VM `{name}` is {state:?}; cannot {}",
                if paused { "pause" } else { "resume" }
            )));
        }
        let qmp = vm
            .qmp()
            .ok_or_else(|| AgentError::Conflict(format!("VM `{name}` has no running QEMU")))?;
        qmp.execute(if paused { "stop" } else { "cont" }, None)
            .await?;
        let booted = vm.status().guest.is_some();
        vm.update(|s| {
            s.state = if paused {
                VmState::Paused
            } else if booted {
                VmState::Running
            } else {
                VmState::Booting
            }
        });
        Ok(vm)
    }

    /// The controller's fence of one VM whose host it still reaches (the VM
    /// is cut off its service network, and its peer is promoted): every
    /// frame dropped in its element, the VM paused. Until it is deleted:
    /// it is not resumed, by order or by a lifted self-fence.
    pub async fn isolate(&self, name: &str) -> Result<Arc<Vm>, AgentError> {
        let vm = self.get(name)?;
        {
            let rt = vm.rt.lock().await;
            let rt = rt.as_ref().ok_or_else(|| {
                AgentError::Conflict(format!("VM `{name}` has no running network element"))
            })?;
            rt.element.isolate(true);
        }
        vm.update(|s| s.isolated = true);
        if vm.status().state != VmState::Paused {
            self.set_paused(name, true).await?;
        }
        tracing::error!(vm = %name, "VM isolated on the controller's order: cut off the network and paused until deleted");
        Ok(vm)
    }

    /// Starts QEMU again for a VM whose QEMU died (S3's PH2.5 after a
    /// crash): same spec, same overlay, the guest boots with no role.
    pub async fn restart_vm(self: &Arc<Self>, name: &str) -> Result<Arc<Vm>, AgentError> {
        let vm = self.get(name)?;
        if vm.status().state != VmState::Crashed {
            return Err(AgentError::Conflict(format!(
                "VM `{name}` is {:?}; only a VM whose QEMU died can be restarted",
                vm.status().state
            )));
        }
        self.teardown(&vm).await;
        vm.update(|s| {
            s.state = VmState::Booting;
            s.boot_ms = None;
            s.guest = None;
            s.heartbeat = None;
            s.reset_at = None;
            s.pid = None;
        });
        let disk_base = vm.disk_base();
        let started = Instant::now();
        if let Err(e) = self.launch(&vm, Start::Again { disk_base }).await {
            vm.update(|s| s.state = VmState::Crashed);
            return Err(e);
        }
        tracing::warn!(vm = %name, "QEMU started again after it died");
        tokio::spawn(watch_boot(vm.clone(), started));
        tokio::spawn(watch_exit(self.clone(), vm.clone()));
        Ok(vm)
    }

    /// Hard reset of the VM (QMP `system_reset`), as a crash and reboot of
    /// its guest would be: the guest boots again with no role.
    pub async fn reset(&self, name: &str) -> Result<Arc<Vm>, AgentError> {
        let vm = self.get(name)?;
        let state = vm.status().state;
        if !matches!(state, VmState::Running | VmState::Booting) {
            return Err(AgentError::Conflict(format!(
                "VM `{name}` is {state:?}; only a running or booting VM can be reset"
            )));
        }
        let qmp = vm
            .qmp()
            .ok_or_else(|| AgentError::Conflict(format!("VM `{name}` has no running QEMU")))?;
        vm.sign(Sign::ResetOrdered);
        if let Err(e) = qmp.execute("system_reset", None).await {
            vm.sign(Sign::ResetFailed);
            return Err(e.into());
        }
        tracing::warn!(vm = %name, "VM reset on request");
        Ok(vm)
    }

    pub async fn guest_request(&self, name: &str, op: Op) -> Result<serde_json::Value, AgentError> {
        if matches!(op, Op::InjectFault { .. }) && !self.cfg.allow_faults {
            return Err(AgentError::Forbidden(format!(
                "fault injection is off on host {} (start its agent with --allow-faults)",
                self.cfg.name
            )));
        }
        let vm = self.get(name)?;
        let ctl = vm.ctl.lock().await;
        let c = ctl.as_ref().ok_or_else(|| {
            AgentError::GuestNotConnected(format!("VM `{name}`'s guest is not connected yet"))
        })?;
        c.request(op, Duration::from_secs(10))
            .await
            .map_err(|e| match e {
                crate::control::ControlError::Refused(p) => {
                    let msg = format!("VM `{name}`'s guest refused ({}): {}", p.code, p.message);
                    match p.changed_nothing() {
                        true => AgentError::GuestUnchanged(msg),
                        false => AgentError::Conflict(msg),
                    }
                }
                other => AgentError::Unavailable(format!("VM `{name}`: {other}")),
            })
    }

    /// Stops every VM (agent shutdown).
    pub async fn shutdown(&self) {
        for vm in self.all() {
            self.teardown(&vm).await;
        }
        for r in self.replicas.list() {
            let _ = self.replicas.delete(&r.vm);
        }
    }
}

/// Records the boot time at `DUPLEX-INIT`, then connects the control
/// channel and waits for the guest's `hello`.
pub async fn watch_boot(vm: Arc<Vm>, started: Instant) {
    if let Some(at) =
        crate::serial::wait_marker(&vm.paths.serial, "DUPLEX-INIT", INIT_TIMEOUT).await
    {
        let ms = at.duration_since(started).as_millis() as u64;
        vm.update(|s| s.boot_ms = Some(ms));
        tracing::info!(vm = %vm.spec.name, boot_ms = ms, "guest reached /init");
    } else {
        tracing::warn!(vm = %vm.spec.name, "guest did not reach /init");
        return;
    }
    connect_guest(&vm, READY_TIMEOUT.saturating_sub(started.elapsed())).await;
}

/// Connects the control channel and waits for `hello`; marks the VM running.
pub async fn connect_guest(vm: &Arc<Vm>, within: Duration) {
    let deadline = Instant::now() + within;
    let name = vm.spec.name.clone();
    while Instant::now() < deadline {
        match ControlClient::connect(&vm.paths.ctl, &name, vm.event_sink()).await {
            Ok(c) => {
                while Instant::now() < deadline {
                    match c.request(Op::Hello, Duration::from_secs(1)).await {
                        Ok(hello) => {
                            tracing::info!(vm = %name, "guest answered hello");
                            // The channel first: a VM shown with a guest
                            // takes guest requests.
                            *vm.ctl.lock().await = Some(c);
                            vm.update(|s| {
                                s.guest = Some(hello);
                                if matches!(s.state, VmState::Booting | VmState::Incoming) {
                                    s.state = VmState::Running;
                                }
                            });
                            return;
                        }
                        Err(crate::control::ControlError::Closed) => break,
                        Err(_) => {}
                    }
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    tracing::warn!(vm = %name, "guest never answered on the control channel");
}

/// Marks the VM crashed if its QEMU exits while it is still in the table;
/// reports its guest silent, or panicking on its console.
pub async fn watch_exit(host: Arc<Host>, vm: Arc<Vm>) {
    let start = std::fs::metadata(&vm.paths.serial).map_or(0, |m| m.len());
    let mut console = Some(crate::console_watch::ConsoleWatch::from(start));
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(mut c) = console.take() {
            let log = vm.paths.serial.clone();
            let looked = tokio::task::spawn_blocking(move || {
                let r = c.look(&log);
                (c, r)
            })
            .await;
            if let Ok((c, r)) = looked {
                if let Ok(Some(line)) = r {
                    vm.panicked(&line);
                }
                console = Some(c);
            }
        }
        if host
            .get(&vm.spec.name)
            .map(|v| !Arc::ptr_eq(&v, &vm))
            .unwrap_or(true)
        {
            return;
        }
        let Ok(mut rt) = vm.rt.try_lock() else {
            continue;
        };
        let Some(r) = rt.as_mut() else { return };
        if let Some(status) = r.qemu.try_exited() {
            vm.update(|s| s.state = VmState::Crashed);
            vm.fail(
                Cause::QemuCrashed,
                format!("QEMU exited unexpectedly: {status}"),
            );
            return;
        }
        drop(rt);
        vm.check_silence();
    }
}

/// The self-fence lease configured (only with a controller: a standalone
/// agent has nobody to be cut off from).
fn self_fence_period(cfg: &AgentConfig) -> Option<Duration> {
    let ms = cfg.controller.as_ref()?.self_fence_ms?;
    Some(Duration::from_millis(ms))
}

/// Whether a network interface of this name exists in this namespace
/// (left by something else, or by a VM whose teardown has not finished).
/// A tap name no VM of `vms` and no interface of this host has.
fn free_tap(vms: &BTreeMap<String, Arc<Vm>>, vm: &str) -> Result<String, AgentError> {
    duplex_net::tap::free_tap_name(vm, |t| {
        vms.values().any(|v| v.tap == t) || interface_exists(t)
    })
    .ok_or_else(|| {
        AgentError::Conflict(format!(
            "no free interface name for VM `{vm}` after {} tries",
            duplex_net::tap::TAP_NAME_TRIES
        ))
    })
}

fn interface_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// How long a tap of the same name may take to go away: the element of a
/// VM's previous QEMU closes it from tasks that end just after it stopped.
const TAP_FREE_WAIT: Duration = Duration::from_secs(3);

async fn create_tap(name: &str, bridge: &str) -> Result<Tap, duplex_net::tap::TapError> {
    let deadline = Instant::now() + TAP_FREE_WAIT;
    loop {
        match Tap::create(name, bridge).await {
            Err(duplex_net::tap::TapError::Create { source, .. })
                if source.kind() == std::io::ErrorKind::ResourceBusy
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}
