//! Issue 10, item 4: revocation by root rotation. A former key holder (a removed device
//! key, recovery code or officer slot; an old password with a backup of the bucket; an
//! export file made before) reads the past it could reach, as far as the store keeps it,
//! and nothing new: no body appended, no delivery, no index commit, no keyring made after
//! the rotation.

use std::sync::Arc;

use mailvault::blob::BlobStore;
use mailvault::crypto::{AccountKey, RandomSource};
use mailvault::delivery::{DeliveryOptions, DeliverySigningKey};
use mailvault::directory::{Directory, MemoryDirectory, OfficerKeyEntry};
use mailvault::engine::{Provider, ProviderConfig, Session};
use mailvault::format::slot::{KdfParams, SlotKind};
use mailvault::ids::{AccountId, DeploymentId};
use mailvault::index::IndexStore;
use mailvault::keys::{
    Credential, KdfGate, KeyExport, OfficerSecret, SlotBinding, UnlockedKeyring,
};
use mailvault::mail::{EmailRecord, Mailstore, INBOX};
use mailvault::storage::{CommitMode, DynStore, NoCasStore};

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

/// The backends: InMemory with compare-and-swap, the same without (as Garage), and
/// Garage and moto when their settings are exported.
fn backends() -> Vec<(&'static str, DynStore, CommitMode)> {
    let mut out: Vec<(&'static str, DynStore, CommitMode)> = vec![
        ("memory", super::memory(), CommitMode::CompareAndSwap),
        (
            "no-cas",
            Arc::new(NoCasStore::new(super::memory())),
            CommitMode::WriterUnique,
        ),
    ];
    for (name, mode) in [
        ("GARAGE", CommitMode::WriterUnique),
        ("MOTO", CommitMode::CompareAndSwap),
    ] {
        if let Some(store) = mailvault::testkit::s3_from_env(name) {
            out.push((name, store, mode));
        }
    }
    out
}

/// A model-5 account (password and officer slot) with a delivery key in the directory.
struct World {
    store: DynStore,
    mode: CommitMode,
    deployment: DeploymentId,
    directory: Arc<MemoryDirectory>,
    officer: OfficerSecret,
    signing: [u8; 32],
    provider: Provider,
    alice: AccountId,
}

impl World {
    async fn on(store: DynStore, mode: CommitMode) -> Self {
        let rng = RandomSource::os();
        let (directory, officer, signing) = super::directory_with_officer_and_signer(&rng).await;
        let deployment = DeploymentId::random(&rng);
        let provider = Provider::new(store.clone(), deployment, directory.clone(), config())
            .await
            .unwrap();
        let alice = provider.create_account("pw").await.unwrap();
        Self {
            store,
            mode,
            deployment,
            directory,
            officer,
            signing: *signing.to_bytes(),
            provider,
            alice,
        }
    }

    async fn binding(&self) -> SlotBinding {
        let record = self
            .directory
            .account_record(&self.alice)
            .await
            .unwrap()
            .unwrap();
        SlotBinding::new(self.deployment, self.alice, *record.secret(), None)
    }

    async fn deliver(&self, body: &[u8]) {
        self.provider
            .deliverer(DeliverySigningKey::from_bytes(self.signing))
            .deliver_bytes(self.alice, body, DeliveryOptions::default())
            .await
            .unwrap();
    }

    /// The account's mail opened with `index_key` and `epochs` by someone who has the
    /// bucket but not the server's directory (a fresh one: no high-water marks).
    async fn mail_with(&self, index_key: &AccountKey, epochs: &[AccountKey]) -> Option<Mailstore> {
        let index = IndexStore::with_mode(
            self.store.clone(),
            self.deployment,
            Arc::new(MemoryDirectory::new()),
            self.mode,
        );
        let blobs =
            BlobStore::new(self.store.clone(), self.deployment).account_epochs(self.alice, epochs);
        Mailstore::open(&index, blobs, index_key).await.ok()
    }
}

/// The text of every message in the inbox of `mail`, with whether its body reads.
async fn inbox(mail: &mut Mailstore) -> Vec<(String, bool)> {
    let id = mail.mailbox_by_name(INBOX).unwrap().id;
    let view = mail.select(id).await.unwrap();
    let mut out = Vec::new();
    for m in view.messages {
        let email = mail.email(id, m.uid).unwrap();
        let body = mail.read(&email).await;
        let text = body
            .as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        out.push((text, body.is_ok()));
    }
    out
}

async fn append(session: &Session, text: &str) -> EmailRecord {
    let mut mail = session.mailstore().await.unwrap();
    let inbox = mail.mailbox_by_name(INBOX).unwrap().id;
    let appended = mail
        .append(inbox, text.as_bytes(), Default::default())
        .await
        .unwrap();
    mail.email(inbox, appended.uid).unwrap()
}

/// What a former key holder kept from a keyring it opened: the root key (as an export
/// file), the epoch keys and the index key (as a device keeps them in memory).
struct Former {
    export: String,
    epochs: Vec<AccountKey>,
    index: AccountKey,
}

impl Former {
    async fn copy(keyring: &UnlockedKeyring) -> Self {
        Self {
            export: keyring.export("former passphrase").await.unwrap(),
            epochs: keyring.epoch_keys(),
            index: keyring.index_key().unwrap(),
        }
    }

    /// Asserts that this holder reads `before` (the past) and none of `after`, neither
    /// through the index nor the bodies nor the current keyring.
    async fn check(&self, w: &World, before: &EmailRecord, after: &[EmailRecord], ctx: &str) {
        let blobs = BlobStore::new(w.store.clone(), w.deployment).account_epochs(w.alice, &self.epochs);
        for email in after {
            assert!(
                blobs.read(&email.pin).await.is_err(),
                "{ctx}: a former key holder read a body stored after the rotation"
            );
        }
        // The past, as far as the store keeps it: the body stored before is still under
        // an epoch it knew.
        assert!(
            blobs.read(&before.pin).await.is_ok(),
            "{ctx}: the past is gone (the test shows nothing)"
        );
        if let Some(mut mail) = w.mail_with(&self.index, &self.epochs).await {
            let seen = inbox(&mut mail).await;
            assert!(
                seen.iter().all(|(text, _)| !text.contains("new secret")) && seen.len() <= 1,
                "{ctx}: a former key holder read index data committed after the rotation: {seen:?}"
            );
        }
        let export = KeyExport::parse(&self.export).unwrap();
        assert!(
            w.provider
                .keyrings()
                .import(&export, "former passphrase", w.binding().await)
                .await
                .is_err(),
            "{ctx}: a former key holder's copy of the root key opens the current keyring"
        );
    }
}

/// Which unlocker the former key holder held.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Device,
    RecoveryCode,
    Officer,
}

/// Item 4 on one backend, for one kind of slot: the holder of a slot copies what it can
/// (root key, epoch keys, index key), then its slot is removed (an officer slot after its
/// key was retired). Everything stored afterwards (an appended message, a delivery, the
/// index commits of both) is out of its reach; what it could read before stays readable.
async fn former_holder_reads_nothing_new(store: DynStore, mode: CommitMode, kind: Kind) {
    let ctx = format!("{kind:?} on {mode:?}");
    let w = World::on(store, mode).await;
    let mut session = w.provider.unlock(w.alice, "pw").await.unwrap();
    let before = append(&session, "Subject: before\r\n\r\nold news").await;
    let binding = w.binding().await;
    let keyrings = w.provider.keyrings();
    let (former, removed, device, code) = match kind {
        Kind::Device => {
            let device = session.add_device_key().await.unwrap();
            let keyring = keyrings
                .unlock(w.alice, binding, Credential::DeviceKey(&device))
                .await
                .unwrap();
            let slot = session.slots().last().unwrap().id;
            (Former::copy(&keyring).await, slot, Some(device), None)
        }
        Kind::RecoveryCode => {
            let code = session.add_recovery_code().await.unwrap();
            let keyring = keyrings
                .unlock(w.alice, binding, Credential::RecoveryCode(code.as_str()))
                .await
                .unwrap();
            let slot = session.slots().last().unwrap().id;
            (Former::copy(&keyring).await, slot, None, Some(code))
        }
        Kind::Officer => {
            // The officer key is retired, the account re-sealed to the new one, and the
            // old officer slot removed.
            let keyring = keyrings
                .unlock(w.alice, binding, Credential::Officer(&w.officer))
                .await
                .unwrap();
            let former = Former::copy(&keyring).await;
            let next = OfficerSecret::generate(&RandomSource::os());
            w.directory
                .set_officer_keys(vec![
                    OfficerKeyEntry {
                        key: w.officer.public(),
                        current: false,
                    },
                    OfficerKeyEntry {
                        key: next.public(),
                        current: true,
                    },
                ])
                .await
                .unwrap();
            session.reload_keyring().await.unwrap();
            let slot = super::officer_slot(&session);
            session.add_officer_slot().await.unwrap();
            (former, slot, None, None)
        }
    };
    {
        let mut mail = w.mail_with(&former.index, &former.epochs).await.unwrap();
        assert_eq!(
            inbox(&mut mail).await,
            [("Subject: before\r\n\r\nold news".to_string(), true)],
            "{ctx}: the holder reads the mail while it holds a slot"
        );
    }

    // Revocation.
    session.remove_slot(removed).await.unwrap();
    assert!(
        !session.slots().iter().any(|s| s.id == removed),
        "{ctx}: the slot is gone"
    );
    if let Some(device) = &device {
        assert!(w
            .provider
            .unlock_with(w.alice, Credential::DeviceKey(device))
            .await
            .is_err());
    }
    if let Some(code) = &code {
        assert!(w
            .provider
            .unlock_with(w.alice, Credential::RecoveryCode(code.as_str()))
            .await
            .is_err());
    }

    // New mail: appended, then delivered and imported (two index commits).
    let after = append(&session, "Subject: after\r\n\r\nnew secret").await;
    w.deliver(b"Subject: delivered\r\n\r\nnew secret too").await;
    let mut mail = session.mailstore().await.unwrap();
    let report = session.import_deliveries(&mut mail).await.unwrap();
    assert_eq!(report.imported.len(), 1, "{ctx}: {report:?}");
    let inbox_id = mail.mailbox_by_name(INBOX).unwrap().id;
    let third = mail.select(inbox_id).await.unwrap().messages[2].uid;
    let delivered = mail.email(inbox_id, third).unwrap();
    let user_view = inbox(&mut mail).await;
    assert_eq!(user_view.len(), 3, "{ctx}: {user_view:?}");
    assert!(
        user_view.iter().all(|(_, ok)| *ok),
        "{ctx}: the user reads everything"
    );

    former
        .check(&w, &before, &[after, delivered.clone()], &ctx)
        .await;
    if let Kind::Officer = kind {
        // The retired officer key opens no delivery made after the rotation either,
        // even with the account's directory record.
        let record = w.directory.account_record(&w.alice).await.unwrap().unwrap();
        assert!(
            BlobStore::new(w.store.clone(), w.deployment)
                .open_sealed_as_officer(w.alice, delivered.pin.id, &w.officer, &record)
                .await
                .is_err(),
            "{ctx}: the removed officer opened a delivery made after the rotation"
        );
    }
    // The user still reads everything, in a fresh login too.
    let fresh = w.provider.unlock(w.alice, "pw").await.unwrap();
    let mut mail = fresh.mailstore().await.unwrap();
    assert_eq!(inbox(&mut mail).await, user_view, "{ctx}");
    let _ = SlotKind::Password;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_04_root_rotation_revokes_a_former_key_holder() {
    for (name, store, mode) in backends() {
        let kinds: &[Kind] = if name == "memory" || name == "no-cas" {
            &[Kind::Device, Kind::RecoveryCode, Kind::Officer]
        } else {
            &[Kind::Device]
        };
        for &kind in kinds {
            // A fresh prefix per account is not needed: each world has its own account.
            former_holder_reads_nothing_new(store.clone(), mode, kind).await;
        }
    }
}
