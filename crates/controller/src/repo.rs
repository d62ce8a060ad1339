//! Typed records over the store: JSON with a schema version, written with
//! compare-and-set. Key layout: `hosts/<name>`, `vms/<name>`,
//! `pairs/<name>`, `ops/<id>`, `events/<id>`.

use crate::metrics::StoreLabels;
use duplex_core::model::SCHEMA_VERSION;
use duplex_store::{Expect, Store, StoreError};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;

pub const HOSTS: &str = "hosts/";
pub const VMS: &str = "vms/";
pub const PAIRS: &str = "pairs/";
pub const OPS: &str = "ops/";
pub const EVENTS: &str = "events/";
/// S3 restart policies: `policies/vm/<name>`, `policies/pair/<name>`.
pub const POLICIES: &str = "policies/";
/// The S2 ruleset (one record).
pub const RULES: &str = "rules";

/// How often a read-modify-write is retried when another writer got there first.
const UPDATE_ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored record `{key}` is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("stored record `{key}` has layout v{found}, newer than this controller's v{SCHEMA_VERSION}: upgrade the controller")]
    Newer { key: String, found: u32 },
    #[error("`{0}` does not exist")]
    Missing(String),
    #[error("`{key}` kept changing under us ({UPDATE_ATTEMPTS} attempts): try again")]
    Contended { key: String },
}

/// A stored record with the revision it was read at.
#[derive(Debug, Clone)]
pub struct Rev<T> {
    pub value: T,
    pub revision: u64,
}

#[derive(Clone)]
pub struct Repo {
    pub store: Arc<dyn Store>,
    /// How long each kind of store request takes (`/metrics`).
    pub latency: Family<StoreLabels, Histogram>,
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, RepoError> {
    let raw: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| RepoError::Corrupt {
        key: key.into(),
        reason: e.to_string(),
    })?;
    if let Some(v) = raw.get("v").and_then(|v| v.as_u64()) {
        if v > SCHEMA_VERSION as u64 {
            return Err(RepoError::Newer {
                key: key.into(),
                found: v as u32,
            });
        }
    }
    serde_json::from_value(raw).map_err(|e| RepoError::Corrupt {
        key: key.into(),
        reason: e.to_string(),
    })
}

impl Repo {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Repo {
            store,
            latency: crate::metrics::store_latency(),
        }
    }

    /// Runs one store request, timed as `op`.
    async fn timed<T>(&self, op: &str, req: impl std::future::Future<Output = T>) -> T {
        let t = std::time::Instant::now();
        let out = req.await;
        self.latency
            .get_or_create(&StoreLabels { op: op.to_string() })
            .observe(t.elapsed().as_secs_f64());
        out
    }

    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<Rev<T>>, RepoError> {
        match self.timed("get", self.store.get(key)).await? {
            None => Ok(None),
            Some(e) => Ok(Some(Rev {
                value: decode(key, &e.value)?,
                revision: e.revision,
            })),
        }
    }

    /// Every readable record under `prefix`; unreadable ones are logged and skipped.
    pub async fn list<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<Rev<T>>, RepoError> {
        let mut out = Vec::new();
        for e in self.timed("list", self.store.list(prefix)).await? {
            match decode(&e.key, &e.value) {
                Ok(value) => out.push(Rev {
                    value,
                    revision: e.revision,
                }),
                Err(err) => tracing::error!(key = %e.key, "skipping record: {err}"),
            }
        }
        Ok(out)
    }

    pub async fn put<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        expect: Expect,
    ) -> Result<u64, RepoError> {
        let bytes = serde_json::to_vec(value).map_err(|e| RepoError::Corrupt {
            key: key.into(),
            reason: e.to_string(),
        })?;
        Ok(self
            .timed("put", self.store.put(key, &bytes, expect))
            .await?)
    }

    pub async fn delete(&self, key: &str, expect: Expect) -> Result<bool, RepoError> {
        Ok(self.timed("delete", self.store.delete(key, expect)).await?)
    }

    /// Reads `key`, applies `f`, writes it back if unchanged meanwhile;
    /// retries on a race. `f` may refuse by returning `Err`.
    pub async fn update<T, E, F>(&self, key: &str, f: F) -> Result<Result<T, E>, RepoError>
    where
        T: Serialize + DeserializeOwned + Clone,
        F: FnMut(&mut T) -> Result<(), E>,
    {
        self.update_or(key, || Err(RepoError::Missing(key.into())), f)
            .await
    }

    /// [`Repo::update`] of a key that may not be there yet: `f` then
    /// starts from the default, and the write expects the key absent.
    pub async fn upsert<T, E, F>(&self, key: &str, f: F) -> Result<Result<T, E>, RepoError>
    where
        T: Serialize + DeserializeOwned + Clone + Default,
        F: FnMut(&mut T) -> Result<(), E>,
    {
        self.update_or(key, || Ok(T::default()), f).await
    }

    async fn update_or<T, E, F>(
        &self,
        key: &str,
        missing: impl Fn() -> Result<T, RepoError>,
        mut f: F,
    ) -> Result<Result<T, E>, RepoError>
    where
        T: Serialize + DeserializeOwned + Clone,
        F: FnMut(&mut T) -> Result<(), E>,
    {
        for _ in 0..UPDATE_ATTEMPTS {
            let (mut next, expect) = match self.get::<T>(key).await? {
                Some(cur) => (cur.value, Expect::Revision(cur.revision)),
                None => (missing()?, Expect::Absent),
            };
            if let Err(e) = f(&mut next) {
                return Ok(Err(e));
            }
            match self.put(key, &next, expect).await {
                Ok(_) => return Ok(Ok(next)),
                Err(RepoError::Store(StoreError::Conflict { .. })) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(RepoError::Contended { key: key.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duplex_store::memory::MemoryStore;

    #[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
    struct Knobs {
        a: u32,
        b: u32,
    }

    /// A change stored between the read and the write of another is not
    /// overwritten: the second is made again on top of it.
    #[tokio::test]
    async fn upsert_starts_from_the_default_and_keeps_a_concurrent_change() {
        let store = MemoryStore::new();
        let repo = Repo::new(Arc::new(store.instance(1)));
        let other = Repo::new(Arc::new(store.instance(2)));
        let first: Result<Knobs, String> = repo
            .upsert("k", |k: &mut Knobs| {
                k.a = 1;
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(first, Ok(Knobs { a: 1, b: 0 }));
        let mut raced = false;
        let mut tries = 0;
        let second: Result<Knobs, String> = repo
            .upsert("k", |k: &mut Knobs| {
                tries += 1;
                k.b = 2;
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!((second, tries), (Ok(Knobs { a: 1, b: 2 }), 1));
        // Another writer's change lands between this read and write.
        let third: Result<Knobs, String> = repo
            .upsert("k", |k: &mut Knobs| {
                if !raced {
                    raced = true;
                    let bytes = serde_json::to_vec(&Knobs { a: 7, b: 2 }).unwrap();
                    let put = other.store.put("k", &bytes, Expect::Any);
                    futures_util::FutureExt::now_or_never(put)
                        .expect("the memory store answers at once")
                        .unwrap();
                }
                k.b = 3;
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(third, Ok(Knobs { a: 7, b: 3 }), "the other's a=7 kept");
        let refused: Result<Knobs, String> = repo
            .upsert("k", |_: &mut Knobs| Err("no".to_string()))
            .await
            .unwrap();
        assert_eq!(refused, Err("no".to_string()));
    }
}
