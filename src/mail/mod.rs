//! Layer 7: the mailbox model on the encrypted index, what an IMAP4rev2 (RFC 9051) server
//! with CONDSTORE/QRESYNC (RFC 7162) and OBJECTID (RFC 8474), or a JMAP Mail (RFC 8621)
//! server needs: mailboxes, UIDs, flags, modseqs, envelopes, MIME structure, copy and move
//! by reference, expunge, changes since a modseq, and a cheap change check for IDLE/push.
//!
//! All of an account's mail metadata lives in one encrypted index collection (`mail`), so
//! every operation (an append with its UID, a move between mailboxes, an expunge and the
//! release of the body) is one atomic commit. Bodies are encrypted blobs, written once;
//! copies and moves only add records that point at the same body.
//!
//! **Modseqs** are the index generations of the commits that made the changes: they grow
//! with every commit of the account, which RFC 7162 allows (a modseq needs only grow within
//! a mailbox).
//!
//! **UIDs** per backend:
//! - with compare-and-swap, an append computes UIDNEXT from the state it commits on; a
//!   concurrent commit makes it lose, reload and recompute, so UIDs are assigned
//!   linearizably and UIDVALIDITY never changes;
//! - without it (Garage), two servers appending at once may pick one UID. Both messages
//!   are kept (keys carry a random instance), the conflict is detected as soon as a
//!   server sees both, and that server renumbers the mailbox deterministically under
//!   UIDVALIDITY + 1 (the documented way for IMAP to say "UIDs were reassigned"). Without
//!   a conflict UIDVALIDITY never changes.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> mailvault::Result<()> {
//! use std::sync::Arc;
//! use mailvault::blob::BlobStore;
//! use mailvault::crypto::{AccountKey, RandomSource};
//! use mailvault::directory::MemoryDirectory;
//! use mailvault::ids::{AccountId, DeploymentId};
//! use mailvault::index::IndexStore;
//! use mailvault::mail::{AppendOptions, FlagChange, Flags, Mailstore, INBOX};
//!
//! let rng = RandomSource::os();
//! let store = mailvault::storage::open_store("memory://")?;
//! let deployment = DeploymentId::random(&rng);
//! let index = IndexStore::new(store.clone(), deployment, Arc::new(MemoryDirectory::new())).await?;
//! let (account, key) = (AccountId::random(&rng), AccountKey::generate(1, &rng));
//! let blobs = BlobStore::new(store, deployment).account(account, &key);
//! let mut mail = Mailstore::open(&index, blobs, &key).await?;
//!
//! let inbox = mail.mailbox_by_name(INBOX).unwrap().id;
//! let appended = mail
//!     .append(inbox, b"Subject: Lunch?\r\n\r\nAt noon.", AppendOptions::default())
//!     .await?;
//! mail.store_flags(inbox, &[appended.uid], FlagChange::Add(Flags::from_names(["\\Seen"])?), None)
//!     .await?;
//! let view = mail.select(inbox).await?;
//! assert_eq!(view.status.messages, 1);
//! assert!(view.messages[0].flags.contains(Flags::SEEN));
//! # Ok(())
//! # }
//! ```

mod changes;
mod details;
mod import;
mod keys;
mod mailboxes;
mod maintenance;
mod messages;
mod mime;
mod parse_buffer;
mod reencrypt;
mod search;
pub mod text;
mod transaction;
pub(crate) mod verify;

pub use import::ImportReport;
pub(crate) use import::{ImportRun, Pass as ImportPass};
pub(crate) use mime::{analyze, analyze_with_text};
pub(crate) use parse_buffer::ParseBuffer;
pub use reencrypt::EpochProgress;
pub use search::{
    EmailFilter, EmailQuery, EmailQueryResult, EmailSort, EmailSortProperty, HeaderField,
    SearchDay, SearchKey,
};
pub use transaction::{Committed, CreatedEmail, Transaction};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};

pub use crate::format::mail::{
    Address, AddressField, AddressGroup, AddressItem, DetailsLocation, EmailAnalysis, EmailDetails,
    EmailRecord, Envelope, Flags, MailboxRecord, MessageRecord, MimePart, Provenance, SpecialUse,
    MAX_HEADER_BLOCK_LEN, MAX_PREVIEW_CHARS,
};

use self::keys::Instance;
use crate::blob::{AccountBlobs, BlobStream};
use crate::crypto::{AccountKey, RandomSource};
use crate::error::{Error, Result};
use crate::format::mail::{
    number_to_bytes, parse_number, parse_thread, thread_to_bytes, VanishedRecord,
};
use crate::format::BlobKind;
use crate::ids::{AccountId, EmailId, MailboxId, ThreadId};
use crate::index::{Batch, Collection, IndexStore};
use crate::storage::CommitMode;

/// Name of the inbox. It always exists, cannot be deleted or renamed, and its name is
/// matched case-insensitively (RFC 9051 §5.1).
pub const INBOX: &str = "INBOX";

/// The inbox's id: the same in every account, so that two servers creating it at once
/// create one mailbox.
pub const INBOX_ID: MailboxId = MailboxId::from_bytes([0; 16]);

/// Name of the index collection that holds the mail records: what an officer's audit
/// opens to check that the recovered keys read the account's mail
/// (`Provider::officer_audit`).
pub const COLLECTION: &[u8] = b"mail";

/// Tuning of the mailbox model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailConfig {
    /// Messages up to this size are parsed whole at append (envelope and MIME structure);
    /// larger ones are parsed for their header only and read whole. mail-parser needs the
    /// whole message in memory, so this bounds the memory of an append.
    pub max_parse_len: usize,
    /// Whether [`Mailstore::compact`] moves the details of the email records (MIME parts,
    /// header block, preview) to details segments ([`Mailstore::store_details`]), so that
    /// the index a session keeps in memory holds what listing, sorting and metadata
    /// search read, and a `BODYSTRUCTURE` or a part fetch reads the details' pages (one
    /// ranged GET unless cached). On by default; off keeps every record whole in memory.
    pub details_apart: bool,
    /// Whether an append extracts the searchable text of its message (from the same
    /// parse) and hands it to the account's text index (the default), so that a text
    /// search finds it without reading its body; without, the first search that needs
    /// it reads the body.
    pub index_appends: bool,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            max_parse_len: 64 << 20,
            details_apart: true,
            index_appends: true,
        }
    }
}

/// One mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// Stable id (survives renames).
    pub id: MailboxId,
    /// Full name, `/` as hierarchy separator.
    pub name: String,
    /// Whether the user subscribed to it.
    pub subscribed: bool,
    /// Special use.
    pub special_use: Option<SpecialUse>,
    /// UIDVALIDITY.
    pub uid_validity: u32,
}

/// What IMAP `STATUS`/`SELECT` and JMAP `Mailbox/get` report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MailboxStatus {
    /// UIDVALIDITY.
    pub uid_validity: u32,
    /// The UID the next message will get (at least).
    pub uid_next: u32,
    /// The greatest modseq of any change in the mailbox.
    pub highest_modseq: u64,
    /// Messages.
    pub messages: u32,
    /// Messages without `\Seen`.
    pub unseen: u32,
    /// Total size of the messages in bytes.
    pub size: u64,
}

/// Per-account quota usage (RFC 9208 `STORAGE` and `MESSAGE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuotaUsage {
    /// Sum of the sizes of every message in every mailbox (copies count), bytes.
    pub bytes: u64,
    /// Messages in every mailbox.
    pub messages: u64,
}

/// The account's storage quota as a server reports it (IMAP QUOTA, RFC 9208 resource
/// `STORAGE`; JMAP Quotas, RFC 9425): see [`Mailstore::storage_quota`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StorageQuota {
    /// Bytes counted against the quota: every message in every mailbox (copies count) and
    /// the deliveries not imported yet, what an append or a copy is checked against.
    pub used: u64,
    /// The quota, bytes; `None`: the account has no storage quota.
    pub limit: Option<u64>,
}

/// One message of a mailbox, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSummary {
    /// UID.
    pub uid: u32,
    /// EMAILID: shared by copies of the message.
    pub email: EmailId,
    /// Flags and keywords.
    pub flags: Flags,
    /// Modseq of the last change.
    pub modseq: u64,
    /// Size in bytes.
    pub size: u64,
}

/// A selected mailbox: its status and its messages in UID order (message sequence number
/// `n` is `messages[n - 1]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxView {
    /// The mailbox.
    pub mailbox: Mailbox,
    /// Its status.
    pub status: MailboxStatus,
    /// Its messages, by UID.
    pub messages: Vec<MessageSummary>,
}

impl MailboxView {
    /// The message sequence number of `uid`.
    pub fn sequence_of(&self, uid: u32) -> Option<u32> {
        self.messages
            .binary_search_by_key(&uid, |m| m.uid)
            .ok()
            .map(|i| i as u32 + 1)
    }
}

/// Options of an append.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendOptions {
    /// Initial flags.
    pub flags: Flags,
    /// Internal date (Unix seconds); now when `None`.
    pub internal_date: Option<i64>,
    /// Who wrote the message (the key holder unless imported from a sealed delivery).
    pub provenance: Option<Provenance>,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// UIDVALIDITY of the mailbox (for IMAP `APPENDUID`).
    pub uid_validity: u32,
    /// The message's UID.
    pub uid: u32,
    /// Its EMAILID.
    pub email: EmailId,
    /// Its THREADID.
    pub thread: ThreadId,
    /// Modseq of the append.
    pub modseq: u64,
}

/// How [`Mailstore::store_flags`] changes flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagChange {
    /// Adds these flags (`+FLAGS`).
    Add(Flags),
    /// Removes these flags (`-FLAGS`).
    Remove(Flags),
    /// Sets exactly these flags (`FLAGS`).
    Replace(Flags),
}

impl FlagChange {
    fn apply(&self, flags: &Flags) -> Flags {
        match self {
            FlagChange::Add(f) => flags.union(f),
            FlagChange::Remove(f) => flags.difference(f),
            FlagChange::Replace(f) => f.clone(),
        }
    }
}

/// What [`Mailstore::store_flags`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlagsStored {
    /// Modseq of the change (every updated message has it). When no flag changed,
    /// nothing was committed and this is the account's modseq as it was: a modseq that
    /// no later change can have.
    pub modseq: u64,
    /// UIDs whose flags changed.
    pub updated: Vec<u32>,
    /// UIDs left alone because they changed after `unchanged_since` (RFC 7162 `MODIFIED`).
    pub modified: Vec<u32>,
}

/// UIDs assigned by a copy or move (IMAP `COPYUID`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Copied {
    /// UIDVALIDITY of the target mailbox.
    pub uid_validity: u32,
    /// Source UID → target UID, in source UID order.
    pub uids: Vec<(u32, u32)>,
    /// Modseq of the change; the account's modseq as it was when nothing was copied
    /// (nothing committed).
    pub modseq: u64,
}

/// Changes of one mailbox since a modseq (IMAP `CHANGEDSINCE` and `VANISHED`, JMAP
/// `Email/changes` restricted to a mailbox).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailboxChanges {
    /// Messages added or changed since, by UID.
    pub changed: Vec<MessageSummary>,
    /// UIDs expunged since, ascending.
    pub vanished: Vec<u32>,
    /// The mailbox's highest modseq now.
    pub highest_modseq: u64,
}

/// Changes of a whole account since a modseq (JMAP `Email/changes` and
/// `Mailbox/changes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountChanges {
    /// Emails created, or changed (flags, mailboxes), since: [`emails_created`]
    /// and [`emails_updated`] together.
    ///
    /// [`emails_created`]: Self::emails_created
    /// [`emails_updated`]: Self::emails_updated
    pub emails_changed: Vec<EmailId>,
    /// Emails created since (their creation modseq, [`EmailRecord::created_modseq`], is
    /// above `since`), ascending (JMAP `created`).
    pub emails_created: Vec<EmailId>,
    /// Emails that existed at `since` and changed since (keywords, mailboxes), ascending
    /// (JMAP `updated`). An email stored before creation modseqs were recorded (an email
    /// record of version 2 or older) is reported here when it changes.
    pub emails_updated: Vec<EmailId>,
    /// Emails gone since (no mailbox shows them any more).
    pub emails_destroyed: Vec<EmailId>,
    /// Mailboxes created or changed (name, subscription, UIDVALIDITY) since.
    pub mailboxes_changed: Vec<MailboxId>,
    /// Mailboxes deleted since.
    pub mailboxes_destroyed: Vec<MailboxId>,
    /// The account's modseq now (the next `since`).
    pub modseq: u64,
}

/// What [`Mailstore::collect_garbage`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MailGcReport {
    /// Bodies deleted (emails no message referenced any more).
    pub bodies: usize,
    /// Index objects deleted.
    pub index: crate::index::GcReport,
}

/// The live records of one kind in the account's index (see
/// [`Mailstore::index_usage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexUsage {
    /// The kind: the first byte of the keys (`b'E'` email records, `b'H'` message
    /// records... §11.1 of docs/design.md).
    pub kind: u8,
    /// Records of that kind.
    pub records: usize,
    /// Bytes of their keys.
    pub key_bytes: u64,
    /// Bytes of their values.
    pub value_bytes: u64,
}

/// Which part of a MIME part to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartSection {
    /// The part's header and body.
    Whole,
    /// The part's MIME header (IMAP `BODY[1.MIME]`, or `BODY[HEADER]` of the root).
    Header,
    /// The part's body (IMAP `BODY[1.2]`, JMAP blob download).
    Body,
}

/// The mail of one account, open: mailboxes and messages from the encrypted index,
/// bodies from encrypted blobs. Reads are served from memory (after
/// [`refresh`](Self::refresh)); every write is one atomic commit.
pub struct Mailstore {
    index: Collection,
    blobs: AccountBlobs,
    /// The trusted directory (the account's delivery counter, for imports).
    directory: std::sync::Arc<dyn crate::directory::Directory>,
    rng: RandomSource,
    config: MailConfig,
    uid_validity_changes: u64,
    /// The account's limits, from the directory's account record at open.
    limits: crate::directory::AccountLimits,
    /// Usage as of an index generation (the last one counted).
    usage_memo: std::sync::Arc<UsageMemo>,
    /// The text index, opened at the first text search.
    text: tokio::sync::Mutex<text::index::TextSlot>,
    /// Pages of the details segments read lately ([`details`]).
    details_cache: text::cache::PageCache,
}

impl std::fmt::Debug for Mailstore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailstore")
            .field("account", &self.blobs.account())
            .field("modseq", &self.index.generation())
            .finish_non_exhaustive()
    }
}

fn mailbox_of(id: MailboxId, record: MailboxRecord) -> Mailbox {
    Mailbox {
        id,
        name: record.name,
        subscribed: record.subscribed,
        special_use: record.special_use,
        uid_validity: record.uid_validity,
    }
}

fn same_name(a: &str, b: &str) -> bool {
    if a.eq_ignore_ascii_case(INBOX) {
        b.eq_ignore_ascii_case(INBOX)
    } else {
        a == b
    }
}

fn check_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 1024
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.contains("//")
        && !name.chars().any(char::is_control);
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "not a valid mailbox name: {name:?}"
        )))
    }
}

/// The messages of `mailbox` in the state `c`: (UID, instance, record), in UID order.
fn messages(c: &Collection, mailbox: &MailboxId) -> Result<Vec<(u32, Instance, MessageRecord)>> {
    c.prefix(&keys::messages_of(mailbox))
        .map(|(k, v)| {
            let (_, uid, instance) = keys::parse_message(k).ok_or(Error::Tampered)?;
            Ok((uid, instance, MessageRecord::parse(v)?))
        })
        .collect()
}

/// Usage of the state `c`: bytes stored (every message record's size: copies count) and
/// bytes of the deliveries imported ever (the sizes in the `N` records), counted once per
/// generation (`memo`).
fn usage_of(c: &Collection, memo: &UsageMemo) -> Result<(u64, u64)> {
    let mut memo = memo
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((generation, usage)) = *memo {
        if generation == c.generation() {
            return Ok(usage);
        }
    }
    let mut stored = 0u64;
    for (_, v) in c.prefix(&[keys::MESSAGE]) {
        stored = stored.saturating_add(MessageRecord::parse(v)?.size);
    }
    let imported = c
        .prefix(&[keys::DELIVERY_NUMBER])
        .map(|(_, v)| import::number_record_size(v))
        .fold(0u64, u64::saturating_add);
    *memo = Some((c.generation(), (stored, imported)));
    Ok((stored, imported))
}

/// The memo of [`usage_of`]: (generation, (stored, imported)).
type UsageMemo = std::sync::Mutex<Option<(u64, (u64, u64))>>;

/// What a quota check needs besides the state: the limit, and the bytes delivered to
/// the account ever (the directory's `delivered-bytes` mark, read before the commit), so
/// that deliveries not yet imported count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QuotaCheck {
    limit: Option<u64>,
    delivered: u64,
}

/// Refuses `adding` bytes to the state `c` beyond the storage quota (checked inside the
/// commit: with compare-and-swap, two writers cannot both pass on one state). Pending
/// deliveries count: the bytes delivered that the state has not imported.
fn check_quota(c: &Collection, quota: QuotaCheck, adding: u64, memo: &UsageMemo) -> Result<()> {
    let Some(limit) = quota.limit else {
        return Ok(());
    };
    let (stored, imported) = usage_of(c, memo)?;
    let used = stored
        .saturating_add(quota.delivered.saturating_sub(imported))
        .saturating_add(adding);
    if adding > 0 && used > limit {
        return Err(Error::OverQuota { limit, used });
    }
    Ok(())
}

/// The email `id` in the state `c`: its record, with its analysis when it was analyzed
/// after an import (the analysis record, `A`, is kept apart from the email record, `E`).
fn email_record(c: &Collection, id: &EmailId) -> Result<Option<EmailRecord>> {
    let Some(bytes) = c.get(&keys::email(id)) else {
        return Ok(None);
    };
    let record = EmailRecord::parse(bytes)?;
    if record.analyzed {
        // Analyzed at its append or import: no analysis record is ever written for it.
        return Ok(Some(record));
    }
    match c.get(&keys::analysis(id)) {
        Some(analysis) => record
            .with_analysis(EmailAnalysis::parse(analysis)?)
            .map(Some),
        None => Ok(Some(record)),
    }
}

/// The thread a message with `envelope` belongs to in the state `c`: that of the first
/// message it answers, is answered by or shares its Message-ID with (`own` when none is
/// known). Every one of those ids without a thread record gets one naming this thread,
/// so that a message arriving later (a parent after its reply) finds it.
fn join_thread(c: &Collection, envelope: &Envelope, own: ThreadId, batch: &mut Batch) -> ThreadId {
    let related: Vec<&String> = envelope
        .in_reply_to
        .iter()
        .chain(envelope.references.iter())
        .chain(envelope.message_id.iter())
        .collect();
    // What this commit wrote before (an import of many deliveries in one commit) comes
    // first: a reply and its parent imported together join one thread.
    let known = |key: &[u8]| match batch.get(key) {
        Some(written) => written.map(|v| v.to_vec()),
        None => c.get(key).map(<[u8]>::to_vec),
    };
    let thread = related
        .iter()
        .filter_map(|id| known(&keys::thread(id)))
        .find_map(|v| parse_thread(&v).ok())
        .unwrap_or(own);
    name_thread(c, envelope, thread, batch);
    thread
}

/// Makes every id of `envelope` (Message-ID, In-Reply-To, References) that names no
/// thread yet in the state `c` (or earlier in `batch`) name `thread`.
fn name_thread(c: &Collection, envelope: &Envelope, thread: ThreadId, batch: &mut Batch) {
    let known = |key: &[u8]| match batch.get(key) {
        Some(written) => written.is_some(),
        None => c.get(key).is_some(),
    };
    let unknown: Vec<Vec<u8>> = envelope
        .in_reply_to
        .iter()
        .chain(envelope.references.iter())
        .chain(envelope.message_id.iter())
        .map(|id| keys::thread(id))
        .filter(|key| !known(key))
        .collect();
    for key in unknown {
        batch.put(key, thread_to_bytes(&thread).to_vec());
    }
}

fn mailbox_record(c: &Collection, id: &MailboxId) -> Result<Option<MailboxRecord>> {
    c.get(&keys::mailbox(id))
        .map(MailboxRecord::parse)
        .transpose()
}

fn require_mailbox(c: &Collection, id: &MailboxId) -> Result<MailboxRecord> {
    mailbox_record(c, id)?.ok_or_else(|| Error::NoSuchMailbox {
        mailbox: id.to_string(),
    })
}

fn all_mailboxes(c: &Collection) -> Result<Vec<(MailboxId, MailboxRecord)>> {
    c.prefix(&[keys::MAILBOX])
        .map(|(k, v)| {
            let id = keys::tagged_id(k).ok_or(Error::Tampered)?;
            Ok((MailboxId::from_bytes(id), MailboxRecord::parse(v)?))
        })
        .collect()
}

/// The UID the next message of `mailbox` gets: above every UID present or expunged.
fn uid_next(c: &Collection, mailbox: &MailboxId) -> Result<u32> {
    let last_present = c
        .prefix(&keys::messages_of(mailbox))
        .next_back()
        .and_then(|(k, _)| keys::parse_message(k))
        .map_or(0, |(_, uid, _)| uid);
    let last_vanished = c
        .prefix(&keys::vanished_of(mailbox))
        .next_back()
        .and_then(|(k, _)| keys::parse_vanished_uid(k))
        .unwrap_or(0);
    last_present
        .max(last_vanished)
        .checked_add(1)
        .ok_or_else(|| Error::LimitReached("the UIDs of this mailbox are exhausted".into()))
}

/// The messages with these UIDs (every instance, for a UID given twice by a conflict).
fn select_uids(
    c: &Collection,
    mailbox: &MailboxId,
    uids: &[u32],
) -> Result<Vec<(u32, Instance, MessageRecord)>> {
    let wanted: BTreeSet<u32> = uids.iter().copied().collect();
    let mut out = Vec::new();
    for uid in wanted {
        for (k, v) in c.prefix(&keys::message_uid(mailbox, uid)) {
            let (_, uid, instance) = keys::parse_message(k).ok_or(Error::Tampered)?;
            out.push((uid, instance, MessageRecord::parse(v)?));
        }
    }
    Ok(out)
}

/// A batch being planned, with what it does to message references (to tell which emails
/// it leaves unreferenced).
struct Plan {
    batch: Batch,
    dropped: HashMap<EmailId, usize>,
}

impl Plan {
    fn new() -> Self {
        Self {
            batch: Batch::new(),
            dropped: HashMap::new(),
        }
    }

    fn add_message(
        &mut self,
        mailbox: &MailboxId,
        uid: u32,
        instance: &Instance,
        record: &MessageRecord,
    ) {
        self.batch
            .put(keys::message(mailbox, uid, instance), record.to_bytes());
        self.batch.put(
            keys::reference(&record.email, instance),
            mailbox.as_bytes().to_vec(),
        );
    }

    /// Deletes an email's records (its body is deleted after the commit).
    fn delete_email(&mut self, email: &EmailId) {
        self.batch.delete(keys::email(email));
        self.batch.delete(keys::analysis(email));
    }

    /// Removes a message: its record goes, its UID is recorded as vanished.
    fn remove_message(
        &mut self,
        mailbox: &MailboxId,
        uid: u32,
        instance: &Instance,
        email: &EmailId,
        modseq: u64,
    ) {
        self.batch.delete(keys::message(mailbox, uid, instance));
        self.batch.put(
            keys::vanished(mailbox, uid),
            VanishedRecord {
                modseq,
                email: *email,
            }
            .to_bytes()
            .to_vec(),
        );
        self.batch.delete(keys::reference(email, instance));
        *self.dropped.entry(*email).or_default() += 1;
    }

    /// Emails that no message references after this batch: with compare-and-swap their
    /// records go now (the bodies are deleted after the commit); without it they are
    /// marked for deletion after a grace period, as a concurrent copy may still refer to
    /// them.
    fn release(&mut self, c: &Collection, mode: CommitMode) -> Vec<EmailRecord> {
        let mut released = Vec::new();
        let dropped = std::mem::take(&mut self.dropped);
        for (email, _) in dropped {
            let remaining = c
                .prefix(&keys::references_of(&email))
                .filter(|(k, _)| !matches!(self.batch.get(k), Some(None)))
                .count();
            // The batch's range of the email's references, not a scan of the whole batch:
            // an expunge of n messages releases n emails from a batch of O(n) keys.
            let added = self
                .batch
                .prefix(&keys::references_of(&email))
                .filter(|(k, v)| v.is_some() && c.get(k).is_none())
                .count();
            if remaining + added > 0 {
                continue;
            }
            match mode {
                CommitMode::CompareAndSwap => {
                    if let Some(Ok(record)) = c.get(&keys::email(&email)).map(EmailRecord::parse) {
                        released.push(record);
                    }
                    self.delete_email(&email);
                }
                CommitMode::WriterUnique => {
                    self.batch.put(
                        keys::release(&email),
                        number_to_bytes(crate::unix_now()).to_vec(),
                    );
                }
            }
        }
        released
    }
}

impl Mailstore {
    /// Opens the mail of the account that `blobs` belongs to, creating the inbox on first
    /// use.
    ///
    /// # Errors
    /// As [`IndexStore::open`]; [`Error::Tampered`] for a record that does not parse.
    pub async fn open(index: &IndexStore, blobs: AccountBlobs, key: &AccountKey) -> Result<Self> {
        Self::open_with(index, blobs, key, MailConfig::default()).await
    }

    /// Makes the text index follow a root rotation under way (the session opening this
    /// handle knows of it): `old` and `new` are the text index collection's keys under
    /// the previous root and under the new one. The rotation moves the text index apart
    /// from the mail (after it): the text index is opened where it is at each open, not
    /// where the mail is, and opened again where it went when the rotation moves it from
    /// under this handle.
    pub(crate) fn follow_text_rotation(
        &mut self,
        old: std::sync::Arc<crate::index::CollectionKeys>,
        new: std::sync::Arc<crate::index::CollectionKeys>,
    ) {
        self.text.get_mut().follow_rotation(old, new);
    }

    /// As [`open`](Self::open), with a configuration.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub async fn open_with(
        index: &IndexStore,
        blobs: AccountBlobs,
        key: &AccountKey,
        config: MailConfig,
    ) -> Result<Self> {
        let collection = index.open(blobs.account(), key, COLLECTION).await?;
        let text = text::index::TextSlot::new(
            index.clone(),
            blobs.account(),
            index.collection_keys(blobs.account(), key, text::index::COLLECTION),
        );
        let mut mail = Self {
            index: collection,
            blobs,
            directory: index.directory().clone(),
            rng: RandomSource::os(),
            config,
            uid_validity_changes: 0,
            limits: crate::directory::AccountLimits::default(),
            usage_memo: Default::default(),
            text: tokio::sync::Mutex::new(text),
            details_cache: details::details_cache(),
        };
        if let Some(record) = mail.directory.account_record(&mail.account()).await? {
            mail.limits = record.limits;
        }
        if mail.index.get(&keys::mailbox(&INBOX_ID)).is_none() {
            mail.write(|c, _| {
                let mut plan = Plan::new();
                if c.get(&keys::mailbox(&INBOX_ID)).is_some() {
                    return Ok((plan, ()));
                }
                // The same record from every server that creates it.
                plan.batch.put(
                    keys::mailbox(&INBOX_ID),
                    MailboxRecord {
                        name: INBOX.into(),
                        subscribed: true,
                        special_use: None,
                        uid_validity: 1,
                        modseq: 1,
                    }
                    .to_bytes(),
                );
                Ok((plan, ()))
            })
            .await?;
        }
        mail.settle().await?;
        Ok(mail)
    }

    /// The account.
    pub fn account(&self) -> AccountId {
        self.blobs.account()
    }

    /// Reads and writes bodies with `blobs` from now on: the account's blobs with the
    /// epochs of a keyring reloaded since this handle opened (a body or a delivery sealed
    /// to an epoch added meanwhile).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `blobs` belongs to another account or deployment.
    pub fn use_blobs(&mut self, blobs: AccountBlobs) -> Result<()> {
        if blobs.account() != self.blobs.account() || blobs.deployment() != self.blobs.deployment()
        {
            return Err(Error::invalid("blobs of another account"));
        }
        self.blobs = blobs;
        Ok(())
    }

    /// The account's highest modseq (the newest change seen, in any mailbox).
    pub fn modseq(&self) -> u64 {
        self.index.generation()
    }

    /// How many times this handle renumbered a mailbox after a UID conflict (backends
    /// without compare-and-swap only).
    pub fn uid_validity_changes(&self) -> u64 {
        self.uid_validity_changes
    }

    /// Loads what other servers committed. Returns whether anything changed.
    ///
    /// # Errors
    /// As [`IndexStore::open`].
    #[tracing::instrument(level = "debug", skip_all, fields(account = %self.account(), requests = tracing::field::Empty, bytes_read = tracing::field::Empty, bytes_written = tracing::field::Empty))]
    pub async fn refresh(&mut self) -> Result<bool> {
        metered(async move {
            let changed = self.index.refresh().await?;
            if changed {
                self.settle().await?;
            }
            Ok(changed)
        })
        .await
    }

    /// Whether anything changed in the store since `modseq`, with one small request and
    /// without loading it: the check an IDLE or push connection polls.
    ///
    /// # Errors
    /// A backend failure.
    pub async fn changed_since(&self, modseq: u64) -> Result<bool> {
        self.index.changed_since(modseq).await
    }

    /// Waits until something changes after `modseq`, polling every `interval`, for at
    /// most `timeout`; then loads the changes. Returns whether anything changed.
    ///
    /// # Errors
    /// As [`refresh`](Self::refresh).
    pub async fn wait_for_change(
        &mut self,
        modseq: u64,
        interval: Duration,
        timeout: Duration,
    ) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.index.generation() > modseq || self.changed_since(modseq).await? {
                self.refresh().await?;
                return Ok(self.index.generation() > modseq);
            }
            if tokio::time::Instant::now() + interval > deadline {
                return Ok(false);
            }
            tokio::time::sleep(interval).await;
        }
    }

    // ------------------------------------------------------------------ internals

    /// Commits what `plan` computes from the current state (`modseq` is the modseq the
    /// commit will have); on a compare-and-swap conflict, `plan` runs again on the newer
    /// state. An error from `plan` commits nothing.
    async fn write<T>(
        &mut self,
        plan: impl FnMut(&Collection, u64) -> Result<(Plan, T)>,
    ) -> Result<T> {
        self.write_with_info(plan).await.map(|(value, _)| value)
    }

    /// As [`write`](Self::write), with what the commit did.
    async fn write_with_info<T>(
        &mut self,
        mut plan: impl FnMut(&Collection, u64) -> Result<(Plan, T)>,
    ) -> Result<(T, crate::index::CommitInfo)> {
        let mut outcome: Option<Result<T>> = None;
        let info = self
            .index
            .update(|c| match plan(c, c.generation() + 1) {
                Ok((plan, value)) => {
                    outcome = Some(Ok(value));
                    plan.batch
                }
                Err(e) => {
                    outcome = Some(Err(e));
                    Batch::new()
                }
            })
            .await?;
        tracing::debug!(
            generation = info.generation,
            committed = info.committed,
            attempts = info.attempts,
            merged_heads = info.merged_heads,
            "mail commit"
        );
        let value = outcome.expect("update runs the closure at least once")?;
        if info.merged_heads > 0 {
            self.settle().await?;
        }
        Ok((value, info))
    }

    /// Deletes the bodies of released emails, after the commit that released them. A
    /// failure leaves an unreferenced body behind, never a message without one.
    async fn delete_bodies(&self, released: Vec<EmailRecord>) {
        for email in released {
            if let Err(e) = self.blobs.delete(&email.pin.id).await {
                tracing::warn!(error = %e, "could not delete a released message body");
            }
        }
    }

    /// Without compare-and-swap: when the loaded state merges concurrent writers, repairs
    /// what they did at once (UIDs given twice, a name taken twice, messages appended to a
    /// mailbox deleted meanwhile).
    async fn settle(&mut self) -> Result<()> {
        if self.index.mode() == CommitMode::WriterUnique && self.index.concurrent_heads() > 1 {
            self.settle_now().await?;
        }
        Ok(())
    }

    async fn settle_now(&mut self) -> Result<()> {
        // Repairs are deterministic: servers that repair the same state at once write the
        // same records. A repair that raced with more changes is checked again.
        for _ in 0..8 {
            let mut renumbered = 0;
            let info = self
                .index
                .update(|c| match repair(c, c.generation() + 1) {
                    Ok((batch, mailboxes)) => {
                        renumbered = mailboxes;
                        batch
                    }
                    Err(_) => Batch::new(),
                })
                .await?;
            if !info.committed {
                return Ok(());
            }
            self.uid_validity_changes += renumbered;
        }
        Ok(())
    }
}

/// Runs the body of a public operation under a meter
/// ([`storage::metered`](crate::storage::metered)) and records the requests and bytes it
/// made the store serve on the current span (its `requests`, `bytes_read` and
/// `bytes_written` fields).
async fn metered<T>(body: impl std::future::Future<Output = T>) -> T {
    let (out, usage) = crate::storage::metered::scope(body).await;
    let span = tracing::Span::current();
    span.record("requests", usage.requests);
    span.record("bytes_read", usage.bytes_read);
    span.record("bytes_written", usage.bytes_written);
    out
}

/// The modseq an operation reports for its change: the one its commit got (`planned`),
/// or, when there was nothing to change and nothing was committed, the account's modseq
/// as it was, never one that the next real change will get.
fn reported_modseq(info: &crate::index::CommitInfo, planned: u64) -> u64 {
    if info.committed {
        planned
    } else {
        info.generation
    }
}

/// Whether UIDs of `mailbox` conflict: one UID on two messages, one message on two UIDs,
/// or a UID both present and expunged.
fn conflicted(c: &Collection, mailbox: &MailboxId) -> Result<bool> {
    let mut last: Option<u32> = None;
    let mut instances = HashSet::new();
    for (k, _) in c.prefix(&keys::messages_of(mailbox)) {
        let (_, uid, instance) = keys::parse_message(k).ok_or(Error::Tampered)?;
        if last == Some(uid)
            || !instances.insert(instance)
            || c.get(&keys::vanished(mailbox, uid)).is_some()
        {
            return Ok(true);
        }
        last = Some(uid);
    }
    Ok(false)
}

/// The repair of a merged state: the batch, and the number of mailboxes renumbered
/// (an empty batch when nothing needs repair).
fn repair(c: &Collection, modseq: u64) -> Result<(Batch, u64)> {
    let mut batch = Batch::new();
    let mut renumbered = 0;
    let mailboxes = all_mailboxes(c)?;
    let known: HashSet<MailboxId> = mailboxes.iter().map(|(id, _)| *id).collect();
    // A name taken twice: the mailbox with the greater id gets a distinct name.
    let mut by_name: BTreeMap<String, Vec<MailboxId>> = BTreeMap::new();
    for (id, record) in &mailboxes {
        let name = if same_name(&record.name, INBOX) {
            INBOX.to_owned()
        } else {
            record.name.clone()
        };
        by_name.entry(name).or_default().push(*id);
    }
    for (name, ids) in by_name {
        for id in ids.iter().skip(1) {
            if let Some((_, record)) = mailboxes.iter().find(|(m, _)| m == id) {
                let mut record = record.clone();
                record.name = format!("{name} ({})", &id.to_hex()[..8]);
                record.modseq = modseq;
                batch.put(keys::mailbox(id), record.to_bytes());
            }
        }
    }
    // Messages in a mailbox deleted meanwhile: the mailbox comes back, named for it.
    let mut orphans = BTreeSet::new();
    for (k, _) in c.prefix(&[keys::MESSAGE]) {
        let (mailbox, _, _) = keys::parse_message(k).ok_or(Error::Tampered)?;
        if !known.contains(&mailbox) {
            orphans.insert(mailbox);
        }
    }
    for id in &orphans {
        let record = MailboxRecord {
            name: format!("Recovered/{}", &id.to_hex()[..8]),
            subscribed: false,
            special_use: None,
            uid_validity: u32::try_from(modseq).unwrap_or(u32::MAX),
            modseq,
        };
        batch.put(keys::mailbox(id), record.to_bytes());
    }
    // UIDs given twice: renumber under UIDVALIDITY + 1, in order of each message's
    // lowest UID. A message listed under two UIDs (two repairs at once) keeps its newest
    // record. Modseqs stay: clients resynchronise on the UIDVALIDITY change anyway, and a
    // flag change made concurrently keeps its place.
    for (id, record) in &mailboxes {
        if !conflicted(c, id)? {
            continue;
        }
        renumbered += 1;
        let mut newest: HashMap<Instance, (u32, MessageRecord)> = HashMap::new();
        for (old_uid, instance, message) in messages(c, id)? {
            batch.delete(keys::message(id, old_uid, &instance));
            match newest.get_mut(&instance) {
                Some((_, kept)) if kept.modseq >= message.modseq => {}
                Some((_, kept)) => *kept = message,
                None => {
                    newest.insert(instance, (old_uid, message));
                }
            }
        }
        let mut order: Vec<(u32, Instance, MessageRecord)> = newest
            .into_iter()
            .map(|(instance, (uid, message))| (uid, instance, message))
            .collect();
        order.sort_by_key(|(uid, instance, _)| (*uid, *instance));
        for (uid, (_, instance, message)) in (1u32..).zip(order) {
            batch.put(keys::message(id, uid, &instance), message.to_bytes());
        }
        for (k, _) in c.prefix(&keys::vanished_of(id)) {
            batch.delete(k.to_vec());
        }
        let mut record = record.clone();
        record.uid_validity = record.uid_validity.saturating_add(1);
        record.modseq = modseq;
        batch.put(keys::mailbox(id), record.to_bytes());
    }
    Ok((batch, renumbered))
}
