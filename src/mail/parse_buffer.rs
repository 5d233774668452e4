//! The plaintext a message's analysis reads, bounded while the message streams in: at an
//! append and at a delivery alike.

/// How much of a message above the parse limit is kept for the analysis of its header
/// (never more than the limit itself).
pub(crate) const MAX_HEADER_PARSE: usize = 1 << 20;

/// The bytes of a streaming message that its analysis parses: all of them up to `limit`;
/// for a larger message, its first bytes only (up to [`MAX_HEADER_PARSE`] and `limit`),
/// enough for its header, whatever the sizes of the pieces it arrives in.
#[derive(Debug)]
pub(crate) struct ParseBuffer {
    bytes: Vec<u8>,
    limit: usize,
    too_large: bool,
}

impl ParseBuffer {
    /// An empty buffer for a message to be parsed whole up to `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            bytes: Vec::new(),
            limit,
            too_large: false,
        }
    }

    /// Adds the next piece of the message.
    pub(crate) fn push(&mut self, piece: &[u8]) {
        if !self.too_large && self.bytes.len() + piece.len() <= self.limit {
            self.bytes.extend_from_slice(piece);
            return;
        }
        if !self.too_large {
            // Crossing the limit: from now on, only the header's bytes are kept.
            self.too_large = true;
            self.bytes.truncate(self.header_room());
            self.bytes.shrink_to_fit();
        }
        let room = self.header_room().saturating_sub(self.bytes.len());
        self.bytes
            .extend_from_slice(&piece[..piece.len().min(room)]);
    }

    fn header_room(&self) -> usize {
        MAX_HEADER_PARSE.min(self.limit)
    }

    /// The bytes to parse, and whether the message was larger than the limit (they are
    /// then its first bytes, to parse for the header only).
    pub(crate) fn finish(self) -> (Vec<u8>, bool) {
        (self.bytes, self.too_large)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_above_the_limit_keeps_its_first_bytes_whatever_its_pieces() {
        let message: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        for piece in [1, 7, 1000, 4999, 5000] {
            let mut buffer = ParseBuffer::new(3000);
            for chunk in message.chunks(piece) {
                buffer.push(chunk);
            }
            let (bytes, too_large) = buffer.finish();
            assert!(too_large, "pieces of {piece}");
            assert_eq!(bytes, message[..3000], "pieces of {piece}");
        }
        let mut whole = ParseBuffer::new(5000);
        whole.push(&message);
        assert_eq!(whole.finish(), (message.clone(), false));
    }
}
