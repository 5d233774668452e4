use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};

use super::DynStore;

/// The kind of one backend request seen by a [`CountingStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequestKind {
    /// A single-request put.
    Put,
    /// The start of a multipart upload.
    MultipartStart,
    /// One part of a multipart upload.
    MultipartPart,
    /// The completion of a multipart upload.
    MultipartComplete,
    /// The abort of a multipart upload.
    MultipartAbort,
    /// A GET of a whole object or a range of it.
    Get,
    /// A metadata-only request.
    Head,
    /// One deleted object.
    Delete,
    /// A listing.
    List,
    /// A server-side copy.
    Copy,
    /// A rename.
    Rename,
}

/// One backend request seen by a [`CountingStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What kind of request.
    pub kind: RequestKind,
    /// The object (or prefix) it addressed.
    pub path: String,
    /// Payload bytes sent (puts, parts) or returned (gets).
    pub bytes: u64,
    /// For a GET, the byte range requested (`None` for a whole object).
    pub range: Option<Range<u64>>,
}

/// A decorator that records every request and its size: what an operation costs in
/// requests and bytes, and which object names it wrote.
#[derive(Clone)]
pub struct CountingStore {
    inner: DynStore,
    log: Arc<Mutex<Vec<Request>>>,
}

impl CountingStore {
    /// Wraps `inner`.
    pub fn new(inner: DynStore) -> Self {
        Self {
            inner,
            log: Arc::default(),
        }
    }

    /// Every request recorded since creation or the last [`reset`](Self::reset).
    pub fn requests(&self) -> Vec<Request> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets the recorded requests.
    pub fn reset(&self) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Number of recorded requests of `kind`.
    pub fn count(&self, kind: RequestKind) -> usize {
        self.requests().iter().filter(|r| r.kind == kind).count()
    }

    /// Payload bytes written by puts and parts.
    pub fn bytes_written(&self) -> u64 {
        self.requests()
            .iter()
            .filter(|r| matches!(r.kind, RequestKind::Put | RequestKind::MultipartPart))
            .map(|r| r.bytes)
            .sum()
    }

    /// Names of the objects written (puts and completed multipart uploads), in order.
    pub fn names_written(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| matches!(r.kind, RequestKind::Put | RequestKind::MultipartComplete))
            .map(|r| r.path)
            .collect()
    }

    fn record(&self, kind: RequestKind, path: &Path, bytes: u64, range: Option<Range<u64>>) {
        Self::push(&self.log, kind, path.to_string(), bytes, range);
    }

    fn push(
        log: &Mutex<Vec<Request>>,
        kind: RequestKind,
        path: String,
        bytes: u64,
        range: Option<Range<u64>>,
    ) {
        log.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Request {
                kind,
                path,
                bytes,
                range,
            });
    }
}

decorator_fmt!(CountingStore);

#[derive(Debug)]
struct CountingUpload {
    inner: Box<dyn MultipartUpload>,
    path: String,
    log: Arc<Mutex<Vec<Request>>>,
}

#[async_trait]
impl MultipartUpload for CountingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        CountingStore::push(
            &self.log,
            RequestKind::MultipartPart,
            self.path.clone(),
            data.content_length() as u64,
            None,
        );
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        CountingStore::push(
            &self.log,
            RequestKind::MultipartComplete,
            self.path.clone(),
            0,
            None,
        );
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        CountingStore::push(
            &self.log,
            RequestKind::MultipartAbort,
            self.path.clone(),
            0,
            None,
        );
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.record(
            RequestKind::Put,
            location,
            payload.content_length() as u64,
            None,
        );
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.record(RequestKind::MultipartStart, location, 0, None);
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(CountingUpload {
            inner,
            path: location.to_string(),
            log: Arc::clone(&self.log),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let head = options.head;
        let requested = options.range.clone();
        let result = self.inner.get_opts(location, options).await;
        let bytes = match (&result, head) {
            (Ok(r), false) => r.range.end - r.range.start,
            _ => 0,
        };
        let range = requested.map(|_| match &result {
            Ok(r) => r.range.clone(),
            Err(_) => 0..0,
        });
        let kind = if head {
            RequestKind::Head
        } else {
            RequestKind::Get
        };
        self.record(kind, location, bytes, range);
        result
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let log = Arc::clone(&self.log);
        let recorded = locations
            .map(move |location| {
                if let Ok(path) = &location {
                    CountingStore::push(&log, RequestKind::Delete, path.to_string(), 0, None);
                }
                location
            })
            .boxed();
        self.inner.delete_stream(recorded)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.record(
            RequestKind::List,
            prefix.unwrap_or(&Path::default()),
            0,
            None,
        );
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.record(
            RequestKind::List,
            prefix.unwrap_or(&Path::default()),
            0,
            None,
        );
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.record(RequestKind::Copy, to, 0, None);
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.record(RequestKind::Rename, to, 0, None);
        self.inner.rename_opts(from, to, options).await
    }
}
