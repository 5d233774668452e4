//! Shared by the index fuzz targets (included with `#[path]`, not a target itself): one
//! collection with one committed batch, made once per process on an in-memory store, and
//! a way to open that collection again after one of its stored objects was replaced.
//!
//! Everything is seeded (account key, ids, nonces), so the stored objects are the same in
//! every run and the seed corpus holds the real manifest and segment.

#![allow(dead_code)]

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use futures::TryStreamExt;
use mailvault::crypto::{AccountKey, RandomSource};
use mailvault::directory::MemoryDirectory;
use mailvault::ids::{AccountId, DeploymentId};
use mailvault::index::{Batch, Collection, IndexConfig, IndexStore};
use mailvault::storage::{open_store, CommitMode, DynStore};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// The name of the collection.
pub const COLLECTION: &[u8] = b"fuzz-collection";

/// The collection, committed once.
pub struct IndexFixture {
    pub runtime: tokio::runtime::Runtime,
    pub deployment: DeploymentId,
    pub account: AccountId,
    pub key: AccountKey,
    /// Every stored object of the collection, by path.
    pub objects: Vec<(Path, Bytes)>,
    /// Index in `objects` of the (only) manifest.
    pub manifest: usize,
    /// Index in `objects` of the (only) segment.
    pub segment: usize,
}

/// The batch committed: two values and a deletion.
pub fn batch() -> Batch {
    let mut batch = Batch::new();
    batch
        .put(&b"uid:1"[..], &b"\\Seen"[..])
        .put(&b"uid:2"[..], &b""[..])
        .delete(&b"uid:3"[..]);
    batch
}

pub static FIXTURE: LazyLock<IndexFixture> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    let deployment = DeploymentId::from_bytes(*b"fuzz-deployment!");
    let account = AccountId::from_bytes(*b"fuzz-account-id!");
    let key = AccountKey::generate(1, &RandomSource::seeded(7));
    let objects = runtime.block_on(async {
        let store = open_store("memory://").expect("an in-memory store");
        let index = IndexStore::with_mode(
            store.clone(),
            deployment,
            Arc::new(MemoryDirectory::new()),
            CommitMode::CompareAndSwap,
        )
        .with_rng(RandomSource::seeded(8));
        let mut collection = index
            .open(account, &key, COLLECTION)
            .await
            .expect("creating the collection");
        collection
            .commit(batch())
            .await
            .expect("committing a batch");
        let metas: Vec<_> = store
            .list(None)
            .try_collect()
            .await
            .expect("listing the store");
        let mut objects = Vec::new();
        for meta in metas {
            let bytes = store
                .get(&meta.location)
                .await
                .expect("reading an object")
                .bytes()
                .await
                .expect("reading an object");
            objects.push((meta.location, bytes));
        }
        objects.sort_by(|a, b| a.0.cmp(&b.0));
        objects
    });
    let find = |part: &str| {
        let found: Vec<usize> = (0..objects.len())
            .filter(|&i| objects[i].0.as_ref().contains(part))
            .collect();
        assert_eq!(found.len(), 1, "one object under {part}: {objects:?}");
        found[0]
    };
    let manifest = find("/m/");
    let segment = find("/s/");
    IndexFixture {
        runtime,
        deployment,
        account,
        key,
        objects,
        manifest,
        segment,
    }
});

impl IndexFixture {
    /// The stored manifest.
    pub fn manifest_bytes(&self) -> &Bytes {
        &self.objects[self.manifest].1
    }

    /// The stored segment.
    pub fn segment_bytes(&self) -> &Bytes {
        &self.objects[self.segment].1
    }

    /// Opens the collection from a fresh in-memory store (and a fresh directory) holding
    /// the committed objects, object `replaced` having `data` instead.
    pub fn open_replaced(&self, replaced: usize, data: &[u8]) -> mailvault::Result<Collection> {
        self.open_replaced_with(replaced, data, IndexConfig::default())
    }

    /// [`open_replaced`](Self::open_replaced) with the index tuned by `config` (a small
    /// `fetch_piece` reads every segment by ranges).
    pub fn open_replaced_with(
        &self,
        replaced: usize,
        data: &[u8],
        config: IndexConfig,
    ) -> mailvault::Result<Collection> {
        self.runtime.block_on(async {
            let store: DynStore = open_store("memory://")?;
            for (i, (path, bytes)) in self.objects.iter().enumerate() {
                let payload = if i == replaced {
                    PutPayload::from(data.to_vec())
                } else {
                    PutPayload::from(bytes.clone())
                };
                store.put(path, payload).await?;
            }
            let index = IndexStore::with_mode(
                store,
                self.deployment,
                Arc::new(MemoryDirectory::new()),
                CommitMode::CompareAndSwap,
            )
            .with_rng(RandomSource::seeded(9))
            .with_config(config);
            index.open(self.account, &self.key, COLLECTION).await
        })
    }

    /// Checks a collection that opened: it must hold exactly the committed batch.
    pub fn check_opened(&self, collection: &Collection) {
        assert_eq!(collection.generation(), 1);
        assert_eq!(collection.len(), 2);
        assert_eq!(collection.get(b"uid:1"), Some(&b"\\Seen"[..]));
        assert_eq!(collection.get(b"uid:2"), Some(&b""[..]));
        assert_eq!(collection.get(b"uid:3"), None);
    }
}
