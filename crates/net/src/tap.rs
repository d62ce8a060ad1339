//! Tap devices: a VM's port on the host bridge, owned by the network element.
//! The tap is not persistent: it disappears when the element closes it.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("cannot open /dev/net/tun: {0} (is the tun module loaded, are we root?)")]
    Open(std::io::Error),
    #[error("cannot create tap `{name}`: {source}")]
    Create {
        name: String,
        source: std::io::Error,
    },
    #[error("`{cmd}` failed: {msg}")]
    Ip { cmd: String, msg: String },
    #[error("invalid interface name `{0}` (1-15 chars)")]
    Name(String),
}

/// An open tap, non-blocking: one frame per read and per write.
pub struct Tap {
    pub name: String,
    pub fd: OwnedFd,
}

/// How many names [`free_tap_name`] tries before it gives up.
pub const TAP_NAME_TRIES: u32 = 64;

/// Candidate `n` of a VM's tap name: first `dxt-<name>` if that fits in
/// 15 chars, then hashes of the name salted with the candidate's number.
fn tap_candidate(vm: &str, n: u32) -> Option<String> {
    let plain = format!("dxt-{vm}");
    let fits = plain.len() <= 15;
    if n == 0 && fits {
        return Some(plain);
    }
    let mut h: u32 = 0x811c_9dc5;
    for b in vm.bytes().chain(n.to_be_bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    Some(format!("dxt-{h:08x}"))
}

/// A tap name for `vm` that no other VM on this host uses (`in_use`
/// answers for a name): interface names are host-wide, and two VMs must
/// never share one.
pub fn free_tap_name(vm: &str, in_use: impl Fn(&str) -> bool) -> Option<String> {
    (0..TAP_NAME_TRIES)
        .filter_map(|n| tap_candidate(vm, n))
        .find(|c| !in_use(c))
}

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

impl Tap {
    /// Creates the tap, enslaves it to `bridge` and sets it up.
    pub async fn create(name: &str, bridge: &str) -> Result<Tap, TapError> {
        if name.is_empty() || name.len() > 15 {
            return Err(TapError::Name(name.into()));
        }
        let path = CString::new("/dev/net/tun").map_err(|_| TapError::Name(name.into()))?;
        // SAFETY: plain open(2) of a NUL-terminated path.
        let raw = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(TapError::Open(std::io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh, owned, valid descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
            _pad: [0; 22],
        };
        for (d, s) in req.name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        // SAFETY: TUNSETIFF reads an ifreq we own, for the fd we own.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut req) };
        if rc < 0 {
            return Err(TapError::Create {
                name: name.into(),
                source: std::io::Error::last_os_error(),
            });
        }
        ip(&["link", "set", "dev", name, "master", bridge]).await?;
        ip(&["link", "set", "dev", name, "up"]).await?;
        Ok(Tap {
            name: name.into(),
            fd,
        })
    }

    /// Reads one frame into `buf`; `WouldBlock` when none is there.
    pub fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        // SAFETY: read(2) into a buffer we own, of its length.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Writes one frame; `WouldBlock` when the tap cannot take it now.
    pub fn write(&self, frame: &[u8]) -> std::io::Result<()> {
        // SAFETY: write(2) from a buffer we own, of its length.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

async fn ip(args: &[&str]) -> Result<(), TapError> {
    let out = tokio::process::Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| TapError::Ip {
            cmd: format!("ip {}", args.join(" ")),
            msg: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(TapError::Ip {
            cmd: format!("ip {}", args.join(" ")),
            msg: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free(vm: &str, used: &[String]) -> String {
        free_tap_name(vm, |n| used.iter().any(|u| u == n)).unwrap()
    }

    #[test]
    fn names_fit_and_never_collide() {
        assert_eq!(free("vm1", &[]), "dxt-vm1");
        let long = free("a-very-long-vm-name-indeed", &[]);
        assert!(long.len() <= 15 && long.starts_with("dxt-"));
        assert_eq!(long, free("a-very-long-vm-name-indeed", &[]));
        // Taken (by a VM whose name hashes the same, or a plain name that
        // looks like a hash): the next candidate, still short.
        let next = free("a-very-long-vm-name-indeed", std::slice::from_ref(&long));
        assert_ne!(next, long);
        assert!(next.len() <= 15);
        assert_ne!(free("vm1", &["dxt-vm1".into()]), "dxt-vm1");
        // Many VMs on one host: all different.
        let mut used: Vec<String> = Vec::new();
        for i in 0..2000 {
            let t = free(&format!("service-member-number-{i}"), &used);
            assert!(!used.contains(&t));
            used.push(t);
        }
    }
}
