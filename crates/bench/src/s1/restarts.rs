//! Guest restarts during an arm: a member whose guest boot id changed
//! rebooted (a kernel panic reboots it, `panic=-1`), which the call counts
//! alone would not say. Its console logs, from every host it ran on, are
//! kept next to the results for the panic text.

use super::moves::cli;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const MEMBERS: [&str; 2] = ["sa", "sb"];
/// Lines kept from the end of each console log.
const TAIL_LINES: usize = 300;

/// Each member's guest boot id now (missing: the guest did not answer).
pub async fn boot_ids() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for vm in MEMBERS {
        if let Ok(v) = cli(&["vm", "show", vm]).await {
            if let Some(id) = v["info"]["guest"]["boot_id"].as_str() {
                out.insert(vm.to_string(), id.to_string());
            }
        }
    }
    out
}

/// The members whose boot id changed between the two readings.
pub fn restarted(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<String> {
    before
        .iter()
        .filter(|(vm, id)| after.get(*vm).is_some_and(|now| now != *id))
        .map(|(vm, _)| vm.clone())
        .collect()
}

/// The console logs of `vm` in lab directory `lab_dir`: where it runs now
/// and where it left (`<host>/departed/`), oldest first by modification.
fn consoles(lab_dir: &Path, vm: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(hosts) = std::fs::read_dir(lab_dir) else {
        return Vec::new();
    };
    for h in hosts.flatten() {
        let d = h.path();
        for p in [
            d.join("vms").join(vm).join("serial.log"),
            d.join("departed").join(format!("{vm}.serial.log")),
        ] {
            if let Ok(m) = p.metadata() {
                found.push((m.modified().ok(), p));
            }
        }
    }
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// Writes the tails of `vm`'s console logs to `<out>/s1-consoles/<label>-<vm>.log`.
pub fn keep_consoles(
    lab_dir: &Path,
    out: &Path,
    label: &str,
    vm: &str,
) -> std::io::Result<PathBuf> {
    let dir = out.join("s1-consoles");
    std::fs::create_dir_all(&dir)?;
    let mut text = String::new();
    for p in consoles(lab_dir, vm) {
        let body = std::fs::read_to_string(&p).unwrap_or_default();
        let lines: Vec<&str> = body.lines().collect();
        let from = lines.len().saturating_sub(TAIL_LINES);
        text.push_str(&format!(
            "== {} (last {} lines)\n",
            p.display(),
            lines.len() - from
        ));
        text.push_str(&lines[from..].join("\n"));
        text.push('\n');
    }
    let file = dir.join(format!("{label}-{vm}.log"));
    std::fs::write(&file, text)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_boot_id_is_a_restart_a_missing_one_is_not() {
        let m = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let before = m(&[("sa", "1"), ("sb", "2")]);
        assert!(restarted(&before, &before).is_empty());
        assert_eq!(
            restarted(&before, &m(&[("sa", "1"), ("sb", "3")])),
            vec!["sb"]
        );
        assert!(restarted(&before, &m(&[("sa", "1")])).is_empty());
    }

    #[test]
    fn consoles_from_every_host_are_kept() {
        let root = std::env::temp_dir().join(format!("duplex-s1-consoles-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let lab = root.join("lab");
        std::fs::create_dir_all(lab.join("h1/departed")).unwrap();
        std::fs::create_dir_all(lab.join("h2/vms/sa")).unwrap();
        std::fs::write(lab.join("h1/departed/sa.serial.log"), "before the move\n").unwrap();
        std::fs::write(lab.join("h2/vms/sa/serial.log"), "Kernel panic\n").unwrap();
        std::fs::write(lab.join("h2/vms/sa/other.log"), "not a console\n").unwrap();
        let f = keep_consoles(&lab, &root, "plain", "sa").unwrap();
        let text = std::fs::read_to_string(f).unwrap();
        assert!(
            text.contains("before the move") && text.contains("Kernel panic"),
            "{text}"
        );
        assert!(!text.contains("not a console"));
        let _ = std::fs::remove_dir_all(&root);
    }
}
