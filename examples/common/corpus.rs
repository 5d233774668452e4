//! Realistic messages for the memory examples: the messages of the test corpus
//! (`tests/corpus/mail-parser`: real mail with header blocks of a few KiB, attachments,
//! several charsets), each delivered with a `Received:` line and a Message-ID of its own.
//! Shared by the examples (`#[path]`-included; not an example of its own).

/// The messages of the test corpus (`.eml` files, sorted by path).
pub fn corpus() -> Vec<Vec<u8>> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("the corpus folder").flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "eml") {
                out.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    walk(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/mail-parser"),
        &mut paths,
    );
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).expect("a corpus message"))
        .collect()
}

/// Corpus message `n` (in turn) as delivered: a `Received:` line and a Message-ID of its
/// own before its header.
pub fn realistic(corpus: &[Vec<u8>], n: usize) -> Vec<u8> {
    let mut message = format!(
        "Received: from mx{m}.example.net (mx{m}.example.net [192.0.2.{m}])\r\n\
         \tby mail.example.org with LMTP id {n:08x}; Fri, 4 Dec 2026 10:00:00 +0000\r\n\
         Message-ID: <{n}.realistic@example.org>\r\n",
        m = n % 250
    )
    .into_bytes();
    message.extend_from_slice(&corpus[n % corpus.len()]);
    message
}

/// A figure of `/proc/self/status` (`VmRSS`, `VmHWM`), in KiB (0 where there is none).
pub fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}
