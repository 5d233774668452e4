//! The words of folded text (proposal §2.1), and whether a query lies within one word.
//!
//! Over [folded](super::fold) text:
//! - a **word char** is a letter, mark or number (General_Category `L*`, `M*`, `N*`);
//!   anything else (space, punctuation, symbols, U+0000) is a **separator**;
//! - a **run** is a maximal sequence of word chars that does not change script: a char of
//!   another script starts a new run; Common chars (digits...) join a run of a spaced
//!   script and start a new run after a no-space one; Inherited chars (combining marks)
//!   join the run they follow;
//! - a run of a script written without spaces (Han, Hiragana, Katakana, Thai, Lao, Khmer,
//!   Myanmar) is emitted as its overlapping **bigrams** of code points (a run of one code
//!   point as itself), as Lucene's CJK bigram filter does; any other run is one **word**.
//!
//! The index keeps the distinct words of a document; [`classify`] says when "the document
//! contains the needle" is the same as "one of its words contains the needle", so that the
//! answer needs no look at the text.

use icu_properties::props::{GeneralCategory, GeneralCategoryGroup, Script};
use icu_properties::{CodePointMapData, CodePointMapDataBorrowed};

/// One token of folded text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// A word: a run of a spaced script, or a bigram (or lone code point) of a no-space run.
    Word(&'a str),
    /// A separator char (each occurrence).
    Sep(char),
}

/// The tokens of `folded` (text already [folded](super::fold::fold)), in order.
pub fn tokens(folded: &str) -> Tokens<'_> {
    Tokens {
        runs: runs(folded),
        bigrams: None,
    }
}

/// Iterator of [`tokens`] (allocates nothing).
#[derive(Debug, Clone)]
pub struct Tokens<'a> {
    runs: Runs<'a>,
    bigrams: Option<Bigrams<'a>>,
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        loop {
            if let Some(bigram) = self.bigrams.as_mut().and_then(Iterator::next) {
                return Some(Token::Word(bigram));
            }
            self.bigrams = None;
            return Some(match self.runs.next()? {
                Run::Separator(c) => Token::Sep(c),
                Run::Word(word) => Token::Word(word),
                Run::NoSpace(text) => {
                    self.bigrams = Some(bigrams(text));
                    continue;
                }
            });
        }
    }
}

/// The words of `folded`: [`tokens`] without the separators.
pub fn words(folded: &str) -> impl Iterator<Item = &str> {
    tokens(folded).filter_map(|t| match t {
        Token::Word(w) => Some(w),
        Token::Sep(_) => None,
    })
}

/// A run of folded text: the unit [`tokens`] cuts words from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run<'a> {
    /// A run of word chars of a spaced script (or of Common and Inherited chars only).
    Word(&'a str),
    /// A run of word chars of a script written without spaces.
    NoSpace(&'a str),
    /// One separator char.
    Separator(char),
}

/// The runs of `folded`, in order.
pub fn runs(folded: &str) -> Runs<'_> {
    Runs {
        text: folded,
        at: 0,
    }
}

/// Iterator of [`runs`].
#[derive(Debug, Clone)]
pub struct Runs<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Iterator for Runs<'a> {
    type Item = Run<'a>;

    fn next(&mut self) -> Option<Run<'a>> {
        let rest = &self.text[self.at..];
        let first = rest.chars().next()?;
        let first_class = class(first);
        let mut state = match first_class {
            Class::Separator => {
                self.at += first.len_utf8();
                return Some(Run::Separator(first));
            }
            Class::NoSpace(s) => State::NoSpace(s),
            Class::Spaced(s) => State::Spaced(Some(s)),
            Class::Neutral | Class::Mark => State::Spaced(None),
        };
        // ASCII fast path: letters and digits continue a run that starts with one (its
        // script is Latin or not yet known, so both always join it).
        let mut ascii_end = first.len_utf8();
        if first.is_ascii() {
            let bytes = rest.as_bytes();
            while let Some(b) = bytes.get(ascii_end).filter(|b| b.is_ascii_alphanumeric()) {
                if b.is_ascii_alphabetic() {
                    state = State::Spaced(Some(Script::Latin));
                }
                ascii_end += 1;
            }
        }
        let chars = rest[ascii_end..].char_indices();
        let mut end = rest.len();
        for (at, c) in chars.map(|(at, c)| (at + ascii_end, c)) {
            let next = match (class(c), state) {
                (Class::Separator, _) => None,
                (Class::Mark, state) => Some(state),
                (Class::NoSpace(s), State::NoSpace(t)) if s == t => Some(state),
                (Class::NoSpace(_), _) => None,
                (Class::Neutral, State::Spaced(_)) => Some(state),
                (Class::Neutral, State::NoSpace(_)) => None,
                (Class::Spaced(s), State::Spaced(None)) => Some(State::Spaced(Some(s))),
                (Class::Spaced(s), State::Spaced(Some(t))) if s == t => Some(state),
                (Class::Spaced(_), _) => None,
            };
            match next {
                Some(next) => state = next,
                None => {
                    end = at;
                    break;
                }
            }
        }
        self.at += end;
        let text = &rest[..end];
        Some(match state {
            State::NoSpace(_) => Run::NoSpace(text),
            State::Spaced(_) => Run::Word(text),
        })
    }
}

/// The overlapping bigrams of code points of `run` (the run itself if it has one code
/// point).
pub fn bigrams(run: &str) -> Bigrams<'_> {
    Bigrams {
        run,
        at: 0,
        first: true,
    }
}

/// Iterator of [`bigrams`] (allocates nothing).
#[derive(Debug, Clone)]
pub struct Bigrams<'a> {
    run: &'a str,
    at: usize,
    first: bool,
}

impl<'a> Iterator for Bigrams<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.run.get(self.at..)?;
        let mut chars = rest.chars();
        let first = chars.next()?;
        let Some(second) = chars.next() else {
            // One code point left: a word only if it is the whole run.
            self.at = self.run.len();
            return std::mem::take(&mut self.first).then_some(rest);
        };
        self.first = false;
        let end = first.len_utf8() + second.len_utf8();
        self.at += first.len_utf8();
        Some(&rest[..end])
    }
}

/// How a (folded) query string can be answered from the words of documents (§2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// The empty string: every document contains it (RFC 9051).
    Empty,
    /// A document contains the needle if and only if one of its words (of [`tokens`])
    /// contains it: the union of the postings of the words containing it is the exact
    /// answer, with no look at the text.
    WithinWord,
    /// The needle spans a word boundary (several runs, separators, a no-space run of three
    /// or more code points, or a run whose first chars could be cut off in a document):
    /// words only narrow the candidates, which are then verified against the text.
    Spanning,
}

/// The [`Shape`] of the folded needle `folded`.
pub fn classify(folded: &str) -> Shape {
    let mut all = runs(folded);
    let Some(first) = all.next() else {
        return Shape::Empty;
    };
    if all.next().is_some() {
        return Shape::Spanning;
    }
    match first {
        Run::Separator(_) => Shape::Spanning,
        // A no-space run: each code point is in some bigram (or is a lone word), and a
        // pair is a bigram; three or more code points span bigrams.
        Run::NoSpace(text) if text.chars().count() <= 2 => Shape::WithinWord,
        Run::NoSpace(_) => Shape::Spanning,
        Run::Word(text) => {
            // In a document, a run is cut before a char of another script than the run's,
            // and before a Common char that follows a no-space run. A needle that starts
            // with a spaced-script char is never cut inside (its occurrence starts the
            // run's script, or continues it); one of Common (and marks) only is never cut
            // after its first char either. One that starts with Common or Inherited chars
            // and then has a spaced-script char ("12x" in "αβ12x", "αβ12" + "x") may be.
            let mut classes = text.chars().map(class);
            let lead = classes.next();
            let rest: Vec<Class> = classes.collect();
            let within = match lead {
                Some(Class::Spaced(_)) => true,
                Some(Class::Neutral) => rest
                    .iter()
                    .all(|c| matches!(c, Class::Neutral | Class::Mark)),
                Some(Class::Mark) => rest.iter().all(|c| matches!(c, Class::Mark)),
                _ => false,
            };
            if within {
                Shape::WithinWord
            } else {
                Shape::Spanning
            }
        }
    }
}

/// The run state while scanning: the script of the run, `None` while it has only Common and
/// Inherited chars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Spaced(Option<Script>),
    NoSpace(Script),
}

/// What a char does to runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Separator,
    /// A combining mark or other Inherited-script word char: joins the run it follows.
    Mark,
    /// A word char of the Common script (digits, ...).
    Neutral,
    /// A word char of a script written with spaces.
    Spaced(Script),
    /// A word char of a script written without spaces.
    NoSpace(Script),
}

/// The [`Class`] of `c`.
fn class(c: char) -> Class {
    const CATEGORY: CodePointMapDataBorrowed<'static, GeneralCategory> =
        CodePointMapData::<GeneralCategory>::new();
    const SCRIPT: CodePointMapDataBorrowed<'static, Script> = CodePointMapData::<Script>::new();
    if c.is_ascii() {
        return if c.is_ascii_alphabetic() {
            Class::Spaced(Script::Latin)
        } else if c.is_ascii_digit() {
            Class::Neutral
        } else {
            Class::Separator
        };
    }
    let category = CATEGORY.get(c);
    if GeneralCategoryGroup::Mark.contains(category) {
        return Class::Mark;
    }
    if !(GeneralCategoryGroup::Letter.contains(category)
        || GeneralCategoryGroup::Number.contains(category))
    {
        return Class::Separator;
    }
    match SCRIPT.get(c) {
        Script::Common | Script::Unknown => Class::Neutral,
        Script::Inherited => Class::Mark,
        s @ (Script::Han
        | Script::Hiragana
        | Script::Katakana
        | Script::Thai
        | Script::Lao
        | Script::Khmer
        | Script::Myanmar) => Class::NoSpace(s),
        s => Class::Spaced(s),
    }
}

#[cfg(test)]
mod tests {
    use super::{bigrams, classify, runs, tokens, words, Run, Shape, Token};
    use crate::mail::text::fold::fold;

    #[test]
    fn words_and_separators() {
        let text = fold("Hello, wörld! bob@example.org 2024-12-06 x²");
        let got: Vec<Token<'_>> = tokens(&text).collect();
        assert_eq!(
            got,
            [
                Token::Word("HELLO"),
                Token::Sep(','),
                Token::Sep(' '),
                Token::Word("WO\u{308}RLD"),
                Token::Sep('!'),
                Token::Sep(' '),
                Token::Word("BOB"),
                Token::Sep('@'),
                Token::Word("EXAMPLE"),
                Token::Sep('.'),
                Token::Word("ORG"),
                Token::Sep(' '),
                Token::Word("2024"),
                Token::Sep('-'),
                Token::Word("12"),
                Token::Sep('-'),
                Token::Word("06"),
                Token::Sep(' '),
                Token::Word("X2"),
            ]
        );
    }

    #[test]
    fn scripts_cut_runs_and_no_space_scripts_make_bigrams() {
        let text = fold("東京タワーに行く Αθήνα12abc 2024年");
        let got: Vec<Run<'_>> = runs(&text).collect();
        assert_eq!(
            got,
            [
                Run::NoSpace("東京"),
                Run::NoSpace("タワ"),
                Run::Word("ー"),
                Run::NoSpace("に"),
                Run::NoSpace("行"),
                Run::NoSpace("く"),
                Run::Separator(' '),
                Run::Word("ΑΘΗ\u{301}ΝΑ12"),
                Run::Word("ABC"),
                Run::Separator(' '),
                Run::Word("2024"),
                Run::NoSpace("年"),
            ]
        );
        assert_eq!(bigrams("東京都").collect::<Vec<_>>(), ["東京", "京都"]);
        assert_eq!(bigrams("年").collect::<Vec<_>>(), ["年"]);
        assert_eq!(words(&fold("東京都")).collect::<Vec<_>>(), ["東京", "京都"]);
    }

    #[test]
    fn shapes() {
        for (needle, shape) in [
            ("", Shape::Empty),
            ("meet", Shape::WithinWord),
            ("EETIN", Shape::WithinWord),
            ("2024", Shape::WithinWord),
            ("x2", Shape::WithinWord),
            ("12x", Shape::Spanning),
            ("e\u{301}", Shape::WithinWord),
            ("\u{301}x", Shape::Spanning),
            ("bob@x", Shape::Spanning),
            (" foo", Shape::Spanning),
            ("@", Shape::Spanning),
            ("東", Shape::WithinWord),
            ("東京", Shape::WithinWord),
            ("東京都", Shape::Spanning),
            ("京タ", Shape::Spanning),
            ("hello world", Shape::Spanning),
        ] {
            assert_eq!(classify(&fold(needle)), shape, "{needle:?}");
        }
    }

    proptest::proptest! {
        /// The contract of [`classify`]: for a needle it calls `WithinWord`, a text
        /// contains the needle exactly when one of the text's words does. Texts and needles
        /// from an alphabet that mixes scripts, digits, marks and separators.
        #[test]
        fn within_word_needles_are_found_in_words(
            text in "[a-cα-γ0-2東京都タワー\u{301}\u{308} @.]{0,40}",
            needle in "[a-cα-γ0-2東京都タワー\u{301}\u{308} @.]{1,5}",
        ) {
            let (text, needle) = (fold(&text), fold(&needle));
            if classify(&needle) == Shape::WithinWord {
                let in_text = text.contains(&needle);
                let in_words = words(&text).any(|w| w.contains(&needle));
                proptest::prop_assert_eq!(in_text, in_words, "{:?} in {:?}", needle, text);
            }
            // Words never hold a separator, and tokens cover the text.
            let rebuilt: usize = runs(&text).map(|r| match r {
                Run::Word(w) | Run::NoSpace(w) => w.len(),
                Run::Separator(c) => c.len_utf8(),
            }).sum();
            proptest::prop_assert_eq!(rebuilt, text.len());
        }
    }
}
