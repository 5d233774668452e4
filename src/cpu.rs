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

/// Whether work on `bytes` bytes may spread over rayon's pool: only work that
/// [`offload`] sends off the executor. Smaller work runs in place, possibly on an
/// executor thread, and must not wait for that pool, which other accounts' large work
/// (or a neighbour's parallel loop) may keep busy for a long time.
pub(crate) fn parallel(bytes: usize) -> bool {
    bytes >= IN_PLACE_BYTES
}

/// Runs `work`, which handles about `bytes` bytes: in place below [`IN_PLACE_BYTES`],
/// otherwise on tokio's blocking pool (the caller's task waits without holding its
/// executor thread).
///
/// A panic of `work` is the caller's, as it would be in place.
///
/// # Errors
/// [`Error::InvalidArgument`] if the work was cancelled (the runtime is shutting down).
pub(crate) async fn offload<T, F>(bytes: usize, work: F) -> Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if bytes < IN_PLACE_BYTES {
        return Ok(work());
    }
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => Ok(done),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Error::InvalidArgument(format!(
            "work off the executor did not finish: {e}"
        ))),
    }
}

/// Drops `value`, which holds about `bytes` bytes in many allocations (a view of a
/// large collection): below [`IN_PLACE_BYTES`] in place, otherwise on tokio's blocking
/// pool, without waiting (freeing a hundred thousand records takes tens of
/// milliseconds). In place outside a runtime.
pub(crate) fn drop_off<T: Send + 'static>(value: T, bytes: usize) {
    if bytes < IN_PLACE_BYTES {
        return;
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn_blocking(move || drop(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic on the blocking pool reaches the caller's task as the panic it is (not
    /// as an error that looks like a bad argument), as it would in place.
    #[tokio::test]
    async fn a_panic_off_the_executor_is_the_callers() {
        for bytes in [0, IN_PLACE_BYTES] {
            let task = tokio::spawn(offload(bytes, || -> u8 { panic!("boom") }));
            let e = task.await.expect_err("the task panicked");
            assert!(e.is_panic(), "{bytes}: {e}");
            let payload = e.into_panic();
            assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"), "{bytes}");
        }
        assert_eq!(offload(IN_PLACE_BYTES, || 7).await.unwrap(), 7);
    }
}
