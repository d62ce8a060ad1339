//! Finding the kernel image and the few modules the guest needs inside an
//! extracted Debian kernel package.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::ImageError;

/// Modules under `lib/modules/<version>/kernel/`, in load order (each after
/// its dependencies). Debian ships them uncompressed.
pub const MODULES: &[&str] = &[
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_mmio.ko",
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
    "drivers/net/virtio_net.ko",
    "drivers/char/virtio_console.ko",
    "drivers/block/virtio_blk.ko",
    "drivers/firmware/qemu_fw_cfg.ko",
];

/// `drivers/virtio/virtio_ring.ko` -> `virtio_ring`.
pub fn module_name(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.strip_suffix(".ko").unwrap_or(base)
}

/// Paths of what the image takes from the extracted package.
#[derive(Debug, Clone)]
pub struct KernelFiles {
    /// e.g. `6.1.0-56-cloud-amd64`.
    pub version: String,
    pub vmlinuz: PathBuf,
    /// `(entry of MODULES, absolute path)`, in load order.
    pub modules: Vec<(&'static str, PathBuf)>,
}

/// Locate `boot/vmlinuz-<version>` and the [`MODULES`] in `root`.
pub fn locate(root: &Path, package: &str) -> Result<KernelFiles, ImageError> {
    let boot = root.join("boot");
    let vmlinuz_names = names_with_prefix(&boot, "vmlinuz-", package)?;
    let [vmlinuz_name] = vmlinuz_names.as_slice() else {
        return Err(ImageError::AmbiguousKernel {
            package: package.to_string(),
            what: "boot/vmlinuz-*",
            dir: boot,
            found: vmlinuz_names,
        });
    };
    let version = vmlinuz_name["vmlinuz-".len()..].to_string();
    let vmlinuz = boot.join(vmlinuz_name);

    let kernel_dir = root.join("lib/modules").join(&version).join("kernel");
    let mut modules = Vec::with_capacity(MODULES.len());
    for m in MODULES {
        let path = kernel_dir.join(m);
        if !path.is_file() {
            let compressed = ["xz", "zst", "gz"]
                .iter()
                .map(|ext| kernel_dir.join(format!("{m}.{ext}")))
                .find(|p| p.is_file());
            let hint = match compressed {
                Some(p) => format!(
                    "; found {} but compressed modules are not supported",
                    p.display()
                ),
                None => String::new(),
            };
            return Err(ImageError::MissingKernelFile {
                package: package.to_string(),
                path,
                hint,
            });
        }
        modules.push((*m, path));
    }
    Ok(KernelFiles {
        version,
        vmlinuz,
        modules,
    })
}

fn names_with_prefix(dir: &Path, prefix: &str, package: &str) -> Result<Vec<String>, ImageError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ImageError::MissingKernelFile {
                package: package.to_string(),
                path: dir.to_path_buf(),
                hint:
                    "; is it a versioned kernel package such as linux-image-<version>-cloud-amd64?"
                        .into(),
            })
        }
        Err(e) => return Err(ImageError::io("list", dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ImageError::io("list", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) && name.len() > prefix.len() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_in_load_order() {
        let names: Vec<_> = MODULES.iter().map(|m| module_name(m)).collect();
        assert_eq!(
            names,
            [
                "virtio_ring",
                "virtio",
                "virtio_mmio",
                "failover",
                "net_failover",
                "virtio_net",
                "virtio_console",
                "virtio_blk",
                "qemu_fw_cfg"
            ]
        );
    }

    #[test]
    fn locate_in_fake_tree() {
        let root = std::env::temp_dir().join(format!("duplex-kernel-{}", std::process::id()));
        let ver = "6.1.0-99-cloud-amd64";
        fs::create_dir_all(root.join("boot")).unwrap();
        fs::write(root.join("boot").join(format!("vmlinuz-{ver}")), b"kernel").unwrap();
        fs::write(root.join("boot").join(format!("config-{ver}")), b"").unwrap();
        let kdir = root.join("lib/modules").join(ver).join("kernel");
        for m in &MODULES[..MODULES.len() - 1] {
            let p = kdir.join(m);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, m.as_bytes()).unwrap();
        }
        let err = locate(&root, "pkg").unwrap_err().to_string();
        assert!(err.contains("drivers/firmware/qemu_fw_cfg.ko"), "{err}");

        let last = kdir.join(MODULES[MODULES.len() - 1]);
        fs::create_dir_all(last.parent().unwrap()).unwrap();
        fs::write(last, b"x").unwrap();
        let k = locate(&root, "pkg").unwrap();
        assert_eq!(k.version, ver);
        assert_eq!(k.modules.len(), MODULES.len());
        assert_eq!(k.modules[0].0, MODULES[0]);
        fs::remove_dir_all(&root).unwrap();
    }
}
