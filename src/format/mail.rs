//! Mail records: the values the mailbox model keeps in the account's encrypted index
//! collection (`docs/design.md` §11). They never reach the store in the clear: the
//! index seals them in pages.
//!
//! Every record starts with a version byte (1). Integers are big-endian; strings and
//! byte strings are `u32`-length-prefixed; optional items have a presence byte (0/1);
//! lists have a `u32` count.
//!
//! ```text
//! mailbox   version ‖ name ‖ subscribed (u8) ‖ special use (u8, 0 none) ‖ UIDVALIDITY (u32)
//!           ‖ modseq of the last change to the record (u64)
//! message   version ‖ email id (16) ‖ modseq (u64) ‖ size (u64) ‖ system flags (u8)
//!           ‖ keywords (list of strings)
//! email     version ‖ pin (101, or 337 for a sealed blob) ‖ internal date (i64, Unix seconds) ‖ size (u64)
//!           ‖ thread id (16) ‖ provenance (u8) ‖ analyzed (u8) ‖ envelope ‖ MIME parts (list)
//! analysis  version ‖ thread id (16) ‖ envelope ‖ MIME parts (list): what `analyze`
//!           computed from the body of an email imported unread, kept apart from its email
//!           record
//! envelope  date (option i64) ‖ subject (option string) ‖ from, sender, reply-to, to, cc,
//!           bcc (lists of addresses: option name ‖ email) ‖ message-id (option string)
//!           ‖ in-reply-to, references (lists of strings)
//! part      parent (u32, u32::MAX for the root) ‖ type ‖ subtype ‖ parameters (list of
//!           name ‖ value) ‖ transfer encoding (option string) ‖ disposition (option)
//!           ‖ filename (option) ‖ content id (option) ‖ header, body, end offsets (u64)
//!           ‖ lines (u32)
//! vanished  version ‖ modseq of the expunge (u64) ‖ email id (16)
//! thread    version ‖ thread id (16)
//! number    version ‖ u64: a release (Unix time the email became unreferenced) or a
//!           deleted mailbox (modseq of the deletion)
//! ```

use crate::error::{Error, Result};
use crate::format::pin::BlobPin;
use crate::format::reader::{put_bytes, put_list, put_option, Reader};
use crate::ids::{EmailId, ThreadId};

/// Version byte of every mail record.
pub const MAIL_RECORD_VERSION: u8 = 1;

fn start<'a>(kind: &'static str, bytes: &'a [u8]) -> Result<Reader<'a>> {
    let mut r = Reader::new(bytes);
    let version = r.u8()?;
    if version != MAIL_RECORD_VERSION {
        return Err(Error::UnsupportedVersion {
            object: kind,
            version,
        });
    }
    Ok(r)
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
    /// Display name.
    pub name: Option<String>,
    /// The address (or group name for an empty group).
    pub email: String,
}

/// The header fields a server lists and sorts by, decoded at append.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// `Date:` as Unix seconds.
    pub date: Option<i64>,
    /// `Subject:`, decoded.
    pub subject: Option<String>,
    /// `From:`
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
}

fn put_addresses(out: &mut Vec<u8>, list: &[Address]) {
    put_list(out, list, |out, a| {
        put_option(out, a.name.as_ref(), put_str);
        put_str(out, &a.email);
    });
}

fn read_addresses(r: &mut Reader<'_>) -> Result<Vec<Address>> {
    r.list(5, |r| {
        Ok(Address {
            name: r.option(Reader::string)?,
            email: r.string()?,
        })
    })
}

impl Envelope {
    fn put(&self, out: &mut Vec<u8>) {
        put_option(out, self.date.as_ref(), |out, d| {
            out.extend_from_slice(&d.to_be_bytes())
        });
        put_option(out, self.subject.as_ref(), put_str);
        for list in [
            &self.from,
            &self.sender,
            &self.reply_to,
            &self.to,
            &self.cc,
            &self.bcc,
        ] {
            put_addresses(out, list);
        }
        put_option(out, self.message_id.as_ref(), put_str);
        put_strings(out, &self.in_reply_to);
        put_strings(out, &self.references);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Self {
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
        })
    }
}

/// One MIME part, with its byte offsets in the message (so a part is a range read).
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
}

impl MimePart {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.parent.unwrap_or(u32::MAX).to_be_bytes());
        put_str(out, &self.content_type);
        put_str(out, &self.subtype);
        put_list(out, &self.params, |out, (n, v)| {
            put_str(out, n);
            put_str(out, v);
        });
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
    }

    fn read(r: &mut Reader<'_>, index: usize) -> Result<Self> {
        let parent = match r.u32()? {
            u32::MAX => None,
            // A parent always precedes its children.
            p if (p as usize) < index => Some(p),
            _ => return Err(Error::Tampered),
        };
        let part = Self {
            parent,
            content_type: r.string()?,
            subtype: r.string()?,
            params: r.list(8, |r| Ok((r.string()?, r.string()?)))?,
            transfer_encoding: r.option(Reader::string)?,
            disposition: r.option(Reader::string)?,
            filename: r.option(Reader::string)?,
            content_id: r.option(Reader::string)?,
            header_offset: r.u64()?,
            body_offset: r.u64()?,
            end_offset: r.u64()?,
            lines: r.u32()?,
        };
        if !(part.header_offset <= part.body_offset && part.body_offset <= part.end_offset) {
            return Err(Error::Tampered);
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
    /// MIME parts in depth-first order (empty when the structure was not computed).
    pub parts: Vec<MimePart>,
}

impl EmailRecord {
    /// Serialized form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + 64 * self.parts.len());
        out.push(MAIL_RECORD_VERSION);
        out.extend_from_slice(&self.pin.to_bytes());
        out.extend_from_slice(&self.internal_date.to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(self.thread.as_bytes());
        out.push(match self.provenance {
            Provenance::KeyHolder => 1,
            Provenance::SealedDelivery => 2,
        });
        out.push(u8::from(self.analyzed));
        self.envelope.put(&mut out);
        put_parts(&mut out, &self.parts);
        out
    }

    /// Parses a stored email record.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] or [`Error::Tampered`].
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut r = start("email record", bytes)?;
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
        let envelope = Envelope::read(&mut r)?;
        let parts = read_parts(&mut r)?;
        check_parts(&parts, size)?;
        r.finish()?;
        Ok(Self {
            pin,
            internal_date,
            size,
            thread,
            provenance,
            analyzed,
            envelope,
            parts,
        })
    }

    /// This email with `analysis` (computed from its body after an import) in place of
    /// its own thread, envelope and parts.
    ///
    /// # Errors
    /// [`Error::Tampered`] if a part of the analysis ends beyond the body.
    pub fn with_analysis(self, analysis: EmailAnalysis) -> Result<Self> {
        check_parts(&analysis.parts, self.size)?;
        Ok(Self {
            thread: analysis.thread,
            analyzed: true,
            envelope: analysis.envelope,
            parts: analysis.parts,
            ..self
        })
    }
}

fn put_parts(out: &mut Vec<u8>, parts: &[MimePart]) {
    put_list(out, parts, |out, p| p.put(out));
}

fn read_parts(r: &mut Reader<'_>) -> Result<Vec<MimePart>> {
    let mut index = 0;
    r.list(48, |r| {
        let part = MimePart::read(r, index);
        index += 1;
        part
    })
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
}

impl EmailAnalysis {
    /// Serialized form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + 64 * self.parts.len());
        out.push(MAIL_RECORD_VERSION);
        out.extend_from_slice(self.thread.as_bytes());
        self.envelope.put(&mut out);
        put_parts(&mut out, &self.parts);
        out
    }

    /// Parses a stored analysis record. Its offsets are checked against the body's size
    /// by [`EmailRecord::with_analysis`].
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] or [`Error::Tampered`].
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut r = start("analysis record", bytes)?;
        let thread = ThreadId::from_bytes(r.array()?);
        let envelope = Envelope::read(&mut r)?;
        let parts = read_parts(&mut r)?;
        r.finish()?;
        Ok(Self {
            thread,
            envelope,
            parts,
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
        assert_eq!(analysis.to_bytes(), seed);
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
        };
        let analyzed = email(100).with_analysis(analysis.clone()).unwrap();
        assert!(analyzed.analyzed && analyzed.parts == analysis.parts);
        assert!(matches!(
            email(99).with_analysis(analysis),
            Err(Error::Tampered)
        ));
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
        let bytes = record.to_bytes();
        assert_eq!(MailboxRecord::parse(&bytes).unwrap(), record);
        for cut in 0..bytes.len() {
            assert!(MailboxRecord::parse(&bytes[..cut]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(MailboxRecord::parse(&longer).is_err());
        let mut other = bytes;
        other[0] = 2;
        assert!(matches!(
            MailboxRecord::parse(&other),
            Err(Error::UnsupportedVersion { version: 2, .. })
        ));
    }
}
