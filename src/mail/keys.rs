//! Keys of the mail records in the account's `mail` collection (`docs/design.md` §11).
//! The collection seals keys and values alike: none of this reaches the store in clear.
//!
//! ```text
//! M ‖ mailbox (16)                        → mailbox record
//! H ‖ mailbox (16) ‖ UID (u32) ‖ inst (8) → message record   (UID order within a mailbox)
//! V ‖ mailbox (16) ‖ UID (u32)            → vanished record  (expunged UIDs, for QRESYNC)
//! E ‖ email (16)                          → email record     (body pin, envelope, MIME)
//! A ‖ email (16)                          → analysis record  (envelope, MIME, thread of an email imported unread)
//! R ‖ email (16) ‖ inst (8)               → mailbox (16)     (one per message showing it)
//! T ‖ SHA-256(Message-ID)[..16]           → thread record
//! G ‖ email (16)                          → number record    (release: unreferenced since)
//! X ‖ mailbox (16)                        → number record    (deleted mailbox: modseq)
//! W ‖ delivery (16)                       → number record    (imported: modseq; refuses replays)
//! Q ‖ delivery (16)                       → version ‖ reason (quarantined delivery)
//! N ‖ delivery number (u64)               → version ‖ delivery (16) (number accounted for: imported or quarantined)
//! O ‖ delivery number (u64)               → version  (number issued, no envelope found: missing)
//! K                                       → number record (every delivery number up to it checked)
//! J ‖ blob (16)                           → empty            (body unlinked by an epoch rewrite, to delete)
//! ```
//!
//! `inst` is random per message instance: on a backend without compare-and-swap two
//! servers may give one UID to two messages, and the instance keeps both.

use sha2::{Digest, Sha256};

use crate::ids::{BlobId, DeliveryId, EmailId, MailboxId};

pub(crate) const MAILBOX: u8 = b'M';
pub(crate) const MESSAGE: u8 = b'H';
pub(crate) const VANISHED: u8 = b'V';
pub(crate) const EMAIL: u8 = b'E';
pub(crate) const ANALYSIS: u8 = b'A';
pub(crate) const REFERENCE: u8 = b'R';
pub(crate) const THREAD: u8 = b'T';
pub(crate) const RELEASE: u8 = b'G';
pub(crate) const DELETED_MAILBOX: u8 = b'X';
pub(crate) const IMPORTED: u8 = b'W';
pub(crate) const QUARANTINE: u8 = b'Q';
pub(crate) const RETIRED: u8 = b'J';
pub(crate) const DELIVERY_NUMBER: u8 = b'N';
pub(crate) const MISSING: u8 = b'O';
/// The highest delivery number checked (every number up to it accounted for or missing).
pub(crate) const DELIVERIES_CHECKED: &[u8] = b"K";

/// Random per message instance.
pub(crate) type Instance = [u8; 8];

/// The 16-byte id after the one-byte tag of a key (`M`, `E`, `A`, `G`, `X`, `W`, `Q`, `J`).
pub(crate) fn tagged_id(key: &[u8]) -> Option<[u8; 16]> {
    key.get(1..17)?.try_into().ok()
}

pub(crate) fn mailbox(id: &MailboxId) -> Vec<u8> {
    [&[MAILBOX][..], id.as_bytes()].concat()
}

pub(crate) fn retired(id: &BlobId) -> Vec<u8> {
    [&[RETIRED][..], id.as_bytes()].concat()
}

pub(crate) fn imported(id: &DeliveryId) -> Vec<u8> {
    [&[IMPORTED][..], id.as_bytes()].concat()
}

pub(crate) fn delivery_number(number: u64) -> Vec<u8> {
    [&[DELIVERY_NUMBER][..], &number.to_be_bytes()].concat()
}

pub(crate) fn missing(number: u64) -> Vec<u8> {
    [&[MISSING][..], &number.to_be_bytes()].concat()
}

/// The number of an `N` or `O` key (`None` if the key is not one).
pub(crate) fn parse_number_key(key: &[u8]) -> Option<u64> {
    (key.len() == 9).then(|| u64::from_be_bytes(key[1..9].try_into().expect("8 bytes")))
}

pub(crate) fn quarantined(id: &DeliveryId) -> Vec<u8> {
    [&[QUARANTINE][..], id.as_bytes()].concat()
}

pub(crate) fn deleted_mailbox(id: &MailboxId) -> Vec<u8> {
    [&[DELETED_MAILBOX][..], id.as_bytes()].concat()
}

pub(crate) fn messages_of(id: &MailboxId) -> Vec<u8> {
    [&[MESSAGE][..], id.as_bytes()].concat()
}

pub(crate) fn message(id: &MailboxId, uid: u32, instance: &Instance) -> Vec<u8> {
    [&[MESSAGE][..], id.as_bytes(), &uid.to_be_bytes(), instance].concat()
}

pub(crate) fn message_uid(id: &MailboxId, uid: u32) -> Vec<u8> {
    [&[MESSAGE][..], id.as_bytes(), &uid.to_be_bytes()].concat()
}

/// UID and instance of a message key (`None` if the key is not one).
pub(crate) fn parse_message(key: &[u8]) -> Option<(MailboxId, u32, Instance)> {
    if key.len() != 29 || key[0] != MESSAGE {
        return None;
    }
    let mailbox = MailboxId::from_bytes(key[1..17].try_into().ok()?);
    let uid = u32::from_be_bytes(key[17..21].try_into().ok()?);
    Some((mailbox, uid, key[21..29].try_into().ok()?))
}

pub(crate) fn vanished_of(id: &MailboxId) -> Vec<u8> {
    [&[VANISHED][..], id.as_bytes()].concat()
}

pub(crate) fn vanished(id: &MailboxId, uid: u32) -> Vec<u8> {
    [&[VANISHED][..], id.as_bytes(), &uid.to_be_bytes()].concat()
}

pub(crate) fn parse_vanished_uid(key: &[u8]) -> Option<u32> {
    (key.len() == 21 && key[0] == VANISHED)
        .then(|| u32::from_be_bytes(key[17..21].try_into().expect("4 bytes")))
}

pub(crate) fn email(id: &EmailId) -> Vec<u8> {
    [&[EMAIL][..], id.as_bytes()].concat()
}

/// [`email`] without an allocation: a loop over many emails builds its keys in place.
pub(crate) fn email_array(id: &EmailId) -> [u8; 17] {
    let mut key = [EMAIL; 17];
    key[1..].copy_from_slice(id.as_bytes());
    key
}

pub(crate) fn analysis(id: &EmailId) -> Vec<u8> {
    [&[ANALYSIS][..], id.as_bytes()].concat()
}

pub(crate) fn references_of(id: &EmailId) -> Vec<u8> {
    [&[REFERENCE][..], id.as_bytes()].concat()
}

pub(crate) fn reference(id: &EmailId, instance: &Instance) -> Vec<u8> {
    [&[REFERENCE][..], id.as_bytes(), instance].concat()
}

pub(crate) fn thread(message_id: &str) -> Vec<u8> {
    let digest = Sha256::digest(message_id.as_bytes());
    [&[THREAD][..], &digest[..16]].concat()
}

pub(crate) fn release(id: &EmailId) -> Vec<u8> {
    [&[RELEASE][..], id.as_bytes()].concat()
}

pub(crate) fn parse_release(key: &[u8]) -> Option<EmailId> {
    if key.len() != 17 || key[0] != RELEASE {
        return None;
    }
    tagged_id(key).map(EmailId::from_bytes)
}
