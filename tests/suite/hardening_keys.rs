//! Issue 10, key layer: what a hostile store can make a login cost (item 14), and the
//! officer's accountability and the key models' policy after enrollment (item 8).

use futures::TryStreamExt;
use mailvault::crypto::RandomSource;
use mailvault::directory::{Directory, KeyModel, Mark, MemoryDirectory};
use mailvault::engine::{Provider, ProviderConfig};
use mailvault::format::keyring::{write_bound, KeyringObject};
use mailvault::format::slot::{KdfParams, KeySlot, SlotKind};
use mailvault::ids::{AccountId, DeploymentId};
use mailvault::keys::{KdfGate, SlotLock, DEFAULT_KDF};
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
        let mut forged = write_bound(parsed.generation, &parsed.writer, &slots);
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
