//! Key slots through the public API: every credential kind, the KDF gate, hostile costs,
//! and keyring/slot parsers on edge input.

use mailvault::crypto::RandomSource;
use mailvault::format::keyring::{write_bound, KeyringBody, KeyringObject, OfficerRecord};
use mailvault::format::slot::{KdfParams, KeySlot, SLOT_LEN};
use mailvault::ids::{AccountId, DeploymentId, WriterId};
use mailvault::keys::{
    Credential, DeviceKey, KdfGate, KdfLimits, OfficerSecret, RecoveryCode, RootKey, SlotBinding,
    SlotLock, DEFAULT_KDF,
};
use mailvault::Error;

fn binding(rng: &RandomSource) -> SlotBinding {
    SlotBinding::new(
        DeploymentId::random(rng),
        AccountId::random(rng),
        rng.bytes32_for_tests(),
        None,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_credential_opens_its_slot_through_the_gate() {
    let rng = RandomSource::os();
    let b = binding(&rng);
    let gate = KdfGate::new(2);
    let limits = KdfLimits::default();
    let root = RootKey::generate(&rng);
    let code = RecoveryCode::generate(&rng);
    let device = DeviceKey::generate(&rng);
    let officer = OfficerSecret::generate(&rng);
    let password = b
        .seal(SlotLock::Password("hunter2", DEFAULT_KDF), &root, &rng, 1)
        .unwrap();
    let recovery = b
        .seal(SlotLock::RecoveryCode(&code), &root, &rng, 1)
        .unwrap();
    let on_device = b
        .seal(SlotLock::DeviceKey(&device), &root, &rng, 1)
        .unwrap();
    let officer_slot = b
        .seal(SlotLock::Officer(&officer.public()), &root, &rng, 1)
        .unwrap();
    for (slot, credential) in [
        (&password, Credential::Password("hunter2")),
        (&recovery, Credential::RecoveryCode(code.as_str())),
        (&on_device, Credential::DeviceKey(&device)),
        (&officer_slot, Credential::Officer(&officer)),
    ] {
        let opened = b.open(slot, credential, &limits, &gate).await.unwrap();
        assert!(opened.same_as(&root));
    }
    let wrong = b
        .open(&password, Credential::Password("hunter3"), &limits, &gate)
        .await;
    assert!(matches!(wrong, Err(Error::WrongCredential)));
    let mismatched = b
        .open(&password, Credential::DeviceKey(&device), &limits, &gate)
        .await;
    assert!(matches!(mismatched, Err(Error::WrongCredential)));
    // A slot copied into another account's keyring opens nothing there.
    let other = binding(&rng);
    let moved = other
        .open(&on_device, Credential::DeviceKey(&device), &limits, &gate)
        .await;
    assert!(matches!(moved, Err(Error::WrongCredential)));
}

#[tokio::test]
async fn hostile_costs_in_storage_are_refused_before_allocation() {
    let rng = RandomSource::os();
    let b = binding(&rng);
    let root = RootKey::generate(&rng);
    let cheap = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };
    let slot = b
        .seal(SlotLock::Password("pw", cheap), &root, &rng, 1)
        .unwrap();
    let mut bytes = slot.to_bytes();
    bytes[32..36].copy_from_slice(&(4u32 << 20).to_be_bytes()); // 4 GiB
    let hostile = KeySlot::parse(&bytes).unwrap();
    let result = b
        .open(
            &hostile,
            Credential::Password("pw"),
            &KdfLimits::default(),
            &KdfGate::new(1),
        )
        .await;
    assert!(matches!(result, Err(Error::ExcessiveWork { m_kib, .. }) if m_kib == 4 << 20));
}

#[test]
fn slot_and_keyring_parsers_refuse_malformed_input() {
    let rng = RandomSource::os();
    let b = binding(&rng);
    let root = RootKey::generate(&rng);
    let slot = b
        .seal(
            SlotLock::DeviceKey(&DeviceKey::generate(&rng)),
            &root,
            &rng,
            1,
        )
        .unwrap();
    let bytes = slot.to_bytes();
    assert!(matches!(
        KeySlot::parse(&bytes[..SLOT_LEN - 1]),
        Err(Error::Tampered)
    ));
    let mut v2 = bytes;
    v2[4] = 2;
    assert!(matches!(
        KeySlot::parse(&v2),
        Err(Error::UnsupportedVersion { version: 2, .. })
    ));
    let mut kind = bytes;
    kind[5] = 9;
    assert!(matches!(KeySlot::parse(&kind), Err(Error::Tampered)));

    let writer = WriterId::random(&rng);
    let mut keyring = write_bound(7, &writer, &[slot.clone(), slot.clone()]);
    keyring.extend_from_slice(&[0u8; 40]);
    let parsed = KeyringObject::parse(&keyring).unwrap();
    assert_eq!(
        (parsed.generation, parsed.writer, parsed.slots.len()),
        (7, writer, 2)
    );
    assert_eq!(parsed.sealed_body.len(), 40);
    assert!(matches!(
        KeyringObject::parse(&keyring[..100]),
        Err(Error::Tampered)
    ));
    let mut too_many = keyring.clone();
    too_many[5] = 17;
    assert!(matches!(
        KeyringObject::parse(&too_many),
        Err(Error::Tampered)
    ));
    let body = KeyringBody {
        epochs: Vec::new(),
        records: vec![OfficerRecord {
            kind: 1,
            time: 5,
            officer: [3; 32],
        }],
    };
    let encoded = body.to_bytes();
    assert_eq!(KeyringBody::parse(&encoded).unwrap(), body);
    assert!(KeyringBody::parse(&encoded[..encoded.len() - 1]).is_err());
}
