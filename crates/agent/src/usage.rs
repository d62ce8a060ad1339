//! What the host's VMs use, read from /proc for their QEMU processes: CPU
//! time (utime + stime of `/proc/PID/stat`) and resident memory (`VmRSS`
//! of `/proc/PID/status`). A VM whose process cannot be read (gone
//! between the listing and the read) is left out of that report.

use duplex_core::agent_api::{HostUsage, VmInfo, VmUsage};

/// The usage of every VM in `vms` that has a process.
pub fn measure(vms: &[VmInfo]) -> HostUsage {
    let ticks = ticks_per_second();
    HostUsage {
        vms: vms
            .iter()
            .filter_map(|v| {
                let pid = v.pid?;
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                Some(VmUsage {
                    vm: v.spec.name.clone(),
                    cpu_seconds: cpu_seconds(&stat, ticks)?,
                    rss_mib: rss_mib(&status)?,
                })
            })
            .collect(),
    }
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the running system.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line, in
/// seconds. The command name (field 2) may hold spaces and parentheses:
/// fields are counted after its last `)`.
pub fn cpu_seconds(stat: &str, ticks_per_s: f64) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field n is f[n - 3].
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / ticks_per_s)
}

/// `VmRSS` of a `/proc/PID/status`, in MiB.
pub fn rss_mib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_time_past_a_tricky_command_name() {
        let stat =
            "4242 (qemu (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 150 0 0 20 0 3 0 100 0 0";
        assert_eq!(cpu_seconds(stat, 100.0), Some(4.0));
        assert_eq!(cpu_seconds("4242 (qemu) S 1", 100.0), None, "cut short");
        assert_eq!(cpu_seconds("garbage", 100.0), None);
    }

    #[test]
    fn reads_resident_memory() {
        let status = "Name:\tqemu\nVmPeak:\t  999 kB\nVmRSS:\t  204800 kB\nThreads: 3\n";
        assert_eq!(rss_mib(status), Some(200));
        assert_eq!(rss_mib("Name: x\n"), None);
    }

    #[test]
    fn measures_this_process() {
        let me = std::process::id();
        let stat = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap_or_default();
        let status = std::fs::read_to_string(format!("/proc/{me}/status")).unwrap_or_default();
        assert!(cpu_seconds(&stat, ticks_per_second()).is_some_and(|s| s >= 0.0));
        assert!(rss_mib(&status).is_some_and(|m| m > 0));
    }
}
