//! The ACT/SBY role of one VM's service, as the in-guest middleware keeps
//! it. Pure: commands in, a new state and the effects to carry out out.
//!
//! States (AMF terms in brackets):
//! - `None`: just booted, no role given yet.
//! - `Sby` [standby]: holds replicated state, no service address.
//! - `Act` [active]: holds the service address, serves, replicates.
//! - `Quiesced` [quiesced]: was ACT, gave up the service address for a
//!   switchover; waits for `commit` (-> SBY) or to be made ACT again.
//!
//! Rules: a command carries a fencing token; one older than the newest seen
//! is refused and changes nothing. The machine never makes itself ACT: only a
//! command does. The service address is released before anything else when
//! leaving ACT and claimed last when entering it, so two VMs never answer for
//! it at once as long as the orderer waits for each step.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    None,
    Sby,
    Act,
    Quiesced,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::None, Role::Sby, Role::Act, Role::Quiesced];
}

/// Every report a member can give of its role: none (silent), or a role.
#[cfg(test)]
pub(crate) const REPORTS: [Option<Role>; 5] = [
    None,
    Some(Role::None),
    Some(Role::Sby),
    Some(Role::Act),
    Some(Role::Quiesced),
];

/// Orders that change the role (from the agent, on behalf of the controller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum RoleCommand {
    /// Become ACT (from any state).
    BecomeActive,
    /// Become SBY (from any state; from ACT this is a forced demotion).
    BecomeStandby,
    /// First step of a switchover, on the ACT: release the service address.
    SwitchoverPrepare,
    /// Last step, on the old ACT once the peer is ACT: become SBY.
    SwitchoverCommit,
}

/// What the shell must do, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Remove the service address from the NIC.
    ReleaseAddress,
    /// Add the service address and announce it (gratuitous ARP).
    ClaimAddress,
    /// Run the service's become-standby hook.
    ServiceStandby,
    /// Run the service's become-active hook.
    ServiceActive,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RoleError {
    #[error("stale fencing token {got}: this guest has seen {seen}")]
    StaleToken { got: u64, seen: u64 },
    #[error("`{cmd:?}` is not allowed in role {role:?}")]
    NotAllowed { cmd: RoleCommand, role: Role },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleState {
    pub role: Role,
    /// Newest fencing token accepted (0 = none yet).
    pub token: u64,
}

impl Default for RoleState {
    fn default() -> Self {
        RoleState {
            role: Role::None,
            token: 0,
        }
    }
}

impl RoleState {
    /// Applies a command; on success returns the new state and the effects.
    pub fn apply(
        self,
        cmd: RoleCommand,
        token: u64,
    ) -> Result<(RoleState, Vec<Effect>), RoleError> {
        if token < self.token {
            return Err(RoleError::StaleToken {
                got: token,
                seen: self.token,
            });
        }
        use Effect::*;
        use Role::*;
        use RoleCommand::*;
        let (role, effects) = match (cmd, self.role) {
            (BecomeActive, Act) => (Act, vec![]),
            (BecomeActive, None | Sby | Quiesced) => (Act, vec![ServiceActive, ClaimAddress]),
            (BecomeStandby, Sby) => (Sby, vec![]),
            (BecomeStandby, Act) => (Sby, vec![ReleaseAddress, ServiceStandby]),
            (BecomeStandby, None | Quiesced) => (Sby, vec![ServiceStandby]),
            (SwitchoverPrepare, Act) => (Quiesced, vec![ReleaseAddress]),
            (SwitchoverPrepare, Quiesced) => (Quiesced, vec![]),
            (SwitchoverCommit, Quiesced) => (Sby, vec![ServiceStandby]),
            (SwitchoverCommit, Sby) => (Sby, vec![]),
            (cmd @ (SwitchoverPrepare | SwitchoverCommit), role) => {
                return Err(RoleError::NotAllowed { cmd, role })
            }
        };
        Ok((RoleState { role, token }, effects))
    }

    /// True while this VM may hold the service address.
    pub fn holds_address(&self) -> bool {
        self.role == Role::Act
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CMDS: [RoleCommand; 4] = [
        RoleCommand::BecomeActive,
        RoleCommand::BecomeStandby,
        RoleCommand::SwitchoverPrepare,
        RoleCommand::SwitchoverCommit,
    ];

    /// Every state x command x token relation, against the table.
    #[test]
    fn exhaustive_transitions() {
        for role in Role::ALL {
            for cmd in CMDS {
                for (token, stale) in [(4u64, true), (5, false), (9, false)] {
                    let s = RoleState { role, token: 5 };
                    let r = s.apply(cmd, token);
                    if stale {
                        assert_eq!(r, Err(RoleError::StaleToken { got: 4, seen: 5 }));
                        continue;
                    }
                    let expect_ok = !matches!(
                        (cmd, role),
                        (RoleCommand::SwitchoverPrepare, Role::None | Role::Sby)
                            | (RoleCommand::SwitchoverCommit, Role::None | Role::Act)
                    );
                    match r {
                        Ok((next, effects)) => {
                            assert!(expect_ok, "{cmd:?} from {role:?} should be refused");
                            assert_eq!(next.token, token);
                            // Address effects match the change of holding it.
                            let claims = effects.contains(&Effect::ClaimAddress);
                            let releases = effects.contains(&Effect::ReleaseAddress);
                            assert_eq!(
                                claims,
                                !s.holds_address() && next.holds_address(),
                                "{cmd:?} {role:?}"
                            );
                            assert_eq!(
                                releases,
                                s.holds_address() && !next.holds_address(),
                                "{cmd:?} {role:?}"
                            );
                            // Claim last, release first.
                            if claims {
                                assert_eq!(effects.last(), Some(&Effect::ClaimAddress));
                            }
                            if releases {
                                assert_eq!(effects.first(), Some(&Effect::ReleaseAddress));
                            }
                            // Only BecomeActive leads to ACT.
                            if next.role == Role::Act {
                                assert_eq!(cmd, RoleCommand::BecomeActive);
                            }
                        }
                        Err(e) => {
                            assert!(!expect_ok, "{cmd:?} from {role:?} refused: {e}");
                            assert_eq!(e, RoleError::NotAllowed { cmd, role });
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn switchover_sequence_never_has_two_holders() {
        // old ACT, new SBY; the orderer's sequence: prepare, activate, commit.
        let old = RoleState {
            role: Role::Act,
            token: 1,
        };
        let new = RoleState {
            role: Role::Sby,
            token: 1,
        };
        let (old, _) = old.apply(RoleCommand::SwitchoverPrepare, 2).unwrap();
        assert!(!old.holds_address() && !new.holds_address());
        let (new, _) = new.apply(RoleCommand::BecomeActive, 2).unwrap();
        assert!(!old.holds_address() && new.holds_address());
        let (old, fx) = old.apply(RoleCommand::SwitchoverCommit, 2).unwrap();
        assert_eq!((old.role, fx), (Role::Sby, vec![Effect::ServiceStandby]));
        // An old leader's order is refused afterwards.
        assert!(old.apply(RoleCommand::BecomeActive, 1).is_err());
    }

    #[test]
    fn idempotent_repeats() {
        for (role, cmd) in [
            (Role::Act, RoleCommand::BecomeActive),
            (Role::Sby, RoleCommand::BecomeStandby),
            (Role::Quiesced, RoleCommand::SwitchoverPrepare),
            (Role::Sby, RoleCommand::SwitchoverCommit),
        ] {
            let s = RoleState { role, token: 3 };
            assert_eq!(s.apply(cmd, 3), Ok((s, vec![])));
        }
    }
}
