//! Hardening of the mailbox model (issue 10): `analyze` racing the epoch rewrite (item 1),
//! with compare-and-swap (the rewrite lands during the analyzer's body read) and without
//! (the two commit on one state, as two servers on Garage do); and the mailbox-model
//! defects of item 15 (a rename onto an existing name below, a modseq reported for a
//! change never committed, a thread split by a parent arriving after its reply, an
//! analysis that read a whole body above `max_parse_len`).

use std::sync::Arc;

use mailvault::blob::BlobStore;
use mailvault::crypto::{AccountKey, RandomSource};
use mailvault::delivery::{Deliverer, DeliveryOptions, DeliverySigningKey};
use mailvault::directory::{AccountRecord, Directory, KeyModel, MemoryDirectory};
use mailvault::ids::{AccountId, DeploymentId, MailboxId};
use mailvault::index::IndexStore;
use mailvault::mail::{AppendOptions, FlagChange, Flags, MailConfig, Mailstore, INBOX};
use mailvault::storage::{
    naming, CommitMode, CountingStore, DynStore, GateStore, Hold, NoCasStore, RequestKind,
};
use mailvault::Error;

use super::mail::MailSetup;

const DELIVERED: &[u8] = b"From: Bob <bob@example.org>\r\nTo: alice@example.org\r\n\
Subject: Delivered\r\nMessage-ID: <d1@example.org>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\n\
hello\r\n--x\r\nContent-Type: text/plain\r\n\r\nsecond part\r\n--x--\r\n";

/// One account known to the directory by the public key of epoch 1, whose deliveries
/// are sealed to it; `new` is the key of epoch 2, that an epoch rewrite moves bodies to.
struct World {
    mode: CommitMode,
    deployment: DeploymentId,
    directory: Arc<MemoryDirectory>,
    signing: [u8; 32],
    account: AccountId,
    /// The keys of epochs 1 and 2.
    keys: Vec<AccountKey>,
}

impl World {
    async fn new(mode: CommitMode) -> Self {
        let rng = RandomSource::os();
        let (directory, _, signing) = super::directory_with_officer_and_signer(&rng).await;
        let account = AccountId::random(&rng);
        let old = AccountKey::generate(1, &rng);
        directory
            .set_account_record(
                &account,
                AccountRecord::new(KeyModel::DeviceOnly, vec![(1, old.public_key())], [9; 32]),
            )
            .await
            .unwrap();
        Self {
            mode,
            deployment: DeploymentId::random(&rng),
            directory,
            signing: *signing.to_bytes(),
            account,
            keys: vec![old, AccountKey::generate(2, &rng)],
        }
    }

    /// The account's mail on `store`, reading and writing bodies with `epochs` (the
    /// last one current); the index is opened with the epoch-1 key.
    async fn mail(&self, store: &DynStore, epochs: &[AccountKey], config: MailConfig) -> Mailstore {
        let index = IndexStore::with_mode(
            store.clone(),
            self.deployment,
            self.directory.clone(),
            self.mode,
        );
        let blobs =
            BlobStore::new(store.clone(), self.deployment).account_epochs(self.account, epochs);
        Mailstore::open_with(&index, blobs, &self.keys[0], config)
            .await
            .unwrap()
    }

    /// The key of epoch 1 alone.
    fn epoch_1(&self) -> &[AccountKey] {
        &self.keys[..1]
    }

    /// The key of epoch 2 alone.
    fn epoch_2(&self) -> &[AccountKey] {
        &self.keys[1..]
    }

    /// Delivers `body` without analysis at delivery and imports it (not analyzed yet):
    /// its mailbox and UID.
    async fn deliver_and_import(&self, store: &DynStore, body: &[u8]) -> (MailboxId, u32) {
        self.deliver_and_import_with(store, body, false).await
    }

    /// As [`deliver_and_import`](Self::deliver_and_import), analysed at delivery when
    /// `analyze`.
    async fn deliver_and_import_with(
        &self,
        store: &DynStore,
        body: &[u8],
        analyze: bool,
    ) -> (MailboxId, u32) {
        Deliverer::new(
            store.clone(),
            self.deployment,
            self.directory.clone(),
            DeliverySigningKey::from_bytes(self.signing),
        )
        .with_analysis(analyze)
        .deliver_bytes(self.account, body, DeliveryOptions::default())
        .await
        .unwrap();
        let mut mail = self
            .mail(store, self.epoch_1(), MailConfig::default())
            .await;
        let verifying = self.directory.delivery_key().await.unwrap().unwrap();
        let report = mail
            .import_deliveries(self.epoch_1(), &verifying)
            .await
            .unwrap();
        assert_eq!(report.imported.len(), 1, "{report:?}");
        let (_, mailbox, uid) = report.imported[0];
        assert_eq!(mail.email(mailbox, uid).unwrap().analyzed, analyze);
        (mailbox, uid)
    }

    /// After an analysis and a rewrite of epoch 1 raced: the message reads with the key
    /// of epoch 2 alone (its record names the rewritten body), nothing is left under
    /// epoch 1, and the analysis is kept.
    async fn check_both_held(&self, store: &DynStore, mailbox: MailboxId, uid: u32, context: &str) {
        let mut mail = self
            .mail(store, self.epoch_2(), MailConfig::default())
            .await;
        mail.refresh().await.unwrap();
        let email = mail.email(mailbox, uid).unwrap();
        let body = mail.read(&email).await;
        assert!(
            matches!(&body, Ok(b) if b[..] == *DELIVERED),
            "{context}: the message must stay readable after the rewrite, got {body:?} \
             (pin of epoch {})",
            email.pin.header.epoch
        );
        assert_eq!(
            mail.bodies_under_epoch(1),
            0,
            "{context}: epoch job left work"
        );
        assert!(email.analyzed, "{context}: the analysis was lost");
        assert_eq!(
            email.envelope.subject.as_deref(),
            Some("Delivered"),
            "{context}"
        );
        assert_eq!(email.parts.len(), 3, "{context}");
    }
}

fn memory() -> DynStore {
    super::memory()
}

/// Copies every object of `from` whose name starts with `prefix` and that `to` lacks.
use super::mail::copy_objects;

// ---------------------------------------------------------------- item 1

/// `analyze` reads the body, and the epoch rewrite swaps the record's pin and deletes
/// the old body during that read (compare-and-swap: the analyzer's commit comes after
/// the rewrite's, on a state that has it). The analysis must not put the old pin back:
/// both changes hold.
async fn analyze_during_a_rewrite(store: DynStore, mode: CommitMode) {
    let w = World::new(mode).await;
    let (mailbox, uid) = w.deliver_and_import(&store, DELIVERED).await;
    let blobs_prefix = format!("{}/b/", naming::account_prefix(&w.account));
    let holding = GateStore::new(store.clone());
    let gate = holding.gate();
    let held: DynStore = Arc::new(holding);
    let mut analyzer = w.mail(&held, &w.keys, MailConfig::default()).await;
    let mut rewriter = w.mail(&store, &w.keys, MailConfig::default()).await;
    gate.arm(Hold::GetBody, blobs_prefix);
    let (analyzed, rewritten) = tokio::join!(analyzer.analyze(mailbox, uid), async {
        gate.reached().await;
        let rewritten = rewriter.rewrite_epoch(1, |_| {}).await;
        gate.open();
        rewritten
    });
    assert_eq!(
        rewritten.unwrap(),
        1,
        "{mode:?}: the rewrite moved the body"
    );
    let analyzed = analyzed.unwrap();
    assert_eq!(analyzed.envelope.subject.as_deref(), Some("Delivered"));
    w.check_both_held(
        &store,
        mailbox,
        uid,
        &format!("{mode:?}, rewrite during the read"),
    )
    .await;
}

/// Without compare-and-swap, two servers race: one rewrites the epoch, the other
/// analyzes the message on a partition that hides the rewrite. The directory is the
/// commit point (issue 10, item 3): the analyzer cannot commit on the state the rewrite
/// replaced (its partition withholds the accepted manifest: `Rollback`); once the
/// partition heals it analyzes again, and both changes hold.
async fn analyze_and_rewrite_on_one_state() {
    let w = World::new(CommitMode::WriterUnique).await;
    let bucket = memory();
    let store: DynStore = Arc::new(NoCasStore::new(bucket.clone()));
    let (mailbox, uid) = w.deliver_and_import(&store, DELIVERED).await;
    // The analyzer works on a copy of the bucket: it does not see the rewrite.
    let partition = memory();
    copy_objects(&bucket, &partition, "").await;
    let beside: DynStore = Arc::new(NoCasStore::new(partition.clone()));
    let mut analyzer = w.mail(&beside, &w.keys, MailConfig::default()).await;
    let mut rewriter = w.mail(&store, &w.keys, MailConfig::default()).await;
    assert_eq!(rewriter.rewrite_epoch(1, |_| {}).await.unwrap(), 1);
    let refused = analyzer.analyze(mailbox, uid).await;
    assert!(
        matches!(refused, Err(Error::Rollback { .. })),
        "the analyzer committed on the state the rewrite replaced: {refused:?}"
    );
    // The partition heals: the analyzer sees the bucket again and analyzes.
    let mut analyzer = w.mail(&store, &w.keys, MailConfig::default()).await;
    analyzer.analyze(mailbox, uid).await.unwrap();
    w.check_both_held(
        &store,
        mailbox,
        uid,
        "without compare-and-swap, partitioned",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_01_analyze_against_the_epoch_rewrite() {
    analyze_during_a_rewrite(memory(), CommitMode::CompareAndSwap).await;
    analyze_during_a_rewrite(
        Arc::new(NoCasStore::new(memory())),
        CommitMode::WriterUnique,
    )
    .await;
    analyze_and_rewrite_on_one_state().await;
    for name in ["MOTO", "GARAGE"] {
        let Some(store) = mailvault::testkit::s3_from_env(name) else {
            continue;
        };
        let capabilities = mailvault::storage::probe_capabilities(store.as_ref())
            .await
            .unwrap();
        analyze_during_a_rewrite(store, CommitMode::for_capabilities(capabilities)).await;
    }
}

// ---------------------------------------------------------------- item 15

fn inbox(mail: &Mailstore) -> MailboxId {
    mail.mailbox_by_name(INBOX).unwrap().id
}

/// Both commit modes, each on its store.
fn both_modes() -> [(DynStore, CommitMode); 2] {
    [
        (memory(), CommitMode::CompareAndSwap),
        (
            Arc::new(NoCasStore::new(memory())),
            CommitMode::WriterUnique,
        ),
    ]
}

/// Renaming `a` to `b` when `a/x` and `b/x` both exist would give two mailboxes the
/// name `b/x`: refused with a typed error, nothing changed (no commit at all).
#[tokio::test]
async fn item_15a_rename_onto_a_name_taken_below() {
    for (store, mode) in both_modes() {
        let setup = MailSetup::new(store, mode);
        let mut mail = setup.open().await;
        let a = mail.create_mailbox("a", None).await.unwrap();
        mail.create_mailbox("a/x", None).await.unwrap();
        mail.create_mailbox("b/x", None).await.unwrap();
        let before = mail.mailboxes().unwrap();
        let modseq = mail.modseq();
        let renamed = mail.rename_mailbox(a.id, "b").await;
        assert!(
            matches!(&renamed, Err(Error::MailboxExists { name }) if name == "b/x"),
            "{mode:?}: renaming a to b while a/x and b/x exist must fail, got {renamed:?}"
        );
        assert_eq!(mail.modseq(), modseq, "{mode:?}: nothing committed");
        let fresh = setup.open().await;
        assert_eq!(
            fresh.mailboxes().unwrap(),
            before,
            "{mode:?}: nothing changed"
        );
        // Renaming within the subtree stays possible: `a` to `a2` moves `a/x` to `a2/x`.
        mail.rename_mailbox(a.id, "a2").await.unwrap();
        let names: Vec<String> = mail
            .mailboxes()
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["INBOX", "a2", "a2/x", "b/x"], "{mode:?}");
    }
}

/// A flag change that changes nothing, a copy of UIDs that do not exist and a
/// conditional store whose messages all changed since commit nothing, so they report
/// no new modseq: the modseq they return is one the account already had, and the next
/// real change gets a greater one.
#[tokio::test]
async fn item_15b_no_modseq_for_a_change_never_committed() {
    for (store, mode) in both_modes() {
        let setup = MailSetup::new(store, mode);
        let mut mail = setup.open().await;
        let inbox = inbox(&mail);
        let other = mail.create_mailbox("other", None).await.unwrap().id;
        let seen = Flags::from_names([Flags::SEEN]).unwrap();
        let appended = mail
            .append(
                inbox,
                b"Subject: s\r\n\r\nbody",
                AppendOptions {
                    flags: seen.clone(),
                    ..AppendOptions::default()
                },
            )
            .await
            .unwrap();
        let before = mail.modseq();
        let stored = mail
            .store_flags(inbox, &[appended.uid], FlagChange::Add(seen.clone()), None)
            .await
            .unwrap();
        assert!(stored.updated.is_empty(), "{mode:?}");
        assert_eq!(mail.modseq(), before, "{mode:?}: nothing committed");
        assert!(
            stored.modseq <= before,
            "{mode:?}: store_flags reported modseq {} for a change never committed (the \
             account is at {before})",
            stored.modseq
        );
        let conditional = mail
            .store_flags(
                inbox,
                &[appended.uid],
                FlagChange::Remove(seen.clone()),
                Some(appended.modseq - 1),
            )
            .await
            .unwrap();
        assert_eq!(conditional.modified, [appended.uid], "{mode:?}");
        assert!(conditional.modseq <= before, "{mode:?}: conditional store");
        let copied = mail.copy(inbox, &[appended.uid + 7], other).await.unwrap();
        assert!(copied.uids.is_empty(), "{mode:?}");
        assert!(copied.modseq <= before, "{mode:?}: copy of nothing");
        assert_eq!(mail.modseq(), before, "{mode:?}: still nothing committed");
        let real = mail
            .store_flags(inbox, &[appended.uid], FlagChange::Remove(seen), None)
            .await
            .unwrap();
        assert_eq!(real.updated, [appended.uid], "{mode:?}");
        assert!(
            real.modseq > stored.modseq && real.modseq > before,
            "{mode:?}: a real change gets a new modseq"
        );
        let changes = mail.changes_since(inbox, stored.modseq).unwrap();
        assert_eq!(
            changes.changed.len(),
            1,
            "{mode:?}: the real change is seen"
        );
    }
}

const PARENT: &[u8] = b"From: a@example.org\r\nMessage-ID: <parent@example.org>\r\n\
Subject: plan\r\n\r\nShall we?\r\n";
const REPLY: &[u8] = b"From: b@example.org\r\nMessage-ID: <reply@example.org>\r\n\
In-Reply-To: <parent@example.org>\r\nReferences: <parent@example.org>\r\n\
Subject: Re: plan\r\n\r\nYes.\r\n";
const FOLLOW_UP: &[u8] = b"From: a@example.org\r\nMessage-ID: <follow@example.org>\r\n\
In-Reply-To: <parent@example.org>\r\nSubject: Re: plan\r\n\r\nWhen?\r\n";

/// A reply arrives before the message it answers: the parent joins the reply's thread
/// (appended, or delivered with its analysis), and so does a later answer to the parent;
/// a parent delivered unanalyzed keeps the thread its import gave it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_15c_a_parent_arriving_after_its_reply_joins_its_thread() {
    for (store, mode) in both_modes() {
        let setup = MailSetup::new(store, mode);
        let mut mail = setup.open().await;
        let inbox = inbox(&mail);
        let reply = mail
            .append(inbox, REPLY, AppendOptions::default())
            .await
            .unwrap();
        let parent = mail
            .append(inbox, PARENT, AppendOptions::default())
            .await
            .unwrap();
        assert_eq!(
            parent.thread, reply.thread,
            "{mode:?}: the parent appended after its reply is in another thread"
        );
        let follow = mail
            .append(inbox, FOLLOW_UP, AppendOptions::default())
            .await
            .unwrap();
        assert_eq!(follow.thread, reply.thread, "{mode:?}");
    }
    // The parent is a delivery imported unread (no analysis at delivery) and analyzed
    // after the reply came: its THREADID is the one given at import, and stays (RFC 8474
    // §5.2: immutable; review finding 10), so it is not merged into the reply's thread
    // then; a message answering the parent afterwards joins the reply's thread (the
    // parent's Message-ID names it since the reply).
    let w = World::new(CommitMode::CompareAndSwap).await;
    let store = memory();
    let mut mail = w.mail(&store, w.epoch_1(), MailConfig::default()).await;
    let reply = mail
        .append(inbox(&mail), REPLY, AppendOptions::default())
        .await
        .unwrap();
    let (mailbox, uid) = w.deliver_and_import(&store, PARENT).await;
    mail.refresh().await.unwrap();
    let imported = mail.email(mailbox, uid).unwrap();
    let parent = mail.analyze(mailbox, uid).await.unwrap();
    assert_eq!(
        parent.thread, imported.thread,
        "the THREADID changed at analysis"
    );
    let fresh = w.mail(&store, w.epoch_1(), MailConfig::default()).await;
    assert_eq!(fresh.email(mailbox, uid).unwrap().thread, imported.thread);
    let follow = mail
        .append(inbox(&mail), FOLLOW_UP, AppendOptions::default())
        .await
        .unwrap();
    assert_eq!(follow.thread, reply.thread);
    // Analysed at delivery (issue 12 item 3): in the reply's thread from its import on.
    let w = World::new(CommitMode::CompareAndSwap).await;
    let store = memory();
    let mut mail = w.mail(&store, w.epoch_1(), MailConfig::default()).await;
    let reply = mail
        .append(inbox(&mail), REPLY, AppendOptions::default())
        .await
        .unwrap();
    let (mailbox, uid) = w.deliver_and_import_with(&store, PARENT, true).await;
    mail.refresh().await.unwrap();
    assert_eq!(mail.email(mailbox, uid).unwrap().thread, reply.thread);
}

/// `analyze` of a body above `max_parse_len` fetches at most that much of it (and the
/// chunks around), like an append: its memory is bounded by the limit, not by the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_15d_analyze_reads_at_most_max_parse_len() {
    const LIMIT: usize = 64 << 10;
    let w = World::new(CommitMode::CompareAndSwap).await;
    let counting = CountingStore::new(memory());
    let store: DynStore = Arc::new(counting.clone());
    let mut big =
        b"From: a@example.org\r\nSubject: big\r\nMessage-ID: <big@example.org>\r\n\r\n".to_vec();
    big.extend(mailvault::testkit::pattern(3, 2 << 20));
    let (mailbox, uid) = w.deliver_and_import(&store, &big).await;
    let mut mail = w
        .mail(
            &store,
            w.epoch_1(),
            MailConfig {
                max_parse_len: LIMIT,
                ..MailConfig::default()
            },
        )
        .await;
    counting.reset();
    let email = mail.analyze(mailbox, uid).await.unwrap();
    assert_eq!(email.envelope.subject.as_deref(), Some("big"));
    assert!(email.parts.is_empty(), "parsed for its header only");
    let blobs = format!("{}/b/", naming::account_prefix(&w.account));
    let fetched: u64 = counting
        .requests()
        .iter()
        .filter(|r| r.kind == RequestKind::Get && r.path.starts_with(&blobs))
        .map(|r| r.bytes)
        .sum();
    let bound = (LIMIT + 2 * super::SEALED + 512) as u64;
    assert!(
        fetched <= bound,
        "analyze fetched {fetched} bytes of a {} byte body above the {LIMIT} byte parse \
         limit (bound {bound})",
        big.len()
    );
    let again = w.mail(&store, w.epoch_1(), MailConfig::default()).await;
    assert_eq!(
        again
            .email(mailbox, uid)
            .unwrap()
            .envelope
            .subject
            .as_deref(),
        Some("big")
    );
}
