//! The storage side of the one commit protocol: index manifests, and the writer-unique
//! names of keyrings (which commit through the trusted directory: `keys::keyring`; so do
//! index manifests without compare-and-swap: `index`).
//!
//! A versioned record is a series of immutable objects, one per generation, under one
//! prefix. How a new generation is published depends on what the backend really does
//! ([`probe_capabilities`](super::probe_capabilities)):
//!
//! - [`CommitMode::CompareAndSwap`]: generation N+1 is created at `<prefix>/<N+1>` with
//!   `PutMode::Create`; exactly one writer wins, the others reload and retry. A reader
//!   finds the newest generation by probing N+1 directly (no listing).
//! - [`CommitMode::WriterUnique`] (Garage 2.5, [`NoCasStore`](super::NoCasStore)): each
//!   writer publishes at `<prefix>/<N+1>-<writer id>`, so no write can overwrite another.
//!   The commit point is then the trusted directory's compare-and-set of the record's
//!   mark, which names the one accepted version by its digest.

use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::{get_bounded, Capabilities, DynStore};
use crate::crypto::RandomSource;
use crate::error::{Error, Result};
use crate::ids::WriterId;

/// How new generations of versioned records are published on a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommitMode {
    /// The backend honours `PutMode::Create`: one name per generation.
    CompareAndSwap,
    /// The backend ignores conditions: one name per generation and writer.
    WriterUnique,
}

impl CommitMode {
    /// The mode that is safe on a backend with `capabilities`.
    pub fn for_capabilities(capabilities: Capabilities) -> Self {
        if capabilities.conditional_create {
            CommitMode::CompareAndSwap
        } else {
            CommitMode::WriterUnique
        }
    }
}

/// The name of one published version: its generation, and its writer in
/// [`CommitMode::WriterUnique`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VersionName {
    /// Generation.
    pub generation: u64,
    /// Writer, for writer-unique names.
    pub writer: Option<WriterId>,
}

impl VersionName {
    fn file_name(&self) -> String {
        match self.writer {
            None => format!("{:016x}", self.generation),
            Some(w) => format!("{:016x}-{}", self.generation, w.to_hex()),
        }
    }

    /// Parses `<16 hex>` or `<16 hex>-<32 hex>`; `None` for anything else.
    pub fn parse(file_name: &str) -> Option<Self> {
        let (generation, writer) = match file_name.split_once('-') {
            Some((g, w)) => (g, Some(WriterId::from_hex(w).ok()?)),
            None => (file_name, None),
        };
        if generation.len() != 16 {
            return None;
        }
        Some(Self {
            generation: u64::from_str_radix(generation, 16).ok()?,
            writer,
        })
    }
}

/// Outcome of [`VersionedObjects::publish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The version is durable under its name.
    Done,
    /// Another writer holds that generation (compare-and-swap lost).
    Conflict,
}

/// The largest version [`VersionedObjects::fetch`] reads unless
/// [`VersionedObjects::with_max_len`] sets the bound of the record's own format.
pub const DEFAULT_MAX_VERSION_LEN: u64 = 16 << 20;

/// The versions of one record under one prefix, written by one writer.
#[derive(Debug, Clone)]
pub struct VersionedObjects {
    store: DynStore,
    prefix: Path,
    mode: CommitMode,
    writer: WriterId,
    max_len: u64,
}

impl VersionedObjects {
    /// The versions under `prefix`, published by `writer` in `mode`.
    pub fn new(store: DynStore, prefix: Path, mode: CommitMode, writer: WriterId) -> Self {
        Self {
            store,
            prefix,
            mode,
            writer,
            max_len: DEFAULT_MAX_VERSION_LEN,
        }
    }

    /// Reads no version larger than `max_len` bytes (the largest valid object of the
    /// record's format): a larger one is refused before its bytes are read.
    pub fn with_max_len(mut self, max_len: u64) -> Self {
        self.max_len = max_len;
        self
    }

    /// The commit mode.
    pub fn mode(&self) -> CommitMode {
        self.mode
    }

    /// The name this writer publishes `generation` under.
    pub fn own_name(&self, generation: u64) -> VersionName {
        VersionName {
            generation,
            writer: (self.mode == CommitMode::WriterUnique).then_some(self.writer),
        }
    }

    /// The object path of a version.
    pub fn path(&self, name: &VersionName) -> Path {
        self.prefix.clone().join(name.file_name())
    }

    /// Publishes `generation` with `bytes`. Durable when it returns [`Published::Done`].
    ///
    /// # Errors
    /// A backend failure; the version may or may not have been written (the caller
    /// reloads to find out).
    pub async fn publish(&self, generation: u64, bytes: Vec<u8>) -> Result<Published> {
        let path = self.path(&self.own_name(generation));
        let opts = PutOptions::from(PutMode::Create);
        match self
            .store
            .put_opts(&path, PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(Published::Done),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Published::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    /// The bytes of one version, or `None` if it does not exist.
    ///
    /// # Errors
    /// [`Error::TooLarge`] for a version above the bound (see
    /// [`with_max_len`](Self::with_max_len)); a backend failure other than "not found".
    pub async fn fetch(&self, name: &VersionName) -> Result<Option<Bytes>> {
        match get_bounded(self.store.as_ref(), &self.path(name), self.max_len).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every version present, in no particular order. Objects under the prefix whose
    /// names are not version names are ignored.
    ///
    /// # Errors
    /// A backend failure.
    pub async fn list(&self) -> Result<Vec<VersionName>> {
        let metas: Vec<_> = self.store.list(Some(&self.prefix)).try_collect().await?;
        Ok(metas
            .iter()
            .filter_map(|m| m.location.filename().and_then(VersionName::parse))
            .collect())
    }

    /// The newest generation present (0 if none).
    ///
    /// # Errors
    /// A backend failure.
    pub async fn newest_listed(&self) -> Result<u64> {
        Ok(self
            .list()
            .await?
            .iter()
            .map(|n| n.generation)
            .max()
            .unwrap_or(0))
    }

    /// Deletes a version (already gone is fine).
    ///
    /// # Errors
    /// A backend failure.
    pub async fn delete(&self, name: &VersionName) -> Result<()> {
        match self.store.delete(&self.path(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Exponential backoff with full jitter between commit attempts: waits a random time in
/// `[0, min(cap, base · 2^attempt))`.
#[derive(Debug)]
pub struct Backoff {
    attempt: u32,
    base: Duration,
    cap: Duration,
    max_attempts: u32,
}

impl Backoff {
    /// Backoff from 2 ms up to 200 ms, giving up after `max_attempts`.
    pub fn new(max_attempts: u32) -> Self {
        Self {
            attempt: 0,
            base: Duration::from_millis(2),
            cap: Duration::from_millis(200),
            max_attempts,
        }
    }

    /// Waits before the next attempt.
    ///
    /// # Errors
    /// [`Error::Conflict`] once `max_attempts` attempts have been made.
    pub async fn wait(&mut self, rng: &RandomSource, what: &Path) -> Result<()> {
        self.attempt += 1;
        if self.attempt >= self.max_attempts {
            return Err(Error::Conflict {
                path: what.to_string(),
            });
        }
        let ceiling = self
            .base
            .saturating_mul(1 << self.attempt.min(16))
            .min(self.cap);
        let mut r = [0u8; 8];
        rng.fill(&mut r);
        let fraction = (u64::from_be_bytes(r) >> 11) as f64 / (1u64 << 53) as f64;
        tokio::time::sleep(ceiling.mul_f64(fraction)).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_round_trip() {
        let w = WriterId::from_bytes([0xab; 16]);
        for name in [
            VersionName {
                generation: 7,
                writer: None,
            },
            VersionName {
                generation: u64::MAX,
                writer: Some(w),
            },
        ] {
            assert_eq!(VersionName::parse(&name.file_name()), Some(name));
        }
        assert_eq!(VersionName::parse("7"), None);
        assert_eq!(VersionName::parse("000000000000000g"), None);
        assert_eq!(VersionName::parse("0000000000000001-zz"), None);
    }
}
