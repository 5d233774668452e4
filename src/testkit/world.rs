//! One account ready for sealed delivery, for benchmarks and examples: a trusted
//! directory in memory holding the deployment's delivery key and the account's record
//! (key model device-only, one epoch), and the keys a deliverer and an importer need.

use std::sync::Arc;

use crate::blob::BlobStore;
use crate::crypto::{AccountKey, RandomSource};
use crate::delivery::{Deliverer, DeliverySigningKey};
use crate::directory::{AccountRecord, Directory, KeyModel, MemoryDirectory};
use crate::ids::{AccountId, DeploymentId};
use crate::index::IndexStore;
use crate::mail::{MailConfig, Mailstore};
use crate::storage::DynStore;

/// A deployment with one account that accepts sealed deliveries.
pub struct DeliveryWorld {
    /// The deployment.
    pub deployment: DeploymentId,
    /// The trusted directory (delivery key and account record set).
    pub directory: Arc<MemoryDirectory>,
    /// The deliverer's signing key, as bytes.
    pub signing: [u8; 32],
    /// Its verifying key, what an import checks deliveries with.
    pub verifying: [u8; 32],
    /// The account.
    pub account: AccountId,
    /// The account's key (epoch 1).
    pub key: AccountKey,
}

impl DeliveryWorld {
    /// A fresh deployment, directory and account (random ids and keys).
    ///
    /// # Panics
    /// If the in-memory directory refuses the records (it does not).
    pub async fn new() -> Self {
        let rng = RandomSource::os();
        let directory = Arc::new(MemoryDirectory::new());
        let signing = DeliverySigningKey::generate(&rng);
        directory
            .set_delivery_key(signing.verifying_key())
            .await
            .expect("delivery key");
        let account = AccountId::random(&rng);
        let key = AccountKey::generate(1, &rng);
        directory
            .set_account_record(
                &account,
                AccountRecord::new(KeyModel::DeviceOnly, vec![(1, key.public_key())], [9; 32]),
            )
            .await
            .expect("account record");
        Self {
            deployment: DeploymentId::random(&rng),
            directory,
            signing: *signing.to_bytes(),
            verifying: signing.verifying_key(),
            account,
            key,
        }
    }

    /// A deliverer writing to `store`.
    pub fn deliverer(&self, store: DynStore) -> Deliverer {
        Deliverer::new(
            store,
            self.deployment,
            self.directory.clone(),
            DeliverySigningKey::from_bytes(self.signing),
        )
    }

    /// A handle on the account's mail on `store`: what a login opens.
    ///
    /// # Panics
    /// If the account cannot be opened.
    pub async fn mail(&self, store: DynStore) -> Mailstore {
        self.mail_with(store, MailConfig::default()).await
    }

    /// As [`mail`](Self::mail), with a configuration.
    ///
    /// # Panics
    /// If the account cannot be opened.
    pub async fn mail_with(&self, store: DynStore, config: MailConfig) -> Mailstore {
        let directory: Arc<dyn Directory> = self.directory.clone();
        let index = IndexStore::new(store.clone(), self.deployment, directory)
            .await
            .expect("index store");
        let blobs = BlobStore::new(store, self.deployment).account(self.account, &self.key);
        Mailstore::open_with(&index, blobs, &self.key, config)
            .await
            .expect("open mail")
    }
}
