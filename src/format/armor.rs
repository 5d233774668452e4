//! The armor of the files a person carries from one machine to another (a key export, a
//! device key file, a device enrollment): a begin line, the bytes as lines of 64 hex
//! digits, an end line. What the bytes mean is each format's own concern.

use zeroize::Zeroizing;

/// `bytes` armored between the lines `begin` and `end`.
pub(crate) fn armor(begin: &str, end: &str, bytes: &[u8]) -> Zeroizing<String> {
    let hex = Zeroizing::new(crate::ids::hex(bytes));
    let mut out = Zeroizing::new(String::with_capacity(
        begin.len() + end.len() + hex.len() + hex.len() / 64 + 3,
    ));
    out.push_str(begin);
    out.push('\n');
    for line in hex.as_bytes().chunks(64) {
        // Hex digits are ASCII: every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(end);
    out.push('\n');
    out
}

/// Why armored text gave no bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unarmor {
    /// The text is not between `begin` and `end`: another kind of file.
    NotArmored,
    /// Between them, something other than an even number of hex digits.
    Malformed,
}

/// The bytes armored between `begin` and `end` (whitespace anywhere ignored).
pub(crate) fn unarmor(text: &str, begin: &str, end: &str) -> Result<Zeroizing<Vec<u8>>, Unarmor> {
    let body = text
        .trim()
        .strip_prefix(begin)
        .and_then(|t| t.strip_suffix(end))
        .ok_or(Unarmor::NotArmored)?;
    let hex: Zeroizing<Vec<u8>> =
        Zeroizing::new(body.bytes().filter(|b| !b.is_ascii_whitespace()).collect());
    if !hex.len().is_multiple_of(2) {
        return Err(Unarmor::Malformed);
    }
    let digit = |b: u8| char::from(b).to_digit(16).ok_or(Unarmor::Malformed);
    let bytes = hex
        .chunks_exact(2)
        .map(|pair| Ok((digit(pair[0])? << 4 | digit(pair[1])?) as u8))
        .collect::<Result<Vec<u8>, Unarmor>>()?;
    Ok(Zeroizing::new(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn armored_bytes_round_trip_and_damage_is_told_apart() {
        let bytes: Vec<u8> = (0..=255).collect();
        let text = armor("-----BEGIN X-----", "-----END X-----", &bytes);
        assert!(text.lines().skip(1).take(8).all(|l| l.len() == 64));
        let back = unarmor(&text, "-----BEGIN X-----", "-----END X-----").unwrap();
        assert_eq!(&back[..], &bytes[..]);
        assert_eq!(
            unarmor(&text, "-----BEGIN Y-----", "-----END Y-----"),
            Err(Unarmor::NotArmored)
        );
        let odd = text.replacen("00", "0", 1);
        assert_eq!(
            unarmor(&odd, "-----BEGIN X-----", "-----END X-----"),
            Err(Unarmor::Malformed)
        );
        let not_hex = text.replacen("00", "0g", 1);
        assert_eq!(
            unarmor(&not_hex, "-----BEGIN X-----", "-----END X-----"),
            Err(Unarmor::Malformed)
        );
    }
}
