//! What operations cost in backend requests, counted with `CountingStore`.

use std::sync::Arc;

use mailvault::format::BlobKind;
use mailvault::storage::{CountingStore, DynStore, RequestKind};
use mailvault::testkit::pattern;

use super::{Fixture, C, SEALED};

/// Range read of 4 KiB from a 64 MiB blob with its pin: exactly one GET, of at most two
/// chunks, and no other request (no HEAD, no header fetch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_read_is_one_get_of_at_most_two_chunks() {
    let f = Fixture::new();
    let counting = CountingStore::new(super::memory());
    let store: DynStore = Arc::new(counting.clone());
    let blobs = f.blobs(&store);
    let size = 64usize << 20;
    let plain = pattern(64, size);
    let mut writer = blobs.writer(BlobKind::Message);
    for piece in plain.chunks(1 << 20) {
        writer.write(piece).await.unwrap();
    }
    let pin = writer.finish().await.unwrap();
    for start in [
        0u64,
        C as u64 - 2048,
        17 * C as u64 + 100,
        size as u64 - 4096,
    ] {
        counting.reset();
        let got = blobs.get_range(&pin, start..start + 4096).await.unwrap();
        assert_eq!(&got[..], &plain[start as usize..start as usize + 4096]);
        let requests = counting.requests();
        assert_eq!(requests.len(), 1, "exactly one request: {requests:?}");
        let get = &requests[0];
        assert_eq!(get.kind, RequestKind::Get);
        let range = get.range.clone().expect("a ranged GET");
        assert!(
            range.end - range.start <= 2 * SEALED as u64,
            "at most two chunks: {range:?}"
        );
        assert_eq!(get.bytes, range.end - range.start);
    }
}

/// A small blob is one conditional PUT; a large one is a multipart upload whose parts add
/// up to the stored size. Object names are the account prefix and a random id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_cost_one_put_or_one_multipart_upload() {
    let f = Fixture::new();
    let counting = CountingStore::new(super::memory());
    let store: DynStore = Arc::new(counting.clone());
    let blobs = f.blobs(&store);
    let pin = blobs
        .put(BlobKind::Message, &pattern(1, 20_000))
        .await
        .unwrap();
    let requests = counting.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].kind, RequestKind::Put);
    assert_eq!(requests[0].bytes, pin.stored_len());
    assert_eq!(
        requests[0].path,
        format!("a/{}/b/{}", f.account.to_hex(), pin.id.to_hex())
    );

    counting.reset();
    let big = pattern(2, 20 << 20);
    let pin = blobs.put(BlobKind::Message, &big).await.unwrap();
    assert_eq!(counting.count(RequestKind::MultipartStart), 1);
    assert_eq!(counting.count(RequestKind::MultipartComplete), 1);
    assert_eq!(counting.count(RequestKind::Put), 0);
    assert_eq!(counting.bytes_written(), pin.stored_len());
    assert_eq!(counting.names_written().len(), 1);
}
