//! Requests and bytes per operation, for tracing (issue 12, item 9).
//!
//! [`open_store`](super::open_store) wraps every store it opens in a [`MeteredStore`]. A
//! public mail operation runs its body in [`scope`]: every request the store sees from
//! the task that runs it (and from the streams and uploads started in it) is counted,
//! and the operation records the counts on its span (`requests`, `bytes_read`,
//! `bytes_written`). Scopes nest: an operation inside another counts in both. Outside a
//! scope the wrapper counts nothing and costs one task-local lookup per request.
//!
//! What is counted: one request per put, multipart start, part, completion and abort,
//! GET or HEAD, deleted object, listing, copy and rename; bytes written are the payloads
//! of puts and parts, bytes read the length of the ranges GETs return (counted when the
//! GET answers, also for a body streamed afterwards). A store built by hand is metered
//! once wrapped with [`MeteredStore::new`].

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};

use super::DynStore;

/// Requests and bytes an operation made the store serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Requests.
    pub requests: u64,
    /// Bytes the store returned (GET ranges).
    pub bytes_read: u64,
    /// Bytes sent to the store (put and part payloads).
    pub bytes_written: u64,
}

#[derive(Debug, Default)]
struct Meter {
    requests: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    parent: Option<Arc<Meter>>,
}

impl Meter {
    fn add(&self, read: u64, written: u64) {
        let mut meter = Some(self);
        while let Some(m) = meter {
            m.requests.fetch_add(1, Ordering::Relaxed);
            m.bytes_read.fetch_add(read, Ordering::Relaxed);
            m.bytes_written.fetch_add(written, Ordering::Relaxed);
            meter = m.parent.as_deref();
        }
    }

    fn usage(&self) -> Usage {
        Usage {
            requests: self.requests.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
        }
    }
}

tokio::task_local! {
    static METER: Arc<Meter>;
}

fn current() -> Option<Arc<Meter>> {
    METER.try_with(Arc::clone).ok()
}

/// Runs `body`, counting the requests a [`MeteredStore`] sees from it.
pub async fn scope<F: Future>(body: F) -> (F::Output, Usage) {
    let meter = Arc::new(Meter {
        parent: current(),
        ..Meter::default()
    });
    let out = METER.scope(meter.clone(), body).await;
    (out, meter.usage())
}

/// A decorator that counts requests and bytes into the [`scope`] of the task that makes
/// them (see the [module documentation](self)).
#[derive(Clone)]
pub struct MeteredStore {
    inner: DynStore,
}

impl MeteredStore {
    /// Meters `inner`.
    pub fn new(inner: DynStore) -> Self {
        Self { inner }
    }
}

decorator_fmt!(MeteredStore);

fn count(read: u64, written: u64) {
    if let Some(meter) = current() {
        meter.add(read, written);
    }
}

#[derive(Debug)]
struct MeteredUpload {
    inner: Box<dyn MultipartUpload>,
    meter: Option<Arc<Meter>>,
}

impl MeteredUpload {
    fn add(&self, written: u64) {
        if let Some(meter) = &self.meter {
            meter.add(0, written);
        }
    }
}

#[async_trait]
impl MultipartUpload for MeteredUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.add(data.content_length() as u64);
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.add(0);
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.add(0);
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for MeteredStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        count(0, payload.content_length() as u64);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        count(0, 0);
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(MeteredUpload {
            inner,
            meter: current(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let head = options.head;
        let result = self.inner.get_opts(location, options).await;
        let read = match (&result, head) {
            (Ok(r), false) => r.range.end - r.range.start,
            _ => 0,
        };
        count(read, 0);
        result
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let meter = current();
        let counted = locations
            .map(move |location| {
                if let (Ok(_), Some(meter)) = (&location, &meter) {
                    meter.add(0, 0);
                }
                location
            })
            .boxed();
        self.inner.delete_stream(counted)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        count(0, 0);
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        count(0, 0);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        count(0, 0);
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        count(0, 0);
        self.inner.rename_opts(from, to, options).await
    }
}
