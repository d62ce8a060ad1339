//! A root filesystem made into the image's disk without mounting anything:
//! `mkfs.ext4 -d` fills a raw file from the directory, `qemu-img convert`
//! makes it the qcow2 base that VMs' overlays stand on.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::debian;
use crate::error::ImageError;

/// The base disk's file name in an image directory: `rootfs-<first 16 hex
/// digits of its sha256>.qcow2`. A rebuild writes a new one beside the old.
pub fn base_name(sha256: &str) -> String {
    format!("rootfs-{}.qcow2", &sha256[..sha256.len().min(16)])
}

/// Whether `name` is a base's file name (and nothing that could be a path).
pub fn is_base_name(name: &str) -> bool {
    name.strip_prefix("rootfs-")
        .and_then(|n| n.strip_suffix(".qcow2"))
        .is_some_and(|h| h.len() == 16 && h.chars().all(|c| c.is_ascii_hexdigit()))
}
/// The filesystem label the guest's /init looks for.
pub const LABEL: &str = "duplex-root";
/// Room for what the service writes, on top of what the files need.
const HEADROOM_MIB: u64 = 64;
const MIB: u64 = 1024 * 1024;
/// Per-file allocation overhead assumed when sizing (a block and an inode).
const PER_FILE_BYTES: u64 = 4096 + 256;

/// Bytes the files under `root` need on ext4, roughly (sizes rounded up to
/// blocks, plus inodes).
pub fn needed_bytes(root: &Path) -> Result<u64, ImageError> {
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = fs::read_dir(&dir).map_err(|e| ImageError::io("list", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| ImageError::io("list", &dir, e))?;
            let meta = entry
                .path()
                .symlink_metadata()
                .map_err(|e| ImageError::io("inspect", entry.path(), e))?;
            total += meta.len().div_ceil(4096) * 4096 + PER_FILE_BYTES;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(total)
}

/// The disk size in MiB: the spec's if given (refused if too small), else
/// what the files need plus a quarter plus [`HEADROOM_MIB`].
pub fn size_mib(needed: u64, wanted: Option<u32>) -> Result<u64, ImageError> {
    let auto = (needed + needed / 4).div_ceil(MIB) + HEADROOM_MIB;
    match wanted {
        None => Ok(auto),
        Some(w) if u64::from(w) * MIB >= needed + needed / 8 => Ok(u64::from(w)),
        Some(w) => Err(ImageError::Spec(crate::spec::SpecError::Field {
            field: "disk.size_mib".into(),
            reason: format!(
                "{w} MiB is too small for the root filesystem, which needs about {} MiB",
                (needed + needed / 8).div_ceil(MIB)
            ),
        })),
    }
}

/// Write `root` as an ext4 filesystem of `size_mib` into the qcow2 file
/// `out` (through the raw file `raw`, removed after).
pub fn make(root: &Path, size_mib: u64, raw: &Path, out: &Path) -> Result<(), ImageError> {
    let file = fs::File::create(raw).map_err(|e| ImageError::io("create", raw, e))?;
    file.set_len(size_mib * MIB)
        .map_err(|e| ImageError::io("size", raw, e))?;
    drop(file);
    let result = (|| {
        debian::run(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-L", LABEL, "-E", "root_owner=0:0", "-d"])
                .arg(root)
                .arg(raw),
            "",
        )?;
        debian::run(
            Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", "qcow2"])
                .arg(raw)
                .arg(out),
            "; qemu-img is in Debian's qemu-utils",
        )
        .map(|_| ())
    })();
    let _ = fs::remove_file(raw);
    result
}

/// Remove this image's bases other than `keep` that no process of this
/// machine has open (no QEMU runs a VM on them). A base still in use stays;
/// a VM moving here later on a removed base is refused by name, and the
/// move fails cleanly. Returns the names removed.
pub fn prune_bases(dir: &Path, keep: &str) -> Result<Vec<String>, ImageError> {
    let open = open_files();
    let mut removed = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| ImageError::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ImageError::io("list", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_base_name(&name) || name == keep || open.contains(&entry.path()) {
            continue;
        }
        fs::remove_file(entry.path()).map_err(|e| ImageError::io("remove", entry.path(), e))?;
        removed.push(name);
    }
    removed.sort();
    Ok(removed)
}

/// Every file some process of this machine has open (what `/proc` lets us
/// see; run as root to see all).
fn open_files() -> std::collections::HashSet<std::path::PathBuf> {
    let mut open = std::collections::HashSet::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return open;
    };
    for p in procs.flatten() {
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        open.extend(fds.flatten().filter_map(|fd| fs::read_link(fd.path()).ok()));
    }
    open
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_names() {
        let name = base_name("26fd81c6b1b84772fc927d2bad1b7281");
        assert_eq!(name, "rootfs-26fd81c6b1b84772.qcow2");
        assert!(is_base_name(&name));
        for bad in [
            "rootfs.qcow2",
            "rootfs-../../x.qcow2",
            "rootfs-26fd81c6b1b8477.qcow2",
            "/etc/passwd",
        ] {
            assert!(!is_base_name(bad), "{bad}");
        }
    }

    #[test]
    fn prune_keeps_the_current_base_and_open_ones() {
        let dir = std::env::temp_dir().join(format!("duplex-prune-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let names: Vec<String> = ["1", "2", "3"]
            .iter()
            .map(|d| base_name(&d.repeat(16)))
            .collect();
        for n in &names {
            fs::write(dir.join(n), b"x").unwrap();
        }
        fs::write(dir.join("vmlinuz"), b"k").unwrap();
        let held = fs::File::open(dir.join(&names[1])).unwrap();
        let removed = prune_bases(&dir, &names[2]).unwrap();
        assert_eq!(removed, [names[0].clone()]);
        assert!(dir.join(&names[1]).exists() && dir.join(&names[2]).exists());
        assert!(dir.join("vmlinuz").exists());
        drop(held);
        assert_eq!(prune_bases(&dir, &names[2]).unwrap(), [names[1].clone()]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sizes() {
        assert_eq!(size_mib(100 * MIB, None).unwrap(), 125 + HEADROOM_MIB);
        assert_eq!(size_mib(100 * MIB, Some(200)).unwrap(), 200);
        let e = size_mib(100 * MIB, Some(100)).unwrap_err().to_string();
        assert!(e.contains("`disk.size_mib`"), "{e}");
        assert!(e.contains("113 MiB"), "{e}");
    }

    #[test]
    fn counts_files_and_directories() {
        let dir = std::env::temp_dir().join(format!("duplex-disk-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("a/b")).unwrap();
        fs::write(dir.join("a/b/f"), vec![0u8; 5000]).unwrap();
        let n = needed_bytes(&dir).unwrap();
        assert_eq!(n, 2 * PER_FILE_BYTES + 8192 + PER_FILE_BYTES + 2 * 4096);
        fs::remove_dir_all(&dir).unwrap();
    }
}
