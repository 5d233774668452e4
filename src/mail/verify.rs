//! What the mail collection's records pin in the store, for the verification of an
//! account (`engine::Provider::verify_account`), which reads the records from the
//! segments itself (a damaged segment must not stop the rest from being checked).

use super::*;
use crate::format::BlobPin;

/// The first byte of the keys whose values pin a body: the email records (§11.1 of
/// docs/design.md). Each body is pinned by its email record alone; copies, moves and
/// releases refer to the email, not to the body.
pub(crate) const BODY_RECORD: u8 = keys::EMAIL;

/// The body pins of `records` (values of [`BODY_RECORD`] keys), and the number of those
/// values that do not parse as an email record.
pub(crate) fn body_pins<'a>(records: impl Iterator<Item = &'a [u8]>) -> (Vec<BlobPin>, usize) {
    let mut pins = Vec::new();
    let mut bad = 0;
    for value in records {
        match EmailRecord::parse(value) {
            Ok(record) => pins.push(record.pin),
            Err(_) => bad += 1,
        }
    }
    (pins, bad)
}
