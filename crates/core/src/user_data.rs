//! A VM's user data: the per-VM configuration its guest receives at boot,
//! the cloud-init way (`write_files` and an environment), checked here so
//! the controller, the agent and the guest apply one rule.
//!
//! The agent hands it to QEMU as the firmware file [`FW_CFG_NAME`]; the
//! guest's middleware writes the files into the VM's root before the
//! service starts and gives every hook the environment.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The fw_cfg file QEMU carries the user data in (JSON).
pub const FW_CFG_NAME: &str = "opt/org.duplex/user-data";
/// Where the guest's /init copies it before the middleware starts.
pub const GUEST_PATH: &str = "/run/duplex/user-data.json";
/// The whole user data, as JSON, is at most this big.
pub const MAX_BYTES: usize = 64 * 1024;
pub const MAX_FILES: usize = 32;
pub const MAX_ENV: usize = 64;
const MAX_ENV_NAME: usize = 64;

/// Directories a user file may not be written under: the kernel's and the
/// middleware's own.
const RESERVED: &[&str] = &["/proc", "/sys", "/dev", "/run/duplex"];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserData {
    /// Files written into the VM's root before its service starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<UserFile>,
    /// Variables every service hook gets in its environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserFile {
    /// Absolute path in the VM, e.g. `/etc/kamailio/local.cfg`.
    pub path: String,
    pub content: String,
    /// Octal permission bits, e.g. `0640` (default `0644`; no set-id bits).
    #[serde(default = "default_mode")]
    pub mode: String,
    /// Shown as `<secret, N bytes>` by `vm show` and in API answers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
}

fn default_mode() -> String {
    "0644".into()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserDataError {
    #[error("user data is {0} bytes as JSON; at most {MAX_BYTES} are allowed")]
    TooBig(usize),
    #[error("user data: {0} files; at most {MAX_FILES} are allowed")]
    TooManyFiles(usize),
    #[error("user data: {0} env variables; at most {MAX_ENV} are allowed")]
    TooManyEnv(usize),
    #[error("user data field `files[{index}].path`: {path:?} {reason}")]
    Path {
        index: usize,
        path: String,
        reason: String,
    },
    #[error("user data field `files[{index}].path`: {path:?} is written twice")]
    Duplicate { index: usize, path: String },
    #[error("user data field `files[{index}].mode`: {mode:?} {reason}")]
    Mode {
        index: usize,
        mode: String,
        reason: &'static str,
    },
    #[error("user data field `env.{name}`: {reason}")]
    Env { name: String, reason: &'static str },
}

impl UserData {
    /// Every rule, naming the field that breaks one.
    pub fn check(&self) -> Result<(), UserDataError> {
        let size = serde_json::to_vec(self).map(|v| v.len()).unwrap_or(0);
        if size > MAX_BYTES {
            return Err(UserDataError::TooBig(size));
        }
        if self.files.len() > MAX_FILES {
            return Err(UserDataError::TooManyFiles(self.files.len()));
        }
        if self.env.len() > MAX_ENV {
            return Err(UserDataError::TooManyEnv(self.env.len()));
        }
        for (index, f) in self.files.iter().enumerate() {
            check_path(&f.path).map_err(|reason| UserDataError::Path {
                index,
                path: f.path.clone(),
                reason,
            })?;
            if self.files[..index].iter().any(|o| o.path == f.path) {
                return Err(UserDataError::Duplicate {
                    index,
                    path: f.path.clone(),
                });
            }
            parse_mode(&f.mode).map_err(|reason| UserDataError::Mode {
                index,
                mode: f.mode.clone(),
                reason,
            })?;
        }
        for (name, value) in &self.env {
            check_env(name, value).map_err(|reason| UserDataError::Env {
                name: name.clone(),
                reason,
            })?;
        }
        Ok(())
    }

    /// The same data with every secret file's content replaced by a note
    /// of its size: what API answers and `vm show` carry.
    pub fn redacted(&self) -> UserData {
        let mut out = self.clone();
        for f in out.files.iter_mut().filter(|f| f.secret) {
            f.content = format!("<secret, {} bytes>", f.content.len());
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.env.is_empty()
    }
}

impl UserFile {
    /// The permission bits ([`UserData::check`] has accepted them).
    pub fn mode_bits(&self) -> u32 {
        parse_mode(&self.mode).unwrap_or(0o644)
    }
}

fn check_path(path: &str) -> Result<(), String> {
    crate::file_rule::check_path(path, RESERVED)
}

fn parse_mode(mode: &str) -> Result<u32, &'static str> {
    crate::file_rule::parse_mode(mode, false)
}

fn check_env(name: &str, value: &str) -> Result<(), &'static str> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_uppercase() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
        return Err("the name must be A-Z, 0-9 and '_', not starting with a digit");
    }
    if name.len() > MAX_ENV_NAME {
        return Err("the name is longer than 64 bytes");
    }
    if name.starts_with("DUPLEX_") {
        return Err("names starting with DUPLEX_ are the middleware's");
    }
    if value.contains('\0') {
        return Err("the value contains a NUL byte");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> UserFile {
        UserFile {
            path: path.into(),
            content: "x".into(),
            mode: default_mode(),
            secret: false,
        }
    }

    fn with_files(files: Vec<UserFile>) -> UserData {
        UserData {
            files,
            env: BTreeMap::new(),
        }
    }

    #[test]
    fn good_user_data_passes() {
        let mut d = with_files(vec![file("/etc/a.cfg"), file("/opt/b/c")]);
        d.env.insert("UPSTREAM".into(), "10.0.0.1:5070".into());
        d.files[1].mode = "0600".into();
        assert_eq!(d.check(), Ok(()));
        assert_eq!(d.files[1].mode_bits(), 0o600);
        let json = r#"{"files":[{"path":"/etc/x","content":"y"}],"env":{"A":"b"}}"#;
        let parsed: UserData = serde_json::from_str(json).unwrap();
        assert_eq!(parsed.files[0].mode, "0644");
        assert_eq!(parsed.check(), Ok(()));
    }

    #[test]
    fn bad_paths_name_the_file() {
        for bad in [
            "etc/x",
            "/etc/../shadow",
            "/etc//x",
            "/etc/x/",
            "/proc/sys/x",
            "/dev/sda",
            "/run/duplex/state.json",
            "/a/./b",
        ] {
            let d = with_files(vec![file("/ok"), file(bad)]);
            let e = d.check().unwrap_err().to_string();
            assert!(e.contains("`files[1].path`"), "{bad}: {e}");
        }
        assert!(with_files(vec![file("/run/other")]).check().is_ok());
        let dup = with_files(vec![file("/a"), file("/a")]);
        assert!(matches!(
            dup.check(),
            Err(UserDataError::Duplicate { index: 1, .. })
        ));
    }

    #[test]
    fn bad_modes_and_env_are_named() {
        for bad in ["", "644x", "9", "04755", "1777", "12345"] {
            let mut d = with_files(vec![file("/a")]);
            d.files[0].mode = bad.into();
            let e = d.check().unwrap_err().to_string();
            assert!(e.contains("`files[0].mode`"), "{bad}: {e}");
        }
        for bad in ["lower", "1A", "A-B", "DUPLEX_X", ""] {
            let mut d = UserData::default();
            d.env.insert(bad.into(), "v".into());
            let e = d.check().unwrap_err().to_string();
            assert!(e.contains(&format!("`env.{bad}`")), "{bad}: {e}");
        }
    }

    #[test]
    fn limits_and_unknown_fields() {
        let many = with_files((0..=MAX_FILES).map(|i| file(&format!("/f{i}"))).collect());
        assert_eq!(
            many.check(),
            Err(UserDataError::TooManyFiles(MAX_FILES + 1))
        );
        let mut big = with_files(vec![file("/big")]);
        big.files[0].content = "x".repeat(MAX_BYTES);
        assert!(matches!(big.check(), Err(UserDataError::TooBig(_))));
        let e = serde_json::from_str::<UserData>(r#"{"write_files":[]}"#).unwrap_err();
        assert!(e.to_string().contains("write_files"), "{e}");
    }

    #[test]
    fn secrets_are_redacted() {
        let mut d = with_files(vec![file("/a"), file("/key")]);
        d.files[1].secret = true;
        d.files[1].content = "s3cr3t".into();
        let r = d.redacted();
        assert_eq!(r.files[0].content, "x");
        assert_eq!(r.files[1].content, "<secret, 6 bytes>");
        assert!(!serde_json::to_string(&r).unwrap().contains("s3cr3t"));
    }
}
