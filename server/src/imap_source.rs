//! `mailvault import imap`: the messages of an account on another IMAP server (Dovecot,
//! Aerogramme, any IMAP4rev1/rev2 server), read over IMAP as its clients read them.
//!
//! A small blocking IMAP client: `LOGIN`, `LIST "" "*"`, `STATUS (MESSAGES)` of each
//! mailbox for the progress total, then per mailbox `EXAMINE` (read-only: no `\Seen` set,
//! nothing expunged) and one `UID FETCH 1:* (UID FLAGS INTERNALDATE BODY.PEEK[])` whose
//! responses are handed on one message at a time (a bounded channel to the deliveries:
//! the account's mail is never held in memory). Each message keeps its bytes as the
//! server serves them, its flags (`\Recent` aside), its internal date and its mailbox
//! (levels joined with `/`, modified UTF-7 decoded). Its delivery id comes from the
//! server, the login, the mailbox, its UIDVALIDITY and the UID, so a rerun stores each
//! message once.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

use crate::config::BoxError;
use crate::migrate::SourceMessage;

/// Where the mail comes from: `imap://user@host[:143]` or `imaps://user@host[:993]`
/// (the user percent-encoded: `alice%40example.org`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceUrl {
    /// Implicit TLS (`imaps`).
    pub tls: bool,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Login name.
    pub user: String,
}

impl SourceUrl {
    /// Parses an `imap://` or `imaps://` URL.
    ///
    /// # Errors
    /// Another scheme, no host, no user name.
    pub fn parse(text: &str) -> Result<Self, BoxError> {
        let url = url::Url::parse(text).map_err(|e| format!("{text}: {e}"))?;
        let tls = match url.scheme() {
            "imap" => false,
            "imaps" => true,
            other => return Err(format!("{text}: scheme {other}: not imap or imaps").into()),
        };
        let host = url
            .host_str()
            .ok_or_else(|| format!("{text}: no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let user = percent_decoded(url.username())
            .ok_or_else(|| format!("{text}: the user name is not percent-encoded UTF-8"))?;
        if user.is_empty() {
            return Err(format!("{text}: no user name (imap://user@host)").into());
        }
        Ok(Self {
            tls,
            port: url.port().unwrap_or(if tls { 993 } else { 143 }),
            host,
            user,
        })
    }
}

/// `text` with its `%XX` escapes decoded; `None` for a bad escape or bytes that are not
/// UTF-8.
fn percent_decoded(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// One piece of a response: text, or a literal's bytes.
#[derive(Debug)]
enum Part {
    Text(Vec<u8>),
    Literal(Vec<u8>),
}

/// A token of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An atom, a number or `NIL` (a bracketed part such as `BODY[]` or
    /// `[UIDVALIDITY 3]` included).
    Atom(Vec<u8>),
    /// A quoted string or a literal.
    Str(Vec<u8>),
    Open,
    Close,
}

impl Token {
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            Token::Atom(b) | Token::Str(b) => Some(b),
            _ => None,
        }
    }

    fn is_atom(&self, name: &str) -> bool {
        matches!(self, Token::Atom(b) if b.eq_ignore_ascii_case(name.as_bytes()))
    }
}

fn tokenize(parts: Vec<Part>) -> Result<Vec<Token>, BoxError> {
    let mut tokens = Vec::new();
    for part in parts {
        let text = match part {
            Part::Literal(bytes) => {
                tokens.push(Token::Str(bytes));
                continue;
            }
            Part::Text(text) => text,
        };
        let mut i = 0;
        while i < text.len() {
            match text[i] {
                b' ' => i += 1,
                b'(' => {
                    tokens.push(Token::Open);
                    i += 1;
                }
                b')' => {
                    tokens.push(Token::Close);
                    i += 1;
                }
                b'"' => {
                    let mut s = Vec::new();
                    i += 1;
                    loop {
                        match text.get(i) {
                            None => return Err("an unterminated quoted string".into()),
                            Some(b'"') => break,
                            Some(b'\\') => {
                                s.extend(text.get(i + 1));
                                i += 2;
                            }
                            Some(&b) => {
                                s.push(b);
                                i += 1;
                            }
                        }
                    }
                    i += 1;
                    tokens.push(Token::Str(s));
                }
                _ => {
                    let start = i;
                    let mut depth = 0usize;
                    while i < text.len() {
                        match text[i] {
                            b'[' => depth += 1,
                            b']' => depth = depth.saturating_sub(1),
                            b' ' | b'(' | b')' if depth == 0 => break,
                            _ => {}
                        }
                        i += 1;
                    }
                    tokens.push(Token::Atom(text[start..i].to_vec()));
                }
            }
        }
    }
    Ok(tokens)
}

fn read_line(io: &mut impl BufRead) -> Result<Vec<u8>, BoxError> {
    let mut line = Vec::new();
    let n = io.take(MAX_LINE as u64).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err("the server closed the connection".into());
    }
    if !line.ends_with(b"\n") {
        return Err(format!("a response line longer than {MAX_LINE} bytes").into());
    }
    Ok(line)
}

/// One response: its lines and literals. A literal's bytes are read as they come (its
/// announced length is not allocated up front: a server cannot make the client reserve
/// what it does not send).
fn read_response(io: &mut impl BufRead) -> Result<Vec<Part>, BoxError> {
    let mut parts = Vec::new();
    loop {
        let mut line = read_line(io)?;
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        let literal = line
            .strip_suffix(b"}")
            .and_then(|l| l.iter().rposition(|&b| b == b'{').map(|at| (at, l)))
            .and_then(|(at, l)| {
                let digits = l[at + 1..].strip_suffix(b"+").unwrap_or(&l[at + 1..]);
                let n = std::str::from_utf8(digits).ok()?.parse::<usize>().ok()?;
                Some((at, n))
            });
        let Some((at, n)) = literal else {
            parts.push(Part::Text(line));
            return Ok(parts);
        };
        if n > MAX_LITERAL {
            return Err(format!("a literal of {n} bytes (at most {MAX_LITERAL})").into());
        }
        line.truncate(at);
        parts.push(Part::Text(line));
        let mut bytes = Vec::new();
        io.take(n as u64).read_to_end(&mut bytes)?;
        if bytes.len() < n {
            return Err("the server closed the connection inside a literal".into());
        }
        parts.push(Part::Literal(bytes));
    }
}

/// Reads `input` as a server's responses, the way the IMAP source reads them, until it
/// ends or a response does not parse; returns how many responses were read. What the
/// `import_sources` fuzz target drives: no input may panic or allocate beyond its size.
pub fn read_responses(input: &[u8]) -> usize {
    let mut io = std::io::BufReader::new(input);
    let mut count = 0;
    while read_response(&mut io).and_then(tokenize).is_ok() {
        count += 1;
    }
    count
}

/// The largest line of a response and the largest literal accepted.
const MAX_LINE: usize = 1 << 20;
const MAX_LITERAL: usize = 1 << 30;

/// A mailbox of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceMailbox {
    /// Its name on the source (as sent back to it).
    pub source_name: Vec<u8>,
    /// Its name here (`/`-separated, UTF-8).
    pub name: String,
    /// Messages it holds (`STATUS`).
    pub messages: u64,
}

/// A logged-in connection to the source server.
pub struct ImapSource {
    io: BufReader<Box<dyn Stream>>,
    tag: u32,
    /// `host:port` and the login, for the delivery ids.
    origin: String,
}

impl ImapSource {
    /// Connects (with TLS for `imaps`, trusting the system's roots and `ca_file`'s
    /// certificates) and logs in.
    ///
    /// # Errors
    /// No connection, a TLS failure, a refused login, a password that LOGIN cannot carry
    /// (not printable ASCII).
    pub fn connect(
        url: &SourceUrl,
        password: &str,
        ca_file: Option<&Path>,
    ) -> Result<Self, BoxError> {
        let address = format!("{}:{}", url.host, url.port);
        let tcp = TcpStream::connect((url.host.as_str(), url.port))
            .map_err(|e| format!("{address}: {e}"))?;
        tcp.set_read_timeout(Some(Duration::from_secs(300)))?;
        tcp.set_write_timeout(Some(Duration::from_secs(300)))?;
        let stream: Box<dyn Stream> = if url.tls {
            Box::new(tls_stream(tcp, &url.host, ca_file)?)
        } else {
            Box::new(tcp)
        };
        let mut source = Self {
            io: BufReader::new(stream),
            tag: 0,
            origin: format!("{address}\0{}", url.user),
        };
        let greeting = tokenize(read_response(&mut source.io)?)?;
        if !greeting.get(1).is_some_and(|t| t.is_atom("OK")) {
            return Err(format!("{address}: no IMAP greeting: {greeting:?}").into());
        }
        source
            .command(&format!(
                "LOGIN {} {}",
                quoted(&url.user)?,
                quoted(password)?
            ))
            .map_err(|e| format!("{address}: login as {}: {e}", url.user))?;
        Ok(source)
    }

    /// Every selectable mailbox, with its message count.
    ///
    /// # Errors
    /// A command fails, a response does not parse.
    pub fn mailboxes(&mut self) -> Result<Vec<SourceMailbox>, BoxError> {
        let mut out = Vec::new();
        for response in self.command("LIST \"\" \"*\"")? {
            // * LIST (\HasNoChildren) "." "Archive.2023"
            let Some(open) = response.iter().position(|t| *t == Token::Open) else {
                continue;
            };
            if !response.get(1).is_some_and(|t| t.is_atom("LIST")) {
                continue;
            }
            let Some(close) = response.iter().position(|t| *t == Token::Close) else {
                return Err(format!("a LIST response without its flags: {response:?}").into());
            };
            let flags = &response[open + 1..close];
            if flags
                .iter()
                .any(|f| f.is_atom("\\Noselect") || f.is_atom("\\NonExistent"))
            {
                continue;
            }
            let separator = response
                .get(close + 1)
                .filter(|t| !t.is_atom("NIL"))
                .and_then(Token::bytes)
                .and_then(|b| b.first().copied());
            let source_name = response
                .get(close + 2)
                .and_then(Token::bytes)
                .ok_or_else(|| format!("a LIST response without a name: {response:?}"))?
                .to_vec();
            out.push(SourceMailbox {
                name: mailbox_name(&source_name, separator),
                source_name,
                messages: 0,
            });
        }
        for mailbox in &mut out {
            let status = self.command(&format!(
                "STATUS {} (MESSAGES)",
                quoted_bytes(&mailbox.source_name)?
            ))?;
            mailbox.messages = status
                .iter()
                .filter(|r| r.get(1).is_some_and(|t| t.is_atom("STATUS")))
                .find_map(|r| {
                    let at = r.iter().position(|t| t.is_atom("MESSAGES"))?;
                    number(r.get(at + 1)?)
                })
                .unwrap_or(0);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Every message of `mailbox`, handed to `each` as it arrives.
    ///
    /// # Errors
    /// A command fails, a response does not parse, or `each` fails.
    pub fn messages(
        &mut self,
        mailbox: &SourceMailbox,
        mut each: impl FnMut(SourceMessage) -> Result<(), BoxError>,
    ) -> Result<(), BoxError> {
        let name = quoted_bytes(&mailbox.source_name)?;
        let examined = self.command(&format!("EXAMINE {name}"))?;
        let mut uid_validity = None;
        let mut exists = 0;
        for response in &examined {
            if let Some(at) = response
                .iter()
                .position(|t| t.is_atom("EXISTS"))
                .filter(|&at| at > 0)
            {
                exists = number(&response[at - 1]).unwrap_or(0);
            }
            for token in response {
                if let Some(rest) = token.bytes().and_then(|b| b.strip_prefix(b"[UIDVALIDITY ")) {
                    uid_validity = std::str::from_utf8(rest.strip_suffix(b"]").unwrap_or(rest))
                        .ok()
                        .and_then(|s| s.trim().parse::<u64>().ok());
                }
            }
        }
        if exists == 0 {
            return Ok(());
        }
        let uid_validity = uid_validity.unwrap_or(0);
        let origin = self.origin.clone();
        self.command_each(
            "UID FETCH 1:* (UID FLAGS INTERNALDATE BODY.PEEK[])",
            |response| {
                if !response.get(2).is_some_and(|t| t.is_atom("FETCH")) {
                    return Ok(());
                }
                let fetched = fetch_items(response)?;
                let (Some(uid), Some(bytes)) = (fetched.uid, fetched.body) else {
                    // A FETCH of flags only (a change by another session): not a message.
                    return Ok(());
                };
                each(SourceMessage {
                    mailbox: mailbox.name.clone(),
                    flags: fetched.flags,
                    internal_date: fetched.internal_date,
                    key: format!("imap\0{origin}\0{}\0{uid_validity}\0{uid}", mailbox.name),
                    span: bytes.len() as u64,
                    bytes,
                })
            },
        )
    }

    /// Logs out (errors ignored: the work is done).
    pub fn logout(mut self) {
        let _ = self.command("LOGOUT");
    }

    /// Sends `command`; each untagged response goes to `each` until the tagged one,
    /// which must be OK.
    fn command_each(
        &mut self,
        command: &str,
        mut each: impl FnMut(Vec<Token>) -> Result<(), BoxError>,
    ) -> Result<(), BoxError> {
        self.tag += 1;
        let tag = format!("m{}", self.tag);
        let stream = self.io.get_mut();
        stream.write_all(format!("{tag} {command}\r\n").as_bytes())?;
        stream.flush()?;
        loop {
            let response = tokenize(read_response(&mut self.io)?)?;
            match response.first() {
                Some(Token::Atom(t)) if *t == tag.as_bytes() => {
                    if response.get(1).is_some_and(|t| t.is_atom("OK")) {
                        return Ok(());
                    }
                    let text: Vec<String> = response
                        .iter()
                        .skip(1)
                        .filter_map(|t| t.bytes().map(|b| String::from_utf8_lossy(b).into()))
                        .collect();
                    let verb = command.split(' ').next().unwrap_or(command);
                    return Err(format!("{verb}: {}", text.join(" ")).into());
                }
                Some(Token::Atom(t)) if t == b"*" => each(response)?,
                // A continuation request or anything else: not for us.
                _ => {}
            }
        }
    }

    fn command(&mut self, command: &str) -> Result<Vec<Vec<Token>>, BoxError> {
        let mut out = Vec::new();
        self.command_each(command, |r| {
            out.push(r);
            Ok(())
        })?;
        Ok(out)
    }
}

fn tls_stream(
    tcp: TcpStream,
    host: &str,
    ca_file: Option<&Path>,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, BoxError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let mut pinned = Vec::new();
    if let Some(path) = ca_file {
        let failed = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| failed(&e))? {
            let cert = cert.map_err(|e| failed(&e))?;
            roots.add(cert.clone()).map_err(|e| failed(&e))?;
            pinned.push(cert);
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| format!("TLS: {e}"))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedOrWebPki { pinned, webpki }))
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
    let connection =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| format!("TLS: {e}"))?;
    Ok(rustls::StreamOwned::new(connection, tcp))
}

/// The source server's certificate check: a certificate of `--source-ca-file` that the
/// server presents as its own is trusted as it is (a self-signed certificate made by
/// `openssl req -x509` is a CA certificate, which WebPKI refuses as a server's); any
/// other goes through the WebPKI verification against the system's roots and the file's
/// certificates (chain, name, dates). The handshake's signatures are always checked.
#[derive(Debug)]
struct PinnedOrWebPki {
    pinned: Vec<CertificateDer<'static>>,
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|pin| pin.as_ref() == end_entity.as_ref())
        {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// `text` as an IMAP quoted string.
fn quoted(text: &str) -> Result<String, BoxError> {
    quoted_bytes(text.as_bytes())
}

fn quoted_bytes(text: &[u8]) -> Result<String, BoxError> {
    if text.iter().any(|&b| !(0x20..0x7f).contains(&b)) {
        return Err(
            "a login, password or mailbox name that is not printable ASCII (IMAP LOGIN \
                    and modified UTF-7 names carry no other)"
                .into(),
        );
    }
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for &b in text {
        if b == b'"' || b == b'\\' {
            out.push('\\');
        }
        out.push(char::from(b));
    }
    out.push('"');
    Ok(out)
}

/// A source mailbox name (modified UTF-7, levels separated by `separator`) as a
/// mailbox name here.
fn mailbox_name(name: &[u8], separator: Option<u8>) -> String {
    let decoded =
        crate::mutf7::decode(name).unwrap_or_else(|_| String::from_utf8_lossy(name).into());
    if decoded.eq_ignore_ascii_case(mailvault::mail::INBOX) {
        return mailvault::mail::INBOX.to_string();
    }
    match separator {
        Some(sep) if sep != b'/' => decoded.replace(char::from(sep), "/"),
        _ => decoded,
    }
}

fn number(token: &Token) -> Option<u64> {
    match token {
        Token::Atom(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

#[derive(Debug, Default)]
struct Fetched {
    uid: Option<u64>,
    flags: Vec<String>,
    internal_date: Option<i64>,
    body: Option<Vec<u8>>,
}

/// The items of `* n FETCH (...)`.
fn fetch_items(response: Vec<Token>) -> Result<Fetched, BoxError> {
    let mut out = Fetched::default();
    let mut items = response.into_iter().skip(3);
    if items.next() != Some(Token::Open) {
        return Err("a FETCH response without its items".into());
    }
    while let Some(name) = items.next() {
        let Token::Atom(name) = name else {
            if name == Token::Close {
                break;
            }
            return Err(format!("a FETCH item name expected, {name:?} found").into());
        };
        let name = String::from_utf8_lossy(&name).to_ascii_uppercase();
        let value = items
            .next()
            .ok_or_else(|| format!("FETCH {name} without a value"))?;
        match (name.as_str(), value) {
            ("UID", value) => out.uid = number(&value),
            ("FLAGS", Token::Open) => {
                for flag in items.by_ref() {
                    match flag {
                        Token::Close => break,
                        Token::Atom(f) if f.eq_ignore_ascii_case(b"\\Recent") => {}
                        Token::Atom(f) => out.flags.push(String::from_utf8_lossy(&f).into()),
                        other => return Err(format!("a flag expected, {other:?} found").into()),
                    }
                }
            }
            ("INTERNALDATE", Token::Str(date)) => {
                let date = String::from_utf8_lossy(&date);
                out.internal_date = Some(
                    chrono::DateTime::parse_from_str(date.trim(), "%d-%b-%Y %H:%M:%S %z")
                        .map_err(|e| format!("INTERNALDATE {date:?}: {e}"))?
                        .timestamp(),
                );
            }
            ("BODY[]", Token::Str(body)) => out.body = Some(body),
            (_, Token::Open) => {
                // Another item's list (MODSEQ (5)...): skipped, nesting included.
                let mut depth = 1;
                for token in items.by_ref() {
                    match token {
                        Token::Open => depth += 1,
                        Token::Close => depth -= 1,
                        _ => {}
                    }
                    if depth == 0 {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_and_hostile_literals() {
        let ok = b"* 1 FETCH (UID 7 FLAGS (\\Seen) BODY[] {5}\r\nhello)\r\nm1 OK done\r\n";
        assert_eq!(read_responses(ok), 2);
        let mut io = std::io::BufReader::new(&ok[..]);
        let tokens = tokenize(read_response(&mut io).unwrap()).unwrap();
        assert!(tokens.contains(&Token::Str(b"hello".to_vec())));
        // A literal announced at 1 GiB and cut short: an error, nothing reserved.
        let short = b"* 1 FETCH (BODY[] {1073741823}\r\nabc";
        let mut io = std::io::BufReader::new(&short[..]);
        assert!(read_response(&mut io).is_err());
        // Beyond the limit, and an unterminated quoted string.
        assert_eq!(read_responses(b"* 1 FETCH (BODY[] {1073741825}\r\n"), 0);
        assert_eq!(read_responses(b"* OK \"open\r\n"), 0);
    }

    #[test]
    fn urls() {
        assert_eq!(
            SourceUrl::parse("imap://alice%40example.org@127.0.0.1:1143").unwrap(),
            SourceUrl {
                tls: false,
                host: "127.0.0.1".into(),
                port: 1143,
                user: "alice@example.org".into()
            }
        );
        let url = SourceUrl::parse("imaps://bob@mail.example.org").unwrap();
        assert!(url.tls);
        assert_eq!(url.port, 993);
        assert!(SourceUrl::parse("pop3://bob@host").is_err());
        assert!(SourceUrl::parse("imap://host").is_err());
        assert_eq!(
            SourceUrl::parse("imap://a+b@h").unwrap().user,
            "a+b",
            "a + is not a space in a user name"
        );
        assert!(SourceUrl::parse("imap://a%ff@h").is_err());
    }

    #[test]
    fn a_fetch_response_with_a_literal_parses() {
        let tokens = tokenize(vec![
            Part::Text(b"* 3 FETCH (UID 17 FLAGS (\\Seen \\Recent $Label1) MODSEQ (12) INTERNALDATE \" 7-Jul-2024 02:44:25 -0700\" BODY[] ".to_vec()),
            Part::Literal(b"Subject: x\r\n\r\nhi (there)\r\n".to_vec()),
            Part::Text(b")".to_vec()),
        ])
        .unwrap();
        let fetched = fetch_items(tokens).unwrap();
        assert_eq!(fetched.uid, Some(17));
        assert_eq!(fetched.flags, ["\\Seen", "$Label1"]);
        assert_eq!(fetched.internal_date, Some(1_720_345_465));
        assert_eq!(
            fetched.body.as_deref(),
            Some(&b"Subject: x\r\n\r\nhi (there)\r\n"[..])
        );
        assert!(fetch_items(tokenize(vec![Part::Text(b"* 1 FETCH".to_vec())]).unwrap()).is_err());
    }

    #[test]
    fn mailbox_names_map_to_slash_levels() {
        assert_eq!(mailbox_name(b"Archive.2023", Some(b'.')), "Archive/2023");
        assert_eq!(mailbox_name(b"Entw&APw-rfe", Some(b'.')), "Entwürfe");
        assert_eq!(mailbox_name(b"inbox", Some(b'.')), "INBOX");
        assert_eq!(mailbox_name(b"a/b", Some(b'/')), "a/b");
        assert_eq!(quoted("a\"b\\").unwrap(), "\"a\\\"b\\\\\"");
        assert!(quoted("ä").is_err());
    }
}
