//! Pair workflows run by the leader: create (boot both members, configure,
//! give roles, confirm from the guests), switchover, delete.

use crate::ctl::Ctl;
use crate::ops::OpHandle;
use crate::pair_exec::{self, PairMember};
use crate::repo::{RepoError, PAIRS, VMS};
use duplex_core::guest_proto::Op;
use duplex_core::model::{Desired, Pair, PairPhase, Severity, Vm, VmStatus};
use duplex_core::role::Role;
use duplex_core::switchover::Phase;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long pair members get to boot and connect their guests.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(20);
const DELETE_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(500);

pub(crate) fn key(name: &str) -> String {
    format!("{PAIRS}{name}")
}

pub(crate) async fn set_phase(ctl: &Ctl, name: &str, phase: PairPhase) -> Result<Pair, RepoError> {
    let r = ctl
        .repo
        .update::<Pair, std::convert::Infallible, _>(&key(name), |p| {
            p.phase = phase;
            Ok(())
        })
        .await?;
    let Ok(p) = r;
    Ok(p)
}

/// Where each member of `pair` runs, per the VM records.
pub(crate) async fn member_hosts(ctl: &Ctl, pair: &Pair) -> Result<[String; 2], String> {
    let mut hosts: [String; 2] = Default::default();
    for (host, name) in hosts.iter_mut().zip(&pair.members) {
        *host = ctl
            .vm(name)
            .await
            .map_err(|e| e.to_string())?
            .map(|v| v.host)
            .ok_or_else(|| format!("member {name} of pair {} has no record", pair.name))?;
    }
    Ok(hosts)
}

pub(crate) async fn members(ctl: &Ctl, pair: &Pair) -> Result<[PairMember; 2], String> {
    let mut out = Vec::new();
    for name in &pair.members {
        let vm = ctl
            .vm(name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("member VM {name} has no record"))?;
        let host = ctl
            .host(&vm.host)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("host {} of {name} has no record", vm.host))?;
        out.push(PairMember {
            agent: ctl.agent(&host.url),
            vm: name.clone(),
            ip: vm.spec.ip,
            mac: vm.spec.mac(),
        });
    }
    let b = out.pop().ok_or("pair without members")?;
    let a = out.pop().ok_or("pair without members")?;
    Ok([a, b])
}

/// Asks both guests for their role until they are as the pair wants.
/// The role each member's guest reports now (`None`: no answer).
pub(crate) async fn guest_roles(m: &[PairMember; 2]) -> [Option<Role>; 2] {
    let mut got = [None, None];
    for (slot, member) in got.iter_mut().zip(m) {
        *slot = member
            .agent
            .guest(&member.vm, &Op::Status)
            .await
            .ok()
            .and_then(|s| serde_json::from_value::<Role>(s["role"].clone()).ok());
    }
    got
}

pub(crate) async fn confirm_roles(
    ctl: &Ctl,
    pair: &Pair,
    m: &[PairMember; 2],
) -> Result<(), String> {
    let deadline = Instant::now() + CONFIRM_TIMEOUT;
    let want = |i: usize| {
        if i == pair.active % 2 {
            Role::Act
        } else {
            Role::Sby
        }
    };
    loop {
        let reported = guest_roles(m).await;
        let got: Vec<(String, Option<Role>, Role)> = m
            .iter()
            .zip(reported)
            .enumerate()
            .map(|(i, (member, role))| (member.vm.clone(), role, want(i)))
            .collect();
        if got.iter().all(|(_, r, w)| *r == Some(*w)) {
            let mut obs = ctl.lock_observed();
            for (vm, _, w) in &got {
                obs.confirm(vm, *w);
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "guests did not confirm their roles: {got:?} (vm, reported, wanted)"
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

pub async fn create_flow(ctl: Arc<Ctl>, name: String, op: OpHandle) {
    let res = create_steps(&ctl, &name, &op).await;
    let subject = format!("pair/{name}");
    match &res {
        Ok(msg) => {
            ctl.events
                .emit(Severity::Info, "pair.ready", &subject, msg.clone())
                .await
        }
        Err(e) => {
            let _ = set_phase(&ctl, &name, PairPhase::Failed).await;
            ctl.events
                .emit(
                    Severity::Error,
                    "pair.create_failed",
                    &subject,
                    format!("pair {name} could not be set up: {e}"),
                )
                .await
        }
    }
    op.finish(res).await;
}

async fn create_steps(ctl: &Arc<Ctl>, name: &str, op: &OpHandle) -> Result<String, String> {
    let pair = ctl
        .pair(name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("pair record vanished")?;
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let mut last = usize::MAX;
    loop {
        let (hosts, vms) = match (ctl.hosts().await, ctl.vms().await) {
            (Ok(h), Ok(v)) => (h, v),
            (Err(e), _) | (_, Err(e)) => return Err(e.to_string()),
        };
        let mut ready = 0;
        for m in &pair.members {
            let Some(vm) = vms.iter().find(|v| &v.spec.name == m) else {
                return Err(format!("member VM {m} was deleted"));
            };
            let st = ctl.vm_view(vm.clone(), &hosts, false).status;
            if st == VmStatus::Crashed {
                return Err(format!(
                    "member VM {m} crashed while booting; see `duplex vm show {m}`"
                ));
            }
            if st == VmStatus::Running {
                ready += 1;
            }
        }
        if ready != last {
            op.progress(format!("waiting for member guests: {ready}/2 ready"))
                .await;
            last = ready;
        }
        if ready == 2 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "members not ready within {} s ({ready}/2)",
                BOOT_TIMEOUT.as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
    let pair = set_phase(ctl, name, PairPhase::Configuring)
        .await
        .map_err(|e| e.to_string())?;
    op.progress("configuring the service address and giving roles")
        .await;
    let m = members(ctl, &pair).await?;
    let (act, sby) = (&m[pair.active % 2], &m[(pair.active + 1) % 2]);
    pair_exec::set_up(act, sby, pair.vip, pair.prefix_len, pair.token)
        .await
        .map_err(|e| format!("set-up: {e}"))?;
    op.progress("confirming roles with the guests").await;
    confirm_roles(ctl, &pair, &m).await?;
    set_phase(ctl, name, PairPhase::Ready)
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "pair {name} ready: ACT {} and SBY {} confirmed by their guests, service address {}",
        act.vm, sby.vm, pair.vip
    ))
}

/// Moves the pair to `SwitchingOver` with a raised role token, or says why not.
pub async fn begin_switchover(ctl: &Ctl, name: &str) -> Result<Result<Pair, String>, RepoError> {
    ctl.repo
        .update::<Pair, String, _>(&key(name), |p| {
            if p.phase != PairPhase::Ready {
                return Err(format!(
                    "pair {name} is {}, not ready: wait for the running operation to finish",
                    p.phase.as_str()
                ));
            }
            p.phase = PairPhase::SwitchingOver;
            p.token += 1;
            Ok(())
        })
        .await
}

pub async fn switchover_flow(ctl: Arc<Ctl>, pair: Pair, op: OpHandle) {
    let name = pair.name.clone();
    let subject = format!("pair/{name}");
    let res = switchover_steps(&ctl, &pair, &op).await;
    let kinds = ("pair.switchover.done", "pair.switchover.failed");
    op.conclude(&subject, kinds, res).await;
}

async fn switchover_steps(ctl: &Arc<Ctl>, pair: &Pair, op: &OpHandle) -> Result<String, String> {
    let m = match members(ctl, pair).await {
        Ok(m) => m,
        Err(e) => {
            let _ = set_phase(ctl, &pair.name, PairPhase::Ready).await;
            return Err(e);
        }
    };
    let (old, new) = (&m[pair.active % 2], &m[(pair.active + 1) % 2]);
    op.progress(format!(
        "switching over: {} → {} (token {})",
        old.vm, new.vm, pair.token
    ))
    .await;
    let report = pair_exec::switchover(old, new, pair.token, pair.vip).await;
    let swapped = matches!(report.outcome, Phase::Done { .. });
    let r = ctl
        .repo
        .update::<Pair, std::convert::Infallible, _>(&key(&pair.name), |p| {
            if swapped {
                p.active = (pair.active + 1) % 2;
            }
            p.phase = PairPhase::Ready;
            Ok(())
        })
        .await
        .map_err(|e| e.to_string())?;
    let Ok(now) = r;
    op.progress("confirming roles with the guests").await;
    let confirmed = confirm_roles(ctl, &now, &m).await;
    let summary = format!(
        "{} in {:.0} ms: {}",
        if swapped {
            "switched over"
        } else {
            "rolled back"
        },
        report.total_ms,
        report.steps_line()
    );
    match (swapped, confirmed) {
        (true, Ok(())) => Ok(format!(
            "{}: ACT is now {}, SBY {}; {summary}",
            pair.name, new.vm, old.vm
        )),
        (false, Ok(())) => Err(format!(
            "{}: switchover {summary}; ACT is still {}",
            pair.name, old.vm
        )),
        (_, Err(e)) => Err(format!("{}: {summary}; {e}", pair.name)),
    }
}

pub async fn delete_flow(ctl: Arc<Ctl>, pair: Pair, op: OpHandle) {
    let res = delete_steps(&ctl, &pair, &op).await;
    let subject = format!("pair/{}", pair.name);
    op.conclude(&subject, ("pair.deleted", "pair.delete_failed"), res)
        .await;
}

async fn delete_steps(ctl: &Arc<Ctl>, pair: &Pair, op: &OpHandle) -> Result<String, String> {
    for m in &pair.members {
        let r = ctl
            .repo
            .update::<Vm, std::convert::Infallible, _>(&format!("{VMS}{m}"), |v| {
                v.desired = Desired::Deleted;
                Ok(())
            })
            .await;
        match r {
            Ok(_) | Err(RepoError::Missing(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    ctl.kick.notify_one();
    let deadline = Instant::now() + DELETE_TIMEOUT;
    loop {
        let mut left = 0;
        for m in &pair.members {
            if ctl.vm(m).await.map_err(|e| e.to_string())?.is_some() {
                left += 1;
            }
        }
        op.progress(format!("removing members: {left} left")).await;
        if left == 0 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{left} member(s) still not removed after {} s; their host may be down",
                DELETE_TIMEOUT.as_secs()
            ));
        }
        tokio::time::sleep(POLL * 2).await;
    }
    ctl.repo
        .delete(&key(&pair.name), duplex_store::Expect::Any)
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!("pair {} and its members are gone", pair.name))
}
