//! The five key models, one after the other (or one: `-- 3`), on a local directory: who
//! makes the keys, what the server keeps, and who can open the mail.
//!
//! ```sh
//! cargo run --release --example key_models          # all five
//! cargo run --release --example key_models -- 4     # model 4 only
//! ```

use std::sync::Arc;

use mailvault::crypto::RandomSource;
use mailvault::directory::{Directory, KeyModel, MemoryDirectory, OfficerKeyEntry};
use mailvault::engine::{Provider, ProviderConfig, Session};
use mailvault::format::BlobKind;
use mailvault::ids::DeploymentId;
use mailvault::keys::{Credential, KeyExport, OfficerSecret, SlotLock};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let only: Option<u8> = std::env::args().nth(1).and_then(|a| a.parse().ok());
    let dir = tempfile::tempdir()?;
    let rng = RandomSource::os();
    let store = mailvault::storage::open_store(dir.path().to_str().expect("UTF-8 path"))?;
    let directory = Arc::new(MemoryDirectory::new());
    let officer = OfficerSecret::generate(&rng);
    directory
        .set_officer_keys(vec![OfficerKeyEntry {
            key: officer.public(),
            current: true,
        }])
        .await?;
    let provider = Provider::new(
        store,
        DeploymentId::random(&rng),
        directory.clone(),
        ProviderConfig::default(),
    )
    .await?;

    for n in 1..=5u8 {
        if only.is_some_and(|o| o != n) {
            continue;
        }
        let model = KeyModel::from_number(n).expect("1 to 5");
        println!("\nmodel {n}: {model:?}");
        let (writer, reader, who): (Session, Session, &str) = if model == KeyModel::ServerManaged {
            let account = provider.create_account("user password").await?;
            println!("  the server generated the keys: password slot + officer slot");
            let writer = provider.unlock(account, "user password").await?;
            (
                writer,
                provider.officer_open(account, &officer).await?,
                "the officer (recovery)",
            )
        } else {
            let enrollment = provider.enroll(model).await?;
            let mut locks = Vec::new();
            if matches!(
                model,
                KeyModel::DevicePassword | KeyModel::DevicePasswordWithOfficer
            ) {
                locks.push(SlotLock::Password(
                    "typed on the device",
                    mailvault::keys::DEFAULT_KDF,
                ));
            }
            let officer_key = officer.public();
            if model == KeyModel::DevicePasswordWithOfficer {
                locks.push(SlotLock::Officer(&officer_key));
            }
            let keyring = provider
                .keyrings()
                .create(enrollment.account, enrollment.binding.clone(), locks)
                .await?;
            provider
                .accept_keyring(enrollment.account, keyring.epoch_public_keys())
                .await?;
            let slots = provider
                .keyrings()
                .stored_slots(&enrollment.account)
                .await?;
            println!(
                "  the device made the keys; the server keeps {} slot(s): {:?}",
                slots.len(),
                slots.iter().map(|s| s.kind).collect::<Vec<_>>()
            );
            let export = keyring.export("export passphrase").await?;
            let writer = provider.companion_session(keyring)?;
            let (reader, who) = match model {
                KeyModel::DeviceOnly | KeyModel::DeviceWithExport => {
                    let imported = provider
                        .keyrings()
                        .import(
                            &KeyExport::parse(&export)?,
                            "export passphrase",
                            enrollment.binding.clone(),
                        )
                        .await?;
                    let who = if model == KeyModel::DeviceOnly {
                        "the same device after a restart, from its local key file"
                    } else {
                        "a second device, from the passphrase-protected export file"
                    };
                    (provider.companion_session(imported)?, who)
                }
                KeyModel::DevicePassword => {
                    let unlocked = provider
                        .keyrings()
                        .unlock(
                            enrollment.account,
                            enrollment.binding.clone(),
                            Credential::Password("typed on the device"),
                        )
                        .await?;
                    (
                        provider.companion_session(unlocked)?,
                        "the device, with the password (never sent to the server)",
                    )
                }
                _ => (
                    provider.officer_open(enrollment.account, &officer).await?,
                    "the officer (recovery)",
                ),
            };
            (writer, reader, who)
        };
        let pin = writer
            .blobs()
            .put(BlobKind::Message, b"Subject: model test")
            .await?;
        let read = reader.blobs().read(&pin).await?;
        assert_eq!(&read[..], b"Subject: model test");
        println!("  mail stored by the user's session is read back by {who}");
        let record = directory
            .account_record(&writer.account())
            .await?
            .expect("record");
        println!(
            "  the directory lists {} epoch public key(s)",
            record.public_keys.len()
        );
    }
    Ok(())
}
