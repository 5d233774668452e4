//! Import of sealed deliveries into mailboxes, by the key holder.

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;

use super::{keys, mailbox_of, same_name, uid_next, Mailstore, Plan, INBOX_ID};
use crate::crypto::AccountKey;
use crate::delivery::{open_envelope, verify_envelope, verify_envelopes, Rejection};
use crate::error::{Error, Result};
use crate::format::mail::{
    number_to_bytes, EmailAnalysis, EmailRecord, Envelope, Flags, MailboxRecord, MessageRecord,
    Provenance, SpecialUse,
};
use crate::format::BlobPin;
use crate::ids::{DeliveryId, EmailId, MailboxId, ThreadId};
use crate::mail::text::extract::ExtractedText;
use crate::storage::naming;

/// What [`Mailstore::import_deliveries`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Deliveries imported: (delivery, mailbox, UID).
    pub imported: Vec<(DeliveryId, MailboxId, u32)>,
    /// Deliveries refused now, with the reason (they stay in the store, quarantined).
    pub quarantined: Vec<(DeliveryId, Rejection)>,
    /// Envelopes of deliveries imported before (a replay, a retry of the same delivery
    /// id, or a crash after the import),
    /// removed.
    pub already_imported: usize,
    /// Deliveries left pending, not quarantined, because they are sealed to a key epoch
    /// the import's keys lack ([`Mailstore::import_pending`]): to import again with keys
    /// reloaded from the keyring.
    pub deferred: Vec<DeliveryId>,
    /// Delivery numbers found missing by this import, oldest first: the directory
    /// counted a delivery (its deliverer took the number) and no envelope of it was ever
    /// found. The store withheld or deleted it, or its deliverer failed before writing
    /// it (and did not acknowledge the message), or it is still being written. Reported
    /// once; [`Mailstore::missing_deliveries`] lists those still missing, and a delivery
    /// arriving late is imported as usual and leaves that list.
    pub missing: Vec<u64>,
}

impl ImportReport {
    /// Adds what a later pass over the same deliveries did: its imports, quarantines and
    /// replays; its deferred deliveries replace this one's (the later pass tried them).
    pub fn absorb(&mut self, later: ImportReport) {
        self.imported.extend(later.imported);
        self.quarantined.extend(later.quarantined);
        self.already_imported += later.already_imported;
        self.deferred = later.deferred;
        self.missing.extend(later.missing);
    }
}

/// Which deliveries an import pass tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// Pending ones, skipping quarantined ones; with `defer`, a retryable rejection
    /// leaves the delivery pending instead of quarantining it.
    Pending { defer: bool },
    /// Pending and quarantined ones.
    Recheck,
}

/// The most bytes of pending envelopes an import holds in memory while it orders them by
/// number; envelopes beyond it are read again in turn.
const MAX_HELD_ENVELOPES: usize = 8 << 20;

/// The most deliveries one import commit adds: a login after a thousand deliveries
/// imports them in a few commits instead of a thousand.
const IMPORT_BATCH: usize = 512;

/// The most envelope bytes one import commit takes (an envelope carries up to 768 KiB of
/// options and analysis, most of which its records keep): 512 large envelopes would make
/// one commit of hundreds of MiB.
const IMPORT_BATCH_BYTES: usize = 8 << 20;

/// Deliveries of a batch checked at once (each one or two ranged GETs of its body).
const CHECK_CONCURRENCY: usize = 16;

/// Which envelope object was read at a delivery's path: its length and its first bytes
/// (up to the envelope prefix: the delivery id, the body's blob id and the delivery
/// number). A deliverer writes each attempt of a delivery under the same name, and each
/// attempt has a body and a number of its own, so these tell one attempt from a later one
/// written at the same path once the earlier was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EnvelopeMark {
    len: u64,
    head: Vec<u8>,
}

impl EnvelopeMark {
    fn of(bytes: &[u8]) -> Self {
        let head = &bytes[..bytes
            .len()
            .min(crate::format::delivery::ENVELOPE_PREFIX_LEN)];
        Self {
            len: bytes.len() as u64,
            head: head.to_vec(),
        }
    }
}

/// Deletes the envelope at `path` if it is still the object read (`mark`): one ranged GET
/// of its prefix first. object_store has no conditional delete; without the check, an
/// importer deleting the envelope it imported (or found imported) after another importer
/// already deleted it removes a retry of the same delivery written there meanwhile (its
/// body left behind, its number reported missing, its bytes counted as pending forever).
/// What the check leaves: a retry written whole between this GET and the DELETE reaching
/// the store (docs/design.md §12.4). An empty `mark` (nothing a deliverer writes: an
/// empty object, or one larger than any envelope) is deleted without the check. A failed
/// delete leaves the object for the next import.
///
/// # Errors
/// A backend failure of the check (the object is left, as by a failed delete).
async fn delete_envelope(
    store: &crate::storage::DynStore,
    path: &object_store::path::Path,
    mark: &EnvelopeMark,
) -> Result<()> {
    if mark.len > 0 {
        let head = mark.head.len() as u64;
        match crate::storage::get_range_of(store.as_ref(), path, 0..head, mark.len).await {
            Ok(bytes) if bytes[..] == mark.head[..] => {}
            // Gone, or another object (a later attempt): left.
            Ok(_) | Err(Error::NotFound { .. } | Error::Tampered) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    let _ = store.delete(path).await;
    Ok(())
}

/// A delivery checked for import: what its records need.
pub(crate) struct Deliverable {
    delivery: DeliveryId,
    number: u64,
    /// Its envelope, deleted once it is imported.
    path: object_store::path::Path,
    /// The envelope read, so that the delete removes it and nothing written after it.
    mark: EnvelopeMark,
    pin: BlobPin,
    internal_date: i64,
    flags: Flags,
    mailbox: String,
    analysis: Option<EmailAnalysis>,
    /// Its searchable text, as the deliverer extracted it (of this crate's text version).
    text: Option<ExtractedText>,
}

/// One delivery checked for import: its id, its number once its signature verified, and
/// what its import needs or why it is refused.
pub(crate) type Checked = (
    DeliveryId,
    Option<u64>,
    std::result::Result<Deliverable, Rejection>,
);

/// What opening one envelope costs, counted as bytes of symmetric work for
/// [`crate::cpu::offload`]: an Ed25519 verification and an X25519 agreement take about as
/// long as ChaCha20-Poly1305 over 64 KiB.
const KEY_WORK_BYTES: usize = 64 * 1024;

/// Envelopes whose signatures are verified together (Ed25519 batch verification): a
/// batch of the import is split into chunks of this many, spread over the cores.
const VERIFY_CHUNK: usize = 32;

/// What the key work of checking a delivery gives: its number, the pin of its body
/// (re-wrapped, not yet checked in the store) and its envelope; or why it is refused,
/// with its number once its signature verified.
type Opened = std::result::Result<
    (u64, BlobPin, crate::format::delivery::DeliveryEnvelope),
    (Option<u64>, Rejection),
>;

/// The key work of checking deliveries, no I/O: the envelopes, each `(bytes, delivery)`
/// (the name it was found under), verified against `verifying_keys` (their signatures
/// together: [`verify_envelopes`]) and opened with `keys`.
fn open_deliveries(
    envelopes: &[(&[u8], DeliveryId)],
    blobs: &crate::blob::AccountBlobs,
    keys: &[AccountKey],
    verifying_keys: &[ed25519_dalek::VerifyingKey],
) -> Vec<Opened> {
    verify_envelopes(envelopes, blobs, verifying_keys)
        .into_iter()
        .map(|verified| {
            let object = verified.map_err(|rejection| (None, rejection))?;
            open_verified(&object, blobs, keys)
        })
        .collect()
}

/// Opens a verified envelope `object` with `keys` (see [`open_deliveries`]).
fn open_verified(
    object: &crate::format::delivery::EnvelopeObject<'_>,
    blobs: &crate::blob::AccountBlobs,
    keys: &[AccountKey],
) -> Opened {
    let number = object.number;
    let opened =
        open_envelope(object, blobs, keys).map_err(|rejection| (Some(number), rejection))?;
    let pin = blobs
        .pin_sealed_with(&opened.blob, &opened.file_key)
        .map_err(|_| (Some(number), Rejection::BadBody))?;
    Ok((number, pin, opened.envelope))
}

/// Reads a pending envelope, bounded: `None` if it is gone; an empty envelope (quarantined
/// as malformed) if it is larger than any envelope a deliverer writes.
async fn read_envelope(
    store: &crate::storage::DynStore,
    path: &object_store::path::Path,
) -> Result<Option<bytes::Bytes>> {
    match crate::storage::get_bounded(
        store.as_ref(),
        path,
        crate::format::delivery::MAX_ENVELOPE_LEN as u64,
    )
    .await
    {
        Ok(bytes) => Ok(Some(bytes)),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(Error::TooLarge { .. }) => Ok(Some(bytes::Bytes::new())),
        Err(e) => Err(e),
    }
}

/// The highest delivery number checked (`K` record; 0 if none).
fn checked_through(c: &crate::index::Collection) -> u64 {
    c.get(keys::DELIVERIES_CHECKED)
        .and_then(|v| crate::format::mail::parse_number(v).ok())
        .unwrap_or(0)
}

/// The value of an `N` record: version ‖ delivery id ‖ bytes imported (u64 BE; 0 for a
/// quarantined delivery; absent in records written before quotas, read as 0).
fn number_record(delivery: &DeliveryId, size: u64) -> Vec<u8> {
    [
        &[crate::format::mail::MAIL_RECORD_VERSION][..],
        delivery.as_bytes(),
        &size.to_be_bytes(),
    ]
    .concat()
}

/// The bytes imported that an `N` record counts.
pub(super) fn number_record_size(value: &[u8]) -> u64 {
    value
        .get(17..25)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// A retry of a delivery imported before: its own number, body and size.
#[derive(Clone)]
pub(crate) struct Retry {
    delivery: DeliveryId,
    number: u64,
    blob: crate::ids::BlobId,
    size: u64,
}

fn parse_quarantine(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes.get(1..).unwrap_or_default()).into_owned()
}

impl Mailstore {
    /// Imports every pending delivery of the account: for each envelope, the provider's
    /// signature is verified (`verifying_key`, from the trusted directory), the envelope
    /// opened with the account's keys, the stored body checked against the envelope
    /// without reading it (its size, its header bytes, its final chunk: one or two ranged
    /// GETs, [`AccountBlobs::verify_stored`](crate::blob::AccountBlobs::verify_stored)),
    /// and the message added to its mailbox (created when the account lacks it; INBOX
    /// when the delivery names none)
    /// with a pin that needs no X25519 to read, together with the delivery id, so that a
    /// replay is refused. The body is neither downloaded nor re-uploaded; its envelope
    /// fields and MIME structure are computed on first read ([`Mailstore::analyze`]).
    ///
    /// Idempotent: after a crash at any point, running it again imports each delivery
    /// exactly once. A delivery that fails a check is quarantined with the reason and left
    /// in the store ([`recheck_quarantined`](Self::recheck_quarantined) tries it again).
    /// `keys` are taken as final: a delivery sealed to an epoch they lack is quarantined
    /// too (see [`import_pending`](Self::import_pending) to defer it instead).
    ///
    /// # Errors
    /// Backend failures (the import stops; what was imported stays imported).
    pub async fn import_deliveries(
        &mut self,
        keys: &[AccountKey],
        verifying_key: &[u8; 32],
    ) -> Result<ImportReport> {
        self.import_pass(keys, &[*verifying_key], Pass::Pending { defer: false })
            .await
    }

    /// As [`import_deliveries`](Self::import_deliveries), accepting deliveries signed by
    /// any of `verifying_keys` (the directory's delivery key set, retired keys included);
    /// with `defer_unknown_epochs`, a delivery sealed to an epoch that `keys` lack is left
    /// pending, listed in [`ImportReport::deferred`], instead of being quarantined: the
    /// caller reloads its keys (the keyring changed since they were read) and imports
    /// again with `defer_unknown_epochs` false.
    ///
    /// # Errors
    /// As [`import_deliveries`](Self::import_deliveries).
    pub async fn import_pending(
        &mut self,
        keys: &[AccountKey],
        verifying_keys: &[[u8; 32]],
        defer_unknown_epochs: bool,
    ) -> Result<ImportReport> {
        let pass = Pass::Pending {
            defer: defer_unknown_epochs,
        };
        self.import_pass(keys, verifying_keys, pass).await
    }

    /// Checks every quarantined delivery whose envelope is still in the store again, as
    /// an import would (and imports every pending one on the way): those that pass now
    /// (the keys or the directory's key set were missing something when they were
    /// quarantined) are imported and leave the quarantine; the others stay quarantined,
    /// with their reason of now, and are listed in the report's `quarantined`.
    ///
    /// # Errors
    /// As [`import_deliveries`](Self::import_deliveries).
    pub async fn recheck_quarantined(
        &mut self,
        keys: &[AccountKey],
        verifying_keys: &[[u8; 32]],
    ) -> Result<ImportReport> {
        self.import_pass(keys, verifying_keys, Pass::Recheck).await
    }

    /// The one import loop of [`import_deliveries`](Self::import_deliveries),
    /// [`import_pending`](Self::import_pending) and
    /// [`recheck_quarantined`](Self::recheck_quarantined): envelopes are read (those of
    /// deliveries imported before are deleted unread), imported in the order of their
    /// delivery numbers, then the numbers the directory issued and no envelope accounts
    /// for are recorded and reported missing. The steps of an [`ImportRun`], in turn;
    /// [`SharedAccount`](crate::engine::SharedAccount) takes the same steps with its
    /// write access held only for the commits.
    #[tracing::instrument(level = "debug", skip_all, fields(account = %self.account(), requests = tracing::field::Empty, bytes_read = tracing::field::Empty, bytes_written = tracing::field::Empty))]
    async fn import_pass(
        &mut self,
        keys: &[AccountKey],
        verifying_keys: &[[u8; 32]],
        pass: Pass,
    ) -> Result<ImportReport> {
        super::metered(async move {
            self.refresh().await?;
            let mut run = self.import_run(keys, verifying_keys, pass);
            run.list().await?;
            self.look_up(&mut run);
            run.read().await?;
            self.drop_retries(run.take_retries()).await?;
            while let Some(batch) = run.next_batch(IMPORT_BATCH) {
                let checked = run.check(batch).await?;
                let imported = self.import_batch(&mut run, checked).await?;
                run.delete_envelopes(&imported).await?;
            }
            self.finish_import(run).await
        })
        .await
    }

    /// A pass of the import over the account's pending deliveries (see [`ImportRun`]),
    /// with `keys` and `verifying_keys`, not started.
    pub(crate) fn import_run(
        &self,
        keys: &[AccountKey],
        verifying_keys: &[[u8; 32]],
        pass: Pass,
    ) -> ImportRun {
        ImportRun {
            pass,
            keys: keys.iter().map(AccountKey::duplicate).collect(),
            verifying_keys: verifying_keys.to_vec(),
            verifying: crate::delivery::parse_verifying_keys(verifying_keys),
            blobs: self.blobs.clone(),
            directory: self.directory.clone(),
            account: self.account(),
            issued: 0,
            listed: Vec::new(),
            pending: std::collections::VecDeque::new(),
            retries: Vec::new(),
            found: std::collections::BTreeSet::new(),
            report: ImportReport::default(),
            times: ImportTimes::default(),
        }
    }

    /// Step 2 of an import: what the index knows of each listed delivery (imported
    /// before, quarantined), so that the envelopes are read without the index.
    pub(crate) fn look_up(&self, run: &mut ImportRun) {
        for (delivery, _, known) in &mut run.listed {
            *known = if self.index.get(&keys::imported(delivery)).is_some() {
                // A record this handle cannot read (a newer version, damage) might name
                // the retry's very body: not a retry then, the body stays.
                let email = EmailId::from_bytes(*delivery.as_bytes());
                Known::Imported(
                    super::email_record(&self.index, &email)
                        .ok()
                        .map(|record| record.map(|r| r.pin.id)),
                )
            } else if run.pass != Pass::Recheck
                && self.index.get(&keys::quarantined(delivery)).is_some()
            {
                Known::Skipped
            } else {
                Known::New
            };
        }
    }

    /// Step 6 of an import, for each batch: quarantines what `checked` refuses and
    /// imports the rest in one commit, in their order. Returns the envelopes of the
    /// deliveries imported, to delete ([`ImportRun::delete_envelopes`]).
    pub(crate) async fn import_batch(
        &mut self,
        run: &mut ImportRun,
        checked: Vec<Checked>,
    ) -> Result<Vec<(object_store::path::Path, EnvelopeMark)>> {
        let started = std::time::Instant::now();
        let mut ready = Vec::new();
        for (delivery, number, outcome) in checked {
            run.found.extend(number);
            match outcome {
                Ok(delivery) => ready.push(delivery),
                Err(rejection)
                    if rejection.is_retryable() && run.pass == (Pass::Pending { defer: true }) =>
                {
                    run.report.deferred.push(delivery);
                }
                Err(rejection) => {
                    self.quarantine(&delivery, number, &rejection).await?;
                    run.report.quarantined.push((delivery, rejection));
                }
            }
        }
        // The texts first, as one segment: a crash before the mail commit leaves texts of
        // emails that do not exist (never answered, dropped by merges); the other order
        // would lose the texts of deliveries whose envelopes are gone.
        let texts: Vec<(EmailId, ExtractedText)> = ready
            .iter_mut()
            .filter(|d| self.index.get(&keys::imported(&d.delivery)).is_none())
            .filter_map(|d| {
                let email = EmailId::from_bytes(*d.delivery.as_bytes());
                d.text.take().map(|text| (email, text))
            })
            .collect();
        self.store_texts(&texts).await;
        let placed = self.import_checked(&ready).await?;
        for (delivery, placed) in ready.iter().zip(placed) {
            match placed {
                Some((mailbox, uid)) => run.report.imported.push((delivery.delivery, mailbox, uid)),
                // Imported by another importer meanwhile.
                None => run.report.already_imported += 1,
            }
        }
        run.times.commit += started.elapsed();
        Ok(ready.into_iter().map(|d| (d.path, d.mark)).collect())
    }

    /// The last step of an import: records the numbers the directory issued that no
    /// envelope accounted for (missing), and returns the run's report.
    pub(crate) async fn finish_import(&mut self, mut run: ImportRun) -> Result<ImportReport> {
        run.report.missing = self.record_missing(run.issued, &run.found).await?;
        let t = &run.times;
        if t.batches > 0 {
            tracing::debug!(
                account = %run.account,
                imported = run.report.imported.len(),
                batches = t.batches,
                list = ?t.list,
                read = ?t.read,
                reread = ?t.reread,
                open = ?t.open,
                bodies = ?t.bodies,
                commit = ?t.commit,
                delete = ?t.delete,
                "import pass"
            );
        }
        Ok(run.report)
    }

    /// Accounts for retries of imported deliveries (their numbers, with the bytes the
    /// deliverer counted as delivered: so they no longer count as waiting for import),
    /// then deletes their bodies and envelopes. A crash between the two leaves the
    /// envelopes: the next pass finds the numbers accounted for and deletes them.
    pub(crate) async fn drop_retries(
        &mut self,
        retries: Vec<(Retry, object_store::path::Path, EnvelopeMark)>,
    ) -> Result<()> {
        if retries.is_empty() {
            return Ok(());
        }
        let accounted: Vec<Retry> = retries.iter().map(|(r, ..)| r.clone()).collect();
        self.write(move |c, _| {
            let mut plan = Plan::new();
            for retry in &accounted {
                if c.get(&keys::delivery_number(retry.number)).is_none() {
                    plan.batch.put(
                        keys::delivery_number(retry.number),
                        number_record(&retry.delivery, retry.size),
                    );
                }
                if c.get(&keys::missing(retry.number)).is_some() {
                    plan.batch.delete(keys::missing(retry.number));
                }
            }
            Ok((plan, ()))
        })
        .await?;
        let (store, blobs) = (self.blobs.store().clone(), &self.blobs);
        futures::stream::iter(retries)
            .map(|(retry, path, mark)| {
                let store = &store;
                async move {
                    if blobs.delete(&retry.blob).await.is_ok() {
                        delete_envelope(store, &path, &mark).await?;
                    }
                    Ok::<_, Error>(())
                }
            })
            .buffer_unordered(CHECK_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Records as missing every delivery number up to `issued` (and up to the highest of
    /// `found`) above the highest checked before that no envelope accounts for: none in
    /// `found`, none imported or quarantined before (`N` record), not already missing
    /// (`O` record). Returns the numbers newly missing.
    async fn record_missing(
        &mut self,
        issued: u64,
        found: &std::collections::BTreeSet<u64>,
    ) -> Result<Vec<u64>> {
        let top = found.last().copied().unwrap_or(0).max(issued);
        if top <= checked_through(&self.index) {
            return Ok(Vec::new());
        }
        let found = found.clone();
        self.write(move |c, _| {
            let mut plan = Plan::new();
            let mut missing = Vec::new();
            let from = checked_through(c);
            for number in from.saturating_add(1)..=top {
                if found.contains(&number)
                    || c.get(&keys::delivery_number(number)).is_some()
                    || c.get(&keys::missing(number)).is_some()
                {
                    continue;
                }
                plan.batch.put(
                    keys::missing(number),
                    vec![crate::format::mail::MAIL_RECORD_VERSION],
                );
                missing.push(number);
            }
            if top > from {
                plan.batch
                    .put(keys::DELIVERIES_CHECKED, number_to_bytes(top).to_vec());
            }
            Ok((plan, missing))
        })
        .await
    }

    /// Whether deliveries may be waiting for import: the directory issued a delivery
    /// number above the highest an import has checked, or a number checked before is
    /// still missing (its envelope may arrive late). One read of the trusted directory and
    /// no store request: what a poller checks at every interval
    /// ([`SharedAccount`](crate::engine::SharedAccount) does).
    ///
    /// # Errors
    /// A directory failure.
    pub async fn deliveries_pending(&self) -> Result<bool> {
        Ok(self.deliveries_waiting().await? > 0)
    }

    /// How many deliveries may be waiting for import: the delivery numbers the directory
    /// issued above the highest an import has checked, and those checked before that are
    /// still missing. One read of the trusted directory and no store request. An
    /// estimate from above: a retry of a delivery imported before takes a number too.
    ///
    /// # Errors
    /// A directory failure.
    pub async fn deliveries_waiting(&self) -> Result<u64> {
        let issued = self.directory.delivery_counter(&self.account()).await?;
        let missing = self.missing_deliveries().len() as u64;
        Ok(issued
            .saturating_sub(checked_through(&self.index))
            .saturating_add(missing))
    }

    /// Whether the store lists a pending envelope whose delivery is not quarantined: one
    /// LIST of the account's delivery prefix, and index lookups. What a companion polls, since its local directory does not hold the
    /// provider's delivery counter that [`deliveries_pending`](Self::deliveries_pending)
    /// reads. An envelope of a delivery imported before (a retry) counts too, so that
    /// the import removes it.
    ///
    /// # Errors
    /// A backend failure.
    pub async fn envelopes_waiting(&self) -> Result<bool> {
        let mut listed = self
            .blobs
            .store()
            .list(Some(&naming::delivery_prefix(&self.account())));
        while let Some(meta) = listed.try_next().await? {
            let Some(delivery) = meta
                .location
                .filename()
                .and_then(|name| DeliveryId::from_hex(name).ok())
            else {
                continue;
            };
            if self.index.get(&keys::quarantined(&delivery)).is_none() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Delivery numbers the directory issued whose envelope was never found (withheld or
    /// deleted by the store, or lost by a deliverer that failed after taking its number
    /// and so did not acknowledge the message), oldest first. A number leaves the list
    /// when its delivery arrives late and is imported (or quarantined).
    pub fn missing_deliveries(&self) -> Vec<u64> {
        self.index
            .prefix(&[keys::MISSING])
            .filter_map(|(k, _)| keys::parse_number_key(k))
            .filter(|n| self.index.get(&keys::delivery_number(*n)).is_none())
            .collect()
    }

    /// Imports checked deliveries in one commit, in their order: each gets the next UID
    /// of its mailbox (INBOX if it names none that exists). Returns where each went, or
    /// `None` for one another importer imported meanwhile.
    async fn import_checked(
        &mut self,
        ready: &[Deliverable],
    ) -> Result<Vec<Option<(MailboxId, u32)>>> {
        if ready.is_empty() {
            return Ok(Vec::new());
        }
        // Ids for the mailboxes a delivery names that may have to be created.
        let created_ids: std::collections::HashMap<&str, MailboxId> = ready
            .iter()
            .map(|d| (d.mailbox.as_str(), MailboxId::random(&self.rng)))
            .collect();
        self.write(|c, modseq| {
            let mut plan = Plan::new();
            let mut mailboxes: Vec<_> = super::all_mailboxes(c)?
                .into_iter()
                .map(|(id, r)| mailbox_of(id, r))
                .collect();
            // The next UID of each mailbox this commit adds to.
            let mut next: std::collections::HashMap<MailboxId, u32> = Default::default();
            let mut placed = Vec::with_capacity(ready.len());
            for d in ready {
                let imported = keys::imported(&d.delivery);
                if c.get(&imported).is_some() || plan.batch.get(&imported).is_some() {
                    placed.push(None);
                    continue;
                }
                let mailbox = match mailboxes.iter().find(|m| same_name(&m.name, &d.mailbox)) {
                    Some(m) => m.id,
                    None if super::check_name(&d.mailbox).is_ok() => {
                        let id = created_ids[d.mailbox.as_str()];
                        let created = created_mailbox(&d.mailbox, &mailboxes, modseq);
                        plan.batch.put(keys::mailbox(&id), created.to_bytes());
                        mailboxes.push(mailbox_of(id, created));
                        id
                    }
                    // No name, or one no mailbox may have.
                    None => INBOX_ID,
                };
                let uid = match next.get(&mailbox) {
                    Some(&uid) => uid,
                    None => uid_next(c, &mailbox)?,
                };
                let after = uid.checked_add(1).ok_or_else(|| {
                    Error::LimitReached("the UIDs of this mailbox are exhausted".into())
                })?;
                next.insert(mailbox, after);
                // Deterministic ids: two importers of one delivery write the same records.
                let email = EmailId::from_bytes(*d.delivery.as_bytes());
                let mut instance = [0u8; 8];
                instance.copy_from_slice(&d.delivery.as_bytes()[..8]);
                let thread = ThreadId::from_bytes(*d.delivery.as_bytes());
                let unanalyzed = EmailRecord {
                    pin: d.pin,
                    internal_date: d.internal_date,
                    size: d.pin.len(),
                    thread,
                    provenance: Provenance::SealedDelivery,
                    analyzed: false,
                    envelope: Envelope::default(),
                    parts: Vec::new(),
                    header_block: None,
                    preview: None,
                    created_modseq: modseq,
                    stored_details: None,
                };
                let record = match d
                    .analysis
                    .clone()
                    .and_then(|a| unanalyzed.clone().with_analysis(a).ok())
                {
                    Some(mut analyzed) => {
                        analyzed.thread =
                            super::join_thread(c, &analyzed.envelope, thread, &mut plan.batch);
                        analyzed
                    }
                    None => unanalyzed,
                };
                plan.batch.put(keys::email(&email), record.to_bytes());
                plan.add_message(
                    &mailbox,
                    uid,
                    &instance,
                    &MessageRecord {
                        email,
                        modseq,
                        size: d.pin.len(),
                        flags: d.flags.clone(),
                    },
                );
                plan.batch.put(imported, number_to_bytes(modseq).to_vec());
                // Imported on a re-check: out of quarantine.
                if c.get(&keys::quarantined(&d.delivery)).is_some() {
                    plan.batch.delete(keys::quarantined(&d.delivery));
                }
                // Its number accounted for; if it was reported missing, it arrived late.
                plan.batch.put(
                    keys::delivery_number(d.number),
                    number_record(&d.delivery, d.pin.len()),
                );
                if c.get(&keys::missing(d.number)).is_some() {
                    plan.batch.delete(keys::missing(d.number));
                }
                placed.push(Some((mailbox, uid)));
            }
            Ok((plan, placed))
        })
        .await
    }

    /// Quarantines `delivery`, and accounts for its `number` if its signature verified
    /// (its envelope is there: the number is not missing).
    async fn quarantine(
        &mut self,
        delivery: &DeliveryId,
        number: Option<u64>,
        rejection: &Rejection,
    ) -> Result<()> {
        let delivery = *delivery;
        let reason = rejection.reason();
        self.write(move |c, _| {
            let mut plan = Plan::new();
            let mut value = vec![crate::format::mail::MAIL_RECORD_VERSION];
            value.extend_from_slice(reason.as_bytes());
            plan.batch.put(keys::quarantined(&delivery), value);
            if let Some(number) = number {
                plan.batch
                    .put(keys::delivery_number(number), number_record(&delivery, 0));
                if c.get(&keys::missing(number)).is_some() {
                    plan.batch.delete(keys::missing(number));
                }
            }
            Ok((plan, ()))
        })
        .await
    }

    /// Deliveries refused at import, with the reason. Their envelopes and bodies stay in
    /// the store for inspection.
    pub fn quarantined(&self) -> Vec<(DeliveryId, String)> {
        self.index
            .prefix(&[keys::QUARANTINE])
            .filter_map(|(k, v)| {
                let id = keys::tagged_id(k)?;
                Some((DeliveryId::from_bytes(id), parse_quarantine(v)))
            })
            .collect()
    }

    /// The email of message `uid`, with its envelope fields and MIME structure computed
    /// from the body if they were not yet (a sealed delivery imported without reading
    /// it): one full read, then one commit; later calls read nothing.
    ///
    /// The analysis is its own record beside the email record, written only if the email
    /// is still there and not analyzed meanwhile: a concurrent rewrite of the body (the
    /// epoch job, which changes the email record's pin) and the analysis both hold,
    /// whichever commits first, with or without compare-and-swap.
    ///
    /// # Errors
    /// As [`Mailstore::email`] and [`Mailstore::read`]; [`Error::InvalidArgument`] if the
    /// message was removed meanwhile.
    #[tracing::instrument(level = "debug", skip_all, fields(account = %self.account(), requests = tracing::field::Empty, bytes_read = tracing::field::Empty, bytes_written = tracing::field::Empty))]
    pub async fn analyze(&mut self, mailbox: MailboxId, uid: u32) -> Result<EmailRecord> {
        super::metered(async move {
            let email = self.email(mailbox, uid)?;
            if email.analyzed {
                return Ok(email);
            }
            // As at append, a body above the parse limit is parsed for its header only: only
            // that much of it is read.
            let limit = self.config.max_parse_len;
            let analysis = if email.size > limit as u64 {
                let prefix = self.read_range(&email, 0..limit as u64).await?;
                super::mime::analyze(&prefix, true)
            } else {
                super::mime::analyze(&self.read(&email).await?, false)
            };
            let id = self.email_id_of(mailbox, uid)?;
            self.write(move |c, _| {
                let mut plan = Plan::new();
                // Read again inside the commit: the record may have changed since the body
                // was read (a rewritten body, an analysis by another server, an expunge).
                let current = super::email_record(c, &id)?.ok_or_else(|| Error::NoSuchMessage {
                    what: format!("email {id}"),
                })?;
                if current.analyzed {
                    return Ok((plan, current));
                }
                // The thread given at import stays (RFC 8474 §5.2, RFC 8621 §4.1.1: a
                // message's THREADID never changes), even when the message answers one of
                // another thread; its ids, now known, name that thread, so that a message
                // answering it later joins it.
                let thread = current.thread;
                super::name_thread(c, &analysis.envelope, thread, &mut plan.batch);
                let analysis = EmailAnalysis {
                    thread,
                    ..analysis.clone()
                };
                plan.batch.put(keys::analysis(&id), analysis.to_bytes());
                Ok((plan, current.with_analysis(analysis)?))
            })
            .await
        })
        .await
    }

    fn email_id_of(&self, mailbox: MailboxId, uid: u32) -> Result<EmailId> {
        super::select_uids(&self.index, &mailbox, &[uid])?
            .into_iter()
            .next()
            .map(|(_, _, m)| m.email)
            .ok_or_else(|| Error::NoSuchMessage {
                what: format!("UID {uid}"),
            })
    }
}

/// What the index knows of a listed delivery, looked up before its envelope is read.
enum Known {
    /// Not imported: its envelope is read and imported.
    New,
    /// Quarantined, and the pass skips those: not read.
    Skipped,
    /// Imported before: its envelope is a retry's (with a body of its own) or the
    /// imported one's (its delete failed). The body of the imported message; `None` if
    /// its record does not read.
    Imported(Option<Option<crate::ids::BlobId>>),
}

/// One pass of the import, in steps, so that a caller that shares the [`Mailstore`]
/// (the [`SharedAccount`](crate::engine::SharedAccount)) holds it only for the steps
/// that need it: the listing, the reading of the envelopes, their key work and the
/// checks of the bodies take none of it; [`Mailstore::look_up`] reads the index;
/// [`Mailstore::drop_retries`], [`Mailstore::import_batch`] and
/// [`Mailstore::finish_import`] commit. In order: [`Mailstore::import_run`],
/// [`list`](Self::list), [`Mailstore::look_up`], [`read`](Self::read),
/// [`Mailstore::drop_retries`] of [`take_retries`](Self::take_retries), then for each
/// [`next_batch`](Self::next_batch): [`check`](Self::check), [`Mailstore::import_batch`],
/// [`delete_envelopes`](Self::delete_envelopes); then [`Mailstore::finish_import`].
/// Each commit checks again what it writes against the index as it is then (another
/// importer may have imported a delivery meanwhile): a run interleaved with other
/// writers or importers imports each delivery once.
pub(crate) struct ImportRun {
    pass: Pass,
    keys: Vec<AccountKey>,
    verifying_keys: Vec<[u8; 32]>,
    /// The same, parsed once for the run.
    verifying: Vec<ed25519_dalek::VerifyingKey>,
    blobs: crate::blob::AccountBlobs,
    directory: std::sync::Arc<dyn crate::directory::Directory>,
    account: crate::ids::AccountId,
    /// The directory's delivery counter, read before the listing.
    issued: u64,
    listed: Vec<(DeliveryId, object_store::path::Path, Known)>,
    /// Envelopes to import, by claimed number: (number, delivery, path, length, bytes if
    /// held).
    pending: std::collections::VecDeque<(
        u64,
        DeliveryId,
        object_store::path::Path,
        usize,
        Option<bytes::Bytes>,
    )>,
    retries: Vec<(Retry, object_store::path::Path, EnvelopeMark)>,
    /// Verified numbers of the envelopes found (imported, quarantined or deferred, or a
    /// second envelope of a delivery imported before).
    found: std::collections::BTreeSet<u64>,
    report: ImportReport,
    /// Where the run's time went, logged at its end (at debug level).
    times: ImportTimes,
}

/// The wall time of an import's steps, summed over its batches.
#[derive(Debug, Default)]
struct ImportTimes {
    /// The counter read and the listing.
    list: std::time::Duration,
    /// The envelopes read (and held) before the batches.
    read: std::time::Duration,
    /// Envelopes not held, read again in their batch.
    reread: std::time::Duration,
    /// The key work: Ed25519 verifications and X25519 openings.
    open: std::time::Duration,
    /// The bodies checked in the store.
    bodies: std::time::Duration,
    /// The quarantines and import commits.
    commit: std::time::Duration,
    /// The envelopes' deletes.
    delete: std::time::Duration,
    batches: usize,
}

impl ImportRun {
    /// Step 1: reads the directory's delivery counter, then lists the pending envelopes.
    pub(crate) async fn list(&mut self) -> Result<()> {
        let started = std::time::Instant::now();
        // Read before listing: every number up to it was issued before the listing, so
        // its envelope is listed unless withheld (or still being written).
        self.issued = self.directory.delivery_counter(&self.account).await?;
        self.listed = self
            .blobs
            .store()
            .list(Some(&naming::delivery_prefix(&self.account)))
            .map_ok(|meta| meta.location)
            .try_collect::<Vec<_>>()
            .await?
            .into_iter()
            .filter_map(|path| {
                let id = DeliveryId::from_hex(path.filename()?).ok()?;
                Some((id, path, Known::New))
            })
            .collect();
        self.times.list += started.elapsed();
        Ok(())
    }

    /// Step 3: reads the envelopes listed (a few at a time, in the order listed), holds
    /// up to [`MAX_HELD_ENVELOPES`] bytes of them (the others are read again in turn),
    /// orders them by their claimed numbers; sets aside the retries of deliveries
    /// imported before ([`take_retries`](Self::take_retries)) and deletes the imported
    /// deliveries' own envelopes.
    pub(crate) async fn read(&mut self) -> Result<()> {
        let started = std::time::Instant::now();
        let store = self.blobs.store().clone();
        let mut reads = futures::stream::iter(std::mem::take(&mut self.listed))
            .map(|(delivery, path, known)| {
                let store = &store;
                async move {
                    let bytes = match known {
                        Known::Skipped => None,
                        _ => read_envelope(store, &path).await?,
                    };
                    Ok::<_, Error>((delivery, path, known, bytes))
                }
            })
            .buffered(CHECK_CONCURRENCY);
        let mut pending = Vec::new();
        let mut held = 0usize;
        while let Some((delivery, path, known, bytes)) = reads.try_next().await? {
            let Some(bytes) = bytes else {
                continue;
            };
            if let Known::Imported(imported_body) = known {
                // A retry of a delivery imported before (same delivery id): it took a
                // number of its own, which its envelope accounts for (not missing).
                let retry = verify_envelope(&bytes, &delivery, &self.blobs, &self.verifying_keys)
                    .ok()
                    .and_then(|object| {
                        self.found.insert(object.number);
                        let imported_body = imported_body?;
                        if imported_body == Some(object.blob) {
                            return None;
                        }
                        // A body this run cannot size (its epoch is not among the keys):
                        // left for a later pass, the envelope deleted as before.
                        let opened = open_envelope(&object, &self.blobs, &self.keys).ok()?;
                        Some(Retry {
                            delivery,
                            number: object.number,
                            blob: object.blob,
                            size: opened.blob.len(),
                        })
                    });
                // Read as found: a retry written after it is not deleted with it.
                let mark = EnvelopeMark::of(&bytes);
                match retry {
                    Some(retry) => self.retries.push((retry, path, mark)),
                    None => delete_envelope(&store, &path, &mark).await?,
                }
                self.report.already_imported += 1;
                continue;
            }
            // Unverified: only the order. Envelopes that do not parse go last.
            let number = crate::delivery::claimed_number(&bytes).unwrap_or(u64::MAX);
            // Held in memory up to a bound, read again in turn above it.
            let len = bytes.len();
            held += len;
            let bytes = (held <= MAX_HELD_ENVELOPES).then_some(bytes);
            pending.push((number, delivery, path, len, bytes));
        }
        drop(reads);
        pending.sort_by_key(|(number, delivery, ..)| (*number, *delivery));
        self.pending = pending.into();
        self.times.read += started.elapsed();
        Ok(())
    }

    /// Step 4: the retries found by [`read`](Self::read), for [`Mailstore::drop_retries`].
    pub(crate) fn take_retries(&mut self) -> Vec<(Retry, object_store::path::Path, EnvelopeMark)> {
        std::mem::take(&mut self.retries)
    }

    /// Step 5: the next batch to import, the oldest pending deliveries: at most `max` of
    /// them and [`IMPORT_BATCH_BYTES`] of envelopes (what it holds in memory and roughly
    /// what its segment carries), with at least one; `None` when none are left.
    pub(crate) fn next_batch(
        &mut self,
        max: usize,
    ) -> Option<Vec<(DeliveryId, object_store::path::Path, Option<bytes::Bytes>)>> {
        let mut batch = Vec::new();
        let mut batch_bytes = 0usize;
        while let Some((.., len, _)) = self.pending.front() {
            if batch.len() >= max.max(1)
                || (!batch.is_empty() && batch_bytes + len > IMPORT_BATCH_BYTES)
            {
                break;
            }
            batch_bytes += len;
            batch.extend(
                self.pending
                    .pop_front()
                    .map(|(_, delivery, path, _, bytes)| (delivery, path, bytes)),
            );
        }
        (!batch.is_empty()).then_some(batch)
    }

    /// Step 6: checks a batch for import, in its order: the envelopes not held are read
    /// again (those gone are left out), every envelope is verified and opened on all
    /// cores at once (an Ed25519 verification and an X25519 agreement each, off the async
    /// executor), then the bodies are checked in the store a few at a time. For each
    /// delivery: its id, its number once its signature verified, and either what its
    /// import needs or why it is refused. The error is a backend failure.
    pub(crate) async fn check(
        &mut self,
        batch: Vec<(DeliveryId, object_store::path::Path, Option<bytes::Bytes>)>,
    ) -> Result<Vec<Checked>> {
        let started = std::time::Instant::now();
        self.times.batches += 1;
        let store = self.blobs.store();
        let envelopes: Vec<_> = futures::stream::iter(batch)
            .map(|(delivery, path, bytes)| async move {
                let bytes = match bytes {
                    Some(bytes) => Some(bytes),
                    None => read_envelope(store, &path).await?,
                };
                Ok::<_, Error>(bytes.map(|bytes| (delivery, path, bytes)))
            })
            .buffered(CHECK_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?
            .into_iter()
            .flatten()
            .collect();
        self.times.reread += started.elapsed();
        let started = std::time::Instant::now();
        let (blobs, verifying) = (self.blobs.clone(), self.verifying.clone());
        let keys: Vec<AccountKey> = self.keys.iter().map(AccountKey::duplicate).collect();
        let work = envelopes.len().saturating_mul(KEY_WORK_BYTES);
        let opened = crate::cpu::offload(work, move || {
            let named: Vec<(&[u8], DeliveryId)> = envelopes
                .iter()
                .map(|(delivery, _, bytes)| (bytes.as_ref(), *delivery))
                .collect();
            let open =
                |chunk: &[(&[u8], DeliveryId)]| open_deliveries(chunk, &blobs, &keys, &verifying);
            // Spread over rayon's pool only off the executor (`cpu::parallel`).
            let opened: Vec<Opened> = if crate::cpu::parallel(work) {
                use rayon::prelude::*;
                named.par_chunks(VERIFY_CHUNK).flat_map_iter(open).collect()
            } else {
                named.chunks(VERIFY_CHUNK).flat_map(open).collect()
            };
            envelopes
                .into_iter()
                .zip(opened)
                .map(|((delivery, path, bytes), opened)| {
                    (delivery, path, EnvelopeMark::of(&bytes), opened)
                })
                .collect::<Vec<_>>()
        })
        .await?;
        self.times.open += started.elapsed();
        let started = std::time::Instant::now();
        let blobs = &self.blobs;
        let checked = futures::stream::iter(opened)
            .map(|(delivery, path, mark, opened)| async move {
                let (number, pin, envelope) = match opened {
                    Ok(opened) => opened,
                    Err((number, rejection)) => return Ok((delivery, number, Err(rejection))),
                };
                match blobs.verify_stored(&pin).await {
                    Ok(()) => {}
                    Err(Error::Tampered | Error::NotFound { .. }) => {
                        return Ok((delivery, Some(number), Err(Rejection::BadBody)))
                    }
                    Err(e) => return Err(e),
                }
                Ok((
                    delivery,
                    Some(number),
                    Ok(Deliverable {
                        delivery,
                        number,
                        path,
                        mark,
                        pin,
                        internal_date: envelope.internal_date,
                        flags: Flags::from_names(envelope.flags.iter().map(String::as_str))
                            .unwrap_or_default(),
                        // The analysis the deliverer computed from the plaintext: the
                        // message is imported analyzed, with no body read. One that does
                        // not parse is left out (computed at the first read instead).
                        analysis: envelope
                            .analysis
                            .as_deref()
                            .and_then(|bytes| EmailAnalysis::parse(bytes).ok()),
                        // Its text, for the text index; one extracted under other rules
                        // is left out (the message is indexed by reading its body).
                        text: envelope
                            .text
                            .filter(|t| t.version == crate::mail::text::index::text_version())
                            .map(|t| ExtractedText {
                                header: t.header,
                                body: t.body,
                                mime: t.mime,
                                complete: t.complete,
                            }),
                        mailbox: envelope.mailbox,
                    }),
                ))
            })
            .buffered(CHECK_CONCURRENCY)
            .try_collect()
            .await;
        self.times.bodies += started.elapsed();
        checked
    }

    /// Step 7: deletes the envelopes of imported deliveries, each only if it is still
    /// the one read ([`delete_envelope`]; a failed delete leaves one that the next import
    /// removes unread).
    ///
    /// # Errors
    /// A backend failure of a check (the envelope is left).
    pub(crate) async fn delete_envelopes(
        &mut self,
        envelopes: &[(object_store::path::Path, EnvelopeMark)],
    ) -> Result<()> {
        let started = std::time::Instant::now();
        let store = self.blobs.store().clone();
        // Owned, so that the future is `Send` for any lifetime (a spawned poller runs it).
        let deleted = futures::stream::iter(envelopes.to_vec())
            .map(|(path, mark)| {
                let store = store.clone();
                async move { delete_envelope(&store, &path, &mark).await }
            })
            .buffer_unordered(CHECK_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await;
        self.times.delete += started.elapsed();
        deleted.map(|_| ())
    }
}

/// The record of a mailbox that an import creates because a delivery names it (an
/// operator's migration of a folder tree, a delivery to a folder): unsubscribed, with the
/// special-use role its name is known by ([`SpecialUse::for_mailbox_name`]) unless a
/// mailbox of `existing` holds that role.
fn created_mailbox(name: &str, existing: &[super::Mailbox], modseq: u64) -> MailboxRecord {
    let special_use = SpecialUse::for_mailbox_name(name)
        .filter(|role| !existing.iter().any(|m| m.special_use == Some(*role)));
    MailboxRecord {
        name: name.to_owned(),
        subscribed: false,
        special_use,
        // Above any UIDVALIDITY an earlier mailbox of this name had.
        uid_validity: u32::try_from(modseq).unwrap_or(u32::MAX),
        modseq,
    }
}
