//! The crate's one error type.

use std::fmt;

/// What went wrong, in terms a mail server can act on.
///
/// Decryption and integrity failures are deliberately opaque: every way a stored object
/// can fail to authenticate (flipped bit, truncation, swapped chunk, object moved to
/// another name or account, stale pin) is reported as [`Error::Tampered`], so that an
/// attacker who controls the storage learns nothing from the error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object does not exist in the backend.
    #[error("object not found: {path}")]
    NotFound {
        /// Backend path of the missing object.
        path: String,
    },
    /// A conditional write lost: the object already exists or changed meanwhile.
    #[error("conflict: {path} already exists or changed")]
    Conflict {
        /// Backend path of the contested object.
        path: String,
    },
    /// A stored object failed authentication or is malformed.
    #[error("stored data failed authentication")]
    Tampered,
    /// A stored object uses a format version this build does not know.
    #[error("unsupported {object} format version {version}")]
    UnsupportedVersion {
        /// Which kind of object carried the version.
        object: &'static str,
        /// The version byte found.
        version: u8,
    },
    /// The data needs a key epoch that the caller did not provide.
    #[error("no key for epoch {epoch}")]
    EpochUnavailable {
        /// The epoch recorded in the object.
        epoch: u32,
    },
    /// The store offered an older generation of a versioned record than one already seen
    /// (by this session, or by any session, as recorded in the trusted directory): a
    /// replayed or withheld object.
    #[error("rollback: generation {found} is older than generation {seen} already seen")]
    Rollback {
        /// The newest generation seen before.
        seen: u64,
        /// The newest generation the store offers now.
        found: u64,
    },
    /// The index collection was moved under another key by a root rotation
    /// (`docs/design.md` §10.5): it takes no more commits, and this handle holds keys the
    /// account no longer uses. Reload the keyring ([`crate::engine::Session::reload_keyring`]
    /// follows the rotation), open the collection again and retry. A commit that fails
    /// with it is not acknowledged: on a backend without compare-and-swap it may have
    /// been carried over by the rotation, as after a lost response.
    #[error("collection moved by a root rotation: reload the keyring")]
    Moved,
    /// The credential (password, recovery code, device key, officer key) does not open
    /// this slot.
    #[error("wrong credential")]
    WrongCredential,
    /// Stored key-derivation costs exceed the deployment's limits: refused before any
    /// memory is allocated.
    #[error("key derivation costs above the limits (m = {m_kib} KiB, t = {t}, p = {p})")]
    ExcessiveWork {
        /// Memory cost asked for, KiB.
        m_kib: u32,
        /// Passes asked for.
        t: u32,
        /// Lanes asked for.
        p: u32,
    },
    /// A stored object is larger than any valid object of its kind: refused before its
    /// bytes were read (see [`crate::storage::get_bounded`]).
    #[error("stored object {path} has {size} bytes, above the bound of {limit}")]
    TooLarge {
        /// Backend path of the object.
        path: String,
        /// Its size as announced by the store, or the bytes received when the store sent
        /// more than it announced.
        size: u64,
        /// The largest size accepted for an object of its kind.
        limit: u64,
    },
    /// The account's keyring breaks its key model's policy (a slot the model requires is
    /// missing, or one it forbids is there): the server does not open it, and the
    /// keyring sweep lists it.
    #[error("keyring breaks the account's key model: {0}")]
    PolicyViolation(String),
    /// The caller passed an argument that cannot be honoured (range out of bounds...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No mailbox with this id or name (IMAP `NO [TRYCREATE]` for an APPEND, COPY or
    /// MOVE target, `NO [NONEXISTENT]` otherwise; JMAP `notFound`).
    #[error("no such mailbox: {mailbox}")]
    NoSuchMailbox {
        /// The mailbox as the caller named it (id or name).
        mailbox: String,
    },
    /// A mailbox of this name exists already (IMAP `NO [ALREADYEXISTS]`; JMAP
    /// `alreadyExists`).
    #[error("mailbox {name:?} exists")]
    MailboxExists {
        /// The name asked for.
        name: String,
    },
    /// No such message, email or MIME part (IMAP `NO [NONEXISTENT]`; JMAP `notFound`).
    #[error("no such message: {what}")]
    NoSuchMessage {
        /// What was asked for (a UID, an email id, a part).
        what: String,
    },
    /// A hard limit of the mail model was reached (a mailbox's UIDs are exhausted): the
    /// operation cannot succeed until something changes (IMAP `NO [LIMIT]`).
    #[error("limit reached: {0}")]
    LimitReached(String),
    /// The message is larger than the limit in force (IMAP `NO [TOOBIG]`, LMTP `552`,
    /// JMAP `tooLarge`).
    #[error("message larger than the limit of {limit} bytes")]
    TooBig {
        /// The limit, bytes.
        limit: u64,
    },
    /// The account's storage quota does not leave room for this (IMAP `NO [OVERQUOTA]`,
    /// LMTP `552 5.2.2`, JMAP `overQuota`).
    #[error("over quota: {used} of {limit} bytes used")]
    OverQuota {
        /// The quota, bytes.
        limit: u64,
        /// Bytes used, or that would be used with this message.
        used: u64,
    },
    /// A conditional write found the account in another state than the one it was made
    /// for ([`Transaction::if_in_state`](crate::mail::Transaction::if_in_state), JMAP
    /// `ifInState`): nothing was written. Distinct from [`Error::Conflict`], which is a
    /// lost race inside the store that a retry may cure; this one is a client's stale view
    /// (JMAP `stateMismatch`), not transient: the client reloads and decides again.
    #[error("state mismatch: expected state {expected}, the account is at {actual}")]
    StateMismatch {
        /// The state (account modseq) the write was made for.
        expected: u64,
        /// The account's state when the write was checked.
        actual: u64,
    },
    /// A store URL or configuration could not be used.
    #[error("configuration error: {0}")]
    Config(String),
    /// The storage backend failed.
    #[error("storage backend error")]
    Backend {
        /// The backend's own error.
        #[source]
        source: object_store::Error,
    },
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<object_store::Error> for Error {
    fn from(source: object_store::Error) -> Self {
        match source {
            object_store::Error::NotFound { path, .. } => Error::NotFound { path },
            object_store::Error::AlreadyExists { path, .. }
            | object_store::Error::Precondition { path, .. } => Error::Conflict { path },
            source => Error::Backend { source },
        }
    }
}

impl Error {
    /// Whether trying the same operation again, as it is, may succeed: a backend failure
    /// (network, server error, timeout), a lost race ([`Error::Conflict`]) or a collection
    /// moved by a root rotation ([`Error::Moved`], after reloading the keyring). Every
    /// other error is a property of the data, the request or the credential: retrying
    /// gives it again.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Backend { .. } | Error::Conflict { .. } | Error::Moved
        )
    }

    pub(crate) fn invalid(reason: impl fmt::Display) -> Self {
        Error::InvalidArgument(reason.to_string())
    }
}
