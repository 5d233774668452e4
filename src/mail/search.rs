//! Search over metadata (issue 12, item 4): every RFC 9051 §6.4.4 SEARCH key except the
//! text ones, evaluated on what the index holds (flags, modseqs, sizes, internal dates
//! and the envelope computed at append or analysis), without reading a body.
//!
//! Not here, on purpose: `BODY`, `TEXT` and `HEADER` of a field the envelope does not
//! keep need the message text; an IMAP server asks the text index for them
//! ([`Mailstore::search_texts`]) and passes their result in as a [`SearchKey::Uid`] set.
//! JMAP's `Email/query` ([`Mailstore::query_emails`]) does the same itself for its
//! `text`, `body` and `header` conditions ([`EmailFilter::Text`]).
//!
//! What the metadata cannot say exactly, documented where it applies:
//! - `\Recent` is not tracked (RFC 9051 removed it): [`SearchKey::Recent`] and
//!   [`SearchKey::New`] match nothing, [`SearchKey::Old`] everything;
//! - internal dates are compared as UTC days (they are stored as Unix seconds, without a
//!   zone); sent dates as the day written in the `Date:` header (its Unix seconds moved
//!   to its zone, [`Envelope::date_zone`]), "disregarding time and timezone" as RFC 9051
//!   asks (UTC days for analyses older than the zone);
//! - header keys match the envelope's decoded fields: addresses as `Name <address>`,
//!   joined by `, `, group syntax and comments dropped.

use super::*;
use crate::format::mail::SearchFields;
use crate::mail::text::oracle::TextKey;
use crate::mail::text::Matches;

/// A day (no time, no zone) for the date keys: days since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SearchDay(i64);

impl SearchDay {
    /// The day `year-month-day` of the proleptic Gregorian calendar; `None` for a date
    /// that does not exist.
    pub fn from_ymd(year: i32, month: u32, day: u32) -> Option<Self> {
        let date = chrono::NaiveDate::from_ymd_opt(year, month, day)?;
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
        Some(Self((date - epoch).num_days()))
    }

    /// The UTC day of a Unix timestamp (seconds).
    pub fn of_timestamp(secs: i64) -> Self {
        Self(secs.div_euclid(86_400))
    }

    /// Days since 1970-01-01.
    pub fn days(self) -> i64 {
        self.0
    }
}

/// A header field the envelope keeps, for [`SearchKey::Header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderField {
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
    /// `Subject:`
    Subject,
    /// `Message-ID:` (without angle brackets)
    MessageId,
    /// `In-Reply-To:` ids (without angle brackets, space-separated)
    InReplyTo,
    /// `References:` ids (without angle brackets, space-separated)
    References,
}

impl HeaderField {
    /// The field a header name (`"From"`, `"reply-to"`...) names, when the envelope keeps
    /// it.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "from" => Self::From,
            "sender" => Self::Sender,
            "reply-to" => Self::ReplyTo,
            "to" => Self::To,
            "cc" => Self::Cc,
            "bcc" => Self::Bcc,
            "subject" => Self::Subject,
            "message-id" => Self::MessageId,
            "in-reply-to" => Self::InReplyTo,
            "references" => Self::References,
            _ => return None,
        })
    }

    /// The field's text in `email`, as [`SearchKey::Header`] matches it (addresses as
    /// `Name <address>` joined by `, `, ids joined by a space), written into `buf` unless
    /// it is stored as one string; `None` when the message has no such field.
    fn text<'s, E: SearchSource + ?Sized>(
        self,
        email: &'s E,
        buf: &'s mut String,
    ) -> Result<Option<&'s str>> {
        let address = match self {
            Self::Subject => return email.subject(),
            Self::MessageId => return email.message_id(),
            Self::InReplyTo | Self::References => {
                buf.clear();
                email.ids(self == Self::References, &mut |id| {
                    if !buf.is_empty() {
                        buf.push(' ');
                    }
                    buf.push_str(id);
                })?;
                return Ok((!buf.is_empty()).then_some(buf.as_str()));
            }
            Self::From => AddressField::From,
            Self::Sender => AddressField::Sender,
            Self::ReplyTo => AddressField::ReplyTo,
            Self::To => AddressField::To,
            Self::Cc => AddressField::Cc,
            Self::Bcc => AddressField::Bcc,
        };
        buf.clear();
        let mut any = false;
        email.addresses(address, &mut |name, address| {
            if any {
                buf.push_str(", ");
            }
            any = true;
            match name {
                Some(name) => {
                    buf.push_str(name);
                    buf.push_str(" <");
                    buf.push_str(address);
                    buf.push('>');
                }
                None => buf.push_str(address),
            }
        })?;
        Ok(any.then_some(buf.as_str()))
    }
}

/// What a [`SearchKey`] compares of an email: a whole [`EmailRecord`] (JMAP's query,
/// which sorts on more), or the fields read in place from the stored record
/// ([`SearchFields`]: what a mailbox search reads for every message, its strings checked
/// when compared, hence the errors).
trait SearchSource {
    /// Internal date, Unix seconds.
    fn internal_date(&self) -> i64;
    /// `Date:` as Unix seconds, and its zone in minutes east of UTC.
    fn sent(&self) -> Result<Option<(i64, Option<i16>)>>;
    /// `Subject:`, decoded.
    fn subject(&self) -> Result<Option<&str>>;
    /// `Message-ID:`.
    fn message_id(&self) -> Result<Option<&str>>;
    /// Calls `each` with every address of `field` in order (name, address).
    fn addresses(
        &self,
        field: AddressField,
        each: &mut dyn FnMut(Option<&str>, &str),
    ) -> Result<()>;
    /// Calls `each` with every `In-Reply-To:` id, or `References:` id.
    fn ids(&self, references: bool, each: &mut dyn FnMut(&str)) -> Result<()>;
}

impl SearchSource for EmailRecord {
    fn internal_date(&self) -> i64 {
        self.internal_date
    }

    fn sent(&self) -> Result<Option<(i64, Option<i16>)>> {
        Ok(self.envelope.date.map(|d| (d, self.envelope.date_zone)))
    }

    fn subject(&self) -> Result<Option<&str>> {
        Ok(self.envelope.subject.as_deref())
    }

    fn message_id(&self) -> Result<Option<&str>> {
        Ok(self.envelope.message_id.as_deref())
    }

    fn addresses(
        &self,
        field: AddressField,
        each: &mut dyn FnMut(Option<&str>, &str),
    ) -> Result<()> {
        for a in self.envelope.addresses(field) {
            each(a.name.as_deref(), &a.email);
        }
        Ok(())
    }

    fn ids(&self, references: bool, each: &mut dyn FnMut(&str)) -> Result<()> {
        let list = if references {
            &self.envelope.references
        } else {
            &self.envelope.in_reply_to
        };
        list.iter().for_each(|id| each(id));
        Ok(())
    }
}

impl SearchSource for SearchFields<'_> {
    fn internal_date(&self) -> i64 {
        self.internal_date
    }

    fn sent(&self) -> Result<Option<(i64, Option<i16>)>> {
        SearchFields::sent(self)
    }

    fn subject(&self) -> Result<Option<&str>> {
        SearchFields::subject(self)
    }

    fn message_id(&self) -> Result<Option<&str>> {
        SearchFields::message_id(self)
    }

    fn addresses(
        &self,
        field: AddressField,
        each: &mut dyn FnMut(Option<&str>, &str),
    ) -> Result<()> {
        SearchFields::addresses(self, field, each)
    }

    fn ids(&self, references: bool, each: &mut dyn FnMut(&str)) -> Result<()> {
        SearchFields::ids(self, references, each)
    }
}

/// A search criterion (RFC 9051 §6.4.4), over metadata. A list of keys (IMAP's implicit
/// AND) is [`SearchKey::And`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchKey {
    /// Every message (`ALL`).
    All,
    /// Messages with this flag or keyword (`ANSWERED`, `DELETED`, `DRAFT`, `FLAGGED`,
    /// `SEEN` with the system flag's name, `KEYWORD k`); keywords compare
    /// case-insensitively.
    Flag(String),
    /// Messages without it (`UNANSWERED`... `UNSEEN`, `UNKEYWORD k`).
    NoFlag(String),
    /// `NEW` (recent and unseen): nothing, `\Recent` is not tracked.
    New,
    /// `OLD` (not recent): every message.
    Old,
    /// `RECENT`: nothing, `\Recent` is not tracked.
    Recent,
    /// Internal date before this day (`BEFORE`).
    Before(SearchDay),
    /// Internal date on this day (`ON`).
    On(SearchDay),
    /// Internal date on or after this day (`SINCE`).
    Since(SearchDay),
    /// `Date:` header before this day (`SENTBEFORE`); a message without one never
    /// matches.
    SentBefore(SearchDay),
    /// `Date:` header on this day (`SENTON`).
    SentOn(SearchDay),
    /// `Date:` header on or after this day (`SENTSINCE`).
    SentSince(SearchDay),
    /// Size above this many bytes (`LARGER`).
    Larger(u64),
    /// Size below this many bytes (`SMALLER`).
    Smaller(u64),
    /// UIDs in these inclusive ranges (`UID set`; the caller resolves `*`).
    Uid(Vec<(u32, u32)>),
    /// Message sequence numbers in these inclusive ranges, in the view searched (`set`;
    /// the caller resolves `*`).
    Sequence(Vec<(u32, u32)>),
    /// The field contains this text, case-insensitively (`FROM`, `TO`, `CC`, `BCC`,
    /// `SUBJECT`, `HEADER field text`); an empty text matches every message that has the
    /// field.
    Header(HeaderField, String),
    /// Modseq at least this (`MODSEQ`, RFC 7162).
    ModSeq(u64),
    /// Not this (`NOT`).
    Not(Box<SearchKey>),
    /// Either (`OR`).
    Or(Box<SearchKey>, Box<SearchKey>),
    /// All of these (a list of keys).
    And(Vec<SearchKey>),
}

impl SearchKey {
    /// Whether evaluating this key reads the envelope (header and sent-date keys): an
    /// email imported from a sealed delivery and not yet analyzed
    /// ([`EmailRecord::analyzed`] false) has an empty one, so a caller that wants exact
    /// answers analyzes such messages first ([`Mailstore::analyze`]).
    pub fn needs_envelope(&self) -> bool {
        match self {
            Self::SentBefore(_) | Self::SentOn(_) | Self::SentSince(_) | Self::Header(..) => true,
            Self::Not(k) => k.needs_envelope(),
            Self::Or(a, b) => a.needs_envelope() || b.needs_envelope(),
            Self::And(keys) => keys.iter().any(Self::needs_envelope),
            _ => false,
        }
    }

    /// Whether evaluating this key reads the email record (dates and envelope).
    fn needs_email(&self) -> bool {
        match self {
            Self::Before(_) | Self::On(_) | Self::Since(_) => true,
            Self::Not(k) => k.needs_email(),
            Self::Or(a, b) => a.needs_email() || b.needs_email(),
            Self::And(keys) => keys.iter().any(Self::needs_email),
            other => other.needs_envelope(),
        }
    }

    /// Whether message `m`, at sequence number `seq`, with its email `email` (when the
    /// key needs it and the email is still there) matches; `buf` is room for a header
    /// field's text.
    fn matches<E: SearchSource + ?Sized>(
        &self,
        seq: u32,
        m: &MessageSummary,
        email: Option<&E>,
        buf: &mut String,
    ) -> Result<bool> {
        let in_ranges = |ranges: &[(u32, u32)], n: u32| {
            ranges.iter().any(|&(a, b)| a.min(b) <= n && n <= a.max(b))
        };
        let has_flag = |name: &str| {
            m.flags.contains(name) || m.flags.names().any(|n| n.eq_ignore_ascii_case(name))
        };
        let internal = || email.map(|e| SearchDay::of_timestamp(e.internal_date()));
        let sent = || -> Result<Option<SearchDay>> {
            let Some((date, zone)) = email.map(|e| e.sent()).transpose()?.flatten() else {
                return Ok(None);
            };
            let zone = i64::from(zone.unwrap_or(0)) * 60;
            Ok(Some(SearchDay::of_timestamp(date.saturating_add(zone))))
        };
        Ok(match self {
            Self::All | Self::Old => true,
            Self::New | Self::Recent => false,
            Self::Flag(name) => has_flag(name),
            Self::NoFlag(name) => !has_flag(name),
            Self::Before(day) => internal().is_some_and(|d| d < *day),
            Self::On(day) => internal().is_some_and(|d| d == *day),
            Self::Since(day) => internal().is_some_and(|d| d >= *day),
            Self::SentBefore(day) => sent()?.is_some_and(|d| d < *day),
            Self::SentOn(day) => sent()?.is_some_and(|d| d == *day),
            Self::SentSince(day) => sent()?.is_some_and(|d| d >= *day),
            Self::Larger(n) => m.size > *n,
            Self::Smaller(n) => m.size < *n,
            Self::Uid(ranges) => in_ranges(ranges, m.uid),
            Self::Sequence(ranges) => in_ranges(ranges, seq),
            Self::Header(field, text) => match email {
                Some(e) => field
                    .text(e, buf)?
                    .is_some_and(|value| contains_ignore_case(value, text)),
                None => false,
            },
            Self::ModSeq(n) => m.modseq >= *n,
            Self::Not(k) => !k.matches(seq, m, email, buf)?,
            Self::Or(a, b) => a.matches(seq, m, email, buf)? || b.matches(seq, m, email, buf)?,
            Self::And(keys) => {
                for k in keys {
                    if !k.matches(seq, m, email, buf)? {
                        return Ok(false);
                    }
                }
                true
            }
        })
    }
}

/// Whether `haystack` contains `needle` under `i;unicode-casemap` (RFC 5051, IMAP's
/// default comparator): the one definition of the crate,
/// [`crate::mail::text::fold::contains`].
fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    crate::mail::text::fold::contains(haystack, needle)
}

impl Mailstore {
    /// The UIDs of the messages of `mailbox` that match `criteria`, ascending, as the
    /// mailbox is loaded (sequence numbers are those of [`view`](Self::view)). Reads no
    /// body and makes no request.
    ///
    /// # Errors
    /// [`Error::NoSuchMailbox`] for an unknown mailbox; [`Error::Tampered`] for a record
    /// that does not parse.
    #[tracing::instrument(level = "debug", skip_all, fields(account = %self.account()))]
    pub fn search(&self, mailbox: MailboxId, criteria: &SearchKey) -> Result<Vec<u32>> {
        self.search_view(&self.view(mailbox)?, criteria)
    }

    /// The UIDs of the messages of `view` whose email is not analyzed yet (imported
    /// without an analysis from the deliverer): what [`analyze`](Self::analyze) must see
    /// before a search with envelope keys ([`SearchKey::needs_envelope`]) answers for
    /// them. Reads each record's fixed-size prefix only; a message whose email is gone is
    /// left out.
    ///
    /// # Errors
    /// [`Error::Tampered`] for a record that does not parse.
    pub fn unanalyzed(&self, view: &MailboxView) -> Result<Vec<u32>> {
        let mut found = Vec::new();
        for (m, record) in view.messages.iter().zip(self.email_records(view)) {
            if let Some(bytes) = record {
                // Analyzed after its import: the analysis is a record of its own.
                if !crate::format::mail::EmailRecord::is_analyzed(bytes)?
                    && self.index.get(&super::keys::analysis(&m.email)).is_none()
                {
                    found.push(m.uid);
                }
            }
        }
        Ok(found)
    }

    /// As [`search`](Self::search), over the messages of `view` as the caller knows them:
    /// an IMAP connection passes its own snapshot, so that sequence numbers are its own
    /// (message `n` is `view.messages[n - 1]`), with the flags it wants compared. A
    /// message whose email is gone meanwhile matches only keys that need no email
    /// record.
    ///
    /// # Errors
    /// [`Error::Tampered`] for a record that does not parse.
    pub fn search_view(&self, view: &MailboxView, criteria: &SearchKey) -> Result<Vec<u32>> {
        let needs_email = criteria.needs_email();
        let records = if needs_email {
            self.email_records(view)
        } else {
            Vec::new()
        };
        let mut found = Vec::new();
        let mut buf = String::new();
        for (i, m) in view.messages.iter().enumerate() {
            // The fields a key compares, read in place: no copy of the record.
            let email = match records.get(i).copied().flatten() {
                Some(bytes) => Some(search_fields(&self.index, &m.email, bytes)?),
                None => None,
            };
            let seq = u32::try_from(i + 1).unwrap_or(u32::MAX);
            if criteria.matches(seq, m, email.as_ref(), &mut buf)? {
                found.push(m.uid);
            }
        }
        Ok(found)
    }

    /// The stored email record of each message of `view` (`None` when its email is
    /// gone), in the view's order, read in the index's key order
    /// ([`Collection::get_ascending`]): for a whole mailbox, a walk along the index
    /// instead of one lookup per message.
    fn email_records(&self, view: &MailboxView) -> Vec<Option<&[u8]>> {
        let mut order: Vec<(EmailId, usize)> = view
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| (m.email, i))
            .collect();
        order.sort_unstable();
        let keys: Vec<[u8; 17]> = order.iter().map(|(id, _)| keys::email_array(id)).collect();
        let mut records = vec![None; view.messages.len()];
        for ((_, i), record) in order.iter().zip(self.index.get_ascending(&keys)) {
            records[*i] = record;
        }
        records
    }
}

/// The search fields of the email `id`, whose stored record is `bytes`: its own, or
/// those of its analysis record when it was analyzed after its import (as
/// [`email_record`] reads it).
fn search_fields<'a>(c: &'a Collection, id: &EmailId, bytes: &'a [u8]) -> Result<SearchFields<'a>> {
    let fields = SearchFields::of_email(bytes)?;
    if fields.analyzed {
        return Ok(fields);
    }
    match c.get(&keys::analysis(id)) {
        Some(analysis) => SearchFields::of_analysis(analysis, &fields),
        None => Ok(fields),
    }
}

// ---------------------------------------------------------------- JMAP Email/query

/// A JMAP `Email/query` filter (RFC 8621 §4.4.1) over the whole account, by email. The
/// metadata conditions are evaluated by [`SearchKey`] on each email as JMAP sees it: its
/// keywords ([`Mailstore::keywords`]), its size, its envelope, its internal date
/// (`receivedAt`).
///
/// The text conditions ([`Text`](Self::Text), [`Body`](Self::Body),
/// [`Header`](Self::Header)) have IMAP's semantics, which RFC 8621 leaves to the server:
/// the string, as given (not cut into words), is a *substring* of the decoded text under
/// the `i;unicode-casemap` comparator (RFC 5051, IMAP's default), exactly as IMAP
/// `TEXT`, `BODY` and `HEADER` ([`TextKey`], whose [`oracle`](crate::mail::text::oracle)
/// defines them over the text model of [`extract`](crate::mail::text::extract)). They are
/// answered by the account's encrypted text index ([`Mailstore::search_texts`]), which
/// indexes on the way what it lacks; an empty string matches every email (`text`,
/// `body`) or every email with the field (`header`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailFilter {
    /// In this mailbox (`inMailbox`).
    InMailbox(MailboxId),
    /// In a mailbox other than these (`inMailboxOtherThan`).
    InMailboxOtherThan(Vec<MailboxId>),
    /// `receivedAt` before this Unix time, seconds (`before`).
    ReceivedBefore(i64),
    /// `receivedAt` at or after this Unix time, seconds (`after`).
    ReceivedAfter(i64),
    /// Size at least this many bytes (`minSize`).
    MinSize(u64),
    /// Size below this many bytes (`maxSize`).
    MaxSize(u64),
    /// Every email of its thread has this keyword (`allInThreadHaveKeyword`).
    AllInThreadHaveKeyword(String),
    /// Some email of its thread has it (`someInThreadHaveKeyword`).
    SomeInThreadHaveKeyword(String),
    /// No email of its thread has it (`noneInThreadHaveKeyword`).
    NoneInThreadHaveKeyword(String),
    /// The text is in the email (`text`): IMAP `TEXT`, every field of the top-level
    /// header (RFC 8621 requires `From`, `To`, `Cc`, `Bcc` and `Subject`; the others, but
    /// the signature fields of [`EXCLUDED_FIELDS`](crate::mail::text::extract::EXCLUDED_FIELDS),
    /// as RFC 8621 allows), the text of every text part (HTML reduced to text) and the
    /// parts' headers and attachment names.
    Text(String),
    /// The text is in the text of a text part (`body`): IMAP `BODY`, no header, no
    /// attachment name.
    Body(String),
    /// A top-level header field named `.0` (ASCII case-insensitively) whose decoded
    /// value contains `.1` (`header`: `[name, value]`; `[name]` is an empty value, which
    /// matches every email that has the field): IMAP `HEADER`, over every field of the
    /// header as stored, not only those the envelope keeps (`from`, `to`, `cc`, `bcc` and
    /// `subject` are [`SearchKey::Header`] on the envelope instead).
    Header(String, String),
    /// A metadata key: `hasKeyword` is [`SearchKey::Flag`], `notKeyword`
    /// [`SearchKey::NoFlag`], `from`/`to`/`cc`/`bcc`/`subject` [`SearchKey::Header`],
    /// and any other key but [`SearchKey::Uid`] and [`SearchKey::Sequence`] (which name
    /// messages of a mailbox, not emails: refused with [`Error::InvalidArgument`]).
    Key(SearchKey),
    /// All of these (`operator: AND`).
    And(Vec<EmailFilter>),
    /// Any of these (`operator: OR`).
    Or(Vec<EmailFilter>),
    /// None of these (`operator: NOT`).
    Not(Vec<EmailFilter>),
}

/// What an [`EmailSort`] compares (RFC 8621 §4.4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailSortProperty {
    /// Internal date (`receivedAt`).
    ReceivedAt,
    /// `Date:` header (`sentAt`); emails without one sort first.
    SentAt,
    /// Size (`size`).
    Size,
    /// The first `From:` address: its name, or its address without one (`from`),
    /// case-insensitively.
    From,
    /// The first `To:` address, as for `From` (`to`).
    To,
    /// The base subject (`subject`): `Re:`, `Fw:`, `Fwd:` prefixes and a `(fwd)`
    /// trailer removed (RFC 5256 §2.1, without its `[blob]` rule), case-insensitively.
    Subject,
    /// Whether the email has this keyword (`hasKeyword`): without first.
    HasKeyword(String),
    /// Whether every email of its thread has it (`allInThreadHaveKeyword`).
    AllInThreadHaveKeyword(String),
    /// Whether some email of its thread has it (`someInThreadHaveKeyword`).
    SomeInThreadHaveKeyword(String),
}

/// One sort criterion of an [`EmailQuery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailSort {
    /// What is compared.
    pub property: EmailSortProperty,
    /// Ascending (JMAP `isAscending`, true by default there).
    pub ascending: bool,
}

/// A JMAP `Email/query` (RFC 8621 §4.4), evaluated by [`Mailstore::query_emails`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EmailQuery {
    /// Which emails; every email when `None`.
    pub filter: Option<EmailFilter>,
    /// Sort criteria, first first; ties (and an empty list) by `receivedAt` newest
    /// first, then by email id.
    pub sort: Vec<EmailSort>,
    /// Only the first email (in sort order) of each thread (`collapseThreads`).
    pub collapse_threads: bool,
    /// Index of the first id returned; negative counts from the end (`position`).
    pub position: i64,
    /// Start at this email instead of `position` (`anchor`).
    pub anchor: Option<EmailId>,
    /// Offset from the anchor (`anchorOffset`).
    pub anchor_offset: i64,
    /// At most this many ids (`limit`).
    pub limit: Option<usize>,
}

/// What [`Mailstore::query_emails`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EmailQueryResult {
    /// The emails in the window, in order.
    pub ids: Vec<EmailId>,
    /// Index of the first of them in the whole result (`position`).
    pub position: usize,
    /// Size of the whole result (`total`).
    pub total: usize,
    /// The account's modseq the query saw (`queryState`).
    pub modseq: u64,
}

/// One email as a query sees it.
struct Entry {
    id: EmailId,
    /// Its keywords, size and highest modseq, for [`SearchKey::matches`].
    summary: MessageSummary,
    mailboxes: BTreeSet<MailboxId>,
    email: EmailRecord,
}

impl SearchKey {
    /// Whether the key names messages by UID or sequence number.
    fn positional(&self) -> bool {
        match self {
            Self::Uid(_) | Self::Sequence(_) => true,
            Self::Not(k) => k.positional(),
            Self::Or(a, b) => a.positional() || b.positional(),
            Self::And(keys) => keys.iter().any(Self::positional),
            _ => false,
        }
    }
}

/// Keywords of every email of each thread.
type Threads<'a> = HashMap<ThreadId, Vec<&'a Flags>>;

fn has_keyword(flags: &Flags, keyword: &str) -> bool {
    SearchKey::Flag(keyword.to_owned())
        .matches(
            0,
            &MessageSummary {
                uid: 0,
                email: EmailId::from_bytes([0; 16]),
                flags: flags.clone(),
                modseq: 0,
                size: 0,
            },
            None::<&EmailRecord>,
            &mut String::new(),
        )
        // A whole record's fields are checked: comparing them does not fail.
        .unwrap_or(false)
}

fn in_thread(threads: &Threads<'_>, entry: &Entry, keyword: &str) -> (bool, bool) {
    let flags = threads
        .get(&entry.email.thread)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let all = flags.iter().all(|f| has_keyword(f, keyword));
    let some = flags.iter().any(|f| has_keyword(f, keyword));
    (all, some)
}

impl EmailFilter {
    fn check(&self) -> Result<()> {
        match self {
            Self::Key(key) if key.positional() => Err(Error::invalid(
                "UID and sequence keys name messages of a mailbox, not emails",
            )),
            Self::And(list) | Self::Or(list) | Self::Not(list) => {
                list.iter().try_for_each(Self::check)
            }
            _ => Ok(()),
        }
    }

    /// This condition as a [`TextKey`], when it is a text condition.
    fn text_key(&self) -> Option<TextKey> {
        Some(match self {
            Self::Text(s) => TextKey::Text(s.clone()),
            Self::Body(s) => TextKey::Body(s.clone()),
            Self::Header(name, s) => TextKey::Header(name.clone(), s.clone()),
            _ => return None,
        })
    }

    /// Whether this condition is the text condition `key` (without building its key).
    fn is_text_key(&self, key: &TextKey) -> bool {
        match (self, key) {
            (Self::Text(a), TextKey::Text(b)) | (Self::Body(a), TextKey::Body(b)) => a == b,
            (Self::Header(n, a), TextKey::Header(m, b)) => n == m && a == b,
            _ => false,
        }
    }

    /// Adds to `out` the text conditions of this filter not in it yet, depth first.
    fn text_keys(&self, out: &mut Vec<TextKey>) {
        match self {
            Self::And(list) | Self::Or(list) | Self::Not(list) => {
                list.iter().for_each(|f| f.text_keys(out));
            }
            leaf => {
                if let Some(key) = leaf.text_key() {
                    if !out.iter().any(|k| leaf.is_text_key(k)) {
                        out.push(key);
                    }
                }
            }
        }
    }

    /// Whether `entry`, the `at`-th of the entries whose texts `texts` resolved, matches.
    fn matches(
        &self,
        entry: &Entry,
        at: usize,
        threads: &Threads<'_>,
        texts: &TextMatches,
    ) -> bool {
        let mut buf = String::new();
        // A whole record's fields are checked: comparing them does not fail.
        let mut key = |k: &SearchKey| {
            k.matches(0, &entry.summary, Some(&entry.email), &mut buf)
                .unwrap_or(false)
        };
        match self {
            Self::InMailbox(m) => entry.mailboxes.contains(m),
            Self::InMailboxOtherThan(list) => entry.mailboxes.iter().any(|m| !list.contains(m)),
            Self::ReceivedBefore(t) => entry.email.internal_date < *t,
            Self::ReceivedAfter(t) => entry.email.internal_date >= *t,
            Self::MinSize(n) => *n == 0 || key(&SearchKey::Larger(n - 1)),
            Self::MaxSize(n) => key(&SearchKey::Smaller(*n)),
            Self::AllInThreadHaveKeyword(k) => in_thread(threads, entry, k).0,
            Self::SomeInThreadHaveKeyword(k) => in_thread(threads, entry, k).1,
            Self::NoneInThreadHaveKeyword(k) => !in_thread(threads, entry, k).1,
            Self::Key(k) => key(k),
            Self::Text(_) | Self::Body(_) | Self::Header(..) => texts.contains(self, at),
            Self::And(list) => list.iter().all(|f| f.matches(entry, at, threads, texts)),
            Self::Or(list) => list.iter().any(|f| f.matches(entry, at, threads, texts)),
            Self::Not(list) => !list.iter().any(|f| f.matches(entry, at, threads, texts)),
        }
    }
}

/// The emails each text condition of a filter matches: resolved through the text index
/// before the filter is evaluated, so that the evaluation stays synchronous and the
/// boolean structure is the evaluator's (the sets are exact).
#[derive(Default)]
struct TextMatches(Vec<(TextKey, Matches)>);

impl TextMatches {
    /// The text conditions of `filter` answered over `emails`: one
    /// [`Mailstore::search_texts`] for all of them.
    async fn resolve(mail: &Mailstore, filter: &EmailFilter, emails: &[EmailId]) -> Result<Self> {
        let mut keys = Vec::new();
        filter.text_keys(&mut keys);
        if keys.is_empty() {
            return Ok(Self::default());
        }
        let sets = mail.search_texts(emails, &keys).await?;
        Ok(Self(keys.into_iter().zip(sets).collect()))
    }

    /// Whether the text condition `condition` matches the `at`-th email of those
    /// resolved.
    fn contains(&self, condition: &EmailFilter, at: usize) -> bool {
        self.0
            .iter()
            .find(|(key, _)| condition.is_text_key(key))
            .is_some_and(|(_, set)| set.contains(at))
    }
}

/// The base subject of RFC 5256 §2.1, simplified: leading `re:`, `fw:`, `fwd:` (with
/// white space) and a trailing `(fwd)` removed, lowercase.
fn base_subject(subject: &str) -> String {
    let mut s = subject.trim().to_lowercase();
    loop {
        let before = s.len();
        while let Some(rest) = s.strip_suffix("(fwd)") {
            s = rest.trim_end().to_owned();
        }
        for prefix in ["re:", "fwd:", "fw:"] {
            if let Some(rest) = s.strip_prefix(prefix) {
                s = rest.trim_start().to_owned();
            }
        }
        if s.len() == before {
            return s;
        }
    }
}

fn first_address(list: &[Address]) -> String {
    list.first()
        .map(|a| a.name.clone().unwrap_or_else(|| a.email.clone()))
        .unwrap_or_default()
        .to_lowercase()
}

fn compare(
    property: &EmailSortProperty,
    a: &Entry,
    b: &Entry,
    threads: &Threads<'_>,
) -> std::cmp::Ordering {
    use EmailSortProperty as P;
    match property {
        P::ReceivedAt => a.email.internal_date.cmp(&b.email.internal_date),
        P::SentAt => a.email.envelope.date.cmp(&b.email.envelope.date),
        P::Size => a.summary.size.cmp(&b.summary.size),
        P::From => {
            first_address(&a.email.envelope.from).cmp(&first_address(&b.email.envelope.from))
        }
        P::To => first_address(&a.email.envelope.to).cmp(&first_address(&b.email.envelope.to)),
        P::Subject => {
            let subject =
                |e: &Entry| base_subject(e.email.envelope.subject.as_deref().unwrap_or(""));
            subject(a).cmp(&subject(b))
        }
        P::HasKeyword(k) => has_keyword(&a.summary.flags, k).cmp(&has_keyword(&b.summary.flags, k)),
        P::AllInThreadHaveKeyword(k) => in_thread(threads, a, k).0.cmp(&in_thread(threads, b, k).0),
        P::SomeInThreadHaveKeyword(k) => {
            in_thread(threads, a, k).1.cmp(&in_thread(threads, b, k).1)
        }
    }
}

impl Mailstore {
    /// JMAP `Email/query` over the whole account: the emails `query.filter` selects,
    /// sorted, one per thread with `collapse_threads`, the window `position`/`anchor` and
    /// `limit` asks for. Reads every message and email record of the account; without a
    /// text condition, no body and no request. The text conditions
    /// ([`EmailFilter::Text`], [`Body`](EmailFilter::Body), [`Header`](EmailFilter::Header))
    /// are answered first, all at once, by the account's text index
    /// ([`search_texts`](Self::search_texts), over every email of the account): its
    /// segments are read, and the emails it does not cover yet are read, scanned and
    /// indexed. An email imported and not yet analyzed has an empty envelope (see
    /// [`SearchKey::needs_envelope`]); the text conditions do not depend on it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a UID or sequence key; [`Error::NoSuchMessage`] for
    /// an anchor not in the result (JMAP `anchorNotFound`); [`Error::Tampered`] for a
    /// record or an index segment that does not parse or authenticate; with a text
    /// condition, what reading a body or the index fails with
    /// ([`search_texts`](Self::search_texts)).
    #[tracing::instrument(level = "debug", skip_all, fields(account = %self.account()))]
    pub async fn query_emails(&self, query: &EmailQuery) -> Result<EmailQueryResult> {
        if let Some(filter) = &query.filter {
            filter.check()?;
        }
        let c = &self.index;
        let mut copies: BTreeMap<EmailId, (Vec<MessageRecord>, BTreeSet<MailboxId>)> =
            BTreeMap::new();
        for (k, v) in c.prefix(&[keys::MESSAGE]) {
            let (mailbox, _, _) = keys::parse_message(k).ok_or(Error::Tampered)?;
            let message = MessageRecord::parse(v)?;
            let entry = copies.entry(message.email).or_default();
            entry.1.insert(mailbox);
            entry.0.push(message);
        }
        let mut entries = Vec::with_capacity(copies.len());
        for (id, (messages, mailboxes)) in copies {
            let Some(email) = email_record(c, &id)? else {
                continue;
            };
            let summary = MessageSummary {
                uid: 0,
                email: id,
                flags: transaction::keywords_of(messages.iter()),
                modseq: messages.iter().map(|m| m.modseq).max().unwrap_or(0),
                size: email.size,
            };
            entries.push(Entry {
                id,
                summary,
                mailboxes,
                email,
            });
        }
        let texts = match &query.filter {
            Some(filter) => {
                let ids: Vec<EmailId> = entries.iter().map(|e| e.id).collect();
                TextMatches::resolve(self, filter, &ids).await?
            }
            None => TextMatches::default(),
        };
        let mut threads: Threads<'_> = HashMap::new();
        for entry in &entries {
            threads
                .entry(entry.email.thread)
                .or_default()
                .push(&entry.summary.flags);
        }
        let mut found: Vec<&Entry> = entries
            .iter()
            .enumerate()
            .filter(|(at, e)| {
                query
                    .filter
                    .as_ref()
                    .is_none_or(|f| f.matches(e, *at, &threads, &texts))
            })
            .map(|(_, e)| e)
            .collect();
        found.sort_by(|a, b| {
            query
                .sort
                .iter()
                .map(|s| {
                    let order = compare(&s.property, a, b, &threads);
                    if s.ascending {
                        order
                    } else {
                        order.reverse()
                    }
                })
                .find(|o| o.is_ne())
                .unwrap_or_else(|| {
                    b.email
                        .internal_date
                        .cmp(&a.email.internal_date)
                        .then(a.id.cmp(&b.id))
                })
        });
        if query.collapse_threads {
            let mut seen = HashSet::new();
            found.retain(|e| seen.insert(e.email.thread));
        }
        let total = found.len();
        let start = match query.anchor {
            Some(anchor) => {
                let at = found.iter().position(|e| e.id == anchor).ok_or_else(|| {
                    Error::NoSuchMessage {
                        what: format!("anchor {anchor}"),
                    }
                })?;
                let at = i64::try_from(at).unwrap_or(i64::MAX);
                usize::try_from(at.saturating_add(query.anchor_offset).max(0)).unwrap_or(0)
            }
            None if query.position < 0 => {
                let total = i64::try_from(total).unwrap_or(i64::MAX);
                usize::try_from(total.saturating_add(query.position).max(0)).unwrap_or(0)
            }
            None => usize::try_from(query.position).unwrap_or(usize::MAX),
        }
        .min(total);
        let ids = found
            .iter()
            .skip(start)
            .take(query.limit.unwrap_or(usize::MAX))
            .map(|e| e.id)
            .collect();
        Ok(EmailQueryResult {
            ids,
            position: start,
            total,
            modseq: c.generation(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::contains_ignore_case;

    /// The in-place ASCII comparison answers as folding both sides does, and text that is
    /// not ASCII (whose folded form may be ASCII: the Kelvin sign's is `K`) is folded.
    #[test]
    fn contains_ignore_case_answers_as_folding() {
        use crate::mail::text::fold::fold;
        let texts = [
            "",
            "a",
            "Re: Project Update #42 (budget)",
            "needle 42",
            "NEEDLE",
            "nee dle",
            "\u{212A}elvin scale",
            "Stra\u{df}e",
            "STRASSE",
            "\u{130}stanbul",
            "\u{dc}N\u{cf}CODE",
            "[x] needle",
        ];
        for haystack in texts {
            for needle in texts {
                let expected = fold(haystack).contains(&fold(needle));
                assert_eq!(
                    contains_ignore_case(haystack, needle),
                    expected,
                    "{haystack:?} contains {needle:?}"
                );
            }
        }
        assert!(contains_ignore_case("\u{212A}elvin scale", "KELVIN"));
        assert!(contains_ignore_case("Re: Project Update", "pROJECT uP"));
        assert!(!contains_ignore_case("needle", "needles"));
        assert!(!contains_ignore_case("Strasse", "straße"));
        assert!(contains_ignore_case("ΟΔΟΣ", "οδος"));
    }
}
