//! Summary statistics and result files shared by the benchmarks.

use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

pub fn summarize(xs: &[f64]) -> Summary {
    let mut v: Vec<f64> = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    };
    Summary {
        n,
        min: v.first().copied().unwrap_or(f64::NAN),
        median,
        max: v.last().copied().unwrap_or(f64::NAN),
    }
}

/// Writes `<name>.json` and `<name>.md` under `dir`.
pub fn write(dir: &Path, name: &str, json: &impl Serialize, markdown: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(json)? + "\n",
    )?;
    std::fs::write(dir.join(format!("{name}.md")), markdown)?;
    eprintln!("wrote {}/{name}.json and {name}.md", dir.display());
    Ok(())
}

/// Facts about the run, stored with every result.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub date_unix: u64,
    pub qemu: String,
    pub accel: String,
    pub cpus: usize,
    pub commit: String,
}

pub async fn run_info(accel: &str) -> RunInfo {
    let qemu = duplex_qemu::version(&duplex_qemu::qemu_binary())
        .await
        .unwrap_or_default();
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    RunInfo {
        date_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        qemu,
        accel: accel.to_string(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        commit,
    }
}

/// A summary as a table cell: median (min–max), `-` if empty.
pub fn cell(s: &Summary) -> String {
    if s.n == 0 {
        return "-".into();
    }
    format!("{:.0} ({:.0}–{:.0})", s.median, s.min, s.max)
}

/// The earliest answer sipp received after `at_ms` (ms since it started),
/// counted from `at_ms`, from its per-call INVITE→200 trace.
pub fn first_answer(report: &duplex_sipp::SippReport, at_ms: f64) -> anyhow::Result<Option<f64>> {
    for e in std::fs::read_dir(&report.work_dir)? {
        let p = e?.path();
        if p.to_string_lossy()
            .ends_with(duplex_sipp::config::RTT_SUFFIX)
        {
            let samples = duplex_sipp::parse::parse_rtt_csv(&std::fs::read_to_string(&p)?)?;
            return Ok(samples
                .iter()
                .map(|s| s.date_ms - at_ms)
                .filter(|d| *d > 0.0)
                .min_by(|a, b| a.total_cmp(b)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        let s = summarize(&[3.0, 1.0, 2.0]);
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        assert_eq!(summarize(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
        assert!(summarize(&[]).median.is_nan());
    }
}
