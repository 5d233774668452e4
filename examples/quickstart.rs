//! The main job on an embedded default (a local directory), the transparent flavor: create
//! an account (key model 5), deliver a message while its owner is offline (sealed to her
//! public key, signed by the provider), log in with the password, import the delivery,
//! create a mailbox, list INBOX, read the message whole and one MIME part by range, flag
//! it, move it, ask what changed since a modseq, and show that the stored bytes are
//! unreadable.
//!
//! ```sh
//! cargo run --release --example quickstart            # uses ./mailvault-data
//! cargo run --release --example quickstart -- /some/dir
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use mailvault::crypto::RandomSource;
use mailvault::delivery::{DeliveryOptions, DeliverySigningKey};
use mailvault::directory::{Directory, FileDirectory, OfficerKeyEntry};
use mailvault::engine::{Provider, ProviderConfig};
use mailvault::ids::DeploymentId;
use mailvault::keys::OfficerSecret;
use mailvault::mail::{FlagChange, Flags, Mailstore, PartSection, INBOX};
use mailvault::storage::open_store;

#[path = "common/scan.rs"]
mod scan;

const MESSAGE: &str = "From: Bob <bob@example.org>\r\n\
To: Alice <alice@example.org>\r\n\
Subject: The quarterly numbers\r\n\
Message-ID: <q3@example.org>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Hi Alice,\r\n\
the numbers are in: revenue is up 12 percent.\r\n\
Bob\r\n\
--b1\r\n\
Content-Type: text/csv; name=\"numbers.csv\"\r\n\
Content-Disposition: attachment; filename=\"numbers.csv\"\r\n\
\r\n\
quarter,revenue\r\n\
Q3,112\r\n\
--b1--\r\n";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "mailvault-data".to_string()),
    );
    let rng = RandomSource::os();

    // The server's pieces: a local store (fsynced) and the trusted directory (the
    // server's own database; here small files). The security officer's key pair is made
    // once; the secret half would be kept offline.
    let store = open_store(root.join("store").to_str().expect("UTF-8 path"))?;
    let directory = Arc::new(FileDirectory::open(root.join("directory"))?);
    let officer = OfficerSecret::generate(&rng);
    // The provider's delivery signing key; its public half goes in the directory.
    let signing = DeliverySigningKey::generate(&rng);
    directory.set_delivery_key(signing.verifying_key()).await?;
    directory
        .set_officer_keys(vec![OfficerKeyEntry {
            key: officer.public(),
            current: true,
        }])
        .await?;
    let provider = Provider::new(
        store.clone(),
        DeploymentId::random(&rng),
        directory,
        ProviderConfig::default(),
    )
    .await?;

    // 1. Create an account (key model 5: keys made by the server, password + officer slot).
    let alice = provider
        .create_account("correct horse battery staple")
        .await?;
    println!("created account {alice}");

    // 2. Mail arrives while Alice is offline: the receiving server (LMTP) holds only
    //    public data and the provider's signing key, and seals the message to her key.
    let deliverer = provider.deliverer(signing);
    let receipt = deliverer
        .deliver_bytes(
            alice,
            MESSAGE.as_bytes(),
            DeliveryOptions {
                mailbox: INBOX.into(),
                ..DeliveryOptions::default()
            },
        )
        .await?;
    println!(
        "delivered {} bytes, sealed and signed: delivery {}",
        receipt.size, receipt.delivery
    );

    // 3. Log in (one Argon2id derivation), import what was delivered (signature checked,
    //    body pinned where it is), create a mailbox, list INBOX.
    let mut session = provider
        .unlock(alice, "correct horse battery staple")
        .await?;
    let mut mail = session.mailstore().await?;
    let report = session.import_deliveries(&mut mail).await?;
    println!(
        "logged in; imported {} delivery(ies), {} quarantined",
        report.imported.len(),
        report.quarantined.len()
    );
    let projects = mail.create_mailbox("Projects", None).await?;
    let inbox = mail.mailbox_by_name(INBOX).expect("INBOX").id;
    let view = mail.select(inbox).await?;
    println!(
        "INBOX: {} message(s), {} unseen, UIDNEXT {}, HIGHESTMODSEQ {}",
        view.status.messages, view.status.unseen, view.status.uid_next, view.status.highest_modseq
    );
    let uid = view.messages[0].uid;
    // A delivery's envelope and MIME structure are computed on its first read.
    let email = mail.analyze(inbox, uid).await?;
    println!(
        "  UID {uid}: from {:?}, subject {:?}, {} MIME parts",
        email.envelope.from[0].email,
        email.envelope.subject.as_deref().unwrap_or(""),
        email.parts.len()
    );

    // 4. Read it whole, and one MIME part by range (IMAP BODY[2]: the attachment).
    let whole = mail.read(&email).await?;
    assert_eq!(&whole[..], MESSAGE.as_bytes());
    println!("  read whole: {} bytes, identical", whole.len());
    let part = Mailstore::imap_section(&email, &[2]).expect("part 2");
    let attachment = mail.read_part(&email, part, PartSection::Body).await?;
    let info = &email.parts[part];
    println!(
        "  read BODY[2] ({}/{}, {:?}) by range {}..{}: {:?}",
        info.content_type,
        info.subtype,
        info.filename.as_deref().unwrap_or(""),
        info.body_offset,
        info.end_offset,
        String::from_utf8_lossy(&attachment)
    );

    // 5. Flag it, move it, and ask what changed since the modseq seen at SELECT.
    let since = view.status.highest_modseq;
    mail.store_flags(
        inbox,
        &[uid],
        FlagChange::Add(Flags::from_names([Flags::SEEN, "$Numbers"])?),
        None,
    )
    .await?;
    let moved = mail.move_messages(inbox, &[uid], projects.id).await?;
    let in_inbox = mail.changes_since(inbox, since)?;
    let in_projects = mail.changes_since(projects.id, since)?;
    println!(
        "  flagged \\Seen $Numbers, moved to Projects as UID {}; since modseq {since}: INBOX vanished {:?}, Projects changed {:?}",
        moved.uids[0].1,
        in_inbox.vanished,
        in_projects
            .changed
            .iter()
            .map(|m| (m.uid, m.flags.names().collect::<Vec<_>>()))
            .collect::<Vec<_>>()
    );

    // 6. What the storage operator sees: random names and unreadable bytes.
    let names = scan::assert_unreadable(
        &store,
        &[
            "Alice",
            "alice@example.org",
            "quarterly",
            "revenue",
            "numbers.csv",
            "INBOX",
            "Projects",
            "Seen",
            "$Numbers",
        ],
    )
    .await?;
    println!(
        "scanned {} stored objects under {}: no name, address, subject, mailbox or flag in names or bytes",
        names.len(),
        root.display()
    );
    for name in names.iter().take(3) {
        println!("  {name}");
    }

    // 7. A wrong password is refused, with the same derivation cost as a right one.
    match provider.unlock(alice, "Tr0ub4dor&3").await {
        Err(mailvault::Error::WrongCredential) => println!("a wrong password is refused"),
        other => panic!("a wrong password must be refused, got {other:?}"),
    }
    Ok(())
}
