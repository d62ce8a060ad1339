//! Pair workflows run by the leader: create (boot both members, configure,
//! give roles, confirm from the guests), switchover, delete.

use crate::ctl::Ctl;
use crate::lifecycle::{self, LifecycleError};
use crate::ops::OpHandle;
use crate::pair_exec::{self, PairMember};
use crate::repo::{RepoError, VMS};
use duplex_core::guest_proto::Op;
use duplex_core::model::{Desired, OpKind, Operation, Pair, PairPhase, Severity, Vm, VmStatus};
use duplex_core::pair_lifecycle::{Intent, Workflow};
use duplex_core::role::Role;
use duplex_core::switchover::Phase;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long pair members get to boot and connect their guests.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// Attempts of a pair's set-up orders before the create fails.
const SETUP_ATTEMPTS: u32 = 4;
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(20);
const DELETE_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(500);

pub(crate) use crate::lifecycle::key;

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

/// Which member of `pair` its agent isolated, if one is (it is out of
/// service until the failover pass replaces it), said as a reason.
pub(crate) async fn isolated(ctl: &Ctl, pair: &Pair) -> Option<String> {
    let hosts = member_hosts(ctl, pair).await.ok()?;
    let obs = ctl.lock_observed();
    pair.members
        .iter()
        .zip(&hosts)
        .find(|(vm, host)| obs.vm(host, vm).is_some_and(|v| v.isolated))
        .map(|(vm, host)| {
            format!("{vm} is isolated on {host} (cut off the service network) until it is replaced")
        })
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
        if i == pair.active.i() {
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

pub async fn create_flow(ctl: Arc<Ctl>, pair: Pair, op: OpHandle) {
    let name = pair.name.clone();
    let res = create_steps(&ctl, &name, &op).await;
    let subject = format!("pair/{name}");
    let ends = lifecycle::release(&ctl, &name, (Workflow::Create, &op.id), res.is_ok(), |_| {});
    if let Err(e) = ends.await {
        tracing::warn!(pair = %name, "create: {e}");
    }
    match &res {
        Ok(msg) => {
            ctl.events
                .emit(Severity::Info, "pair.ready", &subject, msg.clone())
                .await
        }
        Err(e) => {
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
    let pair = lifecycle::step(ctl, name, &op.id, Intent::Boot, |_| {})
        .await
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let mut last = usize::MAX;
    loop {
        let (hosts, vms) = match (ctl.hosts().await, ctl.vms().await) {
            (Ok(h), Ok(v)) => (h, v),
            (Err(e), _) | (_, Err(e)) => return Err(e.to_string()),
        };
        let listing = crate::listing::Listing::new(&vms, &hosts);
        let mut ready = 0;
        for m in &pair.members {
            let Some(vm) = vms.iter().find(|v| &v.spec.name == m) else {
                return Err(format!("member VM {m} was deleted"));
            };
            let st = ctl.vm_view(vm.clone(), &listing, false).status;
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
    let pair = lifecycle::step(ctl, name, &op.id, Intent::Configure, |p| {
        p.phase = PairPhase::Configuring
    })
    .await
    .map_err(|e| e.to_string())?;
    op.progress("configuring the service address and giving roles")
        .await;
    let m = members(ctl, &pair).await?;
    let (act, sby) = (&m[pair.active.i()], &m[pair.active.other().i()]);
    // The set-up's orders repeat safely: one lost on the way, or a guest
    // that restarted before confirming, gets the whole set-up again.
    let mut attempt = 1;
    loop {
        let res = match pair_exec::set_up(act, sby, ctl.service(&pair), pair.token).await {
            Ok(()) => {
                op.progress("confirming roles with the guests").await;
                lifecycle::step(ctl, name, &op.id, Intent::Confirm, |_| {})
                    .await
                    .map_err(|e| e.to_string())?;
                confirm_roles(ctl, &pair, &m).await
            }
            Err(e) => Err(format!("set-up: {e}")),
        };
        match res {
            Ok(()) => break,
            Err(e) if attempt == SETUP_ATTEMPTS => {
                return Err(format!("{e} ({attempt} attempts)"));
            }
            Err(e) => {
                op.progress(format!(
                    "set-up attempt {attempt} failed, trying again: {e}"
                ))
                .await;
                tokio::time::sleep(POLL * 2 * attempt).await;
                attempt += 1;
            }
        }
    }
    Ok(format!(
        "pair {name} ready: ACT {} and SBY {} confirmed by their guests, service address {}",
        act.vm, sby.vm, pair.vip
    ))
}

/// Starts a switchover of pair `name` (it must be ready), with a raised role token.
pub async fn start_switchover(
    ctl: &Arc<Ctl>,
    name: &str,
) -> Result<(Operation, Pair), LifecycleError> {
    lifecycle::launch(
        ctl,
        name,
        (Workflow::Switchover, OpKind::PairSwitchover),
        |p| p.token += 1,
        switchover_flow,
    )
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
    let w = (Workflow::Switchover, op.id.as_str());
    let m = match members(ctl, pair).await {
        Ok(m) => m,
        Err(e) => {
            let _ = lifecycle::release(ctl, &pair.name, w, false, |_| {}).await;
            return Err(e);
        }
    };
    let from = pair.active;
    let (old, new) = (&m[from.i()], &m[from.other().i()]);
    if let Some(why) = isolated(ctl, pair).await {
        let _ = lifecycle::release(ctl, &pair.name, w, false, |_| {}).await;
        return Err(format!("no switchover: {why}"));
    }
    let intent = Intent::Switchover {
        from,
        token: pair.token,
    };
    lifecycle::step(ctl, &pair.name, &op.id, intent, |_| {})
        .await
        .map_err(|e| e.to_string())?;
    op.progress(format!(
        "switching over: {} → {} (token {})",
        old.vm, new.vm, pair.token
    ))
    .await;
    let report = pair_exec::switchover(old, new, pair.token, pair.vip).await;
    report.observe(&ctl.metrics);
    let swapped = matches!(report.outcome, Phase::Done { .. });
    if let Phase::Done { commit_failed } = report.outcome {
        // The guests just answered Activate (and Commit): their roles are
        // known before their next heartbeats say so. Recorded before the
        // pair is released, or a `pair show` in between would read the old
        // ACT's last heartbeat as a second ACT (seen in CI: split_brain).
        let mut obs = ctl.lock_observed();
        obs.confirm(&new.vm, Role::Act);
        if !commit_failed {
            obs.confirm(&old.vm, Role::Sby);
        }
    }
    let now = lifecycle::release(ctl, &pair.name, w, swapped, |p| {
        if swapped {
            p.active = from.other();
        }
    })
    .await
    .map_err(|e| {
        format!(
            "{}: {} but the outcome could not be recorded ({e}); the pair is settled from its guests",
            pair.name,
            if swapped { "switched over" } else { "rolled back" }
        )
    })?;
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

/// Starts the deletion of pair `name` and its members.
pub async fn start_delete(ctl: &Arc<Ctl>, name: &str) -> Result<(Operation, Pair), LifecycleError> {
    lifecycle::launch(
        ctl,
        name,
        (Workflow::Delete, OpKind::PairDelete),
        |_| {},
        delete_flow,
    )
    .await
}

pub async fn delete_flow(ctl: Arc<Ctl>, pair: Pair, op: OpHandle) {
    let res = delete_steps(&ctl, &pair, &op).await;
    let subject = format!("pair/{}", pair.name);
    op.conclude(&subject, ("pair.deleted", "pair.delete_failed"), res)
        .await;
}

async fn delete_steps(ctl: &Arc<Ctl>, pair: &Pair, op: &OpHandle) -> Result<String, String> {
    let res = remove(ctl, pair, op).await;
    if res.is_err() {
        // It stays deleting; the recovery pass runs it again.
        let w = (Workflow::Delete, op.id.as_str());
        let _ = lifecycle::release(ctl, &pair.name, w, false, |_| {}).await;
    }
    res
}

async fn remove(ctl: &Arc<Ctl>, pair: &Pair, op: &OpHandle) -> Result<String, String> {
    lifecycle::step(ctl, &pair.name, &op.id, Intent::Remove, |_| {})
        .await
        .map_err(|e| e.to_string())?;
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
    // Only while this operation still owns the pair.
    let rec = ctl
        .repo
        .get::<Pair>(&key(&pair.name))
        .await
        .map_err(|e| e.to_string())?;
    if let Some(r) = rec {
        if r.value.journal.as_ref().map(|j| j.op.as_str()) != Some(op.id.as_str()) {
            return Err(format!(
                "pair {} was taken over by another operation",
                pair.name
            ));
        }
        ctl.repo
            .delete(&key(&pair.name), duplex_store::Expect::Revision(r.revision))
            .await
            .map_err(|e| e.to_string())?;
        let scope = crate::restart_policy::Scope::Pair;
        crate::restart_policy::forget(ctl, scope, &pair.name)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(format!("pair {} and its members are gone", pair.name))
}
