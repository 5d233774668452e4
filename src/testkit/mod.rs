//! Test kit (feature `testkit`): the cross-backend conformance suite as library code,
//! plus helpers to reach real S3 servers and to scan a backend for leaked plaintext.
//!
//! Each backend's test is a few lines: open the store, call [`conformance::run`] with
//! the capabilities the backend is known to have. S3 servers are configured by
//! environment variables (see [`s3_from_env`]); their tests print why they skip when the
//! variables are absent, and fail instead when `MAILVAULT_REQUIRE_S3=1`.

pub mod churn;
pub mod conformance;
pub mod mailgen;
mod world;
pub use world::DeliveryWorld;

use crate::storage::DynStore;

/// Opens the S3 server configured by `MAILVAULT_S3_<NAME>_{ENDPOINT, REGION, BUCKET,
/// ACCESS_KEY_ID, SECRET_ACCESS_KEY}` (as written by `scripts/s3-servers.sh`), with
/// HTTP allowed and conditional puts requested (the probe decides what really holds).
/// `MAILVAULT_S3_<NAME>_POOL_MAX_IDLE`, when set, is the number of idle connections
/// kept per host (`0`: a fresh connection per request, which avoids Garage's 40 ms
/// stall on small responses; `benches/store.rs` measures both).
///
/// Returns `Ok(None)` when `MAILVAULT_S3_<NAME>_ENDPOINT` is unset, after printing why the
/// caller will skip.
///
/// # Panics
/// When the server is not configured but `MAILVAULT_REQUIRE_S3=1` (the full suite must
/// not skip silently), or the configuration is incomplete.
#[cfg(feature = "s3")]
pub fn s3_from_env(name: &str) -> Option<DynStore> {
    use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
    let var = |field: &str| std::env::var(format!("MAILVAULT_S3_{name}_{field}")).ok();
    let Some(endpoint) = var("ENDPOINT") else {
        assert!(
            std::env::var("MAILVAULT_REQUIRE_S3").as_deref() != Ok("1"),
            "MAILVAULT_REQUIRE_S3=1 but MAILVAULT_S3_{name}_ENDPOINT is not set: start the servers with scripts/s3-servers.sh"
        );
        eprintln!("skipping {name}: MAILVAULT_S3_{name}_ENDPOINT is not set (run the suite through scripts/test.sh)");
        return None;
    };
    let need = |field: &str| {
        var(field).unwrap_or_else(|| panic!("MAILVAULT_S3_{name}_{field} is not set"))
    };
    let store = AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_region(need("REGION"))
        .with_bucket_name(need("BUCKET"))
        .with_access_key_id(need("ACCESS_KEY_ID"))
        .with_secret_access_key(need("SECRET_ACCESS_KEY"))
        .with_conditional_put(S3ConditionalPut::ETagMatch);
    let store = match var("POOL_MAX_IDLE") {
        Some(max) => store.with_client_options(
            object_store::ClientOptions::new()
                .with_allow_http(true)
                .with_pool_max_idle_per_host(max.parse().expect("a number of connections")),
        ),
        None => store,
    };
    let store = store
        .build()
        .expect("S3 configuration from the environment");
    Some(std::sync::Arc::new(store))
}

/// Flips the bits `mask` of byte `at` of the stored object `path`: the storage
/// operator's simplest attack.
///
/// # Panics
/// If the object cannot be read or written, or is shorter than `at + 1` bytes.
pub async fn flip_stored_byte(
    store: &DynStore,
    path: &object_store::path::Path,
    at: usize,
    mask: u8,
) {
    use object_store::ObjectStoreExt;
    let mut bytes = store
        .get(path)
        .await
        .expect("get the object to flip")
        .bytes()
        .await
        .expect("read the object to flip")
        .to_vec();
    bytes[at] ^= mask;
    store
        .put(path, bytes.into())
        .await
        .expect("put the flipped object");
}

/// Where a marker was found by [`scan_for_markers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerHit {
    /// The object that holds it.
    pub path: String,
    /// Whether it was in the object's name (otherwise in its bytes).
    pub in_name: bool,
    /// Which marker.
    pub marker: Vec<u8>,
}

/// Reads every object under `prefix` (or the whole store) and reports each marker found
/// in an object name or in object bytes. Returns the hits and the number of objects read.
///
/// # Panics
/// If the backend fails to list or read.
pub async fn scan_for_markers(
    store: &DynStore,
    prefix: Option<&object_store::path::Path>,
    markers: &[&[u8]],
) -> (Vec<MarkerHit>, usize) {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    let objects: Vec<_> = store.list(prefix).try_collect().await.expect("list");
    let mut hits = Vec::new();
    for meta in &objects {
        let name = meta.location.to_string();
        let bytes = store
            .get(&meta.location)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("read");
        for marker in markers {
            if contains(name.as_bytes(), marker) {
                hits.push(MarkerHit {
                    path: name.clone(),
                    in_name: true,
                    marker: marker.to_vec(),
                });
            }
            if contains(&bytes, marker) {
                hits.push(MarkerHit {
                    path: name.clone(),
                    in_name: false,
                    marker: marker.to_vec(),
                });
            }
        }
    }
    (hits, objects.len())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Provider settings for tests: password stretching cheap enough to run hundreds of
/// logins (Argon2id with 256 KiB, one pass, one lane), no pepper, no limits.
pub fn cheap_provider_config() -> crate::engine::ProviderConfig {
    crate::engine::ProviderConfig {
        pepper: None,
        kdf: crate::format::slot::KdfParams {
            m_kib: 256,
            t: 1,
            p: 1,
        },
        limits: None,
        gate: crate::keys::KdfGate::new(2),
        ..Default::default()
    }
}

/// Deterministic test bytes: `len` bytes of a pattern that depends on `seed`, with no
/// run long enough to hide a misplaced chunk.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Collects a blob stream into one buffer, stopping at the first error.
///
/// # Errors
/// The first error the stream yields.
pub async fn collect_stream(stream: crate::blob::BlobStream) -> crate::Result<Vec<u8>> {
    use futures::TryStreamExt;
    stream
        .try_fold(Vec::new(), |mut all, piece| async move {
            all.extend_from_slice(&piece);
            Ok(all)
        })
        .await
}
