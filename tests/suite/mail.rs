//! The mailbox model: a model-based test against a plaintext reference with crashes
//! through every `FaultyStore` mode, on InMemory, LocalFileSystem and `NoCasStore`;
//! concurrent servers appending to one mailbox (in memory, without compare-and-swap, and
//! on moto_server and Garage); a corpus of real messages read back whole and by MIME part;
//! copy/move/expunge by reference; the change feed; requests per operation; a scan of the
//! store for anything readable.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use mailvault::blob::BlobStore;
use mailvault::crypto::{AccountKey, RandomSource};
use mailvault::directory::{Directory, FileDirectory, MemoryDirectory};
use mailvault::ids::{AccountId, DeploymentId, EmailId, MailboxId};
use mailvault::index::IndexStore;
use mailvault::mail::{
    AppendOptions, FlagChange, Flags, Mailstore, PartSection, SpecialUse, INBOX,
};
use mailvault::storage::{
    CommitMode, CountingStore, DynStore, Fault, FaultMode, FaultyStore, NoCasStore, RequestKind,
};
use proptest::prelude::*;

/// One account's mail on one store, with a shared trusted directory.
#[derive(Clone)]
pub struct MailSetup {
    pub store: DynStore,
    mode: CommitMode,
    deployment: DeploymentId,
    pub account: AccountId,
    key: Arc<AccountKey>,
    pub directory: Arc<MemoryDirectory>,
    blob_config: mailvault::blob::BlobConfig,
    mail_config: mailvault::mail::MailConfig,
}

impl MailSetup {
    pub fn new(store: DynStore, mode: CommitMode) -> Self {
        let rng = RandomSource::os();
        Self {
            store,
            mode,
            deployment: DeploymentId::random(&rng),
            account: AccountId::random(&rng),
            key: Arc::new(AccountKey::generate(1, &rng)),
            directory: Arc::new(MemoryDirectory::new()),
            blob_config: mailvault::blob::BlobConfig::default(),
            mail_config: mailvault::mail::MailConfig::default(),
        }
    }

    /// Handles opened with `config`.
    pub fn with_mail_config(mut self, config: mailvault::mail::MailConfig) -> Self {
        self.mail_config = config;
        self
    }

    /// Bodies above 512 stored bytes go up as multipart uploads of 256-byte parts, so
    /// that small test messages exercise torn uploads too.
    pub fn with_small_parts(mut self) -> Self {
        self.blob_config = mailvault::blob::BlobConfig {
            multipart_threshold: 512,
            part_size: 256,
            parts_in_flight: 2,
        };
        self
    }

    pub async fn open_on(&self, store: DynStore) -> mailvault::Result<Mailstore> {
        self.open_with(store, self.directory.clone()).await
    }

    pub async fn open_with(
        &self,
        store: DynStore,
        directory: Arc<dyn Directory>,
    ) -> mailvault::Result<Mailstore> {
        let index = IndexStore::with_mode(store.clone(), self.deployment, directory, self.mode);
        let blobs = BlobStore::new(store, self.deployment)
            .with_config(self.blob_config)
            .account(self.account, &self.key);
        Mailstore::open_with(&index, blobs, &self.key, self.mail_config).await
    }

    pub async fn open(&self) -> Mailstore {
        self.open_on(self.store.clone()).await.unwrap()
    }
}

fn memory() -> DynStore {
    super::memory()
}

fn no_cas() -> DynStore {
    Arc::new(NoCasStore::new(memory()))
}

fn message(seed: u64, subject: &str) -> Vec<u8> {
    let body = mailvault::testkit::pattern(seed, 64 + (seed as usize % 300));
    let body: String = body.iter().map(|b| char::from(b'a' + b % 26)).collect();
    format!(
        "From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: {subject}\r\n\
         Message-ID: <m{seed}@example.org>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

fn inbox(mail: &Mailstore) -> MailboxId {
    mail.mailbox_by_name(INBOX).unwrap().id
}

fn flags(names: &[&str]) -> Flags {
    Flags::from_names(names.iter().copied()).unwrap()
}

#[tokio::test]
async fn mailboxes_messages_flags_copy_move_expunge_and_changes() {
    let setup = MailSetup::new(memory(), CommitMode::CompareAndSwap);
    let mut mail = setup.open().await;
    let inbox = inbox(&mail);
    assert_eq!(
        mail.mailbox_by_name("inbox").unwrap().id,
        inbox,
        "INBOX in any case"
    );

    // Mailboxes: create, special use, subscribe, rename with children, delete.
    let archive = mail
        .create_mailbox("Archive", Some(SpecialUse::Archive))
        .await
        .unwrap();
    let child = mail.create_mailbox("Archive/2026", None).await.unwrap();
    assert!(
        mail.create_mailbox("Archive", None).await.is_err(),
        "name taken"
    );
    assert!(
        mail.create_mailbox("a//b", None).await.is_err(),
        "invalid name"
    );
    assert!(
        mail.create_mailbox("inbox", None).await.is_err(),
        "INBOX taken in any case"
    );
    mail.subscribe(archive.id, true).await.unwrap();
    mail.rename_mailbox(archive.id, "Old").await.unwrap();
    let names: Vec<String> = mail
        .mailboxes()
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["INBOX", "Old", "Old/2026"]);
    assert!(mail.rename_mailbox(inbox, "Elsewhere").await.is_err());
    assert!(mail.delete_mailbox(inbox).await.is_err());
    let old = mail.mailbox_by_name("Old").unwrap();
    assert!(old.subscribed && old.special_use == Some(SpecialUse::Archive));
    assert_eq!(old.id, archive.id, "ids survive renames");

    // Append: UIDs from 1, envelope, thread by References.
    let first = mail
        .append(inbox, &message(1, "Lunch?"), AppendOptions::default())
        .await
        .unwrap();
    assert_eq!((first.uid, first.uid_validity), (1, 1));
    let reply = "From: bob@example.org\r\nSubject: Re: Lunch?\r\nMessage-ID: <r1@example.org>\r\n\
         In-Reply-To: <m1@example.org>\r\nReferences: <m1@example.org>\r\n\r\nYes.\r\n";
    let second = mail
        .append(
            inbox,
            reply.as_bytes(),
            AppendOptions {
                flags: flags(&["\\Seen", "$Important"]),
                internal_date: Some(1_700_000_000),
                ..AppendOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(second.uid, 2);
    assert_eq!(second.thread, first.thread, "a reply joins the thread");
    let email = mail.email(inbox, 2).unwrap();
    assert_eq!(email.envelope.subject.as_deref(), Some("Re: Lunch?"));
    assert_eq!(email.envelope.from[0].email, "bob@example.org");
    assert_eq!(email.envelope.in_reply_to, ["m1@example.org"]);
    assert_eq!(email.internal_date, 1_700_000_000);
    assert_eq!(&mail.read(&email).await.unwrap()[..], reply.as_bytes());

    let status = mail.status(inbox).unwrap();
    assert_eq!((status.messages, status.unseen, status.uid_next), (2, 1, 3));
    assert_eq!(status.highest_modseq, second.modseq);
    assert_eq!(mail.quota().unwrap().messages, 2);

    // Flags with UNCHANGEDSINCE.
    let before = mail.modseq();
    let stored = mail
        .store_flags(
            inbox,
            &[1, 2],
            FlagChange::Add(flags(&["\\Flagged"])),
            Some(first.modseq),
        )
        .await
        .unwrap();
    assert_eq!(stored.updated, [1]);
    assert_eq!(stored.modified, [2], "changed after UNCHANGEDSINCE");
    let unchanged = mail
        .store_flags(inbox, &[1], FlagChange::Add(flags(&["\\Flagged"])), None)
        .await
        .unwrap();
    assert!(unchanged.updated.is_empty(), "no change, no new modseq");
    let changes = mail.changes_since(inbox, before).unwrap();
    assert_eq!(
        changes.changed.iter().map(|m| m.uid).collect::<Vec<_>>(),
        [1]
    );

    // Copy and move by reference: same EMAILID, new UIDs, no body written.
    let copied = mail.copy(inbox, &[1, 2], child.id).await.unwrap();
    assert_eq!(copied.uids, [(1, 1), (2, 2)]);
    let moved = mail.move_messages(inbox, &[2], old.id).await.unwrap();
    assert_eq!(moved.uids, [(2, 1)]);
    let view = mail.select(inbox).await.unwrap();
    assert_eq!(view.messages.iter().map(|m| m.uid).collect::<Vec<_>>(), [1]);
    let in_old = mail.select(old.id).await.unwrap();
    assert_eq!(
        in_old.messages[0].email, second.email,
        "EMAILID kept by a move"
    );
    assert!(
        in_old.messages[0].flags.contains("$Important"),
        "flags kept"
    );
    let changes = mail.changes_since(inbox, before).unwrap();
    assert_eq!(changes.vanished, [2], "the move shows as VANISHED");

    // The account-wide feed (JMAP /changes) names the emails by EMAILID.
    let account = mail.account_changes_since(before).unwrap();
    assert_eq!(
        account.emails_changed.iter().collect::<BTreeSet<_>>(),
        [&first.email, &second.email].into_iter().collect(),
    );
    assert!(account.emails_destroyed.is_empty());
    assert_eq!(account.mailboxes_changed, Vec::<MailboxId>::new());
    let before_expunge = mail.modseq();

    // Expunge: the body goes when no message shows it any more.
    let body_of_first = mail.email(inbox, 1).unwrap().pin;
    mail.store_flags(inbox, &[1], FlagChange::Add(flags(&["\\Deleted"])), None)
        .await
        .unwrap();
    assert_eq!(mail.expunge(inbox, None).await.unwrap(), [1]);
    assert!(
        mail.email_by_id(first.email).is_ok(),
        "a copy still shows it"
    );
    let blobs =
        BlobStore::new(setup.store.clone(), setup.deployment).account(setup.account, &setup.key);
    blobs.read(&body_of_first).await.unwrap();
    assert_eq!(mail.remove(child.id, &[1]).await.unwrap(), [1]);
    assert!(mail.email_by_id(first.email).is_err());
    assert!(matches!(
        blobs.read(&body_of_first).await,
        Err(mailvault::Error::NotFound { .. })
    ));
    let account = mail.account_changes_since(before_expunge).unwrap();
    assert_eq!(account.emails_destroyed, [first.email]);
    assert_eq!(account.modseq, mail.modseq());
    // UIDs are never reused after an expunge.
    let third = mail
        .append(inbox, &message(3, "x"), AppendOptions::default())
        .await
        .unwrap();
    assert_eq!(third.uid, 3);

    // Deleting a mailbox removes its messages; the one shown elsewhere stays.
    let before_delete = mail.modseq();
    mail.delete_mailbox(child.id).await.unwrap();
    let account = mail.account_changes_since(before_delete).unwrap();
    assert_eq!(account.mailboxes_destroyed, [child.id]);
    assert!(mail.mailbox_by_name("Old/2026").is_none());
    assert!(mail.email_by_id(second.email).is_ok());

    // A second handle sees everything after reopening.
    let again = setup.open().await;
    assert_eq!(again.view(old.id).unwrap(), mail.view(old.id).unwrap());
    assert_eq!(again.quota().unwrap(), mail.quota().unwrap());
}

/// The change feed: another server's append shows through `changed_since` (one small
/// request) and `wait_for_change`, without reloading first.
#[tokio::test]
async fn change_feed_wakes_an_idle_connection() {
    let setup = MailSetup::new(memory(), CommitMode::CompareAndSwap);
    let mut idle = setup.open().await;
    let inbox = inbox(&idle);
    let since = idle.modseq();
    assert!(!idle.changed_since(since).await.unwrap());
    let mut other = setup.open().await;
    let appended = other
        .append(inbox, &message(9, "hi"), AppendOptions::default())
        .await
        .unwrap();
    assert!(idle.changed_since(since).await.unwrap());
    assert!(idle
        .wait_for_change(since, Duration::from_millis(10), Duration::from_secs(5))
        .await
        .unwrap());
    let changes = idle.changes_since(inbox, since).unwrap();
    assert_eq!(changes.changed.len(), 1);
    assert_eq!(changes.changed[0].uid, appended.uid);
    let since = idle.modseq();
    assert!(!idle
        .wait_for_change(since, Duration::from_millis(10), Duration::from_millis(50))
        .await
        .unwrap());
}

// ---------------------------------------------------------------- model-based test

type ModelBox = (u32, BTreeMap<u32, (Vec<u8>, BTreeSet<String>)>);
/// Mailbox name → (UIDNEXT, UID → (body, flags)).
type Model = BTreeMap<String, ModelBox>;

const NAMES: [&str; 4] = ["INBOX", "A", "B", "C"];
const FLAGS: [&str; 3] = ["\\Seen", "\\Deleted", "$Label"];

#[derive(Debug, Clone)]
enum Op {
    Append(usize, u64, usize),
    Flag(usize, usize, bool, usize),
    Copy(usize, usize, usize),
    Move(usize, usize, usize),
    Expunge(usize),
    Rename(usize, usize),
    Reopen,
    Crash(Box<Op>, u64, FaultMode),
}

fn plain_op() -> impl Strategy<Value = Op> {
    let mailbox = 0..NAMES.len();
    prop_oneof![
        4 => (mailbox.clone(), any::<u64>(), 0..FLAGS.len() + 1).prop_map(|(m, s, f)| Op::Append(m, s, f)),
        3 => (mailbox.clone(), any::<usize>(), any::<bool>(), 0..FLAGS.len()).prop_map(|(m, i, a, f)| Op::Flag(m, i, a, f)),
        1 => (mailbox.clone(), any::<usize>(), mailbox.clone()).prop_map(|(a, i, b)| Op::Copy(a, i, b)),
        1 => (mailbox.clone(), any::<usize>(), mailbox.clone()).prop_map(|(a, i, b)| Op::Move(a, i, b)),
        1 => mailbox.clone().prop_map(Op::Expunge),
        1 => (1..NAMES.len(), 1..NAMES.len()).prop_map(|(a, b)| Op::Rename(a, b)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let mode = prop_oneof![
        Just(FaultMode::Fail),
        Just(FaultMode::Crash),
        Just(FaultMode::ApplyAndFail),
        Just(FaultMode::TearMultipart),
    ];
    prop_oneof![
        10 => plain_op(),
        1 => Just(Op::Reopen),
        3 => (plain_op(), 0u64..12, mode).prop_map(|(op, at, m)| Op::Crash(Box::new(op), at, m)),
    ]
}

/// The message `pick` selects in `model`'s mailbox `name`.
fn pick_uid(model: &Model, name: &str, pick: usize) -> Option<u32> {
    let (_, messages) = model.get(name)?;
    messages.keys().nth(pick % messages.len().max(1)).copied()
}

/// Applies `op` to the model; returns whether it is valid there (an invalid op must fail
/// on the real store too).
fn apply(model: &mut Model, op: &Op) -> bool {
    match op {
        Op::Append(m, seed, flag) => {
            let Some((next, messages)) = model.get_mut(NAMES[*m]) else {
                return false;
            };
            let flags = FLAGS
                .get(*flag)
                .map(|f| f.to_string())
                .into_iter()
                .collect();
            messages.insert(*next, (message(*seed, &format!("s{seed}")), flags));
            *next += 1;
            true
        }
        Op::Flag(m, pick, add, flag) => {
            let Some(uid) = pick_uid(model, NAMES[*m], *pick) else {
                return model.contains_key(NAMES[*m]);
            };
            let (_, messages) = model.get_mut(NAMES[*m]).expect("present");
            let flags = &mut messages.get_mut(&uid).expect("picked").1;
            if *add {
                flags.insert(FLAGS[*flag].to_string());
            } else {
                flags.remove(FLAGS[*flag]);
            }
            true
        }
        Op::Copy(a, pick, b) | Op::Move(a, pick, b) => {
            if !model.contains_key(NAMES[*a]) || !model.contains_key(NAMES[*b]) {
                return false;
            }
            let Some(uid) = pick_uid(model, NAMES[*a], *pick) else {
                return true;
            };
            let moving = matches!(op, Op::Move(..));
            let entry = if moving {
                model.get_mut(NAMES[*a]).unwrap().1.remove(&uid).unwrap()
            } else {
                model[NAMES[*a]].1[&uid].clone()
            };
            let (next, messages) = model.get_mut(NAMES[*b]).unwrap();
            messages.insert(*next, entry);
            *next += 1;
            true
        }
        Op::Expunge(m) => {
            let Some((_, messages)) = model.get_mut(NAMES[*m]) else {
                return false;
            };
            messages.retain(|_, (_, flags)| !flags.contains("\\Deleted"));
            true
        }
        Op::Rename(a, b) => {
            if a == b || !model.contains_key(NAMES[*a]) || model.contains_key(NAMES[*b]) {
                return false;
            }
            let mailbox = model.remove(NAMES[*a]).unwrap();
            model.insert(NAMES[*b].to_string(), mailbox);
            true
        }
        Op::Reopen | Op::Crash(..) => true,
    }
}

/// Runs `op` on the real store, with the model as it was before (to pick the same UIDs).
async fn run(mail: &mut Mailstore, model: &Model, op: &Op) -> mailvault::Result<()> {
    let id = |name: &str| {
        mail.mailbox_by_name(name)
            .map(|m| m.id)
            .ok_or_else(|| mailvault::Error::InvalidArgument(format!("no {name}")))
    };
    match op {
        Op::Append(m, seed, flag) => {
            let mailbox = id(NAMES[*m])?;
            let options = AppendOptions {
                flags: Flags::from_names(FLAGS.get(*flag).copied())?,
                ..AppendOptions::default()
            };
            mail.append(mailbox, &message(*seed, &format!("s{seed}")), options)
                .await
                .map(|_| ())
        }
        Op::Flag(m, pick, add, flag) => {
            let mailbox = id(NAMES[*m])?;
            let uids: Vec<u32> = pick_uid(model, NAMES[*m], *pick).into_iter().collect();
            let f = Flags::from_names([FLAGS[*flag]])?;
            let change = if *add {
                FlagChange::Add(f)
            } else {
                FlagChange::Remove(f)
            };
            mail.store_flags(mailbox, &uids, change, None)
                .await
                .map(|_| ())
        }
        Op::Copy(a, pick, b) | Op::Move(a, pick, b) => {
            let (from, to) = (id(NAMES[*a])?, id(NAMES[*b])?);
            let uids: Vec<u32> = pick_uid(model, NAMES[*a], *pick).into_iter().collect();
            if matches!(op, Op::Move(..)) {
                mail.move_messages(from, &uids, to).await.map(|_| ())
            } else {
                mail.copy(from, &uids, to).await.map(|_| ())
            }
        }
        Op::Expunge(m) => mail.expunge(id(NAMES[*m])?, None).await.map(|_| ()),
        Op::Rename(a, b) => mail.rename_mailbox(id(NAMES[*a])?, NAMES[*b]).await,
        Op::Reopen | Op::Crash(..) => Ok(()),
    }
}

/// Everything the real store shows, in the model's terms.
async fn snapshot(mail: &mut Mailstore) -> Model {
    let mut out = Model::new();
    for mailbox in mail.mailboxes().unwrap() {
        let view = mail.select(mailbox.id).await.unwrap();
        let mut messages = BTreeMap::new();
        for m in &view.messages {
            let email = mail.email(mailbox.id, m.uid).unwrap();
            let body = mail.read(&email).await.unwrap().to_vec();
            let flags = m.flags.names().map(str::to_string).collect();
            messages.insert(m.uid, (body, flags));
        }
        out.insert(mailbox.name, (view.status.uid_next, messages));
    }
    out
}

async fn run_model(setup: MailSetup, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut mail = setup.open().await;
    mail.create_mailbox("A", None).await.unwrap();
    mail.create_mailbox("B", None).await.unwrap();
    let mut model: Model = ["INBOX", "A", "B"]
        .into_iter()
        .map(|n| (n.to_string(), (1, BTreeMap::new())))
        .collect();
    for op in ops {
        match &op {
            Op::Reopen => {
                mail = setup.open().await;
                prop_assert_eq!(&snapshot(&mut mail).await, &model);
            }
            Op::Crash(inner, at, mode) => {
                let faulty: DynStore = Arc::new(FaultyStore::new(
                    setup.store.clone(),
                    Some(Fault {
                        at: *at,
                        mode: *mode,
                    }),
                ));
                let outcome = match setup.open_on(faulty).await {
                    Ok(mut crashing) => run(&mut crashing, &model, inner).await,
                    Err(e) => Err(e),
                };
                mail = setup.open().await;
                let after = snapshot(&mut mail).await;
                let mut with = model.clone();
                let valid = apply(&mut with, inner);
                if outcome.is_ok() {
                    prop_assert!(valid, "{:?} succeeded but is invalid", inner);
                    prop_assert_eq!(&after, &with, "acknowledged {:?} lost", inner);
                } else {
                    prop_assert!(
                        after == model || after == with,
                        "half-applied {:?} after {:?} at {}",
                        inner,
                        mode,
                        at
                    );
                }
                model = after;
            }
            _ => {
                let outcome = run(&mut mail, &model, &op).await;
                let valid = apply(&mut model, &op);
                prop_assert_eq!(outcome.is_ok(), valid, "{:?}: {:?}", op, outcome);
            }
        }
    }
    let mut mail = setup.open().await;
    prop_assert_eq!(&snapshot(&mut mail).await, &model);
    prop_assert_eq!(mail.uid_validity_changes(), 0);
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn mail_model_in_memory(ops in proptest::collection::vec(op(), 1..30)) {
        let setup = MailSetup::new(memory(), CommitMode::CompareAndSwap).with_small_parts();
        runtime().block_on(run_model(setup, ops))?;
    }

    #[test]
    fn mail_model_local_filesystem(ops in proptest::collection::vec(op(), 1..20)) {
        let dir = tempfile::tempdir().unwrap();
        let store = mailvault::storage::open_store(dir.path().to_str().unwrap()).unwrap();
        let setup = MailSetup::new(store, CommitMode::CompareAndSwap).with_small_parts();
        runtime().block_on(run_model(setup, ops))?;
    }

    #[test]
    fn mail_model_without_compare_and_swap(ops in proptest::collection::vec(op(), 1..30)) {
        let setup = MailSetup::new(no_cas(), CommitMode::WriterUnique).with_small_parts();
        runtime().block_on(run_model(setup, ops))?;
    }
}

// ---------------------------------------------------------------- concurrency

/// What one writer saw: (UIDVALIDITY, UID, EMAILID) of each acknowledged append, in order.
type Acks = Vec<(u32, u32, EmailId)>;

/// `writers` servers append `appends` messages each to one INBOX at once, flagging every
/// fifth of their messages. Every acknowledged append is present exactly once, UIDs are
/// unique and grow within a UIDVALIDITY, readers agree. Returns the number of UIDVALIDITY
/// changes.
pub async fn concurrent_appends(setup: &MailSetup, writers: usize, appends: usize) -> u32 {
    // INBOX exists before the writers start (its creation is not what is measured).
    let inbox = inbox(&setup.open().await);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let setup = setup.clone();
        tasks.push(tokio::spawn(async move {
            let mut mail = setup.open().await;
            let mut acks: Acks = Vec::new();
            let mut flagged = Vec::new();
            for i in 0..appends {
                let seed = (w * 100_000 + i) as u64;
                let a = mail
                    .append(
                        inbox,
                        &message(seed, &format!("w{w} {i}")),
                        AppendOptions::default(),
                    )
                    .await
                    .unwrap();
                acks.push((a.uid_validity, a.uid, a.email));
                if i % 5 == 0 {
                    // Look the UID up now: a conflict may have renumbered the mailbox.
                    let view = mail.view(inbox).unwrap();
                    if let Some(m) = view.messages.iter().find(|m| m.email == a.email) {
                        mail.store_flags(
                            inbox,
                            &[m.uid],
                            FlagChange::Add(flags(&["\\Flagged"])),
                            None,
                        )
                        .await
                        .unwrap();
                        flagged.push(a.email);
                    }
                }
            }
            (acks, flagged, mail.uid_validity_changes())
        }));
    }
    let mut all_acks = Vec::new();
    let mut all_flagged = Vec::new();
    let mut repairs = 0;
    for task in tasks {
        let (acks, flagged, changes) = task.await.unwrap();
        for pair in acks.windows(2) {
            let ((v1, u1, _), (v2, u2, _)) = (pair[0], pair[1]);
            assert!(v2 >= v1, "UIDVALIDITY never goes back");
            if v1 == v2 {
                assert!(u2 > u1, "UIDs grow within a UIDVALIDITY: {u1} then {u2}");
            }
        }
        all_acks.extend(acks);
        all_flagged.extend(flagged);
        repairs += changes;
    }
    let mut a = setup.open().await;
    let mut b = setup.open().await;
    let view = a.select(inbox).await.unwrap();
    assert_eq!(view, b.select(inbox).await.unwrap(), "readers agree");
    let uids: Vec<u32> = view.messages.iter().map(|m| m.uid).collect();
    assert!(uids.windows(2).all(|w| w[0] < w[1]), "UIDs unique");
    let mut present: BTreeMap<EmailId, usize> = BTreeMap::new();
    for m in &view.messages {
        *present.entry(m.email).or_default() += 1;
    }
    assert_eq!(view.messages.len(), writers * appends, "message count");
    for (_, _, email) in &all_acks {
        assert_eq!(
            present.get(email),
            Some(&1),
            "acknowledged append present exactly once"
        );
    }
    for email in &all_flagged {
        let m = view.messages.iter().find(|m| m.email == *email).unwrap();
        assert!(
            m.flags.contains(Flags::FLAGGED),
            "{:?}: acknowledged flag change kept",
            setup.mode
        );
    }
    // A real conflict is two acknowledged appends given one UID under one UIDVALIDITY.
    // The final view has every message under unique UIDs, so each such conflict must have
    // been repaired under a new UIDVALIDITY; without one, UIDVALIDITY never changes.
    let mut given: BTreeMap<(u32, u32), usize> = BTreeMap::new();
    for (validity, uid, _) in &all_acks {
        *given.entry((*validity, *uid)).or_default() += 1;
    }
    let conflicts = given.values().filter(|&&n| n > 1).count();
    let changes = view.mailbox.uid_validity - 1;
    eprintln!(
        "{:?}: {writers} writers x {appends} appends: {conflicts} UIDs acknowledged twice, \
         {changes} UIDVALIDITY changes ({repairs} repairs by the writers)",
        setup.mode
    );
    assert_eq!(
        changes == 0,
        conflicts == 0,
        "UIDVALIDITY changes if and only if writers really conflicted"
    );
    changes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_in_memory_and_without_cas() {
    let changes =
        concurrent_appends(&MailSetup::new(memory(), CommitMode::CompareAndSwap), 4, 40).await;
    assert_eq!(changes, 0, "compare-and-swap: UIDs assigned linearizably");
    concurrent_appends(&MailSetup::new(no_cas(), CommitMode::WriterUnique), 4, 40).await;
}

/// Without compare-and-swap and without conflicts (servers taking turns), UIDVALIDITY
/// never changes.
#[tokio::test]
async fn no_uidvalidity_change_without_a_conflict() {
    let setup = MailSetup::new(no_cas(), CommitMode::WriterUnique);
    let mut one = setup.open().await;
    let mut two = setup.open().await;
    let inbox = inbox(&one);
    for i in 0..20u64 {
        let mail = if i % 2 == 0 { &mut one } else { &mut two };
        let a = mail
            .append(inbox, &message(i, "turns"), AppendOptions::default())
            .await
            .unwrap();
        assert_eq!((a.uid_validity, a.uid), (1, i as u32 + 1));
    }
    let view = setup.open().await.select(inbox).await.unwrap();
    assert_eq!(view.mailbox.uid_validity, 1);
    assert_eq!(view.messages.len(), 20);
}

/// Two servers without compare-and-swap append at once to a collection of the older
/// writer-unique scheme (its marks without digest: two heads merged by readers; with the
/// directory as the commit point this cannot happen any more, issue 10 item 3): both
/// messages are kept, the conflict is repaired under a new UIDVALIDITY, nothing else
/// changes, and the first commit through the directory pins the merged state.
#[tokio::test]
async fn a_real_uid_conflict_of_the_older_scheme_changes_uidvalidity_and_loses_nothing() {
    let setup = MailSetup::new(no_cas(), CommitMode::WriterUnique);
    let marks = tempfile::tempdir().unwrap();
    let directory: Arc<dyn Directory> = Arc::new(FileDirectory::open(marks.path()).unwrap());
    let mut one = setup
        .open_with(setup.store.clone(), directory.clone())
        .await
        .unwrap();
    let inbox = inbox(&one);
    // `two` works on a copy of the directory (as if each server decided alone, as the
    // older scheme did): it does not see `one`'s append.
    let copied = tempfile::tempdir().unwrap();
    copy_dir(marks.path(), copied.path());
    let mut two = setup
        .open_with(
            setup.store.clone(),
            Arc::new(FileDirectory::open(copied.path()).unwrap()),
        )
        .await
        .unwrap();
    let a = one
        .append(inbox, &message(1, "one"), AppendOptions::default())
        .await
        .unwrap();
    let b = two
        .append(inbox, &message(2, "two"), AppendOptions::default())
        .await
        .unwrap();
    assert_eq!((a.uid, b.uid), (1, 1), "the same UID twice");
    // What the older scheme left: two heads, and marks of generations only.
    downgrade_marks(marks.path());
    let mut reader = setup
        .open_with(setup.store.clone(), directory.clone())
        .await
        .unwrap();
    let view = reader.select(inbox).await.unwrap();
    assert_eq!(view.mailbox.uid_validity, 2);
    let emails: BTreeSet<EmailId> = view.messages.iter().map(|m| m.email).collect();
    assert_eq!(emails, [a.email, b.email].into_iter().collect());
    assert_eq!(
        view.messages.iter().map(|m| m.uid).collect::<Vec<_>>(),
        [1, 2]
    );
    // The repair was committed through the directory: the mark now names one manifest.
    let fresh = setup
        .open_with(setup.store.clone(), directory)
        .await
        .unwrap();
    assert_eq!(fresh.view(inbox).unwrap(), view);
}

/// Copies the files of a `FileDirectory` (one level of folders).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// Rewrites every index mark of a `FileDirectory` as the bare generation older versions
/// wrote (no digest).
fn downgrade_marks(root: &std::path::Path) {
    for account in std::fs::read_dir(root).unwrap() {
        let account = account.unwrap().path();
        if !account.is_dir() {
            continue;
        }
        for mark in std::fs::read_dir(&account).unwrap() {
            let mark = mark.unwrap().path();
            if mark
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("i-")
            {
                let text = std::fs::read_to_string(&mark).unwrap();
                let generation = text.split_whitespace().next().unwrap().to_string();
                std::fs::write(&mark, format!("{generation}\n")).unwrap();
            }
        }
    }
}

/// Copies every object of `from` that `to` lacks.
/// Copies into `to` every object of `from` under `prefix` (a string prefix of the path;
/// "" for all) that `to` does not have yet.
pub async fn copy_objects(from: &DynStore, to: &DynStore, prefix: &str) {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    let objects: Vec<_> = from.list(None).try_collect().await.unwrap();
    for meta in objects {
        if !meta.location.as_ref().starts_with(prefix) || to.head(&meta.location).await.is_ok() {
            continue;
        }
        let bytes = from
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        to.put(&meta.location, bytes.into()).await.unwrap();
    }
}

async fn concurrent_appends_on(name: &str, expected: CommitMode) {
    let Some(store) = mailvault::testkit::s3_from_env(name) else {
        return;
    };
    let capabilities = mailvault::storage::probe_capabilities(store.as_ref())
        .await
        .unwrap();
    let mode = CommitMode::for_capabilities(capabilities);
    assert_eq!(mode, expected);
    let setup = MailSetup::new(store.clone(), mode);
    let started = std::time::Instant::now();
    let changes = concurrent_appends(&setup, 4, 500).await;
    eprintln!(
        "{name} ({mode:?}): 4 writers x 500 appends + flag changes in {:.1} s, {changes} UIDVALIDITY changes",
        started.elapsed().as_secs_f64()
    );
    if mode == CommitMode::CompareAndSwap {
        assert_eq!(changes, 0);
    }
    mailvault::testkit::conformance::cleanup(&store, &setup.account).await;
}

/// 4 writers x 500 appends on moto_server (compare-and-swap).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_on_moto() {
    concurrent_appends_on("MOTO", CommitMode::CompareAndSwap).await;
}

/// 4 writers x 500 appends on Garage (no compare-and-swap: conflicts repaired).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_on_garage() {
    concurrent_appends_on("GARAGE", CommitMode::WriterUnique).await;
}

// ---------------------------------------------------------------- real mail

pub fn corpus() -> Vec<(String, Vec<u8>)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/mail-parser");
    let mut out = Vec::new();
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&dir).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|e| e == "eml") {
                out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// A multipart message with a large base64 attachment between two small text parts.
pub fn with_attachment(attachment_len: usize) -> Vec<u8> {
    let data = mailvault::testkit::pattern(attachment_len as u64, attachment_len * 3 / 4);
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut encoded = Vec::with_capacity(attachment_len + attachment_len / 76 * 2 + 4);
    for (i, chunk) in data.chunks(3).enumerate() {
        let n =
            chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for j in 0..=chunk.len() {
            encoded.push(B64[((n >> (18 - 6 * j)) & 63) as usize]);
        }
        encoded.extend(std::iter::repeat_n(b'=', 3 - chunk.len()));
        if (i + 1) % 19 == 0 {
            encoded.extend_from_slice(b"\r\n");
        }
    }
    let mut out = b"From: Carol <carol@example.org>\r\nTo: dave@example.org\r\nSubject: Big\r\n\
        MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XyZ\"\r\n\r\n\
        --XyZ\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee the attachment.\r\n\
        --XyZ\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\n\
        Content-Disposition: attachment; filename=\"data.bin\"\r\n\
        Content-Transfer-Encoding: base64\r\n\r\n"
        .to_vec();
    out.extend_from_slice(&encoded);
    out.extend_from_slice(b"\r\n--XyZ\r\nContent-Type: text/plain\r\n\r\nThe end.\r\n--XyZ--\r\n");
    out
}

/// Every part the parser reports on the plaintext: (header, body, end) offsets.
fn parser_parts(raw: &[u8]) -> Vec<(u64, u64, u64)> {
    fn walk(m: &mail_parser::Message<'_>, total: usize, out: &mut Vec<(u64, u64, u64)>) {
        for p in &m.parts {
            out.push((
                u64::from(p.offset_header),
                u64::from(p.offset_body),
                u64::from(p.offset_end),
            ));
            if let mail_parser::PartType::Message(nested) = &p.body {
                if nested.raw_message.len() == total {
                    walk(nested, total, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    if let Some(m) = mail_parser::MessageParser::default().parse(raw) {
        walk(&m, raw.len(), &mut out);
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_mail_round_trips_and_every_part_reads_by_range() {
    let setup = MailSetup::new(memory(), CommitMode::CompareAndSwap);
    let mut mail = setup.open().await;
    let inbox = inbox(&mail);
    let mut messages = corpus();
    assert!(messages.len() >= 100, "corpus present: {}", messages.len());
    for len in [200_000, 3 << 20] {
        messages.push((format!("attachment of {len} bytes"), with_attachment(len)));
    }
    let mut parts_checked = 0;
    for (name, raw) in &messages {
        let a = mail
            .append(inbox, raw, AppendOptions::default())
            .await
            .unwrap();
        let email = mail.email(inbox, a.uid).unwrap();
        assert_eq!(
            &mail.read(&email).await.unwrap()[..],
            &raw[..],
            "{name}: byte for byte"
        );
        let stored: Vec<(u64, u64, u64)> = {
            let mut v: Vec<_> = email
                .parts
                .iter()
                .map(|p| (p.header_offset, p.body_offset, p.end_offset))
                .collect();
            v.sort();
            v
        };
        assert_eq!(stored, parser_parts(raw), "{name}: the parser's parts");
        for (i, part) in email.parts.iter().enumerate() {
            for (section, range) in [
                (PartSection::Whole, part.header_offset..part.end_offset),
                (PartSection::Header, part.header_offset..part.body_offset),
                (PartSection::Body, part.body_offset..part.end_offset),
            ] {
                let got = mail.read_part(&email, i, section).await.unwrap();
                let want = &raw[range.start as usize..range.end as usize];
                assert_eq!(&got[..], want, "{name}: part {i} {section:?}");
            }
            parts_checked += 1;
        }
    }
    eprintln!(
        "{} messages, {parts_checked} MIME parts read by range",
        messages.len()
    );
}

#[tokio::test]
async fn imap_section_numbers_and_a_part_fetch_reads_at_most_two_extra_chunks() {
    let counting = CountingStore::new(memory());
    let setup = MailSetup::new(Arc::new(counting.clone()), CommitMode::CompareAndSwap);
    let mut mail = setup.open().await;
    let inbox = inbox(&mail);
    let raw = with_attachment(10 << 20);
    let a = mail
        .append(inbox, &raw, AppendOptions::default())
        .await
        .unwrap();
    let email = mail.email(inbox, a.uid).unwrap();
    assert_eq!(email.parts.len(), 4);
    assert_eq!(email.parts[2].filename.as_deref(), Some("data.bin"));
    let last = Mailstore::imap_section(&email, &[3]).unwrap();
    assert_eq!(Mailstore::imap_section(&email, &[1]), Some(1));
    assert_eq!(Mailstore::imap_section(&email, &[]), Some(0));
    assert_eq!(Mailstore::imap_section(&email, &[4]), None);
    assert_eq!(Mailstore::imap_section(&email, &[1, 1]), None);
    counting.reset();
    let body = mail
        .read_part(&email, last, PartSection::Body)
        .await
        .unwrap();
    // The line break before a boundary belongs to the boundary (RFC 2046 §5.1.1).
    assert_eq!(&body[..], b"The end.");
    let gets: Vec<_> = counting.requests();
    assert_eq!(gets.len(), 1, "one request: {gets:?}");
    assert_eq!(gets[0].kind, RequestKind::Get);
    let bound = body.len() as u64 + 2 * (64 * 1024 + 16);
    assert!(
        gets[0].bytes <= bound,
        "{} bytes read for a {}-byte part",
        gets[0].bytes,
        body.len()
    );
    // The 10 MiB attachment (BODY[2]): a part of many chunks that starts and ends
    // inside chunks, and whose sealed span is all that is read, tags included.
    let attachment = Mailstore::imap_section(&email, &[2]).unwrap();
    let part = &email.parts[attachment];
    assert!(part.body_offset % (64 * 1024) != 0 && part.end_offset % (64 * 1024) != 0);
    counting.reset();
    let body = mail
        .read_part(&email, attachment, PartSection::Body)
        .await
        .unwrap();
    assert_eq!(
        &body[..],
        &raw[part.body_offset as usize..part.end_offset as usize]
    );
    assert!(body.len() > 10 << 20, "the base64 body of 10 MiB");
    let gets: Vec<_> = counting.requests();
    assert_eq!(gets.len(), 1, "one request: {gets:?}");
    let chunks = body.len() as u64 / (64 * 1024) + 2;
    let bound = body.len() as u64 + (chunks + 1) * 16 + 2 * (64 * 1024 + 16);
    assert!(
        gets[0].bytes <= bound,
        "{} bytes read for a {}-byte part (bound {bound})",
        gets[0].bytes,
        body.len()
    );
}

// ---------------------------------------------------------------- costs and secrecy

/// Flag updates and appends cost the same requests and bytes in a mailbox of 100 and of
/// 2 000 messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flag_update_and_append_costs_do_not_grow_with_the_mailbox() {
    let mut costs = Vec::new();
    for size in [100usize, 2_000] {
        let counting = CountingStore::new(memory());
        let setup = MailSetup::new(Arc::new(counting.clone()), CommitMode::CompareAndSwap);
        let mut mail = setup.open().await;
        let inbox = inbox(&mail);
        for i in 0..size {
            mail.append(inbox, &message(i as u64, "fill"), AppendOptions::default())
                .await
                .unwrap();
        }
        // From the steady state (one compacted segment), count a round of operations:
        // each writes one small segment and one manifest (tier compactions of the small
        // segments included; merging into the big one is the amortised cost that
        // `benches/mail.rs` reports).
        mail.compact().await.unwrap();
        counting.reset();
        let rounds = 64;
        for i in 0..rounds {
            let change = if i % 2 == 0 {
                FlagChange::Add(flags(&["\\Seen"]))
            } else {
                FlagChange::Remove(flags(&["\\Seen"]))
            };
            mail.store_flags(inbox, &[1 + i as u32], change, None)
                .await
                .unwrap();
        }
        let flag_requests = counting.requests().len() as f64 / rounds as f64;
        let flag_bytes = counting.bytes_written() as f64 / rounds as f64;
        counting.reset();
        for i in 0..rounds {
            mail.append(
                inbox,
                &message(9_000 + i as u64, "more"),
                AppendOptions::default(),
            )
            .await
            .unwrap();
        }
        let append_requests = counting.requests().len() as f64 / rounds as f64;
        let append_bytes = counting.bytes_written() as f64 / rounds as f64;
        eprintln!(
            "{size} messages: flag update {flag_requests:.2} requests {flag_bytes:.0} B written; \
             append {append_requests:.2} requests {append_bytes:.0} B written"
        );
        costs.push((flag_requests, flag_bytes, append_requests, append_bytes));
    }
    let (small, large) = (costs[0], costs[1]);
    // Amortised tier compactions make single rounds differ slightly; size-proportional
    // costs would differ 20-fold.
    assert!(
        large.0 <= small.0 * 1.5 && large.1 <= small.1 * 2.0,
        "flag update: {small:?} vs {large:?}"
    );
    assert!(
        large.2 <= small.2 * 1.5 && large.3 <= small.3 * 2.0,
        "append: {small:?} vs {large:?}"
    );
}

/// After the quickstart's flow, nothing the user wrote is readable in the store: no
/// mailbox name, subject, address, body text or flag name in object names or bytes.
#[tokio::test]
async fn nothing_readable_in_the_store_after_a_mail_flow() {
    let setup = MailSetup::new(memory(), CommitMode::CompareAndSwap);
    let mut mail = setup.open().await;
    let inbox = inbox(&mail);
    let folder = mail
        .create_mailbox("MarkerFolderName", Some(SpecialUse::Archive))
        .await
        .unwrap();
    let raw = b"From: Marker Sender <marker-sender@example.org>\r\nTo: marker-rcpt@example.org\r\n\
        Subject: MarkerSubjectLine\r\n\r\nMarkerBodyText\r\n";
    let a = mail
        .append(inbox, raw, AppendOptions::default())
        .await
        .unwrap();
    mail.store_flags(
        inbox,
        &[a.uid],
        FlagChange::Add(flags(&["$MarkerKeyword", "\\Flagged"])),
        None,
    )
    .await
    .unwrap();
    mail.move_messages(inbox, &[a.uid], folder.id)
        .await
        .unwrap();
    mail.rename_mailbox(folder.id, "MarkerRenamed")
        .await
        .unwrap();
    let markers: [&[u8]; 9] = [
        b"MarkerFolderName",
        b"MarkerRenamed",
        b"MarkerSubjectLine",
        b"marker-sender",
        b"marker-rcpt",
        b"MarkerBodyText",
        b"$MarkerKeyword",
        b"Flagged",
        b"INBOX",
    ];
    let (hits, objects) = mailvault::testkit::scan_for_markers(&setup.store, None, &markers).await;
    assert!(objects > 3, "the scan read the store ({objects} objects)");
    assert!(hits.is_empty(), "readable in the store: {hits:?}");
}

/// Bodies released without compare-and-swap wait for the grace period, then go.
#[tokio::test]
async fn released_bodies_are_collected_after_the_grace_period_without_cas() {
    let setup = MailSetup::new(no_cas(), CommitMode::WriterUnique);
    let mut mail = setup.open().await;
    let inbox = inbox(&mail);
    let a = mail
        .append(inbox, &message(1, "bye"), AppendOptions::default())
        .await
        .unwrap();
    let pin = mail.email(inbox, a.uid).unwrap().pin;
    mail.remove(inbox, &[a.uid]).await.unwrap();
    let blobs =
        BlobStore::new(setup.store.clone(), setup.deployment).account(setup.account, &setup.key);
    blobs.read(&pin).await.unwrap();
    let report = mail
        .collect_garbage(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(report.bodies, 0, "within the grace period");
    blobs.read(&pin).await.unwrap();
    let report = mail.collect_garbage(Duration::ZERO).await.unwrap();
    assert_eq!(report.bodies, 1);
    assert!(blobs.read(&pin).await.is_err());
    assert!(mail.email_by_id(a.email).is_err());
}
