//! IMAP4rev1 and IMAP4rev2 on TCP, with TLS (IMAPS and STARTTLS) when the config names a certificate:
//! `imap-next` frames commands (literals, continuation requests, size limits) and
//! `imap-codec` parses and writes them; each command maps onto the library's
//! `SharedAccount` (reads) and its `Mailstore` (writes).
//!
//! Authentication is LOGIN or AUTHENTICATE PLAIN (RFC 4616, with SASL-IR, RFC 4959), one
//! credential check for both. With TLS configured, a password is accepted on the plain
//! port only after STARTTLS (LOGINDISABLED before it), except on a connection whose peer
//! address is the server's own address (Dovecot's rule for `disable_plaintext_auth`: the
//! bytes never leave the machine). STARTTLS discards whatever the client sent after it
//! in the clear (the command injection of CVE-2011-0411): the session continues inside
//! TLS on a fresh protocol state.
//!
//! The connections of one account share one handle (`AccountRegistry`): the account is
//! loaded once per process, and the handle's poller loads what other processes commit
//! and imports deliveries as they arrive. A connection keeps its own snapshot of the
//! selected mailbox (`Selected::view`): its message sequence numbers. Changes made by
//! anyone (this connection, another one, another process, a delivery) reach the
//! client only at NOOP, CHECK, IDLE and after commands that may announce them
//! (EXPUNGE, MOVE, COPY, APPEND), as EXPUNGE (highest number first), EXISTS and FETCH
//! FLAGS: never during FETCH, STORE or SEARCH (RFC 9051 7.5.1).
//!
//! # IMAP4rev1 and IMAP4rev2
//!
//! Both are advertised; a session speaks IMAP4rev1 (RFC 3501) until the client sends
//! `ENABLE IMAP4rev2` (RFC 9051 6.3.1), and then follows RFC 9051 where it differs
//! (its Appendix E; `tests/rev2.py` checks each point):
//! - mailbox names in UTF-8 both ways, `quoted` strings with UTF-8 (5.1, 4.3), instead
//!   of modified UTF-7 (an IMAP4rev1 session keeps modified UTF-7);
//! - SEARCH and UID SEARCH answered with ESEARCH and the TAG correlator, as
//!   `RETURN (ALL)` (6.4.4);
//! - no RECENT response and no UNSEEN code in SELECT/EXAMINE, which return a LIST
//!   response of the mailbox instead (6.3.2); the STATUS item RECENT and the SEARCH
//!   keys NEW, OLD and RECENT, gone from the syntax, are answered BAD;
//! - `\HasChildren`/`\HasNoChildren` on every LIST response (7.3.1), and a level of
//!   hierarchy that is no mailbox returned `\NonExistent` for a `%` pattern (6.3.9)
//!   and, with CHILDINFO, under RECURSIVEMATCH (RFC 5258 3.1).
//!
//! The same for both versions, since they are extensions of IMAP4rev1 that RFC 9051
//! folded in: ENABLE, IDLE, NAMESPACE, UNSELECT, UIDPLUS, MOVE, ESEARCH, SEARCHRES,
//! LIST-EXTENDED, LIST-STATUS, SPECIAL-USE attributes, BINARY, SASL-IR, LITERAL+ (more
//! than RFC 9051's LITERAL-), STATUS SIZE and DELETED, QUOTA (RFC 9208), the `[CLOSED]` code, never
//! `\Recent` in FLAGS.
//!
//! SEARCHRES (RFC 5182, RFC 9051 6.4.4.1): `[UID] SEARCH RETURN (SAVE ...)` sets the
//! selected mailbox's search result variable (`Selected::saved`, UIDs), and `$` stands
//! for it wherever a sequence set goes (FETCH, STORE, COPY, MOVE, UID EXPUNGE, the
//! search keys `$` and `UID $`), in a UID command and a sequence number command alike.
//! SAVE alone returns no ESEARCH; with MIN and/or MAX (no ALL, no COUNT) only those
//! messages are saved (RFC 5182 2.4); a NO to a SAVE search empties it (a BAD, a
//! command not carried out, keeps it); SELECT and EXAMINE start empty; expunged
//! messages drop out. `$` is a whole sequence set (`$,1`, `1:$`: BAD), parsed by the
//! patched imap-codec (`vendor/PATCHES.md`, `ext_searchres`).
//!
//! Not done: messages are served as stored:
//! RFC 9051 lets UTF-8 headers reach an IMAP4rev2 client, and an IMAP4rev1 client gets
//! them too, as before. `UTF8=ACCEPT` (RFC 6855) is not advertised: it also needs the
//! `UTF8 (...)` APPEND data extension (RFC 6855 4), which imap-codec does not parse.

use std::collections::{BTreeSet, HashMap};
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use chrono::Datelike;

use crate::mutf7;
use imap_next::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_next::imap_types::body::{
    BasicFields, Body, BodyStructure, Disposition, Language, Location, MultiPartExtensionData,
    SinglePartExtensionData, SpecificFields,
};
use imap_next::imap_types::command::{
    Command, CommandBody, FetchModifier, SelectParameter, StoreModifier,
};
use imap_next::imap_types::core::{
    AString, Atom, Charset, IString, Literal, LiteralMode, NString, NString8, QuotedChar, Tag,
    Text, Vec1,
};
use imap_next::imap_types::datetime::DateTime;
use imap_next::imap_types::envelope::{Address as ImapAddress, Envelope as ImapEnvelope};
use imap_next::imap_types::extensions::binary::{Literal8, LiteralOrLiteral8};
use imap_next::imap_types::extensions::esearch::{SearchReturnData, SearchReturnOption};
use imap_next::imap_types::extensions::list_extended::{
    ListReturnOption, ListSelectBaseOpt, ListSelectBaseOptExtension, ListSelectBaseOptExtensionTag,
    ListSelectOption, MboxListExtendedItem,
};
use imap_next::imap_types::extensions::namespace::Namespace;
use imap_next::imap_types::extensions::objectid::ObjectId;
use imap_next::imap_types::extensions::quota::{QuotaGet, Resource};
use imap_next::imap_types::extensions::uidplus::{UidElement, UidSet};
use imap_next::imap_types::extensions::utf8::QuotedUtf8;
use imap_next::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Section,
};
use imap_next::imap_types::flag::FlagNameAttribute;
use imap_next::imap_types::flag::{Flag, FlagFetch, FlagPerm, StoreResponse, StoreType};
use imap_next::imap_types::mailbox::{ListMailbox, Mailbox as ImapMailbox, MailboxOther};
use imap_next::imap_types::response::{
    Capability, Code, CommandContinuationRequest, Data, Greeting, Status,
};
use imap_next::imap_types::search::SearchKey as ImapSearchKey;
use imap_next::imap_types::secret::Secret;
use imap_next::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use imap_next::imap_types::status::{StatusDataItem, StatusDataItemName};
use imap_next::imap_types::IntoStatic;
use imap_next::server::{Error as ServerError, Event, Options, ResponseHandle, Server};
use imap_next::stream::Error as StreamError;
use imap_next::{Interrupt, Io, State};
use mailvault::engine::{AccountRegistry, Provider, ShareConfig, SharedAccount};
use mailvault::ids::{EmailId, MailboxId};
use mailvault::mail::text::oracle::TextKey;
use mailvault::mail::{
    AppendOptions, EmailRecord, FlagChange, Flags, HeaderField, MailboxView, Mailstore,
    MessageSummary, MimePart, PartSection, SearchKey, Transaction,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::Accounts;

/// Emails a text search indexes per step (reading their bodies) before it answers, with
/// the account's lock held for one step at once.
const INDEX_STEP: usize = 256;

/// The answer to RECENT (STATUS item, SEARCH key) once IMAP4rev2 is enabled: RFC 9051
/// dropped `\Recent` (Appendix E), and its syntax (section 9: `status-att`,
/// `search-key`) has no RECENT, NEW or OLD.
const REV2_NO_RECENT: &str = "RECENT, NEW and OLD are not IMAP4rev2 syntax (RFC 9051 9)";
/// Whether `part` is a MESSAGE/RFC822 or MESSAGE/GLOBAL part (RFC 9051 6.4.5: the
/// parts whose number HEADER and TEXT may follow).
fn carries_message(part: &mailvault::mail::MimePart) -> bool {
    part.content_type.eq_ignore_ascii_case("message")
        && (part.subtype.eq_ignore_ascii_case("rfc822")
            || part.subtype.eq_ignore_ascii_case("global"))
}

/// The account's one quota root (RFC 9208): the empty name, as Dovecot's `User quota`
/// root is named by a string too.
static QUOTA_ROOT: std::sync::LazyLock<AString<'static>> = std::sync::LazyLock::new(|| {
    AString::try_from("").unwrap_or_else(|_| AString::from(Atom::unvalidated("quota")))
});
/// A connection silent this long is closed (RFC 9051 5.4: at least 30 minutes).
const AUTOLOGOUT: Duration = Duration::from_secs(30 * 60);
/// A connection not authenticated yet and silent this long is closed (RFC 9051 5.4's 30
/// minutes are for authenticated clients).
const PRE_AUTH_TIMEOUT: Duration = Duration::from_secs(3 * 60);
/// The largest literal accepted before authentication (a LOGIN's name and password).
const PRE_AUTH_LITERAL: u32 = 8 * 1024;
/// The longest command accepted before authentication, its literals included (and each
/// line of an AUTHENTICATE exchange): Dovecot's 64 KiB command line.
const PRE_AUTH_COMMAND: u32 = 64 * 1024;
/// The text of a refused literal above `max_message_size` (APPENDLIMIT).
const TOOBIG_TEXT: &str = "message larger than APPENDLIMIT";
/// A TLS handshake (IMAPS, or after STARTTLS) not done in this time closes the connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// Who logs in, and to what.
pub enum Login {
    /// The provider (`mailvault serve`): a login name from the accounts table, its
    /// password unlocking the account's keyring (key model 5); the open accounts in a
    /// registry, one handle per account shared by its connections.
    Provider {
        /// Accounts, login.
        provider: Box<Provider>,
        /// Login name → account.
        accounts: Accounts,
        /// The open accounts.
        registry: AccountRegistry,
        /// How each open account follows other processes and collects its garbage.
        share: ShareConfig,
    },
    /// The companion (`mailvault companion`): one account, opened at start with the
    /// device key; the device's mail client logs in with the companion's own login and
    /// password (nothing of the account's keys).
    Companion {
        /// The login name the client uses.
        name: String,
        /// The password the client uses.
        password: zeroize::Zeroizing<String>,
        /// The account's handle.
        handle: SharedAccount,
    },
}

/// What every IMAP connection shares.
pub struct Imap {
    /// How clients log in.
    pub login: Login,
    /// Largest literal (APPEND) accepted, bytes.
    pub max_message_size: u32,
    /// The server's certificate and key: IMAPS, STARTTLS on the plain port, and no
    /// password in the clear. `None`: plain TCP only, passwords accepted.
    pub tls: Option<TlsAcceptor>,
}

/// Accepts connections until the task is aborted; `implicit_tls`: IMAPS (RFC 8314), the
/// TLS handshake before the greeting.
pub async fn accept_loop(listener: TcpListener, state: Arc<Imap>, implicit_tls: bool) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                // A response is often several writes (untagged data, then the tagged
                // status): with Nagle's algorithm, each write after the first waited for
                // the client's delayed acknowledgement (40 ms on Linux) of the one
                // before. Without it (TCP_NODELAY), each write goes out at once.
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(%peer, error = %e, "IMAP: TCP_NODELAY not set");
                }
                let state = state.clone();
                tokio::spawn(async move {
                    tracing::debug!(%peer, implicit_tls, "IMAP connection");
                    connection(stream, &state, implicit_tls).await;
                    tracing::debug!(%peer, "IMAP connection closed");
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "IMAP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The response code of a command that failed with `e` (RFC 9051 §7.1, RFC 9208 §4.3),
/// from the library's typed errors.
fn response_code(e: &mailvault::Error) -> Option<Code<'static>> {
    match e {
        mailvault::Error::OverQuota { .. } => Some(Code::OverQuota),
        mailvault::Error::TooBig { .. } => Some(Code::TooBig),
        mailvault::Error::NoSuchMailbox { .. } => Some(Code::TryCreate),
        // RFC 5530 3: "ALREADYEXISTS ... the destination mailbox name already exists".
        mailvault::Error::MailboxExists { .. } => Some(other_code("ALREADYEXISTS")),
        _ => None,
    }
}

/// A response code imap-types has no variant for (RFC 5530's, QRESYNC's `CLOSED`).
fn other_code(name: &'static str) -> Code<'static> {
    Code::Other(imap_next::imap_types::response::CodeOther::unvalidated(
        name.as_bytes(),
    ))
}

/// RFC 5530 3: "NONEXISTENT: The operation attempts to delete something that does not
/// exist", also the code of SELECT, STATUS, RENAME... of a mailbox that does not exist.
fn nonexistent() -> Code<'static> {
    other_code("NONEXISTENT")
}

/// A response text: printable, one line, never empty.
fn text(s: impl Into<String>) -> Text<'static> {
    let s: String = s
        .into()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let s = if s.trim().is_empty() {
        "-".to_string()
    } else {
        s
    };
    Text::try_from(s).unwrap_or_else(|_| Text::unvalidated("-"))
}

fn never<T>(r: Result<T, std::convert::Infallible>) -> T {
    match r {
        Ok(t) => t,
        Err(e) => match e {},
    }
}

fn ok(tag: Tag<'static>, code: Option<Code<'static>>, t: impl Into<String>) -> Status<'static> {
    never(Status::ok(Some(tag), code, text(t)))
}

fn no(tag: Tag<'static>, code: Option<Code<'static>>, t: impl Into<String>) -> Status<'static> {
    never(Status::no(Some(tag), code, text(t)))
}

fn bad(tag: Option<Tag<'static>>, t: impl Into<String>) -> Status<'static> {
    never(Status::bad(tag, None, text(t)))
}

fn untagged_ok(code: Code<'static>, t: &str) -> Status<'static> {
    never(Status::ok(None, Some(code), text(t)))
}

/// A LIST or LSUB, plain or extended (RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS).
struct ListRequest {
    /// The mailbox patterns: a mailbox matching any of them is a candidate.
    patterns: Vec<ListMailbox<'static>>,
    /// LSUB: LSUB responses, no child attributes.
    lsub: bool,
    /// Selection `SUBSCRIBED` (and LSUB): subscribed mailboxes only.
    select_subscribed: bool,
    /// Selection `SPECIAL-USE` (RFC 6154): mailboxes with a special use only.
    select_special_use: bool,
    /// Selection `RECURSIVEMATCH`: CHILDINFO for selected mailboxes below.
    recursive_match: bool,
    /// Return `SUBSCRIBED` (implied by the selection `SUBSCRIBED`): `\Subscribed`.
    return_subscribed: bool,
    /// `\HasChildren` / `\HasNoChildren`: always in a plain LIST (RFC 9051 7.3.1), on
    /// `RETURN (CHILDREN)` in an extended one (RFC 5258 4, as Dovecot).
    children: bool,
    /// Return `STATUS (...)`: a STATUS response per listed mailbox.
    status: Option<Vec<StatusDataItemName>>,
}

impl ListRequest {
    /// `LIST reference pattern` / `LSUB reference pattern`.
    fn plain(pattern: ListMailbox<'static>, lsub: bool) -> Self {
        Self {
            patterns: vec![pattern],
            lsub,
            select_subscribed: lsub,
            select_special_use: false,
            recursive_match: false,
            return_subscribed: false,
            children: !lsub,
            status: None,
        }
    }

    /// `LIST (selection) reference (patterns) RETURN (options)`. The return option
    /// `SPECIAL-USE` asks for what every LIST response carries anyway (RFC 6154 allows
    /// sending the attributes unasked); `REMOTE` selects nothing more (there are no
    /// remote mailboxes).
    fn extended(
        selection: &[ListSelectOption],
        patterns: Vec1<ListMailbox<'static>>,
        returns: &[ListReturnOption],
    ) -> Self {
        let select_subscribed = selection.contains(&ListSelectOption::Subscribed);
        let mut status: Option<Vec<StatusDataItemName>> = None;
        for option in returns {
            if let ListReturnOption::Status(names) = option {
                // Each item once, whatever the client repeats (the answer for every
                // mailbox would repeat it).
                let status = status.get_or_insert_with(Vec::new);
                for name in names.as_ref() {
                    if !status.contains(name) {
                        status.push(name.clone());
                    }
                }
            }
        }
        Self {
            patterns: patterns.into_inner(),
            lsub: false,
            select_subscribed,
            select_special_use: selection.contains(&ListSelectOption::SpecialUse),
            recursive_match: selection.contains(&ListSelectOption::RecursiveMatch),
            // RFC 5258 3.1: the selection SUBSCRIBED implies the return option.
            return_subscribed: select_subscribed || returns.contains(&ListReturnOption::Subscribed),
            children: returns.contains(&ListReturnOption::Children),
            status,
        }
    }

    /// Whether no selection option narrows the listing.
    fn selects_all(&self) -> bool {
        !self.select_subscribed && !self.select_special_use
    }

    /// Whether the selection options select mailbox `m` (RFC 5258 3.1: every option
    /// given must hold).
    fn selects(&self, m: &mailvault::mail::Mailbox) -> bool {
        (!self.select_subscribed || m.subscribed)
            && (!self.select_special_use || m.special_use.is_some())
    }

    /// The base selection options given (CHILDINFO's list, RFC 5258 3.5).
    fn base_options(&self) -> Vec<ListSelectBaseOpt<'static>> {
        let mut options = Vec::new();
        if self.select_subscribed {
            options.push(ListSelectBaseOpt::Subscribed);
        }
        if self.select_special_use {
            if let Ok(tag) =
                ListSelectBaseOptExtensionTag::try_from(Atom::unvalidated("SPECIAL-USE"))
            {
                options.push(ListSelectBaseOpt::Extension(ListSelectBaseOptExtension {
                    tag,
                    value: None,
                }));
            }
        }
        options
    }
}

/// An object id of RFC 8474 (EMAILID, THREADID, MAILBOXID) from a library id's
/// hexadecimal form (always valid: 32 hexadecimal digits).
fn object_id(hex: &str) -> Option<ObjectId> {
    ObjectId::try_from(hex).ok()
}

/// The selected mailbox.
struct Selected {
    id: MailboxId,
    /// The mailbox as the client knows it: message sequence number `n` is
    /// `view.messages[n - 1]`. Replaced (and the differences announced) only at the
    /// points where RFC 9051 lets the numbers change (`Conn::sync`); flags are read from
    /// the account's current view.
    view: Arc<MailboxView>,
    read_only: bool,
    /// The flags last announced in a FLAGS response (system flags and keywords): a
    /// keyword that appears later is announced (FLAGS, PERMANENTFLAGS) at `sync`.
    flags: Vec<Flag<'static>>,
    /// The search result variable of SEARCHRES (RFC 5182 2.1), `$`: the UIDs (ascending)
    /// the last `SEARCH RETURN (SAVE ...)` saved. Empty at SELECT and EXAMINE (a new
    /// `Selected`), gone with the mailbox at UNSELECT and CLOSE. Expunged messages leave
    /// it (RFC 5182 2.1) by its use: `$` names only those of its UIDs still in `view`,
    /// and a UID is never reused.
    saved: Vec<u32>,
}

/// What a command handler tells the loop.
enum Outcome {
    /// Go on.
    Continue,
    /// LOGOUT: send what is queued, then close.
    Close,
    /// The connection failed (or the runtime stops) while the command wrote its
    /// responses: the session ends.
    Gone,
}

/// A connection inside TLS.
type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// The TLS handshake on `tcp` as the server, bounded by [`HANDSHAKE_TIMEOUT`]; `None`
/// (logged) when it fails.
async fn handshake(acceptor: &TlsAcceptor, tcp: TcpStream) -> Option<Wire<TlsStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Some(Wire::new(tls)),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "IMAP TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!("IMAP TLS handshake timed out");
            None
        }
    }
}

/// A protocol state that sends no greeting: the session after STARTTLS goes on without
/// one (RFC 9051 6.2.1). imap-next always queues one, so it is taken out here, before any
/// byte reaches the stream.
fn server_without_greeting(options: Options, greeting: Greeting<'static>) -> Server {
    let mut server = Server::new(options, greeting);
    loop {
        match server.next() {
            // The greeting's bytes: dropped.
            Err(Interrupt::Io(Io::Output(_))) => continue,
            // Sent as far as the state knows; nothing else is queued.
            Ok(_) | Err(Interrupt::Io(Io::NeedMoreInput)) | Err(Interrupt::Error(_)) => {
                return server
            }
        }
    }
}

/// The protocol settings of every connection: before authentication, literals and
/// commands bounded by [`PRE_AUTH_LITERAL`] and [`PRE_AUTH_COMMAND`] (an unauthenticated
/// client must not make the server hold an APPEND-sized literal); [`authenticated_limits`]
/// raises them once the client is logged in.
fn protocol_options(state: &Imap) -> Options {
    let mut options = Options::default();
    let (literal, command) = authenticated_limits(state);
    options.max_literal_size = literal.min(PRE_AUTH_LITERAL);
    options.max_command_size = command.min(PRE_AUTH_COMMAND);
    // A synchronizing literal above the limit is refused by imap-next, before the client
    // sends it, with a tagged BAD and this text (imap-next puts no response code there).
    if let Err(e) = options.set_literal_reject_text(TOOBIG_TEXT.to_owned()) {
        tracing::warn!(error = %e, "IMAP: literal reject text refused");
    }
    options
}

fn greeting() -> Option<Greeting<'static>> {
    Greeting::ok(None, "mailvault IMAP4rev1 ready").ok()
}

/// The bytes of one connection as [`session`] reads and writes them: a [`Wire`] over TCP
/// or TLS, or a [`ScriptedClient`] in memory.
pub trait Transport {
    /// Progresses `server` until its next event, reading input and writing output as
    /// it needs (as imap-next's [`Stream::next`](imap_next::stream::Stream::next)).
    fn next(
        &mut self,
        server: &mut Server,
    ) -> impl std::future::Future<Output = Result<Event, StreamError<ServerError>>> + Send;

    /// Takes the response `handle` and those queued before it from `server`, and writes
    /// out what the transport holds once that is [`SEND_BATCH`] or more (its bytes gone
    /// from this process), reading input meanwhile (kept in `server` for the commands
    /// after). For a command that writes as it goes: a FETCH holds at most a batch and
    /// one response of output, and reads the messages well past one only once the client
    /// has taken its response; small responses go out a batch per write. What stays
    /// held goes out with the next turn of [`Transport::next`].
    fn send(
        &mut self,
        server: &mut Server,
        handle: ResponseHandle,
    ) -> impl std::future::Future<Output = Result<(), StreamError<ServerError>>> + Send;

    /// Writes out what is buffered.
    fn flush(
        &mut self,
    ) -> impl std::future::Future<Output = Result<(), StreamError<std::convert::Infallible>>> + Send;
}

/// Takes from `server` the bytes of the responses queued up to and including `handle`,
/// each handed to `output`: the part of [`Transport::send`] every transport shares.
/// imap-next serializes what is queued before it reads the next command
/// (`Server::next`): while `handle` waits, no other event can come.
fn take_until(
    server: &mut Server,
    handle: ResponseHandle,
    mut output: impl FnMut(Vec<u8>),
) -> Result<(), StreamError<ServerError>> {
    loop {
        match server.next() {
            Ok(Event::ResponseSent { handle: sent, .. }) if sent == handle => return Ok(()),
            // Queued before it (an untagged response of the same command).
            Ok(Event::ResponseSent { .. }) => {}
            Err(Interrupt::Io(Io::Output(bytes))) => output(bytes),
            Ok(_) | Err(_) => {
                tracing::error!("IMAP: an event while a response was sent");
                return Err(StreamError::Io(std::io::Error::other(
                    "an event while a response was sent",
                )));
            }
        }
    }
}

/// A connection as [`session`] reads and writes it, over TCP or TLS: the I/O of
/// imap-next's `Stream` (read while writing, so that a client that pipelines while the
/// server writes cannot deadlock either), on tokio and tokio-rustls, with two things that
/// stream does not give:
/// - [`Transport::send`] knows what output it holds, and writes it out: imap-next's
///   stream reports a response sent once it is in its own buffer, so a command could
///   not know how much output waits there;
/// - [`close`] sends TLS's `close_notify` alert (RFC 8446 6.1: "Each party MUST send a
///   close_notify alert before closing its write side of the connection"): imap-next's
///   stream keeps the rustls state to itself, and without the alert a client cannot
///   tell the end of the session from a truncation (OpenSSL 3 reports "unexpected eof
///   while reading").
///
/// [`close`]: Wire::close
struct Wire<S> {
    reader: tokio::io::ReadHalf<S>,
    writer: tokio::io::WriteHalf<S>,
    /// Output imap-next produced and the stream has not taken yet.
    out: BytesMut,
    /// Output taken by the stream that may still sit in its buffers (TLS: unflushed).
    unflushed: bool,
}

/// How long [`Wire::close`] waits for the peer to take the last bytes and the alert.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The bytes [`Wire`] reads at once.
const READ_PIECE: usize = 16 * 1024;
/// The output from which [`Transport::send`] writes out what a [`Wire`] holds.
const SEND_BATCH: usize = 64 * 1024;

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    fn new(io: S) -> Self {
        let (reader, writer) = tokio::io::split(io);
        Self {
            reader,
            writer,
            out: BytesMut::new(),
            unflushed: false,
        }
    }

    /// The connection back, for the TLS handshake after STARTTLS: whatever the client
    /// sent that `server` has not parsed yet is dropped with `server`, never read as a
    /// command (CVE-2011-0411).
    fn into_inner(self) -> S {
        self.reader.unsplit(self.writer)
    }

    /// Writes out what is queued, then closes the write side (`shutdown`: TLS sends
    /// `close_notify` first), bounded by [`CLOSE_TIMEOUT`]; a peer that has gone
    /// already is only logged.
    async fn close(mut self) {
        let closed = tokio::time::timeout(CLOSE_TIMEOUT, async {
            self.writer.write_all(&self.out).await?;
            self.writer.shutdown().await
        })
        .await;
        match closed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "IMAP close not sent"),
            Err(_) => tracing::debug!("IMAP close timed out"),
        }
    }

    /// One turn of I/O: reads what the client sent (handed to `server`), or writes (or
    /// flushes) some of the output, whichever the connection allows first.
    async fn turn(
        &mut self,
        server: &mut Server,
        input: &mut [u8],
    ) -> Result<(), StreamError<ServerError>> {
        // Both futures of each `select!` are cancel-safe: the one that loses the race
        // has read or written nothing.
        let read = if self.out.is_empty() && !self.unflushed {
            Some(self.reader.read(input).await?)
        } else if self.out.is_empty() {
            tokio::select! {
                n = self.reader.read(input) => Some(n?),
                flushed = self.writer.flush() => {
                    flushed?;
                    self.unflushed = false;
                    None
                }
            }
        } else {
            tokio::select! {
                n = self.reader.read(input) => Some(n?),
                n = self.writer.write(&self.out) => {
                    match n? {
                        0 => return Err(StreamError::Closed),
                        n => self.out.advance(n),
                    }
                    self.unflushed = true;
                    None
                }
            }
        };
        match read {
            Some(0) => Err(StreamError::Closed),
            Some(n) => {
                server.enqueue_input(&input[..n]);
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Send + Unpin> Transport for Wire<S> {
    async fn next(&mut self, server: &mut Server) -> Result<Event, StreamError<ServerError>> {
        let mut input = [0u8; READ_PIECE];
        loop {
            match server.next() {
                Ok(event) => return Ok(event),
                Err(Interrupt::Error(e)) => return Err(StreamError::State(e)),
                Err(Interrupt::Io(Io::Output(bytes))) => self.out.extend_from_slice(&bytes),
                Err(Interrupt::Io(Io::NeedMoreInput)) => {}
            }
            self.turn(server, &mut input).await?;
        }
    }

    async fn send(
        &mut self,
        server: &mut Server,
        handle: ResponseHandle,
    ) -> Result<(), StreamError<ServerError>> {
        take_until(server, handle, |bytes| self.out.extend_from_slice(&bytes))?;
        if self.out.len() < SEND_BATCH {
            return Ok(());
        }
        let mut input = [0u8; READ_PIECE];
        while !self.out.is_empty() || self.unflushed {
            self.turn(server, &mut input).await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), StreamError<std::convert::Infallible>> {
        self.writer.write_all(&self.out).await?;
        self.out.clear();
        self.writer.flush().await?;
        self.unflushed = false;
        Ok(())
    }
}

/// A client in memory: its whole input given in advance, handed to the server
/// `chunk` bytes at a time as it asks for more; the connection ends when the input
/// does. What the server writes is kept (up to [`ScriptedClient::KEPT`] bytes) in
/// `output`. The fuzz target `imap_session` drives sessions with it.
pub struct ScriptedClient {
    input: Vec<u8>,
    at: usize,
    chunk: usize,
    /// The server's bytes, the first [`ScriptedClient::KEPT`] of them.
    pub output: Vec<u8>,
    /// How many bytes the server wrote in all.
    pub written: usize,
}

impl ScriptedClient {
    /// Output bytes kept in [`ScriptedClient::output`].
    pub const KEPT: usize = 1 << 20;

    /// A client that sends `input`, `chunk` bytes (at least one) at a time.
    pub fn new(input: Vec<u8>, chunk: usize) -> Self {
        Self {
            input,
            at: 0,
            chunk: chunk.max(1),
            output: Vec::new(),
            written: 0,
        }
    }

    /// Counts what the server wrote, and keeps it up to [`ScriptedClient::KEPT`] bytes.
    fn keep(&mut self, bytes: &[u8]) {
        self.written += bytes.len();
        let room = Self::KEPT.saturating_sub(self.output.len());
        self.output
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

impl Transport for ScriptedClient {
    async fn next(&mut self, server: &mut Server) -> Result<Event, StreamError<ServerError>> {
        loop {
            match server.next() {
                Ok(event) => return Ok(event),
                Err(Interrupt::Error(e)) => return Err(StreamError::State(e)),
                Err(Interrupt::Io(Io::Output(bytes))) => self.keep(&bytes),
                Err(Interrupt::Io(Io::NeedMoreInput)) => {
                    let end = self.at.saturating_add(self.chunk).min(self.input.len());
                    let Some(bytes) = self.input.get(self.at..end).filter(|b| !b.is_empty()) else {
                        return Err(StreamError::Closed);
                    };
                    server.enqueue_input(bytes);
                    self.at = end;
                }
            }
        }
    }

    async fn send(
        &mut self,
        server: &mut Server,
        handle: ResponseHandle,
    ) -> Result<(), StreamError<ServerError>> {
        // Kept (or counted) as soon as the server hands it over.
        take_until(server, handle, |bytes| self.keep(&bytes))
    }

    async fn flush(&mut self) -> Result<(), StreamError<std::convert::Infallible>> {
        Ok(())
    }
}

/// One connection of `client` on `state` from greeting to end (its input exhausted,
/// LOGOUT, or STARTTLS: no TLS in memory). `local`: the client counts as on the
/// server's own address (passwords accepted without TLS).
pub async fn scripted_session(state: &Imap, client: &mut ScriptedClient, local: bool) {
    let Some(greeting) = greeting() else {
        return;
    };
    let mut conn = Conn {
        state,
        account: None,
        selected: None,
        condstore: false,
        qresync: false,
        rev2: false,
        tls: false,
        local,
    };
    let mut server = Server::new(protocol_options(state), greeting);
    session(client, &mut server, &mut conn).await;
}

async fn connection(tcp: TcpStream, state: &Imap, implicit_tls: bool) {
    // Dovecot's rule: a connection from the server's own address is as private as TLS.
    let local = matches!(
        (tcp.peer_addr(), tcp.local_addr()),
        (Ok(peer), Ok(local)) if peer.ip() == local.ip()
    );
    let options = protocol_options(state);
    let Some(greeting) = greeting() else {
        return;
    };
    let mut conn = Conn {
        state,
        account: None,
        selected: None,
        condstore: false,
        qresync: false,
        rev2: false,
        tls: implicit_tls,
        local,
    };
    let mut server = Server::new(options.clone(), greeting.clone());
    let Some(acceptor) = state.tls.as_ref() else {
        if !implicit_tls {
            let mut wire = Wire::new(tcp);
            session(&mut wire, &mut server, &mut conn).await;
            wire.close().await;
        }
        return;
    };
    let tcp = if implicit_tls {
        tcp
    } else {
        let mut wire = Wire::new(tcp);
        match session(&mut wire, &mut server, &mut conn).await {
            Ended::Closed => {
                wire.close().await;
                return;
            }
            Ended::StartTls => wire.into_inner(),
        }
    };
    let Some(mut wire) = handshake(acceptor, tcp).await else {
        return;
    };
    if !conn.tls {
        conn.tls = true;
        // A fresh protocol state: commands pipelined after STARTTLS and parsed or
        // buffered by the old one are dropped with it.
        server = server_without_greeting(options, greeting);
    }
    // Inside TLS, STARTTLS is refused: the session ends only by closing.
    session(&mut wire, &mut server, &mut conn).await;
    wire.close().await;
}

/// How a session on one stream ended.
enum Ended {
    /// LOGOUT, the connection closed or failed, or the autologout timer.
    Closed,
    /// STARTTLS was accepted and its OK sent: the handshake comes next.
    StartTls,
}

/// The literal and command limits of an authenticated client: literals up to
/// `max_message_size` (APPENDLIMIT), commands 64 KiB more.
fn authenticated_limits(state: &Imap) -> (u32, u32) {
    let literal = state.max_message_size.min(u32::MAX - 64 * 1024);
    (literal, literal + 64 * 1024)
}

/// The commands of one connection on `stream` until it closes or STARTTLS.
async fn session<T: Transport>(stream: &mut T, server: &mut Server, conn: &mut Conn<'_>) -> Ended {
    let mut closing = None;
    // While the client idles: its IDLE tag and the account's modseq watch.
    let mut idle: Option<(Tag<'static>, watch::Receiver<u64>)> = None;
    // An AUTHENTICATE waiting for the client's response: its tag.
    let mut authenticating: Option<Tag<'static>> = None;
    // Whether the limits of an authenticated client are in force.
    let mut raised = false;
    loop {
        if !raised && conn.account.is_some() {
            raised = true;
            let (literal, command) = authenticated_limits(conn.state);
            if server.set_limits(literal, command).is_err() {
                tracing::warn!(
                    literal,
                    command,
                    "IMAP: limits of an authenticated client refused"
                );
            }
        }
        let autologout = if raised { AUTOLOGOUT } else { PRE_AUTH_TIMEOUT };
        let next = match idle.as_mut() {
            None => tokio::time::timeout(autologout, stream.next(&mut *server)).await,
            Some((_, changes)) => {
                tokio::select! {
                    next = tokio::time::timeout(autologout, stream.next(&mut *server)) => next,
                    changed = changes.changed() => {
                        if changed.is_err() {
                            // The handle is gone (it cannot be while this connection
                            // holds it): nothing more will wake this IDLE.
                            tracing::warn!("IDLE: the account's change watch closed");
                            if let Some((_, changes)) = idle.as_mut() {
                                *changes = watch::channel(0).1;
                            }
                        } else if let Err(e) = conn.sync(server).await {
                            tracing::warn!(error = %e, "IDLE: announcing changes failed");
                        }
                        // The announcements go out with the next turn of the stream.
                        continue;
                    }
                }
            }
        };
        let Ok(next) = next else {
            tracing::debug!("IMAP connection idle too long: closed");
            return Ended::Closed;
        };
        let event = match next {
            Ok(event) => event,
            Err(StreamError::State(e)) => {
                // Answered with the command's tag when one can be read, so that the client
                // does not wait for a completion forever. A bad response to AUTHENTICATE
                // ends the exchange with AUTHENTICATE's tag (`authenticate_finish`:
                // imap-next expects a command again).
                let (why, discarded_bytes) = match e {
                    // imap-next answered it (tagged BAD) and discarded the literal.
                    ServerError::LiteralTooLong { .. } => continue,
                    ServerError::MalformedMessage { discarded_bytes } => {
                        ("malformed command", discarded_bytes)
                    }
                    ServerError::ExpectedCrlfGotLf { discarded_bytes } => {
                        ("lines end with CRLF", discarded_bytes)
                    }
                    ServerError::CommandTooLong { discarded_bytes } => {
                        ("command too long", discarded_bytes)
                    }
                };
                match authenticating.take() {
                    Some(tag) => {
                        let status = bad(Some(tag), format!("AUTHENTICATE: {why}"));
                        let _ = server.authenticate_finish(status);
                    }
                    // A line other than DONE while idling is no command: its first word
                    // is no tag. Untagged, and the IDLE goes on (imap-next waits for
                    // DONE; RFC 9051 6.3.13 ends IDLE with DONE only).
                    None if idle.is_some() => {
                        server.enqueue_status(bad(None, format!("expected DONE: {why}")));
                    }
                    None => {
                        let discarded = discarded_bytes.declassify();
                        let tag = tag_of(discarded);
                        match tag {
                            // A non-synchronizing literal above APPENDLIMIT, read and
                            // dropped: NO [TOOBIG] (RFC 7889 2, RFC 4469 5). A command
                            // too long without a literal is only malformed (BAD).
                            Some(tag)
                                if discarded.len() > conn.state.max_message_size as usize
                                    && announces_literal(discarded) =>
                            {
                                server.enqueue_status(no(tag, Some(Code::TooBig), TOOBIG_TEXT));
                            }
                            tag => {
                                server.enqueue_status(bad(tag, why));
                            }
                        }
                    }
                }
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "IMAP connection ends");
                return Ended::Closed;
            }
        };
        match event {
            Event::CommandReceived { command } if command.body == CommandBody::StartTLS => {
                let tag = command.tag;
                if conn.tls {
                    server.enqueue_status(bad(Some(tag), "STARTTLS: TLS is active already"));
                } else if conn.state.tls.is_none() {
                    server.enqueue_status(bad(Some(tag), "STARTTLS is not offered here"));
                } else if conn.account.is_some() {
                    // RFC 9051 6.2.1: STARTTLS is a Not Authenticated state command.
                    server.enqueue_status(bad(Some(tag), "STARTTLS: logged in already"));
                } else {
                    let handle = server.enqueue_status(ok(tag, None, "begin TLS negotiation now"));
                    return starttls_ok_sent(stream, server, handle).await;
                }
            }
            Event::CommandReceived { command } => {
                let tag = command.tag.clone();
                let name = command.body.name();
                match conn.command(stream, server, command).await {
                    Ok(Outcome::Continue) => {}
                    Ok(Outcome::Close) => {
                        closing = Some(server.enqueue_status(ok(tag, None, "LOGOUT completed")));
                    }
                    Ok(Outcome::Gone) => return Ended::Closed,
                    Err(e) => {
                        tracing::warn!(command = name, error = %e, "IMAP command failed");
                        let code = response_code(&e);
                        server.enqueue_status(no(tag, code, format!("{name} failed: {e}")));
                    }
                }
            }
            Event::CommandAuthenticateReceived {
                command_authenticate,
            } => {
                let tag = command_authenticate.tag;
                let refusal = if conn.account.is_some() {
                    Some(bad(Some(tag.clone()), "already logged in"))
                } else if !conn.password_allowed() {
                    Some(privacy_required(tag.clone()))
                } else if command_authenticate.mechanism != AuthMechanism::Plain {
                    Some(no(
                        tag.clone(),
                        None,
                        "unsupported authentication mechanism: PLAIN only",
                    ))
                } else {
                    None
                };
                if let Some(status) = refusal {
                    let _ = server.authenticate_finish(status);
                    continue;
                }
                match command_authenticate.initial_response {
                    // SASL-IR (RFC 4959): the response on the command line.
                    Some(response) => {
                        let status = conn.authenticate_plain(tag, response).await;
                        let _ = server.authenticate_finish(status);
                    }
                    // RFC 4616: PLAIN's server sends an empty challenge.
                    None => {
                        let request = CommandContinuationRequest::base64(Vec::new());
                        let _ = server.authenticate_continue(request);
                        authenticating = Some(tag);
                    }
                }
            }
            Event::AuthenticateDataReceived { authenticate_data } => {
                let Some(tag) = authenticating.take() else {
                    let _ = server.authenticate_finish(bad(None, "authentication aborted"));
                    continue;
                };
                let status = match authenticate_data {
                    AuthenticateData::Continue(response) => {
                        conn.authenticate_plain(tag, response).await
                    }
                    // RFC 9051 6.2.2: "*" cancels; the server answers BAD.
                    AuthenticateData::Cancel => bad(Some(tag), "AUTHENTICATE cancelled"),
                };
                let _ = server.authenticate_finish(status);
            }
            Event::IdleCommandReceived { tag } => {
                let Some(account) = conn.account.as_ref() else {
                    let _ = server.idle_reject(bad(Some(tag), "IDLE: log in first"));
                    continue;
                };
                // Subscribed before the changes so far are announced: a change made in
                // between wakes the IDLE rather than being missed.
                let changes = account.subscribe();
                if let Err(e) = conn.sync(server).await {
                    let _ = server.idle_reject(no(tag, None, format!("IDLE failed: {e}")));
                    continue;
                }
                let accept = CommandContinuationRequest::basic(None, "idling, waiting for DONE");
                match accept {
                    Ok(accept) => {
                        let _ = server.idle_accept(accept);
                        idle = Some((tag, changes));
                    }
                    Err(_) => {
                        let _ = server.idle_reject(no(tag, None, "IDLE failed"));
                    }
                }
            }
            Event::IdleDoneReceived => {
                if let Some((tag, _)) = idle.take() {
                    server.enqueue_status(ok(tag, None, "IDLE terminated"));
                }
            }
            Event::ResponseSent { handle, .. } if closing == Some(handle) => return Ended::Closed,
            _ => {}
        }
    }
}

/// Drives `stream` until STARTTLS's OK (`handle`) is written out: commands the client
/// sent after STARTTLS without waiting for it are not executed (they are dropped with
/// this protocol state).
async fn starttls_ok_sent<T: Transport>(
    stream: &mut T,
    server: &mut Server,
    handle: ResponseHandle,
) -> Ended {
    loop {
        let next = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.next(&mut *server)).await;
        match next {
            Ok(Ok(Event::ResponseSent { handle: sent, .. })) if sent == handle => break,
            // Responses queued before STARTTLS's OK.
            Ok(Ok(Event::ResponseSent { .. })) => {}
            Ok(Ok(_)) | Ok(Err(StreamError::State(_))) => {
                tracing::info!("IMAP: input after STARTTLS before the handshake, discarded");
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "IMAP connection ends before the TLS handshake");
                return Ended::Closed;
            }
            Err(_) => return Ended::Closed,
        }
    }
    // The OK may still sit in the stream's write buffer.
    match stream.flush().await {
        Ok(()) => Ended::StartTls,
        Err(e) => {
            tracing::debug!(error = %e, "IMAP connection ends before the TLS handshake");
            Ended::Closed
        }
    }
}

/// The refusal of a password on a connection that is neither TLS nor local (RFC 5530
/// PRIVACYREQUIRED; Dovecot's words).
fn privacy_required(tag: Tag<'static>) -> Status<'static> {
    no(
        tag,
        Some(other_code("PRIVACYREQUIRED")),
        "Plaintext authentication disallowed on non-secure (SSL/TLS) connections: use STARTTLS",
    )
}

struct Conn<'a> {
    state: &'a Imap,
    /// The account's handle, shared with its other connections, once logged in.
    account: Option<SharedAccount>,
    selected: Option<Selected>,
    /// CONDSTORE enabled (RFC 7162 3.1: by ENABLE or a CONDSTORE-enabling command):
    /// FETCH responses carry MODSEQ.
    condstore: bool,
    /// QRESYNC enabled (ENABLE QRESYNC): expunges are announced with VANISHED.
    qresync: bool,
    /// IMAP4rev2 enabled (ENABLE IMAP4rev2, RFC 9051 6.3.1): the session follows RFC 9051
    /// where it differs from RFC 3501 (the module documentation lists how).
    rev2: bool,
    /// The connection runs in TLS (IMAPS, or after STARTTLS).
    tls: bool,
    /// The peer's address is the server's own (the connection never leaves the machine).
    local: bool,
}

/// An error a command reports with NO.
type CmdResult = Result<Outcome, mailvault::Error>;

impl Conn<'_> {
    /// Carries out `command`, its responses queued on `server`; a command that writes as
    /// it goes (FETCH) writes them through `stream`.
    async fn command<T: Transport>(
        &mut self,
        stream: &mut T,
        server: &mut Server,
        command: Command<'static>,
    ) -> CmdResult {
        let tag = command.tag;
        match command.body {
            CommandBody::Capability => {
                server.enqueue_data(Data::Capability(self.capabilities()));
                server.enqueue_status(ok(tag, None, "CAPABILITY completed"));
            }
            CommandBody::Noop | CommandBody::Check => {
                self.sync(server).await?;
                server.enqueue_status(ok(tag, None, "completed"));
            }
            CommandBody::Logout => {
                server.enqueue_status(never(Status::bye(None, text("logging out"))));
                return Ok(Outcome::Close);
            }
            CommandBody::Login { username, password } => {
                let status = if self.account.is_some() {
                    bad(Some(tag), "already logged in")
                } else if !self.password_allowed() {
                    privacy_required(tag)
                } else {
                    self.log_in(
                        tag,
                        username.as_ref(),
                        password.declassify().as_ref(),
                        "LOGIN",
                    )
                    .await?
                };
                server.enqueue_status(status);
            }
            CommandBody::Id { .. } => {
                // RFC 2971: the server's own identification, whatever the client sent.
                let field = |s: &str| IString::try_from(s.to_string()).ok();
                let parameters = [
                    ("name", "mailvault"),
                    ("version", env!("CARGO_PKG_VERSION")),
                ]
                .into_iter()
                .filter_map(|(k, v)| Some((field(k)?, NString(field(v)))))
                .collect();
                server.enqueue_data(Data::Id {
                    parameters: Some(parameters),
                });
                server.enqueue_status(ok(tag, None, "ID completed"));
            }
            body if self.account.is_none() => {
                server.enqueue_status(bad(Some(tag), format!("{}: log in first", body.name())));
            }
            CommandBody::Enable { capabilities } => {
                // RFC 5161: CONDSTORE, QRESYNC (which implies CONDSTORE, RFC 7162
                // 3.2.3) and IMAP4rev2 (RFC 9051 6.3.1); the ENABLED response lists
                // those newly enabled.
                let mut enabled = Vec::new();
                for capability in capabilities.into_inner() {
                    let name = capability.to_string().to_ascii_uppercase();
                    if name == "IMAP4REV2" && !self.rev2 {
                        self.rev2 = true;
                        enabled.push(capability);
                    } else if name == "CONDSTORE" && !self.condstore {
                        self.condstore = true;
                        enabled.push(capability);
                    } else if name == "QRESYNC" && !self.qresync {
                        self.qresync = true;
                        self.condstore = true;
                        enabled.push(capability);
                    }
                }
                server.enqueue_data(Data::Enabled {
                    capabilities: enabled,
                });
                server.enqueue_status(ok(tag, None, "ENABLE completed"));
            }
            // RFC 9208: one quota root, "", for the account's storage quota (STORAGE, in
            // units of 1 024 octets), with the deliveries not imported yet counted as the
            // library counts them; an account without a quota has no quota root.
            CommandBody::GetQuotaRoot { mailbox } => {
                if self.mailbox_id(&mailbox).await.is_none() {
                    server.enqueue_status(no(
                        tag,
                        Some(other_code("NONEXISTENT")),
                        "no such mailbox",
                    ));
                    return Ok(Outcome::Continue);
                }
                let quota = self.quota().await?;
                let roots = quota.iter().map(|_| QUOTA_ROOT.clone()).collect();
                server.enqueue_data(Data::QuotaRoot {
                    mailbox: IntoStatic::into_static(mailbox),
                    roots,
                });
                if let Some(quota) = quota {
                    server.enqueue_data(quota);
                }
                server.enqueue_status(ok(tag, None, "GETQUOTAROOT completed"));
            }
            CommandBody::GetQuota { root } => match self.quota().await? {
                Some(quota) if root == *QUOTA_ROOT => {
                    server.enqueue_data(quota);
                    server.enqueue_status(ok(tag, None, "GETQUOTA completed"));
                }
                _ => {
                    server.enqueue_status(no(tag, None, "no such quota root"));
                }
            },
            // RFC 9208 4.1.3: SETQUOTA is for servers that advertise QUOTASET; limits are
            // the operator's (`mailvault account create --storage-limit`).
            CommandBody::SetQuota { .. } => {
                server.enqueue_status(no(
                    tag,
                    Some(other_code("NOPERM")),
                    "quotas are set by the administrator",
                ));
            }
            CommandBody::Namespace => {
                // RFC 2342: one personal namespace, no prefix, `/` as delimiter.
                let personal = IString::try_from(String::new())
                    .ok()
                    .map(|prefix| vec![Namespace::new(prefix, QuotedChar::try_from('/').ok())]);
                server.enqueue_data(Data::Namespace {
                    personal: personal.unwrap_or_default(),
                    other: Vec::new(),
                    shared: Vec::new(),
                });
                server.enqueue_status(ok(tag, None, "NAMESPACE completed"));
            }
            CommandBody::Select {
                mailbox,
                parameters,
            } => {
                self.select(server, tag, &mailbox, false, &parameters)
                    .await?;
            }
            CommandBody::Examine {
                mailbox,
                parameters,
            } => {
                self.select(server, tag, &mailbox, true, &parameters)
                    .await?;
            }
            CommandBody::List {
                reference,
                mailbox_wildcard,
            } => {
                let request = ListRequest::plain(mailbox_wildcard, false);
                self.list(server, tag, &reference, request).await?
            }
            CommandBody::ListExtended {
                selection_options,
                reference,
                patterns,
                return_options,
            } => {
                let request = ListRequest::extended(&selection_options, patterns, &return_options);
                self.list(server, tag, &reference, request).await?
            }
            CommandBody::Lsub {
                reference,
                mailbox_wildcard,
            } => {
                let request = ListRequest::plain(mailbox_wildcard, true);
                self.list(server, tag, &reference, request).await?
            }
            CommandBody::Status {
                mailbox,
                item_names,
            } => self.status(server, tag, &mailbox, &item_names).await?,
            CommandBody::Create { mailbox } => {
                let name = match self.names().mailbox(&mailbox) {
                    Ok(name) => name,
                    Err(e) => {
                        server.enqueue_status(bad_name(tag, e));
                        return Ok(Outcome::Continue);
                    }
                };
                let created = self
                    .account()
                    .write()
                    .await
                    .create_mailbox(&name, None)
                    .await?;
                // RFC 8474 4.1: the new mailbox's MAILBOXID.
                let code = object_id(&created.id.to_hex()).map(Code::MailboxId);
                server.enqueue_status(ok(tag, code, "CREATE completed"));
            }
            CommandBody::Delete { mailbox } => match self.mailbox_id(&mailbox).await {
                Some(id) => {
                    if self.selected.as_ref().is_some_and(|s| s.id == id) {
                        self.selected = None;
                    }
                    self.account().write().await.delete_mailbox(id).await?;
                    server.enqueue_status(ok(tag, None, "DELETE completed"));
                }
                None => {
                    server.enqueue_status(no(tag, Some(nonexistent()), "no such mailbox"));
                }
            },
            CommandBody::Rename { from, to } => match self.mailbox_id(&from).await {
                Some(id) => {
                    let to = match self.names().mailbox(&to) {
                        Ok(to) => to,
                        Err(e) => {
                            server.enqueue_status(bad_name(tag, e));
                            return Ok(Outcome::Continue);
                        }
                    };
                    self.account().write().await.rename_mailbox(id, &to).await?;
                    server.enqueue_status(ok(tag, None, "RENAME completed"));
                }
                None => {
                    server.enqueue_status(no(tag, Some(nonexistent()), "no such mailbox"));
                }
            },
            CommandBody::Subscribe { mailbox } => {
                self.subscribe(server, tag, &mailbox, true).await?
            }
            CommandBody::Unsubscribe { mailbox } => {
                self.subscribe(server, tag, &mailbox, false).await?
            }
            CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
            } => {
                self.append(server, tag, &mailbox, &flags, date, message)
                    .await?
            }
            body if self.selected.is_none() => {
                server.enqueue_status(bad(
                    Some(tag),
                    format!("{}: select a mailbox first", body.name()),
                ));
            }
            CommandBody::Fetch {
                ref sequence_set,
                uid: false,
                ..
            }
            | CommandBody::Store {
                ref sequence_set,
                uid: false,
                ..
            }
            | CommandBody::Copy {
                ref sequence_set,
                uid: false,
                ..
            }
            | CommandBody::Move {
                ref sequence_set,
                uid: false,
                ..
            } if self.beyond_last(sequence_set) => {
                server.enqueue_status(bad(Some(tag), "no such message sequence number"));
            }
            CommandBody::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                modifiers,
            } => {
                return self
                    .fetch(
                        stream,
                        server,
                        tag,
                        &sequence_set,
                        macro_or_item_names,
                        uid,
                        &modifiers,
                    )
                    .await;
            }
            CommandBody::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                modifiers,
            } => {
                let unchanged_since = modifiers
                    .iter()
                    .map(|m| match m {
                        StoreModifier::UnchangedSince(n) => *n,
                    })
                    .next();
                self.store(
                    server,
                    tag,
                    &sequence_set,
                    (kind, response),
                    &flags,
                    uid,
                    unchanged_since,
                )
                .await?
            }
            CommandBody::Search {
                charset,
                criteria,
                uid,
            } => {
                self.search(server, tag, charset, criteria, uid, None)
                    .await?
            }
            CommandBody::ESearch {
                return_options,
                charset,
                criteria,
                uid,
            } => {
                self.search(server, tag, charset, criteria, uid, Some(return_options))
                    .await?
            }
            CommandBody::Expunge => {
                self.expunge(None).await?;
                self.sync(server).await?;
                let code = self.expunge_code().await?;
                server.enqueue_status(ok(tag, code, "EXPUNGE completed"));
            }
            CommandBody::ExpungeUid { sequence_set } => {
                let uids = self.resolve(&sequence_set, true);
                self.expunge(Some(uids)).await?;
                self.sync(server).await?;
                let code = self.expunge_code().await?;
                server.enqueue_status(ok(tag, code, "UID EXPUNGE completed"));
            }
            CommandBody::Copy {
                sequence_set,
                mailbox,
                uid,
            } => match self.mailbox_id(&mailbox).await {
                Some(to) => {
                    let uids = self.resolve(&sequence_set, uid);
                    let from = self.selected_id();
                    let copied = self.account().write().await.copy(from, &uids, to).await?;
                    self.sync(server).await?;
                    server.enqueue_status(ok(tag, copy_uid(&copied), "COPY completed"));
                }
                None => {
                    server.enqueue_status(no(tag, Some(Code::TryCreate), "no such mailbox"));
                }
            },
            CommandBody::Move {
                sequence_set,
                mailbox,
                uid,
            } => match self.mailbox_id(&mailbox).await {
                Some(_) if self.selected.as_ref().is_some_and(|s| s.read_only) => {
                    server.enqueue_status(no(tag, None, "the mailbox is read-only"));
                }
                Some(to) => {
                    let uids = self.resolve(&sequence_set, uid);
                    let from = self.selected_id();
                    let moved = self
                        .account()
                        .write()
                        .await
                        .move_messages(from, &uids, to)
                        .await?;
                    // RFC 6851 3.3: COPYUID in an untagged OK before the expunges.
                    if let Some(code) = copy_uid(&moved) {
                        server.enqueue_status(untagged_ok(code, "moved"));
                    }
                    self.sync(server).await?;
                    server.enqueue_status(ok(tag, None, "MOVE completed"));
                }
                None => {
                    server.enqueue_status(no(tag, Some(Code::TryCreate), "no such mailbox"));
                }
            },
            CommandBody::Close => {
                if let Some(selected) = self.selected.take() {
                    if !selected.read_only {
                        self.account()
                            .write()
                            .await
                            .expunge(selected.id, None)
                            .await?;
                    }
                }
                server.enqueue_status(ok(tag, None, "CLOSE completed"));
            }
            CommandBody::Unselect => {
                self.selected = None;
                server.enqueue_status(ok(tag, None, "UNSELECT completed"));
            }
            body => {
                server.enqueue_status(bad(Some(tag), format!("{} is not supported", body.name())));
            }
        }
        Ok(Outcome::Continue)
    }

    /// The code of EXPUNGE's completion: the mailbox's HIGHESTMODSEQ once QRESYNC is on
    /// (RFC 7162 3.2.7: the client's new resynchronization point).
    async fn expunge_code(&self) -> Result<Option<Code<'static>>, mailvault::Error> {
        // No mailbox any more: another connection deleted it (`sync` said so).
        if !self.qresync || self.selected.is_none() {
            return Ok(None);
        }
        let current = self.current().await?;
        Ok(NonZeroU64::new(current.status.highest_modseq).map(Code::HighestModSeq))
    }

    fn account(&self) -> &SharedAccount {
        self.account.as_ref().expect("logged in")
    }

    /// The QUOTA response of the account's one quota root (RFC 9208 5.1: `STORAGE` in
    /// units of 1 024 octets, usage rounded up), or `None` when it has no storage quota.
    async fn quota(&self) -> Result<Option<Data<'static>>, mailvault::Error> {
        let quota = self.account().read().await.storage_quota().await?;
        let Some(limit) = quota.limit else {
            return Ok(None);
        };
        let quotas = Vec1::from(QuotaGet::new(
            Resource::Storage,
            quota.used.div_ceil(1024),
            limit / 1024,
        ));
        Ok(Some(Data::Quota {
            root: QUOTA_ROOT.clone(),
            quotas,
        }))
    }

    fn selected_id(&self) -> MailboxId {
        self.selected.as_ref().expect("selected").id
    }

    /// How this connection's mailbox names travel.
    fn names(&self) -> Names {
        if self.rev2 {
            Names::Utf8
        } else {
            Names::Mutf7
        }
    }

    /// The mailbox a client names; `None` (answered NO [NONEXISTENT]) also for a name
    /// that [`Names::decode`] refuses, which no mailbox can have.
    async fn mailbox_id(&self, mailbox: &ImapMailbox<'_>) -> Option<MailboxId> {
        let name = self.names().mailbox(mailbox).ok()?;
        self.account()
            .read()
            .await
            .mailbox_by_name(&name)
            .map(|m| m.id)
    }

    async fn subscribe(
        &mut self,
        server: &mut Server,
        tag: Tag<'static>,
        mailbox: &ImapMailbox<'_>,
        subscribed: bool,
    ) -> Result<(), mailvault::Error> {
        let Some(id) = self.mailbox_id(mailbox).await else {
            server.enqueue_status(no(tag, Some(nonexistent()), "no such mailbox"));
            return Ok(());
        };
        self.account()
            .write()
            .await
            .subscribe(id, subscribed)
            .await?;
        let done = if subscribed {
            "SUBSCRIBE completed"
        } else {
            "UNSUBSCRIBE completed"
        };
        server.enqueue_status(ok(tag, None, done));
        Ok(())
    }

    /// Whether a password may be sent on this connection: no TLS configured, TLS active,
    /// or a connection from the server's own address.
    fn password_allowed(&self) -> bool {
        self.state.tls.is_none() || self.tls || self.local
    }

    /// What CAPABILITY lists now: before login, how to log in (STARTTLS, LOGINDISABLED
    /// or AUTH=PLAIN); after it, the extensions only.
    fn capabilities(&self) -> Vec1<Capability<'static>> {
        let mut caps = capabilities(self.state.max_message_size).into_inner();
        if self.account.is_none() {
            if self.state.tls.is_some() && !self.tls {
                caps.push(Capability::StartTls);
            }
            if self.password_allowed() {
                caps.push(Capability::Auth(AuthMechanism::Plain));
                caps.push(Capability::SaslIr);
            } else {
                caps.push(Capability::LoginDisabled);
            }
        }
        Vec1::try_from(caps).unwrap_or_else(|_| Vec1::from(Capability::Imap4Rev1))
    }

    /// AUTHENTICATE PLAIN (RFC 4616) with the client's response: `[authzid] NUL authcid
    /// NUL passwd`. The authorization identity must be empty or the authentication
    /// identity (no one logs in as someone else). Errors end as NO: AUTHENTICATE's
    /// completion goes through imap-next's `authenticate_finish`.
    async fn authenticate_plain(
        &mut self,
        tag: Tag<'static>,
        response: Secret<std::borrow::Cow<'_, [u8]>>,
    ) -> Status<'static> {
        let message = response.declassify();
        let mut fields = message.split(|&b| b == 0);
        let (Some(authzid), Some(authcid), Some(password), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return bad(Some(tag), "AUTHENTICATE PLAIN: malformed response");
        };
        if !authzid.is_empty() && !authzid.eq_ignore_ascii_case(authcid) {
            return no(
                tag,
                Some(other_code("AUTHORIZATIONFAILED")),
                "authorization identity differs from the authentication identity",
            );
        }
        match self
            .log_in(tag.clone(), authcid, password, "AUTHENTICATE")
            .await
        {
            Ok(status) => status,
            Err(e) => {
                tracing::warn!(error = %e, "IMAP AUTHENTICATE failed");
                no(tag, response_code(&e), format!("AUTHENTICATE failed: {e}"))
            }
        }
    }

    /// The credential check of LOGIN and AUTHENTICATE: `user`'s account, unlocked with
    /// `password`, its shared handle opened. The status to answer with; `Err` for a
    /// failure of the store.
    async fn log_in(
        &mut self,
        tag: Tag<'static>,
        user: &[u8],
        password: &[u8],
        command: &str,
    ) -> Result<Status<'static>, mailvault::Error> {
        let failed = |tag| {
            no(
                tag,
                Some(other_code("AUTHENTICATIONFAILED")),
                "authentication failed",
            )
        };
        let (Ok(user), Ok(password)) = (std::str::from_utf8(user), std::str::from_utf8(password))
        else {
            return Ok(failed(tag));
        };
        let (provider, accounts, registry, share) = match &self.state.login {
            Login::Provider {
                provider,
                accounts,
                registry,
                share,
            } => (provider, accounts, registry, *share),
            Login::Companion {
                name,
                password: expected,
                handle,
            } => {
                // Both compared whole, in time independent of where they differ.
                let name_ok = constant_time_eq(user.to_lowercase().as_bytes(), name.as_bytes());
                let password_ok = constant_time_eq(password.as_bytes(), expected.as_bytes());
                if !(name_ok & password_ok) {
                    return Ok(failed(tag));
                }
                tracing::info!(account = %handle.account(), tls = self.tls, command, "IMAP login (companion)");
                self.account = Some(handle.clone());
                return Ok(ok(
                    tag,
                    Some(Code::Capability(self.capabilities())),
                    format!("{command} completed"),
                ));
            }
        };
        let account = match accounts.lookup(user) {
            Ok(Some(account)) => account,
            // As long as a wrong password takes: the time does not tell who exists.
            Ok(None) => {
                provider.reject_unknown_login(password).await;
                return Ok(failed(tag));
            }
            Err(e) => {
                tracing::error!(error = %e, "accounts table");
                return Ok(no(
                    tag,
                    Some(other_code("UNAVAILABLE")),
                    "temporary failure",
                ));
            }
        };
        // The password is checked on every login (unlocking the account's keyring), also
        // when the account's handle is open already: the session is then dropped and the
        // open handle shared. An account whose keys are on a device (key models 1 to 4:
        // no password slot here) fails here like a wrong password: this process has no
        // key that opens it.
        let session = match provider.unlock(account, password).await {
            Ok(session) => session,
            Err(mailvault::Error::WrongCredential) => return Ok(failed(tag)),
            Err(e) => return Err(e),
        };
        let shared = registry.get(&account).is_some();
        let handle = registry
            .get_or_open(account, share, || async { Ok(session) })
            .await?;
        tracing::info!(%account, shared, tls = self.tls, command, open_accounts = registry.open_accounts(), "IMAP login");
        self.account = Some(handle);
        Ok(ok(
            tag,
            Some(Code::Capability(self.capabilities())),
            format!("{command} completed"),
        ))
    }

    /// Brings the client's snapshot of the selected mailbox up to the account's current
    /// state, announcing the differences: EXPUNGE for each vanished message (highest
    /// sequence number first, so that each number is valid when sent), EXISTS when the
    /// count changed, FETCH FLAGS for each message whose flags changed.
    async fn sync(&mut self, server: &mut Server) -> Result<(), mailvault::Error> {
        let Some(selected) = self.selected.as_ref() else {
            return Ok(());
        };
        let current = match self.account().view(selected.id).await {
            Ok(view) => view,
            // Deleted by another connection: every message is gone (VANISHED once
            // QRESYNC is on, RFC 7162 3.2.10), and no mailbox is selected any more (the
            // CLOSED code, RFC 9051 7.1: later commands of the selected state get BAD).
            Err(mailvault::Error::NoSuchMailbox { .. }) => {
                if self.qresync {
                    let uids: Vec<u32> = selected.view.messages.iter().map(|m| m.uid).collect();
                    if let Some(set) = uid_sequence_set(&uids) {
                        server.enqueue_data(Data::Vanished {
                            earlier: false,
                            known_uids: set,
                        });
                    }
                } else {
                    for i in (0..selected.view.messages.len()).rev() {
                        server.enqueue_data(Data::Expunge(seq(i)));
                    }
                }
                server.enqueue_status(untagged_ok(
                    Code::Closed,
                    "the selected mailbox was deleted by another session",
                ));
                self.selected = None;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let selected = self.selected.as_mut().expect("selected");
        if !Arc::ptr_eq(&current, &selected.view) {
            announce_keywords(server, selected, &current);
            announce_changes(
                server,
                &selected.view,
                &current,
                (self.condstore, self.qresync),
            );
            selected.view = current;
        }
        Ok(())
    }

    /// Records in the client's snapshot that it was told (or, after `.SILENT`, knows)
    /// the flags the messages `uids` have in `current`: `sync` does not announce them
    /// again.
    fn told_flags(&mut self, uids: &[u32], current: &MailboxView) {
        let Some(selected) = self.selected.as_mut() else {
            return;
        };
        if uids.is_empty() {
            return;
        }
        let mut view = (*selected.view).clone();
        for m in &mut view.messages {
            if uids.binary_search(&m.uid).is_ok() {
                if let Some(now) = now_of(current, m.uid) {
                    m.flags = now.flags.clone();
                    m.modseq = now.modseq;
                }
            }
        }
        selected.view = Arc::new(view);
    }

    async fn select(
        &mut self,
        server: &mut Server,
        tag: Tag<'static>,
        mailbox: &ImapMailbox<'_>,
        read_only: bool,
        parameters: &[SelectParameter],
    ) -> Result<(), mailvault::Error> {
        let mut resync = None;
        for parameter in parameters {
            match parameter {
                SelectParameter::CondStore => self.condstore = true,
                SelectParameter::QResync {
                    uid_validity,
                    mod_sequence_value,
                    known_uids,
                    ..
                } => {
                    if !self.qresync {
                        // RFC 7162 3.2.5: QRESYNC must be enabled first.
                        server.enqueue_status(bad(Some(tag), "QRESYNC is not enabled"));
                        return Ok(());
                    }
                    resync = Some((
                        uid_validity.get(),
                        mod_sequence_value.get(),
                        known_uids.clone(),
                    ));
                }
            }
        }
        if self.selected.take().is_some() {
            // RFC 7162 3.2.11 (RFC 9051 6.3.2): the responses that follow are the new
            // mailbox's.
            server.enqueue_status(untagged_ok(other_code("CLOSED"), "previous mailbox closed"));
        }
        let Some(id) = self.mailbox_id(mailbox).await else {
            server.enqueue_status(no(tag, Some(nonexistent()), "no such mailbox"));
            return Ok(());
        };
        let view = self.account().view(id).await?;
        let flags = mailbox_flags(&view);
        server.enqueue_data(Data::Flags(flags.clone()));
        server.enqueue_data(Data::Exists(view.messages.len() as u32));
        if self.rev2 {
            // RFC 9051 6.3.2: a LIST response with the mailbox's name and accurate
            // attributes; no RECENT, no UNSEEN code (both gone from IMAP4rev2).
            let mailboxes = self.account().read().await.mailboxes()?;
            if let Some(m) = mailboxes.iter().find(|m| m.id == id) {
                if let Some(name) = self.names().encode(&m.name) {
                    let mut items = special_use_attributes(m.special_use);
                    items.push(children_attribute(&m.name, &mailboxes));
                    server.enqueue_data(Data::List {
                        items,
                        delimiter: QuotedChar::try_from('/').ok(),
                        mailbox: name,
                    });
                }
            }
        } else {
            server.enqueue_data(Data::Recent(0));
            // RFC 3501 6.3.1: the sequence number of the first message without \Seen.
            if let Some(i) = view
                .messages
                .iter()
                .position(|m| !m.flags.contains(Flags::SEEN))
            {
                server.enqueue_status(untagged_ok(Code::Unseen(seq(i)), "first unseen"));
            }
        }
        if let Some(v) = NonZeroU32::new(view.status.uid_validity) {
            server.enqueue_status(untagged_ok(Code::UidValidity(v), "UIDs valid"));
        }
        if let Some(n) = NonZeroU32::new(view.status.uid_next) {
            server.enqueue_status(untagged_ok(Code::UidNext(n), "predicted next UID"));
        }
        // RFC 8474 4.1: the mailbox's MAILBOXID.
        if let Some(mailbox_id) = object_id(&id.to_hex()) {
            server.enqueue_status(untagged_ok(Code::MailboxId(mailbox_id), "Ok"));
        }
        // RFC 7162 3.1.2.1: HIGHESTMODSEQ, once CONDSTORE is on (as Dovecot: a client
        // that never asked for modseqs is not sent any).
        if self.condstore {
            if let Some(n) = NonZeroU64::new(view.status.highest_modseq) {
                server.enqueue_status(untagged_ok(Code::HighestModSeq(n), "highest"));
            }
        }
        // RFC 7162 3.2.5.1: what changed since the client's modseq, when its UIDVALIDITY
        // is still the mailbox's.
        if let Some((uid_validity, modseq, known)) = resync {
            if uid_validity == view.status.uid_validity {
                let changes = self.account().read().await.changes_since(id, modseq)?;
                let last = view.messages.last().map_or(0, |m| m.uid);
                let known = known.map(|k| ranges(&k, last));
                let vanished: Vec<u32> = changes
                    .vanished
                    .into_iter()
                    .filter(|u| known.as_ref().is_none_or(|k| in_ranges(k, *u)))
                    .collect();
                if let Some(set) = uid_sequence_set(&vanished) {
                    server.enqueue_data(Data::Vanished {
                        earlier: true,
                        known_uids: set,
                    });
                }
                for m in &changes.changed {
                    if known.as_ref().is_some_and(|k| !in_ranges(k, m.uid)) {
                        continue;
                    }
                    let Some(n) = view.sequence_of(m.uid) else {
                        continue;
                    };
                    let mut items = vec![MessageDataItem::Flags(fetch_flags(&m.flags))];
                    items.insert(
                        0,
                        MessageDataItem::Uid(NonZeroU32::new(m.uid).unwrap_or(NonZeroU32::MIN)),
                    );
                    if let Some(modseq) = NonZeroU64::new(m.modseq) {
                        items.push(MessageDataItem::ModSeq(modseq));
                    }
                    if let Ok(items) = Vec1::try_from(items) {
                        server.enqueue_data(Data::Fetch {
                            seq: seq(n as usize - 1),
                            items,
                        });
                    }
                }
            }
        }
        server.enqueue_status(untagged_ok(
            Code::PermanentFlags(permanent_flags(&flags, read_only)),
            "flags",
        ));
        self.selected = Some(Selected {
            id,
            view,
            read_only,
            flags,
            saved: Vec::new(),
        });
        let (code, done) = if read_only {
            (Code::ReadOnly, "EXAMINE completed")
        } else {
            (Code::ReadWrite, "SELECT completed")
        };
        server.enqueue_status(ok(tag, Some(code), done));
        Ok(())
    }

    async fn list(
        &mut self,
        server: &mut Server,
        tag: Tag<'static>,
        reference: &ImapMailbox<'_>,
        request: ListRequest,
    ) -> Result<(), mailvault::Error> {
        let delimiter = QuotedChar::try_from('/').ok();
        let names = self.names();
        if self.rev2
            && request
                .status
                .as_ref()
                .is_some_and(|s| s.contains(&StatusDataItemName::Recent))
        {
            server.enqueue_status(bad(Some(tag), REV2_NO_RECENT));
            return Ok(());
        }
        let mut patterns = Vec::new();
        for wildcard in &request.patterns {
            let pattern: &[u8] = match wildcard {
                ListMailbox::Token(t) => t.as_ref(),
                ListMailbox::String(s) => s.as_ref(),
            };
            if pattern.is_empty() {
                // The hierarchy delimiter and root name.
                if let Ok(root) = ImapMailbox::try_from("") {
                    server.enqueue_data(Data::List {
                        items: vec![imap_next::imap_types::flag::FlagNameAttribute::Noselect],
                        delimiter,
                        mailbox: root,
                    });
                }
                continue;
            }
            let reference = match reference {
                ImapMailbox::Inbox => Ok("INBOX".to_string()),
                other => names.mailbox(other),
            };
            // The pattern's wildcards are ASCII: it decodes like a name, and is matched
            // against the stored (UTF-8) names.
            match (reference, names.decode(pattern)) {
                (Ok(reference), Ok(pattern)) => patterns.push(format!("{reference}{pattern}")),
                (Err(e), _) | (_, Err(e)) => {
                    server.enqueue_status(bad_name(tag, e));
                    return Ok(());
                }
            }
        }
        if !patterns.is_empty() {
            let matches = |name: &str| patterns.iter().any(|p| matches_pattern(p, name));
            let mailboxes = self.account().read().await.mailboxes()?;
            if self.rev2 && !request.lsub {
                // RFC 9051 6.3.9: a `%` at the end of a pattern also matches levels of
                // hierarchy; one that is no mailbox (`a` of `a/b` when `a` was never
                // created, or deleted) is returned \NonExistent (7.3.1: implies
                // \Noselect). Under RECURSIVEMATCH (RFC 5258 3.1, RFC 9051 6.3.9) such a
                // level is returned \NonExistent with CHILDINFO when a selected mailbox
                // below it does not match the pattern. IMAP4rev1 sessions list only
                // mailboxes, as before.
                let ends_in_percent: Vec<&String> =
                    patterns.iter().filter(|p| p.ends_with('%')).collect();
                let existing: Vec<&str> = mailboxes.iter().map(|m| m.name.as_str()).collect();
                for hole in hierarchy_holes(&existing) {
                    let below = format!("{hole}/");
                    let child_info = request.recursive_match
                        && matches(&hole)
                        && mailboxes.iter().any(|o| {
                            o.name.starts_with(&below) && request.selects(o) && !matches(&o.name)
                        });
                    let level = request.selects_all()
                        && ends_in_percent.iter().any(|p| matches_pattern(p, &hole));
                    if !child_info && !level {
                        continue;
                    }
                    let Some(mailbox) = names.encode(&hole) else {
                        continue;
                    };
                    let items = vec![
                        FlagNameAttribute::from(Atom::unvalidated("NonExistent")),
                        FlagNameAttribute::from(Atom::unvalidated("HasChildren")),
                    ];
                    let data = match Vec1::try_from(request.base_options()) {
                        Ok(options) if child_info => Data::ListExtended {
                            items,
                            delimiter,
                            mailbox,
                            extended_items: vec![MboxListExtendedItem::ChildInfo(options)],
                        },
                        _ => Data::List {
                            items,
                            delimiter,
                            mailbox,
                        },
                    };
                    server.enqueue_data(data);
                }
            }
            for m in &mailboxes {
                if !matches(&m.name) {
                    continue;
                }
                let below = format!("{}/", m.name);
                let selected = request.selects(m);
                // RFC 5258 3.1, RECURSIVEMATCH: a mailbox with a selected mailbox below it
                // says so (CHILDINFO), and is listed for it when that one is not.
                let selected_below: Vec<&str> = if request.recursive_match {
                    mailboxes
                        .iter()
                        .filter(|o| o.name.starts_with(&below) && request.selects(o))
                        .map(|o| o.name.as_str())
                        .collect()
                } else {
                    Vec::new()
                };
                if !selected && selected_below.iter().all(|name| matches(name)) {
                    continue;
                }
                let Some(mailbox) = names.encode(&m.name) else {
                    continue;
                };
                let mut items = special_use_attributes(m.special_use);
                if request.return_subscribed && m.subscribed {
                    items.push(FlagNameAttribute::from(Atom::unvalidated("Subscribed")));
                }
                // RFC 9051 7.3.1 (RFC 3348): whether the mailbox has child mailboxes;
                // to an IMAP4rev2 client on every LIST (RFC 5258 4 lets the server send
                // them unasked), so that they agree with the LIST of SELECT (RFC 9051
                // 6.3.2: "the list of mailbox attributes MUST be accurate").
                if request.children || (self.rev2 && !request.lsub) {
                    items.push(children_attribute(&m.name, &mailboxes));
                }
                let data = if request.lsub {
                    Data::Lsub {
                        items,
                        delimiter,
                        mailbox: mailbox.clone(),
                    }
                } else if let (false, Ok(options)) = (
                    selected_below.is_empty(),
                    Vec1::try_from(request.base_options()),
                ) {
                    Data::ListExtended {
                        items,
                        delimiter,
                        mailbox: mailbox.clone(),
                        extended_items: vec![MboxListExtendedItem::ChildInfo(options)],
                    }
                } else {
                    Data::List {
                        items,
                        delimiter,
                        mailbox: mailbox.clone(),
                    }
                };
                server.enqueue_data(data);
                // RFC 5819: the STATUS of each listed mailbox, after its LIST response
                // (every mailbox here is selectable).
                if let Some(names) = &request.status {
                    if selected {
                        let items = self.status_items(m.id, names).await?;
                        server.enqueue_data(Data::Status {
                            mailbox,
                            items: items.into(),
                        });
                    }
                }
            }
        }
        let done = if request.lsub {
            "LSUB completed"
        } else {
            "LIST completed"
        };
        server.enqueue_status(ok(tag, None, done));
        Ok(())
    }

    async fn status(
        &mut self,
        server: &mut Server,
        tag: Tag<'static>,
        mailbox: &ImapMailbox<'static>,
        names: &[StatusDataItemName],
    ) -> Result<(), mailvault::Error> {
        if self.rev2 && names.contains(&StatusDataItemName::Recent) {
            server.enqueue_status(bad(Some(tag), REV2_NO_RECENT));
            return Ok(());
        }
        let Some(id) = self.mailbox_id(mailbox).await else {
            server.enqueue_status(no(tag, Some(nonexistent()), "no such mailbox"));
            return Ok(());
        };
        let items = self.status_items(id, names).await?;
        // The name as LIST gives it (an atom when it can be one, as Dovecot answers), not
        // in the client's quoting.
        let names = self.names();
        let echoed = names
            .mailbox(mailbox)
            .ok()
            .and_then(|name| names.encode(&name))
            .unwrap_or_else(|| mailbox.clone());
        server.enqueue_data(Data::Status {
            mailbox: echoed,
            items: items.into(),
        });
        server.enqueue_status(ok(tag, None, "STATUS completed"));
        Ok(())
    }

    /// The STATUS items `names` of mailbox `id` (STATUS, and LIST-STATUS).
    async fn status_items(
        &mut self,
        id: MailboxId,
        names: &[StatusDataItemName],
    ) -> Result<Vec<StatusDataItem>, mailvault::Error> {
        let status = self.account().read().await.status(id)?;
        let mut items = Vec::new();
        for name in names {
            match name {
                StatusDataItemName::Messages => {
                    items.push(StatusDataItem::Messages(status.messages))
                }
                StatusDataItemName::Recent => items.push(StatusDataItem::Recent(0)),
                StatusDataItemName::Unseen => items.push(StatusDataItem::Unseen(status.unseen)),
                // RFC 9051 6.3.11: messages with \Deleted.
                StatusDataItemName::Deleted => {
                    let view = self.account().view(id).await?;
                    let deleted = view
                        .messages
                        .iter()
                        .filter(|m| m.flags.contains(Flags::DELETED))
                        .count();
                    items.push(StatusDataItem::Deleted(
                        u32::try_from(deleted).unwrap_or(u32::MAX),
                    ));
                }
                // RFC 9051 6.3.11 (RFC 8438): the mailbox's size in octets.
                StatusDataItemName::Size => items.push(StatusDataItem::Size(status.size)),
                // RFC 9208 4.2: the storage an EXPUNGE would free, in units of 1 024
                // octets (a message's size, as the quota counts it).
                StatusDataItemName::DeletedStorage => {
                    let view = self.account().view(id).await?;
                    let bytes: u64 = view
                        .messages
                        .iter()
                        .filter(|m| m.flags.contains(Flags::DELETED))
                        .map(|m| m.size)
                        .sum();
                    items.push(StatusDataItem::DeletedStorage(bytes.div_ceil(1024)));
                }
                StatusDataItemName::UidNext => {
                    if let Some(n) = NonZeroU32::new(status.uid_next) {
                        items.push(StatusDataItem::UidNext(n));
                    }
                }
                StatusDataItemName::UidValidity => {
                    if let Some(n) = NonZeroU32::new(status.uid_validity) {
                        items.push(StatusDataItem::UidValidity(n));
                    }
                }
                StatusDataItemName::HighestModSeq => {
                    // A CONDSTORE-enabling command (RFC 7162 3.1).
                    self.condstore = true;
                    items.push(StatusDataItem::HighestModSeq(status.highest_modseq));
                }
                StatusDataItemName::MailboxId => {
                    // RFC 8474 4.2.
                    if let Some(mailbox_id) = object_id(&id.to_hex()) {
                        items.push(StatusDataItem::MailboxId(mailbox_id));
                    }
                }
                StatusDataItemName::AppendLimit => {
                    // RFC 7889 4: the one limit of every mailbox.
                    items.push(StatusDataItem::AppendLimit(Some(
                        self.state.max_message_size,
                    )));
                }
            }
        }
        Ok(items)
    }

    async fn append(
        &mut self,
        server: &mut Server,
        tag: Tag<'static>,
        mailbox: &ImapMailbox<'_>,
        flags: &[Flag<'_>],
        date: Option<DateTime>,
        message: LiteralOrLiteral8<'_>,
    ) -> Result<(), mailvault::Error> {
        let Some(id) = self.mailbox_id(mailbox).await else {
            server.enqueue_status(no(tag, Some(Code::TryCreate), "no such mailbox"));
            return Ok(());
        };
        let names: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        let flags = match Flags::from_names(names.iter().map(String::as_str)) {
            Ok(flags) => flags,
            Err(e) => {
                server.enqueue_status(bad(Some(tag), format!("invalid flag: {e}")));
                return Ok(());
            }
        };
        let body: &[u8] = match &message {
            LiteralOrLiteral8::Literal(l) => l.data(),
            LiteralOrLiteral8::Literal8(l) => &l.data,
        };
        let options = AppendOptions {
            flags,
            internal_date: date.map(|d| d.as_ref().timestamp()),
            provenance: None,
        };
        // One transaction (the library's commit path): the body is encrypted, uploaded and
        // analysed without holding the account's write access, which only the commit of
        // the records takes; other connections on the account go on meanwhile.
        let mut tx = Transaction::new();
        tx.append([id], body.to_vec(), options);
        let committed = self.account().commit(tx).await?;
        self.sync(server).await?;
        let code = committed
            .created
            .first()
            .and_then(|created| created.messages.first())
            .and_then(|appended| {
                NonZeroU32::new(appended.uid_validity).zip(NonZeroU32::new(appended.uid))
            })
            .map(|(uid_validity, uid)| Code::AppendUid { uid_validity, uid });
        server.enqueue_status(ok(tag, code, "APPEND completed"));
        Ok(())
    }

    /// Whether a message sequence set names a number above the last message (RFC 9051
    /// 6.4.4: a BAD; `*` always names the last).
    fn beyond_last(&self, set: &SequenceSet) -> bool {
        let count = self.selected.as_ref().map_or(0, |s| s.view.messages.len());
        set.0.as_ref().iter().any(|sequence| {
            let over = |s: &SeqOrUid| matches!(s, SeqOrUid::Value(v) if v.get() as usize > count);
            match sequence {
                Sequence::Single(s) => over(s),
                Sequence::Range(a, b) => over(a) || over(b),
                // The saved messages (RFC 5182 2.1): only those still there.
                Sequence::LastCommand => false,
            }
        })
    }

    /// Sets the search result variable (`$`, RFC 5182 2.1) of the selected mailbox to
    /// `uids` (ascending).
    fn save_result(&mut self, uids: Vec<u32>) {
        if let Some(selected) = self.selected.as_mut() {
            selected.saved = uids;
        }
    }

    /// Indices into the client's snapshot of the messages `set` names; `$` (RFC 5182
    /// 2.1) names the saved messages, in a UID command as in a sequence number one.
    fn resolve_indices(&self, set: &SequenceSet, uid: bool) -> Vec<usize> {
        let Some(selected) = self.selected.as_ref() else {
            return Vec::new();
        };
        if is_last_command(set) {
            return selected
                .view
                .messages
                .iter()
                .enumerate()
                .filter(|(_, m)| selected.saved.binary_search(&m.uid).is_ok())
                .map(|(i, _)| i)
                .collect();
        }
        sequence_indices(&selected.view.messages, set, uid)
    }

    /// The inclusive UID ranges a UID set names: `$` gives the saved UIDs.
    fn uid_ranges(&self, set: &SequenceSet, last: u32) -> Vec<(u32, u32)> {
        if is_last_command(set) {
            let saved = self.selected.as_ref().map_or(&[][..], |s| &s.saved[..]);
            return runs(saved);
        }
        ranges(set, last)
    }

    /// The UIDs `set` names.
    fn resolve(&self, set: &SequenceSet, uid: bool) -> Vec<u32> {
        let Some(selected) = self.selected.as_ref() else {
            return Vec::new();
        };
        self.resolve_indices(set, uid)
            .into_iter()
            .map(|i| selected.view.messages[i].uid)
            .collect()
    }

    /// The selected mailbox as it is now (flags of the messages the client knows are
    /// read from it; its sequence numbers are not the client's).
    async fn current(&self) -> Result<Arc<MailboxView>, mailvault::Error> {
        self.account().view(self.selected_id()).await
    }

    /// FETCH and UID FETCH: each message's response written out (`stream`) before the
    /// messages well past it are read ([`ReadAhead`]), so that the memory one command
    /// holds is a few messages', whatever it asks for.
    #[allow(clippy::too_many_arguments)]
    async fn fetch<T: Transport>(
        &mut self,
        stream: &mut T,
        server: &mut Server,
        tag: Tag<'static>,
        set: &SequenceSet,
        names: MacroOrMessageDataItemNames<'static>,
        uid: bool,
        modifiers: &[FetchModifier],
    ) -> CmdResult {
        let mut changed_since = None;
        let mut vanished = false;
        for modifier in modifiers {
            match modifier {
                FetchModifier::ChangedSince(n) => changed_since = Some(n.get()),
                FetchModifier::Vanished => vanished = true,
            }
        }
        // RFC 7162 3.2.6: VANISHED only in UID FETCH with CHANGEDSINCE, QRESYNC enabled.
        if vanished && !(uid && self.qresync && changed_since.is_some()) {
            server.enqueue_status(bad(
                Some(tag),
                "VANISHED needs UID FETCH, CHANGEDSINCE and QRESYNC enabled",
            ));
            return Ok(Outcome::Continue);
        }
        let mut names: Vec<MessageDataItemName<'static>> = match names {
            MacroOrMessageDataItemNames::Macro(m) => m
                .expand()
                .into_iter()
                .map(|n| imap_next::imap_types::ToStatic::to_static(&n))
                .collect(),
            MacroOrMessageDataItemNames::MessageDataItemNames(names) => names,
        };
        if uid && !names.contains(&MessageDataItemName::Uid) {
            names.insert(0, MessageDataItemName::Uid);
        }
        // CHANGEDSINCE implies MODSEQ (RFC 7162 3.1.4.1); both enable CONDSTORE.
        if changed_since.is_some() && !names.contains(&MessageDataItemName::ModSeq) {
            names.push(MessageDataItemName::ModSeq);
        }
        if names.contains(&MessageDataItemName::ModSeq) {
            self.condstore = true;
        }
        for name in &names {
            let supported = match name {
                MessageDataItemName::BodyExt { section, .. } => match section {
                    None
                    | Some(Section::Header(None))
                    | Some(Section::Text(None))
                    | Some(Section::HeaderFields(None, _))
                    | Some(Section::HeaderFieldsNot(None, _))
                    | Some(Section::Part(_))
                    | Some(Section::Mime(_))
                    // Of the message a MESSAGE/RFC822 part carries (RFC 9051 6.4.5).
                    | Some(Section::Header(Some(_)))
                    | Some(Section::Text(Some(_)))
                    | Some(Section::HeaderFields(Some(_), _))
                    | Some(Section::HeaderFieldsNot(Some(_), _)) => true,
                },
                MessageDataItemName::Uid
                | MessageDataItemName::Flags
                | MessageDataItemName::InternalDate
                | MessageDataItemName::Rfc822
                | MessageDataItemName::Rfc822Header
                | MessageDataItemName::Rfc822Size
                | MessageDataItemName::Rfc822Text
                | MessageDataItemName::Envelope
                | MessageDataItemName::Body
                | MessageDataItemName::BodyStructure
                | MessageDataItemName::ModSeq
                | MessageDataItemName::Binary { .. }
                | MessageDataItemName::BinarySize { .. }
                | MessageDataItemName::EmailId
                | MessageDataItemName::ThreadId => true,
            };
            if !supported {
                server.enqueue_status(no(
                    tag,
                    None,
                    format!("FETCH {name:?} is not supported yet"),
                ));
                return Ok(Outcome::Continue);
            }
        }
        let mut indices = self.resolve_indices(set, uid);
        let (id, read_only) = {
            let selected = self.selected.as_ref().expect("selected");
            (selected.id, selected.read_only)
        };
        let mut current = self.current().await?;
        if let Some(since) = changed_since {
            if vanished {
                let changes = self.account().read().await.changes_since(id, since)?;
                let asked = self.uid_ranges(set, u32::MAX);
                let gone: Vec<u32> = changes
                    .vanished
                    .into_iter()
                    .filter(|u| in_ranges(&asked, *u))
                    .collect();
                if let Some(set) = uid_sequence_set(&gone) {
                    server.enqueue_data(Data::Vanished {
                        earlier: true,
                        known_uids: set,
                    });
                }
            }
            indices.retain(|&i| {
                now_of(&current, self.snapshot_uid(i)).is_some_and(|m| m.modseq > since)
            });
        }
        // Reading a body without PEEK sets \Seen (RFC 3501 6.4.5).
        let sets_seen = !read_only
            && names.iter().any(|n| {
                matches!(
                    n,
                    MessageDataItemName::BodyExt { peek: false, .. }
                        | MessageDataItemName::Binary { peek: false, .. }
                        | MessageDataItemName::Rfc822
                        | MessageDataItemName::Rfc822Text
                )
            });
        let mut seen_set = BTreeSet::new();
        if sets_seen {
            let unseen: Vec<u32> = indices
                .iter()
                .filter_map(|&i| now_of(&current, self.snapshot_uid(i)))
                .filter(|m| !m.flags.contains(Flags::SEEN))
                .map(|m| m.uid)
                .collect();
            if !unseen.is_empty() {
                let seen = Flags::from_names([Flags::SEEN])?;
                let stored = self
                    .account()
                    .write()
                    .await
                    .store_flags(id, &unseen, FlagChange::Add(seen), None)
                    .await?;
                seen_set.extend(stored.updated);
                current = self.current().await?;
            }
        }
        let needs_body = names.iter().any(|n| {
            matches!(
                n,
                MessageDataItemName::BodyExt { .. }
                    | MessageDataItemName::Binary { .. }
                    | MessageDataItemName::BinarySize { .. }
                    | MessageDataItemName::Rfc822
                    | MessageDataItemName::Rfc822Header
                    | MessageDataItemName::Rfc822Text
            )
        });
        let needs_analysis = names.iter().any(|n| {
            matches!(
                n,
                MessageDataItemName::Envelope
                    | MessageDataItemName::Body
                    | MessageDataItemName::BodyStructure
            )
        });
        // The MIME structure (kept apart from the record once the index compacted it).
        let needs_details = needs_body
            || names.iter().any(|n| {
                matches!(
                    n,
                    MessageDataItemName::Body | MessageDataItemName::BodyStructure
                )
            });
        let snapshot = self.selected.as_ref().expect("selected").view.clone();
        let mut messages = ReadAhead {
            account: self.account().clone(),
            mailbox: id,
            with_body: needs_body,
            with_details: needs_details,
            rest: indices.into_iter(),
            snapshot,
            current: current.clone(),
            running: Default::default(),
            running_bytes: 0,
        };
        while let Some((i, summary, read)) = messages.next().await {
            let (mut email, body) = match read? {
                Read::Message(email, body) => (*email, body),
                Read::Expunged => continue,
                Read::Cancelled => return Ok(Outcome::Gone),
            };
            if needs_analysis && !email.analyzed {
                email = self
                    .account()
                    .write()
                    .await
                    .analyze(id, summary.uid)
                    .await?;
            }
            let nested = if needs_analysis {
                self.nested_envelopes(&email).await?
            } else {
                HashMap::new()
            };
            let body_bytes: &[u8] = body.as_deref().unwrap_or(&[]);
            let mut items = Vec::with_capacity(names.len() + 1);
            for name in &names {
                let item = match name {
                    MessageDataItemName::Uid => match NonZeroU32::new(summary.uid) {
                        Some(u) => MessageDataItem::Uid(u),
                        None => continue,
                    },
                    MessageDataItemName::Flags => {
                        MessageDataItem::Flags(fetch_flags(&summary.flags))
                    }
                    MessageDataItemName::ModSeq => match NonZeroU64::new(summary.modseq) {
                        Some(m) => MessageDataItem::ModSeq(m),
                        None => continue,
                    },
                    // RFC 8474 5.1: shared by the copies of the message (COPY, MOVE).
                    MessageDataItemName::EmailId => match object_id(&summary.email.to_hex()) {
                        Some(id) => MessageDataItem::EmailId(id),
                        None => continue,
                    },
                    // RFC 8474 5.2: every message is in a thread (its own at least).
                    MessageDataItemName::ThreadId => {
                        MessageDataItem::ThreadId(object_id(&email.thread.to_hex()))
                    }
                    MessageDataItemName::Rfc822Size => {
                        MessageDataItem::Rfc822Size(u32::try_from(summary.size).unwrap_or(u32::MAX))
                    }
                    MessageDataItemName::InternalDate => {
                        MessageDataItem::InternalDate(internal_date(email.internal_date))
                    }
                    MessageDataItemName::Envelope => {
                        MessageDataItem::Envelope(imap_envelope(&email.envelope))
                    }
                    MessageDataItemName::BodyStructure => {
                        MessageDataItem::BodyStructure(body_structure(&email, 0, &nested, true))
                    }
                    MessageDataItemName::Body => {
                        MessageDataItem::Body(body_structure(&email, 0, &nested, false))
                    }
                    MessageDataItemName::Rfc822 => MessageDataItem::Rfc822(nstring(body_bytes)),
                    MessageDataItemName::Rfc822Header => {
                        MessageDataItem::Rfc822Header(nstring(split_header(body_bytes).0))
                    }
                    MessageDataItemName::Rfc822Text => {
                        MessageDataItem::Rfc822Text(nstring(split_header(body_bytes).1))
                    }
                    MessageDataItemName::BodyExt {
                        section, partial, ..
                    } => {
                        let whole: Vec<u8> = match section {
                            None => body_bytes.to_vec(),
                            Some(Section::Header(None)) => split_header(body_bytes).0.to_vec(),
                            Some(Section::Text(None)) => split_header(body_bytes).1.to_vec(),
                            Some(Section::HeaderFields(None, fields)) => {
                                header_fields(split_header(body_bytes).0, fields.as_ref(), true)
                            }
                            Some(Section::HeaderFieldsNot(None, fields)) => {
                                header_fields(split_header(body_bytes).0, fields.as_ref(), false)
                            }
                            Some(Section::Part(part)) | Some(Section::Mime(part)) => {
                                let which = if matches!(section, Some(Section::Mime(_))) {
                                    PartSection::Header
                                } else {
                                    PartSection::Body
                                };
                                match self
                                    .section_part(&mut email, id, summary.uid, part.0.as_ref())
                                    .await?
                                {
                                    Some(p) => {
                                        let mail = self.account().read().await;
                                        mail.read_part(&email, p, which).await?.to_vec()
                                    }
                                    None => Vec::new(),
                                }
                            }
                            // RFC 9051 6.4.5: HEADER, HEADER.FIELDS[.NOT] and TEXT after a
                            // part number name those of the message a MESSAGE/RFC822 or
                            // MESSAGE/GLOBAL part carries; of any other part, nothing.
                            Some(
                                Section::Header(Some(part))
                                | Section::Text(Some(part))
                                | Section::HeaderFields(Some(part), _)
                                | Section::HeaderFieldsNot(Some(part), _),
                            ) => {
                                let carried = match self
                                    .section_part(&mut email, id, summary.uid, part.0.as_ref())
                                    .await?
                                {
                                    Some(p) if carries_message(&email.parts[p]) => {
                                        let mail = self.account().read().await;
                                        mail.read_part(&email, p, PartSection::Body).await?.to_vec()
                                    }
                                    _ => Vec::new(),
                                };
                                let (header, text) = split_header(&carried);
                                match section {
                                    Some(Section::Header(_)) => header.to_vec(),
                                    Some(Section::Text(_)) => text.to_vec(),
                                    Some(Section::HeaderFields(_, fields)) => {
                                        header_fields(header, fields.as_ref(), true)
                                    }
                                    Some(Section::HeaderFieldsNot(_, fields)) => {
                                        header_fields(header, fields.as_ref(), false)
                                    }
                                    _ => Vec::new(),
                                }
                            }
                        };
                        let (origin, data) = match partial {
                            None => (None, whole),
                            Some((start, len)) => {
                                let (origin, len) = (*start, *len);
                                // RFC 9051 6.4.5: an origin beyond the end gives an empty
                                // string; the response names the origin asked for.
                                let start = (origin as usize).min(whole.len());
                                let end = start.saturating_add(len.get() as usize).min(whole.len());
                                (Some(origin), whole[start..end].to_vec())
                            }
                        };
                        MessageDataItem::BodyExt {
                            section: section.clone(),
                            origin,
                            data: nstring(&data),
                        }
                    }
                    // RFC 3516: the section's content with its transfer encoding removed.
                    MessageDataItemName::Binary {
                        section, partial, ..
                    } => {
                        let Some((whole, _)) = self
                            .binary_section(&mut email, id, summary.uid, section, body_bytes)
                            .await?
                        else {
                            server.enqueue_status(no(
                                tag,
                                Some(other_code("UNKNOWN-CTE")),
                                "BINARY: unknown content transfer encoding",
                            ));
                            return Ok(Outcome::Continue);
                        };
                        // RFC 3516 4.2: a partial fetch is of the decoded bytes.
                        let data = match partial {
                            None => &whole[..],
                            Some((origin, len)) => {
                                let start = (*origin as usize).min(whole.len());
                                let end = start.saturating_add(len.get() as usize).min(whole.len());
                                &whole[start..end]
                            }
                        };
                        MessageDataItem::Binary {
                            section: section.clone(),
                            value: nstring8(data),
                        }
                    }
                    MessageDataItemName::BinarySize { section } => {
                        let Some((whole, size)) = self
                            .binary_section(&mut email, id, summary.uid, section, body_bytes)
                            .await?
                        else {
                            server.enqueue_status(no(
                                tag,
                                Some(other_code("UNKNOWN-CTE")),
                                "BINARY.SIZE: unknown content transfer encoding",
                            ));
                            return Ok(Outcome::Continue);
                        };
                        let size = size.unwrap_or(whole.len() as u64);
                        MessageDataItem::BinarySize {
                            section: section.clone(),
                            size: u32::try_from(size).unwrap_or(u32::MAX),
                        }
                    }
                };
                items.push(item);
            }
            if seen_set.contains(&summary.uid) {
                if !names.contains(&MessageDataItemName::Flags) {
                    items.push(MessageDataItem::Flags(fetch_flags(&summary.flags)));
                }
                // RFC 7162 3.2.4: a FETCH that set \Seen reports the change with both
                // UID and MODSEQ once CONDSTORE is enabled.
                if self.condstore && !names.contains(&MessageDataItemName::ModSeq) {
                    if let Some(m) = NonZeroU64::new(summary.modseq) {
                        items.push(MessageDataItem::ModSeq(m));
                    }
                }
                if self.condstore && !items.iter().any(|i| matches!(i, MessageDataItem::Uid(_))) {
                    if let Some(u) = NonZeroU32::new(summary.uid) {
                        items.insert(0, MessageDataItem::Uid(u));
                    }
                }
            }
            if let Ok(items) = Vec1::try_from(items) {
                let handle = server.enqueue_data(Data::Fetch { seq: seq(i), items });
                // Out before the next message is taken from the read-ahead.
                if let Err(e) = stream.send(server, handle).await {
                    tracing::debug!(error = %e, "IMAP connection ends during FETCH");
                    return Ok(Outcome::Gone);
                }
            }
        }
        // The FETCH responses above carried the \Seen they set.
        let told: Vec<u32> = seen_set.into_iter().collect();
        self.told_flags(&told, &current);
        server.enqueue_status(ok(tag, None, "FETCH completed"));
        Ok(Outcome::Continue)
    }

    /// SEARCH and UID SEARCH: the library evaluates every key over metadata, against the
    /// client's snapshot (its sequence numbers) with the flags as they are now; BODY,
    /// TEXT and HEADER of a field the envelope does not keep are evaluated here first,
    /// by reading each message (slow, until the text-search issue), and passed in as UID
    /// sets.
    async fn search(
        &mut self,
        server: &mut Server,
        tag: Tag<'static>,
        charset: Option<Charset<'_>>,
        criteria: Vec1<ImapSearchKey<'_>>,
        uid: bool,
        return_options: Option<Vec<SearchReturnOption>>,
    ) -> Result<(), mailvault::Error> {
        // SEARCHRES (RFC 5182 2.1, RFC 9051 6.4.4.1): `RETURN (SAVE ...)` sets the
        // search result variable; "A SEARCH command with the SAVE result option that
        // caused the server to return the NO tagged response sets the value of the
        // search result variable to the empty sequence". A BAD leaves it: the command
        // was not carried out. `$` in this search is the value before it.
        let save = return_options
            .as_ref()
            .is_some_and(|o| o.contains(&SearchReturnOption::Save));
        let previous = self
            .selected
            .as_ref()
            .map(|s| s.saved.clone())
            .unwrap_or_default();
        if let Some(charset) = charset {
            let name = match &charset {
                Charset::Atom(a) => a.as_ref().to_string(),
                Charset::Quoted(q) => q.as_ref().to_string(),
            };
            if !["us-ascii", "utf-8"].contains(&name.to_ascii_lowercase().as_str()) {
                let allowed = ["US-ASCII", "UTF-8"]
                    .into_iter()
                    .filter_map(|c| Atom::try_from(c).ok().map(Charset::from))
                    .collect();
                if save {
                    self.save_result(Vec::new());
                }
                server.enqueue_status(no(
                    tag,
                    Some(Code::BadCharset { allowed }),
                    format!("charset {name} is not supported"),
                ));
                return Ok(());
            }
        }
        let criteria = ImapSearchKey::And(criteria);
        if self.rev2 && has_recent_key(&criteria) {
            server.enqueue_status(bad(Some(tag), REV2_NO_RECENT));
            return Ok(());
        }
        // RFC 9051 6.4.4: an IMAP4rev2 server answers SEARCH with ESEARCH, as if
        // `RETURN (ALL)` (the empty list) had been given.
        let return_options = match return_options {
            None if self.rev2 => Some(Vec::new()),
            options => options,
        };
        if save {
            // Empty until the search succeeds: an error below is a NO.
            self.save_result(Vec::new());
        }
        let id = self.selected_id();
        let current = self.current().await?;
        // The client's numbering, today's flags: what SEARCH compares. Nothing changed
        // since the client's snapshot (the usual case): the snapshot itself.
        let view = {
            let snapshot = &self.selected.as_ref().expect("selected").view;
            if Arc::ptr_eq(snapshot, &current) {
                current.clone()
            } else {
                Arc::new(MailboxView {
                    mailbox: current.mailbox.clone(),
                    status: current.status,
                    messages: snapshot
                        .messages
                        .iter()
                        .map(|m| now_of(&current, m.uid).unwrap_or(m).clone())
                        .collect(),
                })
            }
        };
        let mut texts = Vec::new();
        text_keys(&criteria, &mut texts);
        let matched = self.scan_texts(&view, &texts).await?;
        let mut matched = matched.into_iter();
        let key = search_key(&criteria, &view, &previous, &mut matched);
        if key.needs_envelope() {
            // Deliveries imported without an analysis have no envelope yet.
            let unanalyzed = self.account().read().await.unanalyzed(&view)?;
            for uid in unanalyzed {
                self.account().write().await.analyze(id, uid).await?;
            }
        }
        let uids = self.account().read().await.search_view(&view, &key)?;
        // Each message found, as the client numbers it, with its UID and mod-sequence.
        let found: Vec<(NonZeroU32, u32, u64)> = uids
            .iter()
            .filter_map(|&u| {
                let number = if uid {
                    NonZeroU32::new(u)
                } else {
                    view.sequence_of(u).and_then(NonZeroU32::new)
                }?;
                Some((number, u, now_of(&view, u).map_or(0, |m| m.modseq)))
            })
            .collect();
        let numbers: Vec<NonZeroU32> = found.iter().map(|&(n, _, _)| n).collect();
        // RFC 7162 3.1.5: a SEARCH with MODSEQ is a CONDSTORE-enabling command, and its
        // answer carries a mod-sequence of the messages found.
        let modseqs = has_modseq_key(&criteria).then(|| {
            self.condstore = true;
            found.iter().map(|&(_, _, m)| m).collect::<Vec<u64>>()
        });
        match return_options {
            None => {
                // RFC 7162 3.1.5: the highest mod-sequence of all the messages found.
                let modseq = modseqs
                    .as_deref()
                    .and_then(|m| m.iter().copied().max())
                    .and_then(NonZeroU64::new);
                server.enqueue_data(Data::Search(numbers, modseq));
            }
            Some(options) => {
                let others: Vec<SearchReturnOption> = options
                    .iter()
                    .copied()
                    .filter(|o| *o != SearchReturnOption::Save)
                    .collect();
                if save {
                    let kept = saved_indices(&others, &numbers);
                    let mut uids: Vec<u32> = kept.into_iter().map(|i| found[i].1).collect();
                    uids.sort_unstable();
                    uids.dedup();
                    self.save_result(uids);
                }
                // RFC 5182 2.1 (RFC 9051 6.4.4): "In absence of any other SEARCH result
                // option, the SAVE result option also suppresses any SEARCH response
                // that would have been otherwise returned".
                if !(save && others.is_empty()) {
                    let items = esearch_items(&others, &numbers, modseqs.as_deref());
                    server.enqueue_data(Data::ESearch {
                        tag: Some(tag.clone()),
                        uid,
                        items,
                    });
                }
            }
        }
        let done = if uid {
            "UID SEARCH completed"
        } else {
            "SEARCH completed"
        };
        server.enqueue_status(ok(tag, None, done));
        Ok(())
    }

    /// For each text key (in `text_keys` order), the UIDs of the messages of `view` that
    /// match it: the account's text index answers (exactly, as a scan of every body
    /// would); what it lacks is indexed first, a step at a time, so that a first search
    /// over a large mailbox holds the account's lock for one step at once.
    async fn scan_texts(
        &self,
        view: &MailboxView,
        texts: &[TextKey],
    ) -> Result<Vec<Vec<(u32, u32)>>, mailvault::Error> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let emails: Vec<EmailId> = view.messages.iter().map(|m| m.email).collect();
        while self
            .account()
            .read()
            .await
            .index_texts(&emails, INDEX_STEP)
            .await?
            > 0
        {}
        let found = self
            .account()
            .read()
            .await
            .search_texts(&emails, texts)
            .await?;
        // Positions in `emails`, which is the view's messages in order.
        Ok(found
            .iter()
            .map(|set| {
                set.positions()
                    .filter_map(|p| view.messages.get(p))
                    .map(|m| (m.uid, m.uid))
                    .collect()
            })
            .collect())
    }

    /// The envelopes of the messages nested in `message/rfc822` parts of `email`, by the
    /// index of the nested message's root part: each one's header read (one ranged GET)
    /// and parsed, as the analysis does not keep them.
    async fn nested_envelopes(
        &self,
        email: &EmailRecord,
    ) -> Result<HashMap<usize, mailvault::mail::Envelope>, mailvault::Error> {
        let mut out = HashMap::new();
        for (i, part) in email.parts.iter().enumerate() {
            // The analysis keeps the nested envelope (`MimePart::envelope`); records
            // analysed before it did are read here.
            if !is_message_rfc822(part) || part.envelope.is_some() {
                continue;
            }
            let Some(root) = children(&email.parts, i).first().copied() else {
                continue;
            };
            let header = {
                let mail = self.account().read().await;
                mail.read_part(email, root, PartSection::Header).await?
            };
            out.insert(root, Mailstore::header_envelope(&header));
        }
        Ok(out)
    }

    /// What `BINARY[section]` names (RFC 3516): the whole message for an empty section
    /// (no decoding), else the part's body with its transfer encoding removed, and the
    /// decoded size the analysis recorded for it. `None`: an encoding the server cannot
    /// remove (`UNKNOWN-CTE`). A section that names no part gives an empty string, as
    /// `BODY[section]` does.
    async fn binary_section(
        &self,
        email: &mut EmailRecord,
        id: MailboxId,
        uid: u32,
        section: &[NonZeroU32],
        whole: &[u8],
    ) -> Result<Option<(Vec<u8>, Option<u64>)>, mailvault::Error> {
        if section.is_empty() {
            return Ok(Some((whole.to_vec(), None)));
        }
        let Some(p) = self.section_part(email, id, uid, section).await? else {
            return Ok(Some((Vec::new(), None)));
        };
        let body = {
            let mail = self.account().read().await;
            mail.read_part(email, p, PartSection::Body).await?
        };
        let part = &email.parts[p];
        if part.content_type.eq_ignore_ascii_case("multipart") {
            return Ok(Some((body.to_vec(), None)));
        }
        Ok(decode_transfer(part.transfer_encoding.as_deref(), &body)
            .map(|decoded| (decoded, part.decoded_size)))
    }

    /// The part of `email` that the section numbers `section` name (RFC 9051 6.4.5), as
    /// an index into its parts, once it is analyzed (a delivery imported unanalyzed is
    /// analyzed at the first read of one of its parts).
    async fn section_part(
        &self,
        email: &mut EmailRecord,
        id: MailboxId,
        uid: u32,
        section: &[NonZeroU32],
    ) -> Result<Option<usize>, mailvault::Error> {
        if !email.analyzed {
            *email = self.account().write().await.analyze(id, uid).await?;
        }
        let path: Vec<u32> = section.iter().map(|n| n.get()).collect();
        Ok(Mailstore::imap_section(email, &path))
    }

    /// The UID of the client's message at index `i` of its snapshot.
    fn snapshot_uid(&self, i: usize) -> u32 {
        self.selected.as_ref().expect("selected").view.messages[i].uid
    }

    #[allow(clippy::too_many_arguments)]
    async fn store(
        &mut self,
        server: &mut Server,
        tag: Tag<'static>,
        set: &SequenceSet,
        (kind, response): (StoreType, StoreResponse),
        flags: &[Flag<'_>],
        uid: bool,
        unchanged_since: Option<u64>,
    ) -> Result<(), mailvault::Error> {
        if unchanged_since.is_some() {
            // A CONDSTORE-enabling command (RFC 7162 3.1).
            self.condstore = true;
        }
        if self.selected.as_ref().is_some_and(|s| s.read_only) {
            server.enqueue_status(no(tag, None, "the mailbox is read-only"));
            return Ok(());
        }
        let names: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        let flags = match Flags::from_names(names.iter().map(String::as_str)) {
            Ok(flags) => flags,
            Err(e) => {
                server.enqueue_status(bad(Some(tag), format!("invalid flag: {e}")));
                return Ok(());
            }
        };
        let change = match kind {
            StoreType::Add => FlagChange::Add(flags),
            StoreType::Remove => FlagChange::Remove(flags),
            StoreType::Replace => FlagChange::Replace(flags),
        };
        let indices = self.resolve_indices(set, uid);
        let id = self.selected_id();
        let uids: Vec<u32> = indices.iter().map(|&i| self.snapshot_uid(i)).collect();
        let stored = self
            .account()
            .write()
            .await
            .store_flags(id, &uids, change, unchanged_since)
            .await?;
        let current = self.current().await?;
        if let Some(selected) = self.selected.as_mut() {
            announce_keywords(server, selected, &current);
        }
        let silent = !matches!(response, StoreResponse::Answer);
        for &i in &indices {
            let Some(m) = now_of(&current, self.snapshot_uid(i)) else {
                continue;
            };
            // RFC 7162 3.1.3: the messages that failed UNCHANGEDSINCE are not updated;
            // with CONDSTORE on, each updated message's new MODSEQ is sent even after
            // .SILENT.
            if stored.modified.contains(&m.uid) {
                continue;
            }
            let mut items = Vec::new();
            if !silent {
                items.push(MessageDataItem::Flags(fetch_flags(&m.flags)));
            }
            if self.condstore && stored.updated.contains(&m.uid) {
                if let Some(modseq) = NonZeroU64::new(m.modseq) {
                    items.push(MessageDataItem::ModSeq(modseq));
                }
            }
            if items.is_empty() {
                continue;
            }
            // RFC 7162 3.2.4: once CONDSTORE is enabled, the FETCH responses a STORE
            // causes carry the UID (and the MODSEQ, above).
            if uid || self.condstore || self.qresync {
                if let Some(u) = NonZeroU32::new(m.uid) {
                    items.insert(0, MessageDataItem::Uid(u));
                }
            }
            if let Ok(items) = Vec1::try_from(items) {
                server.enqueue_data(Data::Fetch { seq: seq(i), items });
            }
        }
        // Told by the FETCH responses above, or knows after .SILENT (RFC 9051 6.4.6).
        let mut told = uids;
        told.retain(|u| !stored.modified.contains(u));
        told.sort_unstable();
        self.told_flags(&told, &current);
        // RFC 7162 3.1.3: MODIFIED lists the messages that failed UNCHANGEDSINCE (UIDs
        // for UID STORE, sequence numbers otherwise).
        let modified: Vec<u32> = if uid {
            stored.modified.clone()
        } else {
            indices
                .iter()
                .filter(|&&i| stored.modified.contains(&self.snapshot_uid(i)))
                .map(|&i| i as u32 + 1)
                .collect()
        };
        let code = uid_sequence_set(&modified).map(Code::Modified);
        server.enqueue_status(ok(tag, code, "STORE completed"));
        Ok(())
    }

    /// Expunges (all `\Deleted` messages, or those among `uids`); the caller announces
    /// them (`sync`).
    async fn expunge(&mut self, uids: Option<Vec<u32>>) -> Result<(), mailvault::Error> {
        let selected = self.selected.as_ref().expect("selected");
        if selected.read_only {
            return Ok(());
        }
        let id = selected.id;
        self.account()
            .write()
            .await
            .expunge(id, uids.as_deref())
            .await?;
        Ok(())
    }
}

/// The whole messages one FETCH reads ahead of the response it writes: at most this many
/// ([`ReadAhead`]).
const FETCH_AHEAD: usize = 8;
/// ... and at most this many bytes of them (the first one whatever its size).
const FETCH_AHEAD_BYTES: u64 = 16 * 1024 * 1024;

/// One message of a FETCH as [`ReadAhead`] hands it out.
enum Read {
    /// Its record, and its whole body when the FETCH needs it.
    Message(Box<EmailRecord>, Option<Bytes>),
    /// Expunged since the client's snapshot: nothing to send of it.
    Expunged,
    /// The task reading it was cancelled: the runtime is shutting down.
    Cancelled,
}

/// Message `uid` of `mailbox`: its record (with its details if `with_details`), and its
/// body if `with_body`.
async fn read_message(
    account: SharedAccount,
    mailbox: MailboxId,
    uid: u32,
    with_body: bool,
    with_details: bool,
) -> Result<Read, mailvault::Error> {
    let mail = account.read().await;
    let email = match mail.email(mailbox, uid) {
        Ok(email) => email,
        Err(mailvault::Error::NoSuchMessage { .. }) => return Ok(Read::Expunged),
        Err(e) => return Err(e),
    };
    let email = match with_details {
        true => mail.with_details(email).await?,
        false => email,
    };
    let body = match with_body {
        true => Some(mail.read(&email).await?),
        false => None,
    };
    Ok(Read::Message(Box::new(email), body))
}

/// The messages of one FETCH, in the order asked, each with its summary as it is now (a
/// message expunged by someone else is still numbered for the client until the EXPUNGE
/// is announced; there is nothing left to send of it: skipped).
/// Whole bodies are read ahead, a few at once ([`FETCH_AHEAD`], [`FETCH_AHEAD_BYTES`]):
/// the reads overlap one another (the store's round trips, the decryption on the
/// runtime's threads) and the writing of the responses before them, and a message is
/// read only once the response of the one [`FETCH_AHEAD`] before it is out
/// ([`Transport::send`]), so that one FETCH holds a few messages, not the command's.
///
/// Each read is a task of its own, which takes the account's read access while it reads:
/// it finishes whatever the connection does meanwhile (a read access held by a future
/// no one polls would block every writer of the account, and the connection itself when
/// it analyzes a message). Without bodies, records are read as they are asked for.
/// Dropping it aborts the reads still running.
struct ReadAhead {
    account: SharedAccount,
    mailbox: MailboxId,
    with_body: bool,
    /// Whether the records are read with their details ([`Mailstore::with_details`]).
    with_details: bool,
    /// The messages not started yet, by index in `snapshot`.
    rest: std::vec::IntoIter<usize>,
    /// The client's snapshot of the mailbox (its sequence numbers).
    snapshot: Arc<MailboxView>,
    /// The mailbox as it is now.
    current: Arc<MailboxView>,
    /// The reads started, in order.
    running: std::collections::VecDeque<Reading>,
    /// The sizes of the messages of `running`, summed.
    running_bytes: u64,
}

/// A read [`ReadAhead`] started.
struct Reading {
    /// The message's index in the client's snapshot.
    index: usize,
    summary: MessageSummary,
    task: tokio::task::JoinHandle<Result<Read, mailvault::Error>>,
}

impl ReadAhead {
    /// The next message of `rest` still in the mailbox: its index, its summary now.
    fn next_wanted(&mut self) -> Option<(usize, MessageSummary)> {
        self.rest.find_map(|i| {
            let uid = self.snapshot.messages.get(i)?.uid;
            Some((i, now_of(&self.current, uid)?.clone()))
        })
    }

    /// The next message: its index in the client's snapshot, its summary, and what was
    /// read of it. A panic of a read is resumed here.
    async fn next(&mut self) -> Option<(usize, MessageSummary, Result<Read, mailvault::Error>)> {
        if !self.with_body {
            let (i, summary) = self.next_wanted()?;
            let read = read_message(
                self.account.clone(),
                self.mailbox,
                summary.uid,
                false,
                self.with_details,
            )
            .await;
            return Some((i, summary, read));
        }
        while self.running.len() < FETCH_AHEAD
            && (self.running.is_empty() || self.running_bytes < FETCH_AHEAD_BYTES)
        {
            let Some((index, summary)) = self.next_wanted() else {
                break;
            };
            let read = read_message(
                self.account.clone(),
                self.mailbox,
                summary.uid,
                true,
                self.with_details,
            );
            self.running_bytes += summary.size;
            self.running.push_back(Reading {
                index,
                summary,
                task: tokio::spawn(read),
            });
        }
        let read = match (&mut self.running.front_mut()?.task).await {
            Ok(read) => read,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => Ok(Read::Cancelled),
            },
        };
        let Reading { index, summary, .. } = self.running.pop_front()?;
        self.running_bytes -= summary.size;
        Some((index, summary, read))
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        for reading in &self.running {
            reading.task.abort();
        }
    }
}

/// The message `uid` as it is now in `current`, if it is still there.
fn now_of(current: &MailboxView, uid: u32) -> Option<&MessageSummary> {
    current
        .messages
        .binary_search_by_key(&uid, |m| m.uid)
        .ok()
        .map(|i| &current.messages[i])
}

/// Announces the keywords of `current` the client was not told of yet (FLAGS, and
/// PERMANENTFLAGS when it may change flags), as Dovecot does: RFC 9051 7.3.5 "The update
/// from the FLAGS response MUST be recorded by the client".
fn announce_keywords(server: &mut Server, selected: &mut Selected, current: &MailboxView) {
    let now = mailbox_flags(current);
    let new: Vec<&Flag<'static>> = now.iter().filter(|f| !selected.flags.contains(f)).collect();
    if new.is_empty() {
        return;
    }
    let mut flags = selected.flags.clone();
    flags.extend(new.into_iter().cloned());
    server.enqueue_data(Data::Flags(flags.clone()));
    if !selected.read_only {
        server.enqueue_status(untagged_ok(
            Code::PermanentFlags(permanent_flags(&flags, false)),
            "flags",
        ));
    }
    selected.flags = flags;
}

/// Announces what changed from the client's snapshot `old` to `new`: EXPUNGE for the
/// messages gone, highest sequence number first (each number is then valid when sent),
/// EXISTS when the count differs from what remains, FETCH FLAGS for the messages whose
/// flags changed (at their sequence numbers in `new`).
fn announce_changes(
    server: &mut Server,
    old: &MailboxView,
    new: &MailboxView,
    (condstore, qresync): (bool, bool),
) {
    if qresync {
        // RFC 7162 3.2.10: VANISHED (UIDs) instead of EXPUNGE once QRESYNC is enabled.
        let gone: Vec<u32> = old
            .messages
            .iter()
            .filter(|m| now_of(new, m.uid).is_none())
            .map(|m| m.uid)
            .collect();
        if let Some(set) = uid_sequence_set(&gone) {
            server.enqueue_data(Data::Vanished {
                earlier: false,
                known_uids: set,
            });
        }
    } else {
        for (i, m) in old.messages.iter().enumerate().rev() {
            if now_of(new, m.uid).is_none() {
                server.enqueue_data(Data::Expunge(seq(i)));
            }
        }
    }
    let remaining = old
        .messages
        .iter()
        .filter(|m| now_of(new, m.uid).is_some())
        .count();
    if new.messages.len() != remaining {
        server.enqueue_data(Data::Exists(new.messages.len() as u32));
    }
    for (i, m) in new.messages.iter().enumerate() {
        if let Ok(j) = old.messages.binary_search_by_key(&m.uid, |o| o.uid) {
            if old.messages[j].flags != m.flags {
                let mut items = vec![MessageDataItem::Flags(fetch_flags(&m.flags))];
                // RFC 7162 3.2.4: once CONDSTORE is enabled, every FETCH response of a
                // change (by this session or another) carries both UID and MODSEQ.
                if condstore {
                    if let Some(modseq) = NonZeroU64::new(m.modseq) {
                        items.push(MessageDataItem::ModSeq(modseq));
                    }
                }
                if condstore || qresync {
                    if let Some(u) = NonZeroU32::new(m.uid) {
                        items.insert(0, MessageDataItem::Uid(u));
                    }
                }
                if let Ok(items) = Vec1::try_from(items) {
                    server.enqueue_data(Data::Fetch { seq: seq(i), items });
                }
            }
        }
    }
}

/// Indices into `messages` (in UID order) of the messages `set` names: by UID, or by
/// message sequence number (`n` is index `n - 1`).
fn sequence_indices(messages: &[MessageSummary], set: &SequenceSet, uid: bool) -> Vec<usize> {
    let mut out = BTreeSet::new();
    if messages.is_empty() {
        return Vec::new();
    }
    let star = if uid {
        messages[messages.len() - 1].uid
    } else {
        messages.len() as u32
    };
    let value = |s: &SeqOrUid| match s {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => star,
    };
    for sequence in set.0.as_ref() {
        let (a, b) = match sequence {
            Sequence::Single(s) => (value(s), value(s)),
            Sequence::Range(a, b) => (value(a), value(b)),
            // Resolved by `Conn::resolve_indices`, which has the saved result.
            Sequence::LastCommand => continue,
        };
        let (lo, hi) = (a.min(b), a.max(b));
        if uid {
            let start = messages.partition_point(|m| m.uid < lo);
            let end = messages.partition_point(|m| m.uid <= hi);
            out.extend(start..end);
        } else {
            for n in lo..=hi.min(messages.len() as u32) {
                out.insert(n as usize - 1);
            }
        }
    }
    out.into_iter().collect()
}

// ---------------------------------------------------------------- ENVELOPE, BODYSTRUCTURE
//
// One function per item, from the analysis stored at append or import (`EmailRecord`):
// `imap_envelope` (ENVELOPE), `imap_address` (its addresses), `body_structure` (BODY and
// BODYSTRUCTURE). ENVELOPE gives the fields as written where the analysis keeps them
// (date, subject, ids, groups); display names are given decoded (`Address` keeps no
// raw name). BODYSTRUCTURE gives each part's Content-Description, Content-MD5,
// disposition parameters, Content-Language and Content-Location as the analysis kept
// them, and a message/rfc822 part's envelope from the analysis (`MimePart::envelope`).

fn nstr(s: Option<&str>) -> NString<'static> {
    NString(s.and_then(|s| IString::try_from(s.to_string()).ok()))
}

fn istr(s: &str) -> IString<'static> {
    IString::try_from(s.to_string())
        .unwrap_or_else(|_| IString::Literal(Literal::unvalidated(s.as_bytes().to_vec())))
}

/// ENVELOPE (RFC 9051 7.5.2) from the stored envelope: date, subject, Message-ID and
/// In-Reply-To as written (records of version 1, which lack them, give the parsed values:
/// the date in its zone, the ids in angle brackets), address groups as RFC 9051 lists
/// them (a start marker with the group's name, its members, an end marker).
fn imap_envelope(e: &mailvault::mail::Envelope) -> ImapEnvelope<'static> {
    use mailvault::mail::AddressField;
    let date = e.date_raw.clone().or_else(|| {
        let secs = e.date?;
        let zone = chrono::FixedOffset::east_opt(i32::from(e.date_zone.unwrap_or(0)) * 60)?;
        let date = chrono::DateTime::from_timestamp(secs, 0)?.with_timezone(&zone);
        Some(date.format("%a, %d %b %Y %H:%M:%S %z").to_string())
    });
    let addresses = |field: AddressField| -> Vec<ImapAddress<'static>> {
        e.address_items(field)
            .iter()
            .map(imap_address_item)
            .collect()
    };
    let from = addresses(AddressField::From);
    // RFC 9051: Sender and Reply-To default to From.
    let or_from = |field: AddressField| {
        let list = addresses(field);
        if list.is_empty() {
            from.clone()
        } else {
            list
        }
    };
    let ids = |list: &[String]| {
        (!list.is_empty()).then(|| {
            list.iter()
                .map(|id| format!("<{id}>"))
                .collect::<Vec<_>>()
                .join(" ")
        })
    };
    let in_reply_to = e.in_reply_to_raw.clone().or_else(|| ids(&e.in_reply_to));
    let message_id = e
        .message_id_raw
        .clone()
        .or_else(|| e.message_id.as_ref().map(|id| format!("<{id}>")));
    ImapEnvelope {
        date: nstr(date.as_deref()),
        subject: nstr(e.subject_raw.as_deref().or(e.subject.as_deref())),
        sender: or_from(AddressField::Sender),
        reply_to: or_from(AddressField::ReplyTo),
        from,
        to: addresses(AddressField::To),
        cc: addresses(AddressField::Cc),
        bcc: addresses(AddressField::Bcc),
        in_reply_to: nstr(in_reply_to.as_deref()),
        message_id: nstr(message_id.as_deref()),
    }
}

/// One item of an ENVELOPE address list: a mailbox, or a group's start
/// (`(NIL NIL "name" NIL)`) or end (`(NIL NIL NIL NIL)`), RFC 9051 7.5.2.
fn imap_address_item(item: &mailvault::mail::AddressItem<'_>) -> ImapAddress<'static> {
    use mailvault::mail::AddressItem;
    match item {
        AddressItem::Mailbox(a) => imap_address(a),
        AddressItem::GroupStart(name) => ImapAddress {
            name: NString(None),
            adl: NString(None),
            mailbox: nstr(Some(name)),
            host: NString(None),
        },
        AddressItem::GroupEnd => ImapAddress {
            name: NString(None),
            adl: NString(None),
            mailbox: NString(None),
            host: NString(None),
        },
    }
}

/// One address of an ENVELOPE: the mailbox and host parts of `local@domain`; an address
/// written without a domain gets the host `MISSING_DOMAIN`, as Dovecot gives it (RFC 9051
/// has NIL host only for group markers).
fn imap_address(a: &mailvault::mail::Address) -> ImapAddress<'static> {
    let (mailbox, host) = match a.email.rsplit_once('@') {
        Some((local, domain)) => (local, domain),
        None => (a.email.as_str(), "MISSING_DOMAIN"),
    };
    ImapAddress {
        name: nstr(a.name.as_deref()),
        adl: NString(None),
        mailbox: nstr(Some(mailbox)),
        host: nstr(Some(host)),
    }
}

fn is_message_rfc822(part: &MimePart) -> bool {
    part.content_type.eq_ignore_ascii_case("message") && part.subtype.eq_ignore_ascii_case("rfc822")
}

/// Indices of the parts whose parent is `of`, in order.
fn children(parts: &[MimePart], of: usize) -> Vec<usize> {
    (0..parts.len())
        .filter(|&i| parts[i].parent == Some(of as u32))
        .collect()
}

/// BODYSTRUCTURE (`extended`) or BODY of part `index` of `email` (RFC 9051 7.5.2);
/// `nested` holds the envelopes of messages nested in `message/rfc822` parts, by the
/// index of their root part.
fn body_structure(
    email: &EmailRecord,
    index: usize,
    nested: &HashMap<usize, mailvault::mail::Envelope>,
    extended: bool,
) -> BodyStructure<'static> {
    let params = |list: &[(String, String)]| -> Vec<(IString<'static>, IString<'static>)> {
        list.iter()
            .map(|(k, v)| (istr(&k.to_ascii_uppercase()), istr(v)))
            .collect()
    };
    let Some(part) = email.parts.get(index) else {
        // Not analyzed (too large to parse): one text part, the whole message.
        return plain_text(email.size, 0, extended);
    };
    // RFC 9051 7.5.2: disposition (with its parameters), then language, then location;
    // each present when a later one is.
    let disposition = || Disposition {
        disposition: part.disposition.as_ref().map(|d| {
            let list = if !part.disposition_params.is_empty() {
                params(&part.disposition_params)
            } else if part.decoded_size.is_none()
                && !part.content_type.eq_ignore_ascii_case("multipart")
            {
                // Analysed by a version that kept one file name only (the disposition's
                // `filename`, else the type's `name`): given as the disposition's.
                part.filename
                    .iter()
                    .map(|name| (istr("FILENAME"), istr(name)))
                    .collect()
            } else {
                Vec::new()
            };
            (istr(&d.to_ascii_uppercase()), list)
        }),
        tail: Some(Language {
            language: part.languages.iter().map(|l| istr(l)).collect(),
            tail: Some(Location {
                location: nstr(part.location.as_deref()),
                extensions: Vec::new(),
            }),
        }),
    };
    let kids = children(&email.parts, index);
    if part.content_type.eq_ignore_ascii_case("multipart") {
        let bodies: Vec<BodyStructure<'static>> = kids
            .iter()
            .map(|&k| body_structure(email, k, nested, extended))
            .collect();
        if let Ok(bodies) = Vec1::try_from(bodies) {
            return BodyStructure::Multi {
                bodies,
                subtype: istr(&part.subtype.to_ascii_uppercase()),
                extension_data: extended.then(|| MultiPartExtensionData {
                    parameter_list: params(&part.params),
                    tail: Some(disposition()),
                }),
            };
        }
    }
    let mut parameter_list = params(&part.params);
    let is_text = part.content_type.eq_ignore_ascii_case("text");
    if is_text
        && !part
            .params
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("charset"))
    {
        // RFC 2045 5.2: the default, after the part's own parameters (as Dovecot gives
        // it).
        parameter_list.push((istr("CHARSET"), istr("US-ASCII")));
    }
    let size = part.end_offset - part.body_offset;
    let basic = BasicFields {
        parameter_list,
        id: nstr(
            part.content_id
                .as_ref()
                .map(|id| format!("<{id}>"))
                .as_deref(),
        ),
        description: nstr(part.description.as_deref()),
        content_transfer_encoding: istr(
            &part
                .transfer_encoding
                .as_deref()
                .unwrap_or("7bit")
                .to_ascii_uppercase(),
        ),
        size: u32::try_from(size).unwrap_or(u32::MAX),
    };
    let specific = match kids.first() {
        Some(&root) if is_message_rfc822(part) => SpecificFields::Message {
            envelope: Box::new(imap_envelope(
                part.envelope
                    .as_deref()
                    .or_else(|| nested.get(&root))
                    .unwrap_or(&mailvault::mail::Envelope::default()),
            )),
            body_structure: Box::new(body_structure(email, root, nested, extended)),
            number_of_lines: part.lines,
        },
        // A message/rfc822 part in a transfer encoding (which RFC 2046 forbids) is not
        // parsed in place: a message without header fields, its body one text part.
        None if is_message_rfc822(part) => SpecificFields::Message {
            envelope: Box::new(imap_envelope(&mailvault::mail::Envelope::default())),
            body_structure: Box::new(plain_text(size, part.lines, extended)),
            number_of_lines: part.lines,
        },
        _ if is_text => SpecificFields::Text {
            subtype: istr(&part.subtype.to_ascii_uppercase()),
            number_of_lines: part.lines,
        },
        _ => SpecificFields::Basic {
            r#type: istr(&part.content_type.to_ascii_uppercase()),
            subtype: istr(&part.subtype.to_ascii_uppercase()),
        },
    };
    BodyStructure::Single {
        body: Body { basic, specific },
        extension_data: extended.then(|| SinglePartExtensionData {
            md5: nstr(part.md5.as_deref()),
            tail: Some(disposition()),
        }),
    }
}

/// The structure of a body of `size` bytes and `lines` lines read as one US-ASCII text
/// part (RFC 2045's defaults).
fn plain_text(size: u64, lines: u32, extended: bool) -> BodyStructure<'static> {
    BodyStructure::Single {
        body: Body {
            basic: BasicFields {
                parameter_list: vec![(istr("CHARSET"), istr("US-ASCII"))],
                id: NString(None),
                description: NString(None),
                content_transfer_encoding: istr("7BIT"),
                size: u32::try_from(size).unwrap_or(u32::MAX),
            },
            specific: SpecificFields::Text {
                subtype: istr("PLAIN"),
                number_of_lines: lines,
            },
        },
        extension_data: extended.then_some(SinglePartExtensionData {
            md5: NString(None),
            tail: Some(Disposition {
                disposition: None,
                tail: None,
            }),
        }),
    }
}

fn astring(s: &AString<'_>) -> String {
    String::from_utf8_lossy(s.as_ref()).into_owned()
}

/// The envelope field the library's search matches `HEADER name` against, for the fields
/// whose envelope text is the header's (addresses, subject). Message-ID, In-Reply-To and
/// References are kept without their angle brackets: `HEADER Message-ID "<"` must match
/// the header as written (RFC 9051 6.4.4), so those are scanned like any other field.
fn envelope_field(name: &str) -> Option<HeaderField> {
    HeaderField::from_name(name).filter(|f| {
        !matches!(
            f,
            HeaderField::MessageId | HeaderField::InReplyTo | HeaderField::References
        )
    })
}

/// The text keys of `key`, depth first (the order `search_key` consumes them in).
fn text_keys(key: &ImapSearchKey<'_>, out: &mut Vec<TextKey>) {
    match key {
        ImapSearchKey::Body(s) => out.push(TextKey::Body(astring(s))),
        ImapSearchKey::Text(s) => out.push(TextKey::Text(astring(s))),
        ImapSearchKey::Header(field, s) if envelope_field(&astring(field)).is_none() => {
            out.push(TextKey::Header(astring(field), astring(s)))
        }
        ImapSearchKey::And(keys) => keys.as_ref().iter().for_each(|k| text_keys(k, out)),
        ImapSearchKey::Not(k) => text_keys(k, out),
        ImapSearchKey::Or(a, b) => {
            text_keys(a, out);
            text_keys(b, out);
        }
        _ => {}
    }
}

/// The library's key for an IMAP SEARCH key: sequence numbers and `*` resolved against
/// `view`, text keys replaced by the UID sets `texts` yields (in `text_keys` order), `$`
/// (as a sequence set or after UID) by the UIDs `saved` (RFC 5182 2.1).
fn search_key(
    key: &ImapSearchKey<'_>,
    view: &MailboxView,
    saved: &[u32],
    texts: &mut impl Iterator<Item = Vec<(u32, u32)>>,
) -> SearchKey {
    use ImapSearchKey as K;
    let flag = |name: &str| SearchKey::Flag(name.to_string());
    let no_flag = |name: &str| SearchKey::NoFlag(name.to_string());
    let day = |d: &imap_next::imap_types::datetime::NaiveDate| {
        let d = d.as_ref();
        mailvault::mail::SearchDay::from_ymd(d.year(), d.month(), d.day())
            .unwrap_or(mailvault::mail::SearchDay::of_timestamp(0))
    };
    let header = |field: HeaderField, s: &AString<'_>| SearchKey::Header(field, astring(s));
    let last_uid = view.messages.last().map_or(0, |m| m.uid);
    let last_seq = view.messages.len() as u32;
    match key {
        K::And(keys) => SearchKey::And(
            keys.as_ref()
                .iter()
                .map(|k| search_key(k, view, saved, texts))
                .collect(),
        ),
        K::SequenceSet(set) | K::Uid(set) if is_last_command(set) => SearchKey::Uid(runs(saved)),
        K::SequenceSet(set) => SearchKey::Sequence(ranges(set, last_seq)),
        K::Uid(set) => SearchKey::Uid(ranges(set, last_uid)),
        K::All => SearchKey::All,
        K::Answered => flag(Flags::ANSWERED),
        K::Deleted => flag(Flags::DELETED),
        K::Draft => flag(Flags::DRAFT),
        K::Flagged => flag(Flags::FLAGGED),
        K::Seen => flag(Flags::SEEN),
        K::Unanswered => no_flag(Flags::ANSWERED),
        K::Undeleted => no_flag(Flags::DELETED),
        K::Undraft => no_flag(Flags::DRAFT),
        K::Unflagged => no_flag(Flags::FLAGGED),
        K::Unseen => no_flag(Flags::SEEN),
        K::Keyword(k) => flag(k.as_ref()),
        K::Unkeyword(k) => no_flag(k.as_ref()),
        K::New => SearchKey::New,
        K::Old => SearchKey::Old,
        K::Recent => SearchKey::Recent,
        K::Before(d) => SearchKey::Before(day(d)),
        K::On(d) => SearchKey::On(day(d)),
        K::Since(d) => SearchKey::Since(day(d)),
        K::SentBefore(d) => SearchKey::SentBefore(day(d)),
        K::SentOn(d) => SearchKey::SentOn(day(d)),
        K::SentSince(d) => SearchKey::SentSince(day(d)),
        K::Larger(n) => SearchKey::Larger(u64::from(*n)),
        K::Smaller(n) => SearchKey::Smaller(u64::from(*n)),
        K::From(s) => header(HeaderField::From, s),
        K::To(s) => header(HeaderField::To, s),
        K::Cc(s) => header(HeaderField::Cc, s),
        K::Bcc(s) => header(HeaderField::Bcc, s),
        K::Subject(s) => header(HeaderField::Subject, s),
        K::Header(field, s) => match envelope_field(&astring(field)) {
            Some(field) => header(field, s),
            None => SearchKey::Uid(texts.next().unwrap_or_default()),
        },
        K::Body(_) | K::Text(_) => SearchKey::Uid(texts.next().unwrap_or_default()),
        K::Not(k) => SearchKey::Not(Box::new(search_key(k, view, saved, texts))),
        K::ModSequence { modseq, .. } => SearchKey::ModSeq(*modseq),
        K::Or(a, b) => {
            let a = search_key(a, view, saved, texts);
            let b = search_key(b, view, saved, texts);
            SearchKey::Or(Box::new(a), Box::new(b))
        }
    }
}

/// Whether `key` holds a MODSEQ key.
fn has_modseq_key(key: &ImapSearchKey<'_>) -> bool {
    has_key(key, &|k| matches!(k, ImapSearchKey::ModSequence { .. }))
}

/// Whether `key` has a key about `\Recent` (NEW, OLD, RECENT: not in RFC 9051's
/// `search-key`).
fn has_recent_key(key: &ImapSearchKey<'_>) -> bool {
    has_key(key, &|k| {
        matches!(
            k,
            ImapSearchKey::New | ImapSearchKey::Old | ImapSearchKey::Recent
        )
    })
}

/// Whether `key` or a key in it (AND, OR, NOT) is one `wanted` says.
fn has_key(key: &ImapSearchKey<'_>, wanted: &dyn Fn(&ImapSearchKey<'_>) -> bool) -> bool {
    wanted(key)
        || match key {
            ImapSearchKey::And(keys) => keys.as_ref().iter().any(|k| has_key(k, wanted)),
            ImapSearchKey::Not(k) => has_key(k, wanted),
            ImapSearchKey::Or(a, b) => has_key(a, wanted) || has_key(b, wanted),
            _ => false,
        }
}

/// The inclusive ranges of a sequence set, `*` being `last`.
fn ranges(set: &SequenceSet, last: u32) -> Vec<(u32, u32)> {
    let value = |s: &SeqOrUid| match s {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => last,
    };
    set.0
        .as_ref()
        .iter()
        .filter_map(|sequence| match sequence {
            Sequence::Single(s) => Some((value(s), value(s))),
            Sequence::Range(a, b) => Some((value(a), value(b))),
            // No number: `Conn::uid_ranges` and `search_key` give the saved result.
            Sequence::LastCommand => None,
        })
        .collect()
}

/// `numbers` (ascending) as inclusive ranges of consecutive numbers.
fn runs(numbers: &[u32]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &n in numbers {
        match out.last_mut() {
            Some((_, b)) if n == b.saturating_add(1) => *b = n,
            _ => out.push((n, n)),
        }
    }
    out
}

/// Whether `set` is `$` (RFC 5182 `seq-last-command`), which the parser gives only as
/// a whole set.
fn is_last_command(set: &SequenceSet) -> bool {
    set.0
        .as_ref()
        .iter()
        .any(|s| matches!(s, Sequence::LastCommand))
}

/// Whether `n` is in one of the inclusive `ranges` (either bound first).
fn in_ranges(ranges: &[(u32, u32)], n: u32) -> bool {
    ranges.iter().any(|&(a, b)| a.min(b) <= n && n <= a.max(b))
}

/// `numbers` (ascending) as a sequence set of ranges, `None` when empty.
fn uid_sequence_set(numbers: &[u32]) -> Option<SequenceSet> {
    let mut out: Vec<Sequence> = Vec::new();
    let mut run: Option<(u32, u32)> = None;
    let value = |n: u32| NonZeroU32::new(n).map(SeqOrUid::Value);
    let flush = |run: (u32, u32), out: &mut Vec<Sequence>| {
        let (Some(a), Some(b)) = (value(run.0), value(run.1)) else {
            return;
        };
        out.push(if run.0 == run.1 {
            Sequence::Single(a)
        } else {
            Sequence::Range(a, b)
        });
    };
    for &n in numbers {
        run = match run {
            Some((a, b)) if n == b.saturating_add(1) => Some((a, n)),
            Some(r) => {
                flush(r, &mut out);
                Some((n, n))
            }
            None => Some((n, n)),
        };
    }
    if let Some(r) = run {
        flush(r, &mut out);
    }
    Vec1::try_from(out).ok().map(SequenceSet)
}

/// The COPYUID code of a copy or move (RFC 4315), when something was copied.
fn copy_uid(copied: &mailvault::mail::Copied) -> Option<Code<'static>> {
    let uid_validity = NonZeroU32::new(copied.uid_validity)?;
    let set = |uids: Vec<u32>| -> Option<UidSet> {
        let elements: Vec<UidElement> = uids
            .into_iter()
            .filter_map(NonZeroU32::new)
            .map(UidElement::Single)
            .collect();
        Vec1::try_from(elements).ok().map(UidSet)
    };
    Some(Code::CopyUid {
        uid_validity,
        source: set(copied.uids.iter().map(|(from, _)| *from).collect())?,
        destination: set(copied.uids.iter().map(|(_, to)| *to).collect())?,
    })
}

/// The tag a discarded command line starts with, if it is a valid one.
/// Whether `a` and `b` are equal, in time that depends on their lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

fn tag_of(line: &[u8]) -> Option<Tag<'static>> {
    let end = line
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n')?;
    Tag::try_from(line[..end].to_vec()).ok()
}

/// Whether the first line of `command` ends with a literal announcement (`{n}`, `{n+}`,
/// `~{n}`): what makes a command longer than a line.
fn announces_literal(command: &[u8]) -> bool {
    let line = match command.iter().position(|&b| b == b'\n') {
        Some(end) => &command[..end],
        None => command,
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(inner) = line.strip_suffix(b"}") else {
        return false;
    };
    let inner = inner.strip_suffix(b"+").unwrap_or(inner);
    let digits = inner
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count();
    digits > 0 && inner[..inner.len() - digits].ends_with(b"{")
}

/// What the server advertises: exactly what it implements. `max_message_size`: the
/// largest APPEND accepted, in every mailbox (RFC 7889 `APPENDLIMIT=`).
fn capabilities(max_message_size: u32) -> Vec1<Capability<'static>> {
    let mut caps = vec![
        Capability::Imap4Rev1,
        // RFC 9051 (the session switches on ENABLE IMAP4rev2).
        Capability::from(Atom::unvalidated("IMAP4rev2")),
        // RFC 5182 (part of IMAP4rev2, RFC 9051 6.4.4.1): SEARCH RETURN (SAVE) and `$`.
        Capability::from(Atom::unvalidated("SEARCHRES")),
        Capability::Idle,
        Capability::LiteralPlus,
        Capability::UidPlus,
        Capability::Move,
        Capability::Binary,
        Capability::Unselect,
        Capability::Namespace,
        Capability::Id,
        Capability::Enable,
        Capability::CondStore,
        Capability::QResync,
        // RFC 8438 (STATUS SIZE, part of RFC 9051).
        Capability::StatusSize,
    ];
    // RFC 6154: LIST shows each mailbox's special use. RFC 4731 (SEARCH RETURN),
    // RFC 8474 (EMAILID, THREADID, MAILBOXID), RFC 5258 and RFC 5819 (extended LIST,
    // with STATUS): through the patched imap-codec (vendor/PATCHES.md).
    // RFC 9208: the account's storage quota (GETQUOTA, GETQUOTAROOT, STATUS
    // DELETED-STORAGE); SETQUOTA is refused (no QUOTASET).
    caps.push(Capability::Quota);
    caps.push(Capability::QuotaRes(Resource::Storage));
    for name in [
        "SPECIAL-USE",
        "ESEARCH",
        "OBJECTID",
        "LIST-EXTENDED",
        "LIST-STATUS",
    ] {
        if let Ok(atom) = Atom::try_from(name) {
            caps.push(Capability::from(atom));
        }
    }
    // RFC 7889: one limit for every mailbox, the literal limit imap-next enforces.
    if let Ok(atom) = Atom::try_from(format!("APPENDLIMIT={max_message_size}")) {
        caps.push(Capability::from(atom));
    }
    Vec1::try_from(caps).unwrap_or_else(|_| Vec1::from(Capability::Imap4Rev1))
}

/// `\HasChildren` or `\HasNoChildren` (RFC 9051 7.3.1, RFC 3348): whether a mailbox
/// of `mailboxes` is below the one named `name`.
fn children_attribute(
    name: &str,
    mailboxes: &[mailvault::mail::Mailbox],
) -> FlagNameAttribute<'static> {
    let below = format!("{name}/");
    if mailboxes.iter().any(|o| o.name.starts_with(&below)) {
        FlagNameAttribute::from(Atom::unvalidated("HasChildren"))
    } else {
        FlagNameAttribute::from(Atom::unvalidated("HasNoChildren"))
    }
}

/// The levels of hierarchy above the mailboxes `names` that are no mailbox themselves
/// (`a` and `a/b` of a lone `a/b/c`), sorted: the library creates no parents and a
/// deleted parent leaves its children.
fn hierarchy_holes(names: &[&str]) -> Vec<String> {
    let existing: BTreeSet<&str> = names.iter().copied().collect();
    let mut holes = BTreeSet::new();
    for name in names {
        for (at, _) in name.match_indices('/') {
            let parent = &name[..at];
            if !parent.is_empty() && !existing.contains(parent) {
                holes.insert(parent.to_owned());
            }
        }
    }
    holes.into_iter().collect()
}

/// The LIST attributes of a mailbox's special use (RFC 6154: `\Sent`...).
fn special_use_attributes(
    special_use: Option<mailvault::mail::SpecialUse>,
) -> Vec<FlagNameAttribute<'static>> {
    special_use
        .and_then(|u| {
            let name = u.imap_attribute().trim_start_matches('\\');
            Atom::try_from(name.to_string()).ok()
        })
        .map(|atom| vec![FlagNameAttribute::from(atom)])
        .unwrap_or_default()
}

/// The `* ESEARCH` return data (RFC 4731 3.1) of the message numbers or UIDs `numbers`
/// (ascending) for the return options `options` (none: `ALL`): `MIN`, `MAX` and `ALL`
/// only when something matched, `COUNT` always; `MODSEQ` (RFC 4731 3.2, RFC 7162
/// 3.1.5) when the search had a MODSEQ key, `modseqs` then giving the mod-sequence of
/// each of `numbers`.
fn esearch_items(
    options: &[SearchReturnOption],
    numbers: &[NonZeroU32],
    modseqs: Option<&[u64]>,
) -> Vec<SearchReturnData> {
    let all = [SearchReturnOption::All];
    let options = if options.is_empty() {
        &all[..]
    } else {
        options
    };
    let mut items = Vec::new();
    for option in [
        SearchReturnOption::Min,
        SearchReturnOption::Max,
        SearchReturnOption::All,
        SearchReturnOption::Count,
    ] {
        if !options.contains(&option) {
            continue;
        }
        match option {
            SearchReturnOption::Min => {
                if let Some(n) = numbers.iter().min() {
                    items.push(SearchReturnData::Min(*n));
                }
            }
            SearchReturnOption::Max => {
                if let Some(n) = numbers.iter().max() {
                    items.push(SearchReturnData::Max(*n));
                }
            }
            SearchReturnOption::All => {
                let mut plain: Vec<u32> = numbers.iter().map(|n| n.get()).collect();
                plain.sort_unstable();
                if let Some(set) = uid_sequence_set(&plain) {
                    items.push(SearchReturnData::All(set));
                }
            }
            SearchReturnOption::Count => items.push(SearchReturnData::Count(
                u32::try_from(numbers.len()).unwrap_or(u32::MAX),
            )),
            // Not in the list looped over: `SAVE` returns nothing (`Conn::search`).
            SearchReturnOption::Save => {}
        }
    }
    if let Some(modseqs) = modseqs {
        if let Some(modseq) = returned_modseq(options, numbers, modseqs) {
            items.push(SearchReturnData::ModSeq(modseq));
        }
    }
    items
}

/// Which of the messages found (indices into `numbers`) `SAVE` saves, `options` being
/// the other return options (RFC 5182 2.4): with `MIN` and/or `MAX` but neither `ALL`
/// nor `COUNT`, the messages they return; otherwise (`SAVE` alone too) all.
fn saved_indices(options: &[SearchReturnOption], numbers: &[NonZeroU32]) -> Vec<usize> {
    let has = |o: SearchReturnOption| options.contains(&o);
    if has(SearchReturnOption::All)
        || has(SearchReturnOption::Count)
        || !(has(SearchReturnOption::Min) || has(SearchReturnOption::Max))
    {
        return (0..numbers.len()).collect();
    }
    let index_of = |n: Option<&NonZeroU32>| n.and_then(|n| numbers.iter().position(|m| m == n));
    let mut kept = Vec::new();
    if has(SearchReturnOption::Min) {
        kept.extend(index_of(numbers.iter().min()));
    }
    if has(SearchReturnOption::Max) {
        kept.extend(index_of(numbers.iter().max()));
    }
    kept
}

/// The mod-sequence the `MODSEQ` return data reports (RFC 4731 3.2): with `MIN` and/or
/// `MAX` but neither `ALL` nor `COUNT`, that of the message `MIN` or `MAX` returns (the
/// higher of the two when both are asked); otherwise the highest over all the messages
/// found. `None` when nothing was found.
fn returned_modseq(
    options: &[SearchReturnOption],
    numbers: &[NonZeroU32],
    modseqs: &[u64],
) -> Option<NonZeroU64> {
    let only_min_max = !options.contains(&SearchReturnOption::All)
        && !options.contains(&SearchReturnOption::Count);
    let modseq = if only_min_max {
        let of = |n: Option<&NonZeroU32>| {
            n.and_then(|n| numbers.iter().position(|m| m == n))
                .and_then(|i| modseqs.get(i).copied())
        };
        let min = options
            .contains(&SearchReturnOption::Min)
            .then(|| of(numbers.iter().min()))
            .flatten();
        let max = options
            .contains(&SearchReturnOption::Max)
            .then(|| of(numbers.iter().max()))
            .flatten();
        min.max(max)
    } else {
        modseqs.iter().copied().max()
    };
    modseq.and_then(NonZeroU64::new)
}

/// Message sequence number of index `i`.
fn seq(i: usize) -> NonZeroU32 {
    NonZeroU32::new(u32::try_from(i + 1).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN)
}

fn system_flags() -> Vec<Flag<'static>> {
    vec![
        Flag::Answered,
        Flag::Flagged,
        Flag::Deleted,
        Flag::Seen,
        Flag::Draft,
    ]
}

/// PERMANENTFLAGS: `flags` and `\*` (any new keyword), none in a mailbox selected
/// read-only (RFC 9051 7.1: "the flags that the client can change permanently").
fn permanent_flags(flags: &[Flag<'static>], read_only: bool) -> Vec<FlagPerm<'static>> {
    if read_only {
        return Vec::new();
    }
    let mut permanent: Vec<FlagPerm<'static>> = flags.iter().cloned().map(FlagPerm::Flag).collect();
    permanent.push(FlagPerm::Asterisk);
    permanent
}

/// The flags of a mailbox (SELECT's FLAGS response, RFC 9051 7.3.5): the system flags,
/// then the keywords its messages carry, sorted.
fn mailbox_flags(view: &MailboxView) -> Vec<Flag<'static>> {
    let keywords: BTreeSet<&str> = view
        .messages
        .iter()
        .flat_map(|m| m.flags.names())
        .filter(|name| !name.starts_with('\\'))
        .collect();
    let mut flags = system_flags();
    flags.extend(
        keywords
            .into_iter()
            .filter_map(|k| Atom::try_from(k.to_string()).ok().map(Flag::Keyword)),
    );
    flags
}

/// The library's flag names as IMAP flags.
fn fetch_flags(flags: &Flags) -> Vec<FlagFetch<'static>> {
    flags
        .names()
        .filter_map(|name| {
            let flag = match name.to_ascii_lowercase().as_str() {
                "\\seen" => Flag::Seen,
                "\\answered" => Flag::Answered,
                "\\flagged" => Flag::Flagged,
                "\\deleted" => Flag::Deleted,
                "\\draft" => Flag::Draft,
                _ => match name.strip_prefix('\\') {
                    Some(system) => Flag::system(Atom::try_from(system.to_string()).ok()?),
                    None => Flag::Keyword(Atom::try_from(name.to_string()).ok()?),
                },
            };
            Some(FlagFetch::Flag(flag))
        })
        .collect()
}

fn internal_date(secs: i64) -> DateTime {
    let utc = chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default();
    DateTime::unvalidated(utc.fixed_offset())
}

/// A BINARY value: a literal8 when it holds a NUL (RFC 3516 4.2), else a literal.
fn nstring8(bytes: &[u8]) -> NString8<'static> {
    if bytes.contains(&0) {
        NString8::Literal8(Literal8 {
            data: bytes.to_vec().into(),
            mode: LiteralMode::Sync,
        })
    } else {
        NString8::NString(nstring(bytes))
    }
}

/// `body` with its content transfer `encoding` removed, as the library counts
/// `MimePart::decoded_size`: base64 decodes its alphabet up to the padding (other bytes
/// skipped), quoted-printable its escapes (soft line breaks and trailing white space
/// removed, line breaks kept as written, a malformed escape kept as it is); 7bit, 8bit
/// and binary are the bytes themselves. `None` for any other encoding.
fn decode_transfer(encoding: Option<&str>, body: &[u8]) -> Option<Vec<u8>> {
    let encoding = encoding.map(|e| e.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("7bit" | "8bit" | "binary") => Some(body.to_vec()),
        Some("base64") => {
            let sextet = |b: u8| match b {
                b'A'..=b'Z' => Some(b - b'A'),
                b'a'..=b'z' => Some(b - b'a' + 26),
                b'0'..=b'9' => Some(b - b'0' + 52),
                b'+' => Some(62),
                b'/' => Some(63),
                _ => None,
            };
            let mut out = Vec::with_capacity(body.len() * 3 / 4);
            let (mut acc, mut bits) = (0u32, 0u32);
            for value in body
                .iter()
                .take_while(|&&b| b != b'=')
                .filter_map(|&b| sextet(b))
            {
                acc = (acc << 6) | u32::from(value);
                bits += 6;
                if bits >= 8 {
                    bits -= 8;
                    out.push((acc >> bits) as u8);
                    acc &= (1 << bits) - 1;
                }
            }
            Some(out)
        }
        Some("quoted-printable") => {
            let hex = |b: u8| (b as char).to_digit(16);
            let mut out = Vec::with_capacity(body.len());
            for line in body.split_inclusive(|&b| b == b'\n') {
                let (content, eol): (&[u8], &[u8]) = match line {
                    [rest @ .., b'\r', b'\n'] => (rest, b"\r\n"),
                    [rest @ .., b'\n'] => (rest, b"\n"),
                    rest => (rest, b""),
                };
                let mut end = content.len();
                while end > 0 && matches!(content[end - 1], b' ' | b'\t') {
                    end -= 1;
                }
                let (content, eol) = match content[..end].strip_suffix(b"=") {
                    Some(soft) => (soft, &b""[..]),
                    None => (&content[..end], eol),
                };
                let mut i = 0;
                while i < content.len() {
                    let escaped = (content[i] == b'=')
                        .then(|| Some((hex(*content.get(i + 1)?)?, hex(*content.get(i + 2)?)?)))
                        .flatten();
                    match escaped {
                        Some((hi, lo)) => {
                            out.push((hi * 16 + lo) as u8);
                            i += 3;
                        }
                        None => {
                            out.push(content[i]);
                            i += 1;
                        }
                    }
                }
                out.extend_from_slice(eol);
            }
            Some(out)
        }
        Some(_) => None,
    }
}

/// A message's bytes as a literal. A literal carries no NUL (RFC 9051 4.3: `CHAR8` is
/// %x01-ff), yet a message delivered over LMTP or appended as a literal8 may hold one:
/// each NUL is sent as 0x80 (the size stays the same), as Dovecot does for delivered
/// mail (a part of transfer encoding `binary` appended as a literal8 it re-encodes in
/// base64 instead); BINARY sends the bytes as they are, in a literal8 ([`nstring8`]).
fn nstring(bytes: &[u8]) -> NString<'static> {
    let data = if bytes.contains(&0) {
        bytes
            .iter()
            .map(|&b| if b == 0 { 0x80 } else { b })
            .collect()
    } else {
        bytes.to_vec()
    };
    NString(Some(IString::Literal(Literal::unvalidated(data))))
}

/// How mailbox names travel on a connection. The library stores them as UTF-8 with `/`
/// as separator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Names {
    /// Modified UTF-7 (RFC 3501 5.1.3): an IMAP4rev1 client.
    Mutf7,
    /// UTF-8 (RFC 9051 5.1): a client that enabled IMAP4rev2. `&` is a character like
    /// any other: nothing is decoded.
    Utf8,
}

/// Why a mailbox name (or LIST pattern) a client sent cannot name a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BadName {
    /// Not modified UTF-7 (IMAP4rev1).
    Mutf7(mutf7::Error),
    /// Not UTF-8 (IMAP4rev2; a literal can carry any byte).
    NotUtf8,
    /// A character RFC 9051 5.1 forbids in names (control characters, U+2028, U+2029),
    /// at this byte offset.
    Forbidden(usize),
}

impl std::fmt::Display for BadName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadName::Mutf7(e) => e.fmt(f),
            BadName::NotUtf8 => f.write_str("not UTF-8"),
            BadName::Forbidden(at) => write!(f, "the character at byte {at} is not allowed"),
        }
    }
}

impl Names {
    /// The stored name of what the client sent (a name, or a LIST pattern: its
    /// wildcards are ASCII and decode as themselves).
    fn decode(self, bytes: &[u8]) -> Result<String, BadName> {
        match self {
            Names::Mutf7 => mutf7::decode(bytes).map_err(BadName::Mutf7),
            Names::Utf8 => {
                let name = std::str::from_utf8(bytes).map_err(|_| BadName::NotUtf8)?;
                // RFC 9051 5.1: Net-Unicode (RFC 5198), without control characters
                // (U+0000-U+001F, U+007F-U+009F), U+2028 or U+2029.
                match name
                    .char_indices()
                    .find(|(_, c)| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
                {
                    Some((at, _)) => Err(BadName::Forbidden(at)),
                    None => Ok(name.to_owned()),
                }
            }
        }
    }

    /// The stored name of `mailbox`.
    fn mailbox(self, mailbox: &ImapMailbox<'_>) -> Result<String, BadName> {
        match mailbox {
            ImapMailbox::Inbox => Ok(mailvault::mail::INBOX.to_string()),
            ImapMailbox::Other(other) => self.decode(other.as_ref()),
        }
    }

    /// Stored name `name` as the client reads it: an atom when it can be one (as
    /// Dovecot answers), else a quoted string (UTF-8 ones under IMAP4rev2, RFC 9051
    /// `quoted`), else a literal. `None` only for a name no IMAP string can carry.
    fn encode(self, name: &str) -> Option<ImapMailbox<'static>> {
        match self {
            Names::Mutf7 => ImapMailbox::try_from(mutf7::encode(name)).ok(),
            Names::Utf8 if name.is_ascii() => ImapMailbox::try_from(name.to_owned()).ok(),
            Names::Utf8 => QuotedUtf8::try_from(name.to_owned())
                .ok()
                .and_then(|q| MailboxOther::try_from(AString::String(IString::QuotedUtf8(q))).ok())
                .map(ImapMailbox::Other)
                .or_else(|| ImapMailbox::try_from(name.to_owned()).ok()),
        }
    }
}

/// The answer to a mailbox name that [`Names::decode`] refuses.
fn bad_name(tag: Tag<'static>, error: BadName) -> Status<'static> {
    bad(Some(tag), format!("mailbox name: {error}"))
}

/// LIST pattern matching: `*` matches anything, `%` anything but the delimiter; INBOX
/// case-insensitively.
fn matches_pattern(pattern: &str, name: &str) -> bool {
    // Whether `p` matches `n`, in time |p|·|n| (a backtracking matcher is exponential in
    // the number of wildcards: `*a*a*a…b` against a long name of `a`s): row `i` says, for
    // each `j`, whether `p[i..]` matches `n[j..]`; built from the end of the pattern.
    fn go(p: &[char], n: &[char]) -> bool {
        let mut next: Vec<bool> = (0..=n.len()).map(|j| j == n.len()).collect();
        let mut row = vec![false; n.len() + 1];
        for &c in p.iter().rev() {
            for j in (0..=n.len()).rev() {
                row[j] = match c {
                    '*' => next[j] || (j < n.len() && row[j + 1]),
                    '%' => next[j] || (j < n.len() && n[j] != '/' && row[j + 1]),
                    c => j < n.len() && n[j] == c && next[j + 1],
                };
            }
            std::mem::swap(&mut next, &mut row);
        }
        next[0]
    }
    let fold = |s: &str| -> Vec<char> {
        // `get`: the fifth byte may be inside a multibyte character ("Entwürfe").
        if s.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("INBOX")) {
            format!("INBOX{}", &s[5..]).chars().collect()
        } else {
            s.chars().collect()
        }
    };
    go(&fold(pattern), &fold(name))
}

/// The header block (with its blank line) and the text of a message.
fn split_header(message: &[u8]) -> (&[u8], &[u8]) {
    if let Some(pos) = message.windows(4).position(|w| w == b"\r\n\r\n") {
        return message.split_at(pos + 4);
    }
    if let Some(pos) = message.windows(2).position(|w| w == b"\n\n") {
        return message.split_at(pos + 2);
    }
    (message, &[])
}

/// The fields of `header` named in `names` (or not named, when `include` is false),
/// followed by a blank line (RFC 3501 BODY[HEADER.FIELDS]).
fn header_fields(header: &[u8], names: &[AString<'_>], include: bool) -> Vec<u8> {
    let wanted: Vec<Vec<u8>> = names
        .iter()
        .map(|n| n.as_ref().to_ascii_lowercase())
        .collect();
    let mut out = Vec::new();
    let mut keep = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if !matches!(line.first(), Some(b' ' | b'\t')) {
            let name = line
                .split(|&b| b == b':')
                .next()
                .unwrap_or(&[])
                .trim_ascii()
                .to_ascii_lowercase();
            keep = wanted.contains(&name) == include;
        }
        if keep {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_of_malformed_lines() {
        assert_eq!(tag_of(b"a1 FETCH (((\r\n"), Tag::try_from("a1").ok());
        assert_eq!(tag_of(b"a1"), None);
        assert_eq!(tag_of(b"a{ FETCH\r\n"), None);
        assert_eq!(tag_of(b" FETCH\r\n"), None);
    }

    #[test]
    fn transfer_decoding_matches_the_analysis_sizes() {
        assert_eq!(
            decode_transfer(Some("BASE64"), b"aGVs\r\nbG8=\r\n"),
            Some(b"hello".to_vec())
        );
        assert_eq!(
            decode_transfer(Some("quoted-printable"), b"caf=C3=A9 =\r\nau lait  \r\n=ZZ"),
            Some(b"caf\xc3\xa9 au lait\r\n=ZZ".to_vec())
        );
        assert_eq!(
            decode_transfer(Some(" 8bit "), b"a\0b"),
            Some(b"a\0b".to_vec())
        );
        assert_eq!(decode_transfer(None, b"x"), Some(b"x".to_vec()));
        assert_eq!(decode_transfer(Some("x-uuencode"), b"x"), None);
        // BINARY.SIZE (the analysis' count) is the length of what BINARY gives.
        let message = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
            Content-Transfer-Encoding: base64\r\n\r\nAAECAwQFBgcICQ\r\n=\r\n--b\r\n\
            Content-Transfer-Encoding: quoted-printable\r\n\r\nl=C3=A0 =\r\nbas=\r\n \t\r\nend\r\n--b--\r\n";
        let analysis = Mailstore::parse_message(message);
        let mut leaves = 0;
        for part in &analysis.parts {
            let Some(size) = part.decoded_size else {
                continue;
            };
            let body = &message[part.body_offset as usize..part.end_offset as usize];
            let decoded = decode_transfer(part.transfer_encoding.as_deref(), body).expect("known");
            assert_eq!(decoded.len() as u64, size, "{part:?}");
            leaves += 1;
        }
        assert_eq!(leaves, 2);
    }

    #[test]
    fn literal_announcements() {
        assert!(announces_literal(b"a APPEND INBOX {12}\r\nxx"));
        assert!(announces_literal(b"a APPEND INBOX {12+}\r\n"));
        assert!(announces_literal(b"a APPEND INBOX ~{3}\n"));
        assert!(!announces_literal(b"a NOOP xxxxxxxx"));
        assert!(!announces_literal(b"a NOOP {}\r\n"));
        assert!(!announces_literal(b"a NOOP {+}\r\n"));
        assert!(!announces_literal(b"a NOOP 12}\r\n"));
    }

    #[test]
    fn list_status_items_are_asked_once() {
        let pattern = ListMailbox::String(IString::try_from("*").unwrap());
        let repeated = vec![StatusDataItemName::Messages; 1000];
        let returns = [
            ListReturnOption::Status(Vec1::try_from(repeated).unwrap()),
            ListReturnOption::Status(Vec1::from(StatusDataItemName::Messages)),
            ListReturnOption::Status(Vec1::from(StatusDataItemName::UidNext)),
        ];
        let request = ListRequest::extended(&[], Vec1::from(pattern), &returns);
        assert_eq!(
            request.status,
            Some(vec![
                StatusDataItemName::Messages,
                StatusDataItemName::UidNext
            ])
        );
    }

    #[test]
    fn list_patterns() {
        assert!(matches_pattern("*", "INBOX"));
        assert!(matches_pattern("%", "Projects"));
        assert!(!matches_pattern("%", "Projects/2026"));
        assert!(matches_pattern("Projects/%", "Projects/2026"));
        assert!(matches_pattern("inbox", "INBOX"));
        assert!(!matches_pattern("Sent", "INBOX"));
        // Names whose fifth byte is inside a character (a panic before).
        assert!(matches_pattern("*", "Entwürfe"));
        assert!(matches_pattern("Entw*", "Entwürfe"));
        assert!(matches_pattern("日本%", "日本語"));
        assert!(!matches_pattern("inboü", "INBOX"));
        assert!(matches_pattern("%/%", "a/b"));
        assert!(!matches_pattern("a%b", "a/b"));
        assert!(matches_pattern("a*b", "a/x/b"));
        assert!(matches_pattern("*", ""));
        assert!(matches_pattern("%", ""));
        assert!(!matches_pattern("", "a"));
        assert!(matches_pattern("*b*", "abc"));
        assert!(!matches_pattern("*b*c", "abcb"));
        // Many wildcards against a long name: a backtracking matcher never ends.
        let name = "a".repeat(1024);
        let pattern = format!("{}b", "*a".repeat(20));
        assert!(!matches_pattern(&pattern, &name));
        assert!(matches_pattern(&"*a".repeat(20), &name));
        assert!(!matches_pattern(&format!("{}b", "%a".repeat(20)), &name));
    }

    #[test]
    fn hierarchy_levels_without_a_mailbox() {
        assert_eq!(
            hierarchy_holes(&["INBOX", "a/b/c", "x", "x/y", "/lead", "t/"]),
            ["a", "a/b", "t"]
        );
        assert!(hierarchy_holes(&["a", "a/b"]).is_empty());
    }

    #[test]
    fn mailbox_names_by_version() {
        // IMAP4rev1: modified UTF-7 both ways; UTF-8 is no modified UTF-7.
        assert_eq!(Names::Mutf7.decode(b"Entw&APw-rfe"), Ok("Entwürfe".into()));
        assert!(matches!(
            Names::Mutf7.decode("Entwürfe".as_bytes()),
            Err(BadName::Mutf7(_))
        ));
        // IMAP4rev2: UTF-8 as it is, `&` included; not UTF-8, controls, U+2028 refused.
        assert_eq!(
            Names::Utf8.decode("Entwürfe".as_bytes()),
            Ok("Entwürfe".into())
        );
        assert_eq!(
            Names::Utf8.decode(b"Entw&APw-rfe"),
            Ok("Entw&APw-rfe".into())
        );
        assert_eq!(Names::Utf8.decode(b"a\xffb"), Err(BadName::NotUtf8));
        assert_eq!(Names::Utf8.decode(b"a\tb"), Err(BadName::Forbidden(1)));
        assert_eq!(Names::Utf8.decode(b"a\x7f"), Err(BadName::Forbidden(1)));
        assert_eq!(
            Names::Utf8.decode("é\u{85}".as_bytes()),
            Err(BadName::Forbidden(2))
        );
        assert_eq!(
            Names::Utf8.decode("x\u{2028}".as_bytes()),
            Err(BadName::Forbidden(1))
        );
        // Written: an atom when possible, a UTF-8 quoted string under IMAP4rev2, the
        // name quoted with its `"` escaped.
        let encoded = |names: Names, name: &str| {
            use imap_codec::encode::Encoder;
            let mailbox = names.encode(name).expect("encodable");
            let command = Command::new(
                "a",
                CommandBody::Select {
                    mailbox,
                    parameters: Vec::new(),
                },
            )
            .expect("command");
            let bytes = imap_codec::CommandCodec::default().encode(&command).dump();
            String::from_utf8(bytes).expect("UTF-8")
        };
        assert_eq!(
            encoded(Names::Mutf7, "Entwürfe"),
            "a SELECT Entw&APw-rfe\r\n"
        );
        assert_eq!(
            encoded(Names::Utf8, "Entwürfe"),
            "a SELECT \"Entwürfe\"\r\n"
        );
        assert_eq!(encoded(Names::Utf8, "a&b"), "a SELECT a&b\r\n");
        assert_eq!(encoded(Names::Mutf7, "a&b"), "a SELECT a&-b\r\n");
        assert_eq!(
            encoded(Names::Utf8, "é \"q\""),
            "a SELECT \"é \\\"q\\\"\"\r\n"
        );
        assert_eq!(encoded(Names::Utf8, "inbox"), "a SELECT INBOX\r\n");
    }

    #[test]
    fn text_search_keys() {
        let message = b"Subject: hi\r\nX-Tag: one\r\n two\r\nX-Tag: three\r\n\r\nBody Text\r\n";
        let matches = |k: &TextKey, m: &[u8]| mailvault::mail::text::oracle::matches(m, k, 1 << 20);
        let key = |k: TextKey| matches(&k, message);
        assert!(key(TextKey::Body("body text".into())));
        assert!(
            !key(TextKey::Body("subject".into())),
            "BODY skips the header"
        );
        assert!(key(TextKey::Text("SUBJECT: HI".into())));
        assert!(
            key(TextKey::Header("x-tag".into(), "one two".into())),
            "unfolded"
        );
        assert!(
            key(TextKey::Header("X-Tag".into(), "three".into())),
            "second field"
        );
        assert!(
            key(TextKey::Header("X-Tag".into(), String::new())),
            "present"
        );
        assert!(
            !key(TextKey::Header("X-Other".into(), String::new())),
            "absent"
        );
        assert!(!key(TextKey::Header("X-Tag".into(), "body".into())));
        // i;unicode-casemap, as Dovecot compares: the sigmas fold to one capital, the
        // full-width letters to ASCII (lowercasing matched neither).
        // `ß` has no simple titlecase: `strasse` does not find it (nor in Dovecot).
        let greek = "Subject: x\r\n\r\nΟΔΟΣ Ｍａｉｌ Straße\r\n".as_bytes();
        assert!(matches(&TextKey::Body("οδοσ".into()), greek));
        assert!(matches(&TextKey::Body("mail".into()), greek));
        assert!(matches(&TextKey::Body("οδοσ mail straße".into()), greek));
        assert!(!matches(&TextKey::Body("strasse".into()), greek));
    }

    #[test]
    fn header_field_selection() {
        let header = b"Subject: hi\r\nFrom: a@b\r\nX-Long: one\r\n two\r\n\r\n";
        let subject = AString::try_from("SUBJECT").expect("atom");
        assert_eq!(
            header_fields(header, std::slice::from_ref(&subject), true),
            b"Subject: hi\r\n\r\n"
        );
        assert_eq!(
            header_fields(header, std::slice::from_ref(&subject), false),
            b"From: a@b\r\nX-Long: one\r\n two\r\n\r\n"
        );
    }
}
