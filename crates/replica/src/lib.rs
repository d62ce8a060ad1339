//! The data side of S2's epoch replication (see `docs/epochs.md`):
//!
//! - [`ram`]: a VM's RAM as a file in `/dev/shm` that QEMU maps shared, and
//!   the agent maps too (read-only on the primary, writable on the backup);
//! - [`scan`]: which pages changed since the last checkpoint, by a hash of
//!   every page (TCG gives no dirty log to an outside process, ENVIRONMENT.md);
//! - [`wire`]: one checkpoint (device state and changed pages) as bytes,
//!   checked on the way in;
//! - [`image`]: the backup's copy, applied one whole checkpoint at a time
//!   and in order, so it always holds the last committed epoch.

pub mod image;
pub mod ram;
pub mod scan;
pub mod wire;

/// Guest page size the scan works in.
pub const PAGE: usize = 4096;
