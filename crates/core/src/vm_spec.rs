//! What a VM is: the operator's request, validated before anything runs.

use crate::mac::Mac;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Limits that keep a bad request from reaching QEMU.
pub const MAX_MEMORY_MIB: u32 = 64 * 1024;
pub const MIN_MEMORY_MIB: u32 = 64;
pub const MAX_VCPUS: u32 = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// Unique name: 1-32 chars of [a-z0-9-], starting with a letter.
    pub name: String,
    /// Image name as built by `duplex image build` (default: "default").
    #[serde(default = "default_image")]
    pub image: String,
    #[serde(default = "default_memory")]
    pub memory_mib: u32,
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    /// Service address of the guest's NIC, with prefix length.
    pub ip: Ipv4Addr,
    #[serde(default = "default_prefix")]
    pub prefix_len: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// Defaults to [`Mac::for_vm`] of the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
    /// Configuration the guest receives at boot (files, environment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<crate::user_data::UserData>,
    /// S2: the whole VM is checkpointed to a backup host every epoch, and
    /// its output classified (its RAM is a shared file for that).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replicated: bool,
    /// S2: where a replicated VM's held output waits for its epoch to
    /// commit.
    #[serde(default, skip_serializing_if = "HoldAt::is_host")]
    pub hold_at: HoldAt,
}

/// Where S2 holds a replicated VM's class-2 output until its epoch commits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HoldAt {
    /// Embodiment A: in the transmit buffer of its host's element.
    #[default]
    Host,
    /// Embodiment B: in the Duplex switch its host's uplink passes
    /// through; the host marks the frames and sends commit messages.
    Switch,
    /// Nowhere: output leaves at once and the replica trails the VM by up
    /// to its lag (S5 across sites, where holding output for a checkpoint
    /// would cost every answer a WAN round trip). Losing the VM's host
    /// loses what it did since the last checkpoint its replica applied.
    None,
}

impl HoldAt {
    pub fn is_host(&self) -> bool {
        *self == HoldAt::Host
    }
}

impl std::str::FromStr for HoldAt {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "host" => Ok(HoldAt::Host),
            "switch" => Ok(HoldAt::Switch),
            "none" => Ok(HoldAt::None),
            _ => Err(format!("`{s}` is not `host`, `switch` or `none`")),
        }
    }
}

fn default_image() -> String {
    "default".into()
}
fn default_memory() -> u32 {
    256
}
fn default_vcpus() -> u32 {
    1
}
fn default_prefix() -> u8 {
    24
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("field `name`: `{0}` is not a valid VM name (1-32 chars of a-z, 0-9, '-', starting with a letter)")]
    Name(String),
    #[error("field `image`: `{0}` is not a valid image name (1-32 chars of a-z, 0-9, '-', '_')")]
    Image(String),
    #[error("field `memory_mib`: {0} MiB is outside {MIN_MEMORY_MIB}..={MAX_MEMORY_MIB}")]
    Memory(u32),
    #[error("field `vcpus`: {0} is outside 1..={MAX_VCPUS}")]
    Vcpus(u32),
    #[error("field `prefix_len`: {0} is outside 8..=30")]
    Prefix(u8),
    #[error("field `ip`: {0} is not a unicast host address")]
    Ip(Ipv4Addr),
    #[error("field `mac`: {0} is multicast; a NIC needs a unicast MAC")]
    Mac(Mac),
    #[error("field `hold_at`: `switch` and `none` are for a replicated VM (`replicated: true`)")]
    HoldAt,
    #[error("field `user_data`: {0}")]
    UserData(#[from] crate::user_data::UserDataError),
}

pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

impl VmSpec {
    /// A VM with the defaults: image `default`, 256 MiB, 1 vCPU, a /24.
    pub fn new(name: &str, ip: Ipv4Addr) -> VmSpec {
        VmSpec {
            name: name.to_string(),
            image: default_image(),
            memory_mib: default_memory(),
            vcpus: default_vcpus(),
            ip,
            prefix_len: default_prefix(),
            gateway: None,
            mac: None,
            user_data: None,
            replicated: false,
            hold_at: HoldAt::Host,
        }
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        if !valid_name(&self.name) {
            return Err(SpecError::Name(self.name.clone()));
        }
        let image_ok = !self.image.is_empty()
            && self.image.len() <= 32
            && self
                .image
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !image_ok {
            return Err(SpecError::Image(self.image.clone()));
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(SpecError::Memory(self.memory_mib));
        }
        if !(1..=MAX_VCPUS).contains(&self.vcpus) {
            return Err(SpecError::Vcpus(self.vcpus));
        }
        if !(8..=30).contains(&self.prefix_len) {
            return Err(SpecError::Prefix(self.prefix_len));
        }
        let ip = self.ip;
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback() {
            return Err(SpecError::Ip(ip));
        }
        if let Some(mac) = self.mac {
            if mac.0[0] & 1 == 1 {
                return Err(SpecError::Mac(mac));
            }
        }
        if let Some(data) = &self.user_data {
            data.check()?;
        }
        if self.hold_at != HoldAt::Host && !self.replicated {
            return Err(SpecError::HoldAt);
        }
        Ok(())
    }

    /// The spec as API answers show it: secret user files redacted.
    pub fn redacted(&self) -> VmSpec {
        VmSpec {
            user_data: self.user_data.as_ref().map(|d| d.redacted()),
            ..self.clone()
        }
    }

    pub fn mac(&self) -> Mac {
        self.mac.unwrap_or_else(|| Mac::for_vm(&self.name))
    }

    /// The `duplex.*` kernel command-line words the guest's /init reads.
    pub fn kernel_args(&self) -> String {
        let mut s = format!(
            "duplex.name={} duplex.ip={}/{}",
            self.name, self.ip, self.prefix_len
        );
        if let Some(gw) = self.gateway {
            s.push_str(&format!(" duplex.gw={gw}"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        serde_json::from_str(r#"{"name":"vm1","ip":"10.77.0.100"}"#).unwrap()
    }

    #[test]
    fn defaults_fill_in() {
        let s = spec();
        assert_eq!(s, VmSpec::new("vm1", Ipv4Addr::new(10, 77, 0, 100)));
        assert_eq!(s.image, "default");
        assert_eq!(s.memory_mib, 256);
        assert_eq!(s.vcpus, 1);
        assert!(s.validate().is_ok());
        assert_eq!(s.kernel_args(), "duplex.name=vm1 duplex.ip=10.77.0.100/24");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = serde_json::from_str::<VmSpec>(r#"{"name":"a","ip":"10.0.0.1","memroy":5}"#)
            .unwrap_err();
        assert!(e.to_string().contains("memroy"));
    }

    #[test]
    fn each_bad_field_is_named() {
        type Mutation = fn(&mut VmSpec);
        let cases: Vec<(Mutation, &str)> = vec![
            (|s| s.name = "1bad".into(), "name"),
            (|s| s.name = "x".repeat(33), "name"),
            (|s| s.image = "../etc".into(), "image"),
            (|s| s.memory_mib = 1, "memory_mib"),
            (|s| s.memory_mib = MAX_MEMORY_MIB + 1, "memory_mib"),
            (|s| s.vcpus = 0, "vcpus"),
            (|s| s.prefix_len = 31, "prefix_len"),
            (|s| s.ip = Ipv4Addr::new(0, 0, 0, 0), "ip"),
            (|s| s.ip = Ipv4Addr::new(224, 0, 0, 1), "ip"),
            (|s| s.mac = Some(Mac([1, 0, 0, 0, 0, 1])), "mac"),
            (|s| s.hold_at = HoldAt::Switch, "hold_at"),
        ];
        for (mutate, field) in cases {
            let mut s = spec();
            mutate(&mut s);
            let err = s.validate().unwrap_err().to_string();
            assert!(err.contains(&format!("`{field}`")), "{err}");
        }
    }
}
