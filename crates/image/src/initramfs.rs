//! The initramfs layout: which entries, in which fixed order, gzip'd
//! deterministically (gzip mtime 0, no file name, fixed OS byte).

use std::io::{self, Write};

use flate2::{Compression, GzBuilder};

use crate::newc::NewcWriter;

/// What goes into the initramfs besides the fixed directory skeleton.
pub struct Contents<'a> {
    pub busybox: &'a [u8],
    pub duplex: &'a [u8],
    /// `(module name without .ko, bytes)`, in load order.
    pub modules: Vec<(&'a str, &'a [u8])>,
    pub init_script: &'a str,
    /// Text of `/etc/duplex-image`.
    pub image_info: &'a str,
    /// `/etc/duplex/service.json`: the hooks of the service the guest runs.
    pub service_config: &'a str,
}

/// Directories, parents first.
const DIRS: &[(&str, u32)] = &[
    ("bin", 0o755),
    ("sbin", 0o755),
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("run", 0o755),
    ("etc", 0o755),
    ("etc/duplex", 0o755),
    ("lib", 0o755),
    ("lib/modules", 0o755),
];

/// Write the uncompressed newc archive.
pub fn write_cpio<W: Write>(out: W, c: &Contents<'_>) -> io::Result<W> {
    let mut w = NewcWriter::new(out);
    for (dir, perm) in DIRS {
        w.dir(dir, *perm)?;
    }
    // So the kernel can open the console before devtmpfs is mounted.
    w.char_device("dev/console", 0o600, 5, 1)?;
    w.file("bin/busybox", 0o755, c.busybox)?;
    w.symlink("bin/sh", "busybox")?;
    w.file("bin/duplex", 0o755, c.duplex)?;
    for (name, data) in &c.modules {
        w.file(&format!("lib/modules/{name}.ko"), 0o644, data)?;
    }
    w.file("etc/duplex-image", 0o644, c.image_info.as_bytes())?;
    w.file(
        "etc/duplex/service.json",
        0o644,
        c.service_config.as_bytes(),
    )?;
    w.file("init", 0o755, c.init_script.as_bytes())?;
    w.finish()
}

/// The gzip'd archive: same contents, same bytes.
pub fn build_gz(c: &Contents<'_>) -> io::Result<Vec<u8>> {
    let gz = GzBuilder::new()
        .mtime(0)
        .operating_system(255) // "unknown": the same on every build host
        .write(Vec::new(), Compression::default());
    write_cpio(gz, c)?.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::newc::tests::parse;
    use crate::newc::{S_IFCHR, S_IFDIR, S_IFLNK, S_IFREG};
    use std::io::Read;

    fn contents<'a>(init: &'a str) -> Contents<'a> {
        Contents {
            busybox: b"\x7fELF fake busybox",
            duplex: b"\x7fELF fake duplex, a bit longer",
            modules: vec![
                ("virtio_ring", b"ring"),
                ("virtio", b"v"),
                ("virtio_net", b"net!!"),
            ],
            init_script: init,
            image_info: "name=test\nkernel=6.1.0-99-cloud-amd64\n",
            service_config: "{}",
        }
    }

    #[test]
    fn deterministic() {
        let a = build_gz(&contents("#!/bin/sh\necho hi\n")).unwrap();
        let b = build_gz(&contents("#!/bin/sh\necho hi\n")).unwrap();
        assert_eq!(a, b);
        // gzip header: magic, deflate, no flags (no name), mtime 0, OS 255.
        assert_eq!(&a[..4], &[0x1f, 0x8b, 8, 0]);
        assert_eq!(&a[4..8], &[0, 0, 0, 0]);
        assert_eq!(a[9], 255);
        let c = build_gz(&contents("#!/bin/sh\necho bye\n")).unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn layout() {
        let gz = build_gz(&contents("#!/bin/sh\n")).unwrap();
        let mut cpio = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut cpio)
            .unwrap();
        let entries = parse(&cpio);
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "sbin",
                "dev",
                "proc",
                "sys",
                "tmp",
                "run",
                "etc",
                "etc/duplex",
                "lib",
                "lib/modules",
                "dev/console",
                "bin/busybox",
                "bin/sh",
                "bin/duplex",
                "lib/modules/virtio_ring.ko",
                "lib/modules/virtio.ko",
                "lib/modules/virtio_net.ko",
                "etc/duplex-image",
                "etc/duplex/service.json",
                "init",
                "TRAILER!!!",
            ]
        );
        let by = |n: &str| entries.iter().find(|e| e.name == n).unwrap().clone();
        assert_eq!(by("lib/modules").mode(), S_IFDIR | 0o755);
        assert_eq!(by("tmp").mode(), S_IFDIR | 0o1777);
        assert_eq!(by("dev/console").mode(), S_IFCHR | 0o600);
        assert_eq!(by("bin/sh").mode(), S_IFLNK | 0o777);
        assert_eq!(by("bin/sh").data, b"busybox");
        assert_eq!(by("bin/busybox").mode(), S_IFREG | 0o755);
        assert_eq!(by("bin/duplex").mode(), S_IFREG | 0o755);
        assert_eq!(by("init").mode(), S_IFREG | 0o755);
        assert_eq!(by("init").data, b"#!/bin/sh\n");
        assert_eq!(by("lib/modules/virtio_net.ko").data, b"net!!");
        // Inodes 1..n in order, then the trailer's 0.
        for (i, e) in entries[..entries.len() - 1].iter().enumerate() {
            assert_eq!(e.ino(), i as u32 + 1);
        }
    }

    #[test]
    fn busybox_cpio_reads_it() {
        // An independent reader agrees on the entry list (skipped without busybox).
        if !std::path::Path::new("/bin/busybox").exists() {
            return;
        }
        let cpio = write_cpio(Vec::new(), &contents("#!/bin/sh\n")).unwrap();
        let mut child = std::process::Command::new("/bin/busybox")
            .args(["cpio", "-t"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&cpio).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let listed = String::from_utf8(out.stdout).unwrap();
        let ours: Vec<_> = parse(&cpio)
            .into_iter()
            .map(|e| e.name)
            .filter(|n| n != "TRAILER!!!")
            .collect();
        assert_eq!(listed.lines().collect::<Vec<_>>(), ours);
    }
}
