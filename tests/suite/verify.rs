//! `Provider::verify_account` (issue 15, "Verify and repair"): an intact account reports
//! nothing, with and without its keys; a damaged copy reports each damage by kind and
//! object: a deleted body, a flipped byte in a segment, stray objects, a rolled-back
//! keyring, a forged delivery; damaged bytes never make it panic.

use futures::TryStreamExt;
use mailvault::crypto::RandomSource;
use mailvault::delivery::DeliveryOptions;
use mailvault::engine::{Damage, ObjectKind, Provider, VerifyOptions, VerifyReport};
use mailvault::ids::{AccountId, BlobId, DeploymentId};
use mailvault::mail::{AppendOptions, INBOX};
use mailvault::storage::{naming, DynStore};
use object_store::{ObjectStore, ObjectStoreExt};
use std::time::Duration;

const PASSWORD: &str = "correct horse battery staple";

async fn paths(store: &DynStore, account: &AccountId, part: &str) -> Vec<object_store::path::Path> {
    let mut found: Vec<_> = store
        .list(Some(&naming::account_prefix(account)))
        .map_ok(|m| m.location)
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.as_ref().contains(part))
        .collect();
    found.sort();
    found
}

fn has(report: &VerifyReport, damage: Damage, kind: ObjectKind, path: &str) -> bool {
    report
        .findings
        .iter()
        .any(|f| f.damage == damage && f.kind == kind && f.path == path)
}

async fn verify(
    provider: &Provider,
    account: AccountId,
    session: Option<&mailvault::engine::Session>,
    options: VerifyOptions,
) -> VerifyReport {
    provider
        .verify_account(account, session, &options, &|_, _| {})
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_nothing_on_an_intact_account_and_each_damage_on_a_damaged_one() {
    let rng = RandomSource::os();
    let (directory, _officer, signing) = super::directory_with_officer_and_signer(&rng).await;
    let store = super::memory();
    let provider = Provider::new(
        store.clone(),
        DeploymentId::random(&rng),
        directory.clone(),
        mailvault::testkit::cheap_provider_config(),
    )
    .await
    .unwrap();
    let alice = provider.create_account(PASSWORD).await.unwrap();
    let deliverer = provider.deliverer(signing);
    for i in 0..4 {
        let body = format!("Subject: m{i}\r\n\r\n{}", "x".repeat(i * 40_000));
        deliverer
            .deliver_bytes(alice, body.as_bytes(), DeliveryOptions::default())
            .await
            .unwrap();
    }
    let mut session = provider.unlock(alice, PASSWORD).await.unwrap();
    let mut mail = session.mailstore().await.unwrap();
    session.import_deliveries(&mut mail).await.unwrap();
    let inbox = mail.mailbox_by_name(INBOX).unwrap().id;
    mail.append(
        inbox,
        b"Subject: appended\r\n\r\nhi",
        AppendOptions::default(),
    )
    .await
    .unwrap();
    // One delivery left pending.
    deliverer
        .deliver_bytes(
            alice,
            b"Subject: pending\r\n\r\nlater",
            DeliveryOptions::default(),
        )
        .await
        .unwrap();

    let intact = verify(&provider, alice, Some(&session), VerifyOptions::default()).await;
    assert!(intact.is_intact(), "{:#?}", intact.findings);
    assert!(intact.with_keys);
    let bodies = intact.checked[&ObjectKind::Blob].objects;
    assert_eq!(bodies, 5 + 1, "5 pinned bodies and one pending delivery's");
    assert!(intact.checked[&ObjectKind::Segment].objects >= 1);
    let deep = verify(
        &provider,
        alice,
        Some(&session),
        VerifyOptions {
            deep: true,
            ..VerifyOptions::default()
        },
    )
    .await;
    assert!(deep.is_intact(), "{:#?}", deep.findings);
    let keyless = verify(&provider, alice, None, VerifyOptions::default()).await;
    assert!(keyless.is_intact(), "{:#?}", keyless.findings);
    assert!(!keyless.with_keys && !keyless.skipped.is_empty());
    assert_eq!(keyless.checked[&ObjectKind::Blob].objects, 6);

    // The keyring before a password change, put back afterwards: a rollback.
    let old_keyrings = paths(&store, &alice, "/k/").await;
    let mut saved = Vec::new();
    for p in &old_keyrings {
        saved.push((
            p.clone(),
            store.get(p).await.unwrap().bytes().await.unwrap(),
        ));
    }
    session.change_password("another password").await.unwrap();
    for p in paths(&store, &alice, "/k/").await {
        store.delete(&p).await.unwrap();
    }
    for (p, bytes) in saved {
        store.put(&p, bytes.into()).await.unwrap();
    }
    // A deleted body (an appended message's: not a pending delivery's).
    let pending_body = {
        let d = paths(&store, &alice, "/d/").await;
        assert_eq!(d.len(), 1);
        let bytes = store.get(&d[0]).await.unwrap().bytes().await.unwrap();
        mailvault::format::delivery::EnvelopeObject::parse(&bytes)
            .unwrap()
            .blob
    };
    let pending_path = naming::blob_path(&alice, &pending_body);
    let victim = paths(&store, &alice, "/b/")
        .await
        .into_iter()
        .find(|p| *p != pending_path)
        .unwrap();
    store.delete(&victim).await.unwrap();
    // Stray objects: one of no name the library writes, one body nothing pins.
    let stray =
        object_store::path::Path::from(format!("{}/notes.txt", naming::account_prefix(&alice)));
    store.put(&stray, b"hello".to_vec().into()).await.unwrap();
    let stray_blob = naming::blob_path(&alice, &BlobId::random(&rng));
    store.put(&stray_blob, vec![7u8; 300].into()).await.unwrap();
    // A forged pending delivery: its envelope's signature breaks.
    let envelope = paths(&store, &alice, "/d/").await.remove(0);
    let len = store.head(&envelope).await.unwrap().size as usize;
    mailvault::testkit::flip_stored_byte(&store, &envelope, len - 3, 1).await;

    let damaged = verify(&provider, alice, Some(&session), VerifyOptions::default()).await;
    let f = &damaged.findings;
    assert!(
        has(&damaged, Damage::Missing, ObjectKind::Blob, victim.as_ref()),
        "{f:#?}"
    );
    assert!(
        has(
            &damaged,
            Damage::RolledBack,
            ObjectKind::Keyring,
            naming::keyring_prefix(&alice).as_ref()
        ),
        "{f:#?}"
    );
    assert!(
        has(
            &damaged,
            Damage::Orphaned,
            ObjectKind::Unknown,
            stray.as_ref()
        ),
        "{f:#?}"
    );
    assert!(
        has(
            &damaged,
            Damage::Tampered,
            ObjectKind::Delivery,
            envelope.as_ref()
        ),
        "{f:#?}"
    );
    // The stray body is young: orphaned only once older than the grace period.
    assert!(!has(
        &damaged,
        Damage::Orphaned,
        ObjectKind::Blob,
        stray_blob.as_ref()
    ));
    let no_grace = verify(
        &provider,
        alice,
        Some(&session),
        VerifyOptions {
            grace: Duration::ZERO,
            ..VerifyOptions::default()
        },
    )
    .await;
    assert!(has(
        &no_grace,
        Damage::Orphaned,
        ObjectKind::Blob,
        stray_blob.as_ref()
    ));
    assert!(!has(
        &no_grace,
        Damage::Orphaned,
        ObjectKind::Blob,
        pending_path.as_ref()
    ));
    assert_eq!(damaged.count(Damage::Missing).objects, 1);

    // Without keys: the rollback, the stray name, the forged delivery are still seen.
    let keyless = verify(&provider, alice, None, VerifyOptions::default()).await;
    let f = &keyless.findings;
    assert!(
        has(
            &keyless,
            Damage::RolledBack,
            ObjectKind::Keyring,
            naming::keyring_prefix(&alice).as_ref()
        ),
        "{f:#?}"
    );
    assert!(
        has(
            &keyless,
            Damage::Orphaned,
            ObjectKind::Unknown,
            stray.as_ref()
        ),
        "{f:#?}"
    );
    assert!(
        has(
            &keyless,
            Damage::Tampered,
            ObjectKind::Delivery,
            envelope.as_ref()
        ),
        "{f:#?}"
    );
    assert!(
        has(
            &keyless,
            Damage::Tampered,
            ObjectKind::Blob,
            stray_blob.as_ref()
        ),
        "{f:#?}"
    );

    // Then a flipped byte in every segment: the live ones are reported (superseded ones
    // are not read); the bodies their records pinned can no longer be checked.
    // A flipped byte in every segment (some are superseded and not read: only the live
    // ones must be reported).
    let segments = paths(&store, &alice, "/s/").await;
    for p in &segments {
        mailvault::testkit::flip_stored_byte(&store, p, 40, 0x20).await;
    }
    let damaged = verify(&provider, alice, Some(&session), VerifyOptions::default()).await;
    let f = &damaged.findings;
    let tampered: Vec<_> = f
        .iter()
        .filter(|x| x.damage == Damage::Tampered && x.kind == ObjectKind::Segment)
        .collect();
    assert!(!tampered.is_empty(), "{f:#?}");
    assert!(tampered
        .iter()
        .all(|x| segments.iter().any(|s| s.as_ref() == x.path)));
}

/// Every stored object of an account truncated or overwritten with junk, one at a time:
/// verify reports, never panics, never errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_survives_junk_in_every_object() {
    let rng = RandomSource::os();
    let (directory, _officer, signing) = super::directory_with_officer_and_signer(&rng).await;
    let store = super::memory();
    let provider = Provider::new(
        store.clone(),
        DeploymentId::random(&rng),
        directory.clone(),
        mailvault::testkit::cheap_provider_config(),
    )
    .await
    .unwrap();
    let alice = provider.create_account(PASSWORD).await.unwrap();
    let deliverer = provider.deliverer(signing);
    deliverer
        .deliver_bytes(alice, b"Subject: a\r\n\r\nA", DeliveryOptions::default())
        .await
        .unwrap();
    let session = provider.unlock(alice, PASSWORD).await.unwrap();
    let mut mail = {
        let mut s = provider.unlock(alice, PASSWORD).await.unwrap();
        let mut mail = s.mailstore().await.unwrap();
        s.import_deliveries(&mut mail).await.unwrap();
        mail
    };
    mail.refresh().await.unwrap();
    deliverer
        .deliver_bytes(alice, b"Subject: b\r\n\r\nB", DeliveryOptions::default())
        .await
        .unwrap();
    let all = paths(&store, &alice, "/").await;
    for path in &all {
        let original = store.get(path).await.unwrap().bytes().await.unwrap();
        for junk in [
            original.slice(..original.len() / 2).to_vec(),
            vec![0xff; 3],
            Vec::new(),
        ] {
            store.put(path, junk.clone().into()).await.unwrap();
            for session in [Some(&session), None] {
                let report = verify(&provider, alice, session, VerifyOptions::default()).await;
                // Every keyring version, body and envelope here is referenced: damage to
                // one is always reported (superseded manifests and segments are not
                // read, and a segment's ciphertext needs the key).
                let referenced = ["/k/", "/b/", "/d/"]
                    .iter()
                    .any(|p| path.as_ref().contains(p));
                if referenced && (session.is_some() || junk.len() < 200) {
                    assert!(!report.is_intact(), "{path} {}: {:#?}", junk.len(), report);
                }
            }
        }
        store.put(path, original.into()).await.unwrap();
    }
}
