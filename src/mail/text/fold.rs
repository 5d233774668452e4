//! Folding for case-insensitive comparison: the `i;unicode-casemap` comparator of RFC 5051,
//! the default comparator of IMAP (RFC 9051 §6.4.4 via RFC 5255) and the one Dovecot uses.
//!
//! RFC 5051 §2: each character is replaced by its *simple* titlecase (UnicodeData.txt field
//! 14, so `ß` stays `ß`: its full mapping `Ss` is not used), then by its compatibility
//! decomposition (NFKD), and this is repeated until nothing changes; two strings compare by
//! their folded octets, and a substring is an octet substring of the folded strings.
//!
//! Folding is a map *per character* (no canonical reordering across characters, as in
//! Dovecot's `uni_utf8_to_decomposed_titlecase`), so `fold(a + b) == fold(a) + fold(b)`:
//! text can be folded piece by piece, and a substring of the input folds to a substring of
//! the folded input. The folded form of every character is a fixed point, so
//! `fold(fold(s)) == fold(s)`.
//!
//! ```
//! use mailvault::mail::text::fold::{contains, fold};
//! assert_eq!(fold("Straße"), "STRAßE"); // simple titlecase: ß has none
//! assert_eq!(fold("ﬁle"), "FILE"); // NFKD splits the ligature
//! assert_eq!(fold("café"), "CAFE\u{301}"); // é = E + combining acute
//! assert!(contains("Re: Café au lait", "CAFÉ AU"));
//! assert!(contains("Re: Café au lait", "cafe")); // the accent follows the needle
//! assert!(!contains("Re: Café au lait", "cafe au")); // ...and here it is inside it
//! ```

use icu_casemap::{CaseMapper, CaseMapperBorrowed};
use icu_normalizer::{DecomposingNormalizer, DecomposingNormalizerBorrowed};

/// The Unicode version of the case and decomposition data folding uses (ICU4X's compiled
/// data): an index stores it, so that text folded under other data is re-folded.
pub const UNICODE_VERSION: (u8, u8, u8) = (17, 0, 0);

/// `s` folded (see the [module](self)).
pub fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    fold_into(s, &mut out);
    out
}

/// `s` folded and appended to `out`: extraction folds a message piece by piece into one
/// buffer.
pub fn fold_into(s: &str, out: &mut String) {
    out.reserve(s.len());
    let bytes = s.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        // ASCII fast path: the titlecase of an ASCII letter is its uppercase, every other
        // ASCII character folds to itself.
        let ascii = bytes[start..]
            .iter()
            .position(|b| !b.is_ascii())
            .map_or(bytes.len(), |n| start + n);
        let at = out.len();
        out.push_str(&s[start..ascii]);
        out[at..].make_ascii_uppercase();
        if ascii == bytes.len() {
            break;
        }
        let rest = &s[ascii..];
        let mut chars = rest.char_indices();
        let mut next = rest.len();
        for (at, c) in chars.by_ref() {
            if c.is_ascii() {
                next = at;
                break;
            }
            fold_char_into(c, out);
        }
        start = ascii + next;
    }
}

/// Whether `haystack` contains `needle` under `i;unicode-casemap` (the empty needle is in
/// every string, RFC 9051). ASCII on both sides is compared in place.
pub fn contains(haystack: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    if haystack.is_ascii() && needle.is_ascii() {
        let (haystack, needle) = (haystack.as_bytes(), needle.as_bytes());
        return haystack
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle));
    }
    memchr::memmem::find(fold(haystack).as_bytes(), fold(needle).as_bytes()).is_some()
}

/// The folded form of one non-ASCII character, appended to `out`: simple titlecase and
/// NFKD of each resulting character, until a fixed point (RFC 5051 §2).
fn fold_char_into(c: char, out: &mut String) {
    fold_char_at_depth(c, out, 0);
}

/// [`fold_char_into`] at recursion `depth`. The Unicode data has no cycles (titlecase
/// mappings are idempotent, decompositions only split characters into parts), so the
/// fixed point comes after two or three steps; the depth bound only makes that a fact of
/// this code rather than of the data.
fn fold_char_at_depth(c: char, out: &mut String, depth: u8) {
    const CASE: CaseMapperBorrowed<'static> = CaseMapper::new();
    const NFKD: DecomposingNormalizerBorrowed<'static> = DecomposingNormalizer::new_nfkd();
    if c.is_ascii() || depth >= 8 {
        out.push(c.to_ascii_uppercase());
        return;
    }
    let mut step = NFKD.normalize_iter(std::iter::once(CASE.simple_titlecase(c)));
    match (step.next(), step.next()) {
        (Some(d), None) if d == c => out.push(d),
        (first, second) => {
            for d in first.into_iter().chain(second).chain(step) {
                fold_char_at_depth(d, out, depth + 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{contains, fold};

    /// Known RFC 5051 results (the titlecase and decomposition columns of UnicodeData.txt).
    #[test]
    fn folds_as_rfc_5051_says() {
        let cases = [
            ("", ""),
            ("abcXYZ 09!~", "ABCXYZ 09!~"),
            // Simple titlecase: ß has no simple titlecase mapping (full: "Ss").
            ("ß", "ß"),
            ("Straße", "STRAßE"),
            ("ẞ", "ẞ"),
            // Greek sigma: the three forms fold to one capital.
            ("σ", "Σ"),
            ("ς", "Σ"),
            ("Σ", "Σ"),
            ("ΟΔΟΣ οδος οδoς", "ΟΔΟΣ ΟΔΟΣ ΟΔOΣ"),
            // Ligatures and compatibility characters (NFKD).
            ("ﬁ", "FI"),
            ("ﬀ", "FF"),
            ("ﬃ", "FFI"),
            ("Ａｂｃ１", "ABC1"),
            ("½", "1\u{2044}2"),
            ("™", "TM"),
            ("㎏", "KG"),
            // Kelvin and Ångström signs decompose canonically.
            ("\u{212A}", "K"),
            ("\u{212B}", "A\u{30A}"),
            // Accents decompose and stay as combining marks.
            ("é", "E\u{301}"),
            ("É", "E\u{301}"),
            ("E\u{301}", "E\u{301}"),
            ("Ǆ", "DZ\u{30C}"),
            // Digraphs: titlecase (not uppercase) form, then decomposed.
            ("ǆ", "DZ\u{30C}"),
            ("ǅ", "DZ\u{30C}"),
            ("ǉ", "LJ"),
            // Dotted and dotless i: simple titlecase of ı is I; İ decomposes.
            ("ı", "I"),
            ("İ", "I\u{307}"),
            // Georgian Mkhedruli has an uppercase (Mtavruli) but is its own titlecase.
            ("ა", "ა"),
            // Iota subscript: titlecase ᾼ, decomposed to Α + U+0345, whose titlecase is Ι
            // (the fixed point; Dovecot stops after one decomposition: Α + U+0345).
            ("ᾳ", "ΑΙ"),
            // Hangul syllables decompose into jamo.
            ("한", "\u{1112}\u{1161}\u{11AB}"),
            // CJK and Kana: no case, no decomposition (half-width kana do decompose).
            ("東京", "東京"),
            ("ｶ", "カ"),
        ];
        for (input, expected) in cases {
            assert_eq!(fold(input), expected, "fold({input:?})");
            assert_eq!(
                fold(expected),
                expected,
                "fold({expected:?}) is a fixed point"
            );
        }
    }

    #[test]
    fn contains_is_the_folded_substring() {
        assert!(contains("", ""));
        assert!(contains("x", ""));
        assert!(!contains("", "x"));
        assert!(contains("Re: Project Update", "pROJECT uP"));
        assert!(!contains("needle", "needles"));
        assert!(contains("\u{212A}elvin scale", "KELVIN"));
        assert!(contains("STRASSE Straße", "straße"));
        assert!(!contains("Strasse", "straße"));
        assert!(contains("ΟΔΟΣ", "οδος"));
        // Accents decompose into base + combining mark: a needle without the mark matches
        // where the mark ends the needle's text only (as in Dovecot).
        assert!(contains("Café", "cafe"));
        assert!(!contains("Résumé", "resume"));
        assert!(contains("Résumé", "RÉSUMÉ"));
        assert!(!contains("resume", "résumé"));
        assert!(contains("ﬁnancial", "FIN"));
        assert!(contains("Ｍａｉｌ", "mail"));
    }

    proptest::proptest! {
        /// Folding never panics, is idempotent, and is a per-character map (so pieces
        /// fold independently and substrings stay substrings).
        #[test]
        fn fold_is_idempotent_and_per_character(a in "\\PC*", b in "\\PC*") {
            let (fa, fb) = (fold(&a), fold(&b));
            proptest::prop_assert_eq!(fold(&fa), fa.clone());
            proptest::prop_assert_eq!(fold(&format!("{a}{b}")), format!("{fa}{fb}"));
            let ab = a.clone() + &b;
            proptest::prop_assert!(contains(&ab, &b));
        }

        /// Any char at all, including unassigned, surrogates excluded by `char`.
        #[test]
        fn fold_of_any_char_is_a_fixed_point(c in proptest::char::any()) {
            let folded = fold(&c.to_string());
            proptest::prop_assert!(!folded.is_empty());
            proptest::prop_assert_eq!(fold(&folded), folded);
        }
    }
}
