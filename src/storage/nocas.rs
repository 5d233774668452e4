use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyMode, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
    RenameTargetMode,
};

use super::DynStore;

/// A decorator that ignores write conditions, as Garage 2.5 does: `PutMode::Create` and
/// `PutMode::Update` overwrite, and `CopyMode::Create` copies over an existing object.
/// With it, plain `cargo test` exercises the path for backends without compare-and-swap.
#[derive(Clone)]
pub struct NoCasStore {
    inner: DynStore,
}

impl NoCasStore {
    /// Wraps `inner`.
    pub fn new(inner: DynStore) -> Self {
        Self { inner }
    }
}

decorator_fmt!(NoCasStore);

#[async_trait]
impl ObjectStore for NoCasStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        mut opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        opts.mode = PutMode::Overwrite;
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
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
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
        mut options: CopyOptions,
    ) -> object_store::Result<()> {
        options.mode = CopyMode::Overwrite;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        mut options: RenameOptions,
    ) -> object_store::Result<()> {
        options.target_mode = RenameTargetMode::Overwrite;
        self.inner.rename_opts(from, to, options).await
    }
}
