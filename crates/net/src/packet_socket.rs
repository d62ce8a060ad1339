//! A raw `AF_PACKET` socket on one interface: what the Duplex switch reads
//! and writes its ports with, and what an agent sends its switch messages
//! through. Non-blocking.
//!
//! With `vnet_hdr`, every frame read or written is preceded by a 10-byte
//! `virtio_net_hdr` ([`VNET_HDR_LEN`]): a frame the kernel has not yet
//! segmented or checksummed (offloads on veths) crosses the switch as it
//! came, and the kernel finishes it on the way out.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Length of the `virtio_net_hdr` before each frame with `vnet_hdr`.
pub const VNET_HDR_LEN: usize = 10;
const ETH_P_ALL: u16 = 0x0003;
const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_MR_PROMISC: libc::c_ushort = 1;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
/// Socket buffers: a few epochs of a busy port.
const SOCKET_BUFFER: libc::c_int = 4 << 20;

pub struct PacketSocket {
    fd: OwnedFd,
    pub ifname: String,
}

#[repr(C)]
struct PacketMreq {
    ifindex: libc::c_int,
    kind: libc::c_ushort,
    alen: libc::c_ushort,
    address: [u8; 8],
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn set_int(fd: RawFd, level: libc::c_int, opt: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: setsockopt with a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    check(rc).map(drop)
}

impl PacketSocket {
    /// A switch port: receives every frame arriving on `ifname`, for any
    /// address, with its `virtio_net_hdr`; sends out of it likewise.
    pub fn port(ifname: &str) -> io::Result<PacketSocket> {
        Self::open(ifname, ETH_P_ALL, true)
    }

    /// Only sends (whole Ethernet frames) out of `ifname`; receives none.
    pub fn sender(ifname: &str) -> io::Result<PacketSocket> {
        Self::open(ifname, 0, false)
    }

    fn open(ifname: &str, protocol: u16, port: bool) -> io::Result<PacketSocket> {
        let (vnet_hdr, promisc) = (port, port);
        let name = CString::new(ifname)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
        // SAFETY: if_nametoindex reads a NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no interface `{ifname}`"),
            ));
        }
        let proto = protocol.to_be();
        // SAFETY: plain socket(2); the fd is owned at once.
        let raw = check(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::c_int::from(proto),
            )
        })?;
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        if vnet_hdr {
            set_int(raw, libc::SOL_PACKET, PACKET_VNET_HDR, 1)?;
        }
        if port {
            // Our own sends are not read back (the kernel would loop them).
            set_int(raw, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)?;
            set_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, SOCKET_BUFFER)?;
            set_int(raw, libc::SOL_SOCKET, libc::SO_SNDBUF, SOCKET_BUFFER)?;
        }
        // SAFETY: zeroed sockaddr_ll is valid; its fields are set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as libc::c_ushort;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as libc::c_int;
        // SAFETY: bind with a pointer to a live sockaddr_ll and its size.
        check(unsafe {
            libc::bind(
                raw,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        if promisc {
            let mreq = PacketMreq {
                ifindex: ifindex as libc::c_int,
                kind: PACKET_MR_PROMISC,
                alen: 0,
                address: [0; 8],
            };
            // SAFETY: setsockopt with a pointer to a live packet_mreq.
            check(unsafe {
                libc::setsockopt(
                    raw,
                    libc::SOL_PACKET,
                    PACKET_ADD_MEMBERSHIP,
                    (&mreq as *const PacketMreq).cast(),
                    std::mem::size_of::<PacketMreq>() as libc::socklen_t,
                )
            })?;
        }
        Ok(PacketSocket {
            fd,
            ifname: ifname.to_string(),
        })
    }

    /// One frame into `buf`; `WouldBlock` when none waits.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: recv into a live, writable buffer of its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Sends one frame made of `parts` (e.g. a header and two halves).
    pub fn send(&self, parts: &[&[u8]]) -> io::Result<()> {
        let iov: Vec<libc::iovec> = parts
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        // SAFETY: writev over iovecs that point into live slices.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), iov.len() as i32) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The interface's hardware address.
    pub fn mac(&self) -> io::Result<duplex_core::mac::Mac> {
        let path = format!("/sys/class/net/{}/address", self.ifname);
        let text = std::fs::read_to_string(&path)?;
        text.trim().parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{path}: not a MAC address: {}", text.trim()),
            )
        })
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
