//! Hardening of the inbox side of delivery (issue 10): deliveries that a stale session or
//! a rotated signing key would quarantine for ever (item 6), and deliveries withheld,
//! replayed or reordered by the store (item 13).

use std::sync::Arc;

use futures::TryStreamExt;
use mailvault::crypto::{AccountKey, RandomSource};
use mailvault::delivery::{DeliveryOptions, DeliveryReceipt, DeliverySigningKey, Rejection};
use mailvault::directory::{DeliveryKeyEntry, Directory, MemoryDirectory};
use mailvault::engine::{Provider, ProviderConfig};
use mailvault::ids::{AccountId, DeploymentId};
use mailvault::keys::{Credential, SlotBinding};
use mailvault::storage::{naming, DynStore};
use object_store::ObjectStoreExt;

fn config() -> ProviderConfig {
    mailvault::testkit::cheap_provider_config()
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
        mailvault::testkit::flip_stored_byte(&self.store, &path, at, 0x20).await;
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

impl World {
    /// The bodies of the inbox, in UID order.
    async fn inbox_bodies(&self, session: &mailvault::engine::Session) -> Vec<Vec<u8>> {
        let mut mail = session.mailstore().await.unwrap();
        let inbox = mail.mailbox_by_name(mailvault::mail::INBOX).unwrap().id;
        let mut messages = mail.select(inbox).await.unwrap().messages;
        messages.sort_by_key(|m| m.uid);
        let mut out = Vec::new();
        for message in messages {
            let email = mail.email(inbox, message.uid).unwrap();
            out.push(mail.read(&email).await.unwrap().to_vec());
        }
        out
    }
}

fn numbered(i: usize) -> Vec<u8> {
    format!("Subject: {i}\r\n\r\nmessage {i}").into_bytes()
}

/// Item 13: the store deletes a pending envelope (the message withheld): the import
/// reports the delivery missing, by its number, once; a later import does not report it
/// again as new, and the mailstore keeps listing it as missing. Deleting the newest
/// envelope (nothing after it to show a gap) is reported too.
#[tokio::test]
async fn item_13_a_deleted_pending_envelope_is_reported_missing() {
    let w = World::new().await;
    let mut receipts = Vec::new();
    for i in 1..=3 {
        receipts.push(w.deliver(&numbered(i)).await);
    }
    w.store
        .delete(&naming::delivery_path(&w.alice, &receipts[1].delivery))
        .await
        .unwrap();
    let mut session = w.provider.unlock(w.alice, "pw").await.unwrap();
    let mut mail = session.mailstore().await.unwrap();
    let report = session.import_deliveries(&mut mail).await.unwrap();
    assert_eq!(report.imported.len(), 2);
    assert_ne!(
        report,
        mailvault::mail::ImportReport {
            imported: report.imported.clone(),
            ..Default::default()
        },
        "a withheld delivery left no trace: {report:?}"
    );
    assert_eq!(report.missing, [2]);
    assert_eq!(mail.missing_deliveries(), [2]);
    let report = session.import_deliveries(&mut mail).await.unwrap();
    assert!(report.missing.is_empty(), "reported again: {report:?}");
    assert_eq!(session.mailstore().await.unwrap().missing_deliveries(), [2]);
    // The newest withheld.
    let newest = w.deliver(&numbered(4)).await;
    w.store
        .delete(&naming::delivery_path(&w.alice, &newest.delivery))
        .await
        .unwrap();
    let report = session.import_deliveries(&mut mail).await.unwrap();
    assert!(report.imported.is_empty());
    assert_eq!(report.missing, [4]);
    assert_eq!(mail.missing_deliveries(), [2, 4]);
    assert_eq!(w.inbox_bodies(&session).await, [numbered(1), numbered(3)]);
}

/// Item 13: an envelope withheld for a while (reported missing) and then released is
/// imported late and leaves the missing list; the deliveries after it, imported before
/// it, keep their order.
#[tokio::test]
async fn item_13_a_late_delivery_fills_its_gap() {
    let w = World::new().await;
    let mut receipts = Vec::new();
    for i in 1..=3 {
        receipts.push(w.deliver(&numbered(i)).await);
    }
    let path = naming::delivery_path(&w.alice, &receipts[0].delivery);
    let withheld = w.store.get(&path).await.unwrap().bytes().await.unwrap();
    w.store.delete(&path).await.unwrap();
    let mut session = w.provider.unlock(w.alice, "pw").await.unwrap();
    let mut mail = session.mailstore().await.unwrap();
    let report = session.import_deliveries(&mut mail).await.unwrap();
    assert_eq!(report.missing, [1]);
    w.store.put(&path, withheld.into()).await.unwrap();
    let report = session.import_deliveries(&mut mail).await.unwrap();
    assert_eq!(report.imported.len(), 1);
    assert_eq!(report.imported[0].0, receipts[0].delivery);
    assert!(report.missing.is_empty());
    assert!(
        mail.missing_deliveries().is_empty(),
        "a late delivery did not fill its gap"
    );
    assert!(session
        .mailstore()
        .await
        .unwrap()
        .missing_deliveries()
        .is_empty());
    assert_eq!(
        w.inbox_bodies(&session).await,
        [numbered(2), numbered(3), numbered(1)]
    );
}

/// Item 13: pending deliveries are imported in the order they were delivered (their
/// numbers), whatever order the store lists them in: UIDs follow delivery order.
#[tokio::test]
async fn item_13_deliveries_import_in_counter_order() {
    let w = World::new().await;
    let expected: Vec<Vec<u8>> = (1..=8).map(numbered).collect();
    for body in &expected {
        w.deliver(body).await;
    }
    let mut session = w.provider.unlock(w.alice, "pw").await.unwrap();
    let mut mail = session.mailstore().await.unwrap();
    let report = session.import_deliveries(&mut mail).await.unwrap();
    assert_eq!(report.imported.len(), 8);
    let text = |bodies: Vec<Vec<u8>>| -> Vec<String> {
        bodies
            .into_iter()
            .map(|b| String::from_utf8(b).unwrap())
            .collect()
    };
    assert_eq!(
        text(w.inbox_bodies(&session).await),
        text(expected),
        "deliveries were not imported in delivery order"
    );
    assert!(report.missing.is_empty());
}

/// Item 13: an envelope imported once and put back by the store (a replay) is not
/// imported again: it is counted as already imported and removed.
#[tokio::test]
async fn item_13_a_replayed_envelope_is_not_imported_twice() {
    let w = World::new().await;
    let receipt = w.deliver(&numbered(1)).await;
    let path = naming::delivery_path(&w.alice, &receipt.delivery);
    let envelope = w.store.get(&path).await.unwrap().bytes().await.unwrap();
    let mut session = w.provider.unlock(w.alice, "pw").await.unwrap();
    let mut mail = session.mailstore().await.unwrap();
    assert_eq!(
        session
            .import_deliveries(&mut mail)
            .await
            .unwrap()
            .imported
            .len(),
        1
    );
    w.store.put(&path, envelope.into()).await.unwrap();
    let report = session.import_deliveries(&mut mail).await.unwrap();
    assert!(report.imported.is_empty(), "{report:?}");
    assert_eq!(report.already_imported, 1);
    assert!(w.envelopes().await.is_empty());
    assert_eq!(w.inbox_bodies(&session).await, [numbered(1)]);
}

/// Item 13, concurrency: deliverers raising one account's delivery counter at once never
/// get the same number, and the counter ends at the number of deliveries (8 tasks on a
/// `MemoryDirectory`, 8 on one `FileDirectory`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_13_concurrent_deliverers_never_share_a_number() {
    let file_root = tempfile::tempdir().unwrap();
    let directories: Vec<(&str, Arc<dyn Directory>)> = vec![
        ("memory", Arc::new(MemoryDirectory::new())),
        (
            "file",
            Arc::new(mailvault::directory::FileDirectory::open(file_root.path()).unwrap()),
        ),
    ];
    for (name, directory) in directories {
        let account = AccountId::from_bytes([3; 16]);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let directory = directory.clone();
                tokio::spawn(async move {
                    let mut numbers = Vec::new();
                    for _ in 0..25 {
                        numbers.push(directory.issue_delivery_number(&account).await.unwrap());
                    }
                    numbers
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all.sort();
        assert_eq!(
            all,
            (1..=200).collect::<Vec<u64>>(),
            "{name}: a number issued twice"
        );
        assert_eq!(directory.delivery_counter(&account).await.unwrap(), 200);
    }
}

const CHILD: &str = "MAILVAULT_ITEM_13_CHILD";

/// Item 13, across processes: two processes sharing one `FileDirectory` take delivery
/// numbers of one account at once; no number is issued twice and none is skipped.
#[test]
fn item_13_two_processes_never_share_a_delivery_number() {
    let root = tempfile::tempdir().unwrap();
    const ISSUES: u64 = 150;
    let spawned: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--ignored",
                    "--exact",
                    "hardening_inbox::child_issue_delivery_numbers",
                    "--test-threads=1",
                    "--nocapture",
                ])
                .env(CHILD, format!("{}|{ISSUES}", root.path().display()))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut all = Vec::new();
    for child in spawned {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "a process failed:\n{stdout}");
        all.extend(
            stdout
                .lines()
                // The first may follow the test harness's "test … " on its line.
                .filter_map(|l| l.split_once("issued ").map(|(_, n)| n))
                .map(|n| n.trim().parse::<u64>().unwrap()),
        );
    }
    all.sort();
    assert_eq!(
        all,
        (1..=2 * ISSUES).collect::<Vec<u64>>(),
        "two processes got the same delivery number (or one was skipped)"
    );
}

/// Child of `item_13_two_processes_never_share_a_delivery_number` (run only by it).
#[test]
#[ignore = "run by item_13 in a child process"]
fn child_issue_delivery_numbers() {
    let spec = std::env::var(CHILD).expect("run by item_13 only");
    let (root, issues) = spec.split_once('|').unwrap();
    let issues: u64 = issues.parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let directory = mailvault::directory::FileDirectory::open(root).unwrap();
        let account = AccountId::from_bytes([5; 16]);
        for _ in 0..issues {
            let n = directory.issue_delivery_number(&account).await.unwrap();
            println!("issued {n}");
        }
    });
}
