//! What answers the probe's datagrams in the arms without a guest: the
//! frame goes back with its Ethernet, IPv4 and UDP addresses swapped (the
//! checksums stay valid: their sums do not depend on the order). With an
//! element it stands in for QEMU on the netdev stream, on a thread of the
//! bench's own process, so its CPU time is not counted as the element's.

use duplex_core::mac::Mac;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Swaps source and destination of a UDP/IPv4 frame to `own` in place;
/// false for anything else (not echoed: a frame the bridge flooded here
/// before it learnt where its VM is belongs to another arm).
pub fn swap(f: &mut [u8], own: Mac) -> bool {
    if f.len() < 14 + 20 + 8 || f[0..6] != own.0 || f[12..14] != [0x08, 0x00] || f[23] != 17 {
        return false;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let l4 = 14 + ihl;
    if ihl < 20 || f.len() < l4 + 8 {
        return false;
    }
    // Ethernet, IPv4 (at 26 and 30 whatever the options), UDP ports.
    for (a, b, n) in [(0, 6, 6), (26, 30, 4), (l4, l4 + 2, 2)] {
        for i in 0..n {
            f.swap(a + i, b + i);
        }
    }
    true
}

/// Echoes every frame the element sends on `sock` until `stop`.
pub fn qemu_standin(
    sock: &Path,
    own: Mac,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let mut c = UnixStream::connect(sock)?;
    c.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(std::thread::spawn(move || {
        let mut input = vec![0u8; 512 * 1024];
        let mut filled = 0;
        let mut out = Vec::with_capacity(512 * 1024);
        while !stop.load(Ordering::Relaxed) {
            let n = match c.read(&mut input[filled..]) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(_) => return,
            };
            filled += n;
            let mut off = 0;
            while filled - off >= 4 {
                let len = u32::from_be_bytes([
                    input[off],
                    input[off + 1],
                    input[off + 2],
                    input[off + 3],
                ]) as usize;
                if filled - off - 4 < len {
                    break;
                }
                let f = &mut input[off + 4..off + 4 + len];
                if swap(f, own) {
                    out.extend_from_slice(&(len as u32).to_be_bytes());
                    out.extend_from_slice(f);
                }
                off += 4 + len;
            }
            input.copy_within(off..filled, 0);
            filled -= off;
            if !out.is_empty() {
                if c.write_all(&out).is_err() {
                    return;
                }
                out.clear();
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_udp_frame_comes_back_addressed_to_its_sender() {
        let mut f = vec![0u8; 60];
        f[0..6].copy_from_slice(&[1; 6]);
        f[6..12].copy_from_slice(&[2; 6]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[23] = 17;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&[0x30, 0x39]);
        f[36..38].copy_from_slice(&[0, 7]);
        let before = f.clone();
        assert!(!swap(&mut f, Mac([3; 6])), "another VM's frame");
        assert!(swap(&mut f, Mac([1; 6])));
        assert_eq!((&f[0..6], &f[6..12]), (&before[6..12], &before[0..6]));
        assert_eq!((&f[26..30], &f[30..34]), (&before[30..34], &before[26..30]));
        assert_eq!((&f[34..36], &f[36..38]), (&before[36..38], &before[34..36]));
        let own = Mac([2; 6]);
        assert!(!swap(&mut f[..20], own));
        f[23] = 6;
        assert!(!swap(&mut f, own));
    }
}
