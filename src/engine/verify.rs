//! Verification of one account's stored objects: what `mailvault verify` runs (§17 of
//! docs/design.md).
//!
//! [`Provider::verify_account`] lists the account's prefix once and reads every object the
//! account references: the keyring (each version's shape, and the one the directory's mark
//! accepted), each index collection's manifests (the head against the directory's mark)
//! and the segments the head lists (length and SHA-256 against the manifest, records
//! opened), every pinned body (its header and final chunk by ranged GETs, or every byte
//! with [`VerifyOptions::deep`]), and the pending deliveries (signature, body present
//! with the signed header). It reports what is missing, tampered with, rolled back,
//! orphaned (nothing references it, older than the grace period) or unreadable, with
//! counts and sizes. It writes nothing to the store or the directory.
//!
//! Without the account's keys (a hardened account, whose secret the provider does not
//! hold) it checks what needs no key: the keyring against the directory's mark, the
//! manifests' headers and marks, the envelopes' signatures, the bodies' headers and
//! lengths; what it skipped is listed in [`VerifyReport::skipped`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectMeta;
use sha2::{Digest, Sha256};

use super::{Provider, Session};
use crate::crypto::AccountKey;
use crate::error::{Error, Result};
use crate::format::blob::{BlobHeader, BlobLayout, SealedHeader, HEADER_LEN, SEALED_HEADER_LEN};
use crate::format::delivery::{EnvelopeObject, MAX_ENVELOPE_LEN};
use crate::format::index::{ManifestHeader, SegmentEntry, SegmentKind, Stamp, MAX_MANIFEST_LEN};
use crate::format::keyring::{KeyringObject, MAX_KEYRING_LEN};
use crate::format::BlobPin;
use crate::ids::{AccountId, BlobId, DeliveryId, SegmentId};
use crate::index::{merge_live, CollectionKeys};
use crate::storage::{self, naming, CommitMode, VersionName};

/// How [`Provider::verify_account`] verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Read every byte of every pinned body and authenticate it (a whole read: every
    /// chunk's tag, and a sealed body's SHA-256 against its pin). Otherwise each body is
    /// checked by its length, header and final chunk (ranged GETs).
    pub deep: bool,
    /// Objects that nothing references are reported as orphaned only once they are older
    /// than this: a write in flight (a body whose email record is not committed yet, a
    /// manifest superseded a moment ago) is not garbage.
    pub grace: Duration,
    /// Objects read at once.
    pub concurrency: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            deep: false,
            grace: Duration::from_secs(3600),
            concurrency: 16,
        }
    }
}

/// What is wrong with an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Damage {
    /// Referenced, not in the store.
    Missing,
    /// In the store, but it fails authentication or does not parse: altered, truncated,
    /// swapped, or not the version the directory accepted.
    Tampered,
    /// The store offers an older version than the directory accepted (a keyring or an
    /// index head put back from a copy, or the accepted one withheld).
    RolledBack,
    /// Nothing references it, and it is older than the grace period (what
    /// `mailvault gc` removes), or its name is none the library writes.
    Orphaned,
    /// Could not be read (a backend error, or a key this verification does not hold).
    Unreadable,
}

impl Damage {
    /// Every kind, in report order.
    pub const ALL: [Damage; 5] = [
        Damage::Missing,
        Damage::Tampered,
        Damage::RolledBack,
        Damage::Orphaned,
        Damage::Unreadable,
    ];

    /// A lowercase name (`missing`, `tampered`, `rolled_back`, `orphaned`, `unreadable`).
    pub fn name(self) -> &'static str {
        match self {
            Damage::Missing => "missing",
            Damage::Tampered => "tampered",
            Damage::RolledBack => "rolled_back",
            Damage::Orphaned => "orphaned",
            Damage::Unreadable => "unreadable",
        }
    }
}

/// What an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ObjectKind {
    /// A keyring version (`a/<account>/k/…`).
    Keyring,
    /// An index manifest (`a/<account>/i/<tag>/m/…`).
    Manifest,
    /// An index segment (`a/<account>/i/<tag>/s/…`).
    Segment,
    /// A body (`a/<account>/b/…`).
    Blob,
    /// A pending delivery's envelope (`a/<account>/d/…`).
    Delivery,
    /// Anything else under the account's prefix.
    Unknown,
}

impl ObjectKind {
    /// A lowercase name (`keyring`, `manifest`, `segment`, `blob`, `delivery`, `unknown`).
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Keyring => "keyring",
            ObjectKind::Manifest => "manifest",
            ObjectKind::Segment => "segment",
            ObjectKind::Blob => "blob",
            ObjectKind::Delivery => "delivery",
            ObjectKind::Unknown => "unknown",
        }
    }
}

/// One object found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What is wrong.
    pub damage: Damage,
    /// What the object is.
    pub kind: ObjectKind,
    /// Its object name (for a rolled-back record: its prefix).
    pub path: String,
    /// Its stored size, when the store listed it.
    pub size: Option<u64>,
    /// Why, in words.
    pub detail: String,
}

/// Objects checked and their bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    /// Objects.
    pub objects: u64,
    /// Their stored bytes.
    pub bytes: u64,
}

/// The result of [`Provider::verify_account`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The account.
    pub account: AccountId,
    /// Whether the account's keys were at hand (otherwise only what needs no key was
    /// checked: see `skipped`).
    pub with_keys: bool,
    /// Whether every byte of every body was read.
    pub deep: bool,
    /// What was listed under the account's prefix, by kind.
    pub listed: BTreeMap<ObjectKind, Tally>,
    /// What was read and checked, by kind.
    pub checked: BTreeMap<ObjectKind, Tally>,
    /// What is wrong, in the order found.
    pub findings: Vec<Finding>,
    /// Checks not made, and why.
    pub skipped: Vec<String>,
}

impl VerifyReport {
    fn empty(account: AccountId, with_keys: bool, deep: bool) -> Self {
        Self {
            account,
            with_keys,
            deep,
            listed: BTreeMap::new(),
            checked: BTreeMap::new(),
            findings: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// Whether nothing was found wrong.
    pub fn is_intact(&self) -> bool {
        self.findings.is_empty()
    }

    /// Objects found with `damage`, and their bytes (as listed).
    pub fn count(&self, damage: Damage) -> Tally {
        let mut tally = Tally::default();
        for f in self.findings.iter().filter(|f| f.damage == damage) {
            tally.objects += 1;
            tally.bytes += f.size.unwrap_or(0);
        }
        tally
    }
}

/// The account's objects as one listing shows them, by kind.
#[derive(Default)]
struct Listing {
    keyrings: Vec<(VersionName, ObjectMeta)>,
    collections: BTreeMap<String, TagObjects>,
    blobs: HashMap<BlobId, ObjectMeta>,
    deliveries: Vec<(DeliveryId, ObjectMeta)>,
    unknown: Vec<ObjectMeta>,
}

#[derive(Default)]
struct TagObjects {
    manifests: Vec<(VersionName, ObjectMeta)>,
    segments: HashMap<SegmentId, ObjectMeta>,
}

fn classify(account: &AccountId, objects: Vec<ObjectMeta>) -> Listing {
    let prefix = format!("{}/", naming::account_prefix(account));
    let mut listing = Listing::default();
    for meta in objects {
        let rest = meta
            .location
            .as_ref()
            .strip_prefix(&prefix)
            .unwrap_or_default()
            .to_owned();
        let parts: Vec<&str> = rest.split('/').collect();
        match parts[..] {
            ["b", id] => match BlobId::from_hex(id) {
                Ok(id) => {
                    listing.blobs.insert(id, meta);
                }
                Err(_) => listing.unknown.push(meta),
            },
            ["d", id] => match DeliveryId::from_hex(id) {
                Ok(id) => listing.deliveries.push((id, meta)),
                Err(_) => listing.unknown.push(meta),
            },
            ["k", name] => match VersionName::parse(name) {
                Some(name) => listing.keyrings.push((name, meta)),
                None => listing.unknown.push(meta),
            },
            ["i", tag, "m", name] if tag_bytes(tag).is_some() => match VersionName::parse(name) {
                Some(name) => listing
                    .collections
                    .entry(tag.to_owned())
                    .or_default()
                    .manifests
                    .push((name, meta)),
                None => listing.unknown.push(meta),
            },
            ["i", tag, "s", id] if tag_bytes(tag).is_some() => match SegmentId::from_hex(id) {
                Ok(id) => {
                    listing
                        .collections
                        .entry(tag.to_owned())
                        .or_default()
                        .segments
                        .insert(id, meta);
                }
                Err(_) => listing.unknown.push(meta),
            },
            _ => listing.unknown.push(meta),
        }
    }
    listing.keyrings.sort_by_key(|(n, _)| *n);
    for objects in listing.collections.values_mut() {
        objects.manifests.sort_by_key(|(n, _)| *n);
    }
    listing
}

/// The 16 bytes of a collection tag written as 32 lowercase hex digits.
/// Whether the first 8 bytes of a segment object are those of a format this version
/// writes: a record segment (`MVS1`, version 1) or a paged segment (`MVX1`, version 1).
fn known_segment_shape(head: &[u8]) -> bool {
    use crate::format::index::SEGMENT_MAGIC;
    use crate::format::search::{SEARCH_MAGIC, SEARCH_VERSION};
    (head[..4] == SEGMENT_MAGIC && head[4] == 1)
        || (head[..4] == SEARCH_MAGIC && head[4] == SEARCH_VERSION)
}

fn tag_bytes(tag: &str) -> Option<[u8; 16]> {
    if tag.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    SegmentId::from_hex(tag).ok().map(|id| *id.as_bytes())
}

/// The report being built, shared by the checks.
struct Run {
    report: VerifyReport,
    cutoff: chrono::DateTime<chrono::Utc>,
}

impl Run {
    fn find(
        &mut self,
        damage: Damage,
        kind: ObjectKind,
        path: impl ToString,
        size: Option<u64>,
        detail: impl Into<String>,
    ) {
        self.report.findings.push(Finding {
            damage,
            kind,
            path: path.to_string(),
            size,
            detail: detail.into(),
        });
    }

    fn find_meta(&mut self, damage: Damage, kind: ObjectKind, meta: &ObjectMeta, detail: &str) {
        self.find(damage, kind, &meta.location, Some(meta.size), detail);
    }

    /// A read error as a finding: `NotFound` is missing, authentication and parse
    /// failures are tampering, the rest is unreadable.
    fn find_error(&mut self, kind: ObjectKind, path: impl ToString, size: Option<u64>, e: &Error) {
        let damage = match e {
            Error::NotFound { .. } => Damage::Missing,
            Error::Tampered | Error::UnsupportedVersion { .. } | Error::TooLarge { .. } => {
                Damage::Tampered
            }
            Error::Rollback { .. } => Damage::RolledBack,
            _ => Damage::Unreadable,
        };
        self.find(damage, kind, path, size, e.to_string());
    }

    fn checked(&mut self, kind: ObjectKind, bytes: u64) {
        let tally = self.report.checked.entry(kind).or_default();
        tally.objects += 1;
        tally.bytes += bytes;
    }

    fn old(&self, meta: &ObjectMeta) -> bool {
        meta.last_modified < self.cutoff
    }

    fn skip(&mut self, why: impl Into<String>) {
        self.report.skipped.push(why.into());
    }
}

/// The keys a verification with the account's keys uses: the index keys (the current
/// root's, and while a rotation runs the previous one's) and the bodies' epoch keys.
struct Keys<'a> {
    retiring: Option<AccountKey>,
    session: &'a Session,
}

impl Keys<'_> {
    fn index(&self) -> impl Iterator<Item = &AccountKey> {
        std::iter::once(&self.session.key).chain(self.retiring.iter())
    }
}

impl Provider {
    /// Reads a listed object of at most `max` bytes and counts it as checked; `None`
    /// when it is gone meanwhile (replaced, collected, imported) or unreadable (then a
    /// finding).
    async fn read_listed(
        &self,
        run: &mut Run,
        kind: ObjectKind,
        meta: &ObjectMeta,
        max: usize,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Option<bytes::Bytes> {
        match storage::get_bounded(self.store.as_ref(), &meta.location, max as u64).await {
            Ok(stored) => {
                run.checked(kind, stored.len() as u64);
                progress(1, stored.len() as u64);
                Some(stored)
            }
            Err(Error::NotFound { .. }) => None,
            Err(e) => {
                run.find_error(kind, &meta.location, Some(meta.size), &e);
                None
            }
        }
    }
    /// Verifies the stored objects of `account` (see the module documentation of
    /// `engine::verify` and §17 of docs/design.md): with `session` (the account opened
    /// with its keys) everything it references, without it what needs no key.
    /// `progress(objects, bytes)` is called as objects are checked. Reads only: nothing
    /// is written to the store or the directory.
    ///
    /// Damaged input is reported, never an error: the result's findings list what is
    /// missing, tampered with, rolled back, orphaned or unreadable.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a session of another account; a backend or
    /// directory failure while listing the account's prefix or reading its marks (then
    /// nothing could be checked).
    pub async fn verify_account(
        &self,
        account: AccountId,
        session: Option<&Session>,
        options: &VerifyOptions,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<VerifyReport> {
        if session.is_some_and(|s| s.account() != account) {
            return Err(Error::invalid("the session is of another account"));
        }
        let objects: Vec<ObjectMeta> = self
            .store
            .list(Some(&naming::account_prefix(&account)))
            .try_collect()
            .await?;
        let grace = chrono::Duration::from_std(options.grace).unwrap_or(chrono::Duration::MAX);
        let mut run = Run {
            report: VerifyReport::empty(account, session.is_some(), options.deep),
            cutoff: chrono::Utc::now()
                .checked_sub_signed(grace)
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC),
        };
        let listing = classify(&account, objects);
        let mut listed = |kind: ObjectKind, metas: &mut dyn Iterator<Item = &ObjectMeta>| {
            for meta in metas {
                let tally = run.report.listed.entry(kind).or_default();
                tally.objects += 1;
                tally.bytes += meta.size;
            }
        };
        listed(
            ObjectKind::Keyring,
            &mut listing.keyrings.iter().map(|(_, m)| m),
        );
        for objects in listing.collections.values() {
            listed(
                ObjectKind::Manifest,
                &mut objects.manifests.iter().map(|(_, m)| m),
            );
            listed(ObjectKind::Segment, &mut objects.segments.values());
        }
        listed(ObjectKind::Blob, &mut listing.blobs.values());
        listed(
            ObjectKind::Delivery,
            &mut listing.deliveries.iter().map(|(_, m)| m),
        );
        listed(ObjectKind::Unknown, &mut listing.unknown.iter());
        for meta in &listing.unknown {
            run.find_meta(
                Damage::Orphaned,
                ObjectKind::Unknown,
                meta,
                "a name the library never writes",
            );
        }

        // The keyring's versions listed again beside its mark, and looked at again while
        // the mark moves: a keyring commit between the two (it deletes the version it
        // supersedes) is no rollback.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mark = self.directory.mark(&account, "keyring").await?;
            let versions = self
                .list_versions(&naming::keyring_prefix(&account))
                .await?;
            let mut trial = Run {
                report: VerifyReport::empty(account, session.is_some(), options.deep),
                cutoff: run.cutoff,
            };
            self.verify_keyring(&mut trial, &account, mark, &versions, progress)
                .await?;
            if !trial.report.is_intact()
                && attempts < 4
                && self.directory.mark(&account, "keyring").await? != mark
            {
                continue;
            }
            run.report.findings.extend(trial.report.findings);
            run.report.skipped.extend(trial.report.skipped);
            for (kind, tally) in trial.report.checked {
                let total = run.report.checked.entry(kind).or_default();
                total.objects += tally.objects;
                total.bytes += tally.bytes;
            }
            break;
        }
        let keys = session.map(|session| Keys {
            retiring: session.keyring.retiring_index_key(),
            session,
        });
        let mail_tags: HashSet<String> = keys
            .iter()
            .flat_map(|k| k.index())
            .map(|key| {
                CollectionKeys::new(self.deployment, account, key, crate::mail::COLLECTION)
                    .tag_hex()
            })
            .collect();
        let mut pins: Vec<BlobPin> = Vec::new();
        let mut referenced_blobs: HashSet<BlobId> = HashSet::new();
        // Envelopes before the index: an import deletes an envelope only after committing
        // the email record that pins its body, so a body whose envelope is gone by now is
        // pinned by the index read next (a body is never taken for an orphan in between).
        self.verify_deliveries(
            &mut run,
            &account,
            &listing,
            &mut referenced_blobs,
            progress,
        )
        .await?;
        let mut unopened = 0usize;
        for (tag, objects) in &listing.collections {
            let is_mail = mail_tags.contains(tag);
            match self
                .verify_collection(
                    &mut run,
                    &account,
                    tag,
                    objects,
                    keys.as_ref(),
                    is_mail,
                    options,
                    progress,
                )
                .await?
            {
                Some(found) => pins.extend(found),
                None => unopened += 1,
            }
        }
        if keys.is_some() && unopened > 0 {
            run.skip(format!(
                "{unopened} index collection(s) under a key this session does not hold (the \
                 tombstones an earlier root rotation leaves, or an application's collection \
                 under another key): manifest headers and marks checked, not their segments"
            ));
        }
        if keys.is_some() && listing.collections.keys().all(|t| !mail_tags.contains(t)) {
            run.skip("the account has no mail collection yet (never opened)".to_owned());
        }

        match keys.as_ref() {
            Some(keys) => {
                verify_pins(&mut run, keys.session, &listing, &pins, options, progress).await;
                referenced_blobs.extend(pins.iter().map(|p| p.id));
                let mut orphans: Vec<&ObjectMeta> = listing
                    .blobs
                    .iter()
                    .filter(|(id, meta)| !referenced_blobs.contains(id) && run.old(meta))
                    .map(|(_, m)| m)
                    .collect();
                orphans.sort_by(|a, b| a.location.cmp(&b.location));
                for meta in orphans {
                    run.find_meta(
                        Damage::Orphaned,
                        ObjectKind::Blob,
                        meta,
                        "no email record or pending delivery pins it",
                    );
                }
            }
            None => {
                self.verify_blob_shapes(&mut run, &listing, &referenced_blobs, options, progress)
                    .await;
                run.skip(
                    "without the account's keys: the segments' contents, the bodies' pins and \
                     final chunks, and orphaned bodies and segments are not checked"
                        .to_owned(),
                );
            }
        }
        Ok(run.report)
    }

    /// The versioned objects under `prefix` (§9), in name order.
    async fn list_versions(
        &self,
        prefix: &object_store::path::Path,
    ) -> Result<Vec<(VersionName, ObjectMeta)>> {
        let mut found: Vec<(VersionName, ObjectMeta)> = self
            .store
            .list(Some(prefix))
            .try_collect::<Vec<ObjectMeta>>()
            .await?
            .into_iter()
            .filter_map(|meta| {
                let name = VersionName::parse(meta.location.filename()?)?;
                Some((name, meta))
            })
            .collect();
        found.sort_by_key(|(n, _)| *n);
        Ok(found)
    }

    /// The keyring: each version's shape, and the accepted one against the directory's
    /// mark (§9 "Through the directory").
    async fn verify_keyring(
        &self,
        run: &mut Run,
        account: &AccountId,
        mark: crate::directory::Mark,
        versions: &[(VersionName, ObjectMeta)],
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<()> {
        let mut accepted = None;
        let mut at_mark = Vec::new();
        for (name, meta) in versions {
            // Gone meanwhile: replaced meanwhile.
            let Some(stored) = self
                .read_listed(run, ObjectKind::Keyring, meta, MAX_KEYRING_LEN, progress)
                .await
            else {
                continue;
            };
            match KeyringObject::parse(&stored) {
                Ok(parsed)
                    if parsed.generation == name.generation
                        && name.writer.is_none_or(|w| w == parsed.writer) => {}
                Ok(_) => {
                    run.find_meta(
                        Damage::Tampered,
                        ObjectKind::Keyring,
                        meta,
                        "its generation or writer is not its name's",
                    );
                    continue;
                }
                Err(e) => {
                    run.find_error(ObjectKind::Keyring, &meta.location, Some(meta.size), &e);
                    continue;
                }
            }
            if name.generation == mark.generation {
                if mark.has_digest() && Sha256::digest(&stored)[..] == mark.digest {
                    accepted = Some(name);
                } else {
                    at_mark.push(meta);
                }
            }
        }
        let prefix = naming::keyring_prefix(account);
        let newest = versions.iter().map(|(n, _)| n.generation).max();
        if mark == crate::directory::Mark::NONE {
            run.skip(
                "the directory holds no keyring mark for this account (a hardened account's \
                 keyring is accepted on its device): a rolled-back keyring cannot be told \
                 from here"
                    .to_owned(),
            );
            if versions.is_empty() {
                run.find(
                    Damage::Missing,
                    ObjectKind::Keyring,
                    &prefix,
                    None,
                    "no keyring",
                );
            }
            return Ok(());
        }
        if !mark.has_digest() {
            // A mark of an older version: the newest version at or above it is accepted.
            if newest.is_none_or(|g| g < mark.generation) {
                run.find(
                    Damage::RolledBack,
                    ObjectKind::Keyring,
                    &prefix,
                    None,
                    format!(
                        "the directory accepted generation {}, the store's newest is {}",
                        mark.generation,
                        newest.unwrap_or(0)
                    ),
                );
            }
            return Ok(());
        }
        match accepted {
            Some(accepted) => {
                // Versions other than the accepted one: losers and older generations that
                // the commit deletes, and attempts in flight (above the mark).
                for (name, meta) in versions {
                    if name != accepted && run.old(meta) {
                        run.find_meta(
                            Damage::Orphaned,
                            ObjectKind::Keyring,
                            meta,
                            "not the keyring version the directory accepted",
                        );
                    }
                }
            }
            None if !at_mark.is_empty() => {
                for meta in at_mark {
                    run.find_meta(
                        Damage::Tampered,
                        ObjectKind::Keyring,
                        meta,
                        "at the accepted generation, but not the object the directory accepted \
                         (its SHA-256 differs)",
                    );
                }
            }
            None => run.find(
                Damage::RolledBack,
                ObjectKind::Keyring,
                &prefix,
                None,
                format!(
                    "the directory accepted generation {}; the store's newest is {}",
                    mark.generation,
                    newest.map_or_else(|| "none".to_owned(), |g| g.to_string())
                ),
            ),
        }
        Ok(())
    }

    /// One index collection. Returns the body pins of its records when it is the mail
    /// collection and was opened, an empty list for another collection opened, `None`
    /// when no key at hand opens it.
    #[allow(clippy::too_many_arguments)]
    async fn verify_collection(
        &self,
        run: &mut Run,
        account: &AccountId,
        tag: &str,
        objects: &TagObjects,
        keys: Option<&Keys<'_>>,
        is_mail: bool,
        options: &VerifyOptions,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<Option<Vec<BlobPin>>> {
        let record = format!("i-{tag}");
        let mark = self.directory.mark(account, &record).await?;
        let mode = self.index.mode();
        // Every manifest: fetched, its header parsed and matched with its name.
        // Listed again, after the envelopes were read: the head read here is at least as
        // new as the imports that deleted envelopes since the account's listing.
        let fresh = self
            .list_versions(&naming::manifest_prefix(account, tag))
            .await?;
        let mut manifests: Vec<(VersionName, &ObjectMeta, bytes::Bytes)> = Vec::new();
        for (name, meta) in &fresh {
            // Gone meanwhile: collected meanwhile.
            let Some(stored) = self
                .read_listed(run, ObjectKind::Manifest, meta, MAX_MANIFEST_LEN, progress)
                .await
            else {
                continue;
            };
            match ManifestHeader::parse(&stored) {
                Ok((header, _))
                    if header.generation == name.generation
                        && name.writer.is_none_or(|w| w == header.writer) =>
                {
                    manifests.push((*name, meta, stored));
                }
                Ok(_) => run.find_meta(
                    Damage::Tampered,
                    ObjectKind::Manifest,
                    meta,
                    "its generation or writer is not its name's",
                ),
                Err(e) => run.find_error(ObjectKind::Manifest, &meta.location, Some(meta.size), &e),
            }
        }
        let prefix = naming::manifest_prefix(account, tag);
        let newest = fresh.iter().map(|(n, _)| n.generation).max();
        // The head: with compare-and-swap the newest generation (at least the mark's);
        // without, the manifest of the mark's generation with the mark's digest.
        let head: Option<usize> = match mode {
            CommitMode::CompareAndSwap => {
                if newest.unwrap_or(0) < mark.generation {
                    run.find(
                        Damage::RolledBack,
                        ObjectKind::Manifest,
                        &prefix,
                        None,
                        format!(
                            "the directory saw generation {}; the store's newest is {}",
                            mark.generation,
                            newest.unwrap_or(0)
                        ),
                    );
                }
                manifests
                    .iter()
                    .enumerate()
                    .max_by_key(|(_, (n, _, _))| *n)
                    .map(|(i, _)| i)
            }
            CommitMode::WriterUnique if mark.has_digest() => {
                let found = manifests.iter().position(|(n, _, stored)| {
                    n.generation == mark.generation && Sha256::digest(stored)[..] == mark.digest
                });
                if found.is_none() {
                    let beside: Vec<&ObjectMeta> = manifests
                        .iter()
                        .filter(|(n, _, _)| n.generation == mark.generation)
                        .map(|(_, m, _)| *m)
                        .collect();
                    if beside.is_empty() {
                        run.find(
                            Damage::RolledBack,
                            ObjectKind::Manifest,
                            &prefix,
                            None,
                            format!(
                                "the directory accepted generation {}; the store's newest is {}",
                                mark.generation,
                                newest.unwrap_or(0)
                            ),
                        );
                    }
                    for meta in beside {
                        run.find_meta(
                            Damage::Tampered,
                            ObjectKind::Manifest,
                            meta,
                            "at the accepted generation, but not the manifest the directory \
                             accepted",
                        );
                    }
                }
                found
            }
            CommitMode::WriterUnique => {
                if mark.generation > 0 {
                    run.skip(format!(
                        "collection {tag}: written by the older writer-unique scheme (several \
                         heads): its segments are checked when it is opened"
                    ));
                }
                return Ok(Some(Vec::new()));
            }
        };
        let Some(head) = head else {
            return Ok(Some(Vec::new()));
        };
        let head_time = manifests[head].1.last_modified;

        // With a key that opens the head: every manifest opened, the head's live segments
        // read and checked against it.
        let opened = keys.and_then(|keys| {
            keys.index().find_map(|key| {
                let tag_bytes = tag_bytes(tag)?;
                let collection = CollectionKeys::for_tag(self.deployment, *account, key, tag_bytes);
                collection
                    .open_manifest(&manifests[head].2)
                    .ok()
                    .map(|opened| (collection, opened))
            })
        });
        let Some((collection, (_, head_body))) = opened else {
            if keys.is_some() && is_mail {
                let meta = manifests[head].1;
                run.find_meta(
                    Damage::Tampered,
                    ObjectKind::Manifest,
                    meta,
                    "the mail collection's head does not open under the account's index key",
                );
            }
            // Keyless: only the segments' first bytes.
            self.verify_segment_shapes(run, objects, options, progress)
                .await;
            return Ok(if keys.is_some() && !is_mail {
                None
            } else {
                Some(Vec::new())
            });
        };
        let head_name = manifests[head].0;
        let mut referenced: HashSet<SegmentId> = HashSet::new();
        for (name, meta, stored) in &manifests {
            let superseded = *name != head_name;
            let orphan = superseded
                && if name.generation <= head_name.generation {
                    head_time < run.cutoff
                } else {
                    run.old(meta)
                };
            if *name == head_name {
                referenced.extend(head_body.segments.iter().map(|e| e.id));
                continue;
            }
            match collection.open_manifest(stored) {
                Ok((_, body)) if !orphan => {
                    referenced.extend(body.segments.iter().map(|e| e.id));
                }
                Ok(_) => run.find_meta(
                    Damage::Orphaned,
                    ObjectKind::Manifest,
                    meta,
                    "superseded longer than the grace period ago",
                ),
                Err(e) => run.find_error(ObjectKind::Manifest, &meta.location, Some(meta.size), &e),
            }
        }
        let live = merge_live(head_body.segments.clone());
        let mut records: BTreeMap<bytes::Bytes, (Stamp, bool, bytes::Bytes)> = BTreeMap::new();
        let store = self.store.clone();
        let collection = std::sync::Arc::new(collection);
        let checks = futures::stream::iter(live.into_iter().map(|entry| {
            let path = naming::segment_path(account, tag, &entry.id);
            let store = store.clone();
            let collection = collection.clone();
            async move {
                let stored = storage::get_exact(store.as_ref(), &path, entry.stored_len).await;
                let outcome = match stored {
                    Err(e) => Err(e),
                    Ok(stored) if Sha256::digest(&stored)[..] != entry.digest => {
                        Err(Error::Tampered)
                    }
                    Ok(stored) if entry.kind == SegmentKind::Search => Ok((stored.len(), None)),
                    Ok(stored) => {
                        let len = stored.len();
                        let entry2 = entry.clone();
                        crate::cpu::offload(len, move || collection.open_segment(&entry2, &stored))
                            .await
                            .and_then(|r| r)
                            .map(|loaded| (len, Some(loaded)))
                    }
                };
                (entry, path, outcome)
            }
        }))
        .buffer_unordered(options.concurrency.max(1));
        let results: Vec<(SegmentEntry, object_store::path::Path, Result<_>)> =
            checks.collect().await;
        for (entry, path, outcome) in results {
            let size = objects.segments.get(&entry.id).map(|m| m.size);
            match outcome {
                Ok((len, loaded)) => {
                    run.checked(ObjectKind::Segment, len as u64);
                    progress(1, len as u64);
                    if !is_mail {
                        continue;
                    }
                    for record in loaded.into_iter().flatten() {
                        if record.key().first() != Some(&crate::mail::verify::BODY_RECORD) {
                            continue;
                        }
                        let stamp = record.stamp.unwrap_or(entry.stamp);
                        let key = record.bytes.slice(..record.key_len);
                        let newer = records.get(&key).is_none_or(|(s, _, _)| stamp > *s);
                        if newer {
                            let value = record.bytes.slice(record.key_len..);
                            records.insert(key, (stamp, record.deleted, value));
                        }
                    }
                }
                Err(e) => run.find_error(ObjectKind::Segment, &path, size, &e),
            }
        }
        // Segments no remaining manifest lists, older than the grace period.
        let mut orphans: Vec<&ObjectMeta> = objects
            .segments
            .iter()
            .filter(|(id, meta)| !referenced.contains(id) && run.old(meta))
            .map(|(_, m)| m)
            .collect();
        orphans.sort_by(|a, b| a.location.cmp(&b.location));
        for meta in orphans {
            run.find_meta(
                Damage::Orphaned,
                ObjectKind::Segment,
                meta,
                "no manifest lists it",
            );
        }
        if !is_mail {
            return Ok(Some(Vec::new()));
        }
        let (pins, bad) = crate::mail::verify::body_pins(
            records
                .values()
                .filter(|(_, deleted, _)| !deleted)
                .map(|(_, _, value)| &value[..]),
        );
        if bad > 0 {
            run.find(
                Damage::Tampered,
                ObjectKind::Segment,
                naming::collection_prefix(account, tag),
                None,
                format!("{bad} email record(s) of the index do not parse"),
            );
        }
        Ok(Some(pins))
    }

    /// Without a key: each segment's magic and version (a ranged GET of 8 bytes).
    async fn verify_segment_shapes(
        &self,
        run: &mut Run,
        objects: &TagObjects,
        options: &VerifyOptions,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) {
        let store = self.store.clone();
        let results: Vec<(&ObjectMeta, Result<bytes::Bytes>)> =
            futures::stream::iter(objects.segments.values().map(|meta| {
                let store = store.clone();
                async move {
                    let head =
                        storage::get_range(store.as_ref(), &meta.location, 0..8.min(meta.size))
                            .await;
                    (meta, head)
                }
            }))
            .buffer_unordered(options.concurrency.max(1))
            .collect()
            .await;
        for (meta, head) in results {
            match head {
                // Record segments (`MVS1`) and paged segments (`MVX1`: the text index's
                // search segments, the mail collection's details segments).
                Ok(head) if head.len() == 8 && known_segment_shape(&head) => {
                    run.checked(ObjectKind::Segment, meta.size);
                    progress(1, meta.size);
                }
                Ok(_) => run.find_meta(
                    Damage::Tampered,
                    ObjectKind::Segment,
                    meta,
                    "not a segment (magic or version)",
                ),
                Err(Error::NotFound { .. }) => {}
                Err(e) => run.find_error(ObjectKind::Segment, &meta.location, Some(meta.size), &e),
            }
        }
    }

    /// The pending deliveries: each envelope parsed, its signature checked under the
    /// directory's delivery keys, its body present with the signed header.
    async fn verify_deliveries(
        &self,
        run: &mut Run,
        account: &AccountId,
        listing: &Listing,
        referenced: &mut HashSet<BlobId>,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<()> {
        if listing.deliveries.is_empty() {
            return Ok(());
        }
        let keys: Vec<[u8; 32]> = self
            .directory
            .delivery_keys()
            .await?
            .into_iter()
            .map(|k| k.key)
            .collect();
        for (id, meta) in &listing.deliveries {
            // Gone meanwhile: imported meanwhile.
            let Some(stored) = self
                .read_listed(run, ObjectKind::Delivery, meta, MAX_ENVELOPE_LEN, progress)
                .await
            else {
                continue;
            };
            let object = match EnvelopeObject::parse(&stored) {
                Ok(object) => object,
                Err(e) => {
                    run.find_error(ObjectKind::Delivery, &meta.location, Some(meta.size), &e);
                    continue;
                }
            };
            referenced.insert(object.blob);
            if object.delivery != *id
                || !crate::delivery::signed_by_any(&object, &self.deployment, account, &keys)
            {
                run.find_meta(
                    Damage::Tampered,
                    ObjectKind::Delivery,
                    meta,
                    "its signature does not verify under the directory's delivery keys",
                );
                continue;
            }
            let path = naming::blob_path(account, &object.blob);
            let Some(body) = listing.blobs.get(&object.blob) else {
                run.find(
                    Damage::Missing,
                    ObjectKind::Blob,
                    &path,
                    None,
                    format!("the body of pending delivery {id}"),
                );
                continue;
            };
            let header = object.header.to_bytes();
            match storage::get_range(self.store.as_ref(), &path, 0..SEALED_HEADER_LEN as u64).await
            {
                Ok(head)
                    if head[..] == header[..]
                        && BlobLayout::for_ciphertext_with_header(SEALED_HEADER_LEN, body.size)
                            .is_ok() =>
                {
                    run.checked(ObjectKind::Blob, body.size);
                    progress(1, body.size);
                }
                Ok(_) => run.find_meta(
                    Damage::Tampered,
                    ObjectKind::Blob,
                    body,
                    "its header is not the one its delivery signed, or its length is no blob's",
                ),
                Err(e) => run.find_error(ObjectKind::Blob, &path, Some(body.size), &e),
            }
        }
        Ok(())
    }

    /// Without a key: each body's header parsed (a ranged GET) and its length checked
    /// against the format; bodies of pending deliveries were checked with them.
    async fn verify_blob_shapes(
        &self,
        run: &mut Run,
        listing: &Listing,
        done: &HashSet<BlobId>,
        options: &VerifyOptions,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) {
        let store = self.store.clone();
        let mut todo: Vec<&ObjectMeta> = listing
            .blobs
            .iter()
            .filter(|(id, _)| !done.contains(id))
            .map(|(_, m)| m)
            .collect();
        todo.sort_by(|a, b| a.location.cmp(&b.location));
        let results: Vec<(&ObjectMeta, Result<bytes::Bytes>)> =
            futures::stream::iter(todo.into_iter().map(|meta| {
                let store = store.clone();
                async move {
                    let end = (SEALED_HEADER_LEN as u64).min(meta.size);
                    (
                        meta,
                        storage::get_range(store.as_ref(), &meta.location, 0..end).await,
                    )
                }
            }))
            .buffer_unordered(options.concurrency.max(1))
            .collect()
            .await;
        for (meta, head) in results {
            let head = match head {
                Ok(head) => head,
                Err(Error::NotFound { .. }) => continue,
                Err(e) => {
                    run.find_error(ObjectKind::Blob, &meta.location, Some(meta.size), &e);
                    continue;
                }
            };
            let shape = match head.get(5) {
                Some(1) => BlobHeader::parse(&head)
                    .and_then(|_| BlobLayout::for_ciphertext_with_header(HEADER_LEN, meta.size)),
                Some(2) => SealedHeader::parse(&head).and_then(|_| {
                    BlobLayout::for_ciphertext_with_header(SEALED_HEADER_LEN, meta.size)
                }),
                _ => Err(Error::Tampered),
            };
            match shape {
                Ok(_) => {
                    run.checked(ObjectKind::Blob, meta.size);
                    progress(1, meta.size);
                }
                Err(e) => run.find_error(ObjectKind::Blob, &meta.location, Some(meta.size), &e),
            }
        }
    }
}

/// Every pinned body: its length, header and final chunk (ranged GETs), or every byte
/// with `deep`.
async fn verify_pins(
    run: &mut Run,
    session: &Session,
    listing: &Listing,
    pins: &[BlobPin],
    options: &VerifyOptions,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) {
    let blobs = session.blobs();
    let deep = options.deep;
    let results: Vec<(&BlobPin, Result<()>)> =
        futures::stream::iter(pins.iter().map(|pin| async move {
            let outcome = if deep {
                match blobs.get(pin).await {
                    Ok(mut stream) => {
                        let mut failed = Ok(());
                        while let Some(piece) = stream.next().await {
                            if let Err(e) = piece {
                                failed = Err(e);
                                break;
                            }
                        }
                        failed
                    }
                    Err(e) => Err(e),
                }
            } else {
                blobs.verify_stored(pin).await
            };
            (pin, outcome)
        }))
        .buffer_unordered(options.concurrency.max(1))
        .collect()
        .await;
    for (pin, outcome) in results {
        let path = naming::blob_path(&session.account(), &pin.id);
        let size = listing.blobs.get(&pin.id).map(|m| m.size);
        match outcome {
            Ok(()) => {
                let len = pin.layout().ciphertext_len();
                run.checked(ObjectKind::Blob, len);
                progress(1, len);
            }
            Err(e @ Error::EpochUnavailable { .. }) => run.find(
                Damage::Unreadable,
                ObjectKind::Blob,
                &path,
                size,
                e.to_string(),
            ),
            Err(e) => run.find_error(ObjectKind::Blob, &path, size, &e),
        }
    }
}
