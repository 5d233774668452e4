//! The main job on an embedded default (a local directory): create an account, put a
//! message in its INBOX, log in, create a mailbox, list INBOX, read the message whole and
//! one MIME part by range, flag it, move it, ask what changed since a modseq, and show
//! that the stored bytes are unreadable. Sealed delivery (mail arriving while the user is
//! offline) joins this flow with the delivery layer.
//!
//! ```sh
//! cargo run --release --example quickstart            # uses ./mailvault-data
//! cargo run --release --example quickstart -- /some/dir
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use futures::TryStreamExt;
use mailvault::crypto::RandomSource;
use mailvault::directory::{Directory, FileDirectory, OfficerKeyEntry};
use mailvault::engine::{Provider, ProviderConfig};
use mailvault::ids::DeploymentId;
use mailvault::keys::OfficerSecret;
use mailvault::mail::{AppendOptions, FlagChange, Flags, Mailstore, PartSection, INBOX};
use mailvault::storage::open_store;
use object_store::ObjectStoreExt;

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

    // 2. Put a message in its INBOX (written by the key holder, as IMAP APPEND does;
    //    mail arriving while the user is offline comes through sealed delivery).
    {
        let session = provider
            .unlock(alice, "correct horse battery staple")
            .await?;
        let mut mail = session.mailstore().await?;
        let inbox = mail.mailbox_by_name(INBOX).expect("INBOX always exists").id;
        let appended = mail
            .append(inbox, MESSAGE.as_bytes(), AppendOptions::default())
            .await?;
        println!(
            "appended {} bytes to INBOX: UID {} (UIDVALIDITY {}), EMAILID {}",
            MESSAGE.len(),
            appended.uid,
            appended.uid_validity,
            appended.email
        );
    }

    // 3. Log in (one Argon2id derivation), create a mailbox, list INBOX.
    let session = provider
        .unlock(alice, "correct horse battery staple")
        .await?;
    let mut mail = session.mailstore().await?;
    let projects = mail.create_mailbox("Projects", None).await?;
    let inbox = mail.mailbox_by_name(INBOX).expect("INBOX").id;
    let view = mail.select(inbox).await?;
    println!(
        "logged in; INBOX: {} message(s), {} unseen, UIDNEXT {}, HIGHESTMODSEQ {}",
        view.status.messages, view.status.unseen, view.status.uid_next, view.status.highest_modseq
    );
    let uid = view.messages[0].uid;
    let email = mail.email(inbox, uid)?;
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
    let objects: Vec<_> = store.list(None).try_collect().await?;
    let mut scanned = 0;
    for meta in &objects {
        let bytes = store.get(&meta.location).await?.bytes().await?;
        for needle in [
            "Alice",
            "alice@example.org",
            "quarterly",
            "revenue",
            "numbers.csv",
            "INBOX",
            "Projects",
            "Seen",
            "$Numbers",
        ] {
            let leaked = bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
                || meta.location.as_ref().contains(needle);
            assert!(
                !leaked,
                "plaintext {needle:?} leaked into {}",
                meta.location
            );
        }
        scanned += 1;
    }
    println!(
        "scanned {scanned} stored objects under {}: no name, address, subject, mailbox or flag in names or bytes",
        root.display()
    );
    for meta in objects.iter().take(3) {
        println!("  {}", meta.location);
    }

    // 7. A wrong password is refused, with the same derivation cost as a right one.
    match provider.unlock(alice, "Tr0ub4dor&3").await {
        Err(mailvault::Error::WrongCredential) => println!("a wrong password is refused"),
        other => panic!("a wrong password must be refused, got {other:?}"),
    }
    Ok(())
}
