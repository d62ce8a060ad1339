//! A value built from a bundle (a server's acceptor, a client), rebuilt
//! when the bundle's files change: `duplex pki rotate` and `revoke` take
//! effect without restarting anything. A rebuild that fails keeps the
//! value that works and says why in the log.

use crate::bundle::{Bundle, Material, Stamp};
use crate::error::TlsError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the files are looked at, at most.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

type Build<T> = Box<dyn Fn(&Material) -> Result<T, TlsError> + Send + Sync>;

pub struct Reloading<T> {
    bundle: Bundle,
    build: Build<T>,
    cur: Mutex<Current<T>>,
}

struct Current<T> {
    stamp: Stamp,
    checked: Instant,
    value: Arc<T>,
}

impl<T> Reloading<T> {
    /// Builds the first value now: a bundle that does not load is an error
    /// at start, not at the first connection.
    pub fn new(
        bundle: Bundle,
        build: impl Fn(&Material) -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Reloading<T>, TlsError> {
        let stamp = bundle.stamp();
        let value = Arc::new(build(&bundle.load()?)?);
        Ok(Reloading {
            bundle,
            build: Box::new(build),
            cur: Mutex::new(Current {
                stamp,
                checked: Instant::now(),
                value,
            }),
        })
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// The value, rebuilt first if the files changed.
    pub fn get(&self) -> Arc<T> {
        let mut cur = self.cur.lock().unwrap_or_else(|p| p.into_inner());
        if cur.checked.elapsed() >= CHECK_EVERY {
            cur.checked = Instant::now();
            let stamp = self.bundle.stamp();
            if stamp != cur.stamp {
                cur.stamp = stamp;
                match self.bundle.load().and_then(|m| (self.build)(&m)) {
                    Ok(v) => {
                        tracing::info!(dir = %self.bundle.dir.display(), "TLS bundle changed; using the new files");
                        cur.value = Arc::new(v);
                    }
                    Err(e) => tracing::error!(
                        dir = %self.bundle.dir.display(),
                        "TLS bundle changed but does not load ({e}); keeping the previous one"
                    ),
                }
            }
        }
        cur.value.clone()
    }
}
