//! S3's service data on the external disk: LAF backups (the ACT's
//! replicated store, taken on a schedule and on demand) and the REF data
//! set (what the service starts from), and how PH3.0 / PH3.5 give one back
//! to a re-created VM. Pure: the shapes, the paging both ways over the
//! guest's control channel (whose lines are bounded), and when a backup is
//! due.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest page of entries, encoded, in one guest request or answer: well
/// under the control channel's line limit (`guest_proto::MAX_LINE`).
pub const PAGE_BYTES: usize = 32 * 1024;
/// Most pages one backup or restore moves (with [`PAGE_BYTES`], 64 MiB).
pub const MAX_PAGES: usize = 2048;
/// Shortest and longest LAF backup period a policy may set.
pub const MIN_LAF_EVERY_MS: u64 = 60_000;
pub const MAX_LAF_EVERY_MS: u64 = 30 * 24 * 3_600_000;
/// The seed's default: a LAF backup a day.
pub const DEFAULT_LAF_EVERY_MS: u64 = 24 * 3_600_000;

/// Which data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataKind {
    /// A LAF backup of the service's state.
    Laf,
    /// The REF data set.
    Ref,
}

impl DataKind {
    pub fn label(self) -> &'static str {
        match self {
            DataKind::Laf => "LAF",
            DataKind::Ref => "REF",
        }
    }
}

/// One stored data set (the payload of an external-disk object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceData {
    /// The VM it was taken from (LAF) or given for (REF).
    pub vm: String,
    /// Its pair then, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair: Option<String>,
    pub taken_ms: u64,
    pub entries: Map<String, Value>,
}

/// A VM's init info on the external disk: what it is created from (its
/// image, the application software, and its user data), kept apart from
/// the controller's store so that PH3.0 / PH3.5 re-create it from there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitInfo {
    pub spec: crate::vm_spec::VmSpec,
    pub stored_ms: u64,
}

/// A data set a re-created VM is to be given, noted on its record until
/// its guest took it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRef {
    pub kind: DataKind,
    /// Whose external disk holds it (the VM itself, or its pair's peer).
    pub vm: String,
    pub version: u64,
    /// When it was noted on the VM's record (its guest's wait counts
    /// from then).
    #[serde(default)]
    pub noted_ms: u64,
}

impl std::fmt::Display for RestoreRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} v{} of {}", self.kind.label(), self.version, self.vm)
    }
}

/// A page of a guest's store (the answer to `Op::Backup`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupPage {
    pub entries: Map<String, Value>,
    /// The key to ask after for the next page; `None`: this was the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("entry {key:?} is {bytes} bytes encoded, more than a page ({PAGE_BYTES})")]
    TooLarge { key: String, bytes: usize },
    #[error("more than {MAX_PAGES} pages of {PAGE_BYTES} bytes")]
    TooMany,
}

/// Bytes an entry adds to a page's JSON object.
fn entry_bytes(key: &str, value: &Value) -> usize {
    serde_json::to_string(key).map_or(0, |k| k.len()) + value.to_string().len() + 2
}

/// The entries after `after` (all from the start if `None`), in key order,
/// that fit one page; `next` names the last one taken if more follow.
pub fn page<'a>(
    entries: impl Iterator<Item = (&'a String, &'a Value)>,
    after: Option<&str>,
) -> Result<BackupPage, PageError> {
    let mut out = Map::new();
    let mut bytes = 2;
    let mut rest = entries.filter(|(k, _)| after.is_none_or(|a| k.as_str() > a));
    for (k, v) in rest.by_ref() {
        let b = entry_bytes(k, v);
        if b + 2 > PAGE_BYTES {
            return Err(PageError::TooLarge {
                key: k.clone(),
                bytes: b,
            });
        }
        if bytes + b > PAGE_BYTES {
            let next = out.keys().next_back().cloned();
            return Ok(BackupPage { entries: out, next });
        }
        bytes += b;
        out.insert(k.clone(), v.clone());
    }
    Ok(BackupPage {
        entries: out,
        next: None,
    })
}

/// A whole data set cut into pages for `Op::Restore` (at least one page,
/// so that an empty set still replaces what the guest holds).
pub fn pages(entries: &Map<String, Value>) -> Result<Vec<Map<String, Value>>, PageError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let p = page(entries.iter(), after.as_deref())?;
        out.push(p.entries);
        if out.len() > MAX_PAGES {
            return Err(PageError::TooMany);
        }
        match p.next {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
}

/// Whether a LAF backup is due: none yet, or the last one `every_ms` old.
pub fn laf_due(last_taken_ms: Option<u64>, now_ms: u64, every_ms: u64) -> bool {
    last_taken_ms.is_none_or(|t| now_ms.saturating_sub(t) >= every_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store(n: usize, size: usize) -> Map<String, Value> {
        (0..n)
            .map(|i| (format!("k{i:05}"), json!("x".repeat(size))))
            .collect()
    }

    #[test]
    fn pages_cover_every_entry_once_in_order_and_fit() {
        for (n, size) in [(0, 1), (1, 10), (500, 100), (40, 5000), (3, PAGE_BYTES / 2)] {
            let s = store(n, size);
            let pages = pages(&s).unwrap();
            assert!(!pages.is_empty());
            let mut joined = Map::new();
            for p in &pages {
                assert!(serde_json::to_string(p).unwrap().len() <= PAGE_BYTES);
                for (k, v) in p {
                    assert!(joined.insert(k.clone(), v.clone()).is_none(), "{k} twice");
                }
            }
            assert_eq!(joined, s, "n={n} size={size}");
            if n > 0 {
                assert!(pages.iter().all(|p| !p.is_empty()));
            }
        }
    }

    #[test]
    fn paging_by_cursor_matches_and_an_oversized_entry_is_named() {
        let s = store(300, 400);
        let mut after = None;
        let mut seen = 0;
        loop {
            let p = page(s.iter(), after.as_deref()).unwrap();
            seen += p.entries.len();
            match p.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, 300);
        let mut big = store(2, 10);
        big.insert("huge".into(), json!("y".repeat(PAGE_BYTES)));
        let e = pages(&big).unwrap_err();
        assert!(
            matches!(&e, PageError::TooLarge { key, .. } if key == "huge"),
            "{e}"
        );
    }

    #[test]
    fn a_backup_is_due_when_none_or_old_enough() {
        assert!(laf_due(None, 0, DEFAULT_LAF_EVERY_MS));
        assert!(!laf_due(
            Some(1_000),
            1_000 + DEFAULT_LAF_EVERY_MS - 1,
            DEFAULT_LAF_EVERY_MS
        ));
        assert!(laf_due(
            Some(1_000),
            1_000 + DEFAULT_LAF_EVERY_MS,
            DEFAULT_LAF_EVERY_MS
        ));
        // A clock that went back does not make one due.
        assert!(!laf_due(Some(5_000), 1_000, DEFAULT_LAF_EVERY_MS));
    }
}
