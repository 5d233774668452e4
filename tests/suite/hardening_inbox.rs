//! Hardening of the inbox side of delivery (issue 10): deliveries that a stale session or
//! a rotated signing key would quarantine for ever (item 6), and deliveries withheld,
//! replayed or reordered by the store (item 13).

use std::sync::Arc;

use futures::TryStreamExt;
use mailvault::crypto::{AccountKey, RandomSource};
use mailvault::delivery::{DeliveryOptions, DeliveryReceipt, DeliverySigningKey, Rejection};
use mailvault::directory::{DeliveryKeyEntry, Directory, MemoryDirectory};
use mailvault::engine::{Provider, ProviderConfig};
use mailvault::format::slot::KdfParams;
use mailvault::ids::{AccountId, DeploymentId};
use mailvault::keys::{Credential, KdfGate, SlotBinding};
use mailvault::storage::{naming, DynStore};
use object_store::ObjectStoreExt;

/// Password stretching cheap enough for tests.
const CHEAP: KdfParams = KdfParams {
    m_kib: 256,
    t: 1,
    p: 1,
};

fn config() -> ProviderConfig {
    ProviderConfig {
        pepper: None,
        kdf: CHEAP,
        limits: None,
        gate: KdfGate::new(2),
    }
}

/// A provider with one account (password "pw") and the deployment's delivery signing key.
struct World {
    store: DynStore,
    directory: Arc<MemoryDirectory>,
    provider: Provider,
    alice: AccountId,
    signing: DeliverySigningKey,
}

impl World {
    async fn new() -> Self {
        let rng = RandomSource::os();
        let store = super::memory();
        let (directory, _officer, signing) = super::directory_with_officer_and_signer(&rng).await;
        let provider = Provider::new(
            store.clone(),
            DeploymentId::random(&rng),
            directory.clone(),
            config(),
        )
        .await
        .unwrap();
        let alice = provider.create_account("pw").await.unwrap();
        Self {
            store,
            directory,
            provider,
            alice,
            signing,
        }
    }

    async fn deliver_with(&self, signing: &DeliverySigningKey, body: &[u8]) -> DeliveryReceipt {
        self.provider
            .deliverer(DeliverySigningKey::from_bytes(*signing.to_bytes()))
            .deliver_bytes(self.alice, body, DeliveryOptions::default())
            .await
            .unwrap()
    }

    async fn deliver(&self, body: &[u8]) -> DeliveryReceipt {
        self.deliver_with(&self.signing, body).await
    }

    /// The epoch keys of the account's keyring as it is now (what a session opened now
    /// holds).
    async fn epoch_keys(&self) -> Vec<AccountKey> {
        let record = self
            .directory
            .account_record(&self.alice)
            .await
            .unwrap()
            .unwrap();
        let binding = SlotBinding::new(
            self.provider.deployment(),
            self.alice,
            *record.secret(),
            None,
        );
        self.provider
            .keyrings()
            .unlock(self.alice, binding, Credential::Password("pw"))
            .await
            .unwrap()
            .epoch_keys()
    }

    /// The names of the account's pending envelopes.
    async fn envelopes(&self) -> Vec<object_store::path::Path> {
        self.store
            .list(Some(&naming::delivery_prefix(&self.alice)))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .unwrap()
    }

    /// Flips one byte of the envelope of `delivery`.
    async fn flip_envelope(&self, delivery: &DeliveryReceipt, at: usize) {
        let path = naming::delivery_path(&self.alice, &delivery.delivery);
        let mut bytes = self
            .store
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        bytes[at] ^= 0x20;
        self.store.put(&path, bytes.into()).await.unwrap();
    }
}

/// Item 6: a session opened before another session of the account added an epoch imports
/// a delivery sealed to the new epoch (it reloads its keyring) instead of quarantining it.
#[tokio::test]
async fn item_06_a_stale_session_imports_a_delivery_to_a_newer_epoch() {
    let w = World::new().await;
    let mut stale = w.provider.unlock(w.alice, "pw").await.unwrap();
    let mut other = w.provider.unlock(w.alice, "pw").await.unwrap();
    assert_eq!(other.add_epoch().await.unwrap(), 2);
    w.deliver(b"Subject: to epoch 2\r\n\r\nhello").await;
    let mut mail = stale.mailstore().await.unwrap();
    let report = stale.import_deliveries(&mut mail).await.unwrap();
    assert!(
        report.imported.len() == 1 && report.quarantined.is_empty(),
        "a session opened before add_epoch did not import a good delivery: {report:?}"
    );
    assert!(mail.quarantined().is_empty());
}

/// Item 6: after the delivery signing key is rotated, deliveries signed with the old key
/// before the rotation still import (the old key stays in the directory's set, retired),
/// and so do those signed with the new one.
#[tokio::test]
async fn item_06_deliveries_signed_before_a_key_rotation_import() {
    let w = World::new().await;
    w.deliver(b"Subject: old key\r\n\r\nbefore").await;
    let rotated = DeliverySigningKey::generate(&RandomSource::os());
    w.directory
        .set_delivery_key(rotated.verifying_key())
        .await
        .unwrap();
    w.deliver_with(&rotated, b"Subject: new key\r\n\r\nafter")
        .await;
    let mut session = w.provider.unlock(w.alice, "pw").await.unwrap();
    let mut mail = session.mailstore().await.unwrap();
    let report = session.import_deliveries(&mut mail).await.unwrap();
    assert!(
        report.imported.len() == 2 && report.quarantined.is_empty(),
        "a delivery signed before the signing key was rotated was not imported: {report:?}"
    );
}

/// Item 6: quarantined deliveries are not skipped for ever. One was quarantined by an
/// import with keys lacking the epoch it is sealed to, another because its signing key
/// had been removed from the directory too early; once the cause is fixed (the keyring
/// reloaded, the key put back as retired) a re-check imports both and empties the
/// quarantine.
#[tokio::test]
async fn item_06_a_recheck_imports_quarantined_deliveries_whose_cause_is_fixed() {
    let w = World::new().await;
    let old_keys = w.epoch_keys().await;
    let mut session = w.provider.unlock(w.alice, "pw").await.unwrap();
    assert_eq!(session.add_epoch().await.unwrap(), 2);
    let to_epoch_2 = w.deliver(b"Subject: epoch 2\r\n\r\nhello").await;
    // Quarantined by an import that takes its keys as final (opened before add_epoch).
    let verifying = w.directory.delivery_key().await.unwrap().unwrap();
    let mut mail = session.mailstore().await.unwrap();
    let report = mail.import_deliveries(&old_keys, &verifying).await.unwrap();
    assert_eq!(
        report.quarantined,
        [(to_epoch_2.delivery, Rejection::UnknownEpoch)]
    );
    // A rotation whose old key is removed at once: what it signed is refused for now.
    let old_signing = DeliverySigningKey::from_bytes(*w.signing.to_bytes());
    let by_old_key = w.deliver(b"Subject: old key\r\n\r\nbefore").await;
    let rotated = DeliverySigningKey::generate(&RandomSource::os());
    w.directory
        .set_delivery_keys(vec![DeliveryKeyEntry {
            key: rotated.verifying_key(),
            current: true,
        }])
        .await
        .unwrap();
    let report = session.import_deliveries(&mut mail).await.unwrap();
    assert_eq!(
        report.quarantined,
        [(by_old_key.delivery, Rejection::BadSignature)]
    );
    assert_eq!(mail.quarantined().len(), 2);
    // Skipped by every later import.
    let report = session.import_deliveries(&mut mail).await.unwrap();
    assert!(report.imported.is_empty() && report.quarantined.is_empty());
    // The cause fixed: the old key back, retired.
    w.directory
        .set_delivery_key(rotated.verifying_key())
        .await
        .unwrap();
    w.directory
        .set_delivery_keys(vec![
            DeliveryKeyEntry {
                key: old_signing.verifying_key(),
                current: false,
            },
            DeliveryKeyEntry {
                key: rotated.verifying_key(),
                current: true,
            },
        ])
        .await
        .unwrap();
    let report = session.recheck_quarantined(&mut mail).await.unwrap();
    let mut imported: Vec<_> = report.imported.iter().map(|(d, _, _)| *d).collect();
    imported.sort();
    let mut expected = vec![to_epoch_2.delivery, by_old_key.delivery];
    expected.sort();
    assert_eq!(imported, expected, "{report:?}");
    assert!(report.quarantined.is_empty(), "{report:?}");
    assert!(
        mail.quarantined().is_empty(),
        "still quarantined after the re-check"
    );
    assert!(w.envelopes().await.is_empty());
    // Both readable.
    let inbox = mail.mailbox_by_name(mailvault::mail::INBOX).unwrap().id;
    let view = mail.select(inbox).await.unwrap();
    assert_eq!(view.messages.len(), 2);
    for message in &view.messages {
        let email = mail.email(inbox, message.uid).unwrap();
        assert!(!mail.read(&email).await.unwrap().is_empty());
    }
}

/// Item 6: a re-check does not launder a bad delivery. A forged one (signed by a key the
/// directory never had) and one with a flipped byte stay quarantined after a re-check,
/// with their reasons, their envelopes kept; a good one next to them imports.
#[tokio::test]
async fn item_06_forged_and_flipped_deliveries_stay_quarantined_after_a_recheck() {
    let w = World::new().await;
    let forger = DeliverySigningKey::generate(&RandomSource::os());
    let forged = w.deliver_with(&forger, b"Subject: forged\r\n\r\nx").await;
    let flipped = w.deliver(b"Subject: flipped\r\n\r\ny").await;
    w.flip_envelope(&flipped, 100).await;
    let good = w.deliver(b"Subject: good\r\n\r\nz").await;
    let mut session = w.provider.unlock(w.alice, "pw").await.unwrap();
    let mut mail = session.mailstore().await.unwrap();
    let report = session.import_deliveries(&mut mail).await.unwrap();
    assert_eq!(report.imported.len(), 1);
    assert_eq!(report.imported[0].0, good.delivery);
    assert_eq!(report.quarantined.len(), 2);
    for _ in 0..2 {
        let report = session.recheck_quarantined(&mut mail).await.unwrap();
        assert!(
            report.imported.is_empty(),
            "a bad delivery imported: {report:?}"
        );
        let mut refused = report.quarantined.clone();
        refused.sort_by_key(|(d, _)| *d);
        let mut expected = vec![
            (forged.delivery, Rejection::BadSignature),
            (flipped.delivery, Rejection::BadSignature),
        ];
        expected.sort_by_key(|(d, _)| *d);
        assert_eq!(refused, expected);
        assert_eq!(mail.quarantined().len(), 2);
        assert_eq!(
            w.envelopes().await.len(),
            2,
            "quarantined envelopes are kept"
        );
    }
}
