//! `duplex vm backup|data|ref`: S3's service data on the external disk,
//! through the controller — a LAF backup now, what is stored, a REF set.

use crate::conn::Conn;
use crate::output::{self, Format};
use anyhow::Context;
use serde_json::Value;

/// Most a REF file may hold (the controller takes no more).
const MAX_REF_FILE: u64 = 16 * 1024 * 1024;

fn row(d: &Value) -> Vec<String> {
    let kind = output::s(&d["kind"]).to_uppercase();
    let state = match d["damaged"].as_str() {
        Some(why) => format!("DAMAGED: {why}"),
        None => "ok".into(),
    };
    vec![
        kind,
        format!("v{}", d["version"]),
        output::s(&d["vm"]),
        d["taken_ms"]
            .as_u64()
            .filter(|t| *t > 0)
            .map(output::clock)
            .unwrap_or_default(),
        d["keys"].to_string(),
        state,
    ]
}

const HEAD: [&str; 6] = ["KIND", "VERSION", "OF", "TAKEN", "KEYS", "STATE"];

pub async fn backup(c: &Conn, name: &str) -> anyhow::Result<()> {
    let d: Value = c
        .client()?
        .post(&format!("/v1/vms/{name}/backup"), &serde_json::json!({}))
        .await?;
    if let Format::Json = c.output {
        return output::json(&d);
    }
    output::table(&HEAD, &[row(&d)]);
    Ok(())
}

pub async fn list(c: &Conn, name: &str) -> anyhow::Result<()> {
    let a: Value = c.client()?.get(&format!("/v1/vms/{name}/data")).await?;
    if let Format::Json = c.output {
        return output::json(&a);
    }
    match a.get("init_info") {
        Some(i) => println!(
            "init info v{} on the external disk (image {}, stored {})",
            i["version"],
            output::s(&i["image"]),
            i["stored_ms"]
                .as_u64()
                .map(output::clock)
                .unwrap_or_default()
        ),
        None => println!("no intact init info on the external disk"),
    }
    for e in a["init_damaged"].as_array().into_iter().flatten() {
        println!("  passed over: {}", output::s(e));
    }
    if let Some(r) = a.get("restore") {
        println!(
            "{name} waits for {} v{} of {} (re-created by PH3.0/PH3.5)",
            output::s(&r["kind"]).to_uppercase(),
            r["version"],
            output::s(&r["vm"])
        );
    }
    let rows: Vec<Vec<String>> = a["stored"]
        .as_array()
        .map(|v| v.iter().map(row).collect())
        .unwrap_or_default();
    if rows.is_empty() {
        println!("no LAF backup or REF data set stored for {name}");
    } else {
        output::table(&HEAD, &rows);
    }
    Ok(())
}

/// Reads a REF file: one JSON object of key → value, as the service
/// stores its state through the middleware.
fn read_ref(file: &std::path::Path) -> anyhow::Result<serde_json::Map<String, Value>> {
    let len = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    if len > MAX_REF_FILE {
        anyhow::bail!(
            "{}: {len} bytes; a REF data set may be at most {MAX_REF_FILE}",
            file.display()
        );
    }
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    match serde_json::from_str::<Value>(&text)
        .with_context(|| format!("{}: not JSON", file.display()))?
    {
        Value::Object(m) => Ok(m),
        other => anyhow::bail!(
            "{}: a REF data set is one JSON object of key → value, not {}",
            file.display(),
            match other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            }
        ),
    }
}

pub async fn set_ref(c: &Conn, name: &str, file: &std::path::Path) -> anyhow::Result<()> {
    let entries = read_ref(file)?;
    let d: Value = c
        .client()?
        .put(
            &format!("/v1/vms/{name}/ref"),
            &serde_json::json!({ "entries": entries }),
        )
        .await?;
    if let Format::Json = c.output {
        return output::json(&d);
    }
    output::table(&HEAD, &[row(&d)]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ref_file_must_be_one_json_object() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ref.json");
        std::fs::write(&f, r#"{"dialog/1": {"state": "confirmed"}}"#).unwrap();
        assert_eq!(read_ref(&f).unwrap().len(), 1);
        for (text, why) in [("[1]", "an array"), ("nope", "not JSON"), ("null", "null")] {
            std::fs::write(&f, text).unwrap();
            let e = format!("{:#}", read_ref(&f).unwrap_err());
            assert!(e.contains(why), "{text}: {e}");
        }
        let e = read_ref(&dir.path().join("missing.json")).unwrap_err();
        assert!(format!("{e:#}").contains("missing.json"));
    }
}
