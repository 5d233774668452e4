//! Issue 12 (mail backend API), item 6: email-centric, atomic operations for JMAP and
//! IMAP `MULTIAPPEND` (a transaction of appends, keyword changes, mailbox memberships and
//! destroys in one commit; `mailboxes_of`, `emails`, `thread_members`; the creation
//! modseq that tells created from updated; `ifInState`; keywords per email against flags
//! per copy), and item 4's JMAP `Email/query` over the whole account, through the public
//! API.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::TryStreamExt;
use mailvault::ids::{EmailId, MailboxId};
use mailvault::mail::{
    AppendOptions, EmailFilter, EmailQuery, EmailSort, EmailSortProperty, FlagChange, Flags,
    HeaderField, Mailstore, SearchKey, Transaction, INBOX,
};
use mailvault::storage::{CommitMode, DynStore, NoCasStore};
use mailvault::Error;

use super::mail::MailSetup;

fn flags(names: &[&str]) -> Flags {
    Flags::from_names(names.iter().copied()).unwrap()
}

fn with_flags(names: &[&str]) -> AppendOptions {
    AppendOptions {
        flags: flags(names),
        ..AppendOptions::default()
    }
}

fn text(subject: &str) -> Vec<u8> {
    format!("From: a@example.org\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n").into_bytes()
}

/// Every object of the store, by path.
async fn objects(store: &DynStore) -> BTreeSet<String> {
    store
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap()
}

/// The flags of `email`'s copy in `mailbox`.
fn flags_in(mail: &Mailstore, mailbox: MailboxId, email: EmailId) -> Flags {
    let view = mail.view(mailbox).unwrap();
    let copies: Vec<_> = view.messages.iter().filter(|m| m.email == email).collect();
    assert_eq!(copies.len(), 1, "{email} in {mailbox}");
    copies[0].flags.clone()
}

async fn mailboxes(mail: &mut Mailstore) -> (MailboxId, MailboxId, MailboxId) {
    let inbox = mail.mailbox_by_name(INBOX).unwrap().id;
    let work = mail.create_mailbox("Work", None).await.unwrap().id;
    let archive = mail.create_mailbox("Archive", None).await.unwrap().id;
    (inbox, work, archive)
}

/// Appends, a keyword change, a move (add + remove) and a destroy: one commit (the
/// account's modseq grows by one, every record written has it), and
/// `account_changes_since` tells the created email from the updated one and the
/// destroyed one. The destroyed email's body is gone.
#[tokio::test]
async fn item_06_a_transaction_is_one_commit() {
    let setup = MailSetup::new(super::memory(), CommitMode::CompareAndSwap);
    let mut mail = setup.open().await;
    let (inbox, work, archive) = mailboxes(&mut mail).await;
    let kept = mail
        .append(inbox, &text("kept"), with_flags(&["\\Seen"]))
        .await
        .unwrap();
    let doomed = mail
        .append(inbox, &text("doomed"), AppendOptions::default())
        .await
        .unwrap();
    let doomed_body = mail.email_by_id(doomed.email).unwrap();
    let before = mail.modseq();

    let mut tx = Transaction::new();
    let new = tx.append([inbox, work, inbox], text("new"), with_flags(&["$Work"]));
    tx.change_keywords(kept.email, FlagChange::Add(flags(&["\\Flagged"])))
        .add_to_mailbox(kept.email, archive)
        .remove_from_mailbox(kept.email, inbox)
        .destroy(doomed.email);
    let done = mail.commit(tx).await.unwrap();

    assert_eq!(done.modseq, before + 1, "one commit");
    assert_eq!(mail.modseq(), before + 1);
    let created = &done.created[new];
    // Inbox given twice is one message; UIDs follow those of the mailbox.
    assert_eq!(created.messages.len(), 2);
    assert_eq!(
        (created.messages[0].uid, created.messages[1].uid),
        (doomed.uid + 1, 1)
    );
    assert!(created.messages.iter().all(|m| m.modseq == done.modseq));
    assert_eq!(done.updated, [kept.email]);
    assert_eq!(done.destroyed, [doomed.email]);

    let mut both = vec![inbox, work];
    both.sort();
    assert_eq!(mail.mailboxes_of(created.email).unwrap(), both);
    assert_eq!(mail.mailboxes_of(kept.email).unwrap(), [archive]);
    assert!(matches!(
        mail.mailboxes_of(doomed.email),
        Err(Error::NoSuchMessage { .. })
    ));
    let mut all = vec![kept.email, created.email];
    all.sort();
    assert_eq!(mail.emails().unwrap(), all);
    assert_eq!(
        mail.keywords(kept.email).unwrap(),
        flags(&["\\Seen", "\\Flagged"])
    );
    // Every record the commit wrote has its modseq.
    for mailbox in [inbox, work, archive] {
        let view = mail.view(mailbox).unwrap();
        for m in view
            .messages
            .iter()
            .filter(|m| m.email != kept.email || mailbox == archive)
        {
            assert_eq!(m.modseq, done.modseq, "{mailbox}");
        }
    }
    // The moved email left the inbox under its UID (QRESYNC sees it vanish).
    let inbox_changes = mail.changes_since(inbox, before).unwrap();
    assert_eq!(inbox_changes.vanished, [kept.uid, doomed.uid]);

    let changes = mail.account_changes_since(before).unwrap();
    assert_eq!(changes.emails_created, [created.email]);
    assert_eq!(changes.emails_updated, [kept.email]);
    assert_eq!(changes.emails_destroyed, [doomed.email]);
    assert_eq!(changes.emails_changed, all);
    assert_eq!(
        mail.email_by_id(created.email).unwrap().created_modseq,
        done.modseq
    );
    assert_eq!(
        mail.email_by_id(kept.email).unwrap().created_modseq,
        kept.modseq
    );
    // Since before `kept` was appended, it is a created email (created and updated).
    let since_start = mail.account_changes_since(kept.modseq - 1).unwrap();
    assert!(since_start.emails_created.contains(&kept.email));
    assert!(since_start.emails_updated.is_empty());
    // The destroyed email's body was deleted with the commit.
    assert!(mail.read(&doomed_body).await.is_err());
}

/// Any refused operation refuses the whole transaction: nothing reaches the store (not
/// even the bodies uploaded for its appends), and the account's state is unchanged.
#[tokio::test]
async fn item_06_a_refused_transaction_writes_nothing() {
    let setup = MailSetup::new(super::memory(), CommitMode::CompareAndSwap);
    let mut mail = setup.open().await;
    let (inbox, work, _) = mailboxes(&mut mail).await;
    let one = mail
        .append(inbox, &text("one"), AppendOptions::default())
        .await
        .unwrap();
    let stored = objects(&setup.store).await;
    let modseq = mail.modseq();
    let unknown = EmailId::from_bytes([9; 16]);
    let gone = MailboxId::from_bytes([7; 16]);

    type Case = (&'static str, Transaction, fn(&Error) -> bool);
    let cases: Vec<Case> = vec![
        (
            "an unknown email",
            {
                let mut tx = Transaction::new();
                tx.append([inbox], text("a"), AppendOptions::default());
                tx.change_keywords(one.email, FlagChange::Add(flags(&["\\Seen"])))
                    .destroy(unknown);
                tx
            },
            |e| matches!(e, Error::NoSuchMessage { .. }),
        ),
        (
            "an email left in no mailbox",
            {
                let mut tx = Transaction::new();
                tx.append([work], text("b"), AppendOptions::default());
                tx.remove_from_mailbox(one.email, inbox);
                tx
            },
            |e| matches!(e, Error::InvalidArgument(_)),
        ),
        (
            "an unknown mailbox for a membership",
            {
                let mut tx = Transaction::new();
                tx.append([work], text("c"), AppendOptions::default());
                tx.add_to_mailbox(one.email, gone);
                tx
            },
            |e| matches!(e, Error::NoSuchMailbox { .. }),
        ),
        (
            "an append to no mailbox",
            {
                let mut tx = Transaction::new();
                tx.append([], text("d"), AppendOptions::default());
                tx
            },
            |e| matches!(e, Error::InvalidArgument(_)),
        ),
    ];
    for (what, tx, expected) in cases {
        let refused = mail.commit(tx).await;
        assert!(refused.as_ref().is_err_and(expected), "{what}: {refused:?}");
        assert_eq!(mail.modseq(), modseq, "{what}");
        assert_eq!(objects(&setup.store).await, stored, "{what}");
    }
    assert_eq!(mail.emails().unwrap(), [one.email]);
    assert!(mail.keywords(one.email).unwrap().names().next().is_none());
}

/// `ifInState`: a transaction made for the account's state commits; one made for an
/// older state fails with `StateMismatch` (not transient), also when the newer state
/// was committed by another server this handle has not loaded yet (the check is inside
/// the compare-and-swap commit, after its reload).
#[tokio::test]
async fn item_06_if_in_state_refuses_a_stale_state() {
    let setup = MailSetup::new(super::memory(), CommitMode::CompareAndSwap);
    let mut mine = setup.open().await;
    let inbox = mine.mailbox_by_name(INBOX).unwrap().id;
    let one = mine
        .append(inbox, &text("one"), AppendOptions::default())
        .await
        .unwrap();

    let state = mine.modseq();
    let mut tx = Transaction::new();
    tx.if_in_state(state)
        .change_keywords(one.email, FlagChange::Add(flags(&["\\Seen"])));
    let done = mine.commit(tx).await.unwrap();
    assert_eq!(done.modseq, state + 1);

    // Stale by this handle's own write.
    let mut tx = Transaction::new();
    tx.if_in_state(state).destroy(one.email);
    let stale = mine.commit(tx).await;
    assert!(
        matches!(stale, Err(Error::StateMismatch { expected, actual }) if expected == state && actual == state + 1),
        "{stale:?}"
    );
    assert!(!stale.unwrap_err().is_transient());

    // Stale by another server's write, not loaded here.
    let mut theirs = setup.open().await;
    theirs
        .store_flags(inbox, &[one.uid], FlagChange::Add(flags(&["$Other"])), None)
        .await
        .unwrap();
    let known = mine.modseq();
    assert!(known < theirs.modseq());
    let mut tx = Transaction::new();
    tx.if_in_state(known);
    tx.append([inbox], text("two"), AppendOptions::default());
    let stored = objects(&setup.store).await;
    let stale = mine.commit(tx).await;
    assert!(
        matches!(stale, Err(Error::StateMismatch { expected, actual }) if expected == known && actual == theirs.modseq()),
        "{stale:?}"
    );
    assert_eq!(objects(&setup.store).await, stored, "the body went again");
    mine.refresh().await.unwrap();
    assert_eq!(mine.emails().unwrap(), [one.email]);
}

/// Keywords per email against flags per copy, as `mail::Transaction` documents them.
#[tokio::test]
async fn item_06_keywords_per_email_and_flags_per_copy() {
    let setup = MailSetup::new(super::memory(), CommitMode::CompareAndSwap);
    let mut mail = setup.open().await;
    let (inbox, work, archive) = mailboxes(&mut mail).await;
    let e = mail
        .append(inbox, &text("e"), AppendOptions::default())
        .await
        .unwrap();
    let copied = mail.copy(inbox, &[e.uid], work).await.unwrap();
    let work_uid = copied.uids[0].1;

    // An IMAP STORE changes one copy; the email has a keyword when a copy has it.
    mail.store_flags(inbox, &[e.uid], FlagChange::Add(flags(&["\\Seen"])), None)
        .await
        .unwrap();
    mail.store_flags(
        work,
        &[work_uid],
        FlagChange::Add(flags(&["\\Deleted"])),
        None,
    )
    .await
    .unwrap();
    assert_eq!(mail.keywords(e.email).unwrap(), flags(&["\\Seen"]));

    // A keyword change reaches every copy and leaves each copy's \Deleted alone.
    let mut tx = Transaction::new();
    tx.change_keywords(e.email, FlagChange::Replace(flags(&["$Work"])));
    mail.commit(tx).await.unwrap();
    assert_eq!(flags_in(&mail, inbox, e.email), flags(&["$Work"]));
    assert_eq!(
        flags_in(&mail, work, e.email),
        flags(&["$Work", "\\Deleted"])
    );
    assert_eq!(mail.keywords(e.email).unwrap(), flags(&["$Work"]));

    // \Deleted named in a keyword change changes nothing: nothing is committed.
    let modseq = mail.modseq();
    let mut tx = Transaction::new();
    tx.change_keywords(e.email, FlagChange::Remove(flags(&["\\Deleted"])))
        .change_keywords(e.email, FlagChange::Add(flags(&["\\Deleted"])));
    let done = mail.commit(tx).await.unwrap();
    assert_eq!((done.modseq, mail.modseq()), (modseq, modseq));
    assert!(done.updated.is_empty());
    assert_eq!(flags_in(&mail, inbox, e.email), flags(&["$Work"]));

    // A copy added by a transaction gets the email's keywords as changed before it in
    // the same transaction.
    let mut tx = Transaction::new();
    tx.change_keywords(e.email, FlagChange::Add(flags(&["\\Flagged"])))
        .add_to_mailbox(e.email, archive)
        .add_to_mailbox(e.email, inbox);
    mail.commit(tx).await.unwrap();
    assert_eq!(
        flags_in(&mail, archive, e.email),
        flags(&["$Work", "\\Flagged"])
    );
    assert_eq!(mail.view(inbox).unwrap().messages.len(), 1, "already there");
    // IMAP EXPUNGE of the work copy leaves the email in the others.
    mail.expunge(work, None).await.unwrap();
    let mut left = vec![inbox, archive];
    left.sort();
    assert_eq!(mail.mailboxes_of(e.email).unwrap(), left);
}

/// Without compare-and-swap, two servers committing transactions at once both keep
/// their emails, under distinct UIDs (the loser plans again on the winner's state).
#[tokio::test]
async fn item_06_concurrent_transactions_without_compare_and_swap() {
    let store: DynStore = Arc::new(NoCasStore::new(super::memory()));
    let setup = MailSetup::new(store, CommitMode::WriterUnique);
    let mut a = setup.open().await;
    let mut b = setup.open().await;
    let inbox = a.mailbox_by_name(INBOX).unwrap().id;
    let mut tx_a = Transaction::new();
    tx_a.append([inbox], text("a1"), AppendOptions::default());
    tx_a.append([inbox], text("a2"), AppendOptions::default());
    let mut tx_b = Transaction::new();
    tx_b.append([inbox], text("b1"), AppendOptions::default());
    let (da, db) = tokio::join!(a.commit(tx_a), b.commit(tx_b));
    let (da, db) = (da.unwrap(), db.unwrap());
    a.refresh().await.unwrap();
    b.refresh().await.unwrap();
    let mut expected: Vec<EmailId> = da
        .created
        .iter()
        .chain(&db.created)
        .map(|c| c.email)
        .collect();
    expected.sort();
    for mail in [&a, &b] {
        assert_eq!(mail.emails().unwrap(), expected);
        let view = mail.view(inbox).unwrap();
        let uids: Vec<u32> = view.messages.iter().map(|m| m.uid).collect();
        assert_eq!(uids, [1, 2, 3]);
    }
}

/// IMAP MULTIAPPEND through the shared handle: three messages, one commit, consecutive
/// UIDs, subscribers told once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_06_multiappend_through_the_shared_handle() {
    let (provider, account) = world().await;
    let handle = mailvault::engine::SharedAccount::open(
        provider.unlock(account, "pw").await.unwrap(),
        mailvault::engine::ShareConfig::default(),
    )
    .await
    .unwrap();
    let inbox = handle.read().await.mailbox_by_name(INBOX).unwrap().id;
    let mut listener = handle.subscribe();
    let before = *listener.borrow_and_update();
    let mut tx = Transaction::new();
    for n in 0..3 {
        tx.append([inbox], text(&format!("part {n}")), with_flags(&["\\Seen"]));
    }
    let done = handle.commit(tx).await.unwrap();
    assert_eq!(done.modseq, before + 1);
    let uids: Vec<u32> = done.created.iter().map(|c| c.messages[0].uid).collect();
    assert_eq!(uids, [1, 2, 3]);
    assert!(listener.has_changed().unwrap());
    assert_eq!(*listener.borrow_and_update(), done.modseq);
    let view = handle.view(inbox).await.unwrap();
    assert_eq!(view.messages.len(), 3);
    assert!(view.messages.iter().all(|m| m.flags.contains(Flags::SEEN)));
}

/// A provider on memory with one account (password `pw`).
async fn world() -> (mailvault::engine::Provider, mailvault::ids::AccountId) {
    world_on(super::memory()).await
}

/// A provider on `store` with one account (password `pw`).
async fn world_on(store: DynStore) -> (mailvault::engine::Provider, mailvault::ids::AccountId) {
    let rng = mailvault::crypto::RandomSource::os();
    let (directory, _, _) = super::directory_with_officer_and_signer(&rng).await;
    let provider = mailvault::engine::Provider::new(
        store,
        mailvault::ids::DeploymentId::random(&rng),
        directory,
        mailvault::testkit::cheap_provider_config(),
    )
    .await
    .unwrap();
    let account = provider.create_account("pw").await.unwrap();
    (provider, account)
}

/// The shared handle uploads a transaction's bodies without holding the account: while
/// the upload is stalled, another connection of the account writes and reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_06_a_shared_commit_uploads_without_holding_the_handle() {
    use mailvault::storage::{GateStore, Hold};
    let gated = GateStore::new(super::memory());
    let gate = gated.gate();
    let (provider, account) = world_on(Arc::new(gated)).await;
    let handle = mailvault::engine::SharedAccount::open(
        provider.unlock(account, "pw").await.unwrap(),
        mailvault::engine::ShareConfig::default(),
    )
    .await
    .unwrap();
    let inbox = handle.read().await.mailbox_by_name(INBOX).unwrap().id;
    let mut tx = Transaction::new();
    tx.append([inbox], text("first"), AppendOptions::default());
    let first = handle.commit(tx).await.unwrap();

    gate.arm(Hold::Put, "/b/");
    let other = handle.clone();
    let stalled = tokio::spawn(async move {
        let mut tx = Transaction::new();
        tx.append([inbox], text("stalled"), AppendOptions::default());
        other.commit(tx).await
    });
    gate.reached().await;
    let flagged = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let uid = first.created[0].messages[0].uid;
        let mut mail = handle.write().await;
        mail.store_flags(inbox, &[uid], FlagChange::Add(flags(&["\\Seen"])), None)
            .await
    })
    .await
    .expect("the write waited for the stalled upload")
    .unwrap();
    assert_eq!(handle.view(inbox).await.unwrap().messages.len(), 1);
    gate.open();
    let done = stalled.await.unwrap().unwrap();
    assert!(done.modseq > flagged.modseq);
    assert_eq!(done.created[0].messages[0].uid, 2);
}

// ------------------------------------------------------------------ Email/query

/// Four emails: A (Alice, "Lunch", inbox, \Seen, day 1), B (Bob, "Re: Lunch" answering
/// A, inbox and work, $Work, large, day 2), C (carol without a name, "Fwd: Budget", work,
/// \Seen \Flagged, day 3), D (Dave, "budget (fwd)", archive, day 4).
struct Corpus {
    mail: Mailstore,
    inbox: MailboxId,
    work: MailboxId,
    ids: [EmailId; 4],
    sizes: [u64; 4],
}

const DAY: i64 = 86_400;

async fn corpus() -> Corpus {
    let setup = MailSetup::new(super::memory(), CommitMode::CompareAndSwap);
    let mut mail = setup.open().await;
    let (inbox, work, archive) = mailboxes(&mut mail).await;
    let messages: [(String, Vec<MailboxId>, &[&str]); 4] = [
        (
            "From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: Lunch\r\n\
             Message-ID: <lunch@example.org>\r\n\r\nnoon\r\n"
                .into(),
            vec![inbox],
            &["\\Seen"],
        ),
        (
            format!(
                "From: Bob <bob@example.org>\r\nTo: alice@example.org\r\nSubject: Re: Lunch\r\n\
                 In-Reply-To: <lunch@example.org>\r\n\r\n{}\r\n",
                "yes ".repeat(500)
            ),
            vec![inbox, work],
            &["$Work"],
        ),
        (
            "From: carol@example.net\r\nTo: zed@example.org\r\nSubject: Fwd: Budget\r\n\r\nsee\r\n"
                .into(),
            vec![work],
            &["\\Seen", "\\Flagged"],
        ),
        (
            "From: Dave <dave@example.com>\r\nTo: Alice <alice@example.org>\r\n\
             Subject: budget (fwd)\r\n\r\nx\r\n"
                .into(),
            vec![archive],
            &[],
        ),
    ];
    let mut tx = Transaction::new();
    for (day, (body, boxes, names)) in (1i64..).zip(messages) {
        tx.append(
            boxes,
            body.into_bytes(),
            AppendOptions {
                flags: flags(names),
                internal_date: Some(day * DAY),
                provenance: None,
            },
        );
    }
    let done = mail.commit(tx).await.unwrap();
    let ids = [0, 1, 2, 3].map(|i| done.created[i].email);
    let sizes = [0, 1, 2, 3].map(|i| done.created[i].size);
    Corpus {
        mail,
        inbox,
        work,
        ids,
        sizes,
    }
}

#[tokio::test]
async fn item_04_email_query_filters_sorts_collapses_and_windows() {
    let Corpus {
        mail,
        inbox,
        work,
        ids,
        sizes,
    } = corpus().await;
    let [a, b, c, d] = ids;
    let query = |filter: Option<EmailFilter>, sort: Vec<EmailSort>| {
        mail.query_emails(&EmailQuery {
            filter,
            sort,
            ..EmailQuery::default()
        })
        .unwrap()
        .ids
    };
    let only = |f: EmailFilter| query(Some(f), Vec::new());
    let by = |property: EmailSortProperty, ascending: bool| EmailSort {
        property,
        ascending,
    };
    use EmailFilter as F;
    use EmailSortProperty as P;

    // Filters (results newest first: the default order).
    assert_eq!(query(None, Vec::new()), [d, c, b, a]);
    assert_eq!(only(F::InMailbox(inbox)), [b, a]);
    assert_eq!(only(F::InMailboxOtherThan(vec![inbox])), [d, c, b]);
    assert_eq!(only(F::InMailboxOtherThan(vec![inbox, work])), [d]);
    assert_eq!(only(F::ReceivedBefore(3 * DAY)), [b, a]);
    assert_eq!(only(F::ReceivedAfter(3 * DAY)), [d, c]);
    assert_eq!(only(F::MinSize(sizes[1])), [b]);
    assert_eq!(only(F::MaxSize(sizes[1])), [d, c, a]);
    assert_eq!(only(F::MinSize(0)).len(), 4);
    assert_eq!(only(F::Key(SearchKey::Flag("\\Seen".into()))), [c, a]);
    assert_eq!(only(F::Key(SearchKey::NoFlag("\\seen".into()))), [d, b]);
    assert_eq!(only(F::Key(SearchKey::Flag("$work".into()))), [b]);
    assert_eq!(
        only(F::Key(SearchKey::Header(HeaderField::From, "BOB".into()))),
        [b]
    );
    assert_eq!(
        only(F::Key(SearchKey::Header(HeaderField::To, "alice".into()))),
        [d, b]
    );
    assert_eq!(
        only(F::Key(SearchKey::Header(
            HeaderField::Subject,
            "budget".into()
        ))),
        [d, c]
    );
    assert_eq!(only(F::AllInThreadHaveKeyword("\\Seen".into())), [c]);
    assert_eq!(only(F::SomeInThreadHaveKeyword("\\Seen".into())), [c, b, a]);
    assert_eq!(only(F::NoneInThreadHaveKeyword("\\Seen".into())), [d]);
    assert_eq!(only(F::Not(vec![F::InMailbox(inbox)])), [d, c]);
    assert_eq!(
        only(F::Or(vec![
            F::Key(SearchKey::Header(HeaderField::Subject, "budget".into())),
            F::Key(SearchKey::Flag("$Work".into())),
        ])),
        [d, c, b]
    );
    assert_eq!(
        only(F::And(vec![
            F::InMailbox(work),
            F::Key(SearchKey::Flag("\\Flagged".into())),
        ])),
        [c]
    );

    // Sorts, ties broken by the default order.
    assert_eq!(query(None, vec![by(P::ReceivedAt, true)]), [a, b, c, d]);
    assert_eq!(query(None, vec![by(P::Size, false)])[0], b);
    assert_eq!(query(None, vec![by(P::From, true)]), [a, b, c, d]);
    assert_eq!(query(None, vec![by(P::From, false)]), [d, c, b, a]);
    assert_eq!(query(None, vec![by(P::To, true)]), [d, b, a, c]);
    assert_eq!(
        query(None, vec![by(P::Subject, true), by(P::ReceivedAt, true)]),
        [c, d, a, b]
    );
    assert_eq!(
        query(None, vec![by(P::HasKeyword("\\Seen".into()), false)]),
        [c, a, d, b]
    );
    assert_eq!(
        query(
            None,
            vec![by(P::SomeInThreadHaveKeyword("\\Seen".into()), true)]
        ),
        [d, c, b, a]
    );

    // Collapsed threads: B stands for A's thread (it comes first).
    let collapsed = mail
        .query_emails(&EmailQuery {
            collapse_threads: true,
            ..EmailQuery::default()
        })
        .unwrap();
    assert_eq!((collapsed.ids, collapsed.total), (vec![d, c, b], 3));
    assert_eq!(
        mail.thread_members(mail.email_by_id(a).unwrap().thread)
            .unwrap(),
        [a, b]
    );
    assert_eq!(
        mail.thread_members(mail.email_by_id(d).unwrap().thread)
            .unwrap(),
        [d]
    );

    // Windows: position, negative position, beyond the end, anchor.
    let window = |position: i64, anchor: Option<EmailId>, offset: i64, limit: Option<usize>| {
        mail.query_emails(&EmailQuery {
            position,
            anchor,
            anchor_offset: offset,
            limit,
            ..EmailQuery::default()
        })
    };
    let w = window(1, None, 0, Some(2)).unwrap();
    assert_eq!((w.ids, w.position, w.total), (vec![c, b], 1, 4));
    assert_eq!(w.modseq, mail.modseq());
    let w = window(-1, None, 0, None).unwrap();
    assert_eq!((w.ids, w.position), (vec![a], 3));
    let w = window(-10, None, 0, Some(1)).unwrap();
    assert_eq!((w.ids, w.position), (vec![d], 0));
    let w = window(10, None, 0, None).unwrap();
    assert_eq!((w.ids.len(), w.position, w.total), (0, 4, 4));
    let w = window(0, Some(b), -1, None).unwrap();
    assert_eq!((w.ids, w.position), (vec![c, b, a], 1));
    assert!(matches!(
        window(0, Some(EmailId::from_bytes([1; 16])), 0, None),
        Err(Error::NoSuchMessage { .. })
    ));
    // UIDs and sequence numbers name messages of a mailbox, not emails.
    for key in [
        SearchKey::Uid(vec![(1, 2)]),
        SearchKey::Not(Box::new(SearchKey::Sequence(vec![(1, 1)]))),
    ] {
        let refused = mail.query_emails(&EmailQuery {
            filter: Some(F::Or(vec![F::Key(key)])),
            ..EmailQuery::default()
        });
        assert!(
            matches!(refused, Err(Error::InvalidArgument(_))),
            "{refused:?}"
        );
    }
}

/// Keywords the query compares are the email's (union of its copies, `\Deleted` aside):
/// a flag set on one copy by IMAP makes the email match.
#[tokio::test]
async fn item_04_email_query_sees_keywords_per_email() {
    let Corpus {
        mut mail,
        inbox,
        work,
        ids,
        ..
    } = corpus().await;
    let b = ids[1];
    let work_uid = mail
        .view(work)
        .unwrap()
        .messages
        .iter()
        .find(|m| m.email == b)
        .unwrap()
        .uid;
    mail.store_flags(
        work,
        &[work_uid],
        FlagChange::Add(flags(&["\\Answered", "\\Deleted"])),
        None,
    )
    .await
    .unwrap();
    let found = |key: SearchKey| {
        mail.query_emails(&EmailQuery {
            filter: Some(EmailFilter::Key(key)),
            ..EmailQuery::default()
        })
        .unwrap()
        .ids
    };
    assert_eq!(found(SearchKey::Flag("\\Answered".into())), [b]);
    assert!(found(SearchKey::Flag("\\Deleted".into())).is_empty());
    assert!(mail
        .view(inbox)
        .unwrap()
        .messages
        .iter()
        .all(|m| !m.flags.contains(Flags::ANSWERED)));
}
