//! Mail records: the values the mailbox model keeps in the account's encrypted index
//! collection (`docs/design.md` §11). They never reach the store in the clear: the
//! index seals them in pages.
//!
//! Every record starts with a version byte (1). Integers are big-endian; strings and
//! byte strings are `u32`-length-prefixed; optional items have a presence byte (0/1);
//! lists have a `u32` count; where a record says varint, seven bits a byte, least
//! significant first, in the shortest form (`format::reader::put_varint`).
//!
//! ```text
//! mailbox   version ‖ name ‖ subscribed (u8) ‖ special use (u8, 0 none) ‖ UIDVALIDITY (u32)
//!           ‖ modseq of the last change to the record (u64)
//! message   version ‖ email id (16) ‖ modseq (u64) ‖ size (u64) ‖ system flags (u8)
//!           ‖ keywords (list of strings)
//! email     version (5) ‖ pin (101, or 337 for a sealed blob) ‖ internal date (i64, Unix
//!           seconds) ‖ size (u64) ‖ thread id (16) ‖ provenance (u8) ‖ analyzed (u8)
//!           ‖ compact envelope ‖ creation modseq (varint) ‖ details: 0 (u8) ‖ MIME parts
//!           (list, as version 4) ‖ header block (option bytes) ‖ preview (option string),
//!           kept in the record; or 1 (u8) ‖ details segment id (16) ‖ page class (u8)
//!           ‖ offset (varint) ‖ length (varint), stored apart (a details record at those
//!           bytes of that segment's pages)
//!           version 4 has the envelope as every other record, the creation modseq as a
//!           u64, the offset as a u64 and the length as a u32
//!           version 3 has the details in the record, after the envelope, and the creation
//!           modseq last; version 2 ends after the preview (its creation modseq reads as
//!           0: unknown), version 1 after the parts, its envelope and parts without the
//!           version-2 items
//! details   version (1) ‖ MIME parts (list) ‖ header block (option bytes) ‖ preview
//!           (option string): what an email record (version 4 on) stores apart
//! analysis  version (2) ‖ thread id (16) ‖ envelope ‖ MIME parts (list) ‖ header block
//!           (option bytes) ‖ preview (option string): what `analyze` computed from the
//!           body of an email imported unread, kept apart from its email record
//! envelope  date (option i64) ‖ subject (option string) ‖ from, sender, reply-to, to, cc,
//!           bcc (lists of addresses: option name ‖ email) ‖ message-id (option string)
//!           ‖ in-reply-to, references (lists of strings)
//!           version 2 adds: date zone (option i16, minutes east of UTC) ‖ Date, Subject,
//!           Message-ID, In-Reply-To as written (4 option strings) ‖ groups (list of:
//!           field (u8, 0 From .. 5 Bcc) ‖ name ‖ first member (u32) ‖ members (u32))
//!           compact (email record version 5): the same items, every string's length
//!           and every list's count a varint (a group's first member and members stay
//!           u32s); a field as written is 2 (u8) in place of its presence byte and
//!           string when the decoded field gives it (Subject: the decoded subject;
//!           Message-ID: `<id>`; In-Reply-To: `<id>` of its one id), and is refused
//!           written in full then
//! part      parent (u32, u32::MAX for the root) ‖ type ‖ subtype ‖ parameters (list of
//!           name ‖ value) ‖ transfer encoding (option string) ‖ disposition (option)
//!           ‖ filename (option) ‖ content id (option) ‖ header, body, end offsets (u64)
//!           ‖ lines (u32)
//!           version 2 adds: description (option) ‖ languages (list of strings)
//!           ‖ location (option) ‖ MD5 (option) ‖ disposition parameters (list of name
//!           ‖ value) ‖ decoded size (option u64) ‖ envelope of the message held by a
//!           `message/*` part (option envelope)
//! vanished  version ‖ modseq of the expunge (u64) ‖ email id (16)
//! thread    version ‖ thread id (16)
//! number    version ‖ u64: a release (Unix time the email became unreferenced) or a
//!           deleted mailbox (modseq of the deletion)
//! ```

use crate::error::{Error, Result};
use crate::format::pin::BlobPin;
use crate::format::reader::{put_bytes, put_list, put_option, put_varint, Lengths, Reader};
use crate::format::search::{MAX_PAGE_CLASS, MIN_PAGE_CLASS};
use crate::ids::{EmailId, SegmentId, ThreadId};

/// Version byte of every mail record but the email and analysis records.
pub const MAIL_RECORD_VERSION: u8 = 1;

/// Version byte of the email records written today: 2 added the faithful analysis
/// (address groups, header fields as written, the header block, the preview, the full
/// IMAP `BODYSTRUCTURE` data of every part), 3 the creation modseq
/// ([`EmailRecord::created_modseq`]), 4 the details (MIME parts, header block, preview)
/// either in the record or stored apart ([`EmailRecord::stored_details`]), 5 the compact
/// form of the same items (the envelope's lengths and counts, the creation modseq and the
/// details' location as varints; a field as written that the decoded one gives is a tag,
/// not a copy: a third smaller record in the always-loaded index). Versions 1 to 4 are
/// still read: the items they lack read as absent (a creation modseq of 0).
pub const EMAIL_RECORD_VERSION: u8 = 5;

/// Version byte of the details records ([`EmailDetails`]).
pub const DETAILS_RECORD_VERSION: u8 = 1;

/// The largest details record a [`DetailsLocation`] may name: MIME parts are bounded by
/// the parse limit, the header block by [`MAX_HEADER_BLOCK_LEN`]; a larger length was not
/// written by this crate.
pub const MAX_DETAILS_LEN: u32 = 16 << 20;

/// Version byte of the analysis records written today: 2, as the email record of version
/// 2 (the analysis has no creation modseq). Version 1 is still read.
pub const ANALYSIS_RECORD_VERSION: u8 = 2;

/// The largest header block an analysis keeps ([`EmailRecord::header`]): a larger one is
/// read from the body (one ranged GET).
pub const MAX_HEADER_BLOCK_LEN: usize = 16 << 10;

/// The longest preview an analysis keeps, in characters (JMAP `preview`, RFC 8621 §4.1.4).
pub const MAX_PREVIEW_CHARS: usize = 256;

fn start<'a>(kind: &'static str, bytes: &'a [u8]) -> Result<Reader<'a>> {
    let (r, _) = start_versioned(kind, bytes, MAIL_RECORD_VERSION)?;
    Ok(r)
}

/// A reader after the version byte, which must be 1 up to `latest`.
fn start_versioned<'a>(
    kind: &'static str,
    bytes: &'a [u8],
    latest: u8,
) -> Result<(Reader<'a>, u8)> {
    let mut r = Reader::new(bytes);
    let version = r.u8()?;
    if !(1..=latest).contains(&version) {
        return Err(Error::UnsupportedVersion {
            object: kind,
            version,
        });
    }
    Ok((r, version))
}

fn put_str(out: &mut Vec<u8>, s: &String) {
    put_bytes(out, s.as_bytes());
}

fn put_strings(out: &mut Vec<u8>, items: &[String]) {
    put_list(out, items, put_str);
}

fn read_strings(r: &mut Reader<'_>) -> Result<Vec<String>> {
    r.list(4, Reader::string)
}

/// A mailbox's special use (RFC 6154), as JMAP roles name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecialUse {
    /// `\All`
    All,
    /// `\Archive`
    Archive,
    /// `\Drafts`
    Drafts,
    /// `\Flagged`
    Flagged,
    /// `\Junk`
    Junk,
    /// `\Sent`
    Sent,
    /// `\Trash`
    Trash,
    /// `\Important` (RFC 8457)
    Important,
}

impl SpecialUse {
    /// The role a mailbox is commonly known by from its name alone (case-insensitive, a
    /// top-level name): `Sent`, `Sent Messages`, `Sent Items` → `\Sent`; `Drafts` →
    /// `\Drafts`; `Trash`, `Deleted Items`, `Deleted Messages` → `\Trash`; `Junk`,
    /// `Spam` → `\Junk`; `Archive` → `\Archive` (the names of Dovecot's default
    /// configuration and of the clients that create them). What an import gives a mailbox
    /// it creates for a delivery that names it, such as a migrated folder tree.
    pub fn for_mailbox_name(name: &str) -> Option<SpecialUse> {
        const KNOWN: [(&str, SpecialUse); 11] = [
            ("Sent", SpecialUse::Sent),
            ("Sent Messages", SpecialUse::Sent),
            ("Sent Items", SpecialUse::Sent),
            ("Drafts", SpecialUse::Drafts),
            ("Trash", SpecialUse::Trash),
            ("Deleted Items", SpecialUse::Trash),
            ("Deleted Messages", SpecialUse::Trash),
            ("Junk", SpecialUse::Junk),
            ("Spam", SpecialUse::Junk),
            ("Archive", SpecialUse::Archive),
            ("Archives", SpecialUse::Archive),
        ];
        KNOWN
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map(|(_, role)| *role)
    }

    const ALL: [SpecialUse; 8] = [
        SpecialUse::All,
        SpecialUse::Archive,
        SpecialUse::Drafts,
        SpecialUse::Flagged,
        SpecialUse::Junk,
        SpecialUse::Sent,
        SpecialUse::Trash,
        SpecialUse::Important,
    ];

    fn to_byte(self) -> u8 {
        Self::ALL
            .iter()
            .position(|u| *u == self)
            .map_or(0, |i| i as u8 + 1)
    }

    fn from_byte(byte: u8) -> Result<Option<Self>> {
        match byte {
            0 => Ok(None),
            n => Self::ALL
                .get(usize::from(n) - 1)
                .copied()
                .map(Some)
                .ok_or(Error::Tampered),
        }
    }

    /// The IMAP attribute (`\Sent`...).
    pub fn imap_attribute(self) -> &'static str {
        match self {
            SpecialUse::All => "\\All",
            SpecialUse::Archive => "\\Archive",
            SpecialUse::Drafts => "\\Drafts",
            SpecialUse::Flagged => "\\Flagged",
            SpecialUse::Junk => "\\Junk",
            SpecialUse::Sent => "\\Sent",
            SpecialUse::Trash => "\\Trash",
            SpecialUse::Important => "\\Important",
        }
    }
}

/// One mailbox as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxRecord {
    /// Full name (hierarchy separator `/`).
    pub name: String,
    /// Whether the user subscribed to it.
    pub subscribed: bool,
    /// Its special use, if any.
    pub special_use: Option<SpecialUse>,
    /// UIDVALIDITY: changes whenever UIDs of this mailbox were reassigned.
    pub uid_validity: u32,
    /// Modseq of the last change to this record (creation, rename, subscription).
    pub modseq: u64,
}

impl MailboxRecord {
    /// Serialized form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![MAIL_RECORD_VERSION];
        put_str(&mut out, &self.name);
        out.push(u8::from(self.subscribed));
        out.push(self.special_use.map_or(0, SpecialUse::to_byte));
        out.extend_from_slice(&self.uid_validity.to_be_bytes());
        out.extend_from_slice(&self.modseq.to_be_bytes());
        out
    }

    /// Parses a stored mailbox record.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] or [`Error::Tampered`].
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut r = start("mailbox record", bytes)?;
        let record = Self {
            name: r.string()?,
            subscribed: match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(Error::Tampered),
            },
            special_use: SpecialUse::from_byte(r.u8()?)?,
            uid_validity: r.u32()?,
            modseq: r.u64()?,
        };
        r.finish()?;
        Ok(record)
    }
}

/// Message flags: the IMAP system flags and keywords (JMAP keywords).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Flags {
    system: u8,
    keywords: Vec<String>,
}

const SYSTEM_FLAGS: [&str; 5] = ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"];

impl Flags {
    /// `\Seen`
    pub const SEEN: &'static str = "\\Seen";
    /// `\Answered`
    pub const ANSWERED: &'static str = "\\Answered";
    /// `\Flagged`
    pub const FLAGGED: &'static str = "\\Flagged";
    /// `\Deleted`
    pub const DELETED: &'static str = "\\Deleted";
    /// `\Draft`
    pub const DRAFT: &'static str = "\\Draft";

    /// No flag.
    pub fn new() -> Self {
        Self::default()
    }

    /// The flags named (system flags as `\Seen`, case-insensitive; anything else is a
    /// keyword).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty name, one longer than 255 bytes, one with
    /// characters IMAP does not allow in a flag, or an unknown `\` flag.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self> {
        let mut flags = Self::new();
        for name in names {
            flags.insert(name)?;
        }
        Ok(flags)
    }

    /// Adds a flag.
    ///
    /// # Errors
    /// As [`from_names`](Self::from_names).
    pub fn insert(&mut self, name: &str) -> Result<()> {
        if let Some(bit) = Self::system_bit(name) {
            self.system |= bit;
            return Ok(());
        }
        let valid = !name.is_empty()
            && name.len() <= 255
            && !name.starts_with('\\')
            && name.bytes().all(|b| {
                b.is_ascii_graphic()
                    && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
            });
        if !valid {
            return Err(Error::invalid(format!("not a valid flag: {name:?}")));
        }
        if let Err(at) = self.keywords.binary_search_by(|k| k.as_str().cmp(name)) {
            self.keywords.insert(at, name.to_owned());
        }
        Ok(())
    }

    fn system_bit(name: &str) -> Option<u8> {
        SYSTEM_FLAGS
            .iter()
            .position(|f| f.eq_ignore_ascii_case(name))
            .map(|i| 1 << i)
    }

    /// Whether the flag `name` is set.
    pub fn contains(&self, name: &str) -> bool {
        match Self::system_bit(name) {
            Some(bit) => self.system & bit != 0,
            None => self.keywords.iter().any(|k| k == name),
        }
    }

    /// Every flag set, system flags first.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        SYSTEM_FLAGS
            .iter()
            .enumerate()
            .filter(|(i, _)| self.system & (1 << i) != 0)
            .map(|(_, f)| *f)
            .chain(self.keywords.iter().map(String::as_str))
    }

    /// These flags plus `other`'s.
    pub fn union(&self, other: &Flags) -> Flags {
        let mut out = self.clone();
        out.system |= other.system;
        for k in &other.keywords {
            if let Err(at) = out.keywords.binary_search(k) {
                out.keywords.insert(at, k.clone());
            }
        }
        out
    }

    /// These flags without `other`'s.
    pub fn difference(&self, other: &Flags) -> Flags {
        Flags {
            system: self.system & !other.system,
            keywords: self
                .keywords
                .iter()
                .filter(|k| !other.keywords.contains(k))
                .cloned()
                .collect(),
        }
    }

    fn put(&self, out: &mut Vec<u8>) {
        out.push(self.system);
        put_strings(out, &self.keywords);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let system = r.u8()?;
        if system >> SYSTEM_FLAGS.len() != 0 {
            return Err(Error::Tampered);
        }
        let keywords = read_strings(r)?;
        // Stored sorted and unique: anything else was not written by this crate.
        if keywords.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::Tampered);
        }
        Ok(Self { system, keywords })
    }
}

/// One message in one mailbox as stored (what changes: flags and modseq). Its body and
/// metadata are in the [`EmailRecord`] of its email id, shared by copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    /// The email (body and metadata) this message shows.
    pub email: EmailId,
    /// Modseq of the last change.
    pub modseq: u64,
    /// Size of the body in bytes.
    pub size: u64,
    /// Flags and keywords.
    pub flags: Flags,
}

impl MessageRecord {
    /// Serialized form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40);
        out.push(MAIL_RECORD_VERSION);
        out.extend_from_slice(self.email.as_bytes());
        out.extend_from_slice(&self.modseq.to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        self.flags.put(&mut out);
        out
    }

    /// The modseq of a stored message record, without parsing the rest (a change scan
    /// looks at every record and parses only the changed ones).
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] or [`Error::Tampered`].
    pub fn peek_modseq(bytes: &[u8]) -> Result<u64> {
        let mut r = start("message record", bytes)?;
        r.take(16)?;
        r.u64()
    }

    /// Parses a stored message record.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] or [`Error::Tampered`].
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut r = start("message record", bytes)?;
        let record = Self {
            email: EmailId::from_bytes(r.array()?),
            modseq: r.u64()?,
            size: r.u64()?,
            flags: Flags::read(&mut r)?,
        };
        r.finish()?;
        Ok(record)
    }
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provenance {
    /// The key holder (IMAP APPEND, JMAP import, Sent folder).
    KeyHolder,
    /// A sealed delivery, verified and imported.
    SealedDelivery,
}

/// An address of a header field.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    /// Display name, decoded.
    pub name: Option<String>,
    /// The address (`local@domain`).
    pub email: String,
}

/// The address fields of an [`Envelope`], in the order IMAP's ENVELOPE lists them after
/// the subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddressField {
    /// `From:`
    From,
    /// `Sender:`
    Sender,
    /// `Reply-To:`
    ReplyTo,
    /// `To:`
    To,
    /// `Cc:`
    Cc,
    /// `Bcc:`
    Bcc,
}

impl AddressField {
    /// Every field, in order.
    pub const ALL: [AddressField; 6] = [
        AddressField::From,
        AddressField::Sender,
        AddressField::ReplyTo,
        AddressField::To,
        AddressField::Cc,
        AddressField::Bcc,
    ];

    fn to_byte(self) -> u8 {
        self as u8
    }

    fn from_byte(byte: u8) -> Result<Self> {
        Self::ALL
            .get(usize::from(byte))
            .copied()
            .ok_or(Error::Tampered)
    }
}

/// A group of an address field (RFC 5322 §3.4 `display-name: mailbox-list;`, such as
/// `undisclosed-recipients:;`): its members are
/// `envelope.addresses(field)[first..first + members]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AddressGroup {
    /// The field it is written in.
    pub field: AddressField,
    /// The group's display name, decoded.
    pub name: String,
    /// Index of its first member in the field's addresses.
    pub first: u32,
    /// Number of members (0 for an empty group).
    pub members: u32,
}

/// One item of an address field as IMAP's ENVELOPE lists it (RFC 9051 §7.5.2): groups are
/// a start marker (`(NIL NIL "name" NIL)`), their members, and an end marker
/// (`(NIL NIL NIL NIL)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressItem<'a> {
    /// A mailbox.
    Mailbox(&'a Address),
    /// The start of a group, with its display name.
    GroupStart(&'a str),
    /// The end of a group.
    GroupEnd,
}

/// The header fields a server lists and sorts by, decoded at append; with the fields as
/// written where IMAP's ENVELOPE wants them so.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// `Date:` as Unix seconds.
    pub date: Option<i64>,
    /// `Subject:`, decoded.
    pub subject: Option<String>,
    /// `From:`: every mailbox, members of groups included, in order (JMAP `asAddresses`).
    pub from: Vec<Address>,
    /// `Sender:`
    pub sender: Vec<Address>,
    /// `Reply-To:`
    pub reply_to: Vec<Address>,
    /// `To:`
    pub to: Vec<Address>,
    /// `Cc:`
    pub cc: Vec<Address>,
    /// `Bcc:`
    pub bcc: Vec<Address>,
    /// `Message-ID:` without angle brackets.
    pub message_id: Option<String>,
    /// `In-Reply-To:` ids.
    pub in_reply_to: Vec<String>,
    /// `References:` ids.
    pub references: Vec<String>,
    /// The zone of `Date:`, in minutes east of UTC (`-0500` is -300), as written: with
    /// [`date`](Self::date), the local time of the sender (JMAP `sentAt`).
    pub date_zone: Option<i16>,
    /// `Date:` as written (unfolded, trimmed): IMAP's ENVELOPE date.
    pub date_raw: Option<String>,
    /// `Subject:` as written (unfolded, trimmed, encoded words kept): IMAP's ENVELOPE
    /// subject.
    pub subject_raw: Option<String>,
    /// `Message-ID:` as written (unfolded, trimmed, with its angle brackets): IMAP's
    /// ENVELOPE message-id.
    pub message_id_raw: Option<String>,
    /// `In-Reply-To:` as written (unfolded, trimmed): IMAP's ENVELOPE in-reply-to.
    pub in_reply_to_raw: Option<String>,
    /// The groups of the address fields, by field, then in the order written.
    pub groups: Vec<AddressGroup>,
}

/// The tag of a field as written that a compact envelope derives from the decoded one
/// ([`Envelope::derivation`]), where an option's presence byte would be.
const DERIVED: u8 = 2;

/// How a field as written derives from the decoded ones ([`Envelope::derivation`]).
#[derive(Debug, Clone, Copy)]
enum Derivation<'a> {
    /// The decoded field as it is.
    Same(&'a str),
    /// The decoded id in angle brackets.
    Bracketed(&'a str),
}

impl Derivation<'_> {
    /// Whether the field as written is the derived one (compared in place).
    fn gives(self, raw: &str) -> bool {
        match self {
            Self::Same(s) => raw == s,
            Self::Bracketed(id) => raw
                .strip_prefix('<')
                .and_then(|r| r.strip_suffix('>'))
                .is_some_and(|r| r == id),
        }
    }
}

impl std::fmt::Display for Derivation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Same(s) => f.write_str(s),
            Self::Bracketed(id) => write!(f, "<{id}>"),
        }
    }
}

fn read_addresses(r: &mut Reader<'_>) -> Result<Vec<Address>> {
    r.list(5, |r| {
        Ok(Address {
            name: r.option(Reader::string)?,
            email: r.string()?,
        })
    })
}

fn put_pairs(out: &mut Vec<u8>, pairs: &[(String, String)]) {
    put_list(out, pairs, |out, (n, v)| {
        put_str(out, n);
        put_str(out, v);
    });
}

fn read_pairs(r: &mut Reader<'_>) -> Result<Vec<(String, String)>> {
    r.list(8, |r| Ok((r.string()?, r.string()?)))
}

impl Envelope {
    /// The mailboxes of `field`, members of groups included, in order.
    pub fn addresses(&self, field: AddressField) -> &[Address] {
        match field {
            AddressField::From => &self.from,
            AddressField::Sender => &self.sender,
            AddressField::ReplyTo => &self.reply_to,
            AddressField::To => &self.to,
            AddressField::Cc => &self.cc,
            AddressField::Bcc => &self.bcc,
        }
    }

    /// `field` as IMAP's ENVELOPE lists it: mailboxes, and groups as a start marker,
    /// their members and an end marker.
    pub fn address_items(&self, field: AddressField) -> Vec<AddressItem<'_>> {
        let mut out = Vec::new();
        for (group, members) in self.grouped(field) {
            match group {
                Some(name) => {
                    out.push(AddressItem::GroupStart(name));
                    out.extend(members.iter().map(AddressItem::Mailbox));
                    out.push(AddressItem::GroupEnd);
                }
                None => out.extend(members.iter().map(AddressItem::Mailbox)),
            }
        }
        out
    }

    /// `field` grouped as JMAP's `asGroupedAddresses` gives it (RFC 8621 §4.1.2.4): each
    /// run of mailboxes outside any group under `None`, each group under its name.
    pub fn grouped(&self, field: AddressField) -> Vec<(Option<&str>, &[Address])> {
        let addresses = self.addresses(field);
        let mut out = Vec::new();
        let mut next = 0usize;
        for group in self.groups.iter().filter(|g| g.field == field) {
            let first = (group.first as usize).clamp(next, addresses.len());
            let end = first
                .saturating_add(group.members as usize)
                .min(addresses.len());
            if next < first {
                out.push((None, &addresses[next..first]));
            }
            out.push((Some(group.name.as_str()), &addresses[first..end]));
            next = end;
        }
        if next < addresses.len() {
            out.push((None, &addresses[next..]));
        }
        out
    }

    /// Serialized as every record but an email record of version 5 stores it (`u32`
    /// lengths and counts, the fields as written in full).
    fn put(&self, out: &mut Vec<u8>) {
        self.put_with(out, Lengths::Fixed);
    }

    /// The field as written `raw` (0 Date, 1 Subject, 2 Message-ID, 3 In-Reply-To, in
    /// stored order) that a [compact](Lengths::Varint) envelope does not store when it is
    /// what the decoded fields give: `Subject:` without encoded words (the decoded
    /// subject), `Message-ID:` and a single `In-Reply-To:` id in angle brackets. `None`
    /// where nothing derives (the Date, a Subject or Message-ID that is absent, none or
    /// several In-Reply-To ids).
    fn derivation(&self, raw: usize) -> Option<Derivation<'_>> {
        match (raw, &self.in_reply_to[..]) {
            (1, _) => self.subject.as_deref().map(Derivation::Same),
            (2, _) => self.message_id.as_deref().map(Derivation::Bracketed),
            (3, [id]) => Some(Derivation::Bracketed(id)),
            _ => None,
        }
    }

    /// Serialized with `lengths`: with [`Lengths::Varint`] (an email record of version 5)
    /// each field as written is also stored as a tag, 2, when it is the one
    /// [`derivation`](Self::derivation) gives.
    fn put_with(&self, out: &mut Vec<u8>, lengths: Lengths) {
        let put_str = |out: &mut Vec<u8>, s: &String| lengths.put_bytes(out, s.as_bytes());
        let put_strings =
            |out: &mut Vec<u8>, items: &[String]| lengths.put_list(out, items, put_str);
        put_option(out, self.date.as_ref(), |out, d| {
            out.extend_from_slice(&d.to_be_bytes())
        });
        put_option(out, self.subject.as_ref(), put_str);
        for field in AddressField::ALL {
            lengths.put_list(out, self.addresses(field), |out, a| {
                put_option(out, a.name.as_ref(), put_str);
                put_str(out, &a.email);
            });
        }
        put_option(out, self.message_id.as_ref(), put_str);
        put_strings(out, &self.in_reply_to);
        put_strings(out, &self.references);
        // Version 2.
        put_option(out, self.date_zone.as_ref(), |out, z| {
            out.extend_from_slice(&z.to_be_bytes())
        });
        for (i, raw) in [
            &self.date_raw,
            &self.subject_raw,
            &self.message_id_raw,
            &self.in_reply_to_raw,
        ]
        .into_iter()
        .enumerate()
        {
            let derives = |raw: &String| self.derivation(i).is_some_and(|d| d.gives(raw));
            match raw {
                Some(raw) if lengths == Lengths::Varint && derives(raw) => out.push(DERIVED),
                raw => put_option(out, raw.as_ref(), put_str),
            }
        }
        lengths.put_list(out, &self.groups, |out, g| {
            out.push(g.field.to_byte());
            put_str(out, &g.name);
            out.extend_from_slice(&g.first.to_be_bytes());
            out.extend_from_slice(&g.members.to_be_bytes());
        });
    }

    /// Reads an envelope of a record of `version` (1 or 2 as the envelope goes: every
    /// record but an email record of version 5, whose envelope is
    /// [`read_compact`](Self::read_compact)).
    fn read(r: &mut Reader<'_>, version: u8) -> Result<Self> {
        Self::read_items(r, version.min(2), Lengths::Fixed)
    }

    /// Reads the compact envelope of an email record of version 5
    /// ([`put_with`](Self::put_with) with [`Lengths::Varint`]).
    fn read_compact(r: &mut Reader<'_>) -> Result<Self> {
        let before = r.set_lengths(Lengths::Varint);
        let envelope = Self::read_items(r, 2, Lengths::Varint);
        r.set_lengths(before);
        envelope
    }

    fn read_items(r: &mut Reader<'_>, version: u8, lengths: Lengths) -> Result<Self> {
        let mut envelope = Self {
            date: r.option(|r| r.u64().map(|d| d as i64))?,
            subject: r.option(Reader::string)?,
            from: read_addresses(r)?,
            sender: read_addresses(r)?,
            reply_to: read_addresses(r)?,
            to: read_addresses(r)?,
            cc: read_addresses(r)?,
            bcc: read_addresses(r)?,
            message_id: r.option(Reader::string)?,
            in_reply_to: read_strings(r)?,
            references: read_strings(r)?,
            ..Self::default()
        };
        if version < 2 {
            return Ok(envelope);
        }
        envelope.date_zone = r.option(|r| r.u16().map(|z| z as i16))?;
        let mut raws = [None, None, None, None];
        for (i, raw) in raws.iter_mut().enumerate() {
            let derivation = envelope.derivation(i);
            *raw = match r.remaining().first() {
                Some(&DERIVED) if lengths == Lengths::Varint => {
                    r.u8()?;
                    Some(derivation.ok_or(Error::Tampered)?.to_string())
                }
                _ => {
                    let raw = r.option(Reader::string)?;
                    // Stored in full where the tag would do: not written by this crate.
                    if lengths == Lengths::Varint
                        && raw
                            .as_ref()
                            .is_some_and(|raw| derivation.is_some_and(|d| d.gives(raw)))
                    {
                        return Err(Error::Tampered);
                    }
                    raw
                }
            };
        }
        [
            envelope.date_raw,
            envelope.subject_raw,
            envelope.message_id_raw,
            envelope.in_reply_to_raw,
        ] = raws;
        envelope.groups = r.list(13, |r| {
            Ok(AddressGroup {
                field: AddressField::from_byte(r.u8()?)?,
                name: r.string()?,
                first: r.u32()?,
                members: r.u32()?,
            })
        })?;
        // Groups are in field order, then in the order written, apart, and within their
        // field's addresses.
        let mut end = (AddressField::From, 0u64);
        for g in &envelope.groups {
            let start = (g.field, u64::from(g.first));
            let stop = u64::from(g.first) + u64::from(g.members);
            if start < end || stop > envelope.addresses(g.field).len() as u64 {
                return Err(Error::Tampered);
            }
            end = (g.field, stop);
        }
        Ok(envelope)
    }
}

/// One MIME part, with its byte offsets in the message (so a part is a range read) and
/// what IMAP's `BODYSTRUCTURE` (RFC 9051 §7.5.2) and JMAP's `EmailBodyPart` say of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MimePart {
    /// Index of the enclosing part in the list, `None` for the root.
    pub parent: Option<u32>,
    /// Content type (`text`, `multipart`...), lowercase.
    pub content_type: String,
    /// Subtype (`plain`, `mixed`...), lowercase.
    pub subtype: String,
    /// Content-Type parameters (`charset`, `boundary`, `name`...).
    pub params: Vec<(String, String)>,
    /// `Content-Transfer-Encoding`, as written.
    pub transfer_encoding: Option<String>,
    /// `Content-Disposition` type (`inline`, `attachment`).
    pub disposition: Option<String>,
    /// File name (disposition `filename` or type `name`).
    pub filename: Option<String>,
    /// `Content-ID`.
    pub content_id: Option<String>,
    /// Offset of the part's header.
    pub header_offset: u64,
    /// Offset of the part's body (end of its header).
    pub body_offset: u64,
    /// End of the part.
    pub end_offset: u64,
    /// Lines in the body.
    pub lines: u32,
    /// `Content-Description`, as written (unfolded, trimmed).
    pub description: Option<String>,
    /// `Content-Language` tags (RFC 3282), in order.
    pub languages: Vec<String>,
    /// `Content-Location` (RFC 2557), unfolded and trimmed.
    pub location: Option<String>,
    /// `Content-MD5` (RFC 1864), as written.
    pub md5: Option<String>,
    /// `Content-Disposition` parameters (`filename`, `size`...), RFC 2231 continuations
    /// joined and values decoded.
    pub disposition_params: Vec<(String, String)>,
    /// Size of the body once its transfer encoding is removed (IMAP `BINARY.SIZE`, RFC
    /// 3516); `None` for a multipart part, and for parts analysed by a version of the
    /// crate that did not compute it.
    pub decoded_size: Option<u64>,
    /// For a `message/rfc822` (or `message/global`) part: the envelope of the message it
    /// holds, as IMAP's `BODYSTRUCTURE` nests it.
    pub envelope: Option<Box<Envelope>>,
}

impl MimePart {
    /// Size of the body as stored (IMAP `BODYSTRUCTURE` body size).
    pub fn body_len(&self) -> u64 {
        self.end_offset - self.body_offset
    }

    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.parent.unwrap_or(u32::MAX).to_be_bytes());
        put_str(out, &self.content_type);
        put_str(out, &self.subtype);
        put_pairs(out, &self.params);
        for item in [
            &self.transfer_encoding,
            &self.disposition,
            &self.filename,
            &self.content_id,
        ] {
            put_option(out, item.as_ref(), put_str);
        }
        for offset in [self.header_offset, self.body_offset, self.end_offset] {
            out.extend_from_slice(&offset.to_be_bytes());
        }
        out.extend_from_slice(&self.lines.to_be_bytes());
        // Version 2.
        put_option(out, self.description.as_ref(), put_str);
        put_strings(out, &self.languages);
        put_option(out, self.location.as_ref(), put_str);
        put_option(out, self.md5.as_ref(), put_str);
        put_pairs(out, &self.disposition_params);
        put_option(out, self.decoded_size.as_ref(), |out, s| {
            out.extend_from_slice(&s.to_be_bytes())
        });
        put_option(out, self.envelope.as_deref(), |out, e| e.put(out));
    }

    fn read(r: &mut Reader<'_>, index: usize, version: u8) -> Result<Self> {
        let parent = match r.u32()? {
            u32::MAX => None,
            // A parent always precedes its children.
            p if (p as usize) < index => Some(p),
            _ => return Err(Error::Tampered),
        };
        let mut part = Self {
            parent,
            content_type: r.string()?,
            subtype: r.string()?,
            params: read_pairs(r)?,
            transfer_encoding: r.option(Reader::string)?,
            disposition: r.option(Reader::string)?,
            filename: r.option(Reader::string)?,
            content_id: r.option(Reader::string)?,
            header_offset: r.u64()?,
            body_offset: r.u64()?,
            end_offset: r.u64()?,
            lines: r.u32()?,
            description: None,
            languages: Vec::new(),
            location: None,
            md5: None,
            disposition_params: Vec::new(),
            decoded_size: None,
            envelope: None,
        };
        if !(part.header_offset <= part.body_offset && part.body_offset <= part.end_offset) {
            return Err(Error::Tampered);
        }
        if version >= 2 {
            part.description = r.option(Reader::string)?;
            part.languages = read_strings(r)?;
            part.location = r.option(Reader::string)?;
            part.md5 = r.option(Reader::string)?;
            part.disposition_params = read_pairs(r)?;
            part.decoded_size = r.option(Reader::u64)?;
            part.envelope = r.option(|r| Envelope::read(r, version).map(Box::new))?;
        }
        Ok(part)
    }
}

/// A message body and what was computed from it once, at append: shared by every copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailRecord {
    /// Where the body is, and the header that authenticates it.
    pub pin: BlobPin,
    /// Internal date (Unix seconds).
    pub internal_date: i64,
    /// Size of the body in bytes.
    pub size: u64,
    /// The thread this email belongs to.
    pub thread: ThreadId,
    /// Who wrote it.
    pub provenance: Provenance,
    /// Whether the envelope and MIME parts were computed from the body (a sealed
    /// delivery is imported without reading its body: they are computed on first read).
    pub analyzed: bool,
    /// Header fields for listing and sorting.
    pub envelope: Envelope,
    /// MIME parts in depth-first order (empty when the structure was not computed, or
    /// while the details are [stored apart](Self::stored_details)).
    pub parts: Vec<MimePart>,
    /// The header block as stored (`BODY[HEADER]`: from the first byte to the blank line
    /// that ends it, included), when it is at most [`MAX_HEADER_BLOCK_LEN`] bytes; see
    /// [`header`](Self::header).
    pub header_block: Option<Vec<u8>>,
    /// A plain-text fragment of the first text body part (JMAP `preview`): at most
    /// [`MAX_PREVIEW_CHARS`] characters, white space collapsed to single spaces.
    pub preview: Option<String>,
    /// Modseq of the commit that created the email (its append or import): JMAP
    /// `Email/changes` reports an email changed since `n` as created when this is above
    /// `n`, as updated otherwise. 0 for a record written before version 3: unknown, such
    /// an email is reported as updated.
    pub created_modseq: u64,
    /// Where the details ([`parts`](Self::parts), [`header_block`](Self::header_block),
    /// [`preview`](Self::preview)) are when they are stored apart from the record, so
    /// that the always-loaded index stays small (`docs/design.md` §11.2): those three are
    /// then empty, until [`Mailstore::with_details`](crate::mail::Mailstore::with_details)
    /// reads them. `None` when the record holds them.
    pub stored_details: Option<DetailsLocation>,
}

/// Where an email's details record ([`EmailDetails`]) is stored: bytes
/// `offset..offset + len` of the concatenated page payloads of a details segment of the
/// account's mail collection (a paged segment, as the search segments of
/// `docs/design.md` §15: every page sealed and bound to the segment id and its index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DetailsLocation {
    /// The details segment.
    pub segment: SegmentId,
    /// Its page class (a sealed page is `2^class` bytes).
    pub page_class: u8,
    /// Offset of the details record in the segment's payload.
    pub offset: u64,
    /// Its length (at most [`MAX_DETAILS_LEN`]).
    pub len: u32,
}

impl DetailsLocation {
    /// Appends the location as an email record of version 5 stores it (offset and length
    /// as varints; version 4's fixed-size form is only read).
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.segment.as_bytes());
        out.push(self.page_class);
        put_varint(out, self.offset);
        put_varint(out, u64::from(self.len));
    }

    /// Reads a location: `compact` for an email record of version 5, fixed-size for 4.
    fn read(r: &mut Reader<'_>, compact: bool) -> Result<Self> {
        let segment = SegmentId::from_bytes(r.array()?);
        let page_class = r.u8()?;
        let (offset, len) = if compact {
            let offset = r.varint()?;
            let len = u32::try_from(r.varint()?).map_err(|_| Error::Tampered)?;
            (offset, len)
        } else {
            (r.u64()?, r.u32()?)
        };
        let location = Self {
            segment,
            page_class,
            offset,
            len,
        };
        if !(MIN_PAGE_CLASS..=MAX_PAGE_CLASS).contains(&location.page_class)
            || location.len == 0
            || location.len > MAX_DETAILS_LEN
            || location
                .offset
                .checked_add(u64::from(location.len))
                .is_none()
        {
            return Err(Error::Tampered);
        }
        Ok(location)
    }
}

/// What an email record (version 4 on) may keep apart: the analysis items a listing, a
/// sort and a metadata search never read (`BODYSTRUCTURE`, `BODY[HEADER]`, part fetches,
/// JMAP `bodyStructure` and `preview`, text search's header verification read them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmailDetails {
    /// As [`EmailRecord::parts`].
    pub parts: Vec<MimePart>,
    /// As [`EmailRecord::header_block`].
    pub header_block: Option<Vec<u8>>,
    /// As [`EmailRecord::preview`].
    pub preview: Option<String>,
}

impl EmailDetails {
    /// Whether there is nothing in them (an email not analyzed yet).
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty() && self.header_block.is_none() && self.preview.is_none()
    }

    /// Serialized form (a details record).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 128 * self.parts.len());
        out.push(DETAILS_RECORD_VERSION);
        put_parts(&mut out, &self.parts);
        put_extras(&mut out, &self.header_block, &self.preview);
        out
    }

    /// Parses a stored details record of the email of `size` bytes.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] or [`Error::Tampered`] (a part beyond the body, a
    /// header block longer than the body).
    pub fn parse(bytes: &[u8], size: u64) -> Result<Self> {
        let (mut r, _) = start_versioned("details record", bytes, DETAILS_RECORD_VERSION)?;
        // Parts and extras as an email record of version 2 and later writes them.
        let parts = read_parts(&mut r, 2)?;
        check_parts(&parts, size)?;
        let (header_block, preview) = read_extras(&mut r, 2)?;
        if header_block.as_ref().is_some_and(|h| h.len() as u64 > size) {
            return Err(Error::Tampered);
        }
        r.finish()?;
        Ok(Self {
            parts,
            header_block,
            preview,
        })
    }
}

impl EmailRecord {
    /// The message's header block (`BODY[HEADER]`, up to and including the blank line
    /// that ends it) when the analysis kept it: a server answers `BODY[HEADER]`,
    /// `BODY[HEADER.FIELDS (...)]` and JMAP `header:*` properties from it without reading
    /// the body. `None` when the header is larger than [`MAX_HEADER_BLOCK_LEN`], the
    /// email is not analyzed yet, or its analysis predates the header block: it is then
    /// the range `parts[0].header_offset..parts[0].body_offset` of the body (or, without
    /// parts, the body up to its first blank line). Also `None` while the details are
    /// [stored apart](Self::stored_details): read them first
    /// ([`Mailstore::with_details`](crate::mail::Mailstore::with_details)).
    pub fn header(&self) -> Option<&[u8]> {
        self.header_block.as_deref()
    }

    /// Serialized form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + 64 * self.parts.len());
        out.push(EMAIL_RECORD_VERSION);
        out.extend_from_slice(&self.pin.to_bytes());
        out.extend_from_slice(&self.internal_date.to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(self.thread.as_bytes());
        out.push(match self.provenance {
            Provenance::KeyHolder => 1,
            Provenance::SealedDelivery => 2,
        });
        out.push(u8::from(self.analyzed));
        self.envelope.put_with(&mut out, Lengths::Varint);
        put_varint(&mut out, self.created_modseq);
        match &self.stored_details {
            Some(location) => {
                out.push(1);
                location.put(&mut out);
            }
            None => {
                out.push(0);
                put_parts(&mut out, &self.parts);
                put_extras(&mut out, &self.header_block, &self.preview);
            }
        }
        out
    }

    /// The details the record holds (empty when they are stored apart:
    /// [`stored_details`](Self::stored_details)).
    pub fn details(&self) -> EmailDetails {
        EmailDetails {
            parts: self.parts.clone(),
            header_block: self.header_block.clone(),
            preview: self.preview.clone(),
        }
    }

    /// This record holding `details` (read from where
    /// [`stored_details`](Self::stored_details) says), no longer stored apart.
    ///
    /// # Errors
    /// [`Error::Tampered`] if a part ends beyond the body or the header block is longer.
    pub fn with_details(self, details: EmailDetails) -> Result<Self> {
        check_parts(&details.parts, self.size)?;
        if details
            .header_block
            .as_ref()
            .is_some_and(|h| h.len() as u64 > self.size)
        {
            return Err(Error::Tampered);
        }
        Ok(Self {
            parts: details.parts,
            header_block: details.header_block,
            preview: details.preview,
            stored_details: None,
            ..self
        })
    }

    /// Whether the stored email record `bytes` is analyzed, read from its fixed-size
    /// prefix without parsing the rest (what a search checks for every message before it
    /// evaluates envelope keys). A record this returns `Ok` for may still fail
    /// [`parse`](Self::parse).
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] or [`Error::Tampered`].
    pub fn is_analyzed(bytes: &[u8]) -> Result<bool> {
        let (mut r, _) = start_versioned("email record", bytes, EMAIL_RECORD_VERSION)?;
        let pin_len = BlobPin::serialized_len(r.remaining())?;
        // Pin, internal date, size, thread id, provenance.
        r.take(pin_len + 8 + 8 + 16 + 1)?;
        match r.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Error::Tampered),
        }
    }

    /// Parses a stored email record (version 1 to 5).
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] or [`Error::Tampered`].
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let (mut r, version) = start_versioned("email record", bytes, EMAIL_RECORD_VERSION)?;
        let pin_len = BlobPin::serialized_len(r.remaining())?;
        let pin = BlobPin::parse(r.take(pin_len)?)?;
        let internal_date = r.u64()? as i64;
        let size = r.u64()?;
        if size != pin.len() {
            return Err(Error::Tampered);
        }
        let thread = ThreadId::from_bytes(r.array()?);
        let provenance = match r.u8()? {
            1 => Provenance::KeyHolder,
            2 => Provenance::SealedDelivery,
            _ => return Err(Error::Tampered),
        };
        let analyzed = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(Error::Tampered),
        };
        let envelope = if version >= 5 {
            Envelope::read_compact(&mut r)?
        } else {
            Envelope::read(&mut r, version)?
        };
        let mut created_modseq = 0;
        let mut stored_details = None;
        let (mut parts, mut header_block, mut preview) = (Vec::new(), None, None);
        let compact = version >= 5;
        if version >= 4 {
            created_modseq = if compact { r.varint()? } else { r.u64()? };
            match r.u8()? {
                0 => {}
                1 => stored_details = Some(DetailsLocation::read(&mut r, compact)?),
                _ => return Err(Error::Tampered),
            }
        }
        if stored_details.is_none() {
            // The parts of version 5 are those of version 4.
            parts = read_parts(&mut r, version.min(4))?;
            check_parts(&parts, size)?;
            (header_block, preview) = read_extras(&mut r, version)?;
        }
        if version == 3 {
            created_modseq = r.u64()?;
        }
        r.finish()?;
        Ok(Self {
            created_modseq,
            stored_details,
            pin,
            internal_date,
            size,
            thread,
            provenance,
            analyzed,
            envelope,
            parts,
            header_block,
            preview,
        })
    }

    /// This email with `analysis` (computed from its body after an import) in place of
    /// its own thread, envelope, parts, header block and preview.
    ///
    /// # Errors
    /// [`Error::Tampered`] if a part of the analysis ends beyond the body.
    pub fn with_analysis(self, analysis: EmailAnalysis) -> Result<Self> {
        check_parts(&analysis.parts, self.size)?;
        if analysis
            .header_block
            .as_ref()
            .is_some_and(|h| h.len() as u64 > self.size)
        {
            return Err(Error::Tampered);
        }
        Ok(Self {
            thread: analysis.thread,
            analyzed: true,
            envelope: analysis.envelope,
            parts: analysis.parts,
            header_block: analysis.header_block,
            preview: analysis.preview,
            stored_details: None,
            ..self
        })
    }
}

/// What a search compares of a stored email record (or analysis record), read in place
/// and only as far as a key needs: the internal date, and the envelope's items, each
/// found by walking the envelope from its start when a key asks for it. Nothing is copied
/// and the MIME parts, the header block and the preview are never read: a search reads
/// this for every message of a mailbox, where a whole parse copied up to 16 KiB of header
/// block per message, and even a walk over the whole envelope waited for several cache
/// misses per record (each item's length says where the next one is). Each item a key
/// reads is checked as [`Envelope::read`] checks it; a record malformed in items no key
/// reads is reported by the reads that parse it whole.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SearchFields<'a> {
    /// Internal date (Unix seconds).
    pub(crate) internal_date: i64,
    /// Whether the envelope was computed from the body (an email record imported from a
    /// sealed delivery and not analyzed has an empty one).
    pub(crate) analyzed: bool,
    /// The record's version (the envelope's items depend on it).
    version: u8,
    /// How its envelope writes lengths and counts (an email record of version 5: as
    /// varints).
    lengths: Lengths,
    /// The record from the envelope's first byte on.
    envelope: &'a [u8],
}

/// The envelope's items in stored order, up to the last one a search compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum EnvelopeItem {
    Date,
    Subject,
    /// The address list of [`AddressField::ALL`]`[n]`.
    Addresses(u8),
    MessageId,
    InReplyTo,
    References,
    DateZone,
}

impl EnvelopeItem {
    /// The item stored after this one.
    fn next(self) -> Self {
        match self {
            Self::Date => Self::Subject,
            Self::Subject => Self::Addresses(0),
            Self::Addresses(n) if n < 5 => Self::Addresses(n + 1),
            Self::Addresses(_) => Self::MessageId,
            Self::MessageId => Self::InReplyTo,
            Self::InReplyTo => Self::References,
            Self::References | Self::DateZone => Self::DateZone,
        }
    }
}

/// Reads a string in place.
fn read_str<'a>(r: &mut Reader<'a>) -> Result<&'a str> {
    std::str::from_utf8(r.bytes()?).map_err(|_| Error::Tampered)
}

/// Skips a stored list whose items are a length-prefixed string, preceded by an
/// optional one when `optional_first` (an address: an optional name, then the address);
/// each item takes at least `min_item_len` bytes.
fn skip_strings(r: &mut Reader<'_>, min_item_len: usize, optional_first: bool) -> Result<()> {
    r.list(min_item_len, |r| {
        if optional_first {
            r.option(Reader::bytes)?;
        }
        r.bytes().map(drop)
    })
    .map(drop)
}

impl<'a> SearchFields<'a> {
    /// Reads the fixed-size prefix of a stored email record.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] or [`Error::Tampered`].
    pub(crate) fn of_email(bytes: &'a [u8]) -> Result<Self> {
        let (mut r, version) = start_versioned("email record", bytes, EMAIL_RECORD_VERSION)?;
        let pin_len = BlobPin::serialized_len(r.remaining())?;
        // The pin (not compared), the internal date, the size (the message record's is
        // compared), the thread id.
        r.take(pin_len)?;
        let internal_date = r.u64()? as i64;
        r.take(8 + 16)?;
        if !matches!(r.u8()?, 1 | 2) {
            return Err(Error::Tampered);
        }
        let analyzed = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(Error::Tampered),
        };
        Ok(Self {
            internal_date,
            analyzed,
            version,
            lengths: if version >= 5 {
                Lengths::Varint
            } else {
                Lengths::Fixed
            },
            envelope: r.remaining(),
        })
    }

    /// The search fields of a stored analysis record, for the email record `email`
    /// (whose internal date they keep).
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] or [`Error::Tampered`].
    pub(crate) fn of_analysis(bytes: &'a [u8], email: &SearchFields<'_>) -> Result<Self> {
        let (mut r, version) = start_versioned("analysis record", bytes, ANALYSIS_RECORD_VERSION)?;
        r.take(16)?;
        Ok(Self {
            internal_date: email.internal_date,
            analyzed: true,
            version,
            lengths: Lengths::Fixed,
            envelope: r.remaining(),
        })
    }

    /// A reader at `item`, the items before it skipped.
    fn at(&self, item: EnvelopeItem) -> Result<Reader<'a>> {
        let mut r = Reader::new(self.envelope);
        r.set_lengths(self.lengths);
        let mut at = EnvelopeItem::Date;
        while at < item {
            match at {
                EnvelopeItem::Date => {
                    r.option(Reader::u64)?;
                }
                EnvelopeItem::Subject | EnvelopeItem::MessageId => {
                    r.option(Reader::bytes)?;
                }
                EnvelopeItem::Addresses(_) => skip_strings(&mut r, 5, true)?,
                EnvelopeItem::InReplyTo | EnvelopeItem::References => {
                    skip_strings(&mut r, 4, false)?
                }
                EnvelopeItem::DateZone => break,
            }
            at = at.next();
        }
        Ok(r)
    }

    /// `Date:` as Unix seconds, and its zone (minutes east of UTC) when the record has
    /// one.
    ///
    /// # Errors
    /// [`Error::Tampered`].
    pub(crate) fn sent(&self) -> Result<Option<(i64, Option<i16>)>> {
        let Some(date) = self.at(EnvelopeItem::Date)?.option(Reader::u64)? else {
            return Ok(None);
        };
        let zone = if self.version >= 2 {
            self.at(EnvelopeItem::DateZone)?
                .option(|r| r.u16().map(|z| z as i16))?
        } else {
            None
        };
        Ok(Some((date as i64, zone)))
    }

    /// `Subject:`, decoded.
    ///
    /// # Errors
    /// [`Error::Tampered`].
    pub(crate) fn subject(&self) -> Result<Option<&'a str>> {
        self.at(EnvelopeItem::Subject)?.option(read_str)
    }

    /// `Message-ID:` without angle brackets.
    ///
    /// # Errors
    /// [`Error::Tampered`].
    pub(crate) fn message_id(&self) -> Result<Option<&'a str>> {
        self.at(EnvelopeItem::MessageId)?.option(read_str)
    }

    /// Calls `each` with the addresses of `field`, in order: (display name, address).
    ///
    /// # Errors
    /// [`Error::Tampered`].
    pub(crate) fn addresses(
        &self,
        field: AddressField,
        each: &mut dyn FnMut(Option<&str>, &str),
    ) -> Result<()> {
        let mut r = self.at(EnvelopeItem::Addresses(field as u8))?;
        r.list(5, |r| {
            let name = r.option(read_str)?;
            each(name, read_str(r)?);
            Ok(())
        })
        .map(drop)
    }

    /// Calls `each` with the `In-Reply-To:` (`references` false) or `References:` ids,
    /// in order.
    ///
    /// # Errors
    /// [`Error::Tampered`].
    pub(crate) fn ids(&self, references: bool, each: &mut dyn FnMut(&str)) -> Result<()> {
        let item = if references {
            EnvelopeItem::References
        } else {
            EnvelopeItem::InReplyTo
        };
        let mut r = self.at(item)?;
        r.list(4, |r| read_str(r).map(&mut *each)).map(drop)
    }
}

fn put_parts(out: &mut Vec<u8>, parts: &[MimePart]) {
    put_list(out, parts, |out, p| p.put(out));
}

fn read_parts(r: &mut Reader<'_>, version: u8) -> Result<Vec<MimePart>> {
    let mut index = 0;
    r.list(48, |r| {
        let part = MimePart::read(r, index, version);
        index += 1;
        part
    })
}

fn put_extras(out: &mut Vec<u8>, header_block: &Option<Vec<u8>>, preview: &Option<String>) {
    put_option(out, header_block.as_ref(), |out, h| put_bytes(out, h));
    put_option(out, preview.as_ref(), put_str);
}

fn read_extras(r: &mut Reader<'_>, version: u8) -> Result<(Option<Vec<u8>>, Option<String>)> {
    if version < 2 {
        return Ok((None, None));
    }
    let header_block = r.option(|r| r.bytes().map(<[u8]>::to_vec))?;
    if header_block
        .as_ref()
        .is_some_and(|h| h.len() > MAX_HEADER_BLOCK_LEN)
    {
        return Err(Error::Tampered);
    }
    let preview = r.option(Reader::string)?;
    if preview
        .as_ref()
        .is_some_and(|p| p.chars().count() > MAX_PREVIEW_CHARS)
    {
        return Err(Error::Tampered);
    }
    Ok((header_block, preview))
}

fn check_parts(parts: &[MimePart], size: u64) -> Result<()> {
    if parts.iter().any(|p| p.end_offset > size) {
        return Err(Error::Tampered);
    }
    Ok(())
}

/// What [`Mailstore::analyze`](crate::mail::Mailstore::analyze) computed from the body of
/// an email imported without reading it. It is kept apart from the [`EmailRecord`], so
/// that the analysis and a rewrite of the body (which changes the record's pin) never
/// write the same record: both hold whichever commits first, on every backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAnalysis {
    /// The thread the email joined once its references were known.
    pub thread: ThreadId,
    /// Header fields for listing and sorting.
    pub envelope: Envelope,
    /// MIME parts in depth-first order (empty for a body above the parse limit).
    pub parts: Vec<MimePart>,
    /// The header block, as [`EmailRecord::header_block`].
    pub header_block: Option<Vec<u8>>,
    /// The preview, as [`EmailRecord::preview`].
    pub preview: Option<String>,
}

impl EmailAnalysis {
    /// Serialized form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + 64 * self.parts.len());
        out.push(ANALYSIS_RECORD_VERSION);
        out.extend_from_slice(self.thread.as_bytes());
        self.envelope.put(&mut out);
        put_parts(&mut out, &self.parts);
        put_extras(&mut out, &self.header_block, &self.preview);
        out
    }

    /// Parses a stored analysis record (version 1 or 2). Its offsets are checked against
    /// the body's size by [`EmailRecord::with_analysis`].
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] or [`Error::Tampered`].
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let (mut r, version) = start_versioned("analysis record", bytes, ANALYSIS_RECORD_VERSION)?;
        let thread = ThreadId::from_bytes(r.array()?);
        let envelope = Envelope::read(&mut r, version)?;
        let parts = read_parts(&mut r, version)?;
        let (header_block, preview) = read_extras(&mut r, version)?;
        r.finish()?;
        Ok(Self {
            thread,
            envelope,
            parts,
            header_block,
            preview,
        })
    }
}

/// An expunged UID: when, and which email it showed (for QRESYNC `VANISHED` and JMAP
/// `/changes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VanishedRecord {
    /// Modseq of the expunge.
    pub modseq: u64,
    /// The email the message showed.
    pub email: EmailId,
}

impl VanishedRecord {
    /// Serialized form.
    pub fn to_bytes(&self) -> [u8; 25] {
        let mut out = [0u8; 25];
        out[0] = MAIL_RECORD_VERSION;
        out[1..9].copy_from_slice(&self.modseq.to_be_bytes());
        out[9..].copy_from_slice(self.email.as_bytes());
        out
    }

    /// Parses a vanished record.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] or [`Error::Tampered`].
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut r = start("vanished record", bytes)?;
        let record = Self {
            modseq: r.u64()?,
            email: EmailId::from_bytes(r.array()?),
        };
        r.finish()?;
        Ok(record)
    }
}

/// Serialized thread record.
pub fn thread_to_bytes(thread: &ThreadId) -> [u8; 17] {
    let mut out = [0u8; 17];
    out[0] = MAIL_RECORD_VERSION;
    out[1..].copy_from_slice(thread.as_bytes());
    out
}

/// Parses a thread record.
///
/// # Errors
/// [`Error::UnsupportedVersion`] or [`Error::Tampered`].
pub fn parse_thread(bytes: &[u8]) -> Result<ThreadId> {
    let mut r = start("thread record", bytes)?;
    let thread = ThreadId::from_bytes(r.array()?);
    r.finish()?;
    Ok(thread)
}

/// Serialized one-number record: a release (the Unix time an email became unreferenced,
/// to delete it after a grace period) or a deleted mailbox (the modseq of the deletion).
pub fn number_to_bytes(value: u64) -> [u8; 9] {
    let mut out = [0u8; 9];
    out[0] = MAIL_RECORD_VERSION;
    out[1..].copy_from_slice(&value.to_be_bytes());
    out
}

/// Parses a one-number record.
///
/// # Errors
/// [`Error::UnsupportedVersion`] or [`Error::Tampered`].
pub fn parse_number(bytes: &[u8]) -> Result<u64> {
    let mut r = start("number record", bytes)?;
    let value = r.u64()?;
    r.finish()?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_names_round_trip_and_validation() {
        let flags = Flags::from_names(["\\seen", "$Forwarded", "\\Deleted", "$Forwarded"]).unwrap();
        assert_eq!(
            flags.names().collect::<Vec<_>>(),
            ["\\Seen", "\\Deleted", "$Forwarded"]
        );
        assert!(flags.contains(Flags::SEEN) && !flags.contains(Flags::DRAFT));
        for bad in ["", "\\Unknown", "a b", "x(y", &"k".repeat(256)] {
            assert!(Flags::from_names([bad]).is_err(), "{bad:?}");
        }
        let record = MessageRecord {
            email: EmailId::from_bytes([7; 16]),
            modseq: 9,
            size: 1234,
            flags,
        };
        assert_eq!(MessageRecord::parse(&record.to_bytes()).unwrap(), record);
    }

    #[test]
    fn analysis_round_trip_and_offsets_checked_against_the_body() {
        let seed = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/corpus/mail_records/analysis"
        ))
        .unwrap();
        let analysis = EmailAnalysis::parse(&seed).unwrap();
        assert_eq!(analysis.envelope.subject.as_deref(), Some("Hi"));
        // A version-1 record (written before the faithful analysis) is rewritten as
        // version 2, with the same content.
        assert_eq!(seed[0], 1);
        let rewritten = analysis.to_bytes();
        assert_eq!(rewritten[0], ANALYSIS_RECORD_VERSION);
        assert_eq!(EmailAnalysis::parse(&rewritten).unwrap(), analysis);
        for cut in 0..seed.len() {
            assert!(EmailAnalysis::parse(&seed[..cut]).is_err());
        }
        let part = MimePart {
            parent: None,
            content_type: "text".into(),
            subtype: "plain".into(),
            params: Vec::new(),
            transfer_encoding: None,
            disposition: None,
            filename: None,
            content_id: None,
            header_offset: 0,
            body_offset: 10,
            end_offset: 100,
            lines: 1,
            description: None,
            languages: Vec::new(),
            location: None,
            md5: None,
            disposition_params: Vec::new(),
            decoded_size: None,
            envelope: None,
        };
        let analysis = EmailAnalysis {
            parts: vec![part],
            ..analysis
        };
        assert_eq!(
            EmailAnalysis::parse(&analysis.to_bytes()).unwrap(),
            analysis
        );
        let email = |size: u64| EmailRecord {
            pin: crate::format::pin::BlobPin::parse(
                &std::fs::read(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/fuzz/corpus/mail_records/email0"
                ))
                .unwrap()[1..102],
            )
            .unwrap(),
            internal_date: 0,
            size,
            thread: ThreadId::from_bytes([0; 16]),
            provenance: Provenance::SealedDelivery,
            analyzed: false,
            envelope: Envelope::default(),
            parts: Vec::new(),
            header_block: None,
            preview: None,
            created_modseq: 0,
            stored_details: None,
        };
        let analyzed = email(100).with_analysis(analysis.clone()).unwrap();
        assert!(analyzed.analyzed && analyzed.parts == analysis.parts);
        assert!(EmailRecord::is_analyzed(&analyzed.to_bytes()).unwrap());
        assert!(!EmailRecord::is_analyzed(&email(100).to_bytes()).unwrap());
        assert!(EmailRecord::is_analyzed(&analyzed.to_bytes()[..40]).is_err());
        assert!(matches!(
            email(99).with_analysis(analysis),
            Err(Error::Tampered)
        ));
    }

    /// Every email record seed of the fuzz corpus was written with version 1: each still
    /// parses (its creation modseq unknown: 0), and is rewritten as the current version
    /// with the same content.
    #[test]
    fn version_1_email_records_still_read() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/mail_records");
        let mut read = 0;
        for name in ["email0", "email1", "email2", "email_sealed"] {
            let seed = std::fs::read(format!("{dir}/{name}")).unwrap();
            assert_eq!(seed[0], 1, "{name}");
            let record = EmailRecord::parse(&seed).unwrap();
            assert!(record.header_block.is_none() && record.preview.is_none());
            assert!(record.parts.iter().all(|p| p.decoded_size.is_none()));
            assert_eq!(record.created_modseq, 0, "{name}");
            let rewritten = record.to_bytes();
            assert_eq!(rewritten[0], EMAIL_RECORD_VERSION);
            assert_eq!(EmailRecord::parse(&rewritten).unwrap(), record, "{name}");
            read += 1;
        }
        assert_eq!(read, 4);
    }

    /// Version 3 adds the creation modseq at the end: it round-trips strictly, and the
    /// same record without it, as version 2, reads with a creation modseq of 0.
    #[test]
    fn version_3_email_record_carries_the_creation_modseq() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/mail_records");
        let seed = std::fs::read(format!("{dir}/email_v3")).unwrap();
        assert_eq!(seed[0], 3);
        let record = EmailRecord::parse(&seed).unwrap();
        assert_eq!(record.created_modseq, 42);
        assert_strict(&seed, &record, EmailRecord::parse, 6);
        let mut v2 = seed[..seed.len() - 8].to_vec();
        v2[0] = 2;
        let old = EmailRecord::parse(&v2).unwrap();
        assert_eq!(
            old,
            EmailRecord {
                created_modseq: 0,
                ..record.clone()
            }
        );
        // A version-2 record with the creation modseq appended is refused (one byte too
        // many for version 2).
        let mut v2_long = seed.clone();
        v2_long[0] = 2;
        assert!(EmailRecord::parse(&v2_long).is_err());
    }

    /// The email records of version 4 that the fuzz seeds `email_v4` (details in the
    /// record) and `email_v4_stored` (details stored apart) hold: the version-3 seed with
    /// the faithful analysis, and the same with its details at `location`.
    fn version_4_records() -> (EmailRecord, EmailRecord, DetailsLocation) {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/mail_records");
        let v3 = EmailRecord::parse(&std::fs::read(format!("{dir}/email_v3")).unwrap()).unwrap();
        assert!(v3.size >= 400, "the seed's body holds the analysis's parts");
        let inline = v3.with_analysis(faithful_analysis()).unwrap();
        let location = DetailsLocation {
            segment: SegmentId::from_bytes([7; 16]),
            page_class: 14,
            offset: 1 << 20,
            len: inline.details().to_bytes().len() as u32,
        };
        let stored = EmailRecord {
            parts: Vec::new(),
            header_block: None,
            preview: None,
            stored_details: Some(location),
            ..inline.clone()
        };
        (inline, stored, location)
    }

    /// Version 4 (the seeds `email_v4` and `email_v4_stored`, written before version 5):
    /// the record keeps its details or their location; each still reads, is rewritten as
    /// version 5 with the same content, and a search reads its fields in place; the
    /// details record round-trips on its own and is checked against the body's size.
    #[test]
    fn version_4_email_record_keeps_or_locates_its_details() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/mail_records");
        let (inline, stored, _) = version_4_records();
        let size = inline.size;
        for (name, record) in [("email_v4", &inline), ("email_v4_stored", &stored)] {
            let seed = std::fs::read(format!("{dir}/{name}")).unwrap();
            assert_eq!(seed[0], 4, "{name}");
            assert_eq!(&EmailRecord::parse(&seed).unwrap(), record, "{name}");
            let rewritten = record.to_bytes();
            assert_eq!(rewritten[0], 5, "{name}");
            assert_eq!(&EmailRecord::parse(&rewritten).unwrap(), record, "{name}");
            let fields = SearchFields::of_email(&seed).unwrap();
            assert_eq!(
                fields.subject().unwrap(),
                record.envelope.subject.as_deref()
            );
            assert!(EmailRecord::is_analyzed(&seed).unwrap());
            for cut in 0..seed.len() {
                assert!(EmailRecord::parse(&seed[..cut]).is_err(), "{name} {cut}");
            }
        }

        let details = inline.details();
        assert_eq!(details.parts, faithful_analysis().parts);
        let details_bytes = details.to_bytes();
        assert_strict(
            &details_bytes,
            &details,
            |b| EmailDetails::parse(b, size),
            2,
        );
        // A part beyond a shorter body is refused.
        assert!(matches!(
            EmailDetails::parse(&details_bytes, 399),
            Err(Error::Tampered)
        ));
        // Read back and joined with its details, the record that stored them apart is
        // the record that held them.
        let seed = std::fs::read(format!("{dir}/email_v4_stored")).unwrap();
        let joined = EmailRecord::parse(&seed)
            .unwrap()
            .with_details(EmailDetails::parse(&details_bytes, size).unwrap())
            .unwrap();
        assert_eq!(joined, inline);
        // Locations that were not written by this crate are refused (the fixed-size
        // location of version 4 ends the record: segment, class, offset, length).
        let at = seed.len() - 29;
        for (offset, byte) in [(16, 8u8), (16, 17), (25, 0)] {
            let mut bad = seed.clone();
            if offset == 25 {
                bad[at + 25..].fill(byte);
            } else {
                bad[at + offset] = byte;
            }
            assert!(matches!(EmailRecord::parse(&bad), Err(Error::Tampered)));
        }
        let mut bad = seed.clone();
        bad[at - 1] = 2;
        assert!(matches!(EmailRecord::parse(&bad), Err(Error::Tampered)));
    }

    /// Version 5, the compact form: both records round-trip strictly (the seeds
    /// `email_v5` and `email_v5_stored` are them) and are smaller than version 4; a
    /// search reads every field in place; the fields as written that the decoded ones
    /// give are tags (here the Message-ID), and a tag where nothing derives, a copy where
    /// the tag would do, a longer varint and a location past the limits are refused.
    #[test]
    fn version_5_email_record_is_compact_and_strict() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/mail_records");
        let (inline, stored, location) = version_4_records();
        for (name, record) in [("email_v5", &inline), ("email_v5_stored", &stored)] {
            let bytes = record.to_bytes();
            assert_eq!(bytes[0], 5);
            assert_strict(&bytes, record, EmailRecord::parse, 6);
            let v4 = std::fs::read(format!("{dir}/{}", name.replace("v5", "v4"))).unwrap();
            assert!(
                bytes.len() + 40 < v4.len(),
                "{name}: {} {}",
                bytes.len(),
                v4.len()
            );
            if std::env::var_os("MAILVAULT_WRITE_SEEDS").is_some() {
                std::fs::write(format!("{dir}/{name}"), &bytes).unwrap();
            }
            assert_eq!(
                std::fs::read(format!("{dir}/{name}")).unwrap(),
                bytes,
                "the fuzz seed {name} is this record"
            );
            let fields = SearchFields::of_email(&bytes).unwrap();
            let envelope = &record.envelope;
            assert_eq!(fields.subject().unwrap(), envelope.subject.as_deref());
            assert_eq!(fields.message_id().unwrap(), envelope.message_id.as_deref());
            assert_eq!(
                fields.sent().unwrap(),
                envelope.date.map(|d| (d, envelope.date_zone))
            );
            for field in AddressField::ALL {
                let mut seen = Vec::new();
                fields
                    .addresses(field, &mut |name, email| {
                        seen.push((name.map(str::to_owned), email.to_owned()))
                    })
                    .unwrap();
                let expected: Vec<_> = envelope
                    .addresses(field)
                    .iter()
                    .map(|a| (a.name.clone(), a.email.clone()))
                    .collect();
                assert_eq!(seen, expected, "{field:?}");
            }
            for (references, expected) in
                [(false, &envelope.in_reply_to), (true, &envelope.references)]
            {
                let mut ids = Vec::new();
                fields
                    .ids(references, &mut |id| ids.push(id.to_owned()))
                    .unwrap();
                assert_eq!(&ids, expected);
            }
        }

        // The Message-ID as written is a tag: a copy of it instead is refused, and so is
        // a tag for the Date as written (no derivation gives it).
        let bytes = stored.to_bytes();
        let raw = b"<id@example.org>";
        assert!(!bytes.windows(raw.len()).any(|w| w == raw));
        let irt = b"\x18<p@example.org> (parent)";
        let at = bytes.windows(irt.len()).position(|w| w == irt).unwrap();
        assert_eq!(bytes[at - 2..at], [DERIVED, 1]);
        let mut copied = bytes[..at - 2].to_vec();
        copied.push(1);
        Lengths::Varint.put_bytes(&mut copied, raw);
        copied.extend_from_slice(&bytes[at - 1..]);
        assert!(matches!(EmailRecord::parse(&copied), Err(Error::Tampered)));
        let date = b"\x1fTue, 14 Nov 2023 17:13:20 -0500";
        let at = bytes.windows(date.len()).position(|w| w == date).unwrap();
        assert_eq!(bytes[at - 1], 1);
        let mut tagged = bytes[..at - 1].to_vec();
        tagged.push(DERIVED);
        tagged.extend_from_slice(&bytes[at + date.len()..]);
        assert!(matches!(EmailRecord::parse(&tagged), Err(Error::Tampered)));

        // The location ends the record: class, then offset and length as varints.
        let mut tail = Vec::new();
        location.put(&mut tail);
        assert!(bytes.ends_with(&tail));
        let prefix = &bytes[..bytes.len() - tail.len()];
        let with = |offset: &[u8], len: &[u8]| {
            let mut out = prefix.to_vec();
            out.extend_from_slice(location.segment.as_bytes());
            out.push(location.page_class);
            out.extend_from_slice(offset);
            out.extend_from_slice(len);
            EmailRecord::parse(&out)
        };
        let mut offset = Vec::new();
        put_varint(&mut offset, location.offset);
        let mut len = Vec::new();
        put_varint(&mut len, u64::from(location.len));
        assert_eq!(with(&offset, &len).unwrap(), stored);
        // A longer form of the same length.
        let mut longer = len.clone();
        *longer.last_mut().unwrap() |= 0x80;
        longer.push(0);
        assert!(matches!(with(&offset, &longer), Err(Error::Tampered)));
        // A length of zero, past the limit, past u32; an offset that overflows with it.
        // (2^32 + 1 would be 1 if cut to 32 bits.)
        for bad in [0, u64::from(MAX_DETAILS_LEN) + 1, (1 << 32) + 1] {
            let mut big = Vec::new();
            put_varint(&mut big, bad);
            assert!(matches!(with(&offset, &big), Err(Error::Tampered)), "{bad}");
        }
        let mut far = Vec::new();
        put_varint(&mut far, u64::MAX);
        assert!(matches!(with(&far, &len), Err(Error::Tampered)));
    }

    /// Version 5 tags exactly the fields as written that the decoded ones give (an empty
    /// subject, an id with `>` in it too) and copies every other one, and each envelope
    /// round-trips; a tag for an In-Reply-To that has no or several ids is refused, the
    /// tag for a single one reads as that id in angle brackets.
    #[test]
    fn version_5_tags_exactly_the_fields_as_written_that_derive() {
        let (_, stored, location) = version_4_records();
        let base = Envelope {
            groups: Vec::new(),
            date_raw: None,
            subject_raw: None,
            message_id_raw: None,
            in_reply_to_raw: None,
            ..stored.envelope.clone()
        };
        let s = |v: &str| Some(v.to_owned());
        let ids = |v: &[&str]| v.iter().map(|&i| i.to_owned()).collect::<Vec<_>>();
        // (envelope, the field as written, whether it is a tag)
        let cases = [
            (
                Envelope {
                    subject: s("Hello there"),
                    subject_raw: s("Hello there"),
                    ..base.clone()
                },
                "Hello there",
                true,
            ),
            (
                Envelope {
                    subject: s(""),
                    subject_raw: s(""),
                    ..base.clone()
                },
                "",
                true,
            ),
            (
                Envelope {
                    subject: None,
                    subject_raw: s("=?x?q?y?="),
                    ..base.clone()
                },
                "=?x?q?y?=",
                false,
            ),
            (
                Envelope {
                    subject: s("Gr\u{fc}\u{df}e"),
                    subject_raw: s("=?utf-8?q?Gr=C3=BC=C3=9Fe?="),
                    ..base.clone()
                },
                "=?utf-8?q?Gr=C3=BC=C3=9Fe?=",
                false,
            ),
            (
                Envelope {
                    message_id: s("a>b@x"),
                    message_id_raw: s("<a>b@x>"),
                    ..base.clone()
                },
                "<a>b@x>",
                true,
            ),
            (
                Envelope {
                    message_id: None,
                    message_id_raw: s("<m@x>"),
                    ..base.clone()
                },
                "<m@x>",
                false,
            ),
            (
                Envelope {
                    message_id: s("m@x"),
                    message_id_raw: s("<m@x> (c)"),
                    ..base.clone()
                },
                "<m@x> (c)",
                false,
            ),
            (
                Envelope {
                    in_reply_to: ids(&["p@x"]),
                    in_reply_to_raw: s("<p@x>"),
                    ..base.clone()
                },
                "<p@x>",
                true,
            ),
            (
                Envelope {
                    in_reply_to: ids(&["p@x", "q@x"]),
                    in_reply_to_raw: s("<p@x> <q@x>"),
                    ..base.clone()
                },
                "<p@x> <q@x>",
                false,
            ),
            (
                Envelope {
                    in_reply_to: Vec::new(),
                    in_reply_to_raw: s("<p@x>"),
                    ..base.clone()
                },
                "<p@x>",
                false,
            ),
        ];
        for (envelope, raw, tagged) in cases {
            let record = EmailRecord {
                envelope,
                ..stored.clone()
            };
            let bytes = record.to_bytes();
            assert_eq!(EmailRecord::parse(&bytes).unwrap(), record, "{raw:?}");
            let untagged = EmailRecord {
                envelope: Envelope {
                    date_raw: None,
                    subject_raw: None,
                    message_id_raw: None,
                    in_reply_to_raw: None,
                    ..record.envelope.clone()
                },
                ..record.clone()
            }
            .to_bytes();
            // A tag takes the presence byte's place; a copy adds its length and bytes.
            let grown = if tagged { 0 } else { 1 + raw.len() };
            assert_eq!(bytes.len(), untagged.len() + grown, "{raw:?}");
        }

        // The last field as written is the byte before the groups' count, the creation
        // modseq, the details' flag and location.
        let mut tail = Vec::new();
        put_varint(&mut tail, stored.created_modseq);
        tail.push(1);
        location.put(&mut tail);
        let in_reply_to = |list: &[&str]| {
            let record = EmailRecord {
                envelope: Envelope {
                    in_reply_to: ids(list),
                    ..base.clone()
                },
                ..stored.clone()
            };
            let mut bytes = record.to_bytes();
            let at = bytes.len() - tail.len() - 2;
            assert_eq!(bytes[at..at + 2], [0, 0]);
            bytes[at] = DERIVED;
            EmailRecord::parse(&bytes)
        };
        for list in [&[][..], &["p@x", "q@x"]] {
            assert!(
                matches!(in_reply_to(list), Err(Error::Tampered)),
                "{list:?}"
            );
        }
        let one = in_reply_to(&["p@x"]).unwrap();
        assert_eq!(one.envelope.in_reply_to_raw.as_deref(), Some("<p@x>"));
    }

    fn faithful_analysis() -> EmailAnalysis {
        let address = |name: Option<&str>, email: &str| Address {
            name: name.map(str::to_owned),
            email: email.to_owned(),
        };
        let nested = Envelope {
            subject: Some("inner".into()),
            from: vec![address(None, "c@example.org")],
            date_raw: Some("Mon, 1 Jan 2024 10:00:00 +0100".into()),
            date_zone: Some(60),
            ..Envelope::default()
        };
        let envelope = Envelope {
            date: Some(1_700_000_000),
            date_zone: Some(-300),
            date_raw: Some("Tue, 14 Nov 2023 17:13:20 -0500".into()),
            subject: Some("Grüße".into()),
            subject_raw: Some("=?utf-8?q?Gr=C3=BC=C3=9Fe?=".into()),
            from: vec![address(Some("A"), "a@example.org")],
            to: vec![
                address(None, "x@example.org"),
                address(Some("B"), "b@example.org"),
            ],
            cc: Vec::new(),
            message_id: Some("id@example.org".into()),
            message_id_raw: Some("<id@example.org>".into()),
            in_reply_to: vec!["p@example.org".into()],
            in_reply_to_raw: Some("<p@example.org> (parent)".into()),
            groups: vec![
                AddressGroup {
                    field: AddressField::To,
                    name: "Team".into(),
                    first: 1,
                    members: 1,
                },
                AddressGroup {
                    field: AddressField::Cc,
                    name: "undisclosed-recipients".into(),
                    first: 0,
                    members: 0,
                },
            ],
            ..Envelope::default()
        };
        let part = |parent: Option<u32>, t: &str, s: &str, range: (u64, u64, u64)| MimePart {
            parent,
            content_type: t.into(),
            subtype: s.into(),
            params: Vec::new(),
            transfer_encoding: None,
            disposition: None,
            filename: None,
            content_id: None,
            header_offset: range.0,
            body_offset: range.1,
            end_offset: range.2,
            lines: 1,
            description: None,
            languages: Vec::new(),
            location: None,
            md5: None,
            disposition_params: Vec::new(),
            decoded_size: None,
            envelope: None,
        };
        let mut leaf = part(Some(0), "application", "pdf", (100, 150, 250));
        leaf.description = Some("a =?utf-8?q?file?=".into());
        leaf.languages = vec!["en".into(), "fr".into()];
        leaf.location = Some("http://example.org/a.pdf".into());
        leaf.md5 = Some("Q2hlY2sgSW50ZWdyaXR5IQ==".into());
        leaf.disposition = Some("attachment".into());
        leaf.disposition_params = vec![("filename".into(), "a.pdf".into())];
        leaf.decoded_size = Some(72);
        let mut message = part(Some(0), "message", "rfc822", (250, 280, 400));
        message.envelope = Some(Box::new(nested));
        message.decoded_size = Some(120);
        EmailAnalysis {
            thread: ThreadId::from_bytes([3; 16]),
            envelope,
            parts: vec![
                part(None, "multipart", "mixed", (0, 90, 400)),
                leaf,
                message,
            ],
            header_block: Some(b"From: A <a@example.org>\r\n\r\n".to_vec()),
            preview: Some("hello world".into()),
        }
    }

    /// `bytes` parse back to `value`; every truncation and an extra byte are refused;
    /// version byte `unknown` is refused as unsupported.
    fn assert_strict<T: PartialEq + std::fmt::Debug>(
        bytes: &[u8],
        value: &T,
        parse: impl Fn(&[u8]) -> Result<T>,
        unknown: u8,
    ) {
        assert_eq!(&parse(bytes).unwrap(), value);
        for cut in 0..bytes.len() {
            assert!(parse(&bytes[..cut]).is_err(), "{cut}");
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(parse(&longer).is_err());
        let mut newer = bytes.to_vec();
        newer[0] = unknown;
        assert!(matches!(
            parse(&newer),
            Err(Error::UnsupportedVersion { version, .. }) if version == unknown
        ));
    }

    #[test]
    fn faithful_analysis_round_trip_truncation_and_groups() {
        let analysis = faithful_analysis();
        assert_strict(&analysis.to_bytes(), &analysis, EmailAnalysis::parse, 3);
        // IMAP's view of the To field: a mailbox, then the group with its member.
        let e = &analysis.envelope;
        assert_eq!(
            e.address_items(AddressField::To),
            [
                AddressItem::Mailbox(&e.to[0]),
                AddressItem::GroupStart("Team"),
                AddressItem::Mailbox(&e.to[1]),
                AddressItem::GroupEnd,
            ]
        );
        assert_eq!(
            e.address_items(AddressField::Cc),
            [
                AddressItem::GroupStart("undisclosed-recipients"),
                AddressItem::GroupEnd
            ]
        );
        assert_eq!(
            e.grouped(AddressField::To),
            [(None, &e.to[..1]), (Some("Team"), &e.to[1..])]
        );
        assert_eq!(e.grouped(AddressField::From), [(None, &e.from[..])]);
        // Groups beyond their field's addresses, or out of order, are refused.
        for groups in [
            vec![AddressGroup {
                field: AddressField::To,
                name: "G".into(),
                first: 1,
                members: 2,
            }],
            vec![
                AddressGroup {
                    field: AddressField::To,
                    name: "G".into(),
                    first: 1,
                    members: 1,
                },
                AddressGroup {
                    field: AddressField::From,
                    name: "H".into(),
                    first: 0,
                    members: 0,
                },
            ],
        ] {
            let mut bad = faithful_analysis();
            bad.envelope.groups = groups;
            assert!(matches!(
                EmailAnalysis::parse(&bad.to_bytes()),
                Err(Error::Tampered)
            ));
        }
        // A header block above the bound, a preview above 256 characters: refused.
        let mut bad = faithful_analysis();
        bad.header_block = Some(vec![b'x'; MAX_HEADER_BLOCK_LEN + 1]);
        assert!(EmailAnalysis::parse(&bad.to_bytes()).is_err());
        let mut bad = faithful_analysis();
        bad.preview = Some("é".repeat(MAX_PREVIEW_CHARS + 1));
        assert!(EmailAnalysis::parse(&bad.to_bytes()).is_err());
        let mut ok = faithful_analysis();
        ok.preview = Some("é".repeat(MAX_PREVIEW_CHARS));
        assert!(EmailAnalysis::parse(&ok.to_bytes()).is_ok());
    }

    #[test]
    fn mailbox_round_trip_and_truncation() {
        let record = MailboxRecord {
            name: "Archive/2026".into(),
            subscribed: true,
            special_use: Some(SpecialUse::Archive),
            uid_validity: 42,
            modseq: 7,
        };
        assert_strict(&record.to_bytes(), &record, MailboxRecord::parse, 2);
    }
}
