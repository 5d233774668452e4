use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

use super::{naming, DynStore};
use crate::ids::AccountId;

/// A store confined to one account: every request whose path is outside
/// `a/<account hex>/` is refused (`object_store::Error::PermissionDenied`, which the crate
/// reports as [`Error::Backend`](crate::Error::Backend)) without reaching the inner store.
/// A companion on a user's device opens its account through one
/// ([`Companion::open`](crate::engine::Companion::open) wraps what it is given), so that
/// nothing it runs reads or writes another account's objects or the bucket's own scratch
/// space (no capability probe).
#[derive(Clone)]
pub struct AccountScopedStore {
    inner: DynStore,
    prefix: Path,
}

impl AccountScopedStore {
    /// Confines `inner` to `account`'s objects.
    pub fn new(inner: DynStore, account: &AccountId) -> Self {
        Self {
            inner,
            prefix: naming::account_prefix(account),
        }
    }

    /// Whether `location` is one of the account's objects.
    fn within(&self, location: &Path) -> bool {
        location.prefix_matches(&self.prefix)
    }

    fn check(&self, location: &Path) -> object_store::Result<()> {
        if self.within(location) {
            Ok(())
        } else {
            Err(refused(location))
        }
    }

    /// A listing prefix must lie within the account (a listing of the whole bucket is
    /// refused).
    fn check_prefix(&self, prefix: Option<&Path>) -> object_store::Result<()> {
        match prefix {
            Some(prefix) => self.check(prefix),
            None => Err(refused(&Path::default())),
        }
    }
}

fn refused(location: &Path) -> object_store::Error {
    object_store::Error::PermissionDenied {
        path: location.to_string(),
        source: "outside the account this store is scoped to".into(),
    }
}

decorator_fmt!(AccountScopedStore);

#[async_trait]
impl ObjectStore for AccountScopedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.check(location)?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.check(location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.check(location)?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let prefix = self.prefix.clone();
        let checked = locations
            .map(move |location| {
                let location = location?;
                if location.prefix_matches(&prefix) {
                    Ok(location)
                } else {
                    Err(refused(&location))
                }
            })
            .boxed();
        self.inner.delete_stream(checked)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match self.check_prefix(prefix) {
            Ok(()) => self.inner.list(prefix),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        }
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match self.check_prefix(prefix) {
            Ok(()) => self.inner.list_with_offset(prefix, offset),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.check_prefix(prefix)?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.check(from)?;
        self.check(to)?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.check(from)?;
        self.check(to)?;
        self.inner.rename_opts(from, to, options).await
    }
}
