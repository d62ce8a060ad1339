//! The rule for a file someone else asks us to write into a VM's root: an
//! image spec's `[[files]]`, a VM's user data. One rule, two callers.

/// The longest path accepted.
pub const MAX_PATH: usize = 255;

/// `path` is absolute, names a file, has no empty, `.` or `..` component,
/// no control character, and is not at or under one of `reserved`.
pub fn check_path(path: &str, reserved: &[&str]) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("is not absolute".into());
    }
    if path.len() > MAX_PATH {
        return Err(format!("is longer than {MAX_PATH} bytes"));
    }
    if path.ends_with('/') {
        return Err("names a directory, not a file".into());
    }
    if path.chars().any(|c| c.is_control()) {
        return Err("contains a control character".into());
    }
    if path
        .split('/')
        .skip(1)
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("has an empty, `.` or `..` component".into());
    }
    if reserved
        .iter()
        .any(|r| path == *r || path.starts_with(&format!("{r}/")))
    {
        return Err(format!(
            "is under {}, which the guest owns",
            reserved.join(", ")
        ));
    }
    Ok(())
}

/// An octal mode such as `0644`: permission bits only, unless `special`
/// (set-id and sticky bits) is allowed.
pub fn parse_mode(mode: &str, special: bool) -> Result<u32, &'static str> {
    let bits =
        (!mode.is_empty() && mode.len() <= 4 && mode.chars().all(|c| ('0'..='7').contains(&c)))
            .then(|| u32::from_str_radix(mode, 8).ok())
            .flatten()
            .ok_or("is not an octal mode such as 0644")?;
    if !special && bits & !0o777 != 0 {
        return Err("has set-id or sticky bits, which are not allowed here");
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let reserved = ["/proc", "/run/duplex"];
        assert!(check_path("/etc/a.cfg", &reserved).is_ok());
        assert!(check_path("/run/other", &reserved).is_ok());
        assert!(check_path("/procfs", &reserved).is_ok());
        for bad in [
            "etc/x",
            "/a/../b",
            "/a//b",
            "/a/",
            "/a/./b",
            "/proc",
            "/proc/x",
            "/run/duplex/s",
            "/a\nb",
        ] {
            assert!(check_path(bad, &reserved).is_err(), "{bad:?}");
        }
        assert!(check_path(&format!("/{}", "a".repeat(MAX_PATH)), &[]).is_err());
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0644", false), Ok(0o644));
        assert_eq!(parse_mode("755", false), Ok(0o755));
        assert_eq!(parse_mode("4755", true), Ok(0o4755));
        for bad in ["", "rwx", "9", "12345", "0x1"] {
            assert!(parse_mode(bad, true).is_err(), "{bad}");
        }
        assert!(parse_mode("4755", false).is_err());
        assert!(parse_mode("1777", false).is_err());
    }
}
