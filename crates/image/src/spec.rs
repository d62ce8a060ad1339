//! An image spec: the short TOML file a user writes to package their
//! service for Duplex (`duplex image build --spec FILE`). Parsing and every
//! check are here and pure; the error names the field.
//!
//! ```toml
//! name = "kamailio"
//! release = "bookworm"
//! packages = ["kamailio"]
//!
//! [[files]]
//! path = "/etc/kamailio/kamailio.cfg"
//! source = "kamailio.cfg"        # relative to the spec's directory
//!
//! [service]                       # what the middleware supervises
//! name = "kamailio"
//! start = ["/usr/sbin/kamailio", "-DD", "-E"]
//! health = ["/usr/sbin/kamcmd", "core.uptime"]
//! ```

use std::path::{Path, PathBuf};

use duplex_guest::service::ServiceConfig;
use serde::{Deserialize, Serialize};

/// Debian releases the builder knows how to bootstrap.
pub const RELEASES: &[&str] = &["bookworm", "trixie"];
pub const DEFAULT_RELEASE: &str = "bookworm";
/// A spec file is at most this big (it is a short text).
pub const MAX_SPEC_BYTES: u64 = 256 * 1024;
pub const MAX_PACKAGES: usize = 256;
pub const MAX_FILES: usize = 256;
/// The disk may be at most this big.
pub const MAX_DISK_MIB: u32 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// The image's name (a directory under the image store).
    pub name: String,
    /// The Debian release of the root filesystem.
    #[serde(default = "default_release")]
    pub release: String,
    /// Debian mirror (default: `http://deb.debian.org/debian`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
    /// Packages installed on top of Debian's essential set.
    #[serde(default)]
    pub packages: Vec<String>,
    #[serde(default)]
    pub files: Vec<FileSpec>,
    pub service: ServiceConfig,
    #[serde(default)]
    pub disk: DiskSpec,
    #[serde(default)]
    pub middleware: MiddlewareSpec,
}

/// A file added to the root filesystem, from `source` (relative to the
/// spec's directory) or inline `content`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default = "default_mode")]
    pub mode: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// Size of the root filesystem; default: what the files need plus a
    /// quarter, plus 64 MiB for the service's writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_mib: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MiddlewareSpec {
    /// How long a short hook (health, become-active, ...) may run
    /// (default 5000 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_timeout_ms: Option<u64>,
}

fn default_release() -> String {
    DEFAULT_RELEASE.into()
}
fn default_mode() -> String {
    "0644".into()
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read the image spec {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("image spec {}: {size} bytes; a spec is at most {MAX_SPEC_BYTES}", path.display())]
    TooBig { path: PathBuf, size: u64 },
    #[error("image spec {}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("image spec field `{field}`: {reason}")]
    Field { field: String, reason: String },
}

fn field(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

impl ImageSpec {
    /// Read, parse and check a spec file.
    pub fn load(path: &Path) -> Result<ImageSpec, SpecError> {
        let read_err = |source| SpecError::Read {
            path: path.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read_err)?.len();
        if size > MAX_SPEC_BYTES {
            return Err(SpecError::TooBig {
                path: path.to_path_buf(),
                size,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        let spec = ImageSpec::parse(&text).map_err(|e| match e {
            SpecError::Syntax { message, .. } => SpecError::Syntax {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })?;
        Ok(spec)
    }

    /// Parse and check spec text (no file access).
    pub fn parse(text: &str) -> Result<ImageSpec, SpecError> {
        let spec: ImageSpec = toml::from_str(text).map_err(|e| SpecError::Syntax {
            path: PathBuf::from("<text>"),
            message: e.to_string().trim_end().to_string(),
        })?;
        spec.check()?;
        Ok(spec)
    }

    /// Every rule that needs no file system.
    pub fn check(&self) -> Result<(), SpecError> {
        crate::check_name(&self.name).map_err(|e| field("name", e.to_string()))?;
        if !RELEASES.contains(&self.release.as_str()) {
            return Err(field(
                "release",
                format!("{:?} is not one of {}", self.release, RELEASES.join(", ")),
            ));
        }
        if let Some(m) = &self.mirror {
            let ok = (m.starts_with("http://") || m.starts_with("https://"))
                && !m.contains(char::is_whitespace);
            if !ok {
                return Err(field("mirror", format!("{m:?} is not an http(s) URL")));
            }
        }
        self.check_packages()?;
        self.check_files()?;
        check_service(&self.service)?;
        if let Some(size) = self.disk.size_mib {
            if !(64..=MAX_DISK_MIB).contains(&size) {
                return Err(field(
                    "disk.size_mib",
                    format!("{size} is outside 64..={MAX_DISK_MIB}"),
                ));
            }
        }
        if let Some(t) = self.middleware.hook_timeout_ms {
            if !(100..=600_000).contains(&t) {
                return Err(field(
                    "middleware.hook_timeout_ms",
                    format!("{t} is outside 100..=600000"),
                ));
            }
        }
        Ok(())
    }

    fn check_packages(&self) -> Result<(), SpecError> {
        if self.packages.len() > MAX_PACKAGES {
            return Err(field(
                "packages",
                format!("{} packages; at most {MAX_PACKAGES}", self.packages.len()),
            ));
        }
        for (i, p) in self.packages.iter().enumerate() {
            crate::debian::check_package_name(p).map_err(|_| {
                field(
                    format!("packages[{i}]"),
                    format!("{p:?} is not a Debian package name"),
                )
            })?;
        }
        Ok(())
    }

    fn check_files(&self) -> Result<(), SpecError> {
        if self.files.len() > MAX_FILES {
            return Err(field(
                "files",
                format!("{} files; at most {MAX_FILES}", self.files.len()),
            ));
        }
        for (i, f) in self.files.iter().enumerate() {
            let at = |what: &str| format!("files[{i}].{what}");
            check_image_path(&f.path)
                .map_err(|r| field(at("path"), format!("{:?} {r}", f.path)))?;
            if f.path.starts_with("/etc/duplex/") {
                return Err(field(
                    at("path"),
                    "/etc/duplex is written by the builder from [service] and [middleware]",
                ));
            }
            if self.files[..i].iter().any(|o| o.path == f.path) {
                return Err(field(at("path"), format!("{:?} is added twice", f.path)));
            }
            match (&f.source, &f.content) {
                (Some(_), Some(_)) => {
                    return Err(field(at("source"), "give `source` or `content`, not both"))
                }
                (None, None) => return Err(field(at("source"), "give `source` or `content`")),
                _ => {}
            }
            parse_mode(&f.mode).map_err(|r| field(at("mode"), format!("{:?} {r}", f.mode)))?;
        }
        Ok(())
    }

    /// The service's configuration as the middleware reads it, with the
    /// `[middleware]` settings folded in.
    pub fn service_json(&self) -> String {
        let mut service = self.service.clone();
        service.hook_timeout_ms = self.middleware.hook_timeout_ms.or(service.hook_timeout_ms);
        let mut s = serde_json::to_string_pretty(&service).unwrap_or_default();
        s.push('\n');
        s
    }
}

fn check_service(s: &ServiceConfig) -> Result<(), SpecError> {
    if s.name.is_empty() || s.name.len() > 64 || s.name.chars().any(|c| c.is_control()) {
        return Err(field("service.name", "give 1-64 printable characters"));
    }
    let hooks: [(&str, Option<&Vec<String>>); 6] = [
        ("start", Some(&s.start)),
        ("stop", s.stop.as_ref()),
        ("become_active", s.become_active.as_ref()),
        ("become_standby", s.become_standby.as_ref()),
        ("health", s.health.as_ref()),
        ("reset", s.reset.as_ref()),
    ];
    for (name, hook) in hooks {
        let Some(argv) = hook else { continue };
        let Some(program) = argv.first() else {
            return Err(field(format!("service.{name}"), "the command is empty"));
        };
        if !program.starts_with('/') {
            return Err(field(
                format!("service.{name}"),
                format!("{program:?}: give the program's absolute path (hooks run without a shell or PATH search)"),
            ));
        }
    }
    Ok(())
}

/// Paths in the image: the file rule, not under the file systems mounted
/// at boot.
pub(crate) fn check_image_path(path: &str) -> Result<(), String> {
    duplex_core::file_rule::check_path(path, &["/proc", "/sys", "/dev", "/run"])
}

/// Image files may be set-id (a package's helper might need it).
pub(crate) fn parse_mode(mode: &str) -> Result<u32, &'static str> {
    duplex_core::file_rule::parse_mode(mode, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r##"
name = "kamailio"
packages = ["kamailio", "kamailio-extra-modules"]

[[files]]
path = "/etc/kamailio/kamailio.cfg"
source = "kamailio.cfg"

[[files]]
path = "/usr/local/bin/hook"
content = "#!/bin/sh\nexit 0\n"
mode = "0755"

[service]
name = "kamailio"
start = ["/usr/sbin/kamailio", "-DD", "-E"]
health = ["/usr/sbin/kamcmd", "core.uptime"]

[middleware]
hook_timeout_ms = 3000
"##;

    #[test]
    fn a_good_spec_parses_with_defaults() {
        let s = ImageSpec::parse(GOOD).unwrap();
        assert_eq!(s.release, "bookworm");
        assert_eq!(s.files[0].mode, "0644");
        assert_eq!(s.disk.size_mib, None);
        let service: ServiceConfig = serde_json::from_str(&s.service_json()).unwrap();
        assert_eq!(service.hook_timeout_ms, Some(3000));
        assert_eq!(service.start[0], "/usr/sbin/kamailio");
    }

    fn err(text: &str) -> String {
        ImageSpec::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: &[(&str, &str, &str)] = &[
            ("name = \"kamailio\"", "name = \"../x\"", "`name`"),
            (
                "packages = [\"kamailio\",",
                "release = \"sid\"\npackages = [\"kamailio\",",
                "`release`",
            ),
            (
                "\"kamailio-extra-modules\"",
                "\"Bad Name\"",
                "`packages[1]`",
            ),
            (
                "source = \"kamailio.cfg\"",
                "source = \"k\"\ncontent = \"x\"",
                "`files[0].source`",
            ),
            (
                "path = \"/usr/local/bin/hook\"",
                "path = \"usr/bin/hook\"",
                "`files[1].path`",
            ),
            (
                "path = \"/usr/local/bin/hook\"",
                "path = \"/etc/../hook\"",
                "`files[1].path`",
            ),
            (
                "path = \"/usr/local/bin/hook\"",
                "path = \"/etc/duplex/service.json\"",
                "`files[1].path`",
            ),
            (
                "path = \"/usr/local/bin/hook\"",
                "path = \"/etc/kamailio/kamailio.cfg\"",
                "`files[1].path`",
            ),
            ("mode = \"0755\"", "mode = \"rwx\"", "`files[1].mode`"),
            (
                "start = [\"/usr/sbin/kamailio\", \"-DD\", \"-E\"]",
                "start = []",
                "`service.start`",
            ),
            (
                "health = [\"/usr/sbin/kamcmd\"",
                "health = [\"kamcmd\"",
                "`service.health`",
            ),
            (
                "hook_timeout_ms = 3000",
                "hook_timeout_ms = 1",
                "`middleware.hook_timeout_ms`",
            ),
        ];
        for (from, to, want) in cases {
            assert!(GOOD.contains(from), "{from}");
            let e = err(&GOOD.replacen(from, to, 1));
            assert!(e.contains(want), "{to}: {e}");
        }
    }

    #[test]
    fn syntax_and_unknown_keys_are_reported_with_the_key() {
        let e = err(&GOOD.replace("packages =", "pakages ="));
        assert!(e.contains("pakages"), "{e}");
        let e = err(&GOOD.replace("[service]\nname = \"kamailio\"\n", "[service]\n"));
        assert!(e.contains("name"), "{e}");
        let e = err(&GOOD.replace("hook_timeout_ms = 3000", "hook_timeout = 3000"));
        assert!(e.contains("hook_timeout"), "{e}");
        let e = err("name = ");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn load_names_the_file() {
        let e = ImageSpec::load(Path::new("/nonexistent/spec.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/spec.toml"), "{e}");
    }
}
