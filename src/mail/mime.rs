//! What is computed once from a message at append (or by the deliverer, from the
//! plaintext): the envelope fields, the MIME part tree with byte offsets and the IMAP
//! `BODYSTRUCTURE` data of every part, the header block and the JMAP preview, by the
//! `mail-parser` crate.

use mail_parser::decoders::html::html_to_text;
use mail_parser::{
    Address as ParsedAddress, Header, HeaderValue, Message, MessageParser, MimeHeaders, PartType,
};

use crate::format::mail::{
    Address, AddressField, AddressGroup, EmailAnalysis, Envelope, MimePart, MAX_HEADER_BLOCK_LEN,
    MAX_PREVIEW_CHARS,
};
use crate::ids::ThreadId;
use crate::mail::text::extract::{extract, extract_unparsed, ExtractedText};

/// The analysis of `raw` (an RFC 5322 message), with a zero thread (the caller chooses
/// it): of its header only when `header_only` (the start of a message above the parse
/// limit: no parts, no preview). Never fails: a message the parser cannot make sense of
/// gets an empty envelope and no parts (it is then read whole).
pub(crate) fn analyze(raw: &[u8], header_only: bool) -> EmailAnalysis {
    let message = if header_only { None } else { parse(raw) };
    analysis_of(raw, message.as_ref())
}

/// [`analyze`], and the searchable text of the message
/// ([`extract_message`](crate::mail::text::extract::extract_message)'s, for a message
/// within the parse limit; its header only when `header_only`) from the same parse: what
/// an append and the deliverer compute where they hold the plaintext, so that no body is
/// read again to index it.
pub(crate) fn analyze_with_text(raw: &[u8], header_only: bool) -> (EmailAnalysis, ExtractedText) {
    let message = if header_only { None } else { parse(raw) };
    let text = match &message {
        Some(message) => extract(message),
        None => extract_unparsed(raw, header_only),
    };
    (analysis_of(raw, message.as_ref()), text)
}

/// The analysis of `raw`, parsed as `message` (`None`: not parsed, its header only).
fn analysis_of(raw: &[u8], message: Option<&Message<'_>>) -> EmailAnalysis {
    let mut analysis = EmailAnalysis {
        thread: ThreadId::from_bytes([0; 16]),
        envelope: Envelope::default(),
        parts: Vec::new(),
        header_block: None,
        preview: None,
    };
    let Some(message) = message else {
        let end = header_end(raw);
        analysis.envelope = analyze_header(&raw[..end]);
        analysis.header_block = bounded(&raw[..end]);
        return analysis;
    };
    walk(message, 0, None, 0, raw, &mut analysis.parts);
    analysis.envelope = envelope(message);
    analysis.header_block = match analysis.parts.first() {
        Some(root) => bounded(&raw[..root.body_offset as usize]),
        None => bounded(&raw[..header_end(raw)]),
    };
    analysis.preview = preview(message);
    analysis
}

/// `raw` parsed by mail-parser, `None` if it cannot be. mail-parser asserts (in builds
/// with debug assertions) on some malformed multiparts (fuzz target `mail_analysis`):
/// a panic in the parser of untrusted mail is taken as "cannot parse", never passed on.
pub(crate) fn parse(raw: &[u8]) -> Option<Message<'_>> {
    std::panic::catch_unwind(|| MessageParser::default().parse(raw))
        .ok()
        .flatten()
}

/// [`analyze`], on a thread of the blocking pool: parsing a large message is CPU work
/// that must not hold an executor thread (issue 12, item 9). With `with_text`, the
/// searchable text too ([`analyze_with_text`]).
///
/// # Errors
/// [`Error::InvalidArgument`] if the analysis task was cancelled (the runtime shutting
/// down).
pub(crate) async fn analyze_blocking(
    raw: Vec<u8>,
    header_only: bool,
    with_text: bool,
) -> crate::Result<(EmailAnalysis, Option<ExtractedText>)> {
    tokio::task::spawn_blocking(move || {
        if with_text {
            let (analysis, text) = analyze_with_text(&raw, header_only);
            (analysis, Some(text))
        } else {
            (analyze(&raw, header_only), None)
        }
    })
    .await
    .map_err(|e| crate::Error::InvalidArgument(format!("message analysis did not finish: {e}")))
}

/// Parses only the header block of `prefix` (the start of a message too large to parse
/// whole): the envelope, no parts.
pub(crate) fn analyze_header(prefix: &[u8]) -> Envelope {
    MessageParser::default()
        .parse_headers(&prefix[..header_end(prefix)])
        .map(|m| envelope(&m))
        .unwrap_or_default()
}

/// The end of the header block of `raw`: after its first blank line (CRLF or LF), or
/// the whole of `raw` without one.
pub(crate) fn header_end(raw: &[u8]) -> usize {
    raw.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|p| p + 2))
        .unwrap_or(raw.len())
}

/// A header block as an analysis keeps it: up to [`MAX_HEADER_BLOCK_LEN`] bytes.
fn bounded(header: &[u8]) -> Option<Vec<u8>> {
    (header.len() <= MAX_HEADER_BLOCK_LEN).then(|| header.to_vec())
}

/// The value of the last header field `name` of `headers` as written: unfolded (line
/// breaks removed, RFC 5322 §2.2.3), trimmed, bytes outside UTF-8 replaced.
fn raw_value(headers: &[Header<'_>], raw: &[u8], name: &str) -> Option<String> {
    let h = headers
        .iter()
        .rev()
        .find(|h| h.name.as_str().eq_ignore_ascii_case(name))?;
    let bytes = raw.get(h.offset_start as usize..h.offset_end as usize)?;
    let unfolded: Vec<u8> = bytes
        .iter()
        .copied()
        .filter(|b| !matches!(b, b'\r' | b'\n'))
        .collect();
    Some(String::from_utf8_lossy(&unfolded).trim().to_owned())
}

/// The mailboxes of an address field, members of groups included; its groups are
/// added to `groups`.
fn addresses(
    field: AddressField,
    value: Option<&ParsedAddress<'_>>,
    groups: &mut Vec<AddressGroup>,
) -> Vec<Address> {
    let mailbox = |a: &mail_parser::Addr<'_>| match (&a.address, &a.name) {
        (Some(address), name) => Some(Address {
            name: name.as_ref().map(|n| n.to_string()),
            email: address.to_string(),
        }),
        // A lone word (`From: Moderator-Address`): a local part without a domain, as
        // RFC 822 allowed and IMAP servers and Python's `email` read it; mail-parser
        // takes it for a display name.
        (None, Some(word)) if !word.is_empty() && !word.contains(char::is_whitespace) => {
            Some(Address {
                name: None,
                email: word.to_string(),
            })
        }
        (None, _) => None,
    };
    match value {
        None => Vec::new(),
        Some(ParsedAddress::List(list)) => list.iter().filter_map(mailbox).collect(),
        Some(ParsedAddress::Group(list)) => {
            let mut out = Vec::new();
            for group in list {
                let first = out.len();
                out.extend(group.addresses.iter().filter_map(mailbox));
                // Mailboxes outside any group come as a group without a name.
                if let Some(name) = &group.name {
                    groups.push(AddressGroup {
                        field,
                        name: name.to_string(),
                        first: first as u32,
                        members: (out.len() - first) as u32,
                    });
                }
            }
            out
        }
    }
}

fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    value
        .as_text_list()
        .map(|l| l.iter().map(|s| s.to_string()).collect())
        .unwrap_or_default()
}

fn envelope(m: &Message<'_>) -> Envelope {
    let headers = &m.root_part().headers;
    let raw = |name: &str| raw_value(headers, &m.raw_message, name);
    let mut groups = Vec::new();
    let mut field = |field, value| addresses(field, value, &mut groups);
    let (from, sender, reply_to) = (
        field(AddressField::From, m.from()),
        field(AddressField::Sender, m.sender()),
        field(AddressField::ReplyTo, m.reply_to()),
    );
    let (to, cc, bcc) = (
        field(AddressField::To, m.to()),
        field(AddressField::Cc, m.cc()),
        field(AddressField::Bcc, m.bcc()),
    );
    let date = m.date();
    Envelope {
        date: date.map(|d| d.to_timestamp()),
        subject: m.subject().map(str::to_owned),
        from,
        sender,
        reply_to,
        to,
        cc,
        bcc,
        message_id: m.message_id().map(str::to_owned),
        in_reply_to: ids(m.in_reply_to()),
        references: ids(m.references()),
        date_zone: date.map(|d| {
            let minutes = i16::from(d.tz_hour) * 60 + i16::from(d.tz_minute);
            if d.tz_before_gmt {
                -minutes
            } else {
                minutes
            }
        }),
        date_raw: raw("Date"),
        subject_raw: raw("Subject"),
        message_id_raw: raw("Message-ID"),
        in_reply_to_raw: raw("In-Reply-To"),
        groups,
    }
}

/// The JMAP preview of `m`: the start of its first text body part (an HTML one as text),
/// white space collapsed to single spaces, at most [`MAX_PREVIEW_CHARS`] characters.
fn preview(m: &Message<'_>) -> Option<String> {
    let text = match m.body_text(0) {
        Some(text) => text.into_owned(),
        None => {
            let html = m.body_html(0)?;
            // Enough of the HTML for a preview, whatever its size.
            let mut end = html.len().min(256 << 10);
            while !html.is_char_boundary(end) {
                end -= 1;
            }
            html_to_text(&html[..end])
        }
    };
    let mut out = String::new();
    let mut count = 0;
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            space = count > 0;
            continue;
        }
        if count + usize::from(space) + 1 > MAX_PREVIEW_CHARS {
            break;
        }
        if space {
            out.push(' ');
            count += 1;
            space = false;
        }
        out.push(c);
        count += 1;
    }
    (!out.is_empty()).then_some(out)
}

/// Size of `body` once its transfer `encoding` is removed (IMAP `BINARY.SIZE`): base64
/// counts its alphabet up to the padding, quoted-printable its decoded bytes (soft line
/// breaks and trailing white space removed, line breaks kept as written).
fn decoded_size(encoding: Option<&str>, body: &[u8]) -> u64 {
    let encoding = encoding.map(|e| e.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        Some("base64") => {
            let symbols = body
                .iter()
                .take_while(|&&b| b != b'=')
                .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/'))
                .count() as u64;
            symbols * 3 / 4
        }
        Some("quoted-printable") => {
            let mut size = 0u64;
            for line in body.split_inclusive(|&b| b == b'\n') {
                let (content, eol) = match line {
                    [rest @ .., b'\r', b'\n'] => (rest, 2),
                    [rest @ .., b'\n'] => (rest, 1),
                    rest => (rest, 0),
                };
                let mut end = content.len();
                while end > 0 && matches!(content[end - 1], b' ' | b'\t') {
                    end -= 1;
                }
                let (content, eol) = match content[..end].strip_suffix(b"=") {
                    Some(soft) => (soft, 0),
                    None => (&content[..end], eol),
                };
                let mut i = 0;
                while i < content.len() {
                    let escape = content[i] == b'='
                        && content.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                        && content.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
                    i += if escape { 3 } else { 1 };
                    size += 1;
                }
                size += eol;
            }
            size
        }
        _ => body.len() as u64,
    }
}

/// How deep parts nest at most (multiparts and messages in messages): deeper ones are
/// not listed. Dovecot stops at 100 levels; real mail rarely goes beyond 5.
const MAX_MIME_DEPTH: usize = 64;

/// Appends part `id` of `message` (and its sub-parts) to `out`, depth first, `depth`
/// levels below the root.
fn walk(
    message: &Message<'_>,
    id: u32,
    parent: Option<u32>,
    depth: usize,
    raw: &[u8],
    out: &mut Vec<MimePart>,
) {
    let total = raw.len();
    let Some(part) = message.parts.get(id as usize) else {
        return;
    };
    if depth > MAX_MIME_DEPTH {
        return;
    }
    let (header, body, end) = (
        part.offset_header as usize,
        part.offset_body as usize,
        part.offset_end as usize,
    );
    // Offsets of a message nested inside an encoded part are relative to the decoded
    // bytes, not to the stored body: such parts are not listed.
    if !(header <= body && body <= end && end <= total) {
        return;
    }
    let (content_type, subtype, params) = match part.content_type() {
        Some(ct) => (
            ct.ctype().to_ascii_lowercase(),
            ct.subtype().unwrap_or_default().to_ascii_lowercase(),
            ct.attributes()
                .unwrap_or_default()
                .iter()
                .map(|a| (a.name.to_string(), a.value.to_string()))
                .collect(),
        ),
        None if matches!(part.body, PartType::Multipart(_)) => {
            ("multipart".into(), "mixed".into(), Vec::new())
        }
        None if matches!(part.body, PartType::Message(_)) => {
            ("message".into(), "rfc822".into(), Vec::new())
        }
        None => ("text".into(), "plain".into(), Vec::new()),
    };
    // A type without a subtype (`Content-Type: text; charset=us-ascii`) is not valid
    // (RFC 2045 §5.1): the defaults of §5.2 apply, `text/plain`, as Python's `email`
    // does. The parameters are kept.
    let (content_type, subtype) = if subtype.is_empty() {
        ("text".to_string(), "plain".to_string())
    } else {
        (content_type, subtype)
    };
    // A delimiter line repeated (`--B` twice) ends an empty preamble of the part, not a
    // line of its header: the part's header starts after the last one.
    let boundary = parent.and_then(|p| {
        out.get(p as usize)?
            .params
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("boundary"))
            .map(|(_, value)| value.clone())
    });
    let header = match &boundary {
        Some(boundary) => skip_delimiters(raw, header, body, boundary.as_bytes()),
        None => header,
    };
    let extra = |name: &str| raw_value(&part.headers, &message.raw_message, name);
    let index = out.len() as u32;
    out.push(MimePart {
        parent,
        content_type,
        subtype,
        params,
        transfer_encoding: part.content_transfer_encoding().map(str::to_owned),
        disposition: part
            .content_disposition()
            .map(|d| d.ctype().to_ascii_lowercase()),
        filename: part.attachment_name().map(str::to_owned),
        content_id: part.content_id().map(str::to_owned),
        header_offset: header as u64,
        body_offset: body as u64,
        end_offset: end as u64,
        lines: raw[body..end].iter().filter(|&&b| b == b'\n').count() as u32,
        description: extra("Content-Description"),
        languages: extra("Content-Language")
            .map(|tags| {
                tags.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        location: extra("Content-Location"),
        md5: extra("Content-MD5"),
        disposition_params: part
            .content_disposition()
            .and_then(|d| d.attributes())
            .unwrap_or_default()
            .iter()
            .map(|a| (a.name.to_string(), a.value.to_string()))
            .collect(),
        decoded_size: (!matches!(part.body, PartType::Multipart(_)))
            .then(|| decoded_size(part.content_transfer_encoding(), &raw[body..end])),
        envelope: match &part.body {
            PartType::Message(nested) => Some(Box::new(envelope(nested))),
            _ => None,
        },
    });
    match &part.body {
        PartType::Multipart(children) => {
            // A child follows its parent in mail-parser's list; malformed mail can make
            // one name an earlier part (a cycle, found by the fuzz target): not followed.
            for child in children.iter().filter(|c| **c > id) {
                walk(message, *child, Some(index), depth + 1, raw, out);
            }
        }
        // A nested message parsed in place shares the outer message's offsets (its
        // `raw_message` is the whole outer message); one parsed from decoded bytes does
        // not, and stays a leaf.
        PartType::Message(nested) if nested.raw_message.len() == total => {
            walk(nested, 0, Some(index), depth + 1, raw, out);
        }
        _ => {}
    }
}

/// The offset after every delimiter line `--boundary` (with optional trailing white
/// space) at `from`, not beyond `limit`.
fn skip_delimiters(raw: &[u8], mut from: usize, limit: usize, boundary: &[u8]) -> usize {
    loop {
        let rest = &raw[from..limit];
        let Some(line_end) = rest.iter().position(|&b| b == b'\n') else {
            return from;
        };
        let line = &rest[..line_end];
        let is_delimiter = line.len() >= 2 + boundary.len()
            && line.starts_with(b"--")
            && &line[2..2 + boundary.len()] == boundary
            && line[2 + boundary.len()..]
                .iter()
                .all(|b| matches!(b, b' ' | b'\t' | b'\r'));
        if !is_delimiter {
            return from;
        }
        from += line_end + 1;
    }
}

/// The part an IMAP section number (`BODY[1.2]`, RFC 9051 §6.4.5) names, as an index
/// into `parts`. The empty path is the whole message (index 0).
pub(crate) fn imap_section(parts: &[MimePart], path: &[u32]) -> Option<usize> {
    if parts.is_empty() {
        return None;
    }
    let children = |of: usize| -> Vec<usize> {
        (0..parts.len())
            .filter(|&i| parts[i].parent == Some(of as u32))
            .collect()
    };
    let mut current = 0usize;
    for (depth, &n) in path.iter().enumerate() {
        if n == 0 {
            return None;
        }
        let part = &parts[current];
        // A message/rfc822 part's sub-parts are those of the message it holds.
        let container = if part.content_type == "message" && depth > 0 {
            *children(current).first()?
        } else {
            current
        };
        let c = &parts[container];
        // Only the message itself, or one nested in a message/rfc822 part, has a part 1
        // when it is not multipart.
        let is_message = depth == 0 || container != current;
        current = if c.content_type == "multipart" {
            *children(container).get(n as usize - 1)?
        } else if n == 1 && is_message {
            container
        } else {
            return None;
        };
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs the fuzz target `mail_analysis` found (kept in `fuzz/corpus/mail_analysis`):
    /// analysed without a panic, whatever the build.
    #[test]
    fn fuzz_findings_are_analysed_without_a_panic() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/mail_analysis");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if !path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("crash-")
            {
                continue;
            }
            let raw = std::fs::read(&path).unwrap();
            let analysis = analyze(&raw, false);
            assert!(analysis
                .parts
                .iter()
                .all(|p| p.end_offset <= raw.len() as u64));
            seen += 1;
        }
        assert!(seen >= 1, "the fuzz findings are kept");
    }
}
