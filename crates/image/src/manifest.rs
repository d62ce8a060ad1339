//! `manifest.json`: what an image was built from and what it contains.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::ImageError;
use crate::fsutil;

/// Version of the manifest format written by this crate.
pub const FORMAT_VERSION: u32 = 1;

/// One file: where it came from (absolute host path; for the init script its
/// name in the image, for outputs the file name in the image directory), its
/// sha256 (hex) and size in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

/// Everything that went into the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inputs {
    /// The kernel package `.deb`.
    pub kernel_deb: FileRecord,
    /// `boot/vmlinuz-<version>` from the package.
    pub vmlinuz: FileRecord,
    /// Modules, in load order.
    pub modules: Vec<FileRecord>,
    pub busybox: FileRecord,
    pub duplex_binary: FileRecord,
    /// The `/init` script text (`path` is `init`).
    pub init_script: FileRecord,
}

/// The two boot artifacts, `path` relative to the image directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outputs {
    pub vmlinuz: FileRecord,
    pub initramfs: FileRecord,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Image name, e.g. `default`.
    pub name: String,
    /// e.g. `linux-image-6.1.0-56-cloud-amd64`.
    pub kernel_package: String,
    /// e.g. `6.1.0-56-cloud-amd64`.
    pub kernel_version: String,
    pub inputs: Inputs,
    pub outputs: Outputs,
    /// The root disk of an image built from a spec; none for the diskless
    /// default image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<Disk>,
}

/// What an image's root disk was built from and holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// The spec file (path as given, its sha256 and size).
    pub spec: FileRecord,
    pub release: String,
    /// Every installed package with its version, sorted by name.
    pub packages: Vec<crate::rootfs::PackageRecord>,
    /// The files the spec added (`path` in the VM), and the service config.
    pub files: Vec<FileRecord>,
    /// Filesystem size in MiB.
    pub size_mib: u64,
    /// `rootfs-<hash>.qcow2`, the read-only base of VMs' overlays.
    pub rootfs: FileRecord,
}

impl Manifest {
    pub fn to_json(&self) -> String {
        // Serialising plain strings and integers cannot fail.
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Read and parse a `manifest.json`.
    pub fn load(path: &Path) -> Result<Manifest, ImageError> {
        let bytes = fsutil::read(path)?;
        serde_json::from_slice(&bytes).map_err(|source| ImageError::Manifest {
            path: path.to_path_buf(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(p: &str) -> FileRecord {
        FileRecord {
            path: p.into(),
            sha256: "00".repeat(32),
            size: 1,
        }
    }

    #[test]
    fn json_round_trip() {
        let m = Manifest {
            format_version: FORMAT_VERSION,
            name: "default".into(),
            kernel_package: "linux-image-6.1.0-56-cloud-amd64".into(),
            kernel_version: "6.1.0-56-cloud-amd64".into(),
            inputs: Inputs {
                kernel_deb: rec("a.deb"),
                vmlinuz: rec("boot/vmlinuz"),
                modules: vec![rec("drivers/virtio/virtio.ko")],
                busybox: rec("/bin/busybox"),
                duplex_binary: rec("/x/duplex"),
                init_script: rec("init"),
            },
            outputs: Outputs {
                vmlinuz: rec("vmlinuz"),
                initramfs: rec("initramfs.img"),
            },
            disk: None,
        };
        let json = m.to_json();
        assert!(json.contains("\"format_version\": 1"));
        let back: Manifest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
    }
}
