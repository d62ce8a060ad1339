//! Who is calling: the identities the cluster's certificates name, and
//! what each may ask of a controller or an agent.
//!
//! A certificate of the cluster's CA names exactly one identity as a DNS
//! subject-alternative name under [`DOMAIN`]:
//!
//! ```text
//! controller.duplex                  the controller (every controller of a cluster)
//! <host>.agent.duplex                the agent of host <host>
//! <name>.<scope>.operator.duplex     an operator; scope read | operate | admin
//! ```
//!
//! The rules are pure: the shells (the controller's and the agents' HTTP
//! layers) only ask [`controller_access`] and [`agent_access`].

use serde::{Deserialize, Serialize};

/// The domain every identity name ends with.
pub const DOMAIN: &str = "duplex";

/// What an operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Look: every read of the controller's API and the agents' reads.
    Read,
    /// Run the cluster through the controller: create, delete, migrate,
    /// switch over, drain, host states.
    Operate,
    /// Everything, the agents' own APIs included. The admin holds the CA
    /// key and could issue itself a controller's certificate anyway.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Operate, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Operate => "operate",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Result<Scope, IdentityError> {
        Scope::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| IdentityError::Scope(s.to_string()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Identity {
    Controller,
    /// The cluster store's server (etcd): serves the controller, calls
    /// no one.
    Store,
    Agent {
        host: String,
    },
    Operator {
        name: String,
        scope: Scope,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("`{0}` is not a Duplex identity name (controller.duplex, store.duplex, <host>.agent.duplex or <name>.<read|operate|admin>.operator.duplex)")]
    Form(String),
    #[error("`{0}` is not a valid name: 1-32 characters of a-z, 0-9 and '-', starting with a letter and not ending with '-'")]
    Label(String),
    #[error("`{0}` is not a scope (read, operate or admin)")]
    Scope(String),
    #[error("the certificate names no Duplex identity (a DNS name ending in .{DOMAIN})")]
    None,
    #[error("the certificate names more than one Duplex identity: {0} and {1}")]
    Several(String, String),
}

/// A host or operator name usable as a DNS label.
pub fn valid_label(s: &str) -> bool {
    crate::model::valid_name(s) && !s.ends_with('-')
}

fn label(s: &str) -> Result<String, IdentityError> {
    if valid_label(s) {
        Ok(s.to_string())
    } else {
        Err(IdentityError::Label(s.to_string()))
    }
}

impl Identity {
    pub fn agent(host: &str) -> Result<Identity, IdentityError> {
        Ok(Identity::Agent { host: label(host)? })
    }

    pub fn operator(name: &str, scope: Scope) -> Result<Identity, IdentityError> {
        Ok(Identity::Operator {
            name: label(name)?,
            scope,
        })
    }

    /// The DNS name a certificate carries for this identity.
    pub fn dns_name(&self) -> String {
        match self {
            Identity::Controller => format!("controller.{DOMAIN}"),
            Identity::Store => format!("store.{DOMAIN}"),
            Identity::Agent { host } => format!("{host}.agent.{DOMAIN}"),
            Identity::Operator { name, scope } => {
                format!("{name}.{}.operator.{DOMAIN}", scope.as_str())
            }
        }
    }

    pub fn parse(name: &str) -> Result<Identity, IdentityError> {
        let form = || IdentityError::Form(name.to_string());
        let rest = name
            .strip_suffix(DOMAIN)
            .and_then(|r| r.strip_suffix('.'))
            .ok_or_else(form)?;
        let parts: Vec<&str> = rest.split('.').collect();
        match parts.as_slice() {
            ["controller"] => Ok(Identity::Controller),
            ["store"] => Ok(Identity::Store),
            [host, "agent"] => Identity::agent(host),
            [who, scope, "operator"] => Identity::operator(who, Scope::parse(scope)?),
            _ => Err(form()),
        }
    }

    /// The one identity among a certificate's DNS names (others, such as a
    /// host's own DNS name, are ignored).
    pub fn from_names<'a>(
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Identity, IdentityError> {
        let suffix = format!(".{DOMAIN}");
        let mut found: Option<(String, Identity)> = None;
        for n in names.into_iter().filter(|n| n.ends_with(&suffix)) {
            let id = Identity::parse(n)?;
            if let Some((first, _)) = &found {
                return Err(IdentityError::Several(first.clone(), n.to_string()));
            }
            found = Some((n.to_string(), id));
        }
        found.map(|(_, id)| id).ok_or(IdentityError::None)
    }

    /// Short form for messages and logs: `controller`, `agent h1`,
    /// `operator alice (read)`.
    pub fn describe(&self) -> String {
        match self {
            Identity::Controller => "the controller".into(),
            Identity::Store => "the cluster store".into(),
            Identity::Agent { host } => format!("the agent of host {host}"),
            Identity::Operator { name, scope } => {
                format!("operator {name} (scope {})", scope.as_str())
            }
        }
    }
}

/// Whether a request only reads (GET, HEAD) or changes something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Read,
    Write,
}

impl Call {
    pub fn of_method(method: &str) -> Call {
        match method {
            "GET" | "HEAD" => Call::Read,
            _ => Call::Write,
        }
    }
}

/// The groups of the controller's routes, by who may use them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControllerRoute {
    /// `/v1/agents/<host>/heartbeat`: that host's agent only.
    Heartbeat { host: String },
    /// Everything operators use.
    Operator,
}

/// The groups of an agent's routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentRoute {
    /// VMs, their guests, elements, fences and outgoing migrations: the
    /// controller's orders.
    Order,
    /// `/v1/incoming/...`: a peer agent sending a VM here; and
    /// `/v1/replicas/{name}/epochs`: a primary's agent sending checkpoints.
    Incoming,
}

/// Why a request is refused; says who asked and who may.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{who} may not {what}: {allowed}")]
pub struct Denied {
    pub who: String,
    pub what: String,
    pub allowed: &'static str,
}

fn deny(who: &Identity, what: &str, allowed: &'static str) -> Result<(), Denied> {
    Err(Denied {
        who: who.describe(),
        what: what.to_string(),
        allowed,
    })
}

/// May `who` make a `call` on a controller `route`?
pub fn controller_access(
    who: &Identity,
    route: &ControllerRoute,
    call: Call,
) -> Result<(), Denied> {
    match (route, who) {
        (ControllerRoute::Heartbeat { host }, Identity::Agent { host: me }) if me == host => Ok(()),
        (ControllerRoute::Heartbeat { host }, _) => deny(
            who,
            &format!("report for host {host}"),
            "only that host's agent reports for it",
        ),
        (ControllerRoute::Operator, Identity::Operator { scope, .. }) => match (call, scope) {
            (Call::Read, _) | (Call::Write, Scope::Operate | Scope::Admin) => Ok(()),
            (Call::Write, Scope::Read) => deny(
                who,
                "change the cluster",
                "operators with scope operate or admin do",
            ),
        },
        (ControllerRoute::Operator, _) => {
            deny(who, "use the operators' API", "operators' certificates do")
        }
    }
}

/// May `who` raise an agent's fence, i.e. carry a fencing token higher
/// than any it obeyed? Only the controller (a peer agent relays the
/// controller's token when it sends a VM, and an admin's orders carry
/// none): anyone else could lock the real controller out.
pub fn raises_fence(who: &Identity) -> bool {
    matches!(who, Identity::Controller)
}

/// May `who` make a `call` on an agent's `route`?
pub fn agent_access(who: &Identity, route: AgentRoute, call: Call) -> Result<(), Denied> {
    match (who, route, call) {
        (Identity::Controller, _, _) => Ok(()),
        (
            Identity::Operator {
                scope: Scope::Admin,
                ..
            },
            _,
            _,
        ) => Ok(()),
        (Identity::Operator { .. }, _, Call::Read) => Ok(()),
        (Identity::Agent { .. }, AgentRoute::Incoming, _) => Ok(()),
        (Identity::Operator { .. }, _, Call::Write) => deny(
            who,
            "give an agent orders",
            "the controller and admins do; operate through the controller",
        ),
        (Identity::Agent { .. }, AgentRoute::Order, _) => deny(
            who,
            "give another agent orders",
            "the controller does; agents only send VMs to each other",
        ),
        (Identity::Store, _, _) => deny(who, "call an agent", "the store only serves"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_identities() -> Vec<Identity> {
        let mut v = vec![
            Identity::Controller,
            Identity::Store,
            Identity::agent("h1").unwrap(),
        ];
        for s in Scope::ALL {
            v.push(Identity::operator("alice", s).unwrap());
        }
        v
    }

    #[test]
    fn names_round_trip() {
        for id in all_identities() {
            assert_eq!(Identity::parse(&id.dns_name()), Ok(id));
        }
        assert_eq!(Identity::Controller.dns_name(), "controller.duplex");
        assert_eq!(
            Identity::operator("bob", Scope::Read).unwrap().dns_name(),
            "bob.read.operator.duplex"
        );
    }

    #[test]
    fn bad_names_say_why() {
        for bad in [
            "duplex",
            "x.duplex",
            "controller.example",
            "h1.agent.duplex.evil",
            "a.b.agent.duplex",
            "alice.operator.duplex",
        ] {
            assert!(
                matches!(Identity::parse(bad), Err(IdentityError::Form(_))),
                "{bad}"
            );
        }
        assert_eq!(
            Identity::parse("H1.agent.duplex"),
            Err(IdentityError::Label("H1".into()))
        );
        assert_eq!(
            Identity::parse("h-.agent.duplex"),
            Err(IdentityError::Label("h-".into()))
        );
        assert_eq!(
            Identity::parse("a.root.operator.duplex"),
            Err(IdentityError::Scope("root".into()))
        );
    }

    #[test]
    fn a_certificate_names_exactly_one_identity() {
        assert_eq!(
            Identity::from_names(["node1.example.com", "h2.agent.duplex"]),
            Ok(Identity::agent("h2").unwrap())
        );
        assert_eq!(
            Identity::from_names(["node1.example.com"]),
            Err(IdentityError::None)
        );
        assert!(matches!(
            Identity::from_names(["controller.duplex", "h1.agent.duplex"]),
            Err(IdentityError::Several(..))
        ));
    }

    /// Every identity against every route group and call, with the
    /// expected answer written out.
    #[test]
    fn who_may_call_what() {
        use Call::*;
        let hb = |h: &str| ControllerRoute::Heartbeat { host: h.into() };
        for id in all_identities() {
            for call in [Read, Write] {
                let own_hb = matches!(&id, Identity::Agent { host } if host == "h1");
                assert_eq!(
                    controller_access(&id, &hb("h1"), call).is_ok(),
                    own_hb,
                    "{id:?} {call:?}"
                );
                assert!(controller_access(&id, &hb("h2"), call).is_err());
                let op = match (&id, call) {
                    (Identity::Operator { .. }, Read) => true,
                    (Identity::Operator { scope, .. }, Write) => *scope != Scope::Read,
                    _ => false,
                };
                assert_eq!(
                    controller_access(&id, &ControllerRoute::Operator, call).is_ok(),
                    op,
                    "{id:?} {call:?}"
                );
                let order = match (&id, call) {
                    (Identity::Controller, _) => true,
                    (Identity::Operator { scope, .. }, _) if *scope == Scope::Admin => true,
                    (Identity::Operator { .. }, Read) => true,
                    _ => false,
                };
                assert_eq!(
                    agent_access(&id, AgentRoute::Order, call).is_ok(),
                    order,
                    "{id:?} {call:?}"
                );
                let incoming = order || matches!(id, Identity::Agent { .. });
                assert_eq!(
                    agent_access(&id, AgentRoute::Incoming, call).is_ok(),
                    incoming,
                    "{id:?} {call:?}"
                );
            }
        }
    }

    #[test]
    fn refusals_name_who_and_who_may() {
        let e = agent_access(
            &Identity::agent("h2").unwrap(),
            AgentRoute::Order,
            Call::Write,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the agent of host h2 may not give another agent orders: the controller does; agents only send VMs to each other"
        );
    }
}
