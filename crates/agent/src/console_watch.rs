//! Watches a VM's serial console for the guest kernel's panic line: a
//! panicking guest is found at once, not after its reboot (which took over
//! 5 s in 3 of 10 panics measured by `bench/s3`) or its heartbeat's
//! silence (5 s).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// What the kernel prints when it panics (`panic()` in kernel/panic.c).
pub const PANIC_LINE: &str = "Kernel panic - not syncing";
/// Most of the console read in one look; output beyond it (a flood) is
/// skipped, not buffered.
pub const MAX_READ: u64 = 256 * 1024;
/// Longest partial line kept between looks.
const MAX_PARTIAL: usize = 4096;

/// The new console output since the last look, line by line (pure: the
/// bytes are given).
#[derive(Debug, Default)]
pub struct ConsoleWatch {
    offset: u64,
    partial: String,
}

impl ConsoleWatch {
    /// Starts at `offset` (the log's length now: what the guest printed
    /// before, a previous boot's panic say, is not looked at).
    pub fn from(offset: u64) -> ConsoleWatch {
        ConsoleWatch {
            offset,
            partial: String::new(),
        }
    }

    /// Takes the bytes printed since the last look; returns the first
    /// panic line among the complete lines.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<String> {
        self.offset += bytes.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(bytes));
        let mut found = None;
        if let Some(cut) = self.partial.rfind('\n') {
            found = self.partial[..cut]
                .lines()
                .find(|l| l.contains(PANIC_LINE))
                .map(|l| l.trim().to_string());
            self.partial.drain(..=cut);
        }
        if self.partial.len() > MAX_PARTIAL {
            self.partial.clear();
        }
        found
    }

    /// Reads what `log` gained since the last look (at most [`MAX_READ`];
    /// a log that shrank, a new file, is followed from its start).
    pub fn look(&mut self, log: &Path) -> std::io::Result<Option<String>> {
        let mut f = std::fs::File::open(log)?;
        let len = f.metadata()?.len();
        if len < self.offset {
            *self = ConsoleWatch::from(0);
        }
        if len.saturating_sub(self.offset) > MAX_READ {
            *self = ConsoleWatch::from(len - MAX_READ);
        }
        f.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::new();
        f.take(MAX_READ).read_to_end(&mut bytes)?;
        Ok(self.feed(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_panic_line_is_found_once_complete_and_only_after_the_start() {
        let mut w = ConsoleWatch::default();
        assert_eq!(
            w.feed(b"[   1.0] boot\n[  9.1] sysrq: Trigger a crash\n[  9.1] Kernel pan"),
            None
        );
        let got = w.feed(b"ic - not syncing: sysrq triggered crash\n");
        assert_eq!(
            got.as_deref(),
            Some("[  9.1] Kernel panic - not syncing: sysrq triggered crash")
        );
        assert_eq!(w.feed(b"CPU: 0 PID: 1\n"), None);
    }

    #[test]
    fn a_log_is_followed_from_the_end_it_had_and_bounded() {
        let dir = std::env::temp_dir().join(format!("duplex-console-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("serial.log");
        std::fs::write(&log, "Kernel panic - not syncing: an old boot\n").unwrap();
        let len = std::fs::metadata(&log).unwrap().len();
        let mut w = ConsoleWatch::from(len);
        assert_eq!(
            w.look(&log).unwrap(),
            None,
            "the old boot's panic is not news"
        );
        let mut more = "x".repeat(MAX_READ as usize * 2);
        more.push_str("\nKernel panic - not syncing: now\n");
        std::fs::write(
            &log,
            format!("{}{more}", std::fs::read_to_string(&log).unwrap()),
        )
        .unwrap();
        let got = w.look(&log).unwrap();
        assert_eq!(got.as_deref(), Some("Kernel panic - not syncing: now"));
        // A truncated log (a new file) is read from its start.
        std::fs::write(&log, "Kernel panic - not syncing: again\n").unwrap();
        assert!(w.look(&log).unwrap().is_some());
        assert!(w.look(&dir.join("gone")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
