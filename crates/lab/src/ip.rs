//! Thin runner of iproute2 (and other short) commands.
//!
//! Every failure names the exact command line and its stderr.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

use crate::error::LabError;

/// Renders a command line for messages (arguments with spaces are quoted).
pub(crate) fn cmdline<I, S>(program: &OsStr, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut out = quote(program);
    for a in args {
        out.push(' ');
        out.push_str(&quote(a.as_ref()));
    }
    out
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@+,%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Runs `program args…`, returns stdout; non-zero exit is an error with stderr.
pub(crate) fn run<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<String, LabError> {
    let line = cmdline(OsStr::new(program), args);
    tracing::debug!(cmd = %line, "run");
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            cmdline: line.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LabError::Command {
            cmdline: line,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// `ip args…`.
pub(crate) fn ip<S: AsRef<OsStr>>(args: &[S]) -> Result<String, LabError> {
    run("ip", args)
}

/// `ip -n <ns> args…`: an iproute2 command inside namespace `ns`.
pub(crate) fn ip_in(ns: &str, args: &[&str]) -> Result<String, LabError> {
    let mut v = vec!["-n", ns];
    v.extend_from_slice(args);
    ip(&v)
}

/// `ip -j args…` parsed as JSON.
pub(crate) fn ip_json(args: &[&str]) -> Result<serde_json::Value, LabError> {
    let mut v = vec!["-j"];
    v.extend_from_slice(args);
    let out = ip(&v)?;
    let text = out.trim();
    if text.is_empty() {
        return Ok(serde_json::Value::Array(Vec::new()));
    }
    serde_json::from_str(text).map_err(|e| LabError::Output {
        cmdline: cmdline(OsStr::new("ip"), &v),
        detail: e.to_string(),
    })
}

/// Whether the effective user is root.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub(crate) fn require_root() -> Result<(), LabError> {
    if is_root() {
        Ok(())
    } else {
        Err(LabError::NotRoot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_quotes() {
        assert_eq!(
            cmdline(
                OsStr::new("ip"),
                ["-n", "dx-sw", "link", "add", "a b", "it's"]
            ),
            r"ip -n dx-sw link add 'a b' 'it'\''s'"
        );
    }
}
