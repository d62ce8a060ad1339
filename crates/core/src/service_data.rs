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
    /// The boot id of the guest that ran when it was noted: the set goes
    /// only to a guest booted since (never to the one being restarted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_boot: Option<String>,
}

impl RestoreRef {
    /// Whether a guest whose last heartbeat carried `boot` booted after
    /// this set was noted.
    pub fn booted_since(&self, boot: Option<&str>) -> bool {
        boot.is_some() && boot != self.not_boot.as_deref()
    }
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

/// The data sets a phase that restarts a VM's guest OS gives it, in
/// order of preference: PH3.0 the last LAF backup (the REF set if there
/// is none), PH3.5 the REF set. PH2.5 reloads the current files, the last
/// LAF backup, and autoheal starts from LAF (else REF), but only for a VM
/// standing alone: a pair member gets the state from its ACT instead. The
/// in-guest phases keep the guest's own.
pub fn sources(
    phase: crate::escalation::Phase,
    standing: crate::escalation::Standing,
) -> &'static [DataKind] {
    use crate::escalation::{Phase, Standing};
    let alone = standing == Standing::Alone;
    match phase {
        Phase::Ph3_0 => &[DataKind::Laf, DataKind::Ref],
        Phase::Ph3_5 => &[DataKind::Ref],
        Phase::Ph2_5 if alone => &[DataKind::Laf],
        Phase::Autoheal if alone => &[DataKind::Laf, DataKind::Ref],
        _ => &[],
    }
}

/// Whether a candidate set (stored at `taken_ms`) beats the best found so
/// far among a VM's and its peer's: a LAF backup the newer, a REF set the
/// first found (the VM's own is looked at first).
pub fn better(kind: DataKind, best_taken_ms: Option<u64>, taken_ms: u64) -> bool {
    match kind {
        DataKind::Laf => best_taken_ms.is_none_or(|t| taken_ms > t),
        DataKind::Ref => best_taken_ms.is_none(),
    }
}

/// How long a re-created VM's guest may take to come up for its data;
/// after that it goes on without it (its pair repair waits till then).
pub const RESTORE_WAIT_MS: u64 = 180_000;

/// What to do with a VM waiting for its data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreStep {
    /// Its re-created guest is up with no role: give it the set.
    Give,
    /// Not yet (the deleted guest's last report may still speak for it,
    /// the new one is not up, or giving failed): look again.
    Wait,
    /// Waited [`RESTORE_WAIT_MS`]: it goes on without the set.
    GiveUp,
}

/// The step for a waiting VM whose guest reports `role` (`None`: no fresh
/// report) and `booted_since` the set was noted at `noted_ms`; `failed`:
/// giving it the set just failed.
pub fn restore_step(
    role: Option<crate::role::Role>,
    booted_since: bool,
    noted_ms: u64,
    now_ms: u64,
    failed: bool,
) -> RestoreStep {
    let overdue = now_ms.saturating_sub(noted_ms) > RESTORE_WAIT_MS;
    match (role, booted_since, failed, overdue) {
        (Some(crate::role::Role::None), true, false, _) => RestoreStep::Give,
        (_, _, _, true) => RestoreStep::GiveUp,
        _ => RestoreStep::Wait,
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
    fn phases_take_their_sets_and_the_better_one_wins() {
        use crate::escalation::{Phase, Standing};
        let both: &[DataKind] = &[DataKind::Laf, DataKind::Ref];
        for p in Phase::ALL {
            for st in [Standing::ActWithSby, Standing::Alone, Standing::Sby] {
                let alone = st == Standing::Alone;
                let want: &[DataKind] = match p {
                    Phase::Ph3_0 => both,
                    Phase::Ph3_5 => &[DataKind::Ref],
                    Phase::Ph2_5 if alone => &[DataKind::Laf],
                    Phase::Autoheal if alone => both,
                    _ => &[],
                };
                assert_eq!(sources(p, st), want, "{p:?} {st:?}");
            }
        }
        assert!(better(DataKind::Laf, None, 5));
        assert!(better(DataKind::Laf, Some(4), 5));
        assert!(!better(DataKind::Laf, Some(5), 5));
        assert!(better(DataKind::Ref, None, 1));
        assert!(
            !better(DataKind::Ref, Some(1), 9),
            "the VM's own REF set first"
        );
    }

    #[test]
    fn a_waiting_vm_is_given_its_set_only_with_no_role_and_in_time() {
        use crate::role::Role;
        for role in std::iter::once(None).chain(Role::ALL.map(Some)) {
            for booted in [false, true] {
                for failed in [false, true] {
                    for (now, overdue) in [(10, false), (RESTORE_WAIT_MS + 11, true)] {
                        let got = restore_step(role, booted, 10, now, failed);
                        // A guest booted since, up with no role, gets a
                        // try even late.
                        let want = if role == Some(Role::None) && booted && !failed {
                            RestoreStep::Give
                        } else if overdue {
                            RestoreStep::GiveUp
                        } else {
                            RestoreStep::Wait
                        };
                        assert_eq!(
                            got, want,
                            "{role:?} booted={booted} failed={failed} overdue={overdue}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_set_goes_only_to_a_guest_booted_since() {
        let r = |not_boot: Option<&str>| RestoreRef {
            kind: DataKind::Laf,
            vm: "a".into(),
            version: 1,
            noted_ms: 0,
            not_boot: not_boot.map(str::to_string),
        };
        assert!(!r(Some("b1")).booted_since(Some("b1")));
        assert!(r(Some("b1")).booted_since(Some("b2")));
        assert!(!r(Some("b1")).booted_since(None));
        assert!(r(None).booted_since(Some("b2")));
        assert!(!r(None).booted_since(None));
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
