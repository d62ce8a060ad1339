//! The host agent's HTTP/JSON API (`/v1`), as plain data shared by the agent
//! and its clients (lab, demo, controller, benchmarks).

use crate::mac::Mac;
use crate::vm_spec::VmSpec;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Which accelerator this host's QEMU uses and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelKind {
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelInfo {
    pub kind: AccelKind,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    pub name: String,
    pub version: String,
    pub accel: AccelInfo,
    pub qemu: String,
    pub listen: String,
    pub vms: Vec<VmSummary>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// QEMU started, guest not yet ready.
    Booting,
    Running,
    Paused,
    /// Outgoing live migration in progress (the VM still runs here).
    MigratingOut,
    /// Destination side: QEMU waits for the incoming stream.
    Incoming,
    /// QEMU exited on its own.
    Crashed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmSummary {
    pub name: String,
    pub state: VmState,
    pub ip: Ipv4Addr,
    pub mac: Mac,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmInfo {
    pub spec: VmSpec,
    pub mac: Mac,
    pub state: VmState,
    pub pid: Option<u32>,
    pub tap: String,
    /// Milliseconds from QEMU start to the guest's `DUPLEX-INIT` line.
    pub boot_ms: Option<u64>,
    /// The guest's answer to `hello` on the control channel, once connected.
    pub guest: Option<serde_json::Value>,
    pub serial_log: String,
    pub migration: Option<MigrationInfo>,
    /// The guest's latest watchdog heartbeat, and how long ago it came.
    #[serde(default)]
    pub heartbeat: Option<serde_json::Value>,
    #[serde(default)]
    pub heartbeat_age_ms: Option<u64>,
    /// Milliseconds since QEMU reported the guest reset, if no heartbeat
    /// came since: the guest is booting again and holds no role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_age_ms: Option<u64>,
    /// Isolated by the controller's order: cut off the network and paused,
    /// out of service until it is deleted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub isolated: bool,
    /// The latest failure found in the VM (S3 detection), until it is
    /// deleted: the controller acts once per `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<VmFailure>,
    /// A replicated VM's epochs towards its backup (S2), while they run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protection: Option<ProtectionSummary>,
}

impl VmInfo {
    /// A replicated VM running here whose epochs will not protect it (none
    /// run, they ended, or they are stalled too long): it needs a backup.
    pub fn needs_backup(&self) -> bool {
        self.spec.replicated
            && self.state == VmState::Running
            && self.protection.as_ref().is_none_or(|p| p.needs_backup())
    }
}

/// Where a replicated VM's epochs stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtectPhase {
    /// Filling the backup; it cannot take over yet.
    Base,
    /// Epochs commit.
    Running,
    /// The backup does not acknowledge: output is held.
    Stalled,
    /// The backup will not take over (the controller said so).
    Unprotected,
    /// The epochs ended on an error (see the VM's protection info).
    Failed,
}

impl ProtectPhase {
    /// Epochs run (or will) towards a backup that may take over.
    pub fn protects(self) -> bool {
        matches!(
            self,
            ProtectPhase::Base | ProtectPhase::Running | ProtectPhase::Stalled
        )
    }
}

/// What a host reports of a replicated VM's epochs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtectionSummary {
    /// The backup's agent URL.
    pub backup: String,
    pub phase: ProtectPhase,
    pub committed: u64,
    /// How long the epochs have been stalled (the backup silent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled_for_ms: Option<u64>,
    /// How old the state the backup holds is (since the newest checkpoint
    /// it applied was taken): what losing this host loses at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<u64>,
}

impl ProtectionSummary {
    /// Its epochs will not protect it: they ended, or the backup has not
    /// answered for [`crate::epoch::RESYNC_AFTER_MS`] while this host still
    /// reports (a partition between the two; a host that died would have
    /// gone silent by then). The controller gives it a (new) backup.
    pub fn needs_backup(&self) -> bool {
        !self.phase.protects()
            || self
                .stalled_for_ms
                .is_some_and(|ms| ms >= crate::epoch::RESYNC_AFTER_MS)
    }
}

/// A failure of a VM, found by its guest's middleware (the service died,
/// failed or hung its health check, the middleware died) or by its agent
/// (the guest went silent or rebooted by itself, QEMU died).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmFailure {
    /// Unique for this failure of this VM on this host (`<vm>@<agent
    /// start>.<n>`): a report repeats it until the next.
    pub id: String,
    pub cause: crate::escalation::Cause,
    pub detail: String,
    /// How long ago it was found.
    pub age_ms: u64,
}

/// Query of `POST /v1/vms`: how long the request waits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitFor {
    /// Return once QEMU runs.
    #[default]
    Started,
    /// Return once the guest printed `DUPLEX-INIT`.
    Init,
    /// Return once the guest answered `hello` on the control channel.
    Ready,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    /// Base URL of the destination agent, e.g. `http://10.77.0.12:7070`.
    pub to: String,
    #[serde(default)]
    pub tuning: MigrationTuning,
}

/// How QEMU runs one live migration; every field absent means Duplex's
/// default (see `duplex_qemu::migration`). Set on every migration, since
/// QEMU keeps parameters from one migration to the next.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationTuning {
    /// Bandwidth cap for the migration stream (MiB/s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bandwidth_mib: Option<u64>,
    /// Longest pause QEMU may plan for the final copy (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_limit_ms: Option<u64>,
    /// Throttle the guest's vCPUs, more with every pass, until the copy
    /// converges (QEMU's `auto-converge`; Nova's
    /// `live_migration_permit_auto_converge`, KubeVirt's
    /// `allowAutoConverge`). Without it a guest that dirties memory faster
    /// than the link carries it never finishes.
    #[serde(default)]
    pub auto_converge: bool,
    /// Send the stream in the clear instead of over TLS with the agents'
    /// certificates: only to measure what TLS costs (`bench/migrate`). The
    /// destination then takes the first connection to its port.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cleartext: bool,
}

impl MigrationTuning {
    /// QEMU's own bound on `downtime-limit` (2000 s).
    pub const MAX_DOWNTIME_LIMIT_MS: u64 = 2_000_000;

    /// What QEMU would refuse, named; checked where a request comes in.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_bandwidth_mib == Some(0) {
            return Err("tuning.max_bandwidth_mib must be at least 1 (MiB/s)".into());
        }
        match self.downtime_limit_ms {
            Some(0) => Err("tuning.downtime_limit_ms must be at least 1 (ms)".into()),
            Some(d) if d > Self::MAX_DOWNTIME_LIMIT_MS => Err(format!(
                "tuning.downtime_limit_ms {d} is above QEMU's limit of {} ms",
                Self::MAX_DOWNTIME_LIMIT_MS
            )),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationPhase {
    Preparing,
    Active,
    Completed,
    Failed,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MigrationProgress {
    pub elapsed_ms: u64,
    pub transferred_bytes: u64,
    pub remaining_bytes: u64,
    pub total_bytes: u64,
    pub passes: u64,
    pub expected_downtime_ms: Option<u64>,
    /// How much auto-converge slows the guest's vCPUs now (0-99 %).
    #[serde(default)]
    pub cpu_throttle_pct: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationStats {
    /// As reported by QEMU: setup to completion.
    pub total_ms: u64,
    /// As reported by QEMU: how long the VM was paused.
    pub downtime_ms: u64,
    pub setup_ms: u64,
    pub transferred_bytes: u64,
    pub passes: u64,
    /// Wall time of the whole orchestrated operation (prepare destination,
    /// migrate, hand over, clean up the source).
    pub orchestrated_ms: u64,
    /// The most auto-converge slowed the guest's vCPUs (%); 0 without it.
    #[serde(default)]
    pub max_cpu_throttle_pct: u64,
    /// The stream went over TLS: QEMU's own migration parameters named
    /// TLS credentials when it started (read back, not assumed).
    #[serde(default)]
    pub encrypted: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationInfo {
    pub to: String,
    pub phase: MigrationPhase,
    pub progress: MigrationProgress,
    pub stats: Option<MigrationStats>,
    pub error: Option<String>,
}

/// Destination side: the source asks the destination to prepare.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncomingRequest {
    pub spec: VmSpec,
    /// The root disk base the VM runs on (`rootfs-<hash>.qcow2` of its
    /// image), which the destination must have: its overlay goes along by
    /// block migration and only means something on the same base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_base: Option<String>,
    /// The stream comes in the clear (see [`MigrationTuning::cleartext`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cleartext: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncomingReady {
    /// Where the source sends the stream, e.g. `tcp:10.77.0.12:49152`.
    pub uri: String,
}

/// Per-peer counters of one VM's network element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCounters {
    pub mac: Mac,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// Frames the VM sent to this peer.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames the VM received from this peer.
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficReport {
    pub vm: String,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub peers: Vec<PeerCounters>,
    /// Frames not delivered, by reason. The element never drops silently.
    pub drops: Vec<DropCount>,
    /// Frames held now, by the stage holding them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<HeldCount>,
}

/// Frames a stage of a VM's network element holds now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldCount {
    /// [`HELD_HANDOVER`], [`HELD_SITE`] or [`HELD_EPOCH`].
    pub stage: String,
    pub frames: u64,
}

/// Held for a pair's switchover (its service address changing hands).
pub const HELD_HANDOVER: &str = "handover";
/// Held for a VM running in the other site (S5).
pub const HELD_SITE: &str = "site_buffer";
/// A replicated VM's output, held until its epoch commits (S2).
pub const HELD_EPOCH: &str = "epoch";

/// What an S2 transmit buffer did with a replicated VM's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassReport {
    pub ruleset_version: u64,
    /// Class-2 frames are being held (epochs are running).
    pub holding: bool,
    /// Frames held now belong to this epoch.
    pub open_epoch: u64,
    pub committed_epoch: u64,
    /// Frames each rule decided, since this ruleset version was applied.
    pub rules: Vec<RuleHits>,
    pub default_class: crate::classify::Class,
    pub default_frames: u64,
    pub sent_at_once: u64,
    pub held_now: u64,
    pub held_bytes_now: u64,
    pub held_max: u64,
    pub held_total: u64,
    pub released: u64,
    /// Held frames dropped at failover (from state that was lost).
    pub discarded: u64,
    /// Class-2 frames dropped because the buffer was full.
    pub dropped_full: u64,
    /// Where class 2 waits (in the switch: marked here, held there).
    #[serde(default)]
    pub hold_at: crate::vm_spec::HoldAt,
    /// Class-2 frames sent marked for the switch to hold.
    #[serde(default)]
    pub marked: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleHits {
    pub rule: String,
    pub class: crate::classify::Class,
    pub frames: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropCount {
    pub reason: String,
    pub packets: u64,
}

/// An order to a VM's network element about the pair's service address
/// during a switchover (`POST /v1/vms/{name}/handover`): see
/// `duplex_net::handover`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum HandoverOrder {
    /// Keep frames for `vip` from the VM (it is about to release it).
    Hold { vip: std::net::Ipv4Addr },
    /// Send held and later frames for `vip` to the VM with MAC `to`.
    Forward {
        vip: std::net::Ipv4Addr,
        to: crate::mac::Mac,
    },
    /// Back to plain delivery; held frames go to the VM.
    Release,
}

/// What a network element does with a service address now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoverStatus {
    /// `idle`, `holding` or `forwarding`.
    pub mode: String,
    pub vip: Option<std::net::Ipv4Addr>,
    pub to: Option<crate::mac::Mac>,
    /// Frames held now.
    pub holding: u64,
    /// Totals since the element started.
    pub held_total: u64,
    pub forwarded_total: u64,
    /// Held frames handed to the VM after all (release, or the hold expired).
    pub released_to_vm_total: u64,
    pub expired_holds: u64,
}

/// Body of every non-2xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// HTTP header on every order a controller sends to an agent: the
/// controller's fencing token (its leader lease's epoch, decimal). An agent
/// persists the highest token it has seen and refuses lower ones with
/// `409 stale_fence`. Orders without the header come from an operator
/// talking to the agent directly and are accepted.
pub const FENCE_HEADER: &str = "duplex-fence";

/// How often an agent reports to its controller (`POST
/// /v1/agents/{host}/heartbeat`); the first report registers the host.
pub const AGENT_HEARTBEAT_MS: u64 = 1000;

/// Body of an agent's heartbeat to the controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostReport {
    /// The agent's own description, as `GET /v1/host` gives it.
    pub host: HostInfo,
    /// Base URL the controller reaches this agent at, e.g. `http://10.77.0.11:7070`.
    pub url: String,
    /// What this host can hold.
    pub capacity: HostCapacity,
    /// Every VM on the host, in full.
    pub vms: Vec<VmInfo>,
    /// The network element's counters of every VM (for the traffic matrix).
    pub traffic: Vec<TrafficReport>,
    /// Highest fencing token this agent has accepted (0: none yet).
    pub fence: u64,
    /// Counts the agent's reports since it started; a drop back to 1 means
    /// the agent restarted.
    pub seq: u64,
    /// The agent fences itself after this long without an accepted report
    /// (`None`: it does not); the controller counts on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_fence_ms: Option<u64>,
    /// The version of the S2 ruleset the host classifies with.
    #[serde(default)]
    pub rules_version: u64,
    /// The site the host is in (the agent's `--site`); absent: the
    /// controller's default site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// What its VMs use (absent: not measured, e.g. an older agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<HostUsage>,
}

/// What a host's VMs use, as its agent measures their QEMU processes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostUsage {
    pub vms: Vec<VmUsage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmUsage {
    pub vm: String,
    /// CPU seconds its QEMU process used since it started (user + system;
    /// a rate comes from two reports).
    pub cpu_seconds: f64,
    /// Its QEMU process's resident memory, MiB.
    pub rss_mib: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCapacity {
    pub vcpus: u32,
    pub memory_mib: u64,
}

/// The controller's answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    /// When to report next.
    pub interval_ms: u64,
    /// The controller's current fencing token.
    pub fence: u64,
    /// The controller holds this host fenced: its VMs are stale and will be
    /// destroyed; the agent keeps them cut off meanwhile.
    #[serde(default)]
    pub host_fenced: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_tuning_is_optional_checked_and_strict() {
        let r: MigrateRequest = serde_json::from_str(r#"{"to":"http://a:1"}"#).unwrap();
        assert_eq!(r.tuning, MigrationTuning::default());
        let r: MigrateRequest = serde_json::from_str(
            r#"{"to":"http://a:1","tuning":{"auto_converge":true,"downtime_limit_ms":300}}"#,
        )
        .unwrap();
        assert!(r.tuning.auto_converge && r.tuning.validate().is_ok());
        assert!(serde_json::from_str::<MigrateRequest>(
            r#"{"to":"x","tuning":{"auto_converg":true}}"#
        )
        .is_err());
        let bad = |t: MigrationTuning| t.validate().unwrap_err();
        assert!(bad(MigrationTuning {
            max_bandwidth_mib: Some(0),
            ..Default::default()
        })
        .contains("max_bandwidth_mib"));
        assert!(bad(MigrationTuning {
            downtime_limit_ms: Some(0),
            ..Default::default()
        })
        .contains("downtime_limit_ms"));
        assert!(bad(MigrationTuning {
            downtime_limit_ms: Some(MigrationTuning::MAX_DOWNTIME_LIMIT_MS + 1),
            ..Default::default()
        })
        .contains("QEMU's limit"));
    }
}

/// Body of `GET`/`POST /v1/fence`: the highest token the agent obeyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceState {
    pub fence: u64,
}

/// Error code of a guest order the guest refused before changing anything.
pub const GUEST_UNCHANGED: &str = "guest_unchanged";
/// Error code of a guest order the agent could not pass on: no channel to
/// the guest (nothing was sent).
pub const GUEST_NOT_CONNECTED: &str = "guest_not_connected";
/// Error code of an order carrying a fencing token older than one obeyed.
pub const STALE_FENCE: &str = "stale_fence";

/// `POST /v1/vms/{name}/protect`: start S2 epochs of a replicated VM
/// towards the replica the agent at `backup` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectRequest {
    /// The backup host's agent URL (`https://IP:PORT`).
    pub backup: String,
    #[serde(default)]
    pub epochs: crate::epoch::EpochConfig,
    /// The backup already holds the VM's state as of this epoch, the one
    /// the VM was started from here (S5: the side it just left): no base
    /// round; epochs go on from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_epoch: Option<u64>,
}

/// How one epoch's checkpoint went, for operators and `bench/s2`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochTiming {
    pub epoch: u64,
    /// From the `stop` order until QEMU confirmed it.
    pub stop_us: u64,
    /// Saving the device state.
    pub save_us: u64,
    /// Finding and copying the changed pages.
    pub scan_us: u64,
    /// From the `cont` order until QEMU confirmed it.
    pub cont_us: u64,
    /// The guest's whole pause.
    pub pause_us: u64,
    pub pages: u64,
    pub bytes: u64,
    /// From the capture until the backup's acknowledgement (0: not yet).
    pub commit_us: u64,
}

/// The primary's side of a replicated VM (`GET /v1/vms/{name}/protect`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtectionInfo {
    pub backup: String,
    pub epochs: crate::epoch::EpochConfig,
    pub phase: ProtectPhase,
    /// Newest epoch the backup applied (0: it cannot take over yet).
    pub committed: u64,
    pub captured: u64,
    pub failed_captures: u64,
    pub base_pages: u64,
    pub last_error: Option<String>,
    /// The newest epochs, oldest first (at most [`RECENT_EPOCHS`]).
    pub recent: Vec<EpochTiming>,
}

/// How many epochs' timings a primary keeps.
pub const RECENT_EPOCHS: usize = 512;

/// `POST /v1/replicas`: hold a replica of a replicated VM here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaRequest {
    pub spec: crate::vm_spec::VmSpec,
}

/// A backup's replica (`GET /v1/replicas/{name}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaInfo {
    pub vm: String,
    pub ram_bytes: u64,
    /// Newest consistent epoch held (`None`: it cannot be started yet).
    pub applied: Option<u64>,
    pub checkpoints: u64,
    pub bytes_received: u64,
    pub last_error: Option<String>,
}

/// The backup's answer to a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochAck {
    pub applied: Option<u64>,
}
