//! # mailvault
//!
//! Per-user encrypted mail storage for mail servers, on any
//! [`object_store`](https://docs.rs/object_store) backend: in memory, a local directory,
//! or S3 (AWS, Garage, MinIO, Ceph, R2...).
//!
//! Message bodies are stored as **encrypted blobs**: cut into 64 KiB chunks sealed with
//! ChaCha20-Poly1305 in the STREAM construction, under a key derived per blob from the
//! account key and the blob's identity, with a key commitment in the header. A blob can
//! be read whole as a stream or by byte range with one ranged GET, using the **pin**
//! (length and header) returned when it was written.
//!
//! ## Tour
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> mailvault::Result<()> {
//! use mailvault::blob::BlobStore;
//! use mailvault::crypto::{AccountKey, RandomSource};
//! use mailvault::format::BlobKind;
//! use mailvault::ids::{AccountId, DeploymentId};
//!
//! let rng = RandomSource::os();
//! // `open_store` takes "memory://", a directory, or "s3://bucket".
//! let store = mailvault::storage::open_store("memory://")?;
//! let blobs = BlobStore::new(store, DeploymentId::random(&rng));
//! let alice = blobs.account(AccountId::random(&rng), &AccountKey::generate(1, &rng));
//!
//! // Stream a body in; keep the pin (in the encrypted index, later).
//! let mut writer = alice.writer(BlobKind::Message);
//! writer.write(b"From: bob@example.org\r\n\r\n").await?;
//! writer.write(b"Lunch?").await?;
//! let pin = writer.finish().await?;
//!
//! // Read a range: one ranged GET, nothing else.
//! assert_eq!(&alice.get_range(&pin, 25..31).await?[..], b"Lunch?");
//! # Ok(())
//! # }
//! ```
//!
//! ## The whole flow
//!
//! A mail server holds a [`engine::Provider`]; its LMTP side delivers through a
//! [`delivery::Deliverer`], which holds public keys and a signing key only; a login
//! opens a [`engine::Session`], whose [`mail::Mailstore`] is what IMAP and JMAP call.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> mailvault::Result<()> {
//! use std::sync::Arc;
//! use mailvault::crypto::RandomSource;
//! use mailvault::delivery::{DeliveryOptions, DeliverySigningKey};
//! use mailvault::directory::{Directory, MemoryDirectory, OfficerKeyEntry};
//! use mailvault::engine::{Provider, ProviderConfig};
//! use mailvault::ids::DeploymentId;
//! use mailvault::keys::OfficerSecret;
//! use mailvault::mail::{FlagChange, Flags, PartSection, INBOX};
//!
//! let rng = RandomSource::os();
//! let store = mailvault::storage::open_store("memory://")?;
//! // Your user database implements `Directory`; it holds what the server trusts.
//! let directory = Arc::new(MemoryDirectory::new());
//! let officer = OfficerSecret::generate(&rng); // kept offline by the security officer
//! directory
//!     .set_officer_keys(vec![OfficerKeyEntry { key: officer.public(), current: true }])
//!     .await?;
//! let signing = DeliverySigningKey::generate(&rng);
//! directory.set_delivery_key(signing.verifying_key()).await?;
//! let provider =
//!     Provider::new(store, DeploymentId::random(&rng), directory, ProviderConfig::default())
//!         .await?;
//!
//! let alice = provider.create_account("correct horse battery staple").await?;
//! // Mail arrives while Alice is offline: sealed to her public key, signed.
//! provider
//!     .deliverer(signing)
//!     .deliver_bytes(alice, b"Subject: hi\r\n\r\nhello", DeliveryOptions::default())
//!     .await?;
//!
//! // She logs in; the session imports what arrived and reads it.
//! let mut session = provider.unlock(alice, "correct horse battery staple").await?;
//! let mut mail = session.mailstore().await?;
//! session.import_deliveries(&mut mail).await?;
//! let inbox = mail.mailbox_by_name(INBOX).expect("INBOX exists").id;
//! let view = mail.select(inbox).await?;
//! let email = mail.analyze(inbox, view.messages[0].uid).await?;
//! assert_eq!(&mail.read_part(&email, 0, PartSection::Body).await?[..], b"hello");
//! let seen = FlagChange::Add(Flags::from_names([Flags::SEEN])?);
//! mail.store_flags(inbox, &[view.messages[0].uid], seen, None).await?;
//! # Ok(())
//! # }
//! ```
//!
//! ## Layers
//!
//! | module | what |
//! |---|---|
//! | [`crypto`] | HKDF key separation, the STREAM chunk loop, key commitment, zeroizing keys |
//! | [`format`] | byte layouts of stored objects; parsers of untrusted bytes |
//! | [`storage`] | opening stores, object names, capability probe, test decorators |
//! | [`keys`] | unlockers and key slots (password, recovery code, device key, officer) |
//! | [`directory`] | what the server trusts: high-water marks against rollback |
//! | [`blob`] | encrypted bodies: streaming write, streaming read, range read |
//! | [`delivery`] | sealed, signed ingest by a deliverer that holds no secret |
//! | [`engine`] | `Provider` (accounts, login, officer tools, erase) and `Session` |
//! | [`index`] | encrypted ordered key/value collections on the commit protocol |
//! | [`mail`] | the mailbox model: mailboxes, UIDs, flags, modseqs, MIME parts, changes |
//!
//! The byte-level formats are in `docs/design.md`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod blob;
mod cpu;
pub mod crypto;
pub mod delivery;
pub mod directory;
pub mod engine;
mod error;
pub mod format;
pub mod ids;
pub mod index;
pub mod keys;
mod localfs;
pub mod mail;
pub mod storage;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use error::{Error, Result};

/// Seconds since the Unix epoch (0 if the clock is before it): slot creation times,
/// delivery dates, grace periods.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
