use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use tokio::sync::{Notify, Semaphore};

use super::DynStore;

/// Which request a [`Gate`] holds back, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// A PUT waits before it reaches the store: a writer stalled before that write.
    Put,
    /// A GET waits before it reaches the store: a reader stalled before that read.
    Get,
    /// A GET reaches the store at once (it gets the object as it is then) and its bytes
    /// flow only once released: a long read racing whatever happens meanwhile.
    GetBody,
    /// A DELETE waits before it reaches the store: a deleter stalled before that delete
    /// (and every later one of the same batch).
    Delete,
}

/// Holds back the first request of one kind whose path contains a given part, until the
/// test releases it. Armed once; a hit disarms it.
#[derive(Debug)]
pub struct Gate {
    armed: Mutex<Option<(Hold, String)>>,
    reached: Notify,
    release: Semaphore,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            armed: Mutex::new(None),
            reached: Notify::new(),
            release: Semaphore::new(0),
        }
    }
}

impl Gate {
    /// Holds the next request of kind `hold` whose path contains `part`.
    pub fn arm(&self, hold: Hold, part: impl Into<String>) {
        *self.armed.lock().unwrap_or_else(PoisonError::into_inner) = Some((hold, part.into()));
    }

    /// Returns once the armed request was made (at once if it already was).
    pub async fn reached(&self) {
        self.reached.notified().await;
    }

    /// Lets the held request go on.
    pub fn open(&self) {
        self.release.add_permits(1);
    }

    /// Whether `path` is the armed request of kind `hold`; a hit disarms the gate and
    /// signals [`reached`](Self::reached).
    fn hit(&self, hold: Hold, path: &Path) -> bool {
        let mut armed = self.armed.lock().unwrap_or_else(PoisonError::into_inner);
        match &*armed {
            Some((h, part)) if *h == hold && path.as_ref().contains(part.as_str()) => {
                *armed = None;
                drop(armed);
                self.reached.notify_one();
                true
            }
            _ => false,
        }
    }

    async fn wait(&self) {
        // The semaphore is never closed, so acquiring cannot fail.
        if let Ok(permit) = self.release.acquire().await {
            permit.forget();
        }
    }
}

/// A decorator that stalls one request at a point the test chooses (see [`Gate`]), to
/// run a race deterministically: a reader between its manifest and its segments, a
/// writer between its segment and its manifest, a body read racing a rewrite.
/// [`keeping_deleted`](Self::keeping_deleted) also makes it a hostile store that
/// acknowledges deletes and keeps the objects, to offer them later.
#[derive(Clone)]
pub struct GateStore {
    inner: DynStore,
    gate: Arc<Gate>,
    keep_deleted: bool,
}

decorator_fmt!(GateStore);

impl GateStore {
    /// Wraps `inner`, with a gate not armed yet.
    pub fn new(inner: DynStore) -> Self {
        Self {
            inner,
            gate: Arc::default(),
            keep_deleted: false,
        }
    }

    /// Deletes are acknowledged and not applied: what a writer deletes (after losing a
    /// race, say) stays in the store.
    pub fn keeping_deleted(mut self) -> Self {
        self.keep_deleted = true;
        self
    }

    /// The gate, to arm, await and open.
    pub fn gate(&self) -> Arc<Gate> {
        self.gate.clone()
    }
}

#[async_trait]
impl ObjectStore for GateStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if self.gate.hit(Hold::Put, location) {
            self.gate.wait().await;
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if self.gate.hit(Hold::Get, location) {
            self.gate.wait().await;
        }
        let mut result = self.inner.get_opts(location, options).await?;
        if self.gate.hit(Hold::GetBody, location) {
            if let GetResultPayload::Stream(bytes) = std::mem::replace(
                &mut result.payload,
                GetResultPayload::Stream(futures::stream::empty().boxed()),
            ) {
                let gate = self.gate.clone();
                let held = futures::stream::once(async move {
                    gate.wait().await;
                    futures::stream::empty()
                })
                .flatten()
                .chain(bytes);
                result.payload = GetResultPayload::Stream(held.boxed());
            }
        }
        Ok(result)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let gate = self.gate.clone();
        let held = locations.then(move |location| {
            let gate = gate.clone();
            async move {
                if let Ok(path) = &location {
                    if gate.hit(Hold::Delete, path) {
                        gate.wait().await;
                    }
                }
                location
            }
        });
        if self.keep_deleted {
            return held.boxed();
        }
        self.inner.delete_stream(held.boxed())
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}
