//! Getting the kernel from Debian: resolve the versioned package behind the
//! `linux-image-cloud-amd64` metapackage, `apt-get download` it into the
//! cache, and `dpkg-deb -x` it. Both steps are skipped when cached.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::error::ImageError;
use crate::fsutil;

/// The metapackage that always depends on the current cloud kernel.
pub const KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";

/// File in an extraction directory recording which `.deb` (by sha256) it
/// came from, so a different `.deb` of the same package gets re-extracted.
const EXTRACTED_FROM: &str = ".duplex-extracted-from";

/// Ask apt which versioned kernel package the metapackage depends on, e.g.
/// `linux-image-6.1.0-56-cloud-amd64`.
pub fn resolve_kernel_package() -> Result<String, ImageError> {
    let out = run(
        Command::new("apt-cache").args(["depends", KERNEL_METAPACKAGE]),
        "; run `apt-get update`",
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_depends(&text).ok_or_else(|| ImageError::KernelPackageNotFound {
        meta: KERNEL_METAPACKAGE.to_string(),
    })
}

/// Pick the `Depends: linux-image-<version>-cloud-amd64` line.
pub(crate) fn parse_depends(apt_cache_output: &str) -> Option<String> {
    apt_cache_output.lines().find_map(|line| {
        let dep = line
            .trim()
            .trim_start_matches('|')
            .strip_prefix("Depends:")?;
        let dep = dep.trim();
        let version = dep
            .strip_prefix("linux-image-")?
            .strip_suffix("-cloud-amd64")?;
        let plausible = !version.is_empty()
            && version.starts_with(|c: char| c.is_ascii_digit())
            && !dep.contains(char::is_whitespace);
        plausible.then(|| dep.to_string())
    })
}

/// Reject anything that is not a plain Debian package name, so that it can
/// never act as a glob, option or path.
pub(crate) fn check_package_name(name: &str) -> Result<(), ImageError> {
    let ok = name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ImageError::InvalidPackageName {
            name: name.to_string(),
        })
    }
}

/// The cached `.deb` of exactly `package` in `debs_dir`, if any.
/// (`apt-get download` names it `<package>_<version>_<arch>.deb`; package
/// names cannot contain `_`, so the prefix match is exact.)
pub fn cached_deb(debs_dir: &Path, package: &str) -> Result<Option<PathBuf>, ImageError> {
    let entries = match fs::read_dir(debs_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ImageError::io("list", debs_dir, e)),
    };
    let prefix = format!("{package}_");
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ImageError::io("list", debs_dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            found.push(entry.path());
        }
    }
    found.sort();
    if found.len() > 1 {
        tracing::warn!(
            ?found,
            "several cached .debs of {package}; using the last one (delete the others to choose)"
        );
    }
    Ok(found.pop())
}

/// Return the `.deb` of `package` in `debs_dir`, downloading it first if it
/// is not cached. The download goes to a private temp dir and is renamed
/// in, so an interrupted download never looks like a cache hit.
pub fn download(debs_dir: &Path, package: &str) -> Result<(PathBuf, bool), ImageError> {
    check_package_name(package)?;
    if let Some(deb) = cached_deb(debs_dir, package)? {
        return Ok((deb, true));
    }
    fsutil::create_dir_all(debs_dir)?;
    let tmp = debs_dir.join(format!(".download-{}", std::process::id()));
    fsutil::remove_dir_all_if_exists(&tmp)?;
    fsutil::create_dir_all(&tmp)?;
    let result = (|| {
        // As root apt warns that `_apt` cannot access the directory and
        // downloads unsandboxed; harmless, and stderr is only shown on failure.
        run(
            Command::new("apt-get")
                .args(["download", "--", package])
                .current_dir(&tmp),
            "; run `apt-get update`",
        )?;
        let deb = cached_deb(&tmp, package)?.ok_or_else(|| ImageError::DownloadMissing {
            package: package.to_string(),
            dir: tmp.clone(),
        })?;
        let file_name = deb
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        let dest = debs_dir.join(file_name);
        fsutil::rename(&deb, &dest)?;
        Ok(dest)
    })();
    fsutil::remove_dir_all_if_exists(&tmp)?;
    result.map(|deb| (deb, false))
}

/// Extract `deb` into `dest` unless `dest` already holds an extraction of a
/// `.deb` with sha256 `deb_sha256`. Extraction goes to a temp dir that is
/// renamed into place. Returns whether it was cached.
pub fn extract(deb: &Path, deb_sha256: &str, dest: &Path) -> Result<bool, ImageError> {
    let marker = dest.join(EXTRACTED_FROM);
    match fs::read_to_string(&marker) {
        Ok(s) if s.trim() == deb_sha256 => return Ok(true),
        Ok(_) => tracing::info!(dir = %dest.display(), "extraction is of another .deb; redoing it"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ImageError::io("read", &marker, e)),
    }
    let tmp = fsutil::temp_sibling(dest);
    if let Some(parent) = dest.parent() {
        fsutil::create_dir_all(parent)?;
    }
    fsutil::remove_dir_all_if_exists(&tmp)?;
    fsutil::create_dir_all(&tmp)?;
    let result = (|| {
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tmp), "")?;
        fsutil::write_atomic(
            &tmp.join(EXTRACTED_FROM),
            format!("{deb_sha256}\n").as_bytes(),
        )?;
        fsutil::remove_dir_all_if_exists(dest)?;
        fsutil::rename(&tmp, dest)
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result.map(|()| false)
}

/// Run a command, mapping "not installed" and non-zero exit to errors that
/// show the command line and its stderr.
pub(crate) fn run(cmd: &mut Command, hint: &str) -> Result<Output, ImageError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let command = std::iter::once(program.clone())
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    tracing::debug!(%command, "running");
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ImageError::ToolMissing {
                tool: program.clone(),
                hint: "the image builder needs a Debian host with apt and dpkg".into(),
            }
        } else {
            ImageError::ToolFailed {
                command: command.clone(),
                status: "could not start".into(),
                stderr: e.to_string(),
                hint: hint.to_string(),
            }
        }
    })?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(ImageError::ToolFailed {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            hint: hint.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_apt_cache_depends() {
        let out = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(
            parse_depends(out).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        let alt = "linux-image-cloud-amd64\n |Depends: linux-image-6.1.0-57-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(
            parse_depends(alt).as_deref(),
            Some("linux-image-6.1.0-57-cloud-amd64")
        );
        assert_eq!(parse_depends("linux-image-cloud-amd64\n"), None);
        assert_eq!(parse_depends("  Depends: linux-image-cloud-amd64\n"), None);
        assert_eq!(
            parse_depends("  Depends: <linux-image-6.1-cloud-amd64>\n"),
            None
        );
        assert_eq!(
            parse_depends("  Recommends: linux-image-6.1.0-56-cloud-amd64\n"),
            None
        );
    }

    #[test]
    fn package_names() {
        assert!(check_package_name("linux-image-6.1.0-56-cloud-amd64").is_ok());
        assert!(check_package_name("linux-image-*").is_err());
        assert!(check_package_name("-o=foo").is_err());
        assert!(check_package_name("../x").is_err());
        assert!(check_package_name("").is_err());
    }

    #[test]
    fn cached_deb_matches_exact_package() {
        let dir = std::env::temp_dir().join(format!("duplex-debs-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        assert_eq!(
            cached_deb(&dir, "linux-image-6.1.0-56-cloud-amd64").unwrap(),
            None
        );
        fs::write(
            dir.join("linux-image-6.1.0-56-cloud-amd64-dbg_6.1.192-2_amd64.deb"),
            b"",
        )
        .unwrap();
        fs::write(
            dir.join("linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb.part"),
            b"",
        )
        .unwrap();
        assert_eq!(
            cached_deb(&dir, "linux-image-6.1.0-56-cloud-amd64").unwrap(),
            None
        );
        let deb = dir.join("linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb");
        fs::write(&deb, b"").unwrap();
        assert_eq!(
            cached_deb(&dir, "linux-image-6.1.0-56-cloud-amd64").unwrap(),
            Some(deb)
        );
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(cached_deb(&dir, "x").unwrap(), None);
    }
}
