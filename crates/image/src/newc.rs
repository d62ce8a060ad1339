//! A minimal, deterministic writer for the "newc" cpio format (magic
//! `070701`), the format the Linux kernel unpacks as an initramfs.
//!
//! Every entry has uid/gid 0 and mtime 0; inode numbers are assigned
//! sequentially from 1 in the order entries are written. Each header+name
//! and each data block is padded with NULs to a multiple of 4 bytes.

use std::io::{self, Write};

pub const MAGIC: &[u8; 6] = b"070701";
pub const TRAILER: &str = "TRAILER!!!";
pub const HEADER_LEN: usize = 110;

pub const S_IFDIR: u32 = 0o040_000;
pub const S_IFREG: u32 = 0o100_000;
pub const S_IFLNK: u32 = 0o120_000;
pub const S_IFCHR: u32 = 0o020_000;

/// Writes newc entries to `W`. Call [`NewcWriter::finish`] to write the
/// trailer; dropping the writer without it leaves a truncated archive.
pub struct NewcWriter<W: Write> {
    out: W,
    offset: u64,
    next_ino: u32,
}

struct Header<'a> {
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev_major: u32,
    rdev_minor: u32,
    name: &'a str,
    data: &'a [u8],
}

impl<W: Write> NewcWriter<W> {
    pub fn new(out: W) -> Self {
        NewcWriter {
            out,
            offset: 0,
            next_ino: 1,
        }
    }

    /// A directory (`perm` e.g. 0o755). `name` is relative, e.g. `lib/modules`.
    pub fn dir(&mut self, name: &str, perm: u32) -> io::Result<()> {
        self.entry(S_IFDIR | perm, 2, (0, 0), name, b"")
    }

    /// A regular file.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(S_IFREG | perm, 1, (0, 0), name, data)
    }

    /// A symbolic link `name -> target`.
    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.entry(S_IFLNK | 0o777, 1, (0, 0), name, target.as_bytes())
    }

    /// A character device node.
    pub fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(S_IFCHR | perm, 1, (major, minor), name, b"")
    }

    /// Write the `TRAILER!!!` entry and return the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.write_header(&Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            rdev_major: 0,
            rdev_minor: 0,
            name: TRAILER,
            data: b"",
        })?;
        Ok(self.out)
    }

    fn entry(
        &mut self,
        mode: u32,
        nlink: u32,
        (rdev_major, rdev_minor): (u32, u32),
        name: &str,
        data: &[u8],
    ) -> io::Result<()> {
        if name.is_empty() || name.starts_with('/') || name.contains('\0') || name == TRAILER {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad cpio entry name {name:?}"),
            ));
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.write_header(&Header {
            ino,
            mode,
            nlink,
            rdev_major,
            rdev_minor,
            name,
            data,
        })
    }

    fn write_header(&mut self, h: &Header<'_>) -> io::Result<()> {
        let size = u32::try_from(h.data.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cpio entry {} is larger than 4 GiB", h.name),
            )
        })?;
        let namesize = h.name.len() + 1; // includes the NUL
        let fields: [u32; 13] = [
            h.ino,
            h.mode,
            0, // uid
            0, // gid
            h.nlink,
            0, // mtime
            size,
            0, // devmajor
            0, // devminor
            h.rdev_major,
            h.rdev_minor,
            namesize as u32,
            0, // check
        ];
        let mut header = Vec::with_capacity(HEADER_LEN + namesize + 3);
        header.extend_from_slice(MAGIC);
        for field in fields {
            header.extend_from_slice(format!("{field:08X}").as_bytes());
        }
        header.extend_from_slice(h.name.as_bytes());
        header.push(0);
        self.put(&header)?;
        self.pad()?;
        self.put(h.data)?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.offset % 4) as usize) % 4;
        self.put(&[0u8; 3][..n])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One parsed entry; `fields` are the 13 numeric header fields in order.
    #[derive(Debug, Clone, PartialEq)]
    pub(crate) struct Parsed {
        pub fields: [u32; 13],
        pub name: String,
        pub data: Vec<u8>,
    }

    impl Parsed {
        pub fn ino(&self) -> u32 {
            self.fields[0]
        }
        pub fn mode(&self) -> u32 {
            self.fields[1]
        }
        pub fn nlink(&self) -> u32 {
            self.fields[4]
        }
    }

    /// A tiny strict reader: checks magic, padding and that the archive ends
    /// exactly after the trailer (plus padding).
    pub(crate) fn parse(buf: &[u8]) -> Vec<Parsed> {
        let mut pos = 0usize;
        let mut out = Vec::new();
        loop {
            assert_eq!(pos % 4, 0, "entry not 4-aligned at {pos}");
            assert_eq!(&buf[pos..pos + 6], MAGIC, "bad magic at {pos}");
            let mut fields = [0u32; 13];
            for (i, f) in fields.iter_mut().enumerate() {
                let s = std::str::from_utf8(&buf[pos + 6 + 8 * i..pos + 14 + 8 * i]).unwrap();
                assert!(s.bytes().all(|b| b.is_ascii_hexdigit()), "field {s}");
                *f = u32::from_str_radix(s, 16).unwrap();
            }
            let namesize = fields[11] as usize;
            let name_start = pos + HEADER_LEN;
            let name_bytes = &buf[name_start..name_start + namesize];
            assert_eq!(name_bytes.last(), Some(&0), "name not NUL-terminated");
            let name = std::str::from_utf8(&name_bytes[..namesize - 1])
                .unwrap()
                .to_string();
            let p = skip_padding(buf, name_start + namesize);
            let size = fields[6] as usize;
            let data = buf[p..p + size].to_vec();
            pos = skip_padding(buf, p + size);
            let done = name == TRAILER;
            out.push(Parsed { fields, name, data });
            if done {
                assert_eq!(pos, buf.len(), "bytes after trailer");
                return out;
            }
        }
    }

    /// Check the NUL padding after `at` and return the next 4-aligned offset.
    fn skip_padding(buf: &[u8], at: usize) -> usize {
        let end = at.next_multiple_of(4);
        assert!(
            buf[at..end].iter().all(|&b| b == 0),
            "padding not NUL at {at}"
        );
        end
    }

    fn sample() -> Vec<u8> {
        let mut w = NewcWriter::new(Vec::new());
        w.dir("bin", 0o755).unwrap();
        w.file("bin/a", 0o755, b"hello").unwrap();
        w.symlink("bin/sh", "busybox").unwrap();
        w.char_device("dev/console", 0o600, 5, 1).unwrap();
        w.file("empty", 0o644, b"").unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn header_fields_and_layout() {
        let buf = sample();
        assert_eq!(buf.len() % 4, 0);
        // First header, byte for byte: ino 1, dir 0755, nlink 2, namesize 4.
        let first = std::str::from_utf8(&buf[..HEADER_LEN]).unwrap();
        let expected = concat!(
            "070701", "00000001", // magic, ino
            "000041ED", "00000000", "00000000", // mode, uid, gid
            "00000002", "00000000", "00000000", // nlink, mtime, filesize
            "00000000", "00000000", "00000000", "00000000", // dev, rdev
            "00000004", "00000000", // namesize, check
        );
        assert_eq!(first, expected);
        // "bin\0" makes header+name 114 bytes, padded to 116.
        assert_eq!(&buf[110..116], b"bin\0\0\0");
        assert_eq!(&buf[116..122], MAGIC);

        let entries = parse(&buf);
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            ["bin", "bin/a", "bin/sh", "dev/console", "empty", TRAILER]
        );

        let inos: Vec<_> = entries.iter().map(Parsed::ino).collect();
        assert_eq!(inos, [1, 2, 3, 4, 5, 0]);
        for e in &entries {
            assert_eq!(e.fields[2], 0, "uid");
            assert_eq!(e.fields[3], 0, "gid");
            assert_eq!(e.fields[5], 0, "mtime");
            assert_eq!(e.fields[12], 0, "check");
        }
        assert_eq!(entries[0].nlink(), 2);
        assert_eq!(entries[1].mode(), S_IFREG | 0o755);
        assert_eq!(entries[1].nlink(), 1);
        assert_eq!(entries[1].data, b"hello");
        assert_eq!(entries[2].mode(), S_IFLNK | 0o777);
        assert_eq!(entries[2].data, b"busybox");
        assert_eq!(entries[3].mode(), S_IFCHR | 0o600);
        assert_eq!((entries[3].fields[9], entries[3].fields[10]), (5, 1));
        assert!(entries[3].data.is_empty());
        assert!(entries[4].data.is_empty());
        let trailer = &entries[5];
        assert_eq!(trailer.mode(), 0);
        assert_eq!(trailer.nlink(), 1);
        assert_eq!(trailer.fields[11], 11);
    }

    #[test]
    fn data_padding_for_every_length() {
        for len in 0..9usize {
            let data = vec![0xAB; len];
            let mut w = NewcWriter::new(Vec::new());
            w.file("f", 0o644, &data).unwrap();
            let buf = w.finish().unwrap();
            let entries = parse(&buf);
            assert_eq!(entries[0].data, data);
            // header 110 + "f\0" = 112 (aligned), data padded, then trailer
            // 110 + 11 = 121 -> 124.
            assert_eq!(buf.len(), 112 + len.div_ceil(4) * 4 + 124);
        }
    }

    #[test]
    fn rejects_bad_names() {
        let mut w = NewcWriter::new(Vec::new());
        assert!(w.file("/abs", 0o644, b"").is_err());
        assert!(w.file("", 0o644, b"").is_err());
        assert!(w.file(TRAILER, 0o644, b"").is_err());
    }
}
