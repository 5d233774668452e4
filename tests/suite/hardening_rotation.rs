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
use mailvault::format::slot::SlotKind;
use mailvault::ids::{AccountId, DeploymentId};
use mailvault::index::IndexStore;
use mailvault::keys::{Credential, KeyExport, OfficerSecret, SlotBinding, UnlockedKeyring};
use mailvault::mail::{EmailRecord, Mailstore, INBOX};
use mailvault::storage::{CommitMode, DynStore, NoCasStore};

fn config() -> ProviderConfig {
    ProviderConfig {
        // Appends do not feed the text index: a dropped mailstore would otherwise flush
        // the buffered texts in a task of its own, whose index write the gates of the
        // race tests could hold in place of the write they wait for.
        mail: mailvault::mail::MailConfig {
            index_appends: false,
            ..Default::default()
        },
        ..mailvault::testkit::cheap_provider_config()
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
    /// A world in memory, with compare-and-swap or without (as Garage).
    async fn in_memory(cas: bool) -> Self {
        if cas {
            World::on(super::memory(), CommitMode::CompareAndSwap).await
        } else {
            World::on(
                Arc::new(NoCasStore::new(super::memory())),
                CommitMode::WriterUnique,
            )
            .await
        }
    }

    /// A provider of this world's account on `store` (a faulty view of its store).
    async fn provider_on(&self, store: mailvault::storage::FaultyStore) -> Provider {
        Provider::new(
            Arc::new(store),
            self.deployment,
            self.directory.clone(),
            config(),
        )
        .await
        .unwrap()
    }

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
        // The holder also reads the trusted directory (its marks are no secret): the
        // strongest position, and without it a store without conditional writes shows
        // it no collection at all (the directory names the accepted manifests).
        let index = IndexStore::with_mode(
            self.store.clone(),
            self.deployment,
            self.directory.clone(),
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
        let blobs =
            BlobStore::new(w.store.clone(), w.deployment).account_epochs(w.alice, &self.epochs);
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

/// A copy of every object of the store (a backup, or a thief's copy of the bucket).
async fn copy_of(store: &DynStore) -> DynStore {
    let copy = super::memory();
    super::mail::copy_objects(store, &copy, "").await;
    copy
}

/// Every message body of the account's inbox, sorted, and the `notes` collection.
async fn state(session: &Session) -> (Vec<String>, Option<Vec<u8>>) {
    let mut mail = session.mailstore().await.unwrap();
    let mut bodies: Vec<String> = inbox(&mut mail).await.into_iter().map(|(t, _)| t).collect();
    bodies.sort();
    let notes = session.collection(b"notes").await.unwrap();
    (bodies, notes.get(b"k").map(<[u8]>::to_vec))
}

/// Item 4, on demand: a password leaks together with a backup of the bucket; the user
/// changes the password (one slot rewritten: the backup's slot still opens the old root)
/// and rotates the root. The rotation is killed at fixed and seeded backend operations
/// in every fault mode, then resumed: after each kill every message and collection
/// reads; the resumed run finishes; afterwards the backup and the leaked password open
/// nothing new, and modseqs carry on above those seen before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_04_rotation_on_demand_killed_and_resumed() {
    use mailvault::storage::{Fault, FaultMode, FaultyStore};
    use rand::{Rng, SeedableRng};

    type Before = (Vec<String>, Option<Vec<u8>>);
    async fn prepared(cas: bool) -> (World, DynStore, Before, u64) {
        let w = World::in_memory(cas).await;
        let mut session = w.provider.unlock(w.alice, "pw").await.unwrap();
        append(&session, "Subject: one\r\n\r\nbefore").await;
        append(&session, "Subject: two\r\n\r\nbefore").await;
        let mut notes = session.collection(b"notes").await.unwrap();
        let mut batch = mailvault::index::Batch::new();
        batch.put(&b"k"[..], &b"kept across the rotation"[..]);
        notes.commit(batch).await.unwrap();
        let backup = copy_of(&w.store).await;
        session.change_password("pw2").await.unwrap();
        let modseq = session.mailstore().await.unwrap().modseq();
        let before = state(&session).await;
        (w, backup, before, modseq)
    }

    // Uninterrupted, counting the backend operations of a rotation.
    let (w, backup, before, modseq) = prepared(true).await;
    let counting = FaultyStore::new(w.store.clone(), None);
    let provider = w.provider_on(counting.clone()).await;
    let started = counting.ops();
    let mut session = provider.unlock(w.alice, "pw2").await.unwrap();
    let mut seen = Vec::new();
    let done = session
        .rotate_root(&[b"notes"], |p| seen.push(p))
        .await
        .unwrap();
    assert_eq!(done, 3, "mail, notes and the text index");
    assert_eq!(
        seen.iter().map(|p| (p.done, p.total)).collect::<Vec<_>>(),
        [(1, 3), (2, 3), (3, 3)],
        "progress after each collection"
    );
    let span = counting.ops() - started;
    check_rotated(&w, &backup, &before, modseq, "uninterrupted").await;

    let seed: u64 = 0x726f_7461_7465;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut points: Vec<u64> = vec![span / 5, span / 2, 4 * span / 5, span - 1];
    points.extend((0..3).map(|_| rng.gen_range(0..span)));
    let (mut kills, mut crashes) = (0, 0);
    let runs = points
        .iter()
        .map(|&at| (true, at))
        .chain(points[..4].iter().map(|&at| (false, at)));
    for (cas, at) in runs {
        for mode in [FaultMode::Crash, FaultMode::ApplyAndFail, FaultMode::Fail] {
            let ctx = format!("seed {seed:#x}: {mode:?} at {at} of {span}, compare-and-swap {cas}");
            let (w, backup, before, modseq) = prepared(cas).await;
            let fault = Fault {
                at: started + at,
                mode,
            };
            let provider = w
                .provider_on(FaultyStore::new(w.store.clone(), Some(fault)))
                .await;
            let run = match provider.unlock(w.alice, "pw2").await {
                Ok(mut killed) => killed.rotate_root(&[b"notes"], |_| {}).await.map(|_| ()),
                Err(e) => Err(e),
            };
            if mode == FaultMode::Crash {
                crashes += 1;
                kills += usize::from(run.is_err());
            }
            // After the kill: everything reads (a session opened now uses whichever
            // index key the keyring says is current for each collection).
            let reader = w.provider.unlock(w.alice, "pw2").await.unwrap();
            assert_eq!(state(&reader).await, before, "{ctx}: after the kill");
            drop(reader);
            // Resumed to the end.
            let mut session = w.provider.unlock(w.alice, "pw2").await.unwrap();
            session.rotate_root(&[b"notes"], |_| {}).await.unwrap();
            check_rotated(&w, &backup, &before, modseq, &ctx).await;
        }
    }
    // The faults must reach the rotation, not only its end: most crashes kill it. (A
    // crash in the clean-up after the last keyring commit does not, nor one past the end
    // of a run without compare-and-swap, which takes fewer requests than the counted
    // run; lost responses and transient failures may be retried through: the re-keying
    // waits and runs again while nothing committed.)
    assert!(
        2 * kills > crashes,
        "the rotation was killed part-way by a crash in only {kills} of {crashes} runs"
    );
}

/// After a rotation: the user reads everything and modseqs go on rising; the backup
/// opened with the leaked password yields keys that read nothing written afterwards.
async fn check_rotated(
    w: &World,
    backup: &DynStore,
    before: &(Vec<String>, Option<Vec<u8>>),
    modseq: u64,
    ctx: &str,
) {
    let session = w.provider.unlock(w.alice, "pw2").await.unwrap();
    assert_eq!(&state(&session).await, before, "{ctx}");
    let after = append(&session, "Subject: three\r\n\r\nnew secret").await;
    let mail = session.mailstore().await.unwrap();
    assert!(mail.modseq() > modseq, "{ctx}: modseqs carry on");
    // The former key holder: the backup's keyring and the leaked password.
    let old = mailvault::keys::KeyringStore::new(
        backup.clone(),
        w.deployment,
        Arc::new(MemoryDirectory::new()),
        CommitMode::CompareAndSwap,
    )
    .unlock(w.alice, w.binding().await, Credential::Password("pw"))
    .await
    .unwrap();
    let former = Former::copy(&old).await;
    let blobs =
        BlobStore::new(w.store.clone(), w.deployment).account_epochs(w.alice, &former.epochs);
    assert!(
        blobs.read(&after.pin).await.is_err(),
        "{ctx}: the backup's keys read a body written after the rotation"
    );
    if let Some(mut mail) = w.mail_with(&former.index, &former.epochs).await {
        assert!(
            inbox(&mut mail).await.is_empty(),
            "{ctx}: the backup's index key opens the live index"
        );
    }
    let export = KeyExport::parse(&former.export).unwrap();
    assert!(
        w.provider
            .keyrings()
            .import(&export, "former passphrase", w.binding().await)
            .await
            .is_err(),
        "{ctx}: the backup's root opens the current keyring"
    );
}

/// Item 4 against a concurrent keyring writer: a rotation (on demand, and by removing a
/// slot) and a slot addition made from the same keyring generation by two sessions (two
/// servers). Each either holds or fails with `Conflict`, nothing acknowledged is lost,
/// and the session that lost follows the rotation on reload (through its own slot) and
/// succeeds on retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_04_rotation_against_a_concurrent_keyring_writer() {
    use mailvault::Error;
    for (name, store, mode) in backends() {
        let w = World::on(store, mode).await;
        let mut rotator = w.provider.unlock(w.alice, "pw").await.unwrap();
        let device = rotator.add_device_key().await.unwrap();
        let device_slot = rotator.slots().last().unwrap().id;
        append(&rotator, "Subject: before\r\n\r\nold news").await;
        let mut writer = w
            .provider
            .unlock_with(w.alice, Credential::DeviceKey(&device))
            .await
            .unwrap();
        let old = Former::copy_from_session(&w, &device).await;

        // Both from the same generation, concurrently.
        let (rotated, added) =
            tokio::join!(rotator.rotate_root(&[], |_| {}), writer.add_recovery_code());
        rotated.unwrap_or_else(|e| panic!("{name}: the on-demand rotation retries: {e}"));
        let code = match added {
            Ok(code) => code,
            Err(Error::Conflict { .. }) => {
                writer.reload_keyring().await.unwrap();
                writer.add_recovery_code().await.unwrap()
            }
            Err(e) => panic!("{name}: unexpected {e}"),
        };
        // Both hold: the code opens the rotated account, and the old root does not.
        let by_code = w
            .provider
            .unlock_with(w.alice, Credential::RecoveryCode(code.as_str()))
            .await
            .unwrap_or_else(|e| panic!("{name}: the acknowledged recovery code was lost: {e}"));
        let export = KeyExport::parse(&old.export).unwrap();
        assert!(
            w.provider
                .keyrings()
                .import(&export, "former passphrase", w.binding().await)
                .await
                .is_err(),
            "{name}: the rotation was reverted by the concurrent writer"
        );
        drop(by_code);

        // A removal (which rotates) against a password change from the same generation.
        let mut remover = w.provider.unlock(w.alice, "pw").await.unwrap();
        let mut changer = w
            .provider
            .unlock_with(w.alice, Credential::RecoveryCode(code.as_str()))
            .await
            .unwrap();
        let (removed, changed) = tokio::join!(
            remover.remove_slot(device_slot),
            changer.change_password("pw3")
        );
        match (&removed, &changed) {
            (Ok(()), Ok(())) => {}
            (Ok(()), Err(Error::Conflict { .. })) => {
                changer.reload_keyring().await.unwrap();
                changer.change_password("pw3").await.unwrap();
            }
            (Err(Error::Conflict { .. }), Ok(())) => {
                remover = w.provider.unlock(w.alice, "pw3").await.unwrap();
                remover.remove_slot(device_slot).await.unwrap();
            }
            _ => panic!("{name}: removal {removed:?}, password {changed:?}"),
        }
        assert!(
            w.provider
                .unlock_with(w.alice, Credential::DeviceKey(&device))
                .await
                .is_err(),
            "{name}: the removed device slot came back"
        );
        let session = w.provider.unlock(w.alice, "pw3").await.unwrap_or_else(|e| {
            panic!("{name}: the acknowledged password change was reverted: {e}")
        });
        assert!(w.provider.unlock(w.alice, "pw").await.is_err());
        // The revoked device's session can no longer follow the keyring.
        let reloaded = writer.reload_keyring().await;
        assert!(
            matches!(reloaded, Err(Error::WrongCredential)),
            "{name}: the revoked device's session followed the rotation: {reloaded:?}"
        );
        let after = append(&session, "Subject: after\r\n\r\nnew secret").await;
        let before = {
            let mut mail = session.mailstore().await.unwrap();
            let id = mail.mailbox_by_name(INBOX).unwrap().id;
            let first = mail.select(id).await.unwrap().messages[0].uid;
            mail.email(id, first).unwrap()
        };
        old.check(&w, &before, &[after], name).await;
    }
}

impl Former {
    /// What the holder of `device` copies from the keyring it opens.
    async fn copy_from_session(w: &World, device: &mailvault::keys::DeviceKey) -> Self {
        let keyring = w
            .provider
            .keyrings()
            .unlock(w.alice, w.binding().await, Credential::DeviceKey(device))
            .await
            .unwrap();
        Self::copy(&keyring).await
    }
}

/// When the stale session's append runs against the rotation.
#[derive(Debug, Clone, Copy)]
enum Race {
    /// The append starts while the rotation is held at its first deletion of the old
    /// collection (after its last look at it).
    AfterTheLastLook,
    /// The append read the old collection before the rotation closed it, and its
    /// manifest lands while the rotation is held at that deletion.
    ManifestInFlight,
    /// The append read the old collection before the rotation closed it, and its
    /// manifest lands once the rotation has finished (the old collection deleted).
    StalledAcrossTheRotation,
}

/// Item 4, the window of §10.5's former "Limits": a session opened before a rotation
/// (a second server of the account: an LMTP importer, another IMAP instance) still holds
/// the previous keys and appends to the mail collection while the rotation moves it. The
/// rotation is held (a `GateStore` on its store) at its first deletion of the old
/// collection, after every look it takes at it; the stale append runs then, or its
/// manifest lands then. Every append acknowledged must be in the rotated collection (read
/// with the new keys); one that is not must have failed with `Error::Moved`, after which
/// the stale session reloads its keyring (following the rotation) and appends again.
async fn stale_session_against_a_rotation(store: DynStore, mode: CommitMode, race: Race) {
    use mailvault::storage::{GateStore, Hold};

    let ctx = format!("{race:?} on {mode:?}");
    let w = World::on(store.clone(), mode).await;
    let on = |gated: &GateStore| {
        let store: DynStore = Arc::new(gated.clone());
        Provider::new(store, w.deployment, w.directory.clone(), config())
    };
    let rotator_store = GateStore::new(store.clone());
    let stale_store = GateStore::new(store.clone());
    let rotator_gate = rotator_store.gate();
    let stale_gate = stale_store.gate();
    let rotator_provider = on(&rotator_store).await.unwrap();
    let stale_provider = on(&stale_store).await.unwrap();

    let mut rotator = rotator_provider.unlock(w.alice, "pw").await.unwrap();
    append(&rotator, "Subject: before\r\n\r\nbefore the rotation").await;
    let mut stale = stale_provider.unlock(w.alice, "pw").await.unwrap();
    let mut stale_mail = stale.mailstore().await.unwrap();
    let inbox_id = stale_mail.mailbox_by_name(INBOX).unwrap().id;

    // The rotation stops before its first deletion of an old index manifest.
    rotator_gate.arm(Hold::Delete, "/m/");
    let text = "Subject: stale\r\n\r\nwritten with the previous keys";
    let outcome = match race {
        Race::AfterTheLastLook => {
            let rotation = tokio::spawn(async move {
                let result = rotator.rotate_root(&[], |_| {}).await.map(|_| ());
                (rotator, result)
            });
            rotator_gate.reached().await;
            let outcome = stale_mail
                .append(inbox_id, text.as_bytes(), Default::default())
                .await;
            rotator_gate.open();
            let (r, result) = rotation.await.unwrap();
            result.unwrap();
            rotator = r;
            outcome
        }
        Race::ManifestInFlight => {
            stale_gate.arm(Hold::Put, "/m/");
            let append = tokio::spawn(async move {
                let outcome = stale_mail
                    .append(inbox_id, text.as_bytes(), Default::default())
                    .await;
                (stale_mail, outcome)
            });
            stale_gate.reached().await;
            let rotation = tokio::spawn(async move {
                let result = rotator.rotate_root(&[], |_| {}).await.map(|_| ());
                (rotator, result)
            });
            rotator_gate.reached().await;
            stale_gate.open();
            let (m, outcome) = append.await.unwrap();
            stale_mail = m;
            rotator_gate.open();
            let (r, result) = rotation.await.unwrap();
            result.unwrap();
            rotator = r;
            outcome
        }
        Race::StalledAcrossTheRotation => {
            stale_gate.arm(Hold::Put, "/m/");
            let append = tokio::spawn(async move {
                let outcome = stale_mail
                    .append(inbox_id, text.as_bytes(), Default::default())
                    .await;
                (stale_mail, outcome)
            });
            stale_gate.reached().await;
            rotator_gate.arm(Hold::Delete, "never matched");
            rotator.rotate_root(&[], |_| {}).await.unwrap();
            stale_gate.open();
            let (m, outcome) = append.await.unwrap();
            stale_mail = m;
            outcome
        }
    };
    drop(stale_mail);
    let ok = outcome.is_ok();

    let texts = |mail: Vec<(String, bool)>| mail.into_iter().map(|(t, _)| t).collect::<Vec<_>>();
    let mut mail = rotator.mailstore().await.unwrap();
    let after = texts(inbox(&mut mail).await);
    let carried = after.iter().any(|t| t == text);
    assert!(
        !ok || carried,
        "{ctx}: an acknowledged append is lost by the rotation: {after:?}"
    );
    if let Err(e) = &outcome {
        assert!(
            matches!(e, mailvault::Error::Moved),
            "{ctx}: the append not acknowledged failed with {e:?}, not Error::Moved"
        );
        // The stale session follows the rotation and writes to the moved collection.
        stale.reload_keyring().await.unwrap();
        let mut mail = stale.mailstore().await.unwrap();
        mail.append(
            inbox_id,
            b"Subject: retried\r\n\r\nafter reloading",
            Default::default(),
        )
        .await
        .unwrap();
    }
    let fresh = w.provider.unlock(w.alice, "pw").await.unwrap();
    let mut mail = fresh.mailstore().await.unwrap();
    let now = texts(inbox(&mut mail).await);
    assert!(
        now.iter().any(|t| t.contains("before the rotation")),
        "{ctx}: {now:?}"
    );
    assert_eq!(
        now.iter().any(|t| t.contains("after reloading")),
        !ok,
        "{ctx}: the retry after reloading is in the rotated collection: {now:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_04_a_stale_session_never_loses_an_acknowledged_write_to_a_rotation() {
    for (_, store, mode) in backends() {
        for race in [
            Race::AfterTheLastLook,
            Race::ManifestInFlight,
            Race::StalledAcrossTheRotation,
        ] {
            stale_session_against_a_rotation(store.clone(), mode, race).await;
        }
    }
}

/// Item 4 under churn (the four-process keyring churn found it): a slot removal commits
/// its keyring change and then re-keys the index; another session finishes that rotation
/// and begins one of its own before the remover's copy lands. The removal was committed,
/// so `remove_slot` must acknowledge it (it used to fail with `Error::Moved`, and the
/// caller believed the slot still there); the remover's session follows the keyring and
/// goes on working, and the removed key opens nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_04_a_removal_overtaken_by_another_rotation_is_acknowledged() {
    for (name, store, mode) in backends() {
        let w = World::on(store.clone(), mode).await;
        let HeldRemoval {
            gate,
            removal,
            removed_key,
            removed,
            mut other,
        } = held_removal(&w, &store).await;
        other.reload_keyring().await.unwrap();
        assert!(
            !other.slots().iter().any(|s| s.id == removed),
            "{name}: the removal was not committed before its index copy"
        );
        // Finishes the remover's rotation, then rotates again.
        other.rotate_root(&[], |_| {}).await.unwrap();
        other.rotate_root(&[], |_| {}).await.unwrap();
        gate.open();
        let (remover, result) = removal.await.unwrap();
        result.unwrap_or_else(|e| {
            panic!("{name}: the committed removal was reported as failed: {e}")
        });
        let mut session = check_removal(&w, name, &remover, &removed_key).await;
        session.rotate_root(&[], |_| {}).await.unwrap();
    }
}

/// Item 4 under churn, the other order (the CI run of the four-process churn found it): a
/// slot removal commits its keyring change and stops before its first index write;
/// another session re-keys the same collections and stops just before finishing the
/// rotation. The remover's index writes then lose to that session's while the keyring has
/// not moved: the removal is committed, so `remove_slot` must wait for the collections to
/// settle and acknowledge it, not fail with the conflict it lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_04_a_removal_racing_another_rekeying_of_its_rotation_is_acknowledged() {
    use mailvault::storage::{GateStore, Hold};
    for (name, store, mode) in backends() {
        let w = World::on(store.clone(), mode).await;
        let remover_store = GateStore::new(store.clone());
        let other_store = GateStore::new(store.clone());
        let (remover_gate, other_gate) = (remover_store.gate(), other_store.gate());
        let provider = |gated: &GateStore| {
            Provider::new(
                Arc::new(gated.clone()),
                w.deployment,
                w.directory.clone(),
                config(),
            )
        };
        let remover_provider = provider(&remover_store).await.unwrap();
        let other_provider = provider(&other_store).await.unwrap();
        let (mut remover, removed_key, removed, others_key) =
            removal_setup(&w, &remover_provider).await;
        let mut other = other_provider
            .unlock_with(w.alice, Credential::DeviceKey(&others_key))
            .await
            .unwrap();

        // The remover stops at its first index write, after its keyring commit.
        remover_gate.arm(Hold::Put, "/i/");
        let removal = tokio::spawn(async move {
            let result = remover.remove_slot(removed).await;
            (remover, result)
        });
        remover_gate.reached().await;
        other.reload_keyring().await.unwrap();
        // The other session re-keys every collection and stops before its keyring commit
        // that finishes the rotation.
        other_gate.arm(Hold::Put, "/k/");
        let rekeying = tokio::spawn(async move {
            let result = other.rotate_root(&[], |_| {}).await.map(|_| ());
            (other, result)
        });
        other_gate.reached().await;
        remover_gate.open();
        let (remover, result) = removal.await.unwrap();
        other_gate.open();
        let (_other, other_result) = rekeying.await.unwrap();
        result.unwrap_or_else(|e| {
            panic!("{name}: the committed removal was reported as failed: {e}")
        });
        other_result.unwrap_or_else(|e| panic!("{name}: the other rotation failed: {e}"));
        check_removal(&w, name, &remover, &removed_key).await;
    }
}

/// Item 4 under churn (the third CI churn failure): a slot removal commits its keyring
/// change and stops before its first index write; another session finishes that rotation
/// and begins one of its own. The removal is acknowledged as soon as its own rotation is
/// finished, by whichever session: it does not take on the rotations begun after it
/// (under churn, one after another, its run chased them until its rounds ran out and
/// reported the committed removal as failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_04_a_removal_is_acknowledged_once_its_own_rotation_is_finished() {
    for (name, store, mode) in backends() {
        let w = World::on(store.clone(), mode).await;
        let HeldRemoval {
            gate: remover_gate,
            removal,
            removed_key,
            removed: _,
            mut other,
        } = held_removal(&w, &store).await;
        // The other session finishes the removal's rotation and begins another.
        other.reload_keyring().await.unwrap();
        assert!(other.rotating(), "{name}");
        other.finish_rotation().await.unwrap();
        other.begin_rotation().await.unwrap();
        assert!(other.rotating(), "{name}");
        remover_gate.open();
        let (mut remover, result) = removal.await.unwrap();
        result.unwrap_or_else(|e| {
            panic!("{name}: the committed removal was reported as failed: {e}")
        });
        other.reload_keyring().await.unwrap();
        assert!(
            other.rotating(),
            "{name}: the removal took on the rotation begun after its own"
        );
        other.finish_rotation().await.unwrap();
        remover.reload_keyring().await.unwrap();
        check_removal(&w, name, &remover, &removed_key).await;
    }
}

/// A slot removal held at its first index write, after its keyring commit (through a
/// gated store), and another session of the account, unlocked with a device key that
/// stays.
struct HeldRemoval {
    gate: Arc<mailvault::storage::Gate>,
    removal: tokio::task::JoinHandle<(Session, mailvault::Result<()>)>,
    removed_key: mailvault::keys::DeviceKey,
    removed: [u8; 16],
    other: Session,
}

async fn held_removal(w: &World, store: &DynStore) -> HeldRemoval {
    use mailvault::storage::{GateStore, Hold};
    let gated = GateStore::new(store.clone());
    let gate = gated.gate();
    let remover_provider =
        Provider::new(Arc::new(gated), w.deployment, w.directory.clone(), config())
            .await
            .unwrap();
    let (mut remover, removed_key, removed, others_key) = removal_setup(w, &remover_provider).await;
    let other = w
        .provider
        .unlock_with(w.alice, Credential::DeviceKey(&others_key))
        .await
        .unwrap();
    gate.arm(Hold::Put, "/i/");
    let removal = tokio::spawn(async move {
        let result = remover.remove_slot(removed).await;
        (remover, result)
    });
    gate.reached().await;
    HeldRemoval {
        gate,
        removal,
        removed_key,
        removed,
        other,
    }
}

/// The remover's session of a removal race, with a message in the inbox and two device
/// slots: the one it removes (its key and id) and another (its key).
async fn removal_setup(
    w: &World,
    remover_provider: &Provider,
) -> (
    Session,
    mailvault::keys::DeviceKey,
    [u8; 16],
    mailvault::keys::DeviceKey,
) {
    let mut remover = remover_provider.unlock(w.alice, "pw").await.unwrap();
    append(&remover, "Subject: before\r\n\r\nbefore the removal").await;
    let removed_key = remover.add_device_key().await.unwrap();
    let removed = remover.slots().last().unwrap().id;
    let others_key = remover.add_device_key().await.unwrap();
    (remover, removed_key, removed, others_key)
}

/// What an acknowledged removal leaves: the removed key opens nothing, the remover's
/// session goes on writing, and a fresh session reads both messages. Returns that session.
async fn check_removal(
    w: &World,
    name: &str,
    remover: &Session,
    removed_key: &mailvault::keys::DeviceKey,
) -> Session {
    assert!(
        w.provider
            .unlock_with(w.alice, Credential::DeviceKey(removed_key))
            .await
            .is_err(),
        "{name}: the removed key still opens the account"
    );
    append(remover, "Subject: after\r\n\r\nafter the removal").await;
    let session = w.provider.unlock(w.alice, "pw").await.unwrap();
    let mut mail = session.mailstore().await.unwrap();
    let messages = inbox(&mut mail).await;
    assert!(
        messages.len() == 2 && messages.iter().all(|(_, read)| *read),
        "{name}: {messages:?}"
    );
    session
}

/// A world on `store`, alice's session on it through a `GateStore` (the rotator, one
/// message appended "before the rotation"), the gate, and the tag of alice's one
/// collection under the current key (a rotation's first write there is its close; its
/// first delete there comes after its final copy).
async fn gated_rotator(
    store: &DynStore,
    mode: CommitMode,
) -> (World, Session, Arc<mailvault::storage::Gate>, String) {
    use mailvault::storage::GateStore;
    let w = World::on(store.clone(), mode).await;
    let gated = GateStore::new(store.clone());
    let gate = gated.gate();
    let rotator_provider =
        Provider::new(Arc::new(gated), w.deployment, w.directory.clone(), config())
            .await
            .unwrap();
    let rotator = rotator_provider.unlock(w.alice, "pw").await.unwrap();
    append(&rotator, "Subject: one\r\n\r\nbefore the rotation").await;
    let old_tag = only_index_tag(store, w.alice).await;
    (w, rotator, gate, old_tag)
}

/// The tag of `account`'s one index collection (its mail: this file's appends do not
/// feed the text index).
async fn only_index_tag(store: &DynStore, account: AccountId) -> String {
    use futures::TryStreamExt;
    let prefix = object_store::path::Path::from(format!("a/{}/i", account.to_hex()));
    let tags: std::collections::BTreeSet<String> = store
        .list(Some(&prefix))
        .map_ok(|m| m.location.parts().nth(3).unwrap().as_ref().to_string())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(tags.len(), 1, "{tags:?}");
    tags.into_iter().next().unwrap()
}

/// A login in the middle of another session's root rotation (review note of stop 23): the
/// rotation is held after its first copy of the mail collection under the new key (at
/// its first write to the old collection, the close), a session opened before the
/// rotation appends (acknowledged: the old collection is not closed yet), then a fresh
/// `Provider::unlock` opens the mail and appends, and the rotation finishes. The fresh
/// session must see every message when it opens the mail, and its append must survive
/// the rotation. It used to open the first copy as soon as it existed (missing what was
/// written since) and write to it, and the rotation's final copy replaced that write.
async fn a_login_during_a_rotation(name: &str, store: DynStore, mode: CommitMode) {
    use mailvault::storage::Hold;
    let (w, mut rotator, gate, old_tag) = gated_rotator(&store, mode).await;
    let stale = w.provider.unlock(w.alice, "pw").await.unwrap();
    let mut stale_mail = stale.mailstore().await.unwrap();
    // The rotation's first write to the old collection is its close.
    gate.arm(Hold::Put, format!("/i/{old_tag}/"));
    let rotation = async {
        rotator.rotate_root(&[], |_| {}).await.unwrap();
    };
    let meanwhile = async {
        gate.reached().await;
        let inbox_id = stale_mail.mailbox_by_name(INBOX).unwrap().id;
        stale_mail
            .append(
                inbox_id,
                b"Subject: two\r\n\r\nafter the first copy",
                Default::default(),
            )
            .await
            .unwrap();
        let fresh = w.provider.unlock(w.alice, "pw").await.unwrap();
        let mut fresh_mail = fresh.mailstore().await.unwrap();
        let seen = inbox(&mut fresh_mail).await;
        assert_eq!(
            seen.len(),
            2,
            "{name}: the fresh session misses messages during the rotation: {seen:?}"
        );
        let inbox_id = fresh_mail.mailbox_by_name(INBOX).unwrap().id;
        fresh_mail
            .append(
                inbox_id,
                b"Subject: three\r\n\r\nby the fresh login",
                Default::default(),
            )
            .await
            .unwrap();
        gate.open();
    };
    tokio::join!(rotation, meanwhile);
    let mut mail = rotator.mailstore().await.unwrap();
    let after: Vec<String> = inbox(&mut mail).await.into_iter().map(|(t, _)| t).collect();
    for text in [
        "before the rotation",
        "after the first copy",
        "by the fresh login",
    ] {
        assert!(
            after.iter().any(|t| t.contains(text)),
            "{name}: {text:?} lost by the rotation: {after:?}"
        );
    }
    assert_eq!(after.len(), 3, "{name}: {after:?}");
    // A login after the rotation sees the same.
    let later = w.provider.unlock(w.alice, "pw").await.unwrap();
    assert_eq!(
        inbox(&mut later.mailstore().await.unwrap()).await.len(),
        3,
        "{name}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_04_a_login_during_a_rotation_sees_everything_and_loses_nothing() {
    for (name, store, mode) in backends() {
        a_login_during_a_rotation(name, store, mode).await;
    }
}

/// A login that looked where the mail is while a rotation was under way (not copied yet:
/// under the previous key) and that another session's rotation overtook before it opened
/// it: the old collection closed, copied and deleted in between. The login must follow
/// the mail to the new key, not fail (noticed at stop 28: `Session::mailstore` decided
/// on the key, then opened under it, and got the deleted collection's error).
async fn a_login_overtaken_by_the_rotation(name: &str, store: DynStore, mode: CommitMode) {
    use mailvault::storage::{GateStore, Hold};
    let w = World::on(store.clone(), mode).await;
    let mut rotator = w.provider.unlock(w.alice, "pw").await.unwrap();
    append(&rotator, "Subject: one\r\n\r\nbefore the rotation").await;
    let old_tag = only_index_tag(&store, w.alice).await;
    // The rotation begun: a login's keyring holds the new root and the retiring one.
    rotator.begin_rotation().await.unwrap();
    let gated = GateStore::new(store.clone());
    let gate = gated.gate();
    let provider = Provider::new(Arc::new(gated), w.deployment, w.directory.clone(), config())
        .await
        .unwrap();
    let login = provider.unlock(w.alice, "pw").await.unwrap();
    // Nothing is copied yet, so the login opens the old collection: held at its first read.
    gate.arm(Hold::Get, format!("/i/{old_tag}/"));
    let finishing = async {
        gate.reached().await;
        rotator.rotate_root(&[], |_| {}).await.unwrap();
        gate.open();
    };
    let (opened, ()) = tokio::join!(login.mailstore(), finishing);
    let mut mail = opened.unwrap_or_else(|e| panic!("{name}: the overtaken login failed: {e:?}"));
    let seen = inbox(&mut mail).await;
    assert_eq!(seen.len(), 1, "{name}: {seen:?}");
    let inbox_id = mail.mailbox_by_name(INBOX).unwrap().id;
    mail.append(inbox_id, b"Subject: two\r\n\r\nafter", Default::default())
        .await
        .unwrap();
    let later = w.provider.unlock(w.alice, "pw").await.unwrap();
    assert_eq!(
        inbox(&mut later.mailstore().await.unwrap()).await.len(),
        2,
        "{name}"
    );
    assert!(login.collection(b"notes").await.is_ok(), "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_04_a_login_overtaken_by_the_rotation_follows_the_mail() {
    for (name, store, mode) in backends() {
        a_login_overtaken_by_the_rotation(name, store, mode).await;
    }
}

/// A login after a rotation's final copy, before the rotation deleted the old collection
/// (the rotation held at that delete, as if killed there): the fresh session writes to the
/// copy under the new key, then another session finishes the rotation (a resumed run,
/// which copies again). The fresh session's acknowledged append must survive: a resumed
/// run used to make the copy hold the closed source's view again, replacing every write
/// made to the copy since its final copy.
async fn a_write_after_the_final_copy(name: &str, store: DynStore, mode: CommitMode) {
    use mailvault::storage::Hold;
    let (w, mut rotator, gate, old_tag) = gated_rotator(&store, mode).await;
    // The rotation's first delete under the old collection comes after its final copy.
    gate.arm(Hold::Delete, format!("/i/{old_tag}/"));
    let rotation = async { rotator.rotate_root(&[], |_| {}).await };
    let meanwhile = async {
        gate.reached().await;
        let fresh = w.provider.unlock(w.alice, "pw").await.unwrap();
        let mut fresh_mail = fresh.mailstore().await.unwrap();
        assert_eq!(inbox(&mut fresh_mail).await.len(), 1, "{name}");
        let inbox_id = fresh_mail.mailbox_by_name(INBOX).unwrap().id;
        fresh_mail
            .append(
                inbox_id,
                b"Subject: two\r\n\r\nby the fresh login",
                Default::default(),
            )
            .await
            .unwrap();
        let mut finisher = w.provider.unlock(w.alice, "pw").await.unwrap();
        finisher.finish_rotation().await.unwrap();
        gate.open();
    };
    let (rotated, ()) = tokio::join!(rotation, meanwhile);
    rotated.unwrap();
    let later = w.provider.unlock(w.alice, "pw").await.unwrap();
    let after: Vec<String> = inbox(&mut later.mailstore().await.unwrap())
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert!(
        after.iter().any(|t| t.contains("by the fresh login")),
        "{name}: the fresh login's append lost by the resumed rotation: {after:?}"
    );
    assert_eq!(after.len(), 2, "{name}: {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_04_a_write_after_the_final_copy_survives_a_resumed_rotation() {
    for (name, store, mode) in backends() {
        a_write_after_the_final_copy(name, store, mode).await;
    }
}

/// Appends `n` short text messages to the inbox of `mail`, every odd one with the word
/// "quixotically" in its body (the others "plainly"): their emails, and the odd ones.
async fn append_odd_and_even(
    mail: &mut Mailstore,
    n: u32,
) -> (
    Vec<mailvault::ids::EmailId>,
    std::collections::HashSet<mailvault::ids::EmailId>,
) {
    let inbox_id = mail.mailbox_by_name(INBOX).unwrap().id;
    let (mut emails, mut odd) = (Vec::new(), std::collections::HashSet::new());
    for i in 0..n {
        let word = if i % 2 == 1 {
            "quixotically"
        } else {
            "plainly"
        };
        let text = format!(
            "Subject: note {i}\r\nFrom: a@example.org\r\nContent-Type: text/plain\r\n\r\nbody {i} {word}\r\n"
        );
        let appended = mail
            .append(inbox_id, text.as_bytes(), Default::default())
            .await
            .unwrap();
        emails.push(appended.email);
        if i % 2 == 1 {
            odd.insert(appended.email);
        }
    }
    (emails, odd)
}

/// A root rotation carries the account's text index and its email details stored apart
/// over to the new root (review of stop 30): the rotation used to copy the mail
/// collection's records only, so the details segments they name were left behind (every
/// `BODYSTRUCTURE` read the body again, for good), and it never copied the `search`
/// collection at all (the first search after it re-indexed every body, and the old
/// collection, the mail's text sealed under the revoked root, stayed in the bucket).
/// After the rotation: no text is missing from the index, a search finds the same
/// messages, details and searches read no body, and every collection under the old root
/// is down to its tombstone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_04_a_rotation_carries_the_text_index_and_the_details_over() {
    use mailvault::mail::text::oracle::TextKey;
    use mailvault::storage::{CountingStore, RequestKind};
    use std::collections::BTreeMap;
    for (name, store, mode) in backends() {
        let counting = CountingStore::new(store);
        let w = World::on(Arc::new(counting.clone()), mode).await;
        let mut session = w.provider.unlock(w.alice, "pw").await.unwrap();
        let mut mail = session.mailstore().await.unwrap();
        let (emails, odd) = append_odd_and_even(&mut mail, 24).await;
        assert_eq!(
            mail.index_texts(&emails, usize::MAX).await.unwrap(),
            24,
            "{name}"
        );
        mail.compact().await.unwrap();
        for e in &emails {
            assert!(
                mail.email_by_id(*e).unwrap().stored_details.is_some(),
                "{name}"
            );
        }
        let key = [TextKey::Body("quixotic".into())];
        assert_eq!(
            super::search::search_sets(&mail, &emails, &key).await[0],
            odd,
            "{name}"
        );
        drop(mail);

        let tags = |store: CountingStore, account: AccountId| async move {
            use futures::TryStreamExt;
            let prefix = object_store::path::Path::from(format!("a/{}/i", account.to_hex()));
            let mut objects: BTreeMap<String, usize> = BTreeMap::new();
            let listed: Vec<_> = object_store::ObjectStore::list(&store, Some(&prefix))
                .try_collect()
                .await
                .unwrap();
            for meta in listed {
                let tag = meta.location.parts().nth(3).unwrap().as_ref().to_string();
                *objects.entry(tag).or_default() += 1;
            }
            objects
        };
        let before = tags(counting.clone(), w.alice).await;
        session.rotate_root(&[], |_| {}).await.unwrap();
        let after = tags(counting.clone(), w.alice).await;
        for (tag, count) in &after {
            if before.contains_key(tag) {
                assert!(
                    *count <= 2,
                    "{name}: collection {tag} under the old root still holds {count} objects: {after:?}"
                );
            }
        }
        assert_eq!(
            after.keys().filter(|t| !before.contains_key(*t)).count(),
            before.len(),
            "{name}: every collection under the new root: {before:?} {after:?}"
        );

        let session = w.provider.unlock(w.alice, "pw").await.unwrap();
        let mail = session.mailstore().await.unwrap();
        counting.reset();
        assert_eq!(
            super::search::search_sets(&mail, &emails, &key).await[0],
            odd,
            "{name}: the search after the rotation"
        );
        for e in &emails {
            let email = mail
                .with_details(mail.email_by_id(*e).unwrap())
                .await
                .unwrap();
            assert!(email.header_block.is_some(), "{name}");
        }
        assert_eq!(
            mail.index_texts(&emails, usize::MAX).await.unwrap(),
            0,
            "{name}: texts to index again"
        );
        let bodies: Vec<_> = counting
            .requests()
            .into_iter()
            .filter(|r| r.kind == RequestKind::Get && r.path.contains("/b/"))
            .collect();
        assert!(
            bodies.is_empty(),
            "{name}: bodies read after the rotation: {}",
            bodies.len()
        );
    }
}

/// A login while a root rotation has moved the mail but not yet the text index (the
/// rotation held at its first delete: the old mail collection's, after its final copy,
/// before the `search` collection is copied) finds the mail's text indexed: its search
/// reads no body, and, once the rotation moved the text index too, still none (its text
/// index follows the rotation instead of failing with `Moved`). It used to open the text
/// index under the new key, where nothing was copied yet: the search read every body and
/// indexed it again into a collection the rotation's copy then replaced.
async fn a_login_before_the_text_index_is_moved(name: &str, store: DynStore, mode: CommitMode) {
    use mailvault::mail::text::oracle::TextKey;
    use mailvault::storage::{CountingStore, Hold, RequestKind};
    let counting = CountingStore::new(store);
    let (w, mut rotator, gate, _) =
        gated_rotator(&(Arc::new(counting.clone()) as DynStore), mode).await;
    let (emails, odd) = {
        let mut mail = rotator.mailstore().await.unwrap();
        let (emails, odd) = append_odd_and_even(&mut mail, 12).await;
        assert_eq!(
            mail.index_texts(&emails, usize::MAX).await.unwrap(),
            12,
            "{name}"
        );
        (emails, odd)
    };
    let key = [TextKey::Body("quixotic".into())];
    let bodies_read = |counting: &CountingStore| {
        counting
            .requests()
            .into_iter()
            .filter(|r| r.kind == RequestKind::Get && r.path.contains("/b/"))
            .count()
    };
    gate.arm(Hold::Delete, "/i/");
    let rotation = async {
        rotator.rotate_root(&[], |_| {}).await.unwrap();
    };
    let meanwhile = async {
        gate.reached().await;
        let fresh = w.provider.unlock(w.alice, "pw").await.unwrap();
        let mail = fresh.mailstore().await.unwrap();
        counting.reset();
        assert_eq!(
            super::search::search_sets(&mail, &emails, &key).await[0],
            odd,
            "{name}: the search between the two copies"
        );
        assert_eq!(
            bodies_read(&counting),
            0,
            "{name}: bodies read by a search between the mail's copy and the text index's"
        );
        gate.open();
        mail
    };
    let ((), mail) = tokio::join!(rotation, meanwhile);
    counting.reset();
    assert_eq!(
        super::search::search_sets(&mail, &emails, &key).await[0],
        odd,
        "{name}: the same session's search once the text index moved"
    );
    assert_eq!(
        bodies_read(&counting),
        0,
        "{name}: bodies read once the text index moved"
    );
    let later = w.provider.unlock(w.alice, "pw").await.unwrap();
    let later = later.mailstore().await.unwrap();
    assert_eq!(
        super::search::search_sets(&later, &emails, &key).await[0],
        odd,
        "{name}"
    );
    assert_eq!(
        later.index_texts(&emails, usize::MAX).await.unwrap(),
        0,
        "{name}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_04_a_login_before_the_text_index_is_moved_searches_it() {
    for (name, store, mode) in backends() {
        a_login_before_the_text_index_is_moved(name, store, mode).await;
    }
}

/// A root rotation killed at any backend operation leaves text search working for a
/// session opened then, here with a text index that never held anything (no text was
/// indexed: the first copy of such a collection commits nothing). Killed after the text
/// index's close and before its final copy, nothing was under the new key, and the text
/// index, looked for apart from the mail, was taken as still under the closed old key:
/// every search failed with `Moved` until the rotation ran again. The final copy is now
/// made by the look, as for a collection that held something.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_04_a_rotation_killed_anywhere_leaves_text_search_working() {
    use mailvault::ids::EmailId;
    use mailvault::mail::text::oracle::TextKey;
    use mailvault::storage::{Fault, FaultMode, FaultyStore};

    async fn prepared(cas: bool) -> (World, Vec<EmailId>) {
        let w = World::in_memory(cas).await;
        let session = w.provider.unlock(w.alice, "pw").await.unwrap();
        let mut mail = session.mailstore().await.unwrap();
        let inbox = mail.mailbox_by_name(INBOX).unwrap().id;
        let mut emails = Vec::new();
        for i in 0..2 {
            let text = format!("Subject: {i}\r\n\r\nwritten before the rotation\r\n");
            let appended = mail
                .append(inbox, text.as_bytes(), Default::default())
                .await
                .unwrap();
            emails.push(appended.email);
        }
        (w, emails)
    }

    let key = [TextKey::Body("before the rotation".into())];
    for cas in [true, false] {
        // Uninterrupted, counting the backend operations of a rotation.
        let (w, _) = prepared(cas).await;
        let counting = FaultyStore::new(w.store.clone(), None);
        let provider = w.provider_on(counting.clone()).await;
        let started = counting.ops();
        let mut session = provider.unlock(w.alice, "pw").await.unwrap();
        session.rotate_root(&[], |_| {}).await.unwrap();
        let span = counting.ops() - started;
        for at in 0..span {
            let ctx = format!("crash at {at} of {span}, compare-and-swap {cas}");
            let (w, emails) = prepared(cas).await;
            let fault = Fault {
                at: started + at,
                mode: FaultMode::Crash,
            };
            let provider = w
                .provider_on(FaultyStore::new(w.store.clone(), Some(fault)))
                .await;
            if let Ok(mut killed) = provider.unlock(w.alice, "pw").await {
                let _ = killed.rotate_root(&[], |_| {}).await;
            }
            let reader = w.provider.unlock(w.alice, "pw").await.unwrap();
            let mail = reader.mailstore().await.unwrap();
            let found = mail.search_texts(&emails, &key).await;
            assert!(
                matches!(&found, Ok(sets) if sets[0].len() == 2),
                "{ctx}: {found:?}"
            );
        }
    }
}
