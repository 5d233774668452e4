//! Shared by the reference server's session fuzz targets (`imap_session`, `lmtp_session`;
//! included with `#[path]`, not a target itself): a deployment in memory with one account,
//! `alice@example.org` (key model 5, password "correct horse battery staple", cheap
//! Argon2id costs), named in the accounts file of a server config, made once per process.
//! Each input starts from a copy of its store and directory as they were after the
//! account's creation.

#![allow(dead_code)]

use std::sync::{Arc, LazyLock};

use mailvault::crypto::RandomSource;
use mailvault::directory::{Directory, MemoryDirectory, OfficerKeyEntry};
use mailvault::engine::{Provider, ProviderConfig};
use mailvault::format::slot::KdfParams;
use mailvault::ids::DeploymentId;
use mailvault::keys::OfficerSecret;
use mailvault_server::config::Config;
use object_store::memory::InMemory;

/// The account's login name (the seeds of `server/tests/imap_malformed/` use it).
pub const NAME: &str = "alice@example.org";
/// The account's password.
pub const PASSWORD: &str = "correct horse battery staple";

/// The deployment, right after the account's creation.
pub struct Fixture {
    /// The server's config (its accounts file names the account).
    pub config: Config,
    pub deployment: DeploymentId,
    pub store: Arc<InMemory>,
    pub directory: MemoryDirectory,
}

impl Fixture {
    /// A copy of the store, as it was after the account's creation.
    pub fn store(&self) -> Arc<InMemory> {
        Arc::new(self.store.fork())
    }

    /// A copy of the directory, as it was after the account's creation.
    pub fn directory(&self) -> Arc<MemoryDirectory> {
        Arc::new(self.directory.clone())
    }
}

/// Cheap Argon2id costs: an input that logs in must not take a real derivation's time.
pub fn provider_config() -> ProviderConfig {
    ProviderConfig {
        kdf: KdfParams {
            m_kib: 8,
            t: 1,
            p: 1,
        },
        ..ProviderConfig::default()
    }
}

/// A runtime on the fuzzing thread (one per input: the tasks a session spawns end with
/// it rather than piling up across inputs).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// The fixture, made at the first use.
pub static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("mailvault-fuzz-server-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    let config_path = dir.join("mailvault.toml");
    std::fs::write(
        &config_path,
        format!("store = \"memory://\"\ndirectory = \"{}\"\n", dir.display()),
    )
    .expect("write the config");
    let config = Config::load(&config_path).expect("the config loads");
    let rng = RandomSource::os();
    let deployment = DeploymentId::random(&rng);
    let store = Arc::new(InMemory::new());
    let directory = Arc::new(MemoryDirectory::new());
    let account = runtime().block_on(async {
        // Key model 5 (the default) needs a current officer key.
        directory
            .set_officer_keys(vec![OfficerKeyEntry {
                key: OfficerSecret::generate(&rng).public(),
                current: true,
            }])
            .await
            .expect("officer keys");
        let provider = Provider::new(
            store.clone(),
            deployment,
            directory.clone(),
            provider_config(),
        )
        .await
        .expect("a provider");
        provider.create_account(PASSWORD).await.expect("an account")
    });
    config
        .accounts()
        .insert(NAME, account)
        .expect("the accounts file");
    Fixture {
        config,
        deployment,
        store,
        directory: (*directory).clone(),
    }
});
