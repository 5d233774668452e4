//! Issue 10, key layer: what a hostile store can make a login cost (item 14), and the
//! officer's accountability and the key models' policy after enrollment (item 8).

use std::sync::Arc;

use futures::TryStreamExt;
use mailvault::crypto::RandomSource;
use mailvault::directory::{
    Directory, FileDirectory, KeyModel, Mark, MemoryDirectory, OfficerAction, OfficerKeyEntry,
};
use mailvault::engine::{Provider, ProviderConfig};
use mailvault::format::keyring::{write_bound, KeyringObject, RootStanza};
use mailvault::format::slot::{KdfParams, KeySlot, SlotKind};
use mailvault::ids::{AccountId, DeploymentId};
use mailvault::keys::{
    Credential, KdfGate, KdfLimits, OfficerSecret, SlotBinding, SlotLock, SlotPolicy, DEFAULT_KDF,
};
use mailvault::storage::{naming, DynStore};
use mailvault::Error;
use object_store::{ObjectStoreExt, PutPayload};

/// Password stretching cheap enough for tests.
const CHEAP: KdfParams = KdfParams {
    m_kib: 1024,
    t: 1,
    p: 1,
};

/// A provider on a memory store whose logins run through `gate`, with the deployment
/// costs `kdf` and every other setting at its default.
struct World {
    store: DynStore,
    directory: std::sync::Arc<MemoryDirectory>,
    gate: KdfGate,
    provider: Provider,
}

impl World {
    async fn new(kdf: KdfParams) -> Self {
        let rng = RandomSource::os();
        let (directory, _officer) = super::directory_with_officer(&rng).await;
        let store = super::memory();
        let gate = KdfGate::new(2);
        let config = ProviderConfig {
            kdf,
            gate: gate.clone(),
            ..ProviderConfig::default()
        };
        let provider = Provider::new(
            store.clone(),
            DeploymentId::random(&rng),
            directory.clone(),
            config,
        )
        .await
        .unwrap();
        Self {
            store,
            directory,
            gate,
            provider,
        }
    }

    /// Rewrites the slots of `account`'s newest keyring in place, as the storage operator
    /// can: same name, same generation, the sealed body left as it was.
    ///
    /// Since item 3 the directory pins the accepted keyring by digest, so such a rewrite
    /// is `Tampered` before any slot is looked at. To test the login bound by itself, the
    /// mark is then set to the generation alone, as versions before item 3 wrote it (a
    /// reader accepts such a mark by generation and pins the digest at the next unlock).
    async fn rewrite_slots(&self, account: AccountId, edit: impl FnOnce(&mut Vec<KeySlot>)) {
        let prefix = naming::keyring_prefix(&account);
        let newest = self
            .store
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .into_iter()
            .max_by(|a, b| a.as_ref().cmp(b.as_ref()))
            .expect("a keyring");
        let bytes = self
            .store
            .get(&newest)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let parsed = KeyringObject::parse(&bytes).unwrap();
        let mut slots = parsed.slots.clone();
        edit(&mut slots);
        // Each slot kept keeps its root stanza; a planted one gets a stanza of nobody's.
        let stanzas: Vec<RootStanza> = slots
            .iter()
            .map(|slot| {
                parsed.slots.iter().position(|s| s.id == slot.id).map_or(
                    RootStanza {
                        public: [9; 32],
                        ephemeral: [9; 32],
                        wrapped: [9; 48],
                    },
                    |i| parsed.stanzas[i],
                )
            })
            .collect();
        let mut forged = write_bound(parsed.generation, &parsed.writer, &slots, &stanzas);
        forged.extend_from_slice(parsed.sealed_body);
        self.store
            .put(&newest, PutPayload::from(forged))
            .await
            .unwrap();
        let mark = self.directory.mark(&account, "keyring").await.unwrap();
        assert_eq!(mark.generation, parsed.generation);
        assert!(self
            .directory
            .compare_and_set_mark(
                &account,
                "keyring",
                mark,
                Mark::generation_only(parsed.generation)
            )
            .await
            .unwrap());
    }

    /// Derivations the login gate ran while `login` ran, and its result.
    async fn derivations_of<T>(&self, login: impl std::future::Future<Output = T>) -> (u64, T) {
        let before = self.gate.derivations();
        let result = login.await;
        (self.gate.derivations() - before, result)
    }
}

/// A password slot no password opens, at `kdf`: what a store attacker plants.
fn planted_password_slot(rng: &RandomSource, kdf: KdfParams) -> KeySlot {
    let mut id = [0u8; 16];
    rng.fill(&mut id);
    KeySlot {
        kind: SlotKind::Password,
        id,
        created: 1,
        kdf,
        salt: rng.bytes32_for_tests(),
        ephemeral: [0; 32],
        officer: [0; 32],
        nonce: [0; 24],
        wrapped: [0; 48],
        commitment: rng.bytes32_for_tests(),
    }
}

/// Item 14. The bound asserted: one login runs at most one password derivation, and none
/// at costs above the deployment's own (`ProviderConfig::kdf`), whatever the store holds.
/// Before the fix every password slot was tried (14 planted slots: 15 derivations) and
/// costs were accepted up to 256 MiB and 16 passes (13× and 8× the default costs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_14_login_work_is_bounded_under_a_hostile_store() {
    let rng = RandomSource::os();

    // Slots at the deployment's own costs, planted ahead of the real one.
    let w = World::new(CHEAP).await;
    let alice = w.provider.create_account("right password").await.unwrap();
    w.rewrite_slots(alice, |slots| {
        // 14 planted: with the real password and officer slots, the 16 a keyring holds.
        let planted: Vec<KeySlot> = (0..14)
            .map(|_| planted_password_slot(&rng, CHEAP))
            .collect();
        slots.splice(0..0, planted);
    })
    .await;
    for password in ["wrong password", "right password"] {
        let (derivations, result) = w.derivations_of(w.provider.unlock(alice, password)).await;
        assert!(
            derivations <= 1,
            "a login with {password:?} on a keyring with 15 password slots ran {derivations} derivations (bound: 1)"
        );
        assert!(
            result.is_err(),
            "a keyring with planted slots must not open"
        );
    }

    // A slot asking for more than the deployment's own costs, under the default limits.
    let w = World::new(DEFAULT_KDF).await;
    let bob = w.provider.create_account("right password").await.unwrap();
    let above = KdfParams {
        m_kib: DEFAULT_KDF.m_kib * 2,
        t: DEFAULT_KDF.t * 2,
        p: 1,
    };
    w.rewrite_slots(bob, |slots| {
        for slot in slots.iter_mut().filter(|s| s.kind == SlotKind::Password) {
            slot.kdf = above;
        }
    })
    .await;
    let (derivations, result) = w
        .derivations_of(w.provider.unlock(bob, "right password"))
        .await;
    assert!(
        matches!(result, Err(Error::ExcessiveWork { .. })),
        "a slot at {above:?}, above the deployment's {DEFAULT_KDF:?}, must be refused before deriving: {:?}",
        result.map(|_| ())
    );
    assert_eq!(derivations, 0, "refused before any derivation");

    // An honest login still costs one derivation.
    let carol = w.provider.create_account("carol's").await.unwrap();
    let (derivations, session) = w.derivations_of(w.provider.unlock(carol, "carol's")).await;
    session.unwrap();
    assert_eq!(derivations, 1);

    // No writer of the crate makes a second password slot.
    let w = World::new(CHEAP).await;
    let enrollment = w.provider.enroll(KeyModel::DevicePassword).await.unwrap();
    let two = w
        .provider
        .keyrings()
        .create(
            enrollment.account,
            enrollment.binding.clone(),
            vec![
                SlotLock::Password("a", CHEAP),
                SlotLock::Password("b", CHEAP),
            ],
        )
        .await;
    assert!(matches!(two, Err(Error::InvalidArgument(_))));
    let mut keyring = w
        .provider
        .keyrings()
        .create(
            enrollment.account,
            enrollment.binding,
            vec![SlotLock::Password("a", CHEAP)],
        )
        .await
        .unwrap();
    assert!(matches!(
        keyring.add_slot(SlotLock::Password("b", CHEAP)).await,
        Err(Error::InvalidArgument(_))
    ));
}

/// A model 5 provider on a memory store over a [`FileDirectory`] (whose officer log can be
/// damaged, so that appending to it fails), with one current officer key.
struct OfficerWorld {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    directory: Arc<FileDirectory>,
    officer: OfficerSecret,
    deployment: DeploymentId,
    provider: Provider,
}

impl OfficerWorld {
    async fn new() -> Self {
        let rng = RandomSource::os();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let directory = Arc::new(FileDirectory::open(&root).unwrap());
        let officer = OfficerSecret::generate(&rng);
        directory
            .set_officer_keys(vec![OfficerKeyEntry {
                key: officer.public(),
                current: true,
            }])
            .await
            .unwrap();
        let deployment = DeploymentId::random(&rng);
        let config = ProviderConfig {
            kdf: CHEAP,
            gate: KdfGate::new(2),
            ..ProviderConfig::default()
        };
        let provider = Provider::new(super::memory(), deployment, directory.clone(), config)
            .await
            .unwrap();
        Self {
            _dir: dir,
            root,
            directory,
            officer,
            deployment,
            provider,
        }
    }

    async fn binding(&self, account: AccountId) -> SlotBinding {
        let record = self
            .directory
            .account_record(&account)
            .await
            .unwrap()
            .unwrap();
        SlotBinding::new(self.deployment, account, *record.secret(), None)
    }

    async fn log(&self, account: AccountId) -> Vec<OfficerAction> {
        self.directory
            .officer_log(Some(&account))
            .await
            .unwrap()
            .into_iter()
            .map(|(_, e)| {
                assert_eq!(e.officer, self.officer.public());
                e.action
            })
            .collect()
    }
}

/// Item 8, the officer's side. Every public path that opens an account with an officer
/// key appends to the directory's officer log first, and opens nothing when it cannot.
/// Before the fix the officer's actions went only into the keyring (written after the
/// keys were out, and rewritable by whoever holds the root key, the officer included),
/// and `KeyringStore::unlock` with an officer key left no record at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_08_officer_unlocks_are_logged_in_the_directory_first() {
    let w = OfficerWorld::new().await;
    let alice = w.provider.create_account("alice's").await.unwrap();
    w.provider.officer_open(alice, &w.officer).await.unwrap();
    assert_eq!(
        w.log(alice).await,
        [OfficerAction::Open],
        "officer_open must leave an entry in the directory's officer log"
    );
    w.provider
        .officer_reset_password(alice, &w.officer, "reset")
        .await
        .unwrap();
    w.provider
        .officer_audit(alice, &w.officer, &[])
        .await
        .unwrap();
    // The lower public paths record too.
    w.provider
        .keyrings()
        .unlock(
            alice,
            w.binding(alice).await,
            Credential::Officer(&w.officer),
        )
        .await
        .unwrap();
    w.provider
        .unlock_with(alice, Credential::Officer(&w.officer))
        .await
        .unwrap();
    // The slot layer itself does not open an officer slot (it could not log).
    let slots = w.provider.keyrings().stored_slots(&alice).await.unwrap();
    let officer_slot = slots.iter().find(|s| s.kind == SlotKind::Officer).unwrap();
    let direct = w
        .binding(alice)
        .await
        .open(
            officer_slot,
            Credential::Officer(&w.officer),
            &KdfLimits::of(&CHEAP),
            &KdfGate::new(1),
        )
        .await;
    assert!(matches!(direct, Err(Error::InvalidArgument(_))));
    // A stranger's key opens nothing and writes nothing.
    let stranger = OfficerSecret::generate(&RandomSource::os());
    assert!(matches!(
        w.provider.officer_open(alice, &stranger).await,
        Err(Error::WrongCredential)
    ));
    let expected = [
        OfficerAction::Open,
        OfficerAction::ResetPassword,
        OfficerAction::Audit,
        OfficerAction::Open,
        OfficerAction::Open,
    ];
    assert_eq!(w.log(alice).await, expected);
    // The user sees the log, whatever the keyring's own records say.
    let user = w.provider.unlock(alice, "reset").await.unwrap();
    let seen: Vec<OfficerAction> = user
        .officer_log()
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.action)
        .collect();
    assert_eq!(seen, expected);

    // With the log unwritable, no officer path opens anything, and the password stays.
    std::fs::write(w.root.join("officer.log"), "damaged\n").unwrap();
    assert!(w.provider.officer_open(alice, &w.officer).await.is_err());
    assert!(w
        .provider
        .officer_reset_password(alice, &w.officer, "taken over")
        .await
        .is_err());
    assert!(w
        .provider
        .officer_audit(alice, &w.officer, &[])
        .await
        .is_err());
    assert!(w
        .provider
        .keyrings()
        .unlock(
            alice,
            w.binding(alice).await,
            Credential::Officer(&w.officer)
        )
        .await
        .is_err());
    assert!(w
        .provider
        .unlock_with(alice, Credential::Officer(&w.officer))
        .await
        .is_err());
    w.provider.unlock(alice, "reset").await.unwrap();
}

/// Item 8, the policy's side. A keyring published after enrollment through the public
/// keyring API (a companion's, or anyone's with the root key) is checked again against
/// the account's key model whenever the server reads it: a server-side unlock refuses a
/// keyring that breaks the model, and the operator's sweep lists it. Before the fix only
/// `accept_keyring` checked: a model 4 keyring stripped of its officer slot, a model 1
/// keyring given a slot, or a model 5 keyring stripped of its officer slot went on
/// opening on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_08_keyring_policy_is_checked_after_enrollment() {
    let w = OfficerWorld::new().await;
    let p = &w.provider;
    let current = w.officer.public();

    // Model 4: a device drops the officer slot with the public keyring API.
    let enrollment = p.enroll(KeyModel::DevicePasswordWithOfficer).await.unwrap();
    let model_4 = enrollment.account;
    let keyring = p
        .keyrings()
        .create(
            model_4,
            enrollment.binding.clone(),
            vec![SlotLock::Password("pw", CHEAP), SlotLock::Officer(&current)],
        )
        .await
        .unwrap();
    p.accept_keyring(model_4, keyring.epoch_public_keys())
        .await
        .unwrap();
    p.unlock_with(model_4, Credential::Password("pw"))
        .await
        .unwrap();
    let mut device = p
        .keyrings()
        .unlock(model_4, enrollment.binding, Credential::Password("pw"))
        .await
        .unwrap();
    let (officer_slot, _) = device.officer_slot_keys()[0];
    device.remove_slot(officer_slot).await.unwrap();
    let result = p.unlock_with(model_4, Credential::Password("pw")).await;
    assert!(
        matches!(result, Err(Error::PolicyViolation(_))),
        "a model 4 keyring without an officer slot opened on the server: {:?}",
        result.map(|_| ())
    );

    // Model 1: a device adds a slot, which the server must never hold.
    let enrollment = p.enroll(KeyModel::DeviceOnly).await.unwrap();
    let model_1 = enrollment.account;
    let mut keyring = p
        .keyrings()
        .create(model_1, enrollment.binding, Vec::new())
        .await
        .unwrap();
    p.accept_keyring(model_1, keyring.epoch_public_keys())
        .await
        .unwrap();
    let device_key = mailvault::keys::DeviceKey::generate(&RandomSource::os());
    keyring
        .add_slot(SlotLock::DeviceKey(&device_key))
        .await
        .unwrap();
    let result = p
        .unlock_with(model_1, Credential::DeviceKey(&device_key))
        .await;
    assert!(
        matches!(result, Err(Error::PolicyViolation(_))),
        "a model 1 keyring holding a slot opened on the server: {:?}",
        result.map(|_| ())
    );

    // Model 5: whoever holds the password and the account secret drops the officer slot.
    let model_5 = p.create_account("pw").await.unwrap();
    let mut keyring = p
        .keyrings()
        .unlock(
            model_5,
            w.binding(model_5).await,
            Credential::Password("pw"),
        )
        .await
        .unwrap();
    let (officer_slot, _) = keyring.officer_slot_keys()[0];
    keyring.remove_slot(officer_slot).await.unwrap();
    assert!(
        matches!(
            p.unlock(model_5, "pw").await,
            Err(Error::PolicyViolation(_))
        ),
        "a model 5 keyring without an officer slot opened on the server"
    );

    // After an officer key rotation, slots sealed to the retired key still satisfy the
    // model (recovery works with the retired key) and the sweep lists them to re-seal.
    let honest = p.create_account("pw").await.unwrap();
    let successor = OfficerSecret::generate(&RandomSource::os());
    w.directory
        .set_officer_keys(vec![
            OfficerKeyEntry {
                key: successor.public(),
                current: true,
            },
            OfficerKeyEntry {
                key: current,
                current: false,
            },
        ])
        .await
        .unwrap();
    p.unlock(honest, "pw").await.unwrap();

    // The operator's sweep, over the server's own list of accounts.
    let mut seen = Vec::new();
    let sweep = p
        .sweep_keyrings([model_4, model_1, model_5, honest], |a| seen.push(a))
        .await;
    assert_eq!(seen, [model_4, model_1, model_5, honest]);
    assert_eq!(sweep.holding, 0);
    assert_eq!(sweep.retired_officer_only, [honest]);
    let failed: Vec<AccountId> = sweep.failures.iter().map(|(a, _)| *a).collect();
    assert_eq!(failed, [model_4, model_1, model_5]);
    assert!(sweep
        .failures
        .iter()
        .all(|(_, e)| matches!(e, Error::PolicyViolation(_))));
    // Re-sealed to the current key, the account holds.
    let mut session = p.unlock(honest, "pw").await.unwrap();
    session.add_officer_slot().await.unwrap();
    assert_eq!(
        p.check_stored_keyring(honest).await.unwrap(),
        SlotPolicy::Holds
    );
}
