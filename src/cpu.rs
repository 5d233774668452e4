//! Where CPU-heavy work runs (issue 12, item 9): off the async executor's threads.
//!
//! Sealing and opening index segments, merging them in a compaction, sealing large
//! blob batches and parsing messages take milliseconds to hundreds of milliseconds on
//! large inputs; run on an executor thread they would stall every connection task that
//! shares it. [`offload`] moves such work to tokio's blocking pool, and runs small work
//! in place, where a trip to the pool (a few microseconds and two context switches)
//! would cost more than the work.

use crate::error::{Error, Result};

/// Work on fewer bytes than this runs in place: sealing or opening 64 KiB takes about
/// 50 µs here, the order of one poll that tokio's guidance allows.
pub(crate) const IN_PLACE_BYTES: usize = 64 * 1024;

/// Runs `work`, which handles about `bytes` bytes: in place below [`IN_PLACE_BYTES`],
/// otherwise on tokio's blocking pool (the caller's task waits without holding its
/// executor thread).
///
/// # Errors
/// [`Error::InvalidArgument`] if the work did not finish (it panicked, or the runtime
/// is shutting down).
pub(crate) async fn offload<T, F>(bytes: usize, work: F) -> Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if bytes < IN_PLACE_BYTES {
        return Ok(work());
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::InvalidArgument(format!("work off the executor did not finish: {e}")))
}
