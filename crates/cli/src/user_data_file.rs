//! Reading a user data file (`--user-data FILE`): TOML, or JSON when the
//! name ends in `.json`, checked by the rule the controller applies.

use anyhow::Context;
use duplex_core::user_data::UserData;
use std::path::Path;

pub fn read(path: &Path) -> anyhow::Result<UserData> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the user data file {}", path.display()))?;
    let data: UserData = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| format!("user data file {}", path.display()))?
    } else {
        toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "user data file {}: {}",
                path.display(),
                e.to_string().trim_end()
            )
        })?
    };
    data.check()
        .with_context(|| format!("user data file {}", path.display()))?;
    Ok(data)
}
