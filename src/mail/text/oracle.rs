//! The brute-force answer to text search keys: every message extracted
//! ([`extract_message`]) and every needle looked for in its streams. Exact by definition,
//! slow by design: the oracle the index is checked against, and the path for mail the
//! index does not cover yet.
//!
//! Semantics (RFC 9051 §6.4.4, with the text model of [`extract`](super::extract)):
//! - `BODY s`: the `body` stream contains `fold(s)`;
//! - `TEXT s`: the `header`, `body` or `mime` stream contains it;
//! - `HEADER name s` (and `SUBJECT`, `FROM`, `TO`, `CC`, `BCC`, which are `HEADER` of
//!   their field): a top-level header field of that name (ASCII case-insensitive) whose
//!   decoded value contains `fold(s)`; with `s` empty, any field of that name. Every field
//!   counts here, [excluded](super::extract::EXCLUDED_FIELDS) ones too, and values are
//!   not shortened.
//!
//! [`Oracle`] evaluates many keys in one pass: each message is parsed and extracted once.

use memchr::memmem::Finder;

use super::extract::{extract_message, header_fields, ExtractedText};
use super::fold::{fold, fold_into};

/// A text search key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextKey {
    /// `BODY s`.
    Body(String),
    /// `TEXT s`.
    Text(String),
    /// `HEADER name s`: `SUBJECT s` is `Header("Subject", s)`, and so for `FROM`, `TO`,
    /// `CC` and `BCC`.
    Header(String, String),
}

impl TextKey {
    /// `SUBJECT s`.
    pub fn subject(s: &str) -> Self {
        Self::Header("Subject".to_owned(), s.to_owned())
    }

    /// `FROM s`.
    pub fn from(s: &str) -> Self {
        Self::Header("From".to_owned(), s.to_owned())
    }

    /// `TO s`.
    pub fn to(s: &str) -> Self {
        Self::Header("To".to_owned(), s.to_owned())
    }

    /// `CC s`.
    pub fn cc(s: &str) -> Self {
        Self::Header("Cc".to_owned(), s.to_owned())
    }

    /// `BCC s`.
    pub fn bcc(s: &str) -> Self {
        Self::Header("Bcc".to_owned(), s.to_owned())
    }
}

/// Whether the message `raw` matches `key` (one key, one message: [`Oracle`] for more).
pub fn matches(raw: &[u8], key: &TextKey, max_parse_len: usize) -> bool {
    Oracle::new(std::slice::from_ref(key), max_parse_len).matches(raw)[0]
}

/// Keys prepared for a scan: needles folded once, one substring finder each.
#[derive(Debug)]
pub struct Oracle {
    keys: Vec<Prepared>,
    max_parse_len: usize,
    headers: bool,
}

/// A key with its folded needle.
#[derive(Debug)]
struct Prepared {
    field: Field,
    finder: Finder<'static>,
}

#[derive(Debug)]
enum Field {
    Body,
    Text,
    Header(String),
}

impl Oracle {
    /// An oracle for `keys`, extracting messages as [`extract_message`] does with
    /// `max_parse_len`.
    pub fn new(keys: &[TextKey], max_parse_len: usize) -> Self {
        let keys: Vec<Prepared> = keys
            .iter()
            .map(|key| {
                let (field, needle) = match key {
                    TextKey::Body(s) => (Field::Body, s),
                    TextKey::Text(s) => (Field::Text, s),
                    TextKey::Header(name, s) => (Field::Header(name.clone()), s),
                };
                Prepared {
                    field,
                    finder: Finder::new(fold(needle).as_bytes()).into_owned(),
                }
            })
            .collect();
        let headers = keys.iter().any(|k| matches!(k.field, Field::Header(_)));
        Self {
            keys,
            max_parse_len,
            headers,
        }
    }

    /// For each key (in order), whether the message `raw` matches it.
    pub fn matches(&self, raw: &[u8]) -> Vec<bool> {
        let text = extract_message(raw, self.max_parse_len);
        let end = crate::mail::mime::header_end(raw);
        self.matches_extracted(&text, &raw[..end])
    }

    /// [`matches`](Self::matches) for a message already extracted: its text and its
    /// header block (for `HEADER` keys).
    pub(crate) fn matches_extracted(&self, text: &ExtractedText, header_block: &[u8]) -> Vec<bool> {
        let fields = if self.headers {
            folded_fields(header_block)
        } else {
            Vec::new()
        };
        self.keys
            .iter()
            .map(|key| key.matches(text, &fields))
            .collect()
    }

    /// For each key, whether the message with this header block matches it, for keys
    /// that `HEADER` keys only (`None` for the others: they need the body).
    pub(crate) fn matches_header_block(&self, header_block: &[u8]) -> Vec<Option<bool>> {
        let fields = folded_fields(header_block);
        let empty = ExtractedText::default();
        self.keys
            .iter()
            .map(|key| matches!(key.field, Field::Header(_)).then(|| key.matches(&empty, &fields)))
            .collect()
    }

    /// For each key (in order), the indices of the messages of `messages` that match it,
    /// ascending: one extraction per message for all keys.
    pub fn scan<'m>(&self, messages: impl IntoIterator<Item = &'m [u8]>) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.keys.len()];
        for (index, raw) in messages.into_iter().enumerate() {
            for (hits, matched) in out.iter_mut().zip(self.matches(raw)) {
                if matched {
                    hits.push(index);
                }
            }
        }
        out
    }
}

/// The fields of a header block with their values folded (what `HEADER` compares).
fn folded_fields(header_block: &[u8]) -> Vec<(String, String)> {
    header_fields(header_block)
        .into_iter()
        .map(|(name, value)| {
            let mut folded = String::with_capacity(value.len());
            fold_into(&value, &mut folded);
            (name, folded)
        })
        .collect()
}

impl Prepared {
    fn matches(&self, text: &ExtractedText, fields: &[(String, String)]) -> bool {
        let found = |hay: &str| self.finder.find(hay.as_bytes()).is_some();
        match &self.field {
            Field::Body => found(&text.body),
            Field::Text => found(&text.header) || found(&text.body) || found(&text.mime),
            Field::Header(name) => fields
                .iter()
                .any(|(field, value)| field.eq_ignore_ascii_case(name) && found(value)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{matches, Oracle, TextKey};

    const LIMIT: usize = 64 << 20;

    #[test]
    fn keys_over_streams() {
        let a: &[u8] = b"From: Ann <ann@x.org>\r\nSubject: =?utf-8?q?R=C3=A9union?=\r\nDKIM-Signature: b=SIGNED\r\nContent-Type: text/html\r\n\r\n<p>Caf&eacute; <b>at</b> noon</p>\r\n";
        let b: &[u8] = b"From: Bob <bob@y.org>\r\nTo: ann@x.org\r\nSubject: lunch\r\n\r\nNothing =E9 here, see www.x.org\r\n";
        let keys = [
            TextKey::Body("cafe".into()),
            TextKey::Body("café at noon".into()),
            TextKey::Body("<b>".into()),
            TextKey::Text("réunion".into()),
            TextKey::Text("x.org".into()),
            TextKey::Text("SIGNED".into()),
            TextKey::Header("dkim-signature".into(), "signed".into()),
            TextKey::Header("To".into(), "".into()),
            TextKey::subject("RÉUNION"),
            TextKey::from("bob@"),
            TextKey::to("ann"),
            TextKey::cc(""),
            TextKey::Body("".into()),
            TextKey::Body("ann@x".into()),
        ];
        let oracle = Oracle::new(&keys, LIMIT);
        let got = oracle.scan([a, b]);
        let expected: [&[usize]; 14] = [
            &[0],
            &[0],
            &[],
            &[0],
            &[0, 1],
            &[], // excluded from the header stream
            &[0],
            &[1],
            &[0],
            &[1],
            &[1],
            &[],
            &[0, 1],
            &[],
        ];
        for ((key, got), expected) in keys.iter().zip(&got).zip(expected) {
            assert_eq!(got, expected, "{key:?}");
        }
        assert!(matches(a, &TextKey::Body("NOON".into()), LIMIT));
        assert!(!matches(b, &TextKey::Body("NOON".into()), LIMIT));
    }
}
