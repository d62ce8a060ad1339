//! S3 restart policies set by the operator, in the controller's store: a
//! VM's own, else its pair's, else `Policy::default()`.

use crate::ctl::Ctl;
use crate::repo::{RepoError, POLICIES};
use duplex_core::escalation::{Policy, PolicyChange, PolicyView};
use duplex_core::model::Vm;
use duplex_store::Expect;
use serde::{Deserialize, Serialize};

/// What a policy is set on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Vm,
    Pair,
}

impl Scope {
    fn key(self, name: &str) -> String {
        match self {
            Scope::Vm => format!("{POLICIES}vm/{name}"),
            Scope::Pair => format!("{POLICIES}pair/{name}"),
        }
    }
}

/// `GET /v1/vms/{name}/policy` (and a pair's): the policy in force.
#[derive(Debug, Serialize, Deserialize)]
pub struct PolicyAnswer {
    pub scope: Scope,
    pub name: String,
    /// Where the policy in force comes from.
    pub source: Source,
    pub policy: PolicyView,
}

/// Where the policy in force comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Vm,
    Pair,
    Default,
}

pub async fn stored(ctl: &Ctl, scope: Scope, name: &str) -> Result<Option<Policy>, RepoError> {
    Ok(ctl
        .repo
        .get::<Policy>(&scope.key(name))
        .await?
        .map(|r| r.value))
}

/// The policy in force for `vm`, and where it comes from.
pub async fn effective(ctl: &Ctl, vm: &Vm) -> Result<(Policy, Source), RepoError> {
    if let Some(p) = stored(ctl, Scope::Vm, &vm.spec.name).await? {
        return Ok((p, Source::Vm));
    }
    if let Some(pair) = &vm.pair {
        if let Some(p) = stored(ctl, Scope::Pair, pair).await? {
            return Ok((p, Source::Pair));
        }
    }
    Ok((Policy::default(), Source::Default))
}

/// Applies `change` on top of what is in force at `scope` (a VM's own,
/// or the policy it inherits) and stores the result there.
pub async fn change(
    ctl: &Ctl,
    scope: Scope,
    name: &str,
    base: Policy,
    change: &PolicyChange,
) -> Result<Result<Policy, String>, RepoError> {
    let next = match base.changed(change) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e)),
    };
    ctl.repo.put(&scope.key(name), &next, Expect::Any).await?;
    Ok(Ok(next))
}

/// Drops the policy set on a VM or pair that is gone (one created again
/// under its name starts from the defaults).
pub async fn forget(ctl: &Ctl, scope: Scope, name: &str) -> Result<(), RepoError> {
    ctl.repo
        .delete(&scope.key(name), Expect::Any)
        .await
        .map(|_| ())
}
