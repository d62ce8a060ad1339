//! Small filesystem helpers whose errors name the path: reading, hashing,
//! and atomic writes (temp file in the same directory, fsync, rename).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::ImageError;
use crate::manifest::FileRecord;

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, ImageError> {
    fs::read(path).map_err(|e| ImageError::io("read", path, e))
}

pub(crate) fn create_dir_all(path: &Path) -> Result<(), ImageError> {
    fs::create_dir_all(path).map_err(|e| ImageError::io("create directory", path, e))
}

pub(crate) fn remove_dir_all_if_exists(path: &Path) -> Result<(), ImageError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ImageError::io("remove directory", path, e)),
    }
}

pub(crate) fn rename(from: &Path, to: &Path) -> Result<(), ImageError> {
    fs::rename(from, to).map_err(|e| ImageError::io("rename into place", to, e))
}

/// Hex sha256 of a byte slice.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Record (sha256, size) of bytes already in memory.
pub(crate) fn record(path: impl Into<String>, data: &[u8]) -> FileRecord {
    FileRecord {
        path: path.into(),
        sha256: sha256_hex(data),
        size: data.len() as u64,
    }
}

/// Record (sha256, size) of a file, streaming it (for the big `.deb`).
pub(crate) fn record_file(path: &Path) -> Result<FileRecord, ImageError> {
    let mut file = fs::File::open(path).map_err(|e| ImageError::io("open", path, e))?;
    let mut hasher = Sha256::new();
    let size = io::copy(&mut file, &mut hasher).map_err(|e| ImageError::io("read", path, e))?;
    Ok(FileRecord {
        path: path.display().to_string(),
        sha256: hex::encode(hasher.finalize()),
        size,
    })
}

/// A sibling path used for temporary output: `.<name>.tmp-<pid>`.
pub(crate) fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Write `path` atomically: the file appears complete or not at all.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), ImageError> {
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut file = fs::File::create(&tmp).map_err(|e| ImageError::io("create", &tmp, e))?;
        file.write_all(data)
            .map_err(|e| ImageError::io("write", &tmp, e))?;
        file.sync_all()
            .map_err(|e| ImageError::io("sync", &tmp, e))?;
        rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_empty_input() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = std::env::temp_dir().join(format!("duplex-image-fsutil-{}", std::process::id()));
        create_dir_all(&dir).unwrap();
        let target = dir.join("out.bin");
        write_atomic(&target, b"one").unwrap();
        write_atomic(&target, b"two").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.bin")]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
