//! Layer 6: sealed, signed ingest. Mail arrives while its owner is offline, so the
//! receiving server (LMTP) seals it to the account's public key: a [`Deliverer`] holds
//! the store, the trusted directory's public data and the provider's Ed25519 signing key,
//! and nothing that opens mail.
//!
//! A delivery is two objects: the body as a sealed blob (`format::blob`, envelope 2: file
//! key wrapped for the account and, where the key model names one, for the officer) and
//! a signed envelope (`format::delivery`) sealed to the account, naming the blob, its
//! header and length, the target mailbox, the internal date and initial flags. The key
//! holder imports deliveries into mailboxes (`Mailstore::import_deliveries`): it verifies
//! the signature against the provider's key in the directory, opens the envelope, checks
//! the stored body's size, header bytes and final chunk with ranged GETs, pins the body (file key
//! re-wrapped; the body is neither downloaded nor re-uploaded) and records the delivery id
//! so that a replay is refused.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> mailvault::Result<()> {
//! use std::sync::Arc;
//! use mailvault::crypto::{AccountKey, RandomSource};
//! use mailvault::delivery::{Deliverer, DeliveryOptions, DeliverySigningKey};
//! use mailvault::directory::{AccountRecord, Directory, KeyModel, MemoryDirectory};
//! use mailvault::ids::{AccountId, DeploymentId};
//!
//! let rng = RandomSource::os();
//! let store = mailvault::storage::open_store("memory://")?;
//! let directory = Arc::new(MemoryDirectory::new());
//! let signing = DeliverySigningKey::generate(&rng);
//! directory.set_delivery_key(signing.verifying_key()).await?;
//! // The account as the directory knows it: its key model and public key.
//! let (account, key) = (AccountId::random(&rng), AccountKey::generate(1, &rng));
//! directory
//!     .set_account_record(&account, AccountRecord::new(KeyModel::DeviceOnly, vec![(1, key.public_key())], [7; 32]))
//!     .await?;
//!
//! let deliverer = Deliverer::new(store, DeploymentId::random(&rng), directory, signing);
//! let receipt = deliverer
//!     .deliver_bytes(account, b"Subject: hi\r\n\r\nhello", DeliveryOptions::default())
//!     .await?;
//! assert_eq!(receipt.size, 20);
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

use bytes::Bytes;
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use futures::{Stream, StreamExt};
use object_store::{ObjectStoreExt, PutMode, PutOptions};
use sha2::Digest;
use zeroize::Zeroizing;

use crate::blob::{
    officer_binding, AccountBlobs, BlobStore, SealedBlob, SealedBlobWriter, SealedOfficer,
    SealedRecipients,
};
use crate::crypto::kdf;
use crate::crypto::record::RecordCipher;
use crate::crypto::{AccountKey, Key32, RandomSource};
use crate::directory::{AccountLimits, Directory};
use crate::error::{Error, Result};
use crate::format::blob::{BlobKind, BlobLayout, SEALED_HEADER_LEN};
use crate::format::delivery::{
    DeliveryEnvelope, EnvelopeObject, EnvelopeText, SIGNATURE_DOMAIN, SIGNATURE_LEN,
};
use crate::ids::{AccountId, BlobId, DeliveryId, DeploymentId};
use crate::storage::{naming, DynStore};

mod group;

use group::CounterBatches;

/// The provider's delivery signing key (Ed25519). Its public half goes in the trusted
/// directory ([`Directory::set_delivery_key`]). It signs deliveries; it opens nothing.
/// Zeroized on drop; no `Debug`.
pub struct DeliverySigningKey(SigningKey);

impl DeliverySigningKey {
    /// A new random key.
    pub fn generate(rng: &RandomSource) -> Self {
        Self(SigningKey::from_bytes(&rng.bytes32()))
    }

    /// The key from its 32 secret bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&bytes))
    }

    /// The 32 secret bytes, to keep.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public verification key, for the directory.
    pub fn verifying_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }
}

/// Types a [`Deliverer`] may hold: none of them can open mail. Sealed, and implemented
/// only for the deliverer's own parts; a key that opens mail (an [`AccountKey`], an
/// [`OfficerSecret`](crate::keys::OfficerSecret), a root or file key, an X25519
/// `StaticSecret`) does not implement it. Every field of [`Deliverer`] must (see
/// `Deliverer::holds_no_mail_secret`), so a deliverer holding such a key does not
/// compile.
///
/// The deliverer's parts pass the bound:
///
/// ```
/// fn holds_no_mail_secret<T: mailvault::delivery::NoMailSecret>() {}
/// holds_no_mail_secret::<mailvault::delivery::DeliverySigningKey>();
/// holds_no_mail_secret::<mailvault::delivery::PublicDirectory>();
/// holds_no_mail_secret::<mailvault::blob::BlobStore>();
/// holds_no_mail_secret::<mailvault::crypto::RandomSource>();
/// // The secret types below exist under these paths (so the failures below are the bound's).
/// let _ = mailvault::crypto::AccountKey::generate(1, &mailvault::crypto::RandomSource::os());
/// let _ = mailvault::keys::OfficerSecret::from_bytes([1; 32]);
/// let _ = x25519_dalek::StaticSecret::from([1; 32]);
/// ```
///
/// and the same line with a key that opens mail does not compile:
///
/// ```compile_fail
/// fn holds_no_mail_secret<T: mailvault::delivery::NoMailSecret>() {}
/// holds_no_mail_secret::<mailvault::crypto::AccountKey>();
/// ```
///
/// ```compile_fail
/// fn holds_no_mail_secret<T: mailvault::delivery::NoMailSecret>() {}
/// holds_no_mail_secret::<mailvault::keys::OfficerSecret>();
/// ```
///
/// ```compile_fail
/// fn holds_no_mail_secret<T: mailvault::delivery::NoMailSecret>() {}
/// holds_no_mail_secret::<x25519_dalek::StaticSecret>();
/// ```
///
/// (Stable rustdoc does not check a `compile_fail` block's error code; the compiling block
/// above is the control that the only error left is the unmet bound. The unit tests of
/// this module check the crate-private secret types as well.)
pub trait NoMailSecret: private::Sealed {}

mod private {
    pub trait Sealed {}
}

macro_rules! no_mail_secret {
    ($($t:ty),*) => { $(impl private::Sealed for $t {} impl NoMailSecret for $t {})* };
}

no_mail_secret!(
    BlobStore,
    PublicDirectory,
    DeliverySigningKey,
    RandomSource,
    usize,
    u64,
    bool
);

/// The trusted directory seen through what a deliverer may read: public keys, key
/// models, officer public keys. (The per-account secrets it also holds are not reachable
/// through this type.) Its writes (delivery numbers, delivered bytes) are group commits:
/// the deliveries to one account in flight at once share one durable write.
#[derive(Debug, Clone)]
pub struct PublicDirectory {
    directory: Arc<dyn Directory>,
    /// The delivery counters, raised by [`Directory::issue_delivery_numbers`].
    numbers: Arc<CounterBatches>,
    /// The bytes delivered, raised by [`add_delivered_bytes`](crate::directory::add_delivered_bytes).
    delivered: Arc<CounterBatches>,
}

impl PublicDirectory {
    /// The public view of `directory`, with no write under way.
    fn new(directory: Arc<dyn Directory>) -> Self {
        let numbers = {
            let directory = Arc::clone(&directory);
            CounterBatches::new(Arc::new(move |account, count| {
                let directory = Arc::clone(&directory);
                Box::pin(async move { directory.issue_delivery_numbers(&account, count).await })
            }))
        };
        let delivered = {
            let directory = Arc::clone(&directory);
            CounterBatches::new(Arc::new(move |account, bytes| {
                let directory = Arc::clone(&directory);
                Box::pin(async move {
                    crate::directory::add_delivered_bytes(directory.as_ref(), &account, bytes).await
                })
            }))
        };
        Self {
            directory,
            numbers,
            delivered,
        }
    }

    /// Where mail for `account` of `deployment` is sealed to: its newest epoch's public
    /// key, and the current officer key with the account's officer binding (derived from
    /// its directory secret) when its key model requires officer sealing.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an account the directory does not know (or that was
    /// erased); [`Error::Config`] when the model requires an officer and the directory
    /// has no current officer key.
    pub async fn recipients(
        &self,
        deployment: &DeploymentId,
        account: AccountId,
    ) -> Result<SealedRecipients> {
        Ok(self.recipients_and_limits(deployment, account).await?.0)
    }

    /// As [`recipients`](Self::recipients), with the account's limits.
    async fn recipients_and_limits(
        &self,
        deployment: &DeploymentId,
        account: AccountId,
    ) -> Result<(SealedRecipients, AccountLimits)> {
        let record = self
            .directory
            .account_record(&account)
            .await?
            .ok_or_else(|| Error::invalid(format!("unknown account {account}")))?;
        let (epoch, public_key) = record
            .public_keys
            .iter()
            .max_by_key(|(epoch, _)| *epoch)
            .copied()
            .ok_or_else(|| Error::Config(format!("account {account} has no public key")))?;
        let officer = if record.model.requires_officer() {
            let current = self
                .directory
                .officer_keys()
                .await?
                .into_iter()
                .find(|k| k.current)
                .ok_or_else(|| Error::Config("the key model requires an officer key".into()))?;
            Some(SealedOfficer {
                public_key: current.key.to_bytes(),
                binding: officer_binding(&record, deployment, &account),
            })
        } else {
            None
        };
        Ok((
            SealedRecipients {
                account,
                epoch,
                public_key,
                officer,
            },
            record.limits,
        ))
    }

    /// The bytes `account` uses as far as a deliverer can tell: what its sessions last
    /// published as stored, plus the deliveries acknowledged since that the published
    /// state had not imported yet.
    ///
    /// # Errors
    /// Directory failures.
    pub async fn estimated_usage(&self, account: &AccountId) -> Result<u64> {
        let published = crate::directory::published_usage(self.directory.as_ref(), account).await?;
        let delivered = self
            .directory
            .mark(account, crate::directory::DELIVERED_BYTES_RECORD)
            .await?
            .generation;
        Ok(published
            .stored
            .saturating_add(delivered.saturating_sub(published.imported)))
    }

    /// Refuses `adding` bytes (or, with 0, any more) for `account` over `limit`.
    async fn check_quota(
        &self,
        account: &AccountId,
        limit: Option<u64>,
        adding: u64,
    ) -> Result<()> {
        let Some(limit) = limit else {
            return Ok(());
        };
        let used = self.estimated_usage(account).await?.saturating_add(adding);
        if used > limit || (adding == 0 && used >= limit) {
            return Err(Error::OverQuota { limit, used });
        }
        Ok(())
    }
}

impl PublicDirectory {
    /// The number of a new delivery to `account`: its delivery counter in the directory,
    /// raised atomically. The calls for one account that overlap share one write
    /// ([`Directory::issue_delivery_numbers`] of as many), and each returns once that
    /// write is durable.
    ///
    /// # Errors
    /// Directory failures.
    pub async fn issue_delivery_number(&self, account: &AccountId) -> Result<u64> {
        self.numbers.raise(*account, 1).await
    }

    /// Adds `bytes` to the bytes delivered to `account` (counted for its quota until an
    /// import accounts for them); returns once durable. The calls for one account that
    /// overlap share one write.
    async fn add_delivered_bytes(&self, account: &AccountId, bytes: u64) -> Result<u64> {
        self.delivered.raise(*account, bytes).await
    }
}

/// How a delivery lands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryOptions {
    /// Target mailbox name: `INBOX` when empty or not a valid name; a mailbox of this
    /// name that the account lacks is created at import, with the special-use role its
    /// name is known by (`SpecialUse::for_mailbox_name`) unless another mailbox holds it.
    pub mailbox: String,
    /// Internal date (Unix seconds); the time of delivery when `None`.
    pub internal_date: Option<i64>,
    /// Initial flags (IMAP names, as `Flags::from_names` takes them).
    pub flags: Vec<String>,
    /// The delivery's id, chosen by the caller to make a retry idempotent (see
    /// [`Deliverer::delivery_id_for`]); a random one when `None`. A delivery whose id
    /// was delivered before is stored once: the deliverer writes nothing while the
    /// first envelope waits for import, and the import drops a second envelope of an id
    /// it imported.
    pub id: Option<DeliveryId>,
    /// With no `id`: derive the delivery's id from the message itself,
    /// [`Deliverer::delivery_id_for`] of the SHA-256 of the plaintext as it streamed
    /// followed by the number of the retry window it arrived in (Unix seconds divided by
    /// the deliverer's [retry window](Deliverer::with_retry_window), u64 big-endian), so
    /// that a client's resend of the same bytes (an LMTP client that lost the replies to
    /// a dropped connection or a killed server) is stored once, without the caller
    /// holding the message to hash it first. A different message, the same one to
    /// another account, or the same bytes again in a later window (a second message,
    /// not a retry) get another id. A resend that crosses a window's end is stored
    /// twice: a duplicate, never a loss.
    pub id_from_content: bool,
}

/// One recipient of [`Deliverer::deliver_each`]: an account and how the message lands
/// in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The account.
    pub account: AccountId,
    /// Mailbox, date, flags and delivery id for this account.
    pub options: DeliveryOptions,
}

impl Recipient {
    /// `account`, with default options (the inbox, now, no flags, a random id).
    pub fn new(account: AccountId) -> Self {
        Self {
            account,
            options: DeliveryOptions::default(),
        }
    }
}

/// What [`Deliverer::deliver`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryReceipt {
    /// The delivery (its envelope's name).
    pub delivery: DeliveryId,
    /// The sealed body.
    pub blob: BlobId,
    /// Body size in bytes.
    pub size: u64,
    /// The delivery's id was delivered before and its envelope is still waiting for
    /// import: nothing was written (`blob` is the earlier delivery's body).
    pub duplicate: bool,
}

/// What a deliverer seals into the envelopes of a message beside its options.
#[derive(Default)]
struct Sealed {
    /// An [`EmailAnalysis`](crate::format::mail::EmailAnalysis) record with a zero thread
    /// (the import chooses it).
    analysis: Option<Vec<u8>>,
    /// Its searchable text.
    text: Option<EnvelopeText>,
}

/// The analysis (with `analysis`) and the searchable text (with `text`) sealed into the
/// envelopes of a message (`plaintext` whole, or its start when `header_only`), from one
/// parse, off the async executor's threads; each `None` when it is larger than an
/// envelope carries.
async fn analyze(plaintext: Vec<u8>, header_only: bool, analysis: bool, text: bool) -> Sealed {
    let work = move || {
        let (analyzed, extracted) = if text {
            let (a, t) = crate::mail::analyze_with_text(&plaintext, header_only);
            (a, Some(t))
        } else {
            (crate::mail::analyze(&plaintext, header_only), None)
        };
        Sealed {
            analysis: analysis
                .then(|| analyzed.to_bytes())
                .filter(|a| a.len() <= crate::format::delivery::MAX_ENVELOPE_ANALYSIS_LEN),
            text: extracted
                .filter(|t| t.len() <= crate::format::delivery::MAX_ENVELOPE_TEXT_LEN)
                .map(|t| EnvelopeText {
                    version: crate::mail::text::index::text_version(),
                    complete: t.complete,
                    header: t.header,
                    body: t.body,
                    mime: t.mime,
                }),
        }
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(sealed) => sealed,
        Err(e) => {
            tracing::warn!(error = %e, "message analysis failed");
            Sealed::default()
        }
    }
}

/// A recipient's delivery once checked: its sealed body begun, or done before.
enum Started {
    Writing(SealedRecipients, AccountLimits, Box<SealedBlobWriter>),
    Duplicate(DeliveryReceipt),
}

/// Writes sealed, signed deliveries. Holds public data and the signing key only.
pub struct Deliverer {
    blobs: BlobStore,
    directory: PublicDirectory,
    signing: DeliverySigningKey,
    rng: RandomSource,
    max_parse_len: usize,
    analyze: bool,
    index_text: bool,
    retry_window: u64,
}

/// How long a resend of the same bytes counts as a retry of a delivery made with
/// [`DeliveryOptions::id_from_content`]: 7 days, above the time MTAs keep retrying
/// (Postfix's `maximal_queue_lifetime` is 5 days).
pub const DEFAULT_RETRY_WINDOW: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

impl Deliverer {
    /// The compile-time proof that a deliverer holds no mail secret: the pattern names
    /// every field (no `..`), so adding a field to [`Deliverer`] fails to compile until it
    /// is listed here, and each field's type must implement [`NoMailSecret`], which no
    /// key that opens mail implements. Never called: checked where it is referenced below.
    const fn holds_no_mail_secret(&self) {
        const fn part<T: NoMailSecret>(_: &T) {}
        let Self {
            blobs,
            directory,
            signing,
            rng,
            max_parse_len,
            analyze,
            index_text,
            retry_window,
        } = self;
        part(blobs);
        part(directory);
        part(signing);
        part(rng);
        part(max_parse_len);
        part(analyze);
        part(index_text);
        part(retry_window);
    }
}

const _: fn(&Deliverer) = Deliverer::holds_no_mail_secret;

impl std::fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer").finish_non_exhaustive()
    }
}

/// The bytes a delivery signature covers.
fn signed_message(deployment: &DeploymentId, account: &AccountId, signed: &[u8]) -> Vec<u8> {
    [
        SIGNATURE_DOMAIN,
        deployment.as_bytes(),
        account.as_bytes(),
        signed,
    ]
    .concat()
}

/// The key sealing an envelope's body, from the delivery's file key.
fn envelope_key(
    file_key: &Key32,
    deployment: &DeploymentId,
    account: &AccountId,
    delivery: &DeliveryId,
) -> Key32 {
    kdf::derive_key(
        file_key,
        kdf::LABEL_DELIVERY_ENVELOPE,
        &[
            deployment.as_bytes(),
            account.as_bytes(),
            delivery.as_bytes(),
        ],
    )
}

impl Deliverer {
    /// A deliverer writing to `store` for `deployment`, reading public keys and policy from
    /// `directory`, signing with `signing`.
    pub fn new(
        store: DynStore,
        deployment: DeploymentId,
        directory: Arc<dyn Directory>,
        signing: DeliverySigningKey,
    ) -> Self {
        Self {
            blobs: BlobStore::new(store, deployment),
            directory: PublicDirectory::new(directory),
            signing,
            rng: RandomSource::os(),
            max_parse_len: crate::mail::MailConfig::default().max_parse_len,
            analyze: true,
            index_text: true,
            retry_window: DEFAULT_RETRY_WINDOW.as_secs(),
        }
    }

    /// How long a resend of the same bytes is a retry for
    /// [`DeliveryOptions::id_from_content`] ([`DEFAULT_RETRY_WINDOW`] by default; at
    /// least one second): set it above the longest time the MTA in front keeps retrying
    /// a message.
    pub fn with_retry_window(mut self, window: std::time::Duration) -> Self {
        self.retry_window = window.as_secs().max(1);
        self
    }

    /// Whether to analyse messages at delivery (the default): their envelope fields, MIME
    /// structure and thread references are sealed into the envelope, so the import needs
    /// no body read. Without, messages are analysed at their first read
    /// ([`Mailstore::analyze`](crate::mail::Mailstore::analyze)).
    pub fn with_analysis(mut self, analyze: bool) -> Self {
        self.analyze = analyze;
        self
    }

    /// Whether to extract the searchable text of messages at delivery (the default), from
    /// the parse of the analysis: it is sealed into the envelope (up to
    /// [`MAX_ENVELOPE_TEXT_LEN`](crate::format::delivery::MAX_ENVELOPE_TEXT_LEN) bytes)
    /// and the import adds it to the account's text index, so a text search needs no
    /// body read. Without, the message is indexed by reading its body.
    pub fn with_text(mut self, text: bool) -> Self {
        self.index_text = text;
        self
    }

    /// Analyses messages up to `max_parse_len` bytes whole (as
    /// [`MailConfig::max_parse_len`](crate::mail::MailConfig::max_parse_len)); larger ones
    /// for their header only (one part).
    pub fn with_max_parse_len(mut self, max_parse_len: usize) -> Self {
        self.max_parse_len = max_parse_len;
        self
    }

    /// Uses `config` for body uploads (multipart threshold, part size).
    pub fn with_blob_config(mut self, config: crate::blob::BlobConfig) -> Self {
        self.blobs = self.blobs.with_config(config);
        self
    }

    /// Delivers one message held in memory. See [`deliver`](Self::deliver).
    ///
    /// # Errors
    /// As [`deliver`](Self::deliver).
    pub async fn deliver_bytes(
        &self,
        account: AccountId,
        body: &[u8],
        options: DeliveryOptions,
    ) -> Result<DeliveryReceipt> {
        let body = Bytes::copy_from_slice(body);
        self.deliver(account, futures::stream::iter([Ok(body)]), options)
            .await
    }

    /// The delivery id for an idempotency `key` chosen by the caller (an LMTP server
    /// uses a digest of the message as received: a retry by the client carries the same
    /// bytes). Keyed by the provider's signing key, so the store, which sees delivery ids
    /// as object names, cannot test a guess of what an account received; the same for
    /// every deliverer of the deployment that holds the same signing key.
    pub fn delivery_id_for(&self, account: &AccountId, key: &[u8]) -> DeliveryId {
        let digest: [u8; 32] = sha2::Sha256::digest(key).into();
        let derived = kdf::derive_key(
            &Key32::from_bytes(*self.signing.to_bytes()),
            kdf::LABEL_DELIVERY_ID,
            &[
                self.blobs.deployment().as_bytes(),
                account.as_bytes(),
                &digest,
            ],
        );
        let mut id = [0u8; 16];
        id.copy_from_slice(&derived.expose()[..16]);
        DeliveryId::from_bytes(id)
    }

    /// The number of the retry window (see [`with_retry_window`](Self::with_retry_window))
    /// that a delivery to `account` made at `unix_secs` (seconds since the Unix epoch)
    /// falls in: what [`DeliveryOptions::id_from_content`] derives the id from.
    ///
    /// Each account's windows are offset by its own amount, keyed by the signing key
    /// (as [`delivery_id_for`](Self::delivery_id_for)): the windows of all accounts do not
    /// end at one instant (a resend straddling that instant would be stored twice for
    /// every account at once), and the store cannot tell when an account's window ends.
    pub fn retry_window_at(&self, account: &AccountId, unix_secs: u64) -> u64 {
        let offset = kdf::derive_key(
            &Key32::from_bytes(*self.signing.to_bytes()),
            kdf::LABEL_DELIVERY_WINDOW,
            &[self.blobs.deployment().as_bytes(), account.as_bytes()],
        );
        let mut first = [0u8; 8];
        first.copy_from_slice(&offset.expose()[..8]);
        let offset = u64::from_be_bytes(first) % self.retry_window;
        unix_secs.saturating_add(offset) / self.retry_window
    }

    /// Delivers one message to several accounts, sealed once per recipient (each with its
    /// own file key), from the message held in memory. See
    /// [`deliver_each`](Self::deliver_each).
    ///
    /// # Errors
    /// As [`deliver_each`](Self::deliver_each).
    pub async fn deliver_to_many(
        &self,
        recipients: &[Recipient],
        body: &[u8],
    ) -> Result<Vec<Result<DeliveryReceipt>>> {
        let body = Bytes::copy_from_slice(body);
        self.deliver_each(recipients, futures::stream::iter([Ok(body)]), None)
            .await
    }

    /// Seals a message streamed in pieces for `account` and writes its signed envelope.
    /// Returns once both are durable; memory stays bounded whatever the size.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown account or a public key of low order;
    /// [`Error::Config`] when the directory lacks a key the policy needs; backend errors
    /// (the delivery is then not acknowledged; a body written without its envelope is
    /// never imported).
    pub async fn deliver<S>(
        &self,
        account: AccountId,
        body: S,
        options: DeliveryOptions,
    ) -> Result<DeliveryReceipt>
    where
        S: Stream<Item = Result<Bytes>> + Unpin,
    {
        let mut results = self
            .deliver_each(&[Recipient { account, options }], body, None)
            .await?;
        results.pop().expect("one result per recipient")
    }

    /// Delivers one message, read once from `body`, to every recipient: each gets its own
    /// sealed copy and envelope, written side by side while the message streams in, and
    /// its own result, so that one recipient's failure (an unknown account, a quota, a
    /// backend error on its writes) leaves the others' deliveries acknowledged, as LMTP
    /// replies per recipient (RFC 2033 §4.2). A recipient's `Ok` means its body and
    /// envelope are durable.
    ///
    /// With `max_size`, a message that grows beyond it is refused while it streams
    /// ([`Error::TooBig`]) and nothing of it stays stored.
    ///
    /// # Errors
    /// The outer error is for the message as a whole, and then no recipient got it:
    /// [`Error::TooBig`], or the error `body` yielded. Per recipient: as
    /// [`deliver`](Self::deliver).
    #[tracing::instrument(level = "debug", skip_all, fields(recipients = recipients.len()))]
    pub async fn deliver_each<S>(
        &self,
        recipients: &[Recipient],
        body: S,
        max_size: Option<u64>,
    ) -> Result<Vec<Result<DeliveryReceipt>>>
    where
        S: Stream<Item = Result<Bytes>> + Unpin,
    {
        let mut results: Vec<Option<Result<DeliveryReceipt>>> = Vec::new();
        let mut writers: Vec<Option<(SealedRecipients, AccountLimits, SealedBlobWriter)>> =
            Vec::new();
        for recipient in recipients {
            match self.start(recipient).await {
                Ok(Started::Writing(to, limits, writer)) => {
                    results.push(None);
                    writers.push(Some((to, limits, *writer)));
                }
                Ok(Started::Duplicate(receipt)) => {
                    results.push(Some(Ok(receipt)));
                    writers.push(None);
                }
                Err(e) => {
                    results.push(Some(Err(e)));
                    writers.push(None);
                }
            }
        }
        let mut body = body;
        let mut size = 0u64;
        let mut content = recipients
            .iter()
            .any(|r| r.options.id.is_none() && r.options.id_from_content)
            .then(sha2::Sha256::new);
        // The plaintext for the analysis, up to the parse limit (the header only above).
        let mut parse = crate::mail::ParseBuffer::new(self.max_parse_len);
        let failure = loop {
            let piece = match body.next().await {
                None => break None,
                Some(Err(e)) => break Some(e),
                Some(Ok(piece)) => piece,
            };
            size += piece.len() as u64;
            if let Some(hasher) = content.as_mut() {
                hasher.update(&piece);
            }
            if self.analyze || self.index_text {
                parse.push(&piece);
            }
            if let Some(limit) = max_size.filter(|limit| size > *limit) {
                break Some(Error::TooBig { limit });
            }
            // A recipient's own size limit refuses it alone.
            for i in 0..writers.len() {
                let over = writers[i]
                    .as_ref()
                    .and_then(|(_, limits, _)| limits.message_size)
                    .filter(|limit| size > *limit);
                if let Some(limit) = over {
                    if let Some((_, _, writer)) = writers[i].take() {
                        let _ = writer.abort().await;
                    }
                    results[i] = Some(Err(Error::TooBig { limit }));
                }
            }
            let writes = writers.iter_mut().map(|slot| {
                let piece = &piece;
                async move {
                    match slot {
                        Some((_, _, writer)) => Some(writer.write_bytes(piece.clone()).await),
                        None => None,
                    }
                }
            });
            let outcomes = futures::future::join_all(writes).await;
            for (i, outcome) in outcomes.into_iter().enumerate() {
                if let Some(Err(e)) = outcome {
                    if let Some((_, _, writer)) = writers[i].take() {
                        let _ = writer.abort().await;
                    }
                    results[i] = Some(Err(e));
                }
            }
        };
        if let Some(e) = failure {
            for (_, _, writer) in writers.into_iter().flatten() {
                let _ = writer.abort().await;
            }
            return Err(e);
        }
        let sealed = if (self.analyze || self.index_text) && writers.iter().any(Option::is_some) {
            let (parse_buffer, too_large) = parse.finish();
            analyze(parse_buffer, too_large, self.analyze, self.index_text).await
        } else {
            Sealed::default()
        };
        let sealed = &sealed;
        let content: Option<[u8; 32]> = content.map(|hasher| hasher.finalize().into());
        let content = content.as_ref();
        let finishing = writers
            .into_iter()
            .zip(recipients)
            .map(|(slot, recipient)| async move {
                match slot {
                    Some((to, limits, writer)) => {
                        let finish = self.finish(recipient, &to, limits, writer, sealed, content);
                        Some(finish.await)
                    }
                    None => None,
                }
            });
        let finished = futures::future::join_all(finishing).await;
        Ok(results
            .into_iter()
            .zip(finished)
            .map(|(early, finished)| {
                early
                    .or(finished)
                    .expect("a recipient either failed early or was written")
            })
            .collect())
    }

    /// Checks a recipient and begins its sealed body, or finds its delivery done.
    async fn start(&self, recipient: &Recipient) -> Result<Started> {
        let options = &recipient.options;
        if options.mailbox.len() + options.flags.iter().map(|f| f.len() + 4).sum::<usize>()
            > crate::format::delivery::MAX_ENVELOPE_OPTIONS_LEN
        {
            return Err(Error::invalid(
                "a delivery's mailbox and flags take at most 512 KiB",
            ));
        }
        if let Some(id) = &options.id {
            if let Some(receipt) = self.delivered_before(&recipient.account, id).await? {
                return Ok(Started::Duplicate(receipt));
            }
        }
        let (to, limits) = self
            .directory
            .recipients_and_limits(&self.blobs.deployment(), recipient.account)
            .await?;
        // Full already: refused before anything is written.
        self.directory
            .check_quota(&recipient.account, limits.storage, 0)
            .await?;
        let writer = self.blobs.sealed_writer(&to, BlobKind::Message)?;
        Ok(Started::Writing(to, limits, Box::new(writer)))
    }

    /// The receipt of delivery `id` to `account` if its envelope is in the store (waiting
    /// for import).
    async fn delivered_before(
        &self,
        account: &AccountId,
        id: &DeliveryId,
    ) -> Result<Option<DeliveryReceipt>> {
        let path = naming::delivery_path(account, id);
        let bytes = match crate::storage::get_bounded(
            self.blobs.store().as_ref(),
            &path,
            crate::format::delivery::MAX_ENVELOPE_LEN as u64,
        )
        .await
        {
            Ok(bytes) => bytes,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        // What another writer put under this name: taken as delivered only when it is
        // signed by this deployment's key (a planted object is not an acknowledgment).
        let object = EnvelopeObject::parse(&bytes).map_err(|_| Error::Tampered)?;
        let own_key = self.signing.verifying_key();
        if object.delivery != *id
            || !signed_by_any(&object, &self.blobs.deployment(), account, &[own_key])
        {
            return Err(Error::Tampered);
        }
        Ok(Some(DeliveryReceipt {
            delivery: *id,
            blob: object.blob,
            size: 0,
            duplicate: true,
        }))
    }

    /// Completes a recipient's body and writes its envelope.
    async fn finish(
        &self,
        recipient: &Recipient,
        to: &SealedRecipients,
        limits: AccountLimits,
        writer: SealedBlobWriter,
        sealed: &Sealed,
        content: Option<&[u8; 32]>,
    ) -> Result<DeliveryReceipt> {
        let account = recipient.account;
        let options = recipient.options.clone();
        let (blob, file_key) = writer.finish_with_key().await?;
        // The quota with this message's size, before it counts as delivered.
        if let Err(e) = self
            .directory
            .check_quota(&account, limits.storage, blob.len())
            .await
        {
            let _ = self
                .blobs
                .store()
                .delete(&naming::blob_path(&account, &blob.id))
                .await;
            return Err(e);
        }
        // Chosen by the caller, or from the content: a retry of it is stored once.
        let window = self.retry_window_at(&account, crate::unix_now());
        let content_id = |window: u64| {
            content.filter(|_| options.id_from_content).map(|digest| {
                self.delivery_id_for(&account, &[&digest[..], &window.to_be_bytes()].concat())
            })
        };
        let chosen = options.id.or_else(|| content_id(window));
        let delivery = chosen.unwrap_or_else(|| DeliveryId::random(&self.rng));
        // An id known only now (from the content): a delivery of it waiting for import
        // makes this one a duplicate before it takes a number (a number taken and never
        // carried by an envelope is reported missing at import). So does one of the
        // previous window's id: a resend just after the window of its first copy ended.
        if chosen.is_some() && options.id.is_none() {
            let previous = window.checked_sub(1).and_then(content_id);
            for id in std::iter::once(delivery).chain(previous) {
                if let Some(receipt) = self.delivered_before(&account, &id).await? {
                    let _ = self
                        .blobs
                        .store()
                        .delete(&naming::blob_path(&account, &blob.id))
                        .await;
                    return Ok(receipt);
                }
            }
        }
        // Taken once the body is durable, just before the envelope: a number is lost (and
        // reported missing at import) only if this delivery fails between the two, and
        // then it is not acknowledged.
        let number = self.directory.issue_delivery_number(&account).await?;
        let envelope = DeliveryEnvelope {
            stored_len: blob.layout.ciphertext_len(),
            body_digest: blob.digest,
            mailbox: options.mailbox,
            internal_date: options.internal_date.unwrap_or(crate::unix_now() as i64),
            flags: options.flags,
            delivered_at: crate::unix_now(),
            analysis: sealed.analysis.clone(),
            text: sealed.text.clone(),
        };
        let object =
            self.seal_envelope(&to.account, &delivery, number, &blob, &file_key, &envelope);
        let written = self
            .blobs
            .store()
            .put_opts(
                &naming::delivery_path(&account, &delivery),
                object.into(),
                PutOptions::from(PutMode::Create),
            )
            .await;
        match written.map_err(Error::from) {
            Ok(_) => {
                // Counted for quotas until an import accounts for it. A failure here
                // leaves the delivery acknowledged and uncounted (the estimate is low
                // until the import).
                if let Err(e) = self
                    .directory
                    .add_delivered_bytes(&account, blob.len())
                    .await
                {
                    tracing::warn!(error = %e, "could not count delivered bytes");
                }
                Ok(DeliveryReceipt {
                    delivery,
                    blob: blob.id,
                    size: blob.len(),
                    duplicate: false,
                })
            }
            // A concurrent attempt of the same delivery id won: its envelope stands, this
            // body is not needed.
            Err(Error::Conflict { .. }) if chosen.is_some() => {
                let _ = self
                    .blobs
                    .store()
                    .delete(&naming::blob_path(&account, &blob.id))
                    .await;
                match self.delivered_before(&account, &delivery).await? {
                    Some(receipt) => Ok(receipt),
                    None => Err(Error::Conflict {
                        path: naming::delivery_path(&account, &delivery).to_string(),
                    }),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn seal_envelope(
        &self,
        account: &AccountId,
        delivery: &DeliveryId,
        number: u64,
        blob: &SealedBlob,
        file_key: &Key32,
        envelope: &DeliveryEnvelope,
    ) -> Vec<u8> {
        let deployment = self.blobs.deployment();
        let body = envelope.to_bytes();
        let sealed_len = body.len() + 24 + 16;
        let prefix = EnvelopeObject::prefix(delivery, &blob.id, &blob.header, number, sealed_len);
        let mut out = Vec::with_capacity(prefix.len() + sealed_len + SIGNATURE_LEN);
        out.extend_from_slice(&prefix);
        RecordCipher::new(&envelope_key(file_key, &deployment, account, delivery))
            .seal(&self.rng, &prefix, &body, &mut out);
        let signature = self
            .signing
            .0
            .sign(&signed_message(&deployment, account, &out));
        out.extend_from_slice(&signature.to_bytes());
        out
    }
}

/// Why a delivery was not imported. Quarantined deliveries stay in the store, listed with
/// their reason; they are never imported silently and never deleted by an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The envelope does not parse.
    Malformed,
    /// The signature does not verify against the provider's key (forged, or moved from
    /// another account or deployment).
    BadSignature,
    /// The envelope does not open with the account's key.
    Unreadable,
    /// The delivery is sealed to a key epoch that the keys given to the import do not
    /// hold (a session opened before another one added the epoch): retryable, with keys
    /// reloaded from the keyring.
    UnknownEpoch,
    /// The body is missing, truncated, extended or altered.
    BadBody,
}

impl Rejection {
    /// Whether reloading the keys may cure it (an unknown epoch): an import that can
    /// reload defers such a delivery instead of quarantining it.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Rejection::UnknownEpoch)
    }

    /// A short reason, as recorded in quarantine.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed envelope",
            Rejection::BadSignature => "signature does not verify",
            Rejection::Unreadable => "envelope does not open with the account key",
            Rejection::UnknownEpoch => "sealed to a key epoch the keyring does not hold",
            Rejection::BadBody => "body missing, truncated or altered",
        }
    }
}

/// An envelope verified and opened.
pub(crate) struct OpenedDelivery {
    pub(crate) envelope: DeliveryEnvelope,
    pub(crate) blob: SealedBlob,
    pub(crate) file_key: Key32,
}

/// The delivery number an envelope claims, before any check (to order pending
/// deliveries; the import verifies it with the rest): `None` if it does not parse.
pub(crate) fn claimed_number(bytes: &[u8]) -> Option<u64> {
    EnvelopeObject::parse(bytes).ok().map(|o| o.number)
}

/// Parses an envelope object found under the account's deliveries with id `named` (its
/// object name) and verifies its signature under one of `verifying_keys` (the directory's
/// delivery key set), for the account of `blobs`.
pub(crate) fn verify_envelope<'a>(
    bytes: &'a [u8],
    named: &DeliveryId,
    blobs: &AccountBlobs,
    verifying_keys: &[[u8; 32]],
) -> std::result::Result<EnvelopeObject<'a>, Rejection> {
    let (deployment, account) = (blobs.deployment(), blobs.account());
    let object = EnvelopeObject::parse(bytes).map_err(|_| Rejection::Malformed)?;
    if object.delivery != *named {
        return Err(Rejection::BadSignature);
    }
    if !signed_by_any(&object, &deployment, &account, verifying_keys) {
        return Err(Rejection::BadSignature);
    }
    Ok(object)
}

/// Whether the envelope `object` of `account` in `deployment` is signed by one of
/// `verifying_keys`.
pub(crate) fn signed_by_any(
    object: &EnvelopeObject<'_>,
    deployment: &DeploymentId,
    account: &AccountId,
    verifying_keys: &[[u8; 32]],
) -> bool {
    signed_by_any_of(
        object,
        deployment,
        account,
        &parse_verifying_keys(verifying_keys),
    )
}

/// `keys` as Ed25519 points, those that are not left out: parsed once for a batch of
/// envelopes (a point decompression each).
pub(crate) fn parse_verifying_keys(keys: &[[u8; 32]]) -> Vec<VerifyingKey> {
    keys.iter()
        .filter_map(|key| VerifyingKey::from_bytes(key).ok())
        .collect()
}

/// [`signed_by_any`] with the keys parsed.
fn signed_by_any_of(
    object: &EnvelopeObject<'_>,
    deployment: &DeploymentId,
    account: &AccountId,
    verifying_keys: &[VerifyingKey],
) -> bool {
    let message = signed_message(deployment, account, object.signed);
    let signature = ed25519_dalek::Signature::from_bytes(&object.signature);
    verifying_keys
        .iter()
        .any(|key| key.verify(&message, &signature).is_ok())
}

/// [`verify_envelope`] of many envelopes of the account of `blobs` at once, each
/// `(bytes, named)`, with `verifying_keys` parsed ([`parse_verifying_keys`]): the
/// signatures of those that parse are first checked together under the first key (the
/// directory's current one, which signs what is delivered now) with Ed25519 batch
/// verification (one multiscalar multiplication for the batch, about half the work of
/// checking them one by one); if the batch fails (an envelope signed by a retired key,
/// or one that does not verify), each is checked on its own under every key, exactly as
/// [`verify_envelope`] does.
pub(crate) fn verify_envelopes<'a>(
    envelopes: &[(&'a [u8], DeliveryId)],
    blobs: &AccountBlobs,
    verifying_keys: &[VerifyingKey],
) -> Vec<std::result::Result<EnvelopeObject<'a>, Rejection>> {
    let (deployment, account) = (blobs.deployment(), blobs.account());
    let parsed: Vec<std::result::Result<EnvelopeObject<'a>, Rejection>> = envelopes
        .iter()
        .map(|(bytes, named)| {
            let object = EnvelopeObject::parse(bytes).map_err(|_| Rejection::Malformed)?;
            if object.delivery != *named {
                return Err(Rejection::BadSignature);
            }
            Ok(object)
        })
        .collect();
    let objects: Vec<&EnvelopeObject<'a>> = parsed.iter().filter_map(|p| p.as_ref().ok()).collect();
    let batch_verified = match verifying_keys.first() {
        Some(current) if objects.len() > 1 => {
            let messages: Vec<Vec<u8>> = objects
                .iter()
                .map(|o| signed_message(&deployment, &account, o.signed))
                .collect();
            let messages: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
            let signatures: Vec<ed25519_dalek::Signature> = objects
                .iter()
                .map(|o| ed25519_dalek::Signature::from_bytes(&o.signature))
                .collect();
            let keys = vec![*current; objects.len()];
            ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
        }
        _ => false,
    };
    parsed
        .into_iter()
        .map(|object| {
            let object = object?;
            if batch_verified || signed_by_any_of(&object, &deployment, &account, verifying_keys) {
                Ok(object)
            } else {
                Err(Rejection::BadSignature)
            }
        })
        .collect()
}

/// Opens a verified envelope `object` with the account's `blobs` and epoch `keys`.
pub(crate) fn open_envelope(
    object: &EnvelopeObject<'_>,
    blobs: &AccountBlobs,
    keys: &[AccountKey],
) -> std::result::Result<OpenedDelivery, Rejection> {
    let (deployment, account) = (blobs.deployment(), blobs.account());
    let key = keys
        .iter()
        .find(|k| k.epoch() == object.header.epoch)
        .ok_or(Rejection::UnknownEpoch)?;
    // The length comes from the envelope; the body itself is checked at import.
    let mut blob = SealedBlob {
        id: object.blob,
        header: object.header,
        layout: BlobLayout::with_header(SEALED_HEADER_LEN, 0).map_err(|_| Rejection::Malformed)?,
        digest: [0; 32],
    };
    let file_key = blobs
        .unwrap_sealed(&blob, key)
        .map_err(|_| Rejection::Unreadable)?;
    let body = Zeroizing::new(
        RecordCipher::new(&envelope_key(
            &file_key,
            &deployment,
            &account,
            &object.delivery,
        ))
        .open(object.sealing_ad(), object.sealed_body)
        .ok_or(Rejection::Unreadable)?,
    );
    let envelope = DeliveryEnvelope::parse(&body).map_err(|_| Rejection::Malformed)?;
    blob.layout = BlobLayout::for_ciphertext_with_header(SEALED_HEADER_LEN, envelope.stored_len)
        .map_err(|_| Rejection::BadBody)?;
    blob.digest = envelope.body_digest;
    Ok(OpenedDelivery {
        envelope,
        blob,
        file_key,
    })
}

#[cfg(test)]
mod tests {
    use std::marker::PhantomData;

    use super::*;

    /// `implements_no_mail_secret!(T)`: whether `T` implements [`NoMailSecret`], as a
    /// constant. An inherent associated constant (only for `T: NoMailSecret`) takes
    /// precedence over the trait's default, so this works on stable for concrete types.
    struct Probe<T: ?Sized>(PhantomData<T>);
    trait NotNoMailSecret {
        const IMPLEMENTS: bool = false;
    }
    impl<T: ?Sized> NotNoMailSecret for Probe<T> {}
    impl<T: ?Sized + NoMailSecret> Probe<T> {
        const IMPLEMENTS: bool = true;
    }
    macro_rules! implements_no_mail_secret {
        ($t:ty) => {
            Probe::<$t>::IMPLEMENTS
        };
    }

    /// Checked at compile time (const blocks): this test fails to build, not to run.
    #[test]
    fn the_parts_of_a_deliverer_hold_no_mail_secret_and_secrets_are_refused() {
        // What a deliverer is made of passes the bound.
        const { assert!(implements_no_mail_secret!(BlobStore)) };
        const { assert!(implements_no_mail_secret!(PublicDirectory)) };
        const { assert!(implements_no_mail_secret!(DeliverySigningKey)) };
        const { assert!(implements_no_mail_secret!(RandomSource)) };
        // Anything that opens mail (or leads to a key that does) does not, crate-private
        // types included.
        const { assert!(!implements_no_mail_secret!(AccountKey)) };
        const { assert!(!implements_no_mail_secret!(Key32)) };
        const { assert!(!implements_no_mail_secret!(crate::keys::RootKey)) };
        const { assert!(!implements_no_mail_secret!(crate::keys::OfficerSecret)) };
        const { assert!(!implements_no_mail_secret!(crate::keys::DeviceKey)) };
        const { assert!(!implements_no_mail_secret!(crate::keys::RecoveryCode)) };
        const { assert!(!implements_no_mail_secret!(crate::keys::UnlockedKeyring)) };
        const { assert!(!implements_no_mail_secret!(x25519_dalek::StaticSecret)) };
        const { assert!(!implements_no_mail_secret!(AccountBlobs)) };
        const { assert!(!implements_no_mail_secret!(crate::engine::Session)) };
        // The whole directory holds per-account secrets; only its public view passes.
        const { assert!(!implements_no_mail_secret!(Arc<dyn Directory>)) };
        const {
            assert!(!implements_no_mail_secret!(
                crate::directory::MemoryDirectory
            ))
        };
    }
}
