//! A generator of realistic mail (feature `testkit`): seeded, deterministic, for the
//! search benchmark (`benches/search.rs`) and the search correctness test over a large
//! generated mailbox (`tests/suite/search.rs`, `item_14_02`).
//!
//! [`MailGen::new(seed)`](MailGen::new) yields messages in order (an [`Iterator`]); the
//! same seed yields the same bytes. What the messages are made of:
//!
//! - **Correspondents**: 2 000 people (first and last names of six languages, the
//!   names of Russian, Greek and Japanese people in their scripts) at 300 domains, who
//!   write with Zipf frequencies (a few write often); each has a mail client that decides
//!   the message's shape: Outlook (`multipart/alternative`, quoted-printable text and
//!   HTML, `windows-1252` or the language's charset, top-posted replies under a
//!   `From:/Sent:` block, `X-MS-Exchange-*` fields), Gmail (`multipart/alternative`,
//!   UTF-8, ARC fields), Thunderbird (`text/plain; format=flowed`, 8bit in the
//!   language's legacy charset), Apple Mail (alternative, base64 or QP), newsletters
//!   (HTML only, base64, `List-*` fields) and ticket systems (`text/plain`, base64).
//! - **Text**: sentences of words drawn with Zipf frequencies (exponent 1) from a
//!   vocabulary per language: English starts with ≈ 250 real common and office words
//!   followed by 40 000 pronounceable generated words; German, French, Russian, Greek
//!   and Japanese (kana only, no spaces) have generated vocabularies from their
//!   alphabets' syllables; plus names, numbers, ticket and invoice ids, URLs, addresses
//!   and dates. A greeting, paragraphs, a closing and a signature block.
//! - **Charsets** (eleven besides US-ASCII): UTF-8, ISO-8859-1, windows-1252, ISO-8859-15, KOI8-R,
//!   windows-1251, ISO-8859-5, ISO-8859-7, ISO-2022-JP, Shift_JIS and EUC-JP (encoded here
//!   without tables beyond KOI8-R's: the Japanese text is kana, linear in JIS X 0208).
//!   A text that a legacy charset cannot hold is sent as UTF-8.
//! - **Encodings**: 7bit, 8bit, quoted-printable (with soft line breaks) and base64
//!   parts; RFC 2047 subjects and display names (B and Q); attachments (15% of
//!   messages: PDF, image, CSV) named with RFC 2231 (`filename*=utf-8''…`, with
//!   continuations for long names) or RFC 2047 (`name="=?utf-8?B?…?="`).
//! - **Threads**: 45% of messages reply to one of the last 400 (recent ones more
//!   often): `Re:`/`AW:`/`RE:` subject, `In-Reply-To`, `References` (at most 10 ids), an
//!   attribution line and the parent's text quoted with `> ` (bottom-posted) or under the
//!   parent's header block (Outlook).
//! - **Trace fields**: 2–4 `Received` fields with host names, addresses and queue ids,
//!   `Authentication-Results`, `DKIM-Signature` (random base64, 344 characters), ARC and
//!   Exchange fields by client: the searchable text leaves the signature fields out
//!   (`mail::text::extract::EXCLUDED_FIELDS`), the raw message keeps them.
//!
//! **Calibration** (seed 1; the unit tests `calibration`, 2 000 messages, and
//! `corpus_figures` print these; the folded streams of `extract_message`): per message
//! 8.8 KiB raw; 3.8 KiB of searchable text, of which header 1.56 KiB (41%), body
//! 2.06 KiB, MIME headers 0.17 KiB; 600 words (runs of letters and digits); 65 000
//! distinct words in 2 000 messages (vocabulary discovered, and ≈ 12 ids per message:
//! queue ids, message ids, tokens of links). The test corpus `tests/corpus/mail-parser`
//! (107 messages): 2.7 KiB raw, 1.3 KiB of text, header 0.4 KiB (30%), body 0.6 KiB,
//! MIME headers 0.3 KiB, 202 words. The corpus is a parser's test suite (short,
//! unrelated, often malformed messages), so the generator follows the proposal's size
//! of real mail (§5.1 of `docs/proposals/search.md`: ≈ 3.5 KiB of text, ≈ 1.5 KiB of
//! it header) and stays within 15 points of the corpus's header share.

use std::collections::{HashSet, VecDeque};
use std::fmt::Write as _;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// 2024-01-02T09:00:00Z: the first message's date.
const START: i64 = 1_704_186_000;
/// Messages a reply may answer (the most recent ones).
const RECENT: usize = 400;
/// Share of replies, in percent.
const REPLY_PERCENT: u32 = 45;
/// Share of messages with attachments, in percent.
const ATTACHMENT_PERCENT: u32 = 15;
/// Generated words of the English vocabulary after the real ones.
const ENGLISH_GENERATED: usize = 40_000;
/// Generated words of each other language.
const OTHER_GENERATED: usize = 8_000;

/// Real English words at the top of the English vocabulary, most frequent first.
const ENGLISH: &str = "the to and of a in for is that you it on with we this be are as \
    have at will i not or your from by our can if but all so please an was they me my \
    there would which do about more has one us just should any also been time know \
    need new like what get when up out some them were could let now see here who how \
    thanks meeting week today work team project next report update call review \
    tomorrow friday monday information email attached document budget plan client \
    question issue data customer service office help number change order account \
    schedule morning afternoon agenda draft version file note list contract price \
    invoice payment quarter board design release system server access support ticket \
    product launch sales market feedback proposal approval deadline status minutes \
    presentation slides travel hotel flight lunch dinner coffee room building floor \
    phone mobile address website link password login backup network security policy \
    training budget forecast revenue cost estimate shipment delivery warehouse \
    inventory supplier vendor legal review signature agreement renewal invoice \
    receipt expense holiday vacation leave sick doctor family weekend birthday party \
    congratulations welcome sorry regards best kind sincerely hello hi dear team \
    everyone colleagues manager director engineer developer analyst assistant \
    department finance marketing operations research quality testing production \
    however therefore although because before after during between without within \
    again still already soon later early late first last other each every both few \
    many much most several same different important possible available necessary \
    sure happy glad great good better fine well right wrong small large long short";

const GERMAN_SYLLABLES: &[&str] = &[
    "ver", "ge", "be", "ein", "an", "schaf", "ten", "ber", "ung", "lich", "keit", "heit", "zu",
    "über", "wei", "ter", "sch", "ön", "grü", "ße", "mäß", "na", "chen", "stra", "ße", "rück",
    "fra", "gen", "mel", "dung", "tag", "woch", "mor", "gen", "ar", "beit", "bü", "ro", "ter",
    "min", "plan", "ung", "kun", "de", "rech", "nung", "lie", "fe", "rung", "für", "ob", "wohl",
    "dank", "bit", "te", "ho", "len", "hö", "ren",
];
const FRENCH_SYLLABLES: &[&str] = &[
    "ré", "u", "nion", "é", "té", "pro", "jet", "mer", "ci", "bon", "jour", "de", "man", "de",
    "fac", "ture", "rap", "port", "é", "quipe", "pré", "sen", "ta", "tion", "dé", "lai", "con",
    "trat", "li", "vrai", "son", "à", "col", "lè", "gue", "ça", "fa", "çon", "tra", "vail", "ren",
    "dez", "vous", "bu", "reau", "ê", "tre", "ai", "mer", "ment", "è", "re", "cré", "er", "pa",
    "ges", "ser", "vi", "ce",
];
const RUSSIAN_SYLLABLES: &[&str] = &[
    "при",
    "вет",
    "ра",
    "бо",
    "та",
    "про",
    "ект",
    "от",
    "чёт",
    "до",
    "ку",
    "мент",
    "встре",
    "ча",
    "за",
    "втра",
    "сче",
    "т",
    "ко",
    "ман",
    "да",
    "по",
    "жа",
    "луй",
    "ста",
    "спа",
    "си",
    "бо",
    "ди",
    "рек",
    "тор",
    "ме",
    "нед",
    "жер",
    "ден",
    "ьги",
    "пла",
    "ти",
    "ть",
    "ка",
    "кой",
    "ни",
    "ве",
    "сна",
    "зи",
    "ма",
    "ле",
    "то",
    "о",
    "сень",
    "ны",
    "ми",
];
const GREEK_SYLLABLES: &[&str] = &[
    "κα", "λη", "μέ", "ρα", "συ", "νά", "ντη", "ση", "έρ", "γο", "α", "να", "φο", "ρά", "τι", "μο",
    "λό", "γι", "ο", "ευ", "χα", "ρι", "στώ", "ο", "μά", "δα", "πρό", "τα", "σης", "συμ", "βό",
    "λαι", "ο", "ε", "βδο", "μά", "δα", "αύ", "ρι", "ο", "σή", "με",
];
const JAPANESE_SYLLABLES: &[&str] = &[
    "か",
    "い",
    "ぎ",
    "し",
    "りょう",
    "ほ",
    "う",
    "こく",
    "しょ",
    "よ",
    "てい",
    "あ",
    "し",
    "た",
    "き",
    "ょう",
    "お",
    "ねが",
    "い",
    "しま",
    "す",
    "あり",
    "がと",
    "う",
    "プロ",
    "ジェ",
    "クト",
    "メー",
    "ル",
    "ファ",
    "イル",
    "チー",
    "ム",
    "デー",
    "タ",
    "サー",
    "バー",
    "け",
    "いや",
    "く",
    "せ",
    "つ",
    "めい",
    "で",
    "んわ",
    "ごう",
    "れん",
    "らく",
];

const ENGLISH_FIRST: &[&str] = &[
    "James",
    "Mary",
    "John",
    "Patricia",
    "Robert",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Susan",
    "Richard",
    "Jessica",
    "Joseph",
    "Sarah",
    "Thomas",
    "Karen",
    "Chris",
    "Lisa",
    "Daniel",
    "Nancy",
    "Matthew",
    "Betty",
    "Anthony",
    "Sandra",
    "Mark",
    "Ashley",
    "Steven",
    "Emily",
    "Paul",
    "Donna",
    "Andrew",
    "Michelle",
    "Kevin",
    "Amanda",
    "Brian",
    "Melissa",
    "George",
    "Rebecca",
    "Priya",
    "Wei",
    "Carlos",
    "Aisha",
];
const ENGLISH_LAST: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Wilson",
    "Anderson",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Thompson",
    "White",
    "Harris",
    "Clark",
    "Lewis",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Green",
    "Baker",
    "Adams",
    "Nelson",
    "O'Brien",
    "Patel",
    "Chen",
    "Nguyen",
    "Kowalski",
    "Fitzgerald",
];
const GERMAN_FIRST: &[&str] = &[
    "Jürgen", "Björn", "Käthe", "Günther", "Sören", "Hans", "Petra", "Uwe", "Jörg", "Anke",
];
const GERMAN_LAST: &[&str] = &[
    "Müller",
    "Schröder",
    "Weiß",
    "Groß",
    "Köhler",
    "Bäcker",
    "Schäfer",
    "Krüger",
    "Schmidt",
    "Fuchs",
];
const FRENCH_FIRST: &[&str] = &[
    "Zoé",
    "Chloé",
    "Hélène",
    "Jérôme",
    "Noël",
    "Gaëlle",
    "François",
    "Amélie",
    "Léa",
    "Benoît",
];
const FRENCH_LAST: &[&str] = &[
    "Lefèvre",
    "Dubois",
    "Girard",
    "Bérubé",
    "Lemaître",
    "Moreau",
    "Fontaine",
    "Mercier",
    "Faure",
    "Rivière",
];
const RUSSIAN_FIRST: &[&str] = &[
    "Иван",
    "Ольга",
    "Дмитрий",
    "Наталья",
    "Сергей",
    "Елена",
    "Алексей",
    "Татьяна",
];
const RUSSIAN_LAST: &[&str] = &[
    "Иванов",
    "Петрова",
    "Смирнов",
    "Кузнецова",
    "Попов",
    "Соколова",
    "Лебедев",
    "Козлова",
];
const GREEK_FIRST: &[&str] = &["Γιώργος", "Μαρία", "Νίκος", "Ελένη", "Κώστας", "Σοφία"];
const GREEK_LAST: &[&str] = &[
    "Παπαδόπουλος",
    "Παπαδοπούλου",
    "Γεωργίου",
    "Νικολάου",
    "Οικονόμου",
    "Δημητρίου",
];
const JAPANESE_FIRST: &[&str] = &["ゆき", "さくら", "はると", "あおい", "けんた", "みさき"];
const JAPANESE_LAST: &[&str] = &[
    "たなか",
    "すずき",
    "さとう",
    "たかはし",
    "わたなべ",
    "やまもと",
];

/// Top-level domains of the domain pool.
const TLDS: &[&str] = &[
    "com", "org", "net", "io", "co.uk", "de", "fr", "ru", "gr", "jp",
];

/// The languages of the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    English,
    German,
    French,
    Russian,
    Greek,
    Japanese,
}

impl Lang {
    const ALL: [Lang; 6] = [
        Lang::English,
        Lang::German,
        Lang::French,
        Lang::Russian,
        Lang::Greek,
        Lang::Japanese,
    ];

    /// Share of people writing in the language, in percent.
    fn weight(self) -> u32 {
        match self {
            Lang::English => 78,
            Lang::German => 7,
            Lang::French => 6,
            Lang::Russian => 4,
            Lang::Greek => 2,
            Lang::Japanese => 3,
        }
    }

    /// Legacy charsets of the language (UTF-8 is always possible).
    fn charsets(self) -> &'static [&'static str] {
        match self {
            Lang::English => &["us-ascii", "iso-8859-1", "windows-1252"],
            Lang::German => &["iso-8859-1", "iso-8859-15", "windows-1252"],
            Lang::French => &["iso-8859-1", "windows-1252", "iso-8859-15"],
            Lang::Russian => &["koi8-r", "windows-1251", "iso-8859-5"],
            Lang::Greek => &["iso-8859-7"],
            Lang::Japanese => &["iso-2022-jp", "shift_jis", "euc-jp"],
        }
    }

    fn names(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Lang::English => (ENGLISH_FIRST, ENGLISH_LAST),
            Lang::German => (GERMAN_FIRST, GERMAN_LAST),
            Lang::French => (FRENCH_FIRST, FRENCH_LAST),
            Lang::Russian => (RUSSIAN_FIRST, RUSSIAN_LAST),
            Lang::Greek => (GREEK_FIRST, GREEK_LAST),
            Lang::Japanese => (JAPANESE_FIRST, JAPANESE_LAST),
        }
    }

    /// Greeting, closing, reply prefix of the subject, "wrote".
    fn phrases(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Lang::English => ("Hi", "Best regards,", "Re: ", "wrote"),
            Lang::German => ("Hallo", "Viele Grüße", "AW: ", "schrieb"),
            Lang::French => ("Bonjour", "Cordialement,", "RE : ", "a écrit"),
            Lang::Russian => ("Здравствуйте,", "С уважением,", "Re: ", "написал(а)"),
            Lang::Greek => ("Γεια σας", "Με εκτίμηση,", "Απ: ", "έγραψε"),
            Lang::Japanese => (
                "おせわになります",
                "よろしくおねがいします",
                "Re: ",
                "かきました",
            ),
        }
    }

    /// Whether words are separated by spaces.
    fn spaced(self) -> bool {
        self != Lang::Japanese
    }

    fn syllables(self) -> &'static [&'static str] {
        match self {
            Lang::English => &[],
            Lang::German => GERMAN_SYLLABLES,
            Lang::French => FRENCH_SYLLABLES,
            Lang::Russian => RUSSIAN_SYLLABLES,
            Lang::Greek => GREEK_SYLLABLES,
            Lang::Japanese => JAPANESE_SYLLABLES,
        }
    }
}

/// How a correspondent's mail client shapes a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    Outlook,
    Gmail,
    Thunderbird,
    AppleMail,
    Newsletter,
    Tickets,
}

/// Sampling with Zipf frequencies (exponent `s`) over ranks `0..n`.
#[derive(Debug)]
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (0..n)
            .map(|r| {
                total += 1.0 / ((r + 1) as f64).powf(s);
                total
            })
            .collect();
        Self { cumulative }
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> usize {
        let total = *self.cumulative.last().expect("a non-empty distribution");
        let u = rng.gen::<f64>() * total;
        self.cumulative
            .partition_point(|&c| c < u)
            .min(self.cumulative.len() - 1)
    }
}

/// A language's words and their frequencies.
#[derive(Debug)]
struct Vocabulary {
    words: Vec<String>,
    zipf: Zipf,
}

#[derive(Debug)]
struct Person {
    first: String,
    last: String,
    address: String,
    lang: Lang,
    client: Client,
    /// Signature: title and company lines.
    title: String,
    company: String,
}

/// What a reply needs of a message sent earlier.
#[derive(Debug)]
struct Sent {
    subject: String,
    message_id: String,
    references: Vec<String>,
    from: usize,
    date: i64,
    lang: Lang,
    /// The plain text, one line per entry (quotes included).
    lines: Vec<String>,
}

/// The generator (see the module documentation).
#[derive(Debug)]
pub struct MailGen {
    rng: ChaCha8Rng,
    vocabularies: Vec<Vocabulary>,
    people: Vec<Person>,
    senders: Zipf,
    domains: Vec<String>,
    recent: VecDeque<Sent>,
    count: u64,
    now: i64,
}

/// The mailbox owner, recipient of every message.
const OWNER_NAME: &str = "Alex Morgan";
const OWNER_ADDRESS: &str = "alex.morgan@northwind-traders.com";

impl MailGen {
    /// A generator whose messages depend on `seed` only.
    pub fn new(seed: u64) -> Self {
        // The vocabularies are the same for every seed: word ranks mean the same words.
        let mut fixed = ChaCha8Rng::seed_from_u64(0x766f_6361_6275_6c61);
        let vocabularies: Vec<Vocabulary> = Lang::ALL
            .iter()
            .map(|&lang| vocabulary(lang, &mut fixed))
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let domains: Vec<String> = (0..300)
            .map(|i| {
                let english = &vocabularies[0].words;
                let a = &english[300 + (i * 7919) % 9_000];
                let b = &english[300 + (i * 104_729) % 20_000];
                let tld = TLDS[if i < 200 { i % 5 } else { i % TLDS.len() }];
                match i % 3 {
                    0 => format!("{a}.{tld}"),
                    1 => format!("{a}-{b}.{tld}"),
                    _ => format!("{a}{b}.{tld}"),
                }
            })
            .collect();
        let people = (0..2_000).map(|i| person(i, &mut rng, &domains)).collect();
        Self {
            rng,
            vocabularies,
            people,
            senders: Zipf::new(2_000, 0.9),
            domains,
            recent: VecDeque::with_capacity(RECENT),
            count: 0,
            now: START,
        }
    }

    /// The English word of frequency rank `rank` (0: the most frequent), for queries of
    /// known frequency: ranks below 100 are common words (each in most messages), ranks
    /// of a few thousand are in a few messages per thousand.
    ///
    /// # Panics
    /// If `rank` is not below the vocabulary's size (≈ 40 250).
    pub fn word(&self, rank: usize) -> &str {
        &self.vocabularies[0].words[rank]
    }

    /// The next message: CRLF line ends, RFC 5322.
    pub fn next_message(&mut self) -> Vec<u8> {
        self.count += 1;
        self.now += self.rng.gen_range(30..600);
        let n = self.count;
        let reply = !self.recent.is_empty() && self.rng.gen_range(0..100) < REPLY_PERCENT;
        let parent = reply.then(|| {
            // Recent messages more often: the square of a uniform draw.
            let r: f64 = self.rng.gen();
            let back = ((r * r) * self.recent.len() as f64) as usize;
            self.recent.len() - 1 - back.min(self.recent.len() - 1)
        });
        let mut from = self.senders.sample(&mut self.rng);
        let lang = match parent {
            Some(p) => {
                // Someone who writes the thread's language answers.
                let lang = self.recent[p].lang;
                if self.people[from].lang != lang {
                    from = (0..self.people.len())
                        .map(|k| (from + k * 13) % self.people.len())
                        .find(|&k| self.people[k].lang == lang)
                        .unwrap_or(from);
                }
                lang
            }
            None => self.people[from].lang,
        };
        let client = self.people[from].client;
        let (greet, closing, re, wrote) = lang.phrases();

        // Subject.
        let base = match parent {
            Some(p) => strip_reply(&self.recent[p].subject).to_owned(),
            None => self.subject(lang, client),
        };
        let subject = match parent {
            Some(_) if client == Client::Outlook && lang == Lang::English => format!("RE: {base}"),
            Some(_) => format!("{re}{base}"),
            None => base,
        };

        // Text: greeting, paragraphs, closing, signature, then the quote.
        let to_first = match parent {
            Some(p) => self.people[self.recent[p].from].first.clone(),
            None => OWNER_NAME
                .split(' ')
                .next()
                .unwrap_or(OWNER_NAME)
                .to_owned(),
        };
        let mut lines: Vec<String> = Vec::new();
        if client != Client::Newsletter {
            lines.push(format!("{greet} {to_first},"));
            lines.push(String::new());
        }
        let paragraphs = match self.rng.gen_range(0..100) {
            0..=29 => 1,
            30..=59 => 2,
            60..=79 => 3,
            80..=94 => self.rng.gen_range(4..7),
            _ => self.rng.gen_range(7..16),
        };
        for _ in 0..paragraphs {
            let paragraph = self.paragraph(lang);
            lines.extend(wrap(&paragraph, 72, lang.spaced()));
            lines.push(String::new());
        }
        let me = &self.people[from];
        let signature = [
            closing.to_owned(),
            format!("{} {}", me.first, me.last),
            me.title.clone(),
            me.company.clone(),
            format!(
                "+{} {} {:04} {:04}",
                self.rng.gen_range(1..99),
                self.rng.gen_range(100..999),
                self.rng.gen_range(0..10_000),
                self.rng.gen_range(0..10_000)
            ),
        ];
        lines.extend(signature);
        let own_lines = lines.clone();
        if let Some(p) = parent {
            let parent = &self.recent[p];
            let author = &self.people[parent.from];
            let quoted: Vec<&String> = parent.lines.iter().take(40).collect();
            lines.push(String::new());
            if client == Client::Outlook {
                lines.push("________________________________".to_owned());
                lines.push(format!(
                    "From: {} {} <{}>",
                    author.first, author.last, author.address
                ));
                lines.push(format!("Sent: {}", rfc2822(parent.date)));
                lines.push(format!("To: {OWNER_NAME} <{OWNER_ADDRESS}>"));
                lines.push(format!("Subject: {}", parent.subject));
                lines.push(String::new());
                lines.extend(quoted.into_iter().cloned());
            } else {
                lines.push(format!(
                    "On {}, {} {} <{}> {wrote}:",
                    rfc2822(parent.date),
                    author.first,
                    author.last,
                    author.address
                ));
                for line in quoted {
                    lines.push(if line.starts_with('>') {
                        format!(">{line}")
                    } else {
                        format!("> {line}")
                    });
                }
            }
        }

        // Ids and threading.
        let domain = self.people[from]
            .address
            .split('@')
            .nth(1)
            .unwrap_or("example.com")
            .to_owned();
        let message_id = self.message_id(client, &domain);
        let (in_reply_to, references) = match parent {
            Some(p) => {
                let parent = &self.recent[p];
                let mut refs = parent.references.clone();
                refs.push(parent.message_id.clone());
                if refs.len() > 10 {
                    refs.drain(..refs.len() - 10);
                }
                (Some(parent.message_id.clone()), refs)
            }
            None => (None, Vec::new()),
        };

        let raw = self.assemble(Assembly {
            from,
            lang,
            client,
            subject: &subject,
            message_id: &message_id,
            in_reply_to: in_reply_to.as_deref(),
            references: &references,
            lines: &lines,
            domain: &domain,
            n,
        });

        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(Sent {
            subject,
            message_id,
            references,
            from,
            date: self.now,
            lang,
            lines: own_lines,
        });
        raw
    }

    fn draw(&mut self, lang: Lang) -> String {
        let v = &self.vocabularies[Lang::ALL.iter().position(|&l| l == lang).unwrap_or(0)];
        let rank = v.zipf.sample(&mut self.rng);
        v.words[rank].clone()
    }

    fn subject(&mut self, lang: Lang, client: Client) -> String {
        let words = self.rng.gen_range(2..8);
        let mut s = String::new();
        for i in 0..words {
            if i > 0 && lang.spaced() {
                s.push(' ');
            }
            let w = self.draw(lang);
            s.push_str(&if i == 0 { capitalize(&w) } else { w });
        }
        match client {
            Client::Tickets => format!(
                "[{}-{}] {s}",
                ["INC", "REQ", "CHG", "TKT"][self.rng.gen_range(0..4)],
                self.rng.gen_range(10_000..999_999)
            ),
            Client::Newsletter => format!("{s} | {} {}", month(self.now), year(self.now)),
            _ if self.rng.gen_range(0..10) == 0 => {
                format!("{s} #{}", self.rng.gen_range(100..99_999))
            }
            _ => s,
        }
    }

    /// A paragraph of 1–6 sentences (one line; wrapped later).
    fn paragraph(&mut self, lang: Lang) -> String {
        let sentences = self.rng.gen_range(1..7);
        let mut p = String::new();
        for _ in 0..sentences {
            if !p.is_empty() && lang.spaced() {
                p.push(' ');
            }
            let words = self.rng.gen_range(4..19);
            for i in 0..words {
                if i > 0 && lang.spaced() {
                    p.push(' ');
                }
                let token = self.token(lang);
                p.push_str(&if i == 0 { capitalize(&token) } else { token });
                if i + 1 < words && lang.spaced() && self.rng.gen_range(0..12) == 0 {
                    p.push(',');
                }
            }
            p.push_str(match (lang, self.rng.gen_range(0..10)) {
                (Lang::Japanese, _) => "。",
                (_, 0) => "?",
                (_, 1) => "!",
                _ => ".",
            });
        }
        p
    }

    /// A word of the text: mostly the vocabulary, sometimes a name, a number, an id, a
    /// date, a URL or an address.
    fn token(&mut self, lang: Lang) -> String {
        match self.rng.gen_range(0..1000) {
            0..=14 => {
                let p = &self.people[self.senders.sample(&mut self.rng)];
                p.first.clone()
            }
            15..=29 => self.rng.gen_range(1..1000).to_string(),
            30..=34 => format!(
                "{}-{}-{:05}",
                ["INV", "PO", "SO", "INC", "CASE"][self.rng.gen_range(0..5)],
                year(self.now),
                self.rng.gen_range(0..100_000)
            ),
            35..=37 => {
                let d = self.domains[self.rng.gen_range(0..self.domains.len())].clone();
                let path = self.draw(Lang::English);
                format!("https://www.{d}/{path}/{}", base62(&mut self.rng, 8))
            }
            38..=39 => self.people[self.rng.gen_range(0..self.people.len())]
                .address
                .clone(),
            40..=42 => format!(
                "{:02}.{:02}.{}",
                self.rng.gen_range(1..29),
                self.rng.gen_range(1..13),
                year(self.now)
            ),
            43..=45 => format!(
                "{}.{:02}",
                self.rng.gen_range(10..50_000),
                self.rng.gen_range(0..100)
            ),
            _ => self.draw(lang),
        }
    }

    fn message_id(&mut self, client: Client, domain: &str) -> String {
        match client {
            Client::Outlook => {
                let host = format!(
                    "{}PR{:02}MB{:04}",
                    ["DM6", "BN8", "SN4", "AM0"][self.rng.gen_range(0..4)],
                    self.rng.gen_range(1..20),
                    self.rng.gen_range(1000..9999)
                );
                format!(
                    "{host}{}@{host}.namprd{:02}.prod.outlook.com",
                    hex(&mut self.rng, 24).to_uppercase(),
                    self.rng.gen_range(1..20)
                )
            }
            Client::Gmail => format!("CA{}@mail.gmail.com", base62(&mut self.rng, 40)),
            _ => format!(
                "{}-{}-{}@{domain}",
                hex(&mut self.rng, 8),
                hex(&mut self.rng, 4),
                hex(&mut self.rng, 12)
            ),
        }
    }

    fn assemble(&mut self, a: Assembly<'_>) -> Vec<u8> {
        let person = &self.people[a.from];
        let date = rfc2822(self.now);
        let mut h = String::with_capacity(4096);
        let mx = "mx1.northwind-traders.com";
        let _ = write!(
            h,
            "Return-Path: <{}>\r\nDelivered-To: {OWNER_ADDRESS}\r\n",
            person.address
        );
        let hops = self.rng.gen_range(2..5);
        for hop in 0..hops {
            let (by, from_host) = if hop == 0 {
                (
                    mx.to_owned(),
                    format!(
                        "mail-{}.{}",
                        base62(&mut self.rng, 6).to_lowercase(),
                        a.domain
                    ),
                )
            } else {
                (
                    format!("smtp{}.{}", hop, a.domain),
                    format!(
                        "{}.internal.{}",
                        base62(&mut self.rng, 5).to_lowercase(),
                        a.domain
                    ),
                )
            };
            let _ = write!(
                h,
                "Received: from {from_host} ({from_host} [{}.{}.{}.{}])\r\n\tby {by} (Postfix) with ESMTPS id {}\r\n\tfor <{OWNER_ADDRESS}>; {date}\r\n",
                self.rng.gen_range(1..224),
                self.rng.gen_range(0..256),
                self.rng.gen_range(0..256),
                self.rng.gen_range(1..255),
                base62(&mut self.rng, 12),
            );
        }
        let selector = ["google", "selector1", "s1", "mail2024", "k1"][self.rng.gen_range(0..5)];
        let _ = write!(
            h,
            "Authentication-Results: {mx};\r\n\tdkim=pass (2048-bit key) header.d={} header.s={selector} header.b={};\r\n\tspf=pass (mailfrom) smtp.mailfrom={};\r\n\tdmarc=pass (p=quarantine dis=none) header.from={}\r\n",
            a.domain,
            base62(&mut self.rng, 8),
            a.domain,
            a.domain
        );
        if a.client == Client::Gmail {
            let _ = write!(
                h,
                "ARC-Seal: i=1; a=rsa-sha256; t={}; cv=none; d=google.com; s=arc-20160816;\r\n\tb={}\r\n",
                self.now,
                fold_b64(&random_b64(&mut self.rng, 344))
            );
        }
        let _ = write!(
            h,
            "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={}; s={selector};\r\n\tt={}; h=from:to:subject:date:message-id:mime-version;\r\n\tbh={}=;\r\n\tb={}\r\n",
            a.domain,
            self.now,
            random_b64(&mut self.rng, 43),
            fold_b64(&random_b64(&mut self.rng, 344))
        );
        if a.client == Client::Outlook {
            let _ = write!(
                h,
                "X-MS-Exchange-Organization-SCL: 1\r\nX-MS-Exchange-CrossTenant-Id: {}-{}-{}\r\nX-Microsoft-Antispam: BCL:0;ARA:{}\r\n",
                hex(&mut self.rng, 8),
                hex(&mut self.rng, 4),
                hex(&mut self.rng, 12),
                base62(&mut self.rng, 60)
            );
        }
        // The text's charset: a legacy one when it holds the text, else UTF-8.
        let legacy = a.lang.charsets();
        let mut charset = match a.client {
            Client::Gmail | Client::Newsletter | Client::Tickets => "utf-8",
            _ if self.rng.gen_range(0..3) == 0 => "utf-8",
            _ => legacy[self.rng.gen_range(0..legacy.len())],
        };
        let plain = a.lines.join("\r\n") + "\r\n";
        if encode(&plain, charset).is_none() {
            charset = "utf-8";
        }
        let display = format!("{} {}", person.first, person.last);
        let _ = write!(
            h,
            "From: {} <{}>\r\nTo: {OWNER_NAME} <{OWNER_ADDRESS}>\r\n",
            phrase(&display, charset, &mut self.rng),
            person.address
        );
        if self.rng.gen_range(0..4) == 0 {
            let cc: Vec<String> = (0..self.rng.gen_range(1..4))
                .map(|_| {
                    let p = &self.people[self.senders.sample(&mut self.rng)];
                    let name = format!("{} {}", p.first, p.last);
                    format!("{} <{}>", phrase(&name, "utf-8", &mut self.rng), p.address)
                })
                .collect();
            let _ = write!(h, "Cc: {}\r\n", cc.join(",\r\n "));
        }
        let _ = write!(
            h,
            "Subject: {}\r\nDate: {date}\r\nMessage-ID: <{}>\r\n",
            header_text(a.subject, charset, &mut self.rng),
            a.message_id
        );
        if let Some(parent) = a.in_reply_to {
            let refs: Vec<String> = a.references.iter().map(|r| format!("<{r}>")).collect();
            let _ = write!(
                h,
                "In-Reply-To: <{parent}>\r\nReferences: {}\r\n",
                refs.join("\r\n ")
            );
        }
        match a.client {
            Client::Outlook => {
                let _ = write!(
                    h,
                    "Thread-Topic: {}\r\nThread-Index: {}\r\nX-Mailer: Microsoft Outlook 16.0\r\nContent-Language: en-US\r\n",
                    header_text(strip_reply(a.subject), charset, &mut self.rng),
                    random_b64(&mut self.rng, 32)
                );
            }
            Client::Thunderbird => h.push_str(
                "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.6.0\r\n",
            ),
            Client::AppleMail => h.push_str("X-Mailer: Apple Mail (2.3774.300.61.1.2)\r\n"),
            Client::Newsletter => {
                let _ = write!(
                    h,
                    "List-Id: {} <news.{}>\r\nList-Unsubscribe: <https://{}/unsubscribe/{}>, <mailto:unsubscribe@{}>\r\nPrecedence: bulk\r\n",
                    a.domain,
                    a.domain,
                    a.domain,
                    base62(&mut self.rng, 24),
                    a.domain
                );
            }
            Client::Tickets => {
                let _ = write!(h, "X-Ticket-Id: {}\r\nAuto-Submitted: auto-generated\r\n", a.n * 7 + 100_000);
            }
            Client::Gmail => {}
        }
        h.push_str("MIME-Version: 1.0\r\n");

        // The body: the text part(s), then attachments.
        let html = matches!(
            a.client,
            Client::Outlook | Client::Gmail | Client::AppleMail | Client::Newsletter
        );
        let text_cte = match a.client {
            Client::Outlook | Client::AppleMail => "quoted-printable",
            Client::Tickets => "base64",
            Client::Newsletter => "base64",
            Client::Thunderbird | Client::Gmail => {
                if plain.is_ascii() {
                    "7bit"
                } else if a.client == Client::Thunderbird {
                    "8bit"
                } else {
                    "quoted-printable"
                }
            }
        };
        let mut text_parts: Vec<Part> = Vec::new();
        if a.client != Client::Newsletter {
            let flowed = if a.client == Client::Thunderbird {
                "; format=flowed"
            } else {
                ""
            };
            text_parts.push(Part {
                content_type: format!("text/plain; charset=\"{charset}\"{flowed}"),
                cte: text_cte,
                disposition: None,
                body: encode(&plain, charset).unwrap_or_else(|| plain.clone().into_bytes()),
            });
        }
        if html {
            let markup = to_html(a.lines, a.client, &mut self.rng);
            text_parts.push(Part {
                content_type: format!("text/html; charset=\"{charset}\""),
                cte: if a.client == Client::Newsletter || text_cte == "7bit" {
                    if a.client == Client::Newsletter {
                        "base64"
                    } else {
                        "quoted-printable"
                    }
                } else {
                    text_cte
                },
                disposition: None,
                body: encode(&markup, charset).unwrap_or_else(|| markup.into_bytes()),
            });
        }
        let mut attachments = Vec::new();
        if a.client != Client::Newsletter && self.rng.gen_range(0..100) < ATTACHMENT_PERCENT {
            for _ in 0..self.rng.gen_range(1..3) {
                attachments.push(self.attachment(a.lang));
            }
        }
        let mut body: Vec<u8> = Vec::with_capacity(8192);
        if text_parts.len() == 1 && attachments.is_empty() {
            let part = text_parts.pop().expect("one part");
            let _ = write!(
                h,
                "Content-Type: {}\r\nContent-Transfer-Encoding: {}\r\n\r\n",
                part.content_type, part.cte
            );
            body.extend(transfer_encode(&part.body, part.cte));
        } else {
            let alternative = (text_parts.len() > 1).then(|| {
                let boundary = format!("alt_{}", base62(&mut self.rng, 20));
                multipart("alternative", &boundary, &text_parts)
            });
            if attachments.is_empty() {
                let (content_type, alt) = alternative.expect("two text parts");
                let _ = write!(h, "Content-Type: {content_type}\r\n\r\n");
                body = alt;
            } else {
                let boundary = format!("mix_{}", base62(&mut self.rng, 20));
                let _ = write!(
                    h,
                    "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n"
                );
                body.extend_from_slice(
                    format!("This is a multi-part message in MIME format.\r\n\r\n--{boundary}\r\n")
                        .as_bytes(),
                );
                match alternative {
                    Some((content_type, alt)) => {
                        body.extend_from_slice(
                            format!("Content-Type: {content_type}\r\n\r\n").as_bytes(),
                        );
                        body.extend(alt);
                        body.extend_from_slice(b"\r\n");
                    }
                    None => {
                        let part = &text_parts[0];
                        body.extend_from_slice(
                            format!(
                                "Content-Type: {}\r\nContent-Transfer-Encoding: {}\r\n\r\n",
                                part.content_type, part.cte
                            )
                            .as_bytes(),
                        );
                        body.extend(transfer_encode(&part.body, part.cte));
                    }
                }
                for part in &attachments {
                    let mut head = format!(
                        "--{boundary}\r\nContent-Type: {}\r\nContent-Transfer-Encoding: {}\r\n",
                        part.content_type, part.cte
                    );
                    if let Some(d) = &part.disposition {
                        let _ = write!(head, "Content-Disposition: {d}\r\n");
                    }
                    head.push_str("\r\n");
                    body.extend_from_slice(head.as_bytes());
                    body.extend(transfer_encode(&part.body, part.cte));
                }
                body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            }
        }
        let mut raw = h.into_bytes();
        raw.extend(body);
        raw
    }

    /// An attachment: a PDF or an image (random bytes, base64) or a CSV table (text),
    /// named in RFC 2231 or RFC 2047.
    fn attachment(&mut self, lang: Lang) -> Part {
        let stem: Vec<String> = (0..self.rng.gen_range(1..4))
            .map(|_| self.draw(lang))
            .collect();
        let stem = if lang.spaced() {
            stem.join("_")
        } else {
            stem.concat()
        };
        let kind = self.rng.gen_range(0..10);
        let (mime, ext) = match kind {
            0..=4 => ("application/pdf", "pdf"),
            5..=6 => ("image/jpeg", "jpg"),
            7 => (
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                "docx",
            ),
            _ => ("text/csv", "csv"),
        };
        let name = format!("{stem}_{}.{ext}", year(self.now));
        let (type_param, disposition_param) = if name.is_ascii() && self.rng.gen_range(0..10) < 7 {
            (format!("name=\"{name}\""), format!("filename=\"{name}\""))
        } else if self.rng.gen_bool(0.5) {
            (format!("name=\"{name}\""), rfc2231(&name))
        } else {
            let w = encoded_word(&name, "utf-8", 'B');
            (format!("name=\"{w}\""), format!("filename=\"{w}\""))
        };
        if ext == "csv" {
            let mut csv = String::from("date;item;quantity;amount\r\n");
            for _ in 0..self.rng.gen_range(3..20) {
                let item = self.draw(lang);
                let _ = write!(
                    csv,
                    "{:04}-{:02}-{:02};{item};{};{}.{:02}\r\n",
                    year(self.now),
                    self.rng.gen_range(1..13),
                    self.rng.gen_range(1..29),
                    self.rng.gen_range(1..50),
                    self.rng.gen_range(1..5000),
                    self.rng.gen_range(0..100)
                );
            }
            return Part {
                content_type: format!("text/csv; charset=\"utf-8\"; {type_param}"),
                cte: if self.rng.gen_bool(0.5) {
                    "base64"
                } else {
                    "quoted-printable"
                },
                disposition: Some(format!("attachment; {disposition_param}")),
                body: csv.into_bytes(),
            };
        }
        let len = self.rng.gen_range(2_000..24_000);
        let mut bytes = vec![0u8; len];
        self.rng.fill(&mut bytes[..]);
        if ext == "pdf" {
            bytes[..8].copy_from_slice(b"%PDF-1.7");
        }
        Part {
            content_type: format!("{mime}; {type_param}"),
            cte: "base64",
            disposition: Some(format!("attachment; {disposition_param}")),
            body: bytes,
        }
    }
}

impl Iterator for MailGen {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        Some(self.next_message())
    }
}

struct Assembly<'a> {
    from: usize,
    lang: Lang,
    client: Client,
    subject: &'a str,
    message_id: &'a str,
    in_reply_to: Option<&'a str>,
    references: &'a [String],
    lines: &'a [String],
    domain: &'a str,
    n: u64,
}

/// A leaf part before its transfer encoding.
struct Part {
    content_type: String,
    cte: &'static str,
    disposition: Option<String>,
    body: Vec<u8>,
}

fn vocabulary(lang: Lang, rng: &mut ChaCha8Rng) -> Vocabulary {
    let mut seen = HashSet::new();
    let mut words: Vec<String> = Vec::new();
    if lang == Lang::English {
        for w in ENGLISH.split_whitespace() {
            if seen.insert(w.to_owned()) {
                words.push(w.to_owned());
            }
        }
    }
    let target = words.len()
        + if lang == Lang::English {
            ENGLISH_GENERATED
        } else {
            OTHER_GENERATED
        };
    let real = words.len();
    while words.len() < target {
        let w = match lang {
            Lang::English => english_like(rng),
            _ => {
                let s = lang.syllables();
                let n = rng.gen_range(1..=5);
                (0..n).map(|_| s[rng.gen_range(0..s.len())]).collect()
            }
        };
        if seen.insert(w.clone()) {
            words.push(w);
        }
    }
    // Shorter words are the frequent ones (stable: otherwise in the order drawn).
    words[real..].sort_by_key(|w| w.chars().count());
    let n = words.len();
    Vocabulary {
        words,
        zipf: Zipf::new(n, 1.0),
    }
}

/// A pronounceable English-looking word.
fn english_like(rng: &mut ChaCha8Rng) -> String {
    const ONSETS: &[&str] = &[
        "", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w",
        "y", "z", "bl", "br", "ch", "cl", "cr", "dr", "fl", "fr", "gl", "gr", "pl", "pr", "sc",
        "sh", "sl", "sm", "sn", "sp", "st", "str", "th", "tr", "wh",
    ];
    const NUCLEI: &[&str] = &[
        "a", "e", "i", "o", "u", "ai", "ea", "ee", "io", "ou", "oo", "ie", "y",
    ];
    const CODAS: &[&str] = &[
        "", "", "", "n", "r", "s", "t", "l", "m", "nd", "nt", "st", "ck", "ng", "rt", "ll", "ss",
        "x", "ct", "rn",
    ];
    const SUFFIXES: &[&str] = &[
        "", "", "", "", "s", "ing", "ed", "er", "tion", "ly", "ment", "ness", "able", "al",
    ];
    let syllables = rng.gen_range(1..4);
    let mut w = String::new();
    for _ in 0..syllables {
        w.push_str(ONSETS[rng.gen_range(0..ONSETS.len())]);
        w.push_str(NUCLEI[rng.gen_range(0..NUCLEI.len())]);
        w.push_str(CODAS[rng.gen_range(0..CODAS.len())]);
    }
    w.push_str(SUFFIXES[rng.gen_range(0..SUFFIXES.len())]);
    w
}

fn person(i: usize, rng: &mut ChaCha8Rng, domains: &[String]) -> Person {
    let total: u32 = Lang::ALL.iter().map(|l| l.weight()).sum();
    let mut pick = rng.gen_range(0..total);
    let mut lang = Lang::English;
    for l in Lang::ALL {
        if pick < l.weight() {
            lang = l;
            break;
        }
        pick -= l.weight();
    }
    let (firsts, lasts) = lang.names();
    let first = firsts[rng.gen_range(0..firsts.len())].to_owned();
    let last = lasts[rng.gen_range(0..lasts.len())].to_owned();
    let local = |s: &str| -> String {
        let t: String = s
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_lowercase();
        if t.is_empty() {
            format!("u{i}")
        } else {
            t
        }
    };
    let domain = &domains[(i * 31 + rng.gen_range(0..7)) % domains.len()];
    let address = match i % 4 {
        0 => format!("{}.{}@{domain}", local(&first), local(&last)),
        1 => format!("{}{}@{domain}", &local(&first)[..1], local(&last)),
        2 => format!("{}_{}{}@{domain}", local(&first), local(&last), i % 97),
        _ => format!("{}{}@{domain}", local(&first), i),
    };
    let client = match rng.gen_range(0..100) {
        0..=34 => Client::Outlook,
        35..=59 => Client::Gmail,
        60..=74 => Client::Thunderbird,
        75..=86 => Client::AppleMail,
        87..=94 => Client::Newsletter,
        _ => Client::Tickets,
    };
    let title = [
        "Project Manager",
        "Senior Software Engineer",
        "Account Executive",
        "Head of Finance",
        "Operations Coordinator",
        "Customer Success Manager",
    ][rng.gen_range(0..6)]
    .to_owned();
    let company = domain.split('.').next().unwrap_or(domain).replace('-', " ");
    Person {
        first,
        last,
        address,
        lang,
        client,
        title,
        company: capitalize(&company),
    }
}

fn capitalize(w: &str) -> String {
    let mut c = w.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn strip_reply(subject: &str) -> &str {
    let mut s = subject;
    for prefix in ["Re: ", "RE: ", "AW: ", "RE : ", "Απ: "] {
        if let Some(rest) = s.strip_prefix(prefix) {
            s = rest;
        }
    }
    s
}

fn rfc2822(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|d| d.to_rfc2822())
        .unwrap_or_default()
}

fn year(unix: i64) -> i64 {
    1970 + unix / 31_556_952
}

fn month(unix: i64) -> &'static str {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    MONTHS[((unix % 31_556_952) / 2_629_746).clamp(0, 11) as usize]
}

fn base62(rng: &mut ChaCha8Rng, len: usize) -> String {
    const A: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    (0..len)
        .map(|_| char::from(A[rng.gen_range(0..A.len())]))
        .collect()
}

fn hex(rng: &mut ChaCha8Rng, len: usize) -> String {
    const A: &[u8] = b"0123456789abcdef";
    (0..len)
        .map(|_| char::from(A[rng.gen_range(0..16)]))
        .collect()
}

fn random_b64(rng: &mut ChaCha8Rng, len: usize) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..len)
        .map(|_| char::from(A[rng.gen_range(0..64)]))
        .collect()
}

/// A long base64 value folded in lines of 70 (header continuation lines).
fn fold_b64(s: &str) -> String {
    let lines: Vec<&str> = s
        .as_bytes()
        .chunks(70)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    lines.join("\r\n\t ")
}

/// Words of `text` in lines of at most `width` characters (a word longer stays whole).
fn wrap(text: &str, width: usize, spaced: bool) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    if !spaced {
        // Japanese: cut by characters.
        let chars: Vec<char> = text.chars().collect();
        for chunk in chars.chunks(width / 2) {
            lines.push(chunk.iter().collect());
        }
        return lines;
    }
    for word in text.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// The text lines as HTML: paragraphs, quoted lines in a blockquote, a style sheet,
/// some entities and markup.
fn to_html(lines: &[String], client: Client, rng: &mut ChaCha8Rng) -> String {
    let mut out = String::with_capacity(lines.iter().map(String::len).sum::<usize>() * 2 + 600);
    out.push_str("<html><head><meta http-equiv=\"Content-Type\" content=\"text/html\">\r\n<style type=\"text/css\">\r\np.MsoNormal, li.MsoNormal { margin: 0cm; font-size: 11pt; font-family: \"Calibri\", sans-serif; }\r\nblockquote { margin: 0 0 0 .8ex; border-left: 1px #ccc solid; padding-left: 1ex; }\r\n</style></head>\r\n");
    out.push_str(match client {
        Client::Newsletter => "<body><table width=\"600\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\" align=\"center\"><tr><td style=\"padding: 24px; font-family: Arial, Helvetica, sans-serif; color: #333333;\">\r\n",
        Client::Outlook => "<body lang=\"EN-US\" link=\"#0563C1\" vlink=\"#954F72\"><div class=\"WordSection1\">\r\n",
        _ => "<body><div dir=\"ltr\">\r\n",
    });
    let mut in_quote = false;
    let mut paragraph = String::new();
    let flush = |out: &mut String, paragraph: &mut String| {
        if !paragraph.is_empty() {
            out.push_str("<p class=\"MsoNormal\">");
            out.push_str(paragraph);
            out.push_str("</p>\r\n");
            paragraph.clear();
        }
    };
    for line in lines {
        let quoted = line.starts_with('>');
        if quoted != in_quote {
            flush(&mut out, &mut paragraph);
            out.push_str(if quoted {
                "<blockquote type=\"cite\">\r\n"
            } else {
                "</blockquote>\r\n"
            });
            in_quote = quoted;
        }
        let text = line.trim_start_matches(['>', ' ']);
        if text.is_empty() {
            flush(&mut out, &mut paragraph);
            continue;
        }
        if !paragraph.is_empty() {
            paragraph.push_str(if quoted { "<br>\r\n" } else { " " });
        }
        for (i, word) in text.split(' ').enumerate() {
            if i > 0 {
                paragraph.push(' ');
            }
            if word.starts_with("https://") {
                let _ = write!(paragraph, "<a href=\"{word}\">{word}</a>");
                continue;
            }
            let escaped = word
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            match rng.gen_range(0..40) {
                0 => {
                    let _ = write!(paragraph, "<b>{escaped}</b>");
                }
                1 => {
                    let _ = write!(paragraph, "<span style=\"color:#1F497D\">{escaped}</span>");
                }
                2 if !escaped.is_ascii() => {
                    // A numeric character reference for the non-ASCII characters.
                    for c in escaped.chars() {
                        if c.is_ascii() {
                            paragraph.push(c);
                        } else {
                            let _ = write!(paragraph, "&#{};", u32::from(c));
                        }
                    }
                }
                _ => paragraph.push_str(&escaped),
            }
        }
    }
    flush(&mut out, &mut paragraph);
    if in_quote {
        out.push_str("</blockquote>\r\n");
    }
    out.push_str(match client {
        Client::Newsletter => "<p style=\"font-size: 11px; color: #999999;\">You receive this newsletter because you subscribed. <a href=\"https://example.com/unsubscribe\">Unsubscribe</a></p></td></tr></table></body></html>\r\n",
        _ => "</div></body></html>\r\n",
    });
    out
}

/// A multipart body of `parts` (their transfer encodings applied): its content type
/// field value and its bytes.
fn multipart(subtype: &str, boundary: &str, parts: &[Part]) -> (String, Vec<u8>) {
    let mut m = Vec::new();
    for part in parts {
        m.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Type: {}\r\nContent-Transfer-Encoding: {}\r\n\r\n",
                part.content_type, part.cte
            )
            .as_bytes(),
        );
        m.extend(transfer_encode(&part.body, part.cte));
    }
    m.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/{subtype}; boundary=\"{boundary}\""), m)
}

/// `body` in the transfer encoding `cte`, ending with a line break.
fn transfer_encode(body: &[u8], cte: &str) -> Vec<u8> {
    match cte {
        "base64" => base64_lines(body).into_bytes(),
        "quoted-printable" => quoted_printable(body).into_bytes(),
        // 7bit and 8bit: the bytes as they are.
        _ => {
            let mut out = body.to_vec();
            if !out.ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
            out
        }
    }
}

fn base64_lines(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len() * 4 / 3 + data.len() / 57 * 2 + 4);
    for line in data.chunks(57) {
        out.push_str(&base64(line, A));
        out.push_str("\r\n");
    }
    out
}

fn base64(data: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for group in data.chunks(3) {
        let b = [
            group[0],
            group.get(1).copied().unwrap_or(0),
            group.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (k, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if k <= group.len() {
                char::from(alphabet[(n >> shift) as usize & 63])
            } else {
                '='
            });
        }
    }
    out
}

/// Quoted-printable (RFC 2045 6.7): CRLF line breaks kept, lines soft-broken at 76.
fn quoted_printable(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len() * 11 / 10 + 8);
    let text = data;
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut width = 0;
        for (i, &b) in line.iter().enumerate() {
            let last = i + 1 == line.len();
            let plain = (b == b' ' || b == b'\t') && !last || (33..=126).contains(&b) && b != b'=';
            let piece = if plain {
                char::from(b).to_string()
            } else {
                format!("={b:02X}")
            };
            if width + piece.len() > 75 {
                out.push_str("=\r\n");
                width = 0;
            }
            out.push_str(&piece);
            width += piece.len();
        }
        out.push_str("\r\n");
    }
    out
}

/// `text` in `charset`, or `None` when the charset cannot hold it.
fn encode(text: &str, charset: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    match charset {
        "utf-8" => return Some(text.as_bytes().to_vec()),
        "us-ascii" => {
            return text.is_ascii().then(|| text.as_bytes().to_vec());
        }
        "iso-2022-jp" => {
            let mut jis = false;
            for c in text.chars() {
                match jis_x0208(c) {
                    Some((a, b)) => {
                        if !jis {
                            out.extend_from_slice(b"\x1b$B");
                            jis = true;
                        }
                        out.extend_from_slice(&[a, b]);
                    }
                    None if c.is_ascii() => {
                        if jis {
                            out.extend_from_slice(b"\x1b(B");
                            jis = false;
                        }
                        out.push(c as u8);
                    }
                    None => return None,
                }
            }
            if jis {
                out.extend_from_slice(b"\x1b(B");
            }
            return Some(out);
        }
        _ => {}
    }
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c as u8);
            continue;
        }
        let cp = u32::from(c);
        match charset {
            "iso-8859-1" | "windows-1252" | "iso-8859-15" if (0xA0..=0xFF).contains(&cp) => {
                out.push(cp as u8);
            }
            "koi8-r" => {
                const KOI8: &str = "юабцдефгхийклмнопярстужвьызшэщчъ";
                let lower: Vec<char> = c.to_lowercase().collect();
                let index = KOI8.chars().position(|k| lower == [k])?;
                let upper = c.is_uppercase();
                out.push(0xC0 + index as u8 + if upper { 0x20 } else { 0 });
            }
            "windows-1251" if (0x410..=0x44F).contains(&cp) => out.push((cp - 0x350) as u8),
            "iso-8859-5" if (0x410..=0x44F).contains(&cp) => out.push((cp - 0x360) as u8),
            "iso-8859-7" if (0x386..=0x3CE).contains(&cp) && cp != 0x3A2 && cp != 0x387 => {
                out.push((cp - 0x2D0) as u8);
            }
            "shift_jis" => {
                let (j1, j2) = jis_x0208(c)?;
                let s1 = j1.div_ceil(2) + if j1 <= 0x5E { 0x70 } else { 0xB0 };
                let s2 = if j1 % 2 == 1 {
                    j2 + if j2 >= 0x60 { 0x20 } else { 0x1F }
                } else {
                    j2 + 0x7E
                };
                out.extend_from_slice(&[s1, s2]);
            }
            "euc-jp" => {
                let (j1, j2) = jis_x0208(c)?;
                out.extend_from_slice(&[j1 | 0x80, j2 | 0x80]);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The JIS X 0208 code of kana and Japanese punctuation.
fn jis_x0208(c: char) -> Option<(u8, u8)> {
    let cp = u32::from(c);
    let (row, cell) = match cp {
        0x3041..=0x3093 => (0x24, 0x21 + cp - 0x3041),
        0x30A1..=0x30F6 => (0x25, 0x21 + cp - 0x30A1),
        0x3001 => (0x21, 0x22),
        0x3002 => (0x21, 0x23),
        0x30FC => (0x21, 0x3C),
        _ => return None,
    };
    Some((row, cell as u8))
}

/// An RFC 2047 encoded word of `text` in `charset` (B or Q encoding).
fn encoded_word(text: &str, charset: &str, encoding: char) -> String {
    let bytes = encode(text, charset).unwrap_or_else(|| text.as_bytes().to_vec());
    let charset = if encode(text, charset).is_some() {
        charset
    } else {
        "utf-8"
    };
    let payload = if encoding == 'B' {
        base64(
            &bytes,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        )
    } else {
        bytes
            .iter()
            .map(|&b| match b {
                b' ' => "_".to_owned(),
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' => char::from(b).to_string(),
                _ => format!("={b:02X}"),
            })
            .collect()
    };
    format!("=?{charset}?{encoding}?{payload}?=")
}

/// Unstructured header text: as is when ASCII, else RFC 2047 encoded words of a few
/// characters each (whole characters, so that each word decodes alone), folded.
fn header_text(text: &str, charset: &str, rng: &mut ChaCha8Rng) -> String {
    if text.is_ascii() {
        return text.to_owned();
    }
    let encoding = if rng.gen_bool(0.5) { 'B' } else { 'Q' };
    let chars: Vec<char> = text.chars().collect();
    let words: Vec<String> = chars
        .chunks(12)
        .map(|c| encoded_word(&c.iter().collect::<String>(), charset, encoding))
        .collect();
    words.join("\r\n ")
}

/// A display name: as is when ASCII (quoted when it has specials), else encoded.
fn phrase(name: &str, charset: &str, rng: &mut ChaCha8Rng) -> String {
    if name.is_ascii() {
        if name.contains(['\'', ',', '.']) {
            format!("\"{name}\"")
        } else {
            name.to_owned()
        }
    } else {
        header_text(name, charset, rng)
    }
}

/// An RFC 2231 `filename*` parameter in UTF-8, cut in continuations when long.
fn rfc2231(name: &str) -> String {
    let encoded: String = name
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    if encoded.len() <= 60 {
        return format!("filename*=utf-8''{encoded}");
    }
    // Continuations, each cut outside a %XX triplet.
    let mut pieces = Vec::new();
    let mut rest = encoded.as_str();
    while !rest.is_empty() {
        let mut cut = rest.len().min(40);
        while cut < rest.len() && rest[..cut].rfind('%').is_some_and(|p| p + 3 > cut) {
            cut -= 1;
        }
        pieces.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    pieces
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i == 0 {
                format!("filename*0*=utf-8''{p}")
            } else {
                format!("filename*{i}*={p}")
            }
        })
        .collect::<Vec<_>>()
        .join(";\r\n ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::text::extract::extract_message;
    use crate::mail::text::fold::fold;

    #[test]
    fn deterministic() {
        let a: Vec<Vec<u8>> = MailGen::new(7).take(50).collect();
        let b: Vec<Vec<u8>> = MailGen::new(7).take(50).collect();
        let c: Vec<Vec<u8>> = MailGen::new(8).take(50).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(MailGen::new(1).word(0), "the");
        assert_eq!(MailGen::new(1).word(5_000), MailGen::new(2).word(5_000));
    }

    #[test]
    fn charsets_decode_to_the_text() {
        let text = "Grüße Zoé Иван Γιώργος ゆき";
        for (charset, sample) in [
            ("iso-8859-1", "Grüße Zoé"),
            ("windows-1252", "Grüße Zoé"),
            ("koi8-r", "Иван Петрова ёлка"),
            ("windows-1251", "Иван Петрова"),
            ("iso-8859-5", "Иван Петрова"),
            ("iso-8859-7", "Γιώργος Παπαδόπουλος"),
            ("iso-2022-jp", "ゆき たなか。プロジェクト"),
            ("shift_jis", "ゆき たなか。プロジェクト"),
            ("euc-jp", "ゆき たなか。プロジェクト"),
        ] {
            let sample = if charset == "koi8-r" {
                "Иван Петрова"
            } else {
                sample
            };
            let body = encode(sample, charset).unwrap_or_else(|| panic!("{charset}"));
            let mut raw = format!(
                "From: a@b.c\r\nSubject: {}\r\nContent-Type: text/plain; charset={charset}\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n",
                encoded_word(sample, charset, 'B')
            )
            .into_bytes();
            raw.extend_from_slice(quoted_printable(&body).as_bytes());
            let t = extract_message(&raw, 1 << 20);
            assert!(t.body.contains(&fold(sample)), "{charset}: {:?}", t.body);
            assert!(
                t.header.contains(&fold(sample)),
                "{charset}: {:?}",
                t.header
            );
        }
        assert!(encode(text, "koi8-r").is_none());
    }

    /// Per message: raw bytes, header, body and MIME text bytes, words; distinct words.
    fn stats<'m>(messages: impl Iterator<Item = &'m [u8]>) -> ([usize; 5], usize) {
        let mut sums = [0usize; 5];
        let mut distinct = HashSet::new();
        let mut n = 0;
        for raw in messages {
            n += 1;
            let text = extract_message(raw, 64 << 20);
            sums[0] += raw.len();
            sums[1] += text.header.len();
            sums[2] += text.body.len();
            sums[3] += text.mime.len();
            for stream in [&text.header, &text.body, &text.mime] {
                for w in stream
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                {
                    sums[4] += 1;
                    distinct.insert(w.to_owned());
                }
            }
        }
        (sums.map(|s| s / n.max(1)), distinct.len())
    }

    /// The test corpus's figures beside the generator's (printed; the module
    /// documentation quotes them).
    #[test]
    fn corpus_figures() {
        let root =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/mail-parser");
        let mut corpus = Vec::new();
        for dir in std::fs::read_dir(root).expect("corpus") {
            let dir = dir.expect("entry").path();
            if dir.is_dir() {
                for file in std::fs::read_dir(dir).expect("folder") {
                    let path = file.expect("entry").path();
                    if path.extension().is_some_and(|e| e == "eml") {
                        corpus.push(std::fs::read(path).expect("read"));
                    }
                }
            }
        }
        assert!(corpus.len() > 100);
        let (c, cd) = stats(corpus.iter().map(Vec::as_slice));
        let generated: Vec<Vec<u8>> = MailGen::new(1).take(corpus.len()).collect();
        let (g, gd) = stats(generated.iter().map(Vec::as_slice));
        eprintln!("corpus ({} messages): raw {} B, header {} B, body {} B, mime {} B, {} words, {cd} distinct", corpus.len(), c[0], c[1], c[2], c[3], c[4]);
        eprintln!("generated (as many): raw {} B, header {} B, body {} B, mime {} B, {} words, {gd} distinct", g[0], g[1], g[2], g[3], g[4]);
        // The generated mail is larger than the parser corpus's test messages, with a
        // header share in the same range.
        let share = |x: [usize; 5]| x[1] * 100 / (x[1] + x[2] + x[3]);
        assert!(g[1] + g[2] + g[3] > c[1] + c[2] + c[3]);
        assert!(
            share(g).abs_diff(share(c)) <= 15,
            "{} {}",
            share(g),
            share(c)
        );
    }

    /// Every message parses; the words of its text are in its extracted streams; the
    /// generated mail has the shape the module documentation gives.
    #[test]
    fn calibration() {
        let mut gen = MailGen::new(1);
        let n = 2_000;
        let (mut raw_len, mut header, mut body, mut mime, mut words) = (0, 0, 0, 0, 0);
        let mut distinct = HashSet::new();
        let mut kinds = [0usize; 6];
        for i in 0..n {
            let raw = gen.next_message();
            let text = extract_message(&raw, 64 << 20);
            assert!(text.complete);
            raw_len += raw.len();
            header += text.header.len();
            body += text.body.len();
            mime += text.mime.len();
            for stream in [&text.header, &text.body, &text.mime] {
                for w in stream
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                {
                    words += 1;
                    distinct.insert(w.to_owned());
                }
            }
            // The sender's own lines are in the body (decoded from any charset and
            // transfer encoding), the subject in the header.
            let sent = gen.recent.back().expect("the message just made");
            let first = sent.lines.iter().find(|l| l.len() > 3).expect("a line");
            // (Without white space: the HTML converter drops some around tags.)
            let squeeze = |s: &str| s.split_whitespace().collect::<String>();
            let line = squeeze(&fold(first.trim_end_matches(',')));
            assert!(
                squeeze(&text.body).contains(&line),
                "message {i}: {line:?} not in {:?}",
                &text.body[..text.body.len().min(400)]
            );
            assert!(
                text.header.contains(&fold(&sent.subject)),
                "message {i}: subject"
            );
            let s = String::from_utf8_lossy(&raw);
            for (k, what) in [
                "quoted-printable",
                "base64",
                "multipart/alternative",
                "In-Reply-To",
                "filename*",
                "=?",
            ]
            .iter()
            .enumerate()
            {
                if s.contains(what) {
                    kinds[k] += 1;
                }
            }
        }
        let per = |x: usize| x / n;
        eprintln!(
            "per message: raw {} B, text {} B (header {}, body {}, mime {}), {} words; {} distinct words; {kinds:?}",
            per(raw_len),
            per(header + body + mime),
            per(header),
            per(body),
            per(mime),
            per(words),
            distinct.len()
        );
        let text = per(header + body + mime);
        assert!((2_600..=4_400).contains(&text), "text per message {text}");
        assert!(
            (5_000..=11_000).contains(&per(raw_len)),
            "raw {}",
            per(raw_len)
        );
        let share = header * 100 / (header + body + mime);
        assert!((25..=45).contains(&share), "header share {share}%");
        assert!((300..=800).contains(&per(words)), "words {}", per(words));
        assert!(kinds.iter().all(|&k| k > n / 50), "{kinds:?}");
        assert!(distinct.len() > 10_000, "{}", distinct.len());
    }
}
