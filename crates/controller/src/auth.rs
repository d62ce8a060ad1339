//! The API's bearer token: created at first start (kept in the store as a
//! SHA-256 digest, shared by every controller of the cluster; the token
//! itself goes to `<data_dir>/token`, mode 0600). Rotating it expires the
//! old one, which is then refused with `expired_token`.

use crate::error::ApiError;
use crate::repo::{Repo, RepoError, API_TOKEN};
use duplex_store::Expect;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    #[serde(default = "one")]
    pub v: u32,
    /// Hex SHA-256 of the valid token.
    pub current: String,
    /// Digests of replaced tokens, with when they expired.
    #[serde(default)]
    pub expired: Vec<(String, u64)>,
}

fn one() -> u32 {
    1
}

/// The record of a known token (no expired ones).
pub fn record_for(token: &str) -> TokenRecord {
    TokenRecord {
        v: 1,
        current: digest(token),
        expired: Vec::new(),
    }
}

pub fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn fresh_token() -> std::io::Result<String> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(hex::encode(b))
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("cannot write the API token to {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn write_token(path: &Path, token: &str) -> Result<(), AuthError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| AuthError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        f.write_all(format!("{token}\n").as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)
}

/// Makes sure a token exists; writes a newly created one to `path`.
/// Returns the record and whether this call created it.
pub async fn bootstrap(repo: &Repo, path: &Path) -> Result<(TokenRecord, bool), AuthError> {
    if let Some(r) = repo.get::<TokenRecord>(API_TOKEN).await? {
        return Ok((r.value, false));
    }
    let token = fresh_token().map_err(|source| AuthError::Write {
        path: "/dev/urandom".into(),
        source,
    })?;
    let rec = TokenRecord {
        v: 1,
        current: digest(&token),
        expired: Vec::new(),
    };
    match repo.put(API_TOKEN, &rec, Expect::Absent).await {
        Ok(_) => {
            write_token(path, &token)?;
            Ok((rec, true))
        }
        // Another controller created it first: use theirs.
        Err(RepoError::Store(duplex_store::StoreError::Conflict { .. })) => {
            let r = repo
                .get::<TokenRecord>(API_TOKEN)
                .await?
                .ok_or_else(|| RepoError::Missing(API_TOKEN.into()))?;
            Ok((r.value, false))
        }
        Err(e) => Err(e.into()),
    }
}

/// Replaces the token; the old one expires now. Writes the new one to `path`.
pub async fn rotate(repo: &Repo, path: &Path, now_ms: u64) -> Result<TokenRecord, AuthError> {
    let token = fresh_token().map_err(|source| AuthError::Write {
        path: "/dev/urandom".into(),
        source,
    })?;
    let d = digest(&token);
    let rec = repo
        .update::<TokenRecord, std::convert::Infallible, _>(API_TOKEN, |r| {
            let old = std::mem::replace(&mut r.current, d.clone());
            r.expired.push((old, now_ms));
            let n = r.expired.len();
            r.expired.drain(..n.saturating_sub(20));
            Ok(())
        })
        .await?;
    let Ok(rec) = rec;
    write_token(path, &token)?;
    Ok(rec)
}

/// Checks an `Authorization` header value against the record.
pub fn check(rec: &TokenRecord, header: Option<&str>) -> Result<(), ApiError> {
    let Some(h) = header else {
        return Err(ApiError::unauthorized(
            "missing_token",
            "no `Authorization: Bearer <token>` header; the token is in the controller's data directory (file `token`)",
        ));
    };
    let Some(token) = h.strip_prefix("Bearer ").map(str::trim) else {
        return Err(ApiError::unauthorized(
            "bad_token",
            "the `Authorization` header must be `Bearer <token>`",
        ));
    };
    let d = digest(token);
    if ct_eq(&d, &rec.current) {
        return Ok(());
    }
    if let Some((_, at)) = rec.expired.iter().find(|(e, _)| ct_eq(&d, e)) {
        return Err(ApiError::unauthorized(
            "expired_token",
            &format!("this token was replaced at unix ms {at}; read the new one from the controller's `token` file"),
        ));
    }
    Err(ApiError::unauthorized(
        "bad_token",
        "the token is not valid for this controller",
    ))
}

fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_names_each_problem() {
        let rec = TokenRecord {
            v: 1,
            current: digest("good"),
            expired: vec![(digest("old"), 5)],
        };
        assert!(check(&rec, Some("Bearer good")).is_ok());
        let code = |h: Option<&str>| check(&rec, h).unwrap_err().code;
        assert_eq!(code(None), "missing_token");
        assert_eq!(code(Some("Basic abc")), "bad_token");
        assert_eq!(code(Some("Bearer nope")), "bad_token");
        assert_eq!(code(Some("Bearer old")), "expired_token");
    }
}
