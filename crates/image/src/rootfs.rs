//! A spec's root filesystem: Debian's essential packages plus the spec's,
//! bootstrapped by `mmdebstrap` into a work directory, then the spec's files
//! and the middleware's service configuration added.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::ImageError;
use crate::manifest::FileRecord;
use crate::spec::ImageSpec;
use crate::{debian, fsutil};

/// Where the middleware reads the service's hooks in the VM's root.
pub const SERVICE_JSON: &str = "etc/duplex/service.json";
/// Documentation, manual pages and translations are left out of the root.
const EXCLUDED: &[&str] = &[
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/info/*",
];

/// One installed package, as `dpkg-query` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRecord {
    pub name: String,
    pub version: String,
    pub arch: String,
}

/// Bootstrap `spec.release` with `spec.packages` into `root` (which must
/// not exist yet).
pub fn bootstrap(spec: &ImageSpec, root: &Path) -> Result<(), ImageError> {
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--mode=root", "--variant=essential", "--quiet"])
        .arg("--aptopt=APT::Install-Recommends \"false\"");
    if !spec.packages.is_empty() {
        cmd.arg(format!("--include={}", spec.packages.join(",")));
    }
    for rule in EXCLUDED {
        cmd.arg(format!("--dpkgopt={rule}"));
    }
    cmd.arg("--").arg(&spec.release).arg(root);
    if let Some(mirror) = &spec.mirror {
        cmd.arg(mirror);
    }
    debian::run(
        &mut cmd,
        "; check the package names and that apt can reach the mirror",
    )?;
    Ok(())
}

/// Add the spec's files (sources relative to `spec_dir`) and the service
/// configuration; returns a record of each file added.
pub fn add_files(
    spec: &ImageSpec,
    spec_dir: &Path,
    root: &Path,
) -> Result<Vec<FileRecord>, ImageError> {
    let mut records = Vec::with_capacity(spec.files.len() + 1);
    for f in &spec.files {
        let data = match (&f.source, &f.content) {
            (Some(source), _) => fsutil::read(&spec_dir.join(source))?,
            (None, Some(content)) => content.as_bytes().to_vec(),
            (None, None) => Vec::new(),
        };
        let mode = crate::spec::parse_mode(&f.mode).unwrap_or(0o644);
        write_in_root(root, &f.path, &data, mode)?;
        records.push(fsutil::record(f.path.clone(), &data));
    }
    let service = spec.service_json();
    write_in_root(root, &format!("/{SERVICE_JSON}"), service.as_bytes(), 0o644)?;
    records.push(fsutil::record(
        format!("/{SERVICE_JSON}"),
        service.as_bytes(),
    ));
    Ok(records)
}

fn write_in_root(root: &Path, path: &str, data: &[u8], mode: u32) -> Result<(), ImageError> {
    duplex_guest::in_root::write(root, path, data, mode)
        .map(|_| ())
        .map_err(|e| ImageError::io("add", root.join(path.trim_start_matches('/')), e))
}

/// Every package installed in `root`, sorted by name.
pub fn packages(root: &Path) -> Result<Vec<PackageRecord>, ImageError> {
    let out = debian::run(
        Command::new("dpkg-query")
            .arg(format!(
                "--admindir={}",
                root.join("var/lib/dpkg").display()
            ))
            .args(["-W", "-f", "${Package}\t${Version}\t${Architecture}\n"]),
        "",
    )?;
    let mut list = parse_packages(&String::from_utf8_lossy(&out.stdout));
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(list)
}

fn parse_packages(text: &str) -> Vec<PackageRecord> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.split('\t');
            let (name, version, arch) = (it.next()?, it.next()?, it.next()?);
            (!name.is_empty() && !version.is_empty()).then(|| PackageRecord {
                name: name.into(),
                version: version.into(),
                arch: arch.into(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dpkg_query() {
        let list =
            parse_packages("bash\t5.2.15-2+b7\tamd64\nbroken\n\tx\ty\nkamailio\t5.6.3-2\tamd64\n");
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].name, "kamailio");
        assert_eq!(list[1].version, "5.6.3-2");
    }
}
