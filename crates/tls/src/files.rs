//! Writing the PKI's files: private directories and atomic writes, keys
//! readable by their owner only.

use crate::error::TlsError;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` with mode 0700 (its missing parents with the usual
/// mode: they may hold other things others must reach, such as an agent's
/// data directory the QEMU user passes through), or tightens an existing one.
pub fn private_dir(dir: &Path) -> Result<(), TlsError> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(TlsError::io("cannot create", parent))?;
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(TlsError::io("cannot create", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(TlsError::io("cannot set mode 0700 on", dir))
}

/// Writes `bytes` to `path` through a temporary file and a rename, with `mode`.
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(TlsError::io("cannot write", &tmp))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .map_err(TlsError::io("cannot write", &tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(TlsError::io("cannot write", path))
}

pub fn random<const N: usize>() -> Result<[u8; N], TlsError> {
    use std::io::Read;
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(TlsError::io("cannot read", Path::new("/dev/urandom")))?;
    Ok(b)
}
