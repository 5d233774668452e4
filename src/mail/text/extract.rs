//! The searchable text of a message (proposal §1.1): three [folded](super::fold) UTF-8
//! streams, the one definition that the index, the brute-force [oracle](super::oracle) and
//! the verification of candidates share.
//!
//! - **`header`**: every field of the top-level header, in order, as `Name: value\n`, the
//!   value unfolded and its RFC 2047 encoded-words decoded (every field is read as
//!   unstructured text, so addresses, ids and dates are searchable as written), except
//!   the signature and anti-spam fields of [`EXCLUDED_FIELDS`].
//! - **`body`**: the text of every `text/*` part, depth first, transfer encoding removed
//!   and charset converted to UTF-8 (`text/html` reduced to text by mail-parser's
//!   `html_to_text`, the converter of the JMAP preview); a nested message adds its parts
//!   (its header goes to `mime`: `BODY` skips headers, as Dovecot's body search does); a
//!   `message/*` part that is not read as a message (`message/partial`,
//!   `message/delivery-status`) adds its bytes as they are. Parts are separated by `\n`.
//! - **`mime`**: the header lines of every part but the root (by the same rules, a nested
//!   message's header included), and one
//!   `Filename: name\n` line per named part (the root included) with the name decoded (RFC 2231 continuations
//!   and charsets, RFC 2047): where attachment names are searched (`TEXT`, not `BODY`).
//!
//! Every piece is folded, then any word run (§2.1) of a spaced script longer than
//! [`LONG_WORD_CHARS`] code points is replaced by its first and last
//! [`LONG_WORD_KEPT_CHARS`] joined by U+FFFC (random base64 and hex blobs cost the index
//! their own size and nobody searches their middles). The three streams together hold at
//! most [`MAX_TEXT_LEN`] bytes; beyond that, and for a message above the parse limit (of
//! which only the header is read), the text is cut and marked incomplete.

use std::sync::LazyLock;

use mail_parser::decoders::html::html_to_text;
use mail_parser::{HeaderName, HeaderValue, Message, MessageParser, MimeHeaders, PartType};

use super::fold::fold_into;
use super::tokenize::{runs, Run};

/// The version of these rules: a text extracted under another version is extracted again.
/// 2: a nested message's header in `mime` (was `body`); `message/*` parts not read as
/// messages are text; parts of other types or of unknown transfer encodings are not.
pub const EXTRACTION_VERSION: u8 = 2;

/// Header fields left out of the `header` stream (compared ASCII case-insensitively; a
/// trailing `*` matches any rest): signatures and anti-spam reports, random data that is
/// larger than the body in much corporate mail (proposal §1.3). `HEADER name value`
/// still finds them ([`header_fields`] has every field).
pub const EXCLUDED_FIELDS: &[&str] = &[
    "DKIM-Signature",
    "X-Google-DKIM-Signature",
    "ARC-Seal",
    "ARC-Message-Signature",
    "ARC-Authentication-Results",
    "X-MS-Exchange-*",
    "X-Microsoft-Antispam*",
    "X-Forefront-Antispam-Report*",
    "X-Gm-Message-State",
    "X-Google-Smtp-Source",
    "X-Received",
];

/// A word run longer than this many code points keeps only its ends.
pub const LONG_WORD_CHARS: usize = 64;

/// The code points kept at each end of a long word.
pub const LONG_WORD_KEPT_CHARS: usize = 16;

/// The most bytes of folded text kept for one message (all three streams).
pub const MAX_TEXT_LEN: usize = 8 << 20;

/// The searchable text of one message, folded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractedText {
    /// Top-level header fields, one `Name: value\n` per field.
    pub header: String,
    /// Text of the `text/*` and `message/*` parts, parts separated by `\n`.
    pub body: String,
    /// Header lines of every non-root part and `Filename: name` lines.
    pub mime: String,
    /// `false` when the text was cut: the message is above the parse limit (only `header`
    /// is known) or its text above [`MAX_TEXT_LEN`].
    pub complete: bool,
}

impl ExtractedText {
    /// The total length of the three streams, in bytes.
    pub fn len(&self) -> usize {
        self.header.len() + self.body.len() + self.mime.len()
    }

    /// Whether all three streams are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The searchable text of `raw` (an RFC 5322 message). A message longer than
/// `max_parse_len` (as [`MailConfig::max_parse_len`](crate::mail::MailConfig::max_parse_len))
/// is not parsed: only its header is read and the text is incomplete. Never fails:
/// a message the parser cannot read gets its header block and the rest as plain text.
pub fn extract_message(raw: &[u8], max_parse_len: usize) -> ExtractedText {
    if raw.len() > max_parse_len {
        return extract_unparsed(raw, true);
    }
    match crate::mail::mime::parse(raw) {
        Some(message) => extract(&message),
        None => extract_unparsed(raw, false),
    }
}

/// The text of a message that is not parsed: its header block as `header`, and the rest
/// as plain `body` text (a message the parser cannot read) or nothing, incomplete
/// (`header_only`: a message above the parse limit, of which `raw` may be the start).
pub(crate) fn extract_unparsed(raw: &[u8], header_only: bool) -> ExtractedText {
    let end = crate::mail::mime::header_end(raw);
    let mut text = Streams::new();
    text.header_block(Stream::Header, &raw[..end]);
    if header_only {
        text.text.complete = false;
    } else {
        text.push(Stream::Body, &String::from_utf8_lossy(&raw[end..]));
    }
    text.finish()
}

/// The searchable text of a message already parsed by mail-parser (the analysis's parse).
pub(crate) fn extract(message: &Message<'_>) -> ExtractedText {
    let mut text = Streams::new();
    text.header_block(Stream::Header, root_header(message));
    text.parts(message);
    text.finish()
}

/// The `header` stream of a header block alone (what [`extract_message`] puts in
/// `header` for a message with this header): verification of header matches reads it from
/// the header block an email record keeps.
pub fn extract_header(header_block: &[u8]) -> String {
    let mut text = Streams::new();
    text.header_block(Stream::Header, header_block);
    text.finish().header
}

/// Every field of a header block, in order, as (name as written, value): the value
/// unfolded and RFC 2047-decoded, neither folded nor shortened, excluded fields included
/// (what `HEADER name value` searches).
pub fn header_fields(header_block: &[u8]) -> Vec<(String, String)> {
    let Some(parsed) = TEXT_PARSER.parse_headers(header_block) else {
        return Vec::new();
    };
    let Some(root) = parsed.parts.first() else {
        return Vec::new();
    };
    root.headers
        .iter()
        .map(|h| {
            let value = match &h.value {
                HeaderValue::Text(t) => t.replace(['\r', '\n'], " "),
                HeaderValue::TextList(list) => list.join(", ").replace(['\r', '\n'], " "),
                _ => String::new(),
            };
            (h.name.as_str().to_owned(), value)
        })
        .collect()
}

/// Whether `name` is one of [`EXCLUDED_FIELDS`].
pub fn is_excluded(name: &str) -> bool {
    EXCLUDED_FIELDS
        .iter()
        .any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => name
                .get(..prefix.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(prefix)),
            None => name.eq_ignore_ascii_case(pattern),
        })
}

/// The header block of `message` (its root part's header range; the raw bytes of a nested
/// message may be the whole outer message).
fn root_header<'a>(message: &'a Message<'_>) -> &'a [u8] {
    message
        .parts
        .first()
        .and_then(|root| {
            message
                .raw_message
                .get(root.offset_header as usize..root.offset_body as usize)
        })
        .unwrap_or_default()
}

/// A parser that reads every header field as unstructured text (RFC 2047 words decoded,
/// nothing else interpreted). Its map must not be empty: with an empty map mail-parser
/// ignores the default and uses its per-name parsers (addresses, ids, dates).
static TEXT_PARSER: LazyLock<MessageParser> = LazyLock::new(|| {
    MessageParser::new()
        .header_text(HeaderName::Subject)
        .default_header_text()
});

/// Which stream a piece of text goes to.
#[derive(Debug, Clone, Copy)]
enum Stream {
    Header,
    Body,
    Mime,
}

/// The streams being built, with what is left of the [`MAX_TEXT_LEN`] budget.
struct Streams {
    text: ExtractedText,
    left: usize,
    scratch: String,
}

impl Streams {
    fn new() -> Self {
        Self {
            text: ExtractedText {
                complete: true,
                ..ExtractedText::default()
            },
            left: MAX_TEXT_LEN,
            scratch: String::new(),
        }
    }

    fn finish(self) -> ExtractedText {
        self.text
    }

    /// The header fields of `block` as `Name: value\n` lines into `stream`, excluded
    /// fields left out.
    fn header_block(&mut self, stream: Stream, block: &[u8]) {
        let mut line = String::new();
        for (name, value) in header_fields(block) {
            if is_excluded(&name) {
                continue;
            }
            line.clear();
            line.push_str(&name);
            line.push_str(": ");
            line.push_str(&value);
            line.push('\n');
            self.push(stream, &line);
        }
    }

    /// The text of the parts of `message`, depth first: text parts to `body`, part headers
    /// to `mime`, nested messages recursively (mail-parser bounds their depth).
    fn parts(&mut self, message: &Message<'_>) {
        for (index, part) in message.parts.iter().enumerate() {
            if index > 0 {
                let header = message
                    .raw_message
                    .get(part.offset_header as usize..part.offset_body as usize)
                    .unwrap_or_default();
                self.header_block(Stream::Mime, header);
            }
            // The root's name too: a message that is one attachment (its header lines are
            // in `header` already, its decoded name only here).
            if let Some(name) = part.attachment_name() {
                self.push(Stream::Mime, &format!("Filename: {name}\n"));
            }
            match &part.body {
                // Only a text part's text: mail-parser gives a part whose base64 does
                // not decode as text whatever its type, and the bytes of a part whose
                // encoding it does not know (RFC 2045 6.4: such a part is
                // application/octet-stream). Dovecot skips both too.
                PartType::Text(_) | PartType::Html(_) if !is_text(part) => {}
                PartType::Text(text) => {
                    self.push(Stream::Body, text);
                    self.push(Stream::Body, "\n");
                }
                PartType::Html(html) => {
                    self.push(Stream::Body, &html_to_text(html));
                    self.push(Stream::Body, "\n");
                }
                PartType::Message(nested) => {
                    // A nested message's header is a part's header: `TEXT` finds it,
                    // `BODY` does not (as Dovecot, whose body search skips headers).
                    self.header_block(Stream::Mime, root_header(nested));
                    self.parts(nested);
                }
                // A `message/*` part mail-parser does not read as a message
                // (`message/partial`, `message/delivery-status`...) is text, as a part
                // without a type is: its bytes as they are.
                PartType::Binary(bytes) | PartType::InlineBinary(bytes)
                    if part
                        .content_type()
                        .is_some_and(|t| t.c_type.eq_ignore_ascii_case("message")) =>
                {
                    self.push(Stream::Body, &String::from_utf8_lossy(bytes));
                    self.push(Stream::Body, "\n");
                }
                PartType::Binary(_) | PartType::InlineBinary(_) | PartType::Multipart(_) => {}
            }
        }
    }

    /// `piece` folded, long words shortened, appended to `stream` within the budget.
    ///
    /// The piece is folded in chunks of at most [`CHUNK`] bytes cut after a space or line
    /// break where there is one (words never span a separator, so the result is the
    /// piece's): folding can multiply a text's size (U+FDFA is 18 characters in NFKD), and
    /// a chunk bounds what is held before the budget cuts it.
    fn push(&mut self, stream: Stream, piece: &str) {
        let mut rest = piece;
        while !rest.is_empty() {
            if self.left == 0 {
                self.text.complete = false;
                return;
            }
            let chunk = chunk(rest);
            rest = &rest[chunk.len()..];
            self.scratch.clear();
            fold_into(chunk, &mut self.scratch);
            let target = match stream {
                Stream::Header => &mut self.text.header,
                Stream::Body => &mut self.text.body,
                Stream::Mime => &mut self.text.mime,
            };
            let before = target.len();
            shorten_long_words(&self.scratch, target);
            let added = target.len() - before;
            if added > self.left {
                let mut end = before + self.left;
                while !target.is_char_boundary(end) {
                    end -= 1;
                }
                target.truncate(end);
                self.left = 0;
                self.text.complete = false;
                return;
            }
            self.left -= added;
        }
    }
}

/// Whether `part` holds text: its type is `text/*` or `message/*` (or none: text/plain),
/// and its transfer encoding one of RFC 2045's (or none or empty: 7bit).
fn is_text(part: &mail_parser::MessagePart<'_>) -> bool {
    let typed = part.content_type().is_none_or(|t| {
        t.c_type.eq_ignore_ascii_case("text") || t.c_type.eq_ignore_ascii_case("message")
    });
    let encoded = part.content_transfer_encoding().is_none_or(|e| {
        ["", "7bit", "8bit", "binary", "quoted-printable", "base64"]
            .iter()
            .any(|known| e.trim().eq_ignore_ascii_case(known))
    });
    typed && encoded
}

/// The most input bytes folded at once.
const CHUNK: usize = 64 << 10;

/// The first chunk of `text`: all of it up to [`CHUNK`] bytes, else up to its last space
/// or line break within the first [`CHUNK`] bytes, else up to a character boundary.
fn chunk(text: &str) -> &str {
    if text.len() <= CHUNK {
        return text;
    }
    let window = &text.as_bytes()[..CHUNK];
    let end = match memchr::memrchr2(b' ', b'\n', window) {
        Some(at) => at + 1,
        None => {
            let mut end = CHUNK;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            end
        }
    };
    &text[..end]
}

/// `folded` appended to `out`, each word run of a spaced script longer than
/// [`LONG_WORD_CHARS`] code points replaced by its first and last [`LONG_WORD_KEPT_CHARS`]
/// code points joined by U+FFFC.
fn shorten_long_words(folded: &str, out: &mut String) {
    for run in runs(folded) {
        match run {
            Run::Separator(c) => out.push(c),
            Run::NoSpace(text) => out.push_str(text),
            Run::Word(word) => {
                let count = word.chars().count();
                if count <= LONG_WORD_CHARS {
                    out.push_str(word);
                } else {
                    out.extend(word.chars().take(LONG_WORD_KEPT_CHARS));
                    out.push('\u{FFFC}');
                    out.extend(word.chars().skip(count - LONG_WORD_KEPT_CHARS));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{extract_header, extract_message, header_fields, is_excluded, MAX_TEXT_LEN};

    const LIMIT: usize = 64 << 20;

    #[test]
    fn header_stream_decodes_every_field_as_text() {
        let block = b"From: \"Doe, John\" <j@x.org>\r\nSubject: =?UTF-8?Q?Caf=C3=A9?= =?ISO-8859-1?Q?_cr=E8me?=\r\n  br\xc3\xbbl\xc3\xa9e\r\nDKIM-Signature: v=1; b=abc\r\nX-MS-Exchange-Foo: bar\r\nMessage-ID: <a.b@c>\r\nDate: Mon, 2 Dec 2024 10:00:00 +0000\r\n\r\n";
        let header = extract_header(block);
        assert_eq!(
            header,
            "FROM: \"DOE, JOHN\" <J@X.ORG>\nSUBJECT: CAFE\u{301} CRE\u{300}ME BRU\u{302}LE\u{301}E\nMESSAGE-ID: <A.B@C>\nDATE: MON, 2 DEC 2024 10:00:00 +0000\n"
        );
        let fields = header_fields(block);
        assert_eq!(fields.len(), 6);
        assert_eq!(
            fields[2],
            ("DKIM-Signature".to_owned(), "v=1; b=abc".to_owned())
        );
        assert!(is_excluded("x-ms-exchange-organization-id"));
        assert!(is_excluded("ARC-Seal"));
        assert!(!is_excluded("ARC-Sealed"));
        assert!(!is_excluded("Received"));
    }

    #[test]
    fn body_and_mime_streams() {
        let raw = concat!(
            "From: a@b\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n",
            "--XX\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n",
            "Gr=FC=DFe aus K=F6ln\r\n",
            "--XX\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n",
            "PHA+SGVsbG8gPGI+V29ybGQ8L2I+PC9wPg==\r\n",
            "--XX\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment;\r\n filename*0*=utf-8''%E2%82%AC%20rep;\r\n filename*1=ort.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n",
            "JVBERi0xLjQK\r\n",
            "--XX\r\nContent-Type: message/rfc822\r\n\r\n",
            "Subject: inner =?utf-8?B?w7xiZXI=?=\r\n\r\nnested body\r\n",
            "--XX--\r\n"
        );
        let text = extract_message(raw.as_bytes(), LIMIT);
        assert!(text.complete);
        assert_eq!(
            text.header,
            "FROM: A@B\nSUBJECT: S\nCONTENT-TYPE: MULTIPART/MIXED; BOUNDARY=XX\n"
        );
        assert_eq!(
            text.body,
            "GRU\u{308}ßE AUS KO\u{308}LN\nHELLO WORLD\n\nNESTED BODY\n"
        );
        assert!(
            text.mime.contains("SUBJECT: INNER U\u{308}BER\n"),
            "a nested message's header is a part header: {:?}",
            text.mime
        );
        assert!(
            text.mime.contains("FILENAME: € REPORT.PDF\n"),
            "{:?}",
            text.mime
        );
        assert!(
            text.mime.contains("CONTENT-TYPE: MESSAGE/RFC822\n"),
            "{:?}",
            text.mime
        );
        assert!(!text.mime.contains("JVBER"));
    }

    #[test]
    fn message_parts_that_are_not_messages_are_text() {
        let raw = concat!(
            "Subject: In parts\r\nContent-Type: multipart/mixed; boundary=1\r\n\r\n",
            "--1\r\nContent-Type: text/plain\r\n\r\nfirst\r\n",
            "--1\r\nContent-Type: message/partial; number=1; total=2; id=\"x@y\"\r\n\r\n",
            "X-Weird: Hello\r\n\r\nrest\r\n",
            "--1--\r\n"
        );
        let text = extract_message(raw.as_bytes(), LIMIT);
        assert!(text.body.contains("X-WEIRD: HELLO"), "{:?}", text.body);
    }

    #[test]
    fn parts_that_are_not_text_add_nothing() {
        let raw = concat!(
            "Subject: s\r\nContent-Type: multipart/mixed; boundary=1\r\n\r\n",
            "--1\r\nContent-Type: audio/basic\r\nContent-Transfer-Encoding: base64\r\n\r\n",
            "... not base64 at all ...\r\n",
            "--1\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n",
            "begin 600 f.txt\r\nM1&EE($AA<V5N\r\nend\r\n",
            "--1\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: 8BIT\r\n\r\n",
            "kept\r\n",
            "--1--\r\n"
        );
        let text = extract_message(raw.as_bytes(), LIMIT);
        assert_eq!(text.body, "KEPT\n");
    }

    #[test]
    fn long_words_keep_their_ends() {
        let word: String = ('a'..='z').cycle().take(100).collect();
        let raw = format!(
            "Subject: x\r\n\r\nsee {word} and a{} too\r\n",
            "b".repeat(63)
        );
        let text = extract_message(raw.as_bytes(), LIMIT);
        let expected = format!(
            "SEE {}\u{FFFC}{} AND A{} TOO\r\n\n",
            &word[..16].to_uppercase(),
            &word[84..].to_uppercase(),
            "B".repeat(63)
        );
        assert_eq!(text.body, expected);
    }

    #[test]
    fn limits_cut_the_text_and_say_so() {
        let raw = format!("Subject: big\r\n\r\n{}", "word ".repeat(MAX_TEXT_LEN / 4));
        let text = extract_message(raw.as_bytes(), LIMIT);
        assert!(!text.complete);
        assert_eq!(text.len(), MAX_TEXT_LEN);
        let small = extract_message(raw.as_bytes(), 100);
        assert!(!small.complete);
        assert_eq!(small.header, "SUBJECT: BIG\n");
        assert!(small.body.is_empty());
        // A text whose folded form is 18 times larger (U+FDFA): cut at the budget, and
        // folded chunk by chunk (the same text as in one piece, below the budget).
        let bomb = format!("Subject: x\r\n\r\n{}", "\u{FDFA} ".repeat(MAX_TEXT_LEN / 8));
        let text = extract_message(bomb.as_bytes(), LIMIT);
        assert!(!text.complete);
        assert!(text.len() <= MAX_TEXT_LEN && text.len() > MAX_TEXT_LEN - 64);
        let small = format!("Subject: x\r\n\r\n{}", "\u{FDFA} ".repeat(20_000));
        let text = extract_message(small.as_bytes(), LIMIT);
        assert!(text.complete);
        let folded = crate::mail::text::fold::fold(&"\u{FDFA} ".repeat(20_000));
        assert_eq!(text.body, format!("{folded}\n"));
        // Headerless input: the whole of it is body text.
        let text = extract_message(b"just text, no header", LIMIT);
        assert!(text.body.contains("JUST TEXT") || text.header.contains("JUST TEXT"));
    }
}
