//! S3's external disk: what Duplex keeps per VM outside the VM and its
//! host — its init info (user data and software version), LAF backups of
//! the ACT's service data, the REF data set, and its restart counters —
//! so that they survive the VM's re-creation and a controller's crash.
//!
//! Stored through `object_store`: a local directory by default, an
//! S3-compatible store in production. Every write is a new version
//! (`vms/<vm>/<kind>/<version, 20 digits>`), the newest [`KEEP`] of each
//! kind are kept, and every object is sealed with its sha256
//! ([`envelope`]): a damaged one is refused with the reason. One writer
//! at a time (the leading controller, whose store writes are fenced): a
//! version number is the last one listed plus one.

pub mod envelope;

use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, PutPayload};
use std::sync::Arc;

/// Versions kept of each kind of object per VM.
pub const KEEP: usize = 8;

/// What an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// User data and the application software version the VM was made
    /// with.
    InitInfo,
    /// A LAF backup: the ACT's service data.
    Laf,
    /// The REF data set the service starts from.
    Ref,
    /// The restart counters per phase.
    Counters,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::InitInfo => "init",
            Kind::Laf => "laf",
            Kind::Ref => "ref",
            Kind::Counters => "counters",
        }
    }
}

/// A stored version of one object.
pub type Version = u64;

#[derive(Debug, thiserror::Error)]
pub enum ExtDiskError {
    #[error("external disk: {what}: {source}")]
    Store {
        what: String,
        source: object_store::Error,
    },
    #[error("external disk: object {key} is damaged: {reason}; refusing to use it")]
    Damaged { key: String, reason: String },
    #[error("external disk: {0:?} is not a VM name")]
    BadName(String),
    #[error("external disk: endpoint {0:?}: {1}")]
    Endpoint(String, String),
    #[error("external disk: cannot use {dir}: {source}")]
    Open {
        dir: String,
        source: object_store::Error,
    },
}

/// Where an S3-compatible external disk is.
#[derive(Clone)]
pub struct S3Target {
    /// `https://host:port`; `http://` only to a loopback address.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Display for S3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bucket {} at {}", self.bucket, self.endpoint)
    }
}

impl S3Target {
    /// The endpoint is HTTPS, or plain HTTP on this machine only (nothing
    /// of the external disk crosses a network in the clear).
    pub fn check(&self) -> Result<(), ExtDiskError> {
        let bad = |why: &str| {
            Err(ExtDiskError::Endpoint(
                self.endpoint.clone(),
                why.to_string(),
            ))
        };
        let Some((scheme, rest)) = self.endpoint.split_once("://") else {
            return bad("not a URL");
        };
        let host = rest.split(['/', ':']).next().unwrap_or("");
        let loopback = host == "localhost"
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|a| a.is_loopback());
        match scheme {
            "https" => Ok(()),
            "http" if loopback => Ok(()),
            "http" => bad("plain http is only accepted to a loopback address; use https"),
            _ => bad("the scheme must be https"),
        }
    }
}

/// Maps a store failure to an error saying what was being done.
fn store_error(what: String) -> impl FnOnce(object_store::Error) -> ExtDiskError {
    move |source| ExtDiskError::Store { what, source }
}

/// The external disk, shared by the controller's workflows.
#[derive(Clone)]
pub struct ExternalDisk {
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for ExternalDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ExternalDisk({})", self.store)
    }
}

impl ExternalDisk {
    /// On a local directory (made if missing).
    pub fn local(dir: &std::path::Path) -> Result<ExternalDisk, ExtDiskError> {
        let open = |source| ExtDiskError::Open {
            dir: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| {
            open(object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            })
        })?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(open)?;
        Ok(ExternalDisk::on(Arc::new(store)))
    }

    /// On a bucket of an S3-compatible store.
    pub fn s3(target: &S3Target) -> Result<ExternalDisk, ExtDiskError> {
        target.check()?;
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&target.endpoint)
            .with_bucket_name(&target.bucket)
            .with_region(&target.region)
            .with_access_key_id(&target.access_key_id)
            .with_secret_access_key(&target.secret_access_key)
            .with_allow_http(target.endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false)
            .build()
            .map_err(|source| ExtDiskError::Open {
                dir: target.to_string(),
                source,
            })?;
        Ok(ExternalDisk::on(Arc::new(store)))
    }

    /// On any object store.
    /// The external disk a `--external-disk` value names: a directory,
    /// or `s3+https://HOST[:PORT]/BUCKET` (`s3+http://` to loopback only)
    /// with the credentials from `env` (`DUPLEX_S3_ACCESS_KEY_ID`,
    /// `DUPLEX_S3_SECRET_ACCESS_KEY`, optional `DUPLEX_S3_REGION`).
    pub fn open(
        spec: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ExternalDisk, ExtDiskError> {
        let Some(url) = spec.strip_prefix("s3+") else {
            return ExternalDisk::local(std::path::Path::new(spec));
        };
        let bad = |why: &str| ExtDiskError::Endpoint(spec.to_string(), why.to_string());
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("not a URL"))?;
        let (host, bucket) = rest
            .split_once('/')
            .filter(|(h, b)| !h.is_empty() && !b.is_empty() && !b.contains('/'))
            .ok_or_else(|| bad("expected s3+https://HOST[:PORT]/BUCKET"))?;
        let var = |name: &str| env(name).ok_or_else(|| bad(&format!("{name} is not set")));
        let target = S3Target {
            endpoint: format!("{scheme}://{host}"),
            bucket: bucket.to_string(),
            region: env("DUPLEX_S3_REGION").unwrap_or_else(|| "us-east-1".into()),
            access_key_id: var("DUPLEX_S3_ACCESS_KEY_ID")?,
            secret_access_key: var("DUPLEX_S3_SECRET_ACCESS_KEY")?,
        };
        ExternalDisk::s3(&target)
    }

    /// An external disk in this process's memory (simulations, tests).
    pub fn memory() -> ExternalDisk {
        ExternalDisk::on(Arc::new(object_store::memory::InMemory::new()))
    }

    pub fn on(store: Arc<dyn ObjectStore>) -> ExternalDisk {
        ExternalDisk { store }
    }

    fn prefix(vm: &str, kind: Kind) -> Result<StorePath, ExtDiskError> {
        let ok = !vm.is_empty()
            && vm.len() <= 64
            && vm
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(ExtDiskError::BadName(vm.to_string()));
        }
        Ok(StorePath::from(format!("vms/{vm}/{}", kind.name())))
    }

    /// The stored versions of `vm`'s `kind`, as the store lists them.
    async fn listed(
        &self,
        vm: &str,
        kind: Kind,
    ) -> Result<Vec<(Version, object_store::ObjectMeta)>, ExtDiskError> {
        let prefix = Self::prefix(vm, kind)?;
        let metas: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(store_error(format!("list {prefix}")))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| Some((m.location.filename()?.parse().ok()?, m)))
            .collect())
    }

    /// The stored versions of `vm`'s `kind`, oldest first.
    pub async fn versions(&self, vm: &str, kind: Kind) -> Result<Vec<Version>, ExtDiskError> {
        let mut versions: Vec<Version> = self
            .listed(vm, kind)
            .await?
            .into_iter()
            .map(|(v, _)| v)
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    /// When the newest version of `vm`'s `kind` was stored (ms since the
    /// epoch, from the store's listing: nothing is read).
    pub async fn newest_at(&self, vm: &str, kind: Kind) -> Result<Option<u64>, ExtDiskError> {
        Ok(self
            .listed(vm, kind)
            .await?
            .iter()
            .map(|(_, m)| m.last_modified.timestamp_millis().max(0) as u64)
            .max())
    }

    /// Store a new version; older ones beyond [`KEEP`] are removed.
    pub async fn put(&self, vm: &str, kind: Kind, payload: &[u8]) -> Result<Version, ExtDiskError> {
        let prefix = Self::prefix(vm, kind)?;
        let versions = self.versions(vm, kind).await?;
        let version = versions.last().map_or(1, |v| v + 1);
        let key = prefix.child(format!("{version:020}"));
        self.store
            .put(&key, PutPayload::from(envelope::seal(payload)))
            .await
            .map_err(store_error(format!("write {key}")))?;
        let excess = (versions.len() + 1).saturating_sub(KEEP);
        for old in &versions[..excess] {
            let key = prefix.child(format!("{old:020}"));
            self.store
                .delete(&key)
                .await
                .map_err(store_error(format!("remove {key}")))?;
        }
        Ok(version)
    }

    /// One version's payload, checked.
    pub async fn get(
        &self,
        vm: &str,
        kind: Kind,
        version: Version,
    ) -> Result<Vec<u8>, ExtDiskError> {
        let key = Self::prefix(vm, kind)?.child(format!("{version:020}"));
        let stored = self
            .store
            .get(&key)
            .await
            .map_err(store_error(format!("read {key}")))?
            .bytes()
            .await
            .map_err(store_error(format!("read {key}")))?;
        envelope::open(&stored)
            .map(<[u8]>::to_vec)
            .map_err(|reason| ExtDiskError::Damaged {
                key: key.to_string(),
                reason,
            })
    }

    /// The newest version and its payload, if any is stored.
    pub async fn latest(
        &self,
        vm: &str,
        kind: Kind,
    ) -> Result<Option<(Version, Vec<u8>)>, ExtDiskError> {
        match self.versions(vm, kind).await?.last() {
            Some(&v) => Ok(Some((v, self.get(vm, kind, v).await?))),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn versions_are_kept_checked_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let disk = ExternalDisk::local(dir.path()).unwrap();
        assert_eq!(disk.latest("vm1", Kind::Counters).await.unwrap(), None);
        assert_eq!(disk.newest_at("vm1", Kind::Counters).await.unwrap(), None);
        for i in 1..=(KEEP as u64 + 3) {
            let v = disk
                .put("vm1", Kind::Counters, format!("c{i}").as_bytes())
                .await
                .unwrap();
            assert_eq!(v, i);
        }
        let versions = disk.versions("vm1", Kind::Counters).await.unwrap();
        assert_eq!(versions, (4..=KEEP as u64 + 3).collect::<Vec<_>>());
        let (v, data) = disk.latest("vm1", Kind::Counters).await.unwrap().unwrap();
        let at = disk
            .newest_at("vm1", Kind::Counters)
            .await
            .unwrap()
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(at <= now + 1000 && at + 60_000 > now, "{at} vs {now}");
        assert_eq!((v, data.as_slice()), (KEEP as u64 + 3, b"c11".as_slice()));
        // Kinds and VMs are apart.
        assert_eq!(disk.latest("vm1", Kind::Laf).await.unwrap(), None);
        assert_eq!(disk.latest("vm2", Kind::Counters).await.unwrap(), None);
        // A new handle on the same directory (a restarted controller) sees it.
        let again = ExternalDisk::local(dir.path()).unwrap();
        assert_eq!(again.get("vm1", Kind::Counters, 5).await.unwrap(), b"c5");
    }

    #[test]
    fn s3_endpoints_are_https_or_loopback() {
        let t = |endpoint: &str| S3Target {
            endpoint: endpoint.into(),
            bucket: "b".into(),
            region: "us-east-1".into(),
            access_key_id: "k".into(),
            secret_access_key: "s".into(),
        };
        for ok in [
            "https://s3.example:443",
            "http://127.0.0.1:9000",
            "http://localhost:9000",
        ] {
            assert!(t(ok).check().is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.5:9000",
            "ftp://x",
            "s3.example",
            "http://127.0.0.1.evil:80",
        ] {
            let e = t(bad).check().unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn open_takes_a_directory_or_an_s3_url() {
        let dir = tempfile::tempdir().unwrap();
        let none = |_: &str| None;
        assert!(ExternalDisk::open(dir.path().to_str().unwrap(), none).is_ok());
        let creds = |k: &str| match k {
            "DUPLEX_S3_ACCESS_KEY_ID" | "DUPLEX_S3_SECRET_ACCESS_KEY" => Some("x".to_string()),
            _ => None,
        };
        assert!(ExternalDisk::open("s3+http://127.0.0.1:9000/b", creds).is_ok());
        let cases = [
            (
                "s3+http://127.0.0.1:9000/b",
                "DUPLEX_S3_ACCESS_KEY_ID is not set",
            ),
            ("s3+http://10.1.1.1:9000/b", "loopback"),
            ("s3+https://host", "BUCKET"),
            ("s3+https://host/a/b", "BUCKET"),
            ("s3+host/b", "not a URL"),
        ];
        for (spec, why) in cases {
            let env = if why.contains("not set") { none } else { creds };
            let e = ExternalDisk::open(spec, env).unwrap_err().to_string();
            assert!(e.contains(why), "{spec}: {e}");
        }
    }

    #[tokio::test]
    async fn a_damaged_object_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let disk = ExternalDisk::local(dir.path()).unwrap();
        disk.put("vm1", Kind::Laf, b"service data").await.unwrap();
        let file = dir.path().join("vms/vm1/laf").join(format!("{:020}", 1));
        let mut bytes = std::fs::read(&file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x20;
        std::fs::write(&file, bytes).unwrap();
        let e = disk.latest("vm1", Kind::Laf).await.unwrap_err().to_string();
        assert!(
            e.contains("vms/vm1/laf/00000000000000000001") && e.contains("damaged"),
            "{e}"
        );
        assert!(matches!(
            disk.put("../x", Kind::Laf, b"").await,
            Err(ExtDiskError::BadName(_))
        ));
    }
}
