//! The integration suite: one binary, one module per concern. Build and run with
//! `cargo test --release --all-features` (the `testkit` feature is required); the
//! S3 backends join when `scripts/s3-servers.sh` has exported their settings.

mod attacks;
mod backends;
mod companion;
mod delivery;
mod engine;
mod executor;
mod hardening_delivery;
mod hardening_directory;
mod hardening_inbox;
mod hardening_index;
mod hardening_keys;
mod hardening_mail;
mod hardening_rotation;
mod hardening_storage;
mod index;
mod keys;
mod mail;
mod mail_analysis;
mod mail_api;
mod mail_details;
mod mail_fetch;
mod mail_jmap;
mod mail_search;
mod requests;
mod roundtrip;
mod sealed;
mod search;
mod search_leakage;
mod search_text;
mod storage;
mod vectors;
mod verify;

use mailvault::blob::{AccountBlobs, BlobCipher, BlobConfig, BlobStore};
use mailvault::crypto::{AccountKey, RandomSource};
use mailvault::ids::{AccountId, DeploymentId};
use mailvault::storage::DynStore;

/// Plaintext bytes per chunk of the blob format.
pub const C: usize = 64 * 1024;
/// Stored bytes per full chunk.
pub const SEALED: usize = C + 16;
/// Blob header length.
pub const HEADER: usize = 76;

/// One deployment and account with keys, for tests that need the parts separately.
pub struct Fixture {
    pub deployment: DeploymentId,
    pub account: AccountId,
    pub key: AccountKey,
    pub rng: RandomSource,
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

impl Fixture {
    pub fn new() -> Self {
        let rng = RandomSource::os();
        Self {
            deployment: DeploymentId::random(&rng),
            account: AccountId::random(&rng),
            key: AccountKey::generate(1, &rng),
            rng,
        }
    }

    pub fn cipher(&self) -> BlobCipher {
        BlobCipher::new(self.deployment, self.account, &self.key)
    }

    pub fn blobs(&self, store: &DynStore) -> AccountBlobs {
        self.blobs_with(store, BlobConfig::default())
    }

    pub fn blobs_with(&self, store: &DynStore, config: BlobConfig) -> AccountBlobs {
        BlobStore::new(store.clone(), self.deployment)
            .with_config(config)
            .account(self.account, &self.key)
    }
}

/// Runs `flow` with two handles on one store (as two processes would open it) on each
/// backend that shares state between handles: a local directory, and Garage and moto when
/// their settings are exported.
pub async fn on_shared_backends<F, Fut>(flow: F)
where
    F: Fn(&'static str, DynStore, DynStore) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let open = || mailvault::storage::open_store(&path).unwrap();
    flow("local", open(), open()).await;
    for name in ["GARAGE", "MOTO"] {
        if let (Some(first), Some(second)) = (
            mailvault::testkit::s3_from_env(name),
            mailvault::testkit::s3_from_env(name),
        ) {
            flow(name, first, second).await;
        }
    }
}

/// The standard output of the Python oracle `tests/oracle/<script>` run with `args`
/// (a decoder no one here wrote, for the analysis and search-text tests); panics with
/// its standard error unless it succeeds.
pub fn python_oracle<S: AsRef<std::ffi::OsStr>>(script: &str, args: &[S]) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/oracle")
        .join(script);
    let output = std::process::Command::new("python3")
        .arg(path)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("the oracle writes UTF-8")
}

pub fn memory() -> DynStore {
    mailvault::storage::open_store("memory://").unwrap()
}

/// A trusted directory with one current officer key and the provider's delivery
/// verification key, with that officer's secret and the delivery signing key.
pub async fn directory_with_officer_and_signer(
    rng: &RandomSource,
) -> (
    std::sync::Arc<mailvault::directory::MemoryDirectory>,
    mailvault::keys::OfficerSecret,
    mailvault::delivery::DeliverySigningKey,
) {
    use mailvault::directory::Directory;
    let (directory, officer) = directory_with_officer(rng).await;
    let signing = mailvault::delivery::DeliverySigningKey::generate(rng);
    directory
        .set_delivery_key(signing.verifying_key())
        .await
        .unwrap();
    (directory, officer, signing)
}

/// A trusted directory with one current officer key, and that officer's secret.
pub async fn directory_with_officer(
    rng: &RandomSource,
) -> (
    std::sync::Arc<mailvault::directory::MemoryDirectory>,
    mailvault::keys::OfficerSecret,
) {
    use mailvault::directory::{Directory, MemoryDirectory, OfficerKeyEntry};
    let directory = std::sync::Arc::new(MemoryDirectory::new());
    let officer = mailvault::keys::OfficerSecret::generate(rng);
    directory
        .set_officer_keys(vec![OfficerKeyEntry {
            key: officer.public(),
            current: true,
        }])
        .await
        .unwrap();
    (directory, officer)
}

/// The id of the session's officer slot (the first, if there are several).
pub fn officer_slot(session: &mailvault::engine::Session) -> [u8; 16] {
    session
        .slots()
        .iter()
        .find(|s| s.kind == mailvault::format::slot::SlotKind::Officer)
        .expect("the keyring has an officer slot")
        .id
}
