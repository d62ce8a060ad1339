//! Guest images for Duplex VMs: a Debian cloud kernel plus a small gzip'd
//! initramfs (busybox, the static `duplex` binary, the virtio modules and
//! an `/init` script), built without root tools other than `apt-cache`,
//! `apt-get download` and `dpkg-deb`; and, for an image built from a spec
//! (docs/images.md), a Debian root filesystem as a qcow2 disk
//! (`mmdebstrap`, `mkfs.ext4 -d`, `qemu-img`) that the initramfs mounts.
//!
//! Layout (see docs/conventions.md):
//! `<image_dir>/<name>/{vmlinuz,initramfs.img,rootfs-<hash>.qcow2,manifest.json}`,
//! with the download/extraction cache in `<cache_dir>/{debs,kernels}`.
//!
//! Same inputs give a byte-identical `initramfs.img`.

mod build;
mod debian;
pub mod disk;
mod elf;
mod error;
mod fsutil;
mod init_script;
mod initramfs;
mod kernel;
mod manifest;
pub mod newc;
pub mod rootfs;
pub mod spec;

use std::fs;
use std::path::{Path, PathBuf};

pub use error::ImageError;
pub use kernel::MODULES;
pub use manifest::{Disk, FileRecord, Inputs, Manifest, Outputs, FORMAT_VERSION};

/// Default image name.
pub const DEFAULT_NAME: &str = "default";
/// Default download/extraction cache.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/duplex";
/// Default directory of built images.
pub const DEFAULT_IMAGE_DIR: &str = "/var/cache/duplex/images";
/// Default busybox to embed (Debian's busybox-static).
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";

/// File names inside an image directory.
pub const VMLINUZ: &str = "vmlinuz";
pub const INITRAMFS: &str = "initramfs.img";
pub const MANIFEST: &str = "manifest.json";

/// What to build and from what.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Image name, a directory under `image_dir` (default `default`).
    pub name: String,
    /// Download/extraction cache (default `/var/cache/duplex`).
    pub cache_dir: PathBuf,
    /// Where images go (default `/var/cache/duplex/images`).
    pub image_dir: PathBuf,
    /// The static `duplex` executable to embed, normally
    /// `std::env::current_exe()`.
    pub duplex_binary: PathBuf,
    /// Exact kernel package, e.g. `linux-image-6.1.0-56-cloud-amd64`; `None`
    /// asks apt what `linux-image-cloud-amd64` currently depends on.
    pub kernel_package: Option<String>,
    /// The static busybox to embed (default `/bin/busybox`).
    pub busybox: PathBuf,
}

impl BuildOptions {
    /// Defaults for everything but the binary to embed.
    pub fn new(duplex_binary: PathBuf) -> Self {
        BuildOptions {
            name: DEFAULT_NAME.to_string(),
            cache_dir: PathBuf::from(DEFAULT_CACHE_DIR),
            image_dir: PathBuf::from(DEFAULT_IMAGE_DIR),
            duplex_binary,
            kernel_package: None,
            busybox: PathBuf::from(DEFAULT_BUSYBOX),
        }
    }
}

/// Build (or rebuild) an image. Downloads and extraction are cached in
/// `cache_dir`; the initramfs is always rebuilt (it takes about a second).
/// Outputs are replaced atomically, `manifest.json` last.
pub fn build(opts: &BuildOptions) -> Result<Manifest, ImageError> {
    build::build(opts, None)
}

/// Build the image a spec describes (its name is the spec's): the root disk
/// from Debian's packages and the spec's files, then the kernel and
/// initramfs as for [`build`], the manifest last.
pub fn build_spec(opts: &BuildOptions, spec_path: &Path) -> Result<Manifest, ImageError> {
    build::build_spec(opts, spec_path)
}

/// The files of a built image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePaths {
    pub dir: PathBuf,
    pub vmlinuz: PathBuf,
    pub initramfs: PathBuf,
    pub manifest: PathBuf,
    /// The root disk's current base (the manifest's), for an image built
    /// from a spec.
    pub rootfs: Option<PathBuf>,
}

impl ImagePaths {
    fn of(image_dir: &Path, name: &str) -> Self {
        let dir = image_dir.join(name);
        ImagePaths {
            vmlinuz: dir.join(VMLINUZ),
            initramfs: dir.join(INITRAMFS),
            manifest: dir.join(MANIFEST),
            rootfs: None,
            dir,
        }
    }

    fn is_complete(&self) -> bool {
        self.vmlinuz.is_file() && self.initramfs.is_file()
    }
}

/// Find the built image `name` in `image_dir`.
pub fn resolve(image_dir: &Path, name: &str) -> Result<ImagePaths, ImageError> {
    let unknown = || -> Result<ImagePaths, ImageError> {
        Err(ImageError::UnknownImage {
            name: name.to_string(),
            dir: image_dir.to_path_buf(),
            available: list(image_dir)?,
        })
    };
    if check_name(name).is_err() {
        return unknown();
    }
    let mut paths = ImagePaths::of(image_dir, name);
    if !paths.is_complete() {
        return unknown();
    }
    if paths.manifest.is_file() {
        if let Some(disk) = Manifest::load(&paths.manifest)?.disk {
            paths.rootfs = Some(paths.base(&disk.rootfs.path)?);
        }
    }
    Ok(paths)
}

impl ImagePaths {
    /// The base `name` (`rootfs-<hash>.qcow2`) of this image: a VM's own,
    /// which may be older than the manifest's current one. Refused, naming
    /// it, when this host does not have it.
    pub fn base(&self, name: &str) -> Result<PathBuf, ImageError> {
        let path = self.dir.join(name);
        if disk::is_base_name(name) && path.is_file() {
            Ok(path)
        } else {
            Err(ImageError::MissingBase {
                name: name.to_string(),
                dir: self.dir.clone(),
            })
        }
    }
}

/// Names of the built images in `image_dir`, sorted (none if it does not
/// exist).
pub fn list(image_dir: &Path) -> Result<Vec<String>, ImageError> {
    let entries = match fs::read_dir(image_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ImageError::io("list", image_dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ImageError::io("list", image_dir, e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if check_name(&name).is_ok() && ImagePaths::of(image_dir, &name).is_complete() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Image names are single path components: letters, digits, `.`, `_`, `-`,
/// not starting with `.`.
pub(crate) fn check_name(name: &str) -> Result<(), ImageError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.starts_with('.') {
        Some("it starts with '.'")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        Some("only letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ImageError::InvalidName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("default").is_ok());
        assert!(check_name("v2_test-1.0").is_ok());
        for bad in ["", ".", "..", ".hidden", "a/b", "a b", "../x"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_disk_image_resolves_to_its_current_base_and_names_a_missing_one() {
        let dir = std::env::temp_dir().join(format!("duplex-images-disk-{}", std::process::id()));
        let img = dir.join("svc");
        fs::create_dir_all(&img).unwrap();
        fs::write(img.join(VMLINUZ), b"k").unwrap();
        fs::write(img.join(INITRAMFS), b"i").unwrap();
        let rec = |p: &str| FileRecord {
            path: p.into(),
            sha256: "00".into(),
            size: 1,
        };
        let base = disk::base_name("0123456789abcdef0123");
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            name: "svc".into(),
            kernel_package: "k".into(),
            kernel_version: "v".into(),
            inputs: Inputs {
                kernel_deb: rec("d"),
                vmlinuz: rec("v"),
                modules: vec![],
                busybox: rec("b"),
                duplex_binary: rec("x"),
                init_script: rec("init"),
            },
            outputs: Outputs {
                vmlinuz: rec(VMLINUZ),
                initramfs: rec(INITRAMFS),
            },
            disk: Some(Disk {
                spec: rec("spec.toml"),
                release: "bookworm".into(),
                packages: vec![],
                files: vec![],
                size_mib: 64,
                rootfs: rec(&base),
            }),
        };
        fs::write(img.join(MANIFEST), manifest.to_json()).unwrap();
        // The manifest names a base this host does not have.
        let e = resolve(&dir, "svc").unwrap_err().to_string();
        assert!(
            e.contains(&base) && e.contains("build the same image here"),
            "{e}"
        );
        fs::write(img.join(&base), b"qcow2").unwrap();
        let p = resolve(&dir, "svc").unwrap();
        assert_eq!(p.rootfs, Some(img.join(&base)));
        assert_eq!(p.base(&base).unwrap(), img.join(&base));
        for bad in ["rootfs-ffffffffffffffff.qcow2", "../svc/vmlinuz", "vmlinuz"] {
            assert!(p.base(bad).is_err(), "{bad}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn resolve_and_unknown_image() {
        let dir = std::env::temp_dir().join(format!("duplex-images-{}", std::process::id()));
        let err = resolve(&dir, "default").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("no image named \"default\""), "{msg}");
        assert!(msg.contains("there are no images yet"), "{msg}");
        assert!(msg.contains("duplex image build"), "{msg}");

        for name in ["b", "a"] {
            fs::create_dir_all(dir.join(name)).unwrap();
            fs::write(dir.join(name).join(VMLINUZ), b"k").unwrap();
            fs::write(dir.join(name).join(INITRAMFS), b"i").unwrap();
        }
        fs::create_dir_all(dir.join("incomplete")).unwrap();
        fs::write(dir.join("incomplete").join(VMLINUZ), b"k").unwrap();

        let p = resolve(&dir, "a").unwrap();
        assert_eq!(p.vmlinuz, dir.join("a/vmlinuz"));
        assert_eq!(p.initramfs, dir.join("a/initramfs.img"));
        assert_eq!(list(&dir).unwrap(), ["a", "b"]);

        for missing in ["incomplete", "zzz", "../a"] {
            match resolve(&dir, missing).unwrap_err() {
                ImageError::UnknownImage {
                    name, available, ..
                } => {
                    assert_eq!(name, missing);
                    assert_eq!(available, ["a", "b"]);
                }
                other => panic!("unexpected {other}"),
            }
        }
        let msg = resolve(&dir, "zzz").unwrap_err().to_string();
        assert!(msg.contains("available images: a, b"), "{msg}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
