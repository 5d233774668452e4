//! What is computed once from a message at append: the envelope fields and the MIME part
//! tree with byte offsets, by the `mail-parser` crate.

use mail_parser::{
    Address as ParsedAddress, HeaderValue, Message, MessageParser, MimeHeaders, PartType,
};

use crate::format::mail::{Address, Envelope, MimePart};

/// Envelope and MIME structure of `raw` (an RFC 5322 message). Never fails: a message the
/// parser cannot make sense of gets an empty envelope and no parts (it is then read
/// whole).
pub(crate) fn analyze(raw: &[u8]) -> (Envelope, Vec<MimePart>) {
    let Some(message) = MessageParser::default().parse(raw) else {
        return (Envelope::default(), Vec::new());
    };
    let mut parts = Vec::new();
    walk(&message, 0, None, raw.len(), raw, &mut parts);
    (envelope(&message), parts)
}

/// Parses only the header block of `prefix` (the start of a message too large to parse
/// whole): the envelope, no parts.
pub(crate) fn analyze_header(prefix: &[u8]) -> Envelope {
    let end = prefix
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .or_else(|| prefix.windows(2).position(|w| w == b"\n\n").map(|p| p + 2))
        .unwrap_or(prefix.len());
    MessageParser::default()
        .parse_headers(&prefix[..end])
        .map(|m| envelope(&m))
        .unwrap_or_default()
}

fn addresses(value: Option<&ParsedAddress<'_>>) -> Vec<Address> {
    let Some(value) = value else {
        return Vec::new();
    };
    value
        .iter()
        .filter_map(|a| {
            Some(Address {
                name: a.name.as_ref().map(|n| n.to_string()),
                email: a.address.as_ref()?.to_string(),
            })
        })
        .collect()
}

fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    value
        .as_text_list()
        .map(|l| l.iter().map(|s| s.to_string()).collect())
        .unwrap_or_default()
}

fn envelope(m: &Message<'_>) -> Envelope {
    Envelope {
        date: m.date().map(|d| d.to_timestamp()),
        subject: m.subject().map(str::to_owned),
        from: addresses(m.from()),
        sender: addresses(m.sender()),
        reply_to: addresses(m.reply_to()),
        to: addresses(m.to()),
        cc: addresses(m.cc()),
        bcc: addresses(m.bcc()),
        message_id: m.message_id().map(str::to_owned),
        in_reply_to: ids(m.in_reply_to()),
        references: ids(m.references()),
    }
}

/// Appends part `id` of `message` (and its sub-parts) to `out`, depth first.
fn walk(
    message: &Message<'_>,
    id: u32,
    parent: Option<u32>,
    total: usize,
    raw: &[u8],
    out: &mut Vec<MimePart>,
) {
    let Some(part) = message.parts.get(id as usize) else {
        return;
    };
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
    });
    match &part.body {
        PartType::Multipart(children) => {
            for child in children {
                walk(message, *child, Some(index), total, raw, out);
            }
        }
        // A nested message parsed in place shares the outer message's offsets (its
        // `raw_message` is the whole outer message); one parsed from decoded bytes does
        // not, and stays a leaf.
        PartType::Message(nested) if nested.raw_message.len() == total => {
            walk(nested, 0, Some(index), total, raw, out);
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
