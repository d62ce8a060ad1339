//! The field types a rule matches on, each written and read as the text an
//! operator types (`udp`, `10.0.0.0/8`, `10000-20000`).

use super::RuleError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// A packet's protocol: an IPv4 protocol number, or ARP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Proto {
    /// Matches every packet (only meaningful in a rule).
    Any,
    Arp,
    /// An IPv4 protocol number (1 ICMP, 6 TCP, 17 UDP, 132 SCTP).
    Ip(u8),
    /// Neither IPv4 nor ARP (the rule form is `any`).
    Other,
}

pub const ICMP: u8 = 1;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const SCTP: u8 = 132;

const NAMED: [(&str, u8); 4] = [("icmp", ICMP), ("tcp", TCP), ("udp", UDP), ("sctp", SCTP)];

impl Proto {
    pub fn has_ports(self) -> bool {
        matches!(self, Proto::Ip(TCP | UDP | SCTP))
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proto::Any => write!(f, "any"),
            Proto::Arp => write!(f, "arp"),
            Proto::Other => write!(f, "other"),
            Proto::Ip(n) => match NAMED.iter().find(|(_, v)| v == n) {
                Some((name, _)) => write!(f, "{name}"),
                None => write!(f, "ip:{n}"),
            },
        }
    }
}

impl FromStr for Proto {
    type Err = RuleError;
    fn from_str(s: &str) -> Result<Self, RuleError> {
        let bad = || {
            RuleError::Syntax(format!(
                "protocol `{s}`: use any, arp, icmp, tcp, udp, sctp or ip:N (N 0-255)"
            ))
        };
        match s {
            "any" => Ok(Proto::Any),
            "arp" => Ok(Proto::Arp),
            _ => match NAMED.iter().find(|(name, _)| *name == s) {
                Some((_, n)) => Ok(Proto::Ip(*n)),
                None => s
                    .strip_prefix("ip:")
                    .and_then(|n| n.parse().ok())
                    .map(Proto::Ip)
                    .ok_or_else(bad),
            },
        }
    }
}

impl TryFrom<String> for Proto {
    type Error = RuleError;
    fn try_from(s: String) -> Result<Self, RuleError> {
        s.parse()
    }
}

impl From<Proto> for String {
    fn from(p: Proto) -> String {
        p.to_string()
    }
}

/// An IPv4 network, `A.B.C.D/N` (a bare address is a /32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Net {
    fn mask(self) -> u32 {
        match self.prefix {
            0 => 0,
            p => u32::MAX << (32 - u32::from(p)),
        }
    }

    pub fn contains(self, a: Ipv4Addr) -> bool {
        u32::from(a) & self.mask() == u32::from(self.addr) & self.mask()
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Net {
    type Err = RuleError;
    fn from_str(s: &str) -> Result<Self, RuleError> {
        let bad = || RuleError::Syntax(format!("network `{s}`: use A.B.C.D or A.B.C.D/N (N 0-32)"));
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, p.parse::<u8>().map_err(|_| bad())?),
            None => (s, 32),
        };
        if prefix > 32 {
            return Err(bad());
        }
        let addr = addr.parse().map_err(|_| bad())?;
        Ok(Net { addr, prefix })
    }
}

impl TryFrom<String> for Net {
    type Error = RuleError;
    fn try_from(s: String) -> Result<Self, RuleError> {
        s.parse()
    }
}

impl From<Net> for String {
    fn from(n: Net) -> String {
        n.to_string()
    }
}

/// A port or an inclusive range, `5060` or `10000-20000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn one(port: u16) -> Self {
        PortRange { lo: port, hi: port }
    }

    pub fn contains(self, port: u16) -> bool {
        (self.lo..=self.hi).contains(&port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

impl FromStr for PortRange {
    type Err = RuleError;
    fn from_str(s: &str) -> Result<Self, RuleError> {
        let bad = || RuleError::Syntax(format!("port `{s}`: use P or LO-HI (0-65535)"));
        let port = |p: &str| p.trim().parse::<u16>().map_err(|_| bad());
        match s.split_once('-') {
            Some((lo, hi)) => Ok(PortRange {
                lo: port(lo)?,
                hi: port(hi)?,
            }),
            None => port(s).map(PortRange::one),
        }
    }
}

impl TryFrom<String> for PortRange {
    type Error = RuleError;
    fn try_from(s: String) -> Result<Self, RuleError> {
        s.parse()
    }
}

impl From<PortRange> for String {
    fn from(r: PortRange) -> String {
        r.to_string()
    }
}
