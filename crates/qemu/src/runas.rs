//! The unprivileged user QEMU runs as. The agent drops QEMU's privileges
//! itself, in the child before `exec`: QEMU's own `-runas` changes user
//! after its seccomp sandbox is on, and with `elevateprivileges=deny`
//! QEMU 7.2 dies of SIGSYS at that point (measured: exit 159).
//!
//! Everything QEMU opens after that must be the user's: its VM directory
//! (0700), the network element's socket, the migration TLS files.

use std::path::Path;

/// The user the agent runs QEMU as unless told otherwise.
pub const DEFAULT_USER: &str = "duplex-qemu";
/// The group that may open /dev/kvm on Debian.
const KVM_GROUP: &str = "kvm";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: `kvm` where it exists, for /dev/kvm.
    pub groups: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunAsError {
    #[error("QEMU user `{0}` does not exist: create it (./setup.sh does: useradd --system --user-group --no-create-home --shell /usr/sbin/nologin {0}), or pass --qemu-user root to run QEMU as root (not recommended)")]
    NoUser(String),
    #[error("QEMU user `{0}` is root (uid 0): pass --qemu-user root to mean that, or name an unprivileged user")]
    Root(String),
    #[error("`{0}` is not a user name")]
    Name(String),
    #[error("cannot give {path} to the QEMU user: {source}")]
    Chown {
        path: String,
        source: std::io::Error,
    },
}

impl RunAs {
    /// Looks `name` up in the system's user database.
    pub fn lookup(name: &str) -> Result<RunAs, RunAsError> {
        if name.is_empty() || name.contains([':', '\n', '\0']) {
            return Err(RunAsError::Name(name.into()));
        }
        let (uid, gid) = passwd(name).ok_or_else(|| RunAsError::NoUser(name.into()))?;
        if uid == 0 {
            return Err(RunAsError::Root(name.into()));
        }
        let groups = group(KVM_GROUP).into_iter().collect();
        Ok(RunAs {
            name: name.into(),
            uid,
            gid,
            groups,
        })
    }

    /// Gives `path` to the user, with `mode`.
    pub fn own(&self, path: &Path, mode: u32) -> Result<(), RunAsError> {
        use std::os::unix::fs::PermissionsExt;
        let err = |source| RunAsError::Chown {
            path: path.display().to_string(),
            source,
        };
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).map_err(err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)
    }

    /// In the child, before exec: become the user (groups, group, user, in
    /// that order; after setuid nothing can be changed back).
    pub(crate) fn become_user(&self) -> std::io::Result<()> {
        let fail = || Err(std::io::Error::last_os_error());
        // SAFETY: setgroups/setgid/setuid are async-signal-safe and read
        // only `self.groups`, allocated before the fork.
        unsafe {
            if libc::setgroups(self.groups.len(), self.groups.as_ptr()) != 0 {
                return fail();
            }
            if libc::setgid(self.gid) != 0 {
                return fail();
            }
            if libc::setuid(self.uid) != 0 {
                return fail();
            }
        }
        Ok(())
    }
}

/// The files the user and group are looked up in. Read directly: the
/// binary is linked statically, and glibc's NSS (getpwnam_r) crashes a
/// static binary. System users made by `useradd` are always in them.
const PASSWD: &str = "/etc/passwd";
const GROUP: &str = "/etc/group";

/// The numeric fields 2 and 3 of `name`'s line in a colon-separated file
/// (`name:x:uid:gid:...` or `name:x:gid:members`).
fn ids(file: &str, name: &str) -> Option<(u32, Option<u32>)> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.first() != Some(&name) || f.len() < 3 {
            return None;
        }
        let a = f[2].parse().ok()?;
        Some((a, f.get(3).and_then(|g| g.parse().ok())))
    })
}

/// (uid, gid) of a user, if it exists.
fn passwd(name: &str) -> Option<(u32, u32)> {
    match ids(PASSWD, name)? {
        (uid, Some(gid)) => Some((uid, gid)),
        _ => None,
    }
}

/// The gid of a group, if it exists.
fn group(name: &str) -> Option<u32> {
    ids(GROUP, name).map(|(gid, _)| gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_looked_up_and_root_is_refused() {
        // `nobody` exists on Debian; root must be asked for by name.
        let n = RunAs::lookup("nobody").expect("nobody");
        assert_ne!(n.uid, 0);
        assert!(matches!(RunAs::lookup("root"), Err(RunAsError::Root(_))));
        let e = RunAs::lookup("no-such-user-here").unwrap_err();
        assert!(e.to_string().contains("useradd"), "{e}");
        assert!(matches!(RunAs::lookup("a\0b"), Err(RunAsError::Name(_))));
    }
}
