//! Search over metadata (issue 12, item 4): every RFC 9051 §6.4.4 SEARCH key except the
//! text ones, evaluated on what the index holds (flags, modseqs, sizes, internal dates
//! and the envelope computed at append or analysis), without reading a body.
//!
//! Not here, on purpose: `BODY`, `TEXT` and `HEADER` of a field the envelope does not
//! keep need the message text (the text-search issue); a server evaluates those itself
//! and passes their result in as a [`SearchKey::Uid`] set.
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

    /// The field's text in `envelope`, as [`SearchKey::Header`] matches it; `None` when
    /// the message has no such field.
    fn text(self, envelope: &Envelope) -> Option<String> {
        let addresses = |list: &[Address]| {
            (!list.is_empty()).then(|| {
                list.iter()
                    .map(|a| match &a.name {
                        Some(name) => format!("{name} <{}>", a.email),
                        None => a.email.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
        };
        let ids = |list: &[String]| (!list.is_empty()).then(|| list.join(" "));
        match self {
            Self::From => addresses(&envelope.from),
            Self::Sender => addresses(&envelope.sender),
            Self::ReplyTo => addresses(&envelope.reply_to),
            Self::To => addresses(&envelope.to),
            Self::Cc => addresses(&envelope.cc),
            Self::Bcc => addresses(&envelope.bcc),
            Self::Subject => envelope.subject.clone(),
            Self::MessageId => envelope.message_id.clone(),
            Self::InReplyTo => ids(&envelope.in_reply_to),
            Self::References => ids(&envelope.references),
        }
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
    /// key needs it and the email is still there) matches.
    fn matches(&self, seq: u32, m: &MessageSummary, email: Option<&EmailRecord>) -> bool {
        let in_ranges = |ranges: &[(u32, u32)], n: u32| {
            ranges.iter().any(|&(a, b)| a.min(b) <= n && n <= a.max(b))
        };
        let has_flag = |name: &str| {
            m.flags.contains(name) || m.flags.names().any(|n| n.eq_ignore_ascii_case(name))
        };
        let internal = || email.map(|e| SearchDay::of_timestamp(e.internal_date));
        let sent = || {
            let e = &email?.envelope;
            let zone = i64::from(e.date_zone.unwrap_or(0)) * 60;
            e.date
                .map(|d| SearchDay::of_timestamp(d.saturating_add(zone)))
        };
        match self {
            Self::All | Self::Old => true,
            Self::New | Self::Recent => false,
            Self::Flag(name) => has_flag(name),
            Self::NoFlag(name) => !has_flag(name),
            Self::Before(day) => internal().is_some_and(|d| d < *day),
            Self::On(day) => internal().is_some_and(|d| d == *day),
            Self::Since(day) => internal().is_some_and(|d| d >= *day),
            Self::SentBefore(day) => sent().is_some_and(|d| d < *day),
            Self::SentOn(day) => sent().is_some_and(|d| d == *day),
            Self::SentSince(day) => sent().is_some_and(|d| d >= *day),
            Self::Larger(n) => m.size > *n,
            Self::Smaller(n) => m.size < *n,
            Self::Uid(ranges) => in_ranges(ranges, m.uid),
            Self::Sequence(ranges) => in_ranges(ranges, seq),
            Self::Header(field, text) => email
                .and_then(|e| field.text(&e.envelope))
                .is_some_and(|value| contains_ignore_case(&value, text)),
            Self::ModSeq(n) => m.modseq >= *n,
            Self::Not(k) => !k.matches(seq, m, email),
            Self::Or(a, b) => a.matches(seq, m, email) || b.matches(seq, m, email),
            Self::And(keys) => keys.iter().all(|k| k.matches(seq, m, email)),
        }
    }
}

/// Whether `haystack` contains `needle`, ignoring case (Unicode simple lowercase).
fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    needle.is_empty() || haystack.to_lowercase().contains(&needle.to_lowercase())
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
        let mut found = Vec::new();
        for (i, m) in view.messages.iter().enumerate() {
            let email = if needs_email {
                email_record(&self.index, &m.email)?
            } else {
                None
            };
            let seq = u32::try_from(i + 1).unwrap_or(u32::MAX);
            if criteria.matches(seq, m, email.as_ref()) {
                found.push(m.uid);
            }
        }
        Ok(found)
    }
}
