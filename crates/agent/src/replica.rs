//! The backup's side of S2: replicas of VMs whose primary runs on another
//! host. A replica takes checkpoints whole and in order
//! (`duplex_replica::image`); on the controller's order it is activated:
//! QEMU starts on its RAM with the last committed epoch's device state and
//! the guest runs on from exactly that state, announced on the network.

use crate::host::{connect_guest, watch_exit, Host, Start, READY_TIMEOUT};
use crate::site::StandIn;
use crate::AgentError;
use duplex_core::agent_api::{EpochAck, ReplicaInfo, ReplicaRequest, VmInfo, VmState};
use duplex_core::site::{BufferMode, SiteBufferStatus};
use duplex_core::vm_spec::VmSpec;
use duplex_net::stage::Direction;
use duplex_replica::image::Replica;
use duplex_replica::wire::Checkpoint;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Largest checkpoint a backup takes in one message (a 128 MiB guest
/// rewriting all of its RAM within one epoch, with room to spare).
pub const MAX_CHECKPOINT_BYTES: usize = 192 << 20;

#[derive(Default)]
pub struct Replicas {
    map: Mutex<BTreeMap<String, Arc<Slot>>>,
}

pub struct Slot {
    spec: VmSpec,
    ram_file: PathBuf,
    /// `None` once activated (later checkpoints are refused).
    replica: Mutex<Option<Replica>>,
    info: Mutex<ReplicaInfo>,
    /// S5: the element buffering for the VM in this site.
    standin: Mutex<Option<StandIn>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Replicas {
    fn get(&self, name: &str) -> Result<Arc<Slot>, AgentError> {
        lock(&self.map)
            .get(name)
            .cloned()
            .ok_or_else(|| AgentError::NotFound(format!("no replica of VM `{name}` on this host")))
    }

    pub fn list(&self) -> Vec<ReplicaInfo> {
        lock(&self.map)
            .values()
            .map(|s| lock(&s.info).clone())
            .collect()
    }

    pub fn info(&self, name: &str) -> Result<ReplicaInfo, AgentError> {
        Ok(lock(&self.get(name)?.info).clone())
    }

    /// Drops a replica and its files (and its stand-in: what it buffered
    /// is dropped with it).
    pub fn delete(&self, name: &str) -> Result<(), AgentError> {
        self.take(name).map(drop)
    }

    /// Removes a replica, its files, and gives back its stand-in.
    fn take(&self, name: &str) -> Result<Option<StandIn>, AgentError> {
        let slot = lock(&self.map).remove(name).ok_or_else(|| {
            AgentError::NotFound(format!("no replica of VM `{name}` on this host"))
        })?;
        if lock(&slot.replica).take().is_some() {
            let _ = std::fs::remove_file(&slot.ram_file);
        }
        let standin = lock(&slot.standin).take();
        Ok(standin)
    }

    /// What the stand-in of `name`'s replica buffers.
    pub fn buffer_status(&self, name: &str) -> Result<Option<SiteBufferStatus>, AgentError> {
        let slot = self.get(name)?;
        let standin = lock(&slot.standin);
        Ok(standin.as_ref().map(|s| s.element.site_buffer_status()))
    }
}

/// S5: the replica of `name` buffers what its site sends to the VM (an
/// element standing in for it on this host, answering for its address and
/// `addresses`), from now until it runs here.
pub async fn buffer(
    host: &Host,
    name: &str,
    addresses: &[Ipv4Addr],
) -> Result<SiteBufferStatus, AgentError> {
    let slot = host.replicas.get(name)?;
    if let Some(s) = lock(&slot.standin).as_ref() {
        return Ok(s.element.site_addresses(addresses));
    }
    let standin = host.stand_in(&slot.spec).await?;
    let mut guard = lock(&slot.standin);
    let s = guard.get_or_insert(standin);
    tracing::info!(vm = %name, ?addresses, "S5: buffering for the VM in this site");
    Ok(s.element.site_addresses(addresses))
}

/// Makes a new, empty replica of `req.spec` here (replacing one of the
/// same VM: its primary starts over with a base round; a stand-in the old
/// one had keeps buffering for the new one).
pub fn create(host: &Host, req: ReplicaRequest) -> Result<ReplicaInfo, AgentError> {
    create_with(host, req.spec, None, None)
}

/// A VM's state to take over as a replica as it is: its RAM file, its
/// device state, the epoch it is (S5: the side a VM just left).
pub struct Kept {
    pub ram: PathBuf,
    pub device_state: Vec<u8>,
    pub epoch: u64,
}

/// As [`create`], with `standin` buffering for it (else the old one's),
/// and holding `kept` from the start (else empty).
pub fn create_with(
    host: &Host,
    spec: VmSpec,
    standin: Option<StandIn>,
    kept: Option<Kept>,
) -> Result<ReplicaInfo, AgentError> {
    spec.validate()
        .map_err(|e| AgentError::BadRequest(e.to_string()))?;
    if !spec.replicated {
        return Err(AgentError::BadRequest(format!(
            "VM `{}` is not replicated (`replicated: true`)",
            spec.name
        )));
    }
    if host.get(&spec.name).is_ok() {
        return Err(AgentError::Conflict(format!(
            "VM `{}` runs on this host; its replica must be on another",
            spec.name
        )));
    }
    let old_standin = host.replicas.take(&spec.name).ok().flatten();
    let standin = standin.or(old_standin);
    let ram_bytes = u64::from(spec.memory_mib) << 20;
    let ram_file = host.ram_file(&spec.name).with_extension("replica");
    let dir = host.cfg.data_dir.join("replicas");
    std::fs::create_dir_all(&dir).map_err(AgentError::io(format!("create {}", dir.display())))?;
    let state = dir.join(format!("{}.state", spec.name));
    let made = match kept {
        Some(k) => {
            let adopted = std::fs::rename(&k.ram, &ram_file)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    Replica::adopt(&ram_file, &state, ram_bytes, &k.device_state, k.epoch)
                        .map_err(|e| e.to_string())
                });
            if adopted.is_err() {
                let _ = std::fs::remove_file(&k.ram);
                let _ = std::fs::remove_file(&ram_file);
            }
            adopted
        }
        None => Replica::create(&ram_file, &state, ram_bytes).map_err(|e| e.to_string()),
    };
    let replica = made.map_err(AgentError::Unavailable)?;
    let info = ReplicaInfo {
        vm: spec.name.clone(),
        ram_bytes,
        applied: replica.applied(),
        checkpoints: 0,
        bytes_received: 0,
        last_error: None,
    };
    let slot = Arc::new(Slot {
        spec: spec.clone(),
        ram_file,
        replica: Mutex::new(Some(replica)),
        info: Mutex::new(info.clone()),
        standin: Mutex::new(standin),
    });
    lock(&host.replicas.map).insert(spec.name.clone(), slot);
    tracing::info!(vm = %spec.name, ram_bytes, "S2 replica created");
    Ok(info)
}

/// Applies one checkpoint (the body of `PUT /v1/replicas/{name}/epochs`).
pub async fn apply(
    host: &Host,
    name: &str,
    body: axum::body::Bytes,
) -> Result<EpochAck, AgentError> {
    let slot = host.replicas.get(name)?;
    let len = body.len() as u64;
    let result = tokio::task::spawn_blocking({
        let slot = slot.clone();
        move || -> Result<Option<u64>, String> {
            let cp = Checkpoint::decode(&body).map_err(|e| e.to_string())?;
            let mut guard = lock(&slot.replica);
            let replica = guard.as_mut().ok_or_else(|| {
                "the replica was activated; it takes no more checkpoints".to_string()
            })?;
            replica.apply(&cp).map_err(|e| e.to_string())
        }
    })
    .await
    .map_err(|e| AgentError::Unavailable(format!("applying a checkpoint: {e}")))?;
    let mut info = lock(&slot.info);
    info.checkpoints += 1;
    info.bytes_received += len;
    match result {
        Ok(applied) => {
            info.applied = applied;
            Ok(EpochAck { applied })
        }
        Err(e) => {
            info.last_error = Some(e.clone());
            Err(AgentError::BadRequest(format!(
                "checkpoint for `{name}` refused: {e}"
            )))
        }
    }
}

/// Takes the replica for its activation: its epoch, its device state's
/// file, and the hashes of the RAM it holds (S5: the side the VM leaves
/// keeps exactly that state; epochs towards it go on from there).
/// Only a replica that buffers for its site (S5) is hashed: a plain S2
/// failover's epochs start over with a base round anyway.
fn take_for_activation(
    slot: &Slot,
) -> Result<(u64, PathBuf, Option<duplex_replica::scan::PageHashes>), &'static str> {
    let mut guard = lock(&slot.replica);
    let replica = guard.as_ref().ok_or("was activated already")?;
    let epoch = replica
        .applied()
        .ok_or("holds no committed epoch yet (its base round is not done): it cannot run")?;
    let path = replica.state_path().to_path_buf();
    let buffers = lock(&slot.standin).is_some();
    let hashes = buffers.then(|| duplex_replica::scan::PageHashes::of(replica.ram()));
    *guard = None;
    Ok((epoch, path, hashes))
}

/// Failover: runs the VM here from the replica's last committed epoch.
pub async fn activate(host: &Arc<Host>, name: &str) -> Result<VmInfo, AgentError> {
    let slot = host.replicas.get(name)?;
    let taken = tokio::task::spawn_blocking({
        let slot = slot.clone();
        move || take_for_activation(&slot)
    })
    .await
    .map_err(|e| AgentError::Unavailable(format!("taking the replica: {e}")))?;
    let (epoch, state_path, hashes) =
        taken.map_err(|e| AgentError::Conflict(format!("the replica of `{name}` {e}")))?;
    let state = std::fs::read(&state_path)
        .map_err(AgentError::io(format!("read {}", state_path.display())))?;
    let standin = lock(&slot.standin).take();
    let vm = host.reserve_on(&slot.spec, VmState::Incoming, standin)?;
    *lock(&vm.shared_base) = hashes.map(|h| (epoch, h));
    let ram = vm
        .ram_file
        .clone()
        .ok_or_else(|| AgentError::Unavailable("a replicated VM without a RAM file".into()))?;
    let started = async {
        // The switch drops what it still holds of the lost primary: that
        // output came from state after the epoch this VM resumes from.
        let switch = crate::switch_link::for_vm(host.switch.as_ref(), slot.spec.hold_at, name)?;
        if let Some(link) = switch {
            let mac = slot.spec.mac();
            link.send(&[duplex_net::switch_proto::Msg::Claim { mac, epoch: 0 }])?;
        }
        std::fs::rename(&slot.ram_file, &ram).map_err(AgentError::io(format!(
            "move {} to {}",
            slot.ram_file.display(),
            ram.display()
        )))?;
        crate::qemu_user::give(host.cfg.qemu_user.as_ref(), &ram, 0o600)?;
        host.launch(&vm, Start::Checkpoint).await?;
        let qmp = vm
            .qmp()
            .ok_or_else(|| AgentError::Unavailable("QEMU vanished".into()))?;
        let socket = vm.paths.dir.join("checkpoint-in.sock");
        duplex_qemu::checkpoint::load_device_state(&qmp, &socket, &state).await?;
        Ok::<_, AgentError>(())
    }
    .await;
    if let Err(e) = started {
        // The stand-in goes back to the slot (still buffering): what this
        // site sent the VM is kept for whoever runs it next.
        let back = match vm.rt.lock().await.take() {
            Some(rt) => {
                rt.qemu.stop().await;
                vm.txbuf().map(|txbuf| StandIn {
                    element: rt.element,
                    txbuf,
                })
            }
            None => lock(&vm.standin).take(),
        };
        if let Some(b) = back {
            b.element.site_buffer(BufferMode::Buffer);
            *lock(&slot.standin) = Some(b);
        }
        host.teardown(&vm).await;
        host.forget(name);
        return Err(e);
    }
    lock(&host.replicas.map).remove(name);
    // The guest does not know it moved: announce its address from here.
    if let Some(rt) = vm.rt.lock().await.as_ref() {
        let garp = duplex_net::frame::gratuitous_arp(vm.spec.mac(), vm.spec.ip);
        rt.element.inject(Direction::FromGuest, garp);
        // What this site sent the VM while it ran elsewhere goes to it
        // first, in order, then what comes.
        rt.element.site_buffer(BufferMode::Drain);
    }
    vm.update(|s| s.state = VmState::Running);
    tracing::info!(vm = %name, epoch, "S2 replica activated: the VM runs here from its last committed epoch");
    tokio::spawn(watch_exit(host.clone(), vm.clone()));
    let guest = vm.clone();
    tokio::spawn(async move { connect_guest(&guest, READY_TIMEOUT).await });
    Ok(vm.info())
}
