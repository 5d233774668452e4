//! Round trips for edge and random lengths, through the one-call codec and through the
//! streaming writer and every read path on a store.

use mailvault::format::{BlobKind, BlobLayout};
use mailvault::ids::BlobId;
use mailvault::testkit::{collect_stream, pattern};
use proptest::prelude::*;

use super::{Fixture, C};

fn edge_lengths() -> Vec<usize> {
    let mut lengths = vec![0, 1, C - 1, C, C + 1];
    for k in [2, 3, 5] {
        lengths.extend([k * C - 1, k * C, k * C + 1]);
    }
    lengths
}

fn length() -> impl Strategy<Value = usize> {
    prop_oneof![proptest::sample::select(edge_lengths()), 0..5 * C]
}

#[test]
fn codec_round_trips_every_edge_length() {
    let f = Fixture::new();
    let cipher = f.cipher();
    for len in edge_lengths() {
        let plain = pattern(len as u64, len);
        let (pin, stored) = cipher
            .seal(&f.rng, BlobId::random(&f.rng), BlobKind::Message, &plain)
            .unwrap();
        assert_eq!(stored.len() as u64, pin.stored_len());
        assert_eq!(
            BlobLayout::for_ciphertext(stored.len() as u64)
                .unwrap()
                .plaintext_len(),
            len as u64
        );
        assert_eq!(cipher.open(&pin, &stored).unwrap(), plain, "len {len}");
        let (unpinned, opened) = cipher.open_unpinned(pin.id, &stored).unwrap();
        assert_eq!(unpinned, pin);
        assert_eq!(opened, plain);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Streamed in arbitrary pieces, read back whole, streamed and by random ranges: every
    /// read equals the corresponding slice of the plaintext.
    #[test]
    fn store_round_trip_and_ranges(
        len in length(),
        piece in 1usize..200_000,
        ranges in proptest::collection::vec((0.0f64..1.0, 0.0f64..1.0), 1..6),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let f = Fixture::new();
            let store = super::memory();
            let blobs = f.blobs(&store);
            let plain = pattern(len as u64 ^ piece as u64, len);
            let mut writer = blobs.writer(BlobKind::Message);
            for part in plain.chunks(piece) {
                writer.write(part).await.unwrap();
            }
            let pin = writer.finish().await.unwrap();
            prop_assert_eq!(pin.len(), len as u64);
            prop_assert_eq!(&blobs.read(&pin).await.unwrap()[..], &plain[..]);
            let streamed = collect_stream(blobs.get(&pin).await.unwrap()).await.unwrap();
            prop_assert_eq!(&streamed, &plain);
            for (x, y) in ranges {
                let a = (x * len as f64) as u64;
                let b = (y * len as f64) as u64;
                let (a, b) = (a.min(b), a.max(b));
                let got = blobs.get_range(&pin, a..b).await.unwrap();
                prop_assert_eq!(&got[..], &plain[a as usize..b as usize]);
            }
            Ok(())
        })?;
    }

    /// The layout arithmetic is a bijection between plaintext and valid ciphertext
    /// lengths, and every other ciphertext length is refused.
    #[test]
    fn layout_lengths(len in 0u64..(1 << 40), delta in 1u64..(16 * 1024)) {
        let layout = BlobLayout::for_plaintext(len).unwrap();
        let stored = layout.ciphertext_len();
        prop_assert_eq!(BlobLayout::for_ciphertext(stored).unwrap().plaintext_len(), len);
        // Lengths just below a chunk's minimum ciphertext are impossible.
        let body = stored - super::HEADER as u64;
        let rest = body % super::SEALED as u64;
        let short = stored - rest + (delta % 16);
        prop_assert!(BlobLayout::for_ciphertext(short).is_err());
    }
}
