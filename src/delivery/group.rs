//! Group commit of a deliverer's directory writes: the deliveries to one account that
//! are in flight at once share one durable write of its delivery counter (and one of its
//! delivered bytes) instead of taking turns for one write each.
//!
//! A [`CounterBatches`] raises per-account counters. The first request for an account
//! starts a writer task; requests that arrive while its write is under way wait and are
//! raised together by the next write, which adds all their amounts at once. Each request
//! gets the value its own raise gives in the order the batch took them, once the write
//! carrying it returned: so a delivery number is used (signed into an envelope) only
//! after the counter that issued it is durable, as with one write per delivery. The
//! writer task is spawned, not run by the first caller, so that a caller that gives up
//! (a dropped LMTP connection) leaves no one else waiting.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::ids::AccountId;

/// One durable raise of an account's counter by an amount: returns the counter's new
/// value.
pub(super) type Raise =
    Arc<dyn Fn(AccountId, u64) -> Pin<Box<dyn Future<Output = Result<u64>> + Send>> + Send + Sync>;

/// Requests waiting for the next write of one account's counter: (amount, where its value
/// goes).
type Waiting = Vec<(u64, oneshot::Sender<Result<u64>>)>;

/// Per-account counters raised in groups (see the module documentation).
pub(super) struct CounterBatches {
    raise: Raise,
    /// The accounts whose writer task runs, with the requests that arrived since its
    /// current write began. No entry: no task.
    waiting: Mutex<HashMap<AccountId, Waiting>>,
}

impl std::fmt::Debug for CounterBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CounterBatches").finish_non_exhaustive()
    }
}

impl CounterBatches {
    /// Counters raised by `raise`.
    pub(super) fn new(raise: Raise) -> Arc<Self> {
        Arc::new(Self {
            raise,
            waiting: Mutex::new(HashMap::new()),
        })
    }

    /// Raises `account`'s counter by `amount`, in one write with the other requests for
    /// it waiting meanwhile; returns the counter's value after this request's raise (its
    /// last delivery number, for the delivery counter).
    ///
    /// # Errors
    /// The write's error (each request of a failed write gets it): the raise may or may
    /// not have happened.
    pub(super) async fn raise(self: &Arc<Self>, account: AccountId, amount: u64) -> Result<u64> {
        let (sender, receiver) = oneshot::channel();
        let start = {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            match waiting.entry(account) {
                Entry::Occupied(mut queue) => {
                    queue.get_mut().push((amount, sender));
                    None
                }
                Entry::Vacant(slot) => {
                    slot.insert(Vec::new());
                    Some(sender)
                }
            }
        };
        if let Some(sender) = start {
            let batches = Arc::clone(self);
            tokio::spawn(async move { batches.write_all(account, vec![(amount, sender)]).await });
        }
        receiver
            .await
            .map_err(|_| Error::Config("the directory writer task stopped".into()))?
    }

    /// The writer task of `account`: writes `batch`, then whatever arrived meanwhile,
    /// until nothing waits.
    async fn write_all(&self, account: AccountId, mut batch: Waiting) {
        // A task that ends otherwise than below (the write panicked, the runtime shut
        // down) drops its queue: the requests in it fail instead of waiting forever, and
        // the next request starts a new writer.
        let mut release = Release {
            waiting: &self.waiting,
            account,
            armed: true,
        };
        loop {
            let total = batch.iter().map(|(amount, _)| *amount).sum::<u64>();
            let written = (self.raise)(account, total).await;
            match written {
                Ok(last) => {
                    // In the batch's order: the first request's raise comes first.
                    let mut value = last.saturating_sub(total);
                    for (amount, sender) in batch {
                        value = value.saturating_add(amount);
                        let _ = sender.send(Ok(value));
                    }
                }
                Err(e) => {
                    for (_, sender) in batch {
                        let _ = sender.send(Err(echo(&e)));
                    }
                }
            }
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            let next = waiting.get_mut(&account).map(std::mem::take);
            match next {
                Some(next) if !next.is_empty() => batch = next,
                _ => {
                    waiting.remove(&account);
                    release.armed = false;
                    return;
                }
            }
        }
    }
}

/// Removes an account's queue when its writer task ends abnormally (see
/// [`CounterBatches::write_all`]).
struct Release<'a> {
    waiting: &'a Mutex<HashMap<AccountId, Waiting>>,
    account: AccountId,
    armed: bool,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&self.account);
        }
    }
}

/// A copy of a directory error for each request of a failed write: the same variant for
/// those a directory returns, so that a caller tells a transient failure from another.
fn echo(e: &Error) -> Error {
    match e {
        Error::Config(reason) => Error::Config(reason.clone()),
        Error::InvalidArgument(reason) => Error::InvalidArgument(reason.clone()),
        Error::Conflict { path } => Error::Conflict { path: path.clone() },
        Error::NotFound { path } => Error::NotFound { path: path.clone() },
        Error::Tampered => Error::Tampered,
        Error::Moved => Error::Moved,
        other => Error::Backend {
            source: object_store::Error::Generic {
                store: "directory",
                source: other.to_string().into(),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;

    /// A counter in memory whose writes take a while and are counted.
    fn slow_counter(writes: Arc<AtomicU64>, value: Arc<AtomicU64>) -> Raise {
        Arc::new(move |_account, amount| {
            let (writes, value) = (Arc::clone(&writes), Arc::clone(&value));
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                writes.fetch_add(1, Ordering::SeqCst);
                Ok(value.fetch_add(amount, Ordering::SeqCst) + amount)
            })
        })
    }

    /// A write that panics (a directory's bug) fails the requests it carried and those
    /// queued behind it, and a later request starts a new writer: none waits forever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_that_panics_leaves_no_one_waiting() {
        let calls = Arc::new(AtomicU64::new(0));
        let raise: Raise = {
            let calls = Arc::clone(&calls);
            Arc::new(move |_account, amount| {
                let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    assert!(!first, "the directory's bug");
                    Ok(amount)
                })
            })
        };
        let batches = CounterBatches::new(raise);
        let account = AccountId::from_bytes([3; 16]);
        let first = tokio::spawn({
            let batches = Arc::clone(&batches);
            async move { batches.raise(account, 1).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let queued = tokio::spawn({
            let batches = Arc::clone(&batches);
            async move { batches.raise(account, 1).await }
        });
        let limit = Duration::from_secs(5);
        for task in [first, queued] {
            let answer = tokio::time::timeout(limit, task).await.expect("answered");
            assert!(answer.expect("task").is_err());
        }
        let later = tokio::time::timeout(limit, batches.raise(account, 2)).await;
        assert_eq!(later.expect("answered").expect("raise"), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_raises_share_writes_and_get_distinct_values() {
        let (writes, value) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let batches = CounterBatches::new(slow_counter(writes.clone(), value.clone()));
        let account = AccountId::from_bytes([1; 16]);
        let raises = (0..50).map(|_| {
            let batches = Arc::clone(&batches);
            tokio::spawn(async move { batches.raise(account, 1).await })
        });
        let mut numbers: Vec<u64> = futures::future::join_all(raises)
            .await
            .into_iter()
            .map(|joined| joined.expect("task").expect("raise"))
            .collect();
        numbers.sort_unstable();
        // Every number from 1 to 50 exactly once, and fewer writes than requests.
        assert_eq!(numbers, (1..=50).collect::<Vec<_>>());
        assert_eq!(value.load(Ordering::SeqCst), 50);
        let writes = writes.load(Ordering::SeqCst);
        assert!(writes < 50 / 2, "{writes} writes for 50 concurrent raises");
        // Nothing left waiting: a later raise starts a new writer.
        assert_eq!(batches.raise(account, 3).await.expect("raise"), 53);
    }

    #[tokio::test]
    async fn each_request_of_a_failed_write_gets_the_error() {
        let raise: Raise = Arc::new(|_account, _amount| {
            Box::pin(async { Err(Error::Config("directory down".into())) })
        });
        let batches = CounterBatches::new(raise);
        let account = AccountId::from_bytes([2; 16]);
        let (a, b) = tokio::join!(batches.raise(account, 1), batches.raise(account, 1));
        for outcome in [a, b] {
            assert!(
                matches!(&outcome, Err(Error::Config(reason)) if reason == "directory down"),
                "{outcome:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_leaves_the_others_served() {
        let (writes, value) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let batches = CounterBatches::new(slow_counter(writes, value.clone()));
        let account = AccountId::from_bytes([3; 16]);
        // The first caller (whose request started the writer) is dropped mid-write.
        let first = tokio::time::timeout(Duration::from_millis(5), batches.raise(account, 1));
        assert!(first.await.is_err(), "the write takes 20 ms");
        let second = batches.raise(account, 1).await.expect("raise");
        assert_eq!(second, 2, "the dropped caller's raise was still written");
        assert_eq!(value.load(Ordering::SeqCst), 2);
    }
}
