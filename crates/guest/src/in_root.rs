//! Writing a file at a path of a root file system that is not ours (the
//! image builder's work directory, the VM's disk mounted under /sysroot):
//! symbolic links on the way are followed as the root would see them, and
//! one that climbs out through `..` is refused, so a file never lands
//! outside the root.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// Symbolic links followed on the way to one file (Debian's root has
/// `/bin -> usr/bin` and the like).
pub const MAX_LINK_HOPS: usize = 8;

/// Write `path` (absolute inside `root`) with `mode`, making its parent
/// directories (0755). The file is written beside and renamed into place.
pub fn write(root: &Path, path: &str, data: &[u8], mode: u32) -> io::Result<PathBuf> {
    let rel = Path::new(path.trim_start_matches('/'));
    let name = rel.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{path}: no file name"))
    })?;
    let dir = resolve_dir(root, rel.parent().unwrap_or(Path::new("")))?;
    let target = dir.join(name);
    if fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_symlink()) {
        fs::remove_file(&target)?;
    }
    let tmp = dir.join(format!(".{}.duplex-tmp", name.to_string_lossy()));
    fs::write(&tmp, data)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, &target)?;
    Ok(target)
}

/// The real directory `rel` names inside `root`, made if missing.
fn resolve_dir(root: &Path, rel: &Path) -> io::Result<PathBuf> {
    let mut at = root.to_path_buf();
    let mut hops = 0;
    for part in rel.components() {
        let Component::Normal(part) = part else {
            return Err(refused(&at, "the path has a `.` or `..` component"));
        };
        at.push(part);
        loop {
            match fs::symlink_metadata(&at) {
                Ok(m) if m.file_type().is_symlink() => {
                    hops += 1;
                    let link = fs::read_link(&at)?;
                    if hops > MAX_LINK_HOPS || link.components().any(|c| c == Component::ParentDir)
                    {
                        return Err(refused(&at, "the link leaves the root or loops"));
                    }
                    at = match link.strip_prefix("/") {
                        Ok(abs) => root.join(abs),
                        Err(_) => at.parent().unwrap_or(root).join(link),
                    };
                }
                Ok(m) if m.is_dir() => break,
                Ok(_) => return Err(refused(&at, "it is not a directory")),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&at)?;
                    fs::set_permissions(&at, fs::Permissions::from_mode(0o755))?;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(at)
}

fn refused(at: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("refusing to write through {}: {why}", at.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_land_in_the_root_following_its_links() {
        let root = std::env::temp_dir().join(format!("duplex-in-root-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        write(&root, "/etc/a/b.cfg", b"x", 0o600).unwrap();
        let m = fs::metadata(root.join("etc/a/b.cfg")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        // Merged /usr (/bin -> usr/bin) and absolute links stay inside.
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        std::os::unix::fs::symlink("/usr", root.join("abs")).unwrap();
        write(&root, "/bin/tool", b"t", 0o755).unwrap();
        write(&root, "/abs/bin/tool2", b"t", 0o755).unwrap();
        assert!(root.join("usr/bin/tool").is_file());
        assert!(root.join("usr/bin/tool2").is_file());
        // A file replaced, not written through, when it is a link.
        std::os::unix::fs::symlink("/etc/shadow", root.join("usr/bin/link")).unwrap();
        write(&root, "/usr/bin/link", b"new", 0o644).unwrap();
        assert_eq!(fs::read(root.join("usr/bin/link")).unwrap(), b"new");
        for (link, target) in [("up", "../../tmp"), ("loop", "loop")] {
            std::os::unix::fs::symlink(target, root.join(link)).unwrap();
            let e = write(&root, &format!("/{link}/evil"), b"x", 0o644).unwrap_err();
            assert!(e.to_string().contains("refusing"), "{e}");
        }
        assert!(write(&root, "/etc/a/b.cfg/x", b"x", 0o644).is_err());
        fs::remove_dir_all(&root).unwrap();
    }
}
