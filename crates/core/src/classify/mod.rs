//! S2's packet classifier (pure): which packets a replicated VM sends may
//! leave at once and which must wait until the epoch that produced them is
//! committed on the backup.
//!
//! - **Class 1, `send`**: the packet does not change what a client may
//!   later rely on (RTP media, health probes, ARP): sent at once, so
//!   replication adds no latency to it.
//! - **Class 2, `hold`**: the packet reveals state the backup must have
//!   before anyone sees it (SIP requests and responses, anything unknown):
//!   held in the transmit buffer until its epoch commits.
//!
//! A [`Ruleset`] is an ordered list of [`Rule`]s (lowest `priority` first,
//! then by name); the first rule whose every given field matches decides,
//! and a packet no rule matches gets the ruleset's `default` (hold, unless
//! the operator says otherwise: holding too much costs latency, sending too
//! much costs consistency). Rules are plain data, checked by
//! [`Ruleset::validate`] before they are stored or applied, versioned so an
//! agent applies only a newer set.

mod defaults;
pub mod hex_bytes;
pub mod rule_match;
#[cfg(test)]
mod tests;

pub use defaults::default_ruleset;
pub use rule_match::{Net, PortRange, Proto};

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Most rules one ruleset holds (each packet is checked against them in
/// order, so this bounds the per-packet cost).
pub const MAX_RULES: usize = 256;
/// Longest payload prefix a rule may match on.
pub const MAX_PREFIX: usize = 64;
/// Longest rule name.
pub const MAX_NAME: usize = 48;

/// What happens to a packet the VM sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Class 1: sent at once.
    Send,
    /// Class 2: held until the epoch that produced it commits.
    Hold,
}

impl Class {
    pub const ALL: [Class; 2] = [Class::Send, Class::Hold];

    pub fn number(self) -> u8 {
        match self {
            Class::Send => 1,
            Class::Hold => 2,
        }
    }
}

impl std::fmt::Display for Class {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Class::Send => write!(f, "class 1 (send)"),
            Class::Hold => write!(f, "class 2 (hold)"),
        }
    }
}

/// What a rule looks at; every field given must match, an absent one
/// matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<Proto>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_port: Option<PortRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<PortRange>,
    /// Either port (source or destination) in the range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortRange>,
    /// The 6-bit DiffServ code point (46 = EF, voice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dscp: Option<u8>,
    /// The first bytes of the transport payload (UDP/TCP data, or the IP
    /// payload for other protocols), compared under `payload_mask`.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "hex_bytes")]
    pub payload: Vec<u8>,
    /// Bits of `payload` that count (same length; absent = all of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "hex_bytes")]
    pub payload_mask: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    /// Lower is checked first.
    pub priority: u32,
    #[serde(rename = "match")]
    pub matches: Match,
    pub class: Class,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ruleset {
    /// Raised by one at every change; an agent applies only a newer one.
    pub version: u64,
    /// For packets no rule matches.
    pub default: Class,
    /// In the order they are checked.
    pub rules: Vec<Rule>,
}

/// The facts about one packet a rule can look at (the element parses a
/// frame into this; `rules test` builds one from a description).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    pub proto: Proto,
    pub src: Option<Ipv4Addr>,
    pub dst: Option<Ipv4Addr>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub dscp: Option<u8>,
    pub payload: &'a [u8],
}

/// A packet described by its fields (`rules test`): what the classifier
/// would see of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacketSample {
    pub proto: Option<Proto>,
    #[serde(default)]
    pub src: Option<Ipv4Addr>,
    #[serde(default)]
    pub dst: Option<Ipv4Addr>,
    #[serde(default)]
    pub src_port: Option<u16>,
    #[serde(default)]
    pub dst_port: Option<u16>,
    #[serde(default)]
    pub dscp: Option<u8>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "hex_bytes")]
    pub payload: Vec<u8>,
}

impl PacketSample {
    /// The packet the classifier sees (no protocol given: UDP).
    pub fn packet(&self) -> Packet<'_> {
        Packet {
            proto: self.proto.unwrap_or(Proto::Ip(rule_match::UDP)),
            src: self.src,
            dst: self.dst,
            src_port: self.src_port,
            dst_port: self.dst_port,
            dscp: self.dscp,
            payload: &self.payload,
        }
    }
}

/// What `rules test` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestAnswer {
    pub version: u64,
    pub class: Class,
    /// The rule that decided (`None`: the default).
    pub rule: Option<String>,
}

impl Ruleset {
    pub fn test(&self, sample: &PacketSample) -> TestAnswer {
        let hit = self.classify(&sample.packet());
        TestAnswer {
            version: self.version,
            class: hit.class,
            rule: hit.rule.map(|r| r.name.clone()),
        }
    }
}

/// Which rule decided, and what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit<'r> {
    pub class: Class,
    /// `None`: no rule matched; the default decided.
    pub rule: Option<&'r Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("rule name `{0}`: use 1-{MAX_NAME} chars of a-z, 0-9, '-', starting with a letter")]
    BadName(String),
    #[error("rule `{0}` appears twice")]
    Duplicate(String),
    #[error("a ruleset holds at most {MAX_RULES} rules")]
    TooMany,
    #[error("rule `{rule}`: dscp {dscp} is outside 0..=63")]
    Dscp { rule: String, dscp: u8 },
    #[error("rule `{rule}`: the payload prefix is {len} bytes; at most {MAX_PREFIX}")]
    PrefixTooLong { rule: String, len: usize },
    #[error("rule `{rule}`: the payload mask has {mask} bytes, the prefix {prefix}")]
    MaskLength {
        rule: String,
        mask: usize,
        prefix: usize,
    },
    #[error("rule `{rule}`: ports need a protocol with ports (udp, tcp or sctp), not {proto}")]
    PortsWithoutPorts { rule: String, proto: Proto },
    #[error("rule `{rule}`: {field} needs an IP protocol, not arp")]
    IpFieldOnArp { rule: String, field: &'static str },
    #[error("rule `{rule}`: port range {range} runs backwards")]
    BackwardsRange { rule: String, range: PortRange },
    #[error("no rule named `{0}`")]
    NotFound(String),
    #[error("{0}")]
    Syntax(String),
}

impl Rule {
    pub fn validate(&self) -> Result<(), RuleError> {
        let named = || self.name.clone();
        if !valid_name(&self.name) {
            return Err(RuleError::BadName(self.name.clone()));
        }
        let m = &self.matches;
        if let Some(dscp) = m.dscp.filter(|d| *d > 63) {
            return Err(RuleError::Dscp {
                rule: named(),
                dscp,
            });
        }
        if m.payload.len() > MAX_PREFIX {
            return Err(RuleError::PrefixTooLong {
                rule: named(),
                len: m.payload.len(),
            });
        }
        if !m.payload_mask.is_empty() && m.payload_mask.len() != m.payload.len() {
            return Err(RuleError::MaskLength {
                rule: named(),
                mask: m.payload_mask.len(),
                prefix: m.payload.len(),
            });
        }
        for range in [m.src_port, m.dst_port, m.port].into_iter().flatten() {
            if range.lo > range.hi {
                return Err(RuleError::BackwardsRange {
                    rule: named(),
                    range,
                });
            }
        }
        self.validate_proto()
    }

    fn validate_proto(&self) -> Result<(), RuleError> {
        let m = &self.matches;
        let Some(proto) = m.proto else { return Ok(()) };
        let has_ports = m.src_port.is_some() || m.dst_port.is_some() || m.port.is_some();
        if has_ports && !proto.has_ports() {
            return Err(RuleError::PortsWithoutPorts {
                rule: self.name.clone(),
                proto,
            });
        }
        if proto == Proto::Arp {
            let ip_field = [
                (m.dscp.is_some(), "dscp"),
                (!m.payload.is_empty(), "payload"),
            ];
            if let Some((_, field)) = ip_field.into_iter().find(|(given, _)| *given) {
                return Err(RuleError::IpFieldOnArp {
                    rule: self.name.clone(),
                    field,
                });
            }
        }
        Ok(())
    }

    /// Whether every field the rule gives matches the packet.
    pub fn matches(&self, p: &Packet) -> bool {
        let m = &self.matches;
        m.proto
            .is_none_or(|want| want == p.proto || want == Proto::Any)
            && m.src.is_none_or(|n| p.src.is_some_and(|a| n.contains(a)))
            && m.dst.is_none_or(|n| p.dst.is_some_and(|a| n.contains(a)))
            && m.src_port
                .is_none_or(|r| p.src_port.is_some_and(|v| r.contains(v)))
            && m.dst_port
                .is_none_or(|r| p.dst_port.is_some_and(|v| r.contains(v)))
            && m.port.is_none_or(|r| {
                p.src_port.is_some_and(|v| r.contains(v))
                    || p.dst_port.is_some_and(|v| r.contains(v))
            })
            && m.dscp.is_none_or(|d| p.dscp == Some(d))
            && prefix_matches(&m.payload, &m.payload_mask, p.payload)
    }
}

fn prefix_matches(prefix: &[u8], mask: &[u8], payload: &[u8]) -> bool {
    if payload.len() < prefix.len() {
        return false;
    }
    prefix.iter().enumerate().all(|(i, want)| {
        let bits = mask.get(i).copied().unwrap_or(0xff);
        payload[i] & bits == want & bits
    })
}

pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_NAME
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

impl Ruleset {
    /// Checks every rule and the set as a whole.
    pub fn validate(&self) -> Result<(), RuleError> {
        if self.rules.len() > MAX_RULES {
            return Err(RuleError::TooMany);
        }
        let mut seen = std::collections::BTreeSet::new();
        for rule in &self.rules {
            rule.validate()?;
            if !seen.insert(rule.name.as_str()) {
                return Err(RuleError::Duplicate(rule.name.clone()));
            }
        }
        Ok(())
    }

    /// The position of the first rule (in check order) that matches.
    pub fn first_match(&self, p: &Packet) -> Option<usize> {
        self.rules.iter().position(|r| r.matches(p))
    }

    /// The first rule (in check order) that matches, else the default.
    pub fn classify(&self, p: &Packet) -> Hit<'_> {
        match self.first_match(p).map(|i| &self.rules[i]) {
            Some(rule) => Hit {
                class: rule.class,
                rule: Some(rule),
            },
            None => Hit {
                class: self.default,
                rule: None,
            },
        }
    }

    /// The next version with `rule` added (or replacing the one of its
    /// name), kept in check order; validated.
    pub fn with_rule(&self, rule: Rule) -> Result<Ruleset, RuleError> {
        let mut next = self.clone();
        next.rules.retain(|r| r.name != rule.name);
        next.rules.push(rule);
        next.rules
            .sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
        next.version += 1;
        next.validate()?;
        Ok(next)
    }

    /// The next version without the rule named `name`.
    pub fn without_rule(&self, name: &str) -> Result<Ruleset, RuleError> {
        if !self.rules.iter().any(|r| r.name == name) {
            return Err(RuleError::NotFound(name.to_string()));
        }
        let mut next = self.clone();
        next.rules.retain(|r| r.name != name);
        next.version += 1;
        Ok(next)
    }

    /// The next version with another default class.
    pub fn with_default(&self, default: Class) -> Ruleset {
        Ruleset {
            version: self.version + 1,
            default,
            rules: self.rules.clone(),
        }
    }
}
