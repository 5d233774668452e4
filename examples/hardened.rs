//! The hardened flavor end to end (key model 1, "device only"): the server never holds a
//! key that opens mail. The account's keys are made on the user's device; the server
//! keeps only the public key (in its directory). A deliverer with public data and the
//! provider's signing key seals incoming mail; a companion on the device
//! (`engine::Companion`: the root key in a key file sealed under the device key, a local
//! directory of its own, a store scoped to the account), holding the keys, imports and
//! reads it.
//!
//! ```sh
//! cargo run --release --example hardened
//! ```

use std::sync::Arc;

use mailvault::crypto::RandomSource;
use mailvault::delivery::{Deliverer, DeliveryOptions, DeliverySigningKey};
use mailvault::directory::{Directory, KeyModel, MemoryDirectory};
use mailvault::engine::{Companion, CompanionConfig, DeviceEnrollment, Provider, ProviderConfig};
use mailvault::ids::DeploymentId;
use mailvault::keys::DeviceKey;
use mailvault::mail::{PartSection, INBOX};
use mailvault::storage::open_store;

#[path = "common/scan.rs"]
mod scan;

const MESSAGES: [&str; 2] = [
    "From: Carol <carol@example.org>\r\nTo: dave@example.org\r\nSubject: Board minutes\r\n\
     Message-ID: <m1@example.org>\r\n\r\nThe board approved the plan.\r\n",
    "From: Erin <erin@example.org>\r\nTo: dave@example.org\r\nSubject: Re: Board minutes\r\n\
     Message-ID: <m2@example.org>\r\nIn-Reply-To: <m1@example.org>\r\n\
     References: <m1@example.org>\r\n\r\nNoted, thanks.\r\n",
];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rng = RandomSource::os();
    let store = open_store("memory://")?;
    let directory = Arc::new(MemoryDirectory::new());
    let deployment = DeploymentId::random(&rng);
    let signing = DeliverySigningKey::generate(&rng);
    directory.set_delivery_key(signing.verifying_key()).await?;
    let provider = Provider::new(
        store.clone(),
        deployment,
        directory.clone(),
        ProviderConfig::default(),
    )
    .await?;

    // 1. Enrollment: the provider enrolls and hands the device what it needs; the device
    //    makes the keys (a key file sealed under its device key, a local directory); the
    //    provider accepts only the public keys.
    let enrollment = provider
        .device_enrollment(KeyModel::DeviceOnly)
        .await?
        .to_armored();
    let local = std::env::temp_dir().join(format!("mailvault-hardened-{}", std::process::id()));
    let device_key = DeviceKey::generate(&rng);
    let public_keys = Companion::create(
        store.clone(),
        &local,
        &DeviceEnrollment::parse(&enrollment)?,
        &device_key,
        CompanionConfig::default(),
    )
    .await?;
    let account = DeviceEnrollment::parse(&enrollment)?.account;
    provider.accept_keyring(account, public_keys).await?;
    let slots = provider.keyrings().stored_slots(&account).await?;
    println!(
        "enrolled account {account} (device only): {} key slot(s) on the server",
        slots.len()
    );

    // 2. The deliverer: the store, the directory's public data and the signing key.
    let deliverer = Deliverer::new(store.clone(), deployment, directory.clone(), signing);
    for message in MESSAGES {
        let receipt = deliverer
            .deliver_bytes(account, message.as_bytes(), DeliveryOptions::default())
            .await?;
        println!(
            "delivered {} bytes (sealed to the account's public key, signed): {}",
            receipt.size, receipt.delivery
        );
    }

    // 3. The companion on the device opens the account with the device key alone
    //    (writing nothing to the bucket to do so), importing what was delivered; its
    //    poller would import later deliveries within a second.
    let companion = Companion::open(
        store.clone(),
        &local,
        &device_key,
        CompanionConfig::default(),
    )
    .await?;
    let mut mail = companion.handle().write().await;
    println!(
        "companion opened: {} missing delivery number(s)",
        mail.missing_deliveries().len()
    );
    let inbox = mail.mailbox_by_name(INBOX).expect("INBOX").id;
    let view = mail.select(inbox).await?;
    for message in &view.messages {
        let email = mail.analyze(inbox, message.uid).await?;
        let body = mail.read_part(&email, 0, PartSection::Body).await?;
        println!(
            "  UID {} thread {} from {:?}: {:?} / {:?}",
            message.uid,
            &email.thread.to_hex()[..8],
            email.envelope.from[0].email,
            email.envelope.subject.as_deref().unwrap_or(""),
            String::from_utf8_lossy(&body).trim_end()
        );
    }
    let threads: std::collections::BTreeSet<_> = view
        .messages
        .iter()
        .map(|m| mail.email(inbox, m.uid).map(|e| e.thread))
        .collect::<Result<_, _>>()?;
    println!(
        "  {} message(s) in {} thread(s)",
        view.messages.len(),
        threads.len()
    );

    // 4. What the server could read: nothing. No slot, no key, and no plaintext.
    let names = scan::assert_unreadable(
        &store,
        &["Board", "carol@example.org", "approved", "Noted", "INBOX"],
    )
    .await?;
    println!(
        "the server holds {} key slot(s) for the account and {} objects with no readable name, address, subject or body",
        provider.keyrings().stored_slots(&account).await?.len(),
        names.len()
    );
    drop(mail);
    drop(companion);
    std::fs::remove_dir_all(&local)?;
    Ok(())
}
