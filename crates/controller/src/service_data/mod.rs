//! S3's service data, the shell over `duplex_core::service_data`: LAF
//! backups of a pair's ACT (or a lone VM), on demand and on the policy's
//! schedule; the REF data set an operator gives a VM; and, after PH3.0 /
//! PH3.5 re-created a VM, giving its guest the chosen set before it gets a
//! role (the pair repair waits for that). All of it on the external disk,
//! versioned and checksummed: a damaged version is passed over, named.

mod init;
mod restore;
mod sets;

pub use init::{init_info, note_init_info};
pub use restore::{choose, note_restore};
pub use sets::{backup, catalog, set_ref, Stored};

use crate::ctl::Ctl;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How often VMs waiting for their data are looked at (when some are).
const RESTORE_PERIOD: Duration = Duration::from_millis(500);
/// How often the LAF schedule is looked at.
const SCHEDULE_PERIOD: Duration = Duration::from_secs(30);

/// The leader's loop: restores as soon as re-created guests are up, LAF
/// backups when due.
pub async fn run(ctl: Arc<Ctl>) {
    let mut led = false;
    let mut next_schedule = tokio::time::Instant::now() + SCHEDULE_PERIOD;
    loop {
        tokio::time::sleep(RESTORE_PERIOD).await;
        let leads = ctl.is_leader();
        if leads && !led {
            // Another controller may have noted a restore before it went.
            ctl.restore_due.store(true, Ordering::SeqCst);
        }
        led = leads;
        if !leads {
            continue;
        }
        if ctl.restore_due.swap(false, Ordering::SeqCst) {
            match restore::restore_pass(&ctl).await {
                Ok(waiting) => {
                    if waiting {
                        ctl.restore_due.store(true, Ordering::SeqCst);
                    }
                }
                Err(e) => {
                    tracing::warn!("restore pass: {e}");
                    ctl.restore_due.store(true, Ordering::SeqCst);
                }
            }
        }
        if tokio::time::Instant::now() >= next_schedule {
            next_schedule = tokio::time::Instant::now() + SCHEDULE_PERIOD;
            if let Err(e) = sets::schedule_pass(&ctl).await {
                tracing::warn!("LAF schedule pass: {e}");
            }
        }
    }
}
