//! What the console shows, as rows keyed by name, and what changed since
//! the rows a page was last sent: the live stream sends only that.
//! Pure.

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// The tables of the console.
pub const TABLES: [&str; 5] = ["hosts", "vms", "pairs", "ops", "flows"];

/// Rows of one table by name (a row is what the API shows of it).
pub type Rows = BTreeMap<String, Value>;

/// Every table's rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub tables: BTreeMap<&'static str, Rows>,
}

/// What changed in one table.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Change {
    /// New or changed rows, whole.
    pub upsert: Vec<Value>,
    /// Names of rows gone.
    pub remove: Vec<String>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.upsert.is_empty() && self.remove.is_empty()
    }
}

/// One message of the stream: each table's change (tables without one
/// are left out).
pub type Update = BTreeMap<&'static str, Change>;

/// What turns `old` into `new`.
pub fn diff(old: &Snapshot, new: &Snapshot) -> Update {
    let empty = Rows::new();
    let mut out = Update::new();
    for table in TABLES {
        let (a, b) = (
            old.tables.get(table).unwrap_or(&empty),
            new.tables.get(table).unwrap_or(&empty),
        );
        let change = Change {
            upsert: b
                .iter()
                .filter(|(k, v)| a.get(*k) != Some(*v))
                .map(|(_, v)| v.clone())
                .collect(),
            remove: a.keys().filter(|k| !b.contains_key(*k)).cloned().collect(),
        };
        if !change.is_empty() {
            out.insert(table, change);
        }
    }
    out
}

/// A host's row: what the console shows of it, nothing that changes by
/// itself every second (its silence shows only once it is late).
#[derive(Debug, Clone, Serialize)]
pub struct HostRow {
    pub name: String,
    pub site: String,
    pub rack: Option<String>,
    pub state: String,
    /// Seconds since its last report, once that is over
    /// [`LATE_AFTER_S`]; else 0.
    pub late_s: u64,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub vms: Vec<String>,
    /// Measured shares of its vCPUs and memory in use, whole percent (a
    /// row is not resent for a wobble); absent when not measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_pct: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_pct: Option<u32>,
}

/// A share as whole percent.
pub fn pct(share: f64) -> u32 {
    if share.is_finite() && share > 0.0 {
        (share * 100.0).round().min(f64::from(u32::MAX)) as u32
    } else {
        0
    }
}

/// A host is shown late after this long without a report.
pub const LATE_AFTER_S: u64 = 3;

/// Seconds of silence as a host row shows them.
pub fn late_s(silent_ms: u64) -> u64 {
    let s = silent_ms / 1000;
    if s > LATE_AFTER_S {
        s
    } else {
        0
    }
}

/// Most flows the console shows: the largest measured.
pub const MAX_FLOWS: usize = 300;

/// Traffic measured from one VM to another (the S4 matrix).
#[derive(Debug, Clone, Serialize)]
pub struct FlowRow {
    pub name: String,
    pub from: String,
    pub to: String,
    pub bytes_per_s: f64,
}

/// The `max` largest flows of `entries` (from, to, bytes/s), rates to
/// two significant digits so that a rate that only wobbles is not sent
/// again every second.
pub fn flows<'a>(entries: impl Iterator<Item = (&'a str, &'a str, f64)>, max: usize) -> Rows {
    let mut all: Vec<(&str, &str, f64)> = entries.filter(|(_, _, r)| *r > 0.0).collect();
    all.sort_by(|a, b| {
        b.2.total_cmp(&a.2)
            .then_with(|| (a.0, a.1).cmp(&(b.0, b.1)))
    });
    all.into_iter()
        .take(max)
        .map(|(from, to, rate)| {
            let row = FlowRow {
                name: format!("{from}>{to}"),
                from: from.to_string(),
                to: to.to_string(),
                bytes_per_s: two_digits(rate),
            };
            (
                row.name.clone(),
                serde_json::to_value(&row).unwrap_or(Value::Null),
            )
        })
        .collect()
}

/// `x` rounded to two significant digits.
fn two_digits(x: f64) -> f64 {
    if !x.is_finite() || x <= 0.0 {
        return 0.0;
    }
    let unit = 10f64.powf(x.log10().floor() - 1.0);
    (x / unit).round() * unit
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snap(hosts: &[(&str, Value)]) -> Snapshot {
        let rows: Rows = hosts
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        Snapshot {
            tables: BTreeMap::from([("hosts", rows)]),
        }
    }

    #[test]
    fn only_what_changed_is_sent() {
        let a = snap(&[("h1", json!({"s": 1})), ("h2", json!({"s": 1}))]);
        let b = snap(&[
            ("h1", json!({"s": 1})),
            ("h3", json!({"s": 2})),
            ("h2", json!({"s": 2})),
        ]);
        let d = diff(&a, &b);
        assert_eq!(d.len(), 1);
        assert_eq!(d["hosts"].upsert, vec![json!({"s": 2}), json!({"s": 2})]);
        assert!(d["hosts"].remove.is_empty());
        let d = diff(&b, &a);
        assert_eq!(d["hosts"].remove, vec!["h3".to_string()]);
        assert!(diff(&a, &a).is_empty());
        // The first message is everything.
        assert_eq!(diff(&Snapshot::default(), &a)["hosts"].upsert.len(), 2);
    }

    #[test]
    fn the_largest_flows_are_shown_rounded() {
        let entries = [
            ("a", "b", 1234.0),
            ("b", "a", 98_765.0),
            ("c", "a", 0.0),
            ("a", "c", 5.0),
        ];
        let rows = flows(entries.iter().copied(), 2);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows["b>a"]["bytes_per_s"], json!(99_000.0));
        assert_eq!(rows["a>b"]["bytes_per_s"], json!(1200.0));
        assert_eq!(rows["a>b"]["from"], json!("a"));
        // A wobble below the second digit changes nothing.
        let again = flows([("a", "b", 1210.0)].into_iter(), 2);
        assert_eq!(again["a>b"], rows["a>b"]);
        assert!(flows([("a", "b", f64::NAN)].into_iter(), 2).is_empty());
        assert!((two_digits(0.0123) - 0.012).abs() < 1e-12);
    }

    #[test]
    fn shares_show_as_whole_percent() {
        assert_eq!(pct(0.456), 46);
        assert_eq!(pct(1.5), 150);
        assert_eq!(pct(f64::NAN), 0);
        assert_eq!(pct(-1.0), 0);
    }

    #[test]
    fn silence_shows_only_once_late() {
        assert_eq!(late_s(900), 0);
        assert_eq!(late_s(3999), 0);
        assert_eq!(late_s(4000), 4);
    }
}
