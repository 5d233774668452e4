//! Throughput of the search text model and the size of a corpus's dictionary (issue 14):
//! `cargo run --release --example search_text_stats [DIR] [ROUNDS]` (DIR defaults to the
//! test corpus, `tests/corpus/mail-parser`; every `*.eml` under it is read).
//!
//! Prints: extraction (parse, decode, fold into the three streams) and tokenization
//! throughput over the raw and the decoded bytes; fold alone over the decoded text; and the
//! ratio of the distinct-word dictionary (`\0`-separated, as a search segment stores it)
//! to the decoded text, for the whole corpus as one segment.

use std::collections::HashSet;
use std::time::Instant;

use mailvault::mail::text::extract::extract_message;
use mailvault::mail::text::fold::fold;
use mailvault::mail::text::tokenize::tokens;
use mailvault::mail::text::tokenize::Token;

fn messages(dir: &std::path::Path, out: &mut Vec<Vec<u8>>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            messages(&path, out);
        } else if path.extension().is_some_and(|e| e == "eml") {
            if let Ok(bytes) = std::fs::read(&path) {
                out.push(bytes);
            }
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/mail-parser").into());
    let rounds: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(50);
    let mut corpus = Vec::new();
    messages(std::path::Path::new(&dir), &mut corpus);
    let raw_bytes: usize = corpus.iter().map(Vec::len).sum();
    const LIMIT: usize = 64 << 20;

    // Extraction + tokenization, `rounds` times over the corpus.
    let start = Instant::now();
    let mut text_bytes = 0;
    let mut token_count = 0usize;
    for _ in 0..rounds {
        text_bytes = 0;
        token_count = 0;
        for raw in &corpus {
            let text = extract_message(raw, LIMIT);
            text_bytes += text.len();
            for stream in [&text.header, &text.body, &text.mime] {
                token_count += tokens(stream).count();
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64() / rounds as f64;

    // The two halves apart: extraction alone, then tokenization of its streams alone.
    let extracted: Vec<_> = corpus
        .iter()
        .map(|raw| extract_message(raw, LIMIT))
        .collect();
    let start = Instant::now();
    for _ in 0..rounds {
        for raw in &corpus {
            std::hint::black_box(extract_message(raw, LIMIT));
        }
    }
    let extract_elapsed = start.elapsed().as_secs_f64() / rounds as f64;
    let start = Instant::now();
    for _ in 0..rounds {
        for text in &extracted {
            for stream in [&text.header, &text.body, &text.mime] {
                std::hint::black_box(tokens(stream).count());
            }
        }
    }
    let tokenize_elapsed = start.elapsed().as_secs_f64() / rounds as f64;
    // For scale: the analysis an append or a delivery already makes (its own parse).
    let start = Instant::now();
    for _ in 0..rounds {
        for raw in &corpus {
            std::hint::black_box(mailvault::mail::Mailstore::parse_message(raw));
        }
    }
    let analysis_elapsed = start.elapsed().as_secs_f64() / rounds as f64;

    // Fold alone, over the decoded (unfolded) text: the text parts as written.
    let texts: Vec<String> = corpus
        .iter()
        .map(|raw| String::from_utf8_lossy(raw).into_owned())
        .collect();
    let start = Instant::now();
    let mut folded_len = 0;
    for _ in 0..rounds {
        folded_len = texts.iter().map(|t| fold(t).len()).sum::<usize>();
    }
    let fold_elapsed = start.elapsed().as_secs_f64() / rounds as f64;

    // The dictionary of the corpus as one segment: distinct words, `\0`-separated.
    let mut words: HashSet<String> = HashSet::new();
    let mut separators: HashSet<char> = HashSet::new();
    let mut per_message = 0usize;
    for raw in &corpus {
        let text = extract_message(raw, LIMIT);
        let mut mine: HashSet<&str> = HashSet::new();
        for stream in [&text.header, &text.body, &text.mime] {
            for token in tokens(stream) {
                match token {
                    Token::Word(w) => {
                        mine.insert(w);
                    }
                    Token::Sep(c) => {
                        separators.insert(c);
                    }
                }
            }
        }
        per_message += mine.len();
        words.extend(mine.into_iter().map(str::to_owned));
    }
    let dictionary: usize = words.iter().map(|w| w.len() + 1).sum::<usize>() + 1;

    let mb = |bytes: usize, secs: f64| bytes as f64 / secs / 1e6;
    println!("corpus: {} messages, {raw_bytes} raw bytes, {text_bytes} bytes of folded text (header+body+mime), {token_count} tokens", corpus.len());
    println!(
        "extract+tokenize: {:.1} ms per pass = {:.1} MB/s of raw mail, {:.1} MB/s of text ({rounds} rounds)",
        elapsed * 1e3,
        mb(raw_bytes, elapsed),
        mb(text_bytes, elapsed)
    );
    println!(
        "extract alone: {:.1} MB/s of raw mail ({:.1} µs per message); tokenize alone: {:.1} MB/s of text",
        mb(raw_bytes, extract_elapsed),
        extract_elapsed * 1e6 / corpus.len() as f64,
        mb(text_bytes, tokenize_elapsed)
    );
    println!(
        "for scale, the analysis (Mailstore::parse_message): {:.1} µs per message",
        analysis_elapsed * 1e6 / corpus.len() as f64
    );
    println!(
        "fold alone over the raw messages as text: {:.1} MB/s ({folded_len} bytes out)",
        mb(raw_bytes, fold_elapsed)
    );
    println!(
        "dictionary: {} distinct words, {dictionary} bytes = {:.2}% of the text; {} distinct (word, message) pairs ({:.0} per message), {} separator chars",
        words.len(),
        100.0 * dictionary as f64 / text_bytes as f64,
        per_message,
        per_message as f64 / corpus.len() as f64,
        separators.len()
    );
}
