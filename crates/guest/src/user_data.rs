//! The VM's user data (docs/images.md): /init copies it from QEMU's
//! firmware file to [`GUEST_PATH`]; here it is checked by the same rule the
//! controller applied, its files are written into the service's root
//! before the service starts, and its variables go to every hook.

use duplex_core::user_data::{UserData, GUEST_PATH};
use std::path::Path;

/// The user data this VM was booted with, if any.
pub fn load() -> Result<Option<UserData>, String> {
    let text = match std::fs::read_to_string(GUEST_PATH) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{GUEST_PATH}: {e}")),
    };
    let data: UserData = serde_json::from_str(&text).map_err(|e| format!("{GUEST_PATH}: {e}"))?;
    data.check().map_err(|e| e.to_string())?;
    Ok(Some(data))
}

/// Write the user data's files under `root` (`/` for a diskless VM).
pub fn apply(root: &Path, data: &UserData) -> Result<(), String> {
    for f in &data.files {
        crate::in_root::write(root, &f.path, f.content.as_bytes(), f.mode_bits())
            .map_err(|e| format!("user data file {}: {e}", f.path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use duplex_core::user_data::UserFile;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_are_written_with_their_modes() {
        let root = std::env::temp_dir().join(format!("duplex-ud-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let data = UserData {
            files: vec![UserFile {
                path: "/etc/svc/key".into(),
                content: "k".into(),
                mode: "0600".into(),
                secret: true,
            }],
            env: Default::default(),
        };
        apply(&root, &data).unwrap();
        let m = std::fs::metadata(root.join("etc/svc/key")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(root.join("etc/svc/key")).unwrap(), b"k");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
