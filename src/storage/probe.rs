use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::naming;
use crate::crypto::RandomSource;
use crate::error::Result;
use crate::ids::BlobId;

/// What a backend really does with conditional writes, as found by
/// [`probe_capabilities`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// `PutMode::Create` fails with `AlreadyExists` when the object exists.
    pub conditional_create: bool,
    /// `PutMode::Update` with a stale version fails with `Precondition`.
    pub conditional_update: bool,
}

/// Finds out, by trying, whether `store` honours conditional writes. Never assume it:
/// Garage 2.5 accepts `If-None-Match` and `If-Match` and ignores both.
///
/// Writes and then deletes two scratch objects under `_probe/`.
///
/// # Errors
/// A backend error other than the refusals being probed for.
pub async fn probe_capabilities(store: &dyn ObjectStore) -> Result<Capabilities> {
    let rng = RandomSource::os();
    let create_path = naming::probe_path(&BlobId::random(&rng));
    let create = PutOptions::from(PutMode::Create);
    store
        .put_opts(
            &create_path,
            PutPayload::from_static(b"first"),
            create.clone(),
        )
        .await?;
    let conditional_create = match store
        .put_opts(&create_path, PutPayload::from_static(b"second"), create)
        .await
    {
        Err(object_store::Error::AlreadyExists { .. }) => {
            // A backend that refuses must also have kept the first write.
            super::get_bounded(store, &create_path, 16).await?.as_ref() == b"first"
        }
        Ok(_) => false,
        Err(e) => {
            let _ = store.delete(&create_path).await;
            return Err(e.into());
        }
    };
    store.delete(&create_path).await?;

    let update_path = naming::probe_path(&BlobId::random(&rng));
    let first = store
        .put(&update_path, PutPayload::from_static(b"first"))
        .await?;
    store
        .put(&update_path, PutPayload::from_static(b"second"))
        .await?;
    let stale = PutMode::Update(UpdateVersion {
        e_tag: first.e_tag,
        version: first.version,
    });
    let conditional_update = match store
        .put_opts(
            &update_path,
            PutPayload::from_static(b"third"),
            stale.into(),
        )
        .await
    {
        Err(object_store::Error::Precondition { .. })
        | Err(object_store::Error::AlreadyExists { .. }) => {
            super::get_bounded(store, &update_path, 16).await?.as_ref() == b"second"
        }
        // Stale update accepted, or not implemented at all (LocalFileSystem).
        Ok(_)
        | Err(object_store::Error::NotImplemented { .. })
        | Err(object_store::Error::NotSupported { .. }) => false,
        Err(object_store::Error::Generic { .. }) => false,
        Err(e) => {
            let _ = store.delete(&update_path).await;
            return Err(e.into());
        }
    };
    store.delete(&update_path).await?;
    Ok(Capabilities {
        conditional_create,
        conditional_update,
    })
}
