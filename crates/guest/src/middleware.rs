//! The middleware: carries out role commands (through the pure role
//! machine), restart phases and configuration, and reports status.

use crate::replica::{Replica, RoleView};
use crate::service::{Health, Supervisor, Vars};
use crate::state::{PairConfig, Persisted, RUN_DIR};
use crate::{address, GuestFacts};
use duplex_core::escalation::Cause;
use duplex_core::guest_proto::{
    Fault, Op, RestartPhase, ServiceFailed, EFFECT_FAILED, NOT_CONFIGURED, REFUSED, VERSION,
};
use duplex_core::role::{Effect, Role};
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the peer may take to acknowledge the handover snapshot.
const HANDOVER_SYNC_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Middleware {
    pub facts: GuestFacts,
    pub state: Mutex<Persisted>,
    pub service: Supervisor,
    pub replica: Arc<Replica>,
    pub load: crate::load::MemoryLoad,
    /// Claiming the service address on the way to ACT: once it is added,
    /// before it is announced (from then on clients send here), writes are
    /// taken (refused, a new call would be dropped unanswered), before the
    /// role is saved. Not before it is added: a late write's reply sent
    /// from an address not yet local is lost. Cleared once the role is
    /// saved, or if the claim fails.
    pub claiming: std::sync::atomic::AtomicBool,
    /// Heartbeat events sent so far.
    pub beats: std::sync::atomic::AtomicU64,
    /// What the guest-to-guest heartbeat hears of the peer, once started.
    pub ear: std::sync::OnceLock<crate::peer_beat::Shared>,
    /// What the pings hear of the service network's witness, once started.
    pub witness: std::sync::OnceLock<crate::peer_beat::Shared>,
    /// Health checks failed in a row (reported once at [`HEALTH_FAILS`]).
    pub health_fails: std::sync::atomic::AtomicU32,
}

/// Health checks that must fail in a row before the service is reported
/// failed (one bad answer is not a failure).
pub const HEALTH_FAILS: u32 = 3;
const FAULT_DELAY: Duration = Duration::from_millis(duplex_core::guest_proto::FAULT_DELAY_MS);

impl RoleView for Middleware {
    fn is_active(&self) -> bool {
        self.claiming.load(std::sync::atomic::Ordering::SeqCst)
            || self.persisted().role.role == Role::Act
    }
    fn peer(&self) -> Option<Ipv4Addr> {
        self.persisted().config.and_then(|c| c.peer)
    }
    fn peer_lost(&self) -> bool {
        self.ear
            .get()
            .and_then(crate::peer_beat::heard)
            .is_some_and(|p| p.lost)
    }
    fn peer_heard(&self) -> bool {
        self.ear
            .get()
            .and_then(crate::peer_beat::heard)
            .is_some_and(|p| !p.lost)
    }
    fn key(&self) -> Option<duplex_core::replica_key::ReplicaKey> {
        self.persisted().config.and_then(|c| c.key)
    }
}

/// An op's failure, answered with this code and message.
pub struct OpError(pub &'static str, pub String);

impl Middleware {
    /// The peer's address, once configured.
    pub fn peer_address(&self) -> Option<Ipv4Addr> {
        self.persisted().config.and_then(|c| c.peer)
    }

    /// The service network's witness, once configured.
    pub fn witness_address(&self) -> Option<Ipv4Addr> {
        self.persisted().config.and_then(|c| c.witness)
    }

    pub fn persisted(&self) -> Persisted {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut Persisted)) {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g);
        g.save(Path::new(RUN_DIR));
    }

    /// After a (re)start: restore the service and the address per the
    /// persisted role.
    pub fn resume(&self) {
        self.update(|p| p.middleware_starts += 1);
        let p = self.persisted();
        if p.middleware_starts > 1 && !p.restart_ordered {
            self.service.report(ServiceFailed {
                cause: Cause::MiddlewareSilent,
                detail: format!(
                    "the middleware ended unexpectedly and was restarted (start {} in this boot)",
                    p.middleware_starts
                ),
            });
        }
        self.update(|p| p.restart_ordered = false);
        if let Some(c) = p.config {
            self.service.want(vars(&c));
            if p.role.role == Role::Act {
                if let Err(e) = address::claim(&c, || {}) {
                    eprintln!("duplex guest: re-claiming {}: {e}", c.vip);
                }
            }
        }
    }

    pub fn handle(&self, op: &Op) -> Result<Value, OpError> {
        if let Some((cmd, token)) = op.role_command() {
            return self.role(cmd, token);
        }
        match op {
            Op::Hello => Ok(json!({
                "versions": [VERSION],
                "name": self.facts.name,
                "boot_id": self.facts.boot_id,
                "duplex": env!("CARGO_PKG_VERSION"),
                "uptime_ms": self.facts.started.elapsed().as_millis() as u64,
            })),
            Op::Status => Ok(self.status()),
            Op::Configure {
                vip,
                vip_prefix_len,
                peer,
                witness,
                key,
            } => {
                if !(8..=32).contains(vip_prefix_len) {
                    return Err(OpError(
                        "bad_args",
                        format!("vip_prefix_len {vip_prefix_len} is outside 8..=32"),
                    ));
                }
                let new = PairConfig {
                    vip: *vip,
                    vip_prefix_len: *vip_prefix_len,
                    peer: *peer,
                    witness: *witness,
                    key: *key,
                };
                let old = self.persisted().config;
                if let Some(o) = old.filter(|o| o.vip != new.vip && self.is_active()) {
                    return Err(OpError(
                        "conflict",
                        format!(
                            "this VM is ACT for {}; demote it before changing the service address",
                            o.vip
                        ),
                    ));
                }
                self.update(|p| p.config = Some(new));
                self.service.want(vars(&new));
                Ok(self.status())
            }
            Op::RestartPhase { phase } => self.restart(*phase),
            Op::InjectFault { fault } => self.inject(*fault),
            Op::Backup { after } => self
                .replica
                .backup_page(after.as_deref())
                .map_err(|e| OpError("failed", e.to_string()))
                .and_then(|p| {
                    serde_json::to_value(p).map_err(|e| OpError("failed", e.to_string()))
                }),
            Op::Restore {
                entries,
                first,
                source,
            } => {
                let role = self.persisted().role.role;
                if role != Role::None {
                    return Err(OpError(
                        duplex_core::guest_proto::REFUSED,
                        format!(
                            "this VM is {role:?} already: its pair's state is newer than {source}"
                        ),
                    ));
                }
                let keys = self.replica.restore(entries, *first);
                eprintln!("duplex guest: service data from {source}: {keys} keys stored");
                Ok(json!({"keys": keys}))
            }
            Op::Rehearse => {
                let started = std::time::Instant::now();
                // The handover barrier's digest, then the address path.
                let keys = self.replica.rehearse();
                crate::address::rehearse().map_err(|e| OpError("failed", e))?;
                // A role change's bookkeeping: the state file, rewritten
                // as it is, and the answer.
                self.update(|_| {});
                let _ = self.status();
                Ok(json!({"keys": keys, "rehearsed_ms": started.elapsed().as_millis() as u64}))
            }
            Op::MemoryLoad {
                mib,
                mib_per_s,
                while_act,
            } => match self.load.set(*mib, *mib_per_s, *while_act) {
                Ok(pid) => {
                    self.load.follow_role(self.is_active());
                    Ok(
                        json!({"memory_load": {"mib": mib, "mib_per_s": mib_per_s, "while_act": while_act, "pid": pid}}),
                    )
                }
                Err(e) => Err(OpError("bad_args", e)),
            },
            _ => Err(OpError("unknown_op", "not handled".into())),
        }
    }

    fn role(&self, cmd: duplex_core::role::RoleCommand, token: u64) -> Result<Value, OpError> {
        let started = std::time::Instant::now();
        let p = self.persisted();
        let (next, effects) = p
            .role
            .apply(cmd, token)
            .map_err(|e| OpError(REFUSED, e.to_string()))?;
        let config = p.config;
        if !effects.is_empty() && config.is_none() {
            return Err(OpError(
                NOT_CONFIGURED,
                "no service address yet: send `configure` first".into(),
            ));
        }
        let mut timings = vec![format!("checks {} ms", started.elapsed().as_millis())];
        for fx in &effects {
            let Some(c) = config else { break };
            let t = std::time::Instant::now();
            let res = match fx {
                Effect::ReleaseAddress => {
                    // A graceful handover first brings the peer fully up to date.
                    if cmd == duplex_core::role::RoleCommand::SwitchoverPrepare {
                        if let Err(e) = self.replica.sync_peer(self, HANDOVER_SYNC_TIMEOUT) {
                            return Err(OpError(
                                EFFECT_FAILED,
                                format!("handover sync: {e}; staying ACT"),
                            ));
                        }
                    }
                    self.replica.disconnect();
                    address::release(&c)
                }
                Effect::ClaimAddress => address::claim(&c, || {
                    self.claiming
                        .store(true, std::sync::atomic::Ordering::SeqCst)
                }),
                Effect::ServiceActive => {
                    self.hook(self.service.config.become_active.as_deref(), vars(&c))
                }
                Effect::ServiceStandby => {
                    self.hook(self.service.config.become_standby.as_deref(), vars(&c))
                }
            };
            if let Err(e) = res {
                self.claiming
                    .store(false, std::sync::atomic::Ordering::SeqCst);
                return Err(OpError(EFFECT_FAILED, format!("{fx:?}: {e}")));
            }
            timings.push(format!("{fx:?} {} ms", t.elapsed().as_millis()));
        }
        let t = std::time::Instant::now();
        self.update(|p| p.role = next);
        self.claiming
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.load.follow_role(self.is_active());
        timings.push(format!("saved {} ms", t.elapsed().as_millis()));
        eprintln!(
            "duplex guest: role {:?} -> {:?} (token {token}) in {} ms [{}]",
            p.role.role,
            next.role,
            started.elapsed().as_millis(),
            timings.join(", ")
        );
        Ok(self.status())
    }

    /// Runs a role or reset hook; what it printed goes to the console.
    fn hook(&self, cmd: Option<&[String]>, vars: Vars) -> Result<(), String> {
        let Some(c) = cmd else { return Ok(()) };
        let run = self.service.hook(c, vars)?;
        for line in run.output.lines() {
            println!("duplex guest: hook {}: {line}", c[0]);
        }
        match run.ok {
            true => Ok(()),
            false => Err(format!("hook {c:?} failed")),
        }
    }

    fn restart(&self, phase: RestartPhase) -> Result<Value, OpError> {
        let vip = self
            .persisted()
            .config
            .map(|c| vars(&c))
            .ok_or_else(|| OpError(NOT_CONFIGURED, "no service configured yet".into()))?;
        match phase {
            RestartPhase::Ph0_5 => self.service.kill(),
            RestartPhase::Ph1_0 | RestartPhase::Ph2_0 => {
                self.service.stop();
                if let Some(reset) = self.service.config.reset.as_deref() {
                    self.hook(Some(reset), vip)
                        .map_err(|e| OpError("hook_failed", e))?;
                }
                if phase == RestartPhase::Ph1_0 {
                    self.service.want(vip);
                }
            }
        }
        self.health_fails
            .store(0, std::sync::atomic::Ordering::Relaxed);
        self.update(|p| {
            *p.phases.entry(phase).or_default() += 1;
            p.restart_ordered = phase == RestartPhase::Ph2_0;
        });
        if phase == RestartPhase::Ph2_0 {
            // Answer first, then replace this process with a fresh
            // middleware, which restores the service from the saved state.
            std::thread::spawn(|| {
                std::thread::sleep(Duration::from_millis(200));
                reexec();
            });
            return Ok(json!({"phase": phase, "middleware": "restarting"}));
        }
        if !self.service.wait_running(Duration::from_secs(5)) {
            return Err(OpError(
                "service_down",
                "the service did not come back within 5 s".into(),
            ));
        }
        Ok(self.status())
    }

    pub fn status(&self) -> Value {
        let p = self.persisted();
        json!({
            "name": self.facts.name,
            "pid": std::process::id(),
            "role": p.role.role,
            "token": p.role.token,
            // The replication key stays in the guest: only whether it has one.
            "config": p.config.map(|c| PairConfig { key: None, ..c }),
            "authenticated": p.config.is_some_and(|c| c.key.is_some()),
            "service": self.service.status(),
            "phases": p.phases,
            "middleware_starts": p.middleware_starts,
            "replica": {"keys": self.replica.len(), "peer_connected": self.replica.peer_connected()},
            "uptime_ms": self.facts.started.elapsed().as_millis() as u64,
        })
    }

    /// Runs the health hook on the ACT while the service runs; after
    /// [`HEALTH_FAILS`] failures in a row the service is reported failed
    /// (hung if the hook timed out), once, until it passes again or a
    /// restart phase runs.
    pub fn check_health(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let p = self.persisted();
        let st = self.service.status();
        let (Role::Act, Some(c), Some(h), true) = (
            p.role.role,
            p.config,
            self.service.config.health.as_deref(),
            st.running,
        ) else {
            self.service.set_health(None);
            self.health_fails.store(0, Relaxed);
            return;
        };
        let health = self.service.health(h, vars(&c));
        self.service.set_health(Some(health == Health::Passed));
        if health == Health::Passed {
            self.health_fails.store(0, Relaxed);
            return;
        }
        if self.health_fails.fetch_add(1, Relaxed) + 1 != HEALTH_FAILS {
            return;
        }
        let (cause, how) = match health {
            Health::TimedOut => (Cause::ServiceHung, "did not finish"),
            _ => (Cause::HealthFailed, "failed"),
        };
        self.service.report(ServiceFailed {
            cause,
            detail: format!(
                "service {}: its health check {how} {HEALTH_FAILS} times in a row",
                st.name
            ),
        });
    }

    /// Inflicts a fault on this guest (tests and drills; the agent lets
    /// the order through only when allowed).
    fn inject(&self, fault: Fault) -> Result<Value, OpError> {
        eprintln!("duplex guest: injecting fault {fault:?} on order");
        match fault {
            Fault::KillService => self.service.signal(libc::SIGKILL),
            Fault::HangService => self.service.signal(libc::SIGSTOP),
            Fault::DamageData => self.service.declare_damaged(),
            Fault::KillMiddleware => {
                later(|| {
                    // SAFETY: kill(2) of this very process.
                    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                });
                Ok(std::process::id())
            }
            Fault::Panic => {
                later(|| {
                    let _ = std::fs::write("/proc/sysrq-trigger", "c");
                });
                Ok(std::process::id())
            }
        }
        .map(|pid| json!({"fault": fault, "pid": pid}))
        .map_err(|e| OpError("failed", e))
    }
}

/// The values a service hook is filled with.
fn vars(c: &PairConfig) -> Vars {
    Vars {
        vip: c.vip,
        peer: c.peer,
    }
}

/// Runs `f` after [`FAULT_DELAY`], in a thread of its own.
fn later(f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        std::thread::sleep(FAULT_DELAY);
        f();
    });
}

fn reexec() {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().unwrap_or_else(|_| "/bin/duplex".into());
    let err = std::process::Command::new(exe).arg("guest").exec();
    eprintln!("duplex guest: re-exec failed: {err}; exiting so /init restarts it");
    std::process::exit(1);
}
