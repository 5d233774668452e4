use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// How the chosen operation of a [`FaultyStore`] goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultMode {
    /// The operation fails without effect; later operations succeed (a transient error).
    Fail,
    /// The operation and every later one fail without effect: the process died just
    /// before sending it.
    Crash,
    /// The operation takes effect but reports failure (the response was lost): a retry
    /// meets its own write.
    ApplyAndFail,
    /// The first multipart part upload at or after the chosen operation is written, then
    /// the upload is abandoned (never completed nor aborted) and every later operation
    /// fails: a crash in the middle of a multipart upload.
    TearMultipart,
}

/// Which operation fails, and how. Operations are numbered from 0 in the order they
/// reach the store; every call counts (puts, gets, lists, deletes, multipart starts,
/// parts, completions and aborts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fault {
    /// Number of the operation that fails.
    pub at: u64,
    /// How it fails.
    pub mode: FaultMode,
}

#[derive(Debug)]
struct State {
    ops: AtomicU64,
    fault: Option<Fault>,
    dead: AtomicBool,
    fired: AtomicBool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Refuse,
    ApplyThenFail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpClass {
    Plain,
    Part,
}

impl State {
    fn next(&self, class: OpClass) -> Verdict {
        let n = self.ops.fetch_add(1, Ordering::SeqCst);
        if self.dead.load(Ordering::SeqCst) {
            return Verdict::Refuse;
        }
        let Some(fault) = self.fault else {
            return Verdict::Pass;
        };
        if n < fault.at || self.fired.load(Ordering::SeqCst) {
            return Verdict::Pass;
        }
        match fault.mode {
            FaultMode::TearMultipart if class != OpClass::Part => Verdict::Pass,
            FaultMode::TearMultipart => {
                self.fired.store(true, Ordering::SeqCst);
                self.dead.store(true, Ordering::SeqCst);
                Verdict::ApplyThenFail
            }
            FaultMode::Fail => {
                self.fired.store(true, Ordering::SeqCst);
                Verdict::Refuse
            }
            FaultMode::Crash => {
                self.fired.store(true, Ordering::SeqCst);
                self.dead.store(true, Ordering::SeqCst);
                Verdict::Refuse
            }
            FaultMode::ApplyAndFail => {
                self.fired.store(true, Ordering::SeqCst);
                Verdict::ApplyThenFail
            }
        }
    }
}

fn injected(what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultyStore",
        source: format!("injected fault in {what}").into(),
    }
}

/// A decorator that makes one chosen operation fail in one of the ways of [`FaultMode`].
///
/// Run a workload once without a fault to learn its number of operations
/// ([`ops`](Self::ops)), then once per operation number and mode.
#[derive(Clone)]
pub struct FaultyStore {
    inner: DynStore,
    state: Arc<State>,
}

impl FaultyStore {
    /// Wraps `inner`; `fault` chooses what goes wrong (`None`: nothing, only counting).
    pub fn new(inner: DynStore, fault: Option<Fault>) -> Self {
        Self {
            inner,
            state: Arc::new(State {
                ops: AtomicU64::new(0),
                fault,
                dead: AtomicBool::new(false),
                fired: AtomicBool::new(false),
            }),
        }
    }

    /// Operations seen so far.
    pub fn ops(&self) -> u64 {
        self.state.ops.load(Ordering::SeqCst)
    }

    /// Whether the fault has happened.
    pub fn fired(&self) -> bool {
        self.state.fired.load(Ordering::SeqCst)
    }

    /// The store underneath, to look at what really got written.
    pub fn inner(&self) -> &DynStore {
        &self.inner
    }
}

decorator_fmt!(FaultyStore);

/// Runs `op` under the verdict of the next operation number.
async fn guarded<T, F>(state: &State, class: OpClass, what: &str, op: F) -> object_store::Result<T>
where
    F: std::future::Future<Output = object_store::Result<T>>,
{
    match state.next(class) {
        Verdict::Pass => op.await,
        Verdict::Refuse => Err(injected(what)),
        Verdict::ApplyThenFail => {
            op.await?;
            Err(injected(what))
        }
    }
}

#[derive(Debug)]
struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    state: Arc<State>,
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let verdict = self.state.next(OpClass::Part);
        let part = self.inner.put_part(data);
        Box::pin(async move {
            match verdict {
                Verdict::Pass => part.await,
                Verdict::Refuse => Err(injected("put_part")),
                Verdict::ApplyThenFail => {
                    part.await?;
                    Err(injected("put_part"))
                }
            }
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let state = Arc::clone(&self.state);
        guarded(&state, OpClass::Plain, "complete", self.inner.complete()).await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        let state = Arc::clone(&self.state);
        guarded(&state, OpClass::Plain, "abort", self.inner.abort()).await
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        guarded(
            &self.state,
            OpClass::Plain,
            "put",
            self.inner.put_opts(location, payload, opts),
        )
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let inner = guarded(
            &self.state,
            OpClass::Plain,
            "put_multipart",
            self.inner.put_multipart_opts(location, opts),
        )
        .await?;
        Ok(Box::new(FaultyUpload {
            inner,
            state: Arc::clone(&self.state),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        guarded(
            &self.state,
            OpClass::Plain,
            "get",
            self.inner.get_opts(location, options),
        )
        .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let state = Arc::clone(&self.state);
        let inner = Arc::clone(&self.inner);
        locations
            .then(move |location| {
                let state = Arc::clone(&state);
                let inner = Arc::clone(&inner);
                async move {
                    let path = location?;
                    let one = futures::stream::once(futures::future::ready(Ok(path))).boxed();
                    guarded(&state, OpClass::Plain, "delete", async move {
                        inner
                            .delete_stream(one)
                            .next()
                            .await
                            .unwrap_or_else(|| Err(injected("delete: empty response")))
                    })
                    .await
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match self.state.next(OpClass::Plain) {
            Verdict::Pass => self.inner.list(prefix),
            Verdict::Refuse | Verdict::ApplyThenFail => {
                futures::stream::once(futures::future::ready(Err(injected("list")))).boxed()
            }
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        guarded(
            &self.state,
            OpClass::Plain,
            "list",
            self.inner.list_with_delimiter(prefix),
        )
        .await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        guarded(
            &self.state,
            OpClass::Plain,
            "copy",
            self.inner.copy_opts(from, to, options),
        )
        .await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        guarded(
            &self.state,
            OpClass::Plain,
            "rename",
            self.inner.rename_opts(from, to, options),
        )
        .await
    }
}
