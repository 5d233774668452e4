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
    let query = async |filter: Option<EmailFilter>, sort: Vec<EmailSort>| {
        mail.query_emails(&EmailQuery {
            filter,
            sort,
            ..EmailQuery::default()
        })
        .await
        .unwrap()
        .ids
    };
    let only = async |f: EmailFilter| query(Some(f), Vec::new()).await;
    let by = |property: EmailSortProperty, ascending: bool| EmailSort {
        property,
        ascending,
    };
    use EmailFilter as F;
    use EmailSortProperty as P;

    // Filters (results newest first: the default order).
    assert_eq!(query(None, Vec::new()).await, [d, c, b, a]);
    assert_eq!(only(F::InMailbox(inbox)).await, [b, a]);
    assert_eq!(only(F::InMailboxOtherThan(vec![inbox])).await, [d, c, b]);
    assert_eq!(only(F::InMailboxOtherThan(vec![inbox, work])).await, [d]);
    assert_eq!(only(F::ReceivedBefore(3 * DAY)).await, [b, a]);
    assert_eq!(only(F::ReceivedAfter(3 * DAY)).await, [d, c]);
    assert_eq!(only(F::MinSize(sizes[1])).await, [b]);
    assert_eq!(only(F::MaxSize(sizes[1])).await, [d, c, a]);
    assert_eq!(only(F::MinSize(0)).await.len(), 4);
    assert_eq!(only(F::Key(SearchKey::Flag("\\Seen".into()))).await, [c, a]);
    assert_eq!(
        only(F::Key(SearchKey::NoFlag("\\seen".into()))).await,
        [d, b]
    );
    assert_eq!(only(F::Key(SearchKey::Flag("$work".into()))).await, [b]);
    assert_eq!(
        only(F::Key(SearchKey::Header(HeaderField::From, "BOB".into()))).await,
        [b]
    );
    assert_eq!(
        only(F::Key(SearchKey::Header(HeaderField::To, "alice".into()))).await,
        [d, b]
    );
    assert_eq!(
        only(F::Key(SearchKey::Header(
            HeaderField::Subject,
            "budget".into()
        )))
        .await,
        [d, c]
    );
    assert_eq!(only(F::AllInThreadHaveKeyword("\\Seen".into())).await, [c]);
    assert_eq!(
        only(F::SomeInThreadHaveKeyword("\\Seen".into())).await,
        [c, b, a]
    );
    assert_eq!(only(F::NoneInThreadHaveKeyword("\\Seen".into())).await, [d]);
    assert_eq!(only(F::Not(vec![F::InMailbox(inbox)])).await, [d, c]);
    assert_eq!(
        only(F::Or(vec![
            F::Key(SearchKey::Header(HeaderField::Subject, "budget".into())),
            F::Key(SearchKey::Flag("$Work".into())),
        ]))
        .await,
        [d, c, b]
    );
    assert_eq!(
        only(F::And(vec![
            F::InMailbox(work),
            F::Key(SearchKey::Flag("\\Flagged".into())),
        ]))
        .await,
        [c]
    );

    // Sorts, ties broken by the default order.
    assert_eq!(
        query(None, vec![by(P::ReceivedAt, true)]).await,
        [a, b, c, d]
    );
    assert_eq!(query(None, vec![by(P::Size, false)]).await[0], b);
    assert_eq!(query(None, vec![by(P::From, true)]).await, [a, b, c, d]);
    assert_eq!(query(None, vec![by(P::From, false)]).await, [d, c, b, a]);
    assert_eq!(query(None, vec![by(P::To, true)]).await, [d, b, a, c]);
    assert_eq!(
        query(None, vec![by(P::Subject, true), by(P::ReceivedAt, true)]).await,
        [c, d, a, b]
    );
    assert_eq!(
        query(None, vec![by(P::HasKeyword("\\Seen".into()), false)]).await,
        [c, a, d, b]
    );
    assert_eq!(
        query(
            None,
            vec![by(P::SomeInThreadHaveKeyword("\\Seen".into()), true)]
        )
        .await,
        [d, c, b, a]
    );

    // Collapsed threads: B stands for A's thread (it comes first).
    let collapsed = mail
        .query_emails(&EmailQuery {
            collapse_threads: true,
            ..EmailQuery::default()
        })
        .await
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
    let window =
        async |position: i64, anchor: Option<EmailId>, offset: i64, limit: Option<usize>| {
            mail.query_emails(&EmailQuery {
                position,
                anchor,
                anchor_offset: offset,
                limit,
                ..EmailQuery::default()
            })
            .await
        };
    let w = window(1, None, 0, Some(2)).await.unwrap();
    assert_eq!((w.ids, w.position, w.total), (vec![c, b], 1, 4));
    assert_eq!(w.modseq, mail.modseq());
    let w = window(-1, None, 0, None).await.unwrap();
    assert_eq!((w.ids, w.position), (vec![a], 3));
    let w = window(-10, None, 0, Some(1)).await.unwrap();
    assert_eq!((w.ids, w.position), (vec![d], 0));
    let w = window(10, None, 0, None).await.unwrap();
    assert_eq!((w.ids.len(), w.position, w.total), (0, 4, 4));
    let w = window(0, Some(b), -1, None).await.unwrap();
    assert_eq!((w.ids, w.position), (vec![c, b, a], 1));
    assert!(matches!(
        window(0, Some(EmailId::from_bytes([1; 16])), 0, None).await,
        Err(Error::NoSuchMessage { .. })
    ));
    // UIDs and sequence numbers name messages of a mailbox, not emails.
    for key in [
        SearchKey::Uid(vec![(1, 2)]),
        SearchKey::Not(Box::new(SearchKey::Sequence(vec![(1, 1)]))),
    ] {
        let refused = mail
            .query_emails(&EmailQuery {
                filter: Some(F::Or(vec![F::Key(key)])),
                ..EmailQuery::default()
            })
            .await;
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
    let found = async |key: SearchKey| {
        mail.query_emails(&EmailQuery {
            filter: Some(EmailFilter::Key(key)),
            ..EmailQuery::default()
        })
        .await
        .unwrap()
        .ids
    };
    assert_eq!(found(SearchKey::Flag("\\Answered".into())).await, [b]);
    assert!(found(SearchKey::Flag("\\Deleted".into())).await.is_empty());
    assert!(mail
        .view(inbox)
        .unwrap()
        .messages
        .iter()
        .all(|m| !m.flags.contains(Flags::ANSWERED)));
}

// ------------------------------------------------ text conditions (issue 14)

/// `text`, `body` and `header` on the four emails: `text` sees the header (a subject
/// word, an address), `body` does not; `header` with an empty value is the presence of
/// the field, any field (`In-Reply-To` is no `Key(Header)` field of JMAP's).
#[tokio::test]
async fn item_14_email_query_text_conditions() {
    let Corpus {
        mail, inbox, ids, ..
    } = corpus().await;
    let [a, b, c, d] = ids;
    use EmailFilter as F;
    let only = async |f: EmailFilter| {
        mail.query_emails(&EmailQuery {
            filter: Some(f),
            ..EmailQuery::default()
        })
        .await
        .unwrap()
        .ids
    };
    assert_eq!(only(F::Text("NOON".into())).await, [a]);
    assert_eq!(only(F::Body("noon".into())).await, [a]);
    assert_eq!(only(F::Text("lunch".into())).await, [b, a]);
    assert!(only(F::Body("lunch".into())).await.is_empty());
    assert_eq!(only(F::Text("zed@example".into())).await, [c]);
    assert_eq!(only(F::Body("yes yes".into())).await, [b]);
    assert_eq!(
        only(F::Header("in-reply-to".into(), String::new())).await,
        [b]
    );
    assert_eq!(
        only(F::Header("Message-ID".into(), "LUNCH@".into())).await,
        [a]
    );
    assert!(only(F::Header("Subject".into(), "noon".into()))
        .await
        .is_empty());
    assert_eq!(only(F::Body(String::new())).await, [d, c, b, a]);
    // Inside AND/OR/NOT, beside metadata, the same condition twice.
    assert_eq!(
        only(F::And(vec![
            F::Text("lunch".into()),
            F::Not(vec![F::InMailbox(inbox), F::Body("x".into())]),
        ]))
        .await,
        Vec::<EmailId>::new()
    );
    assert_eq!(
        only(F::Or(vec![
            F::Body("see".into()),
            F::And(vec![F::Text("lunch".into()), F::Text("noon".into())]),
            F::Not(vec![F::Text("example".into())]),
        ]))
        .await,
        [c, a]
    );
    assert_eq!(
        only(F::Or(vec![F::Body("x".into()), F::Text("x".into())])).await,
        [d, c, b, a]
    );
    assert_eq!(
        only(F::And(vec![
            F::Not(vec![F::Body("x".into())]),
            F::Text("x".into())
        ]))
        .await,
        [c, b, a]
    );
}

/// A message of `text` plain words in its body, for the oracle test's extra mail.
fn plain(from: &str, subject: &str, body: &str) -> Vec<u8> {
    format!("From: {from}\r\nTo: team@example.org\r\nSubject: {subject}\r\n\r\n{body}\r\n")
        .into_bytes()
}

/// The needles of the oracle test: from the folded streams of some of `raws`, a word of
/// the header, of the body and of the part headers, a word's middle, a non-ASCII word;
/// plus the empty string, an absent string and case variants.
fn needles(raws: &[Vec<u8>]) -> Vec<String> {
    use mailvault::mail::text::extract::extract_message;
    let mut out = BTreeSet::new();
    for (i, raw) in raws.iter().enumerate().step_by(5) {
        let text = extract_message(raw, 64 << 20);
        for (n, stream) in [&text.header, &text.body, &text.mime]
            .into_iter()
            .enumerate()
        {
            let words: Vec<&str> = stream
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| w.chars().count() >= 3)
                .collect();
            if words.is_empty() {
                continue;
            }
            let w = words[(i * 7 + n * 5) % words.len()];
            out.insert(w.to_owned());
            let chars: Vec<char> = w.chars().collect();
            if chars.len() >= 5 {
                out.insert(chars[1..chars.len() - 1].iter().collect());
            }
            if let Some(w) = words.iter().find(|w| !w.is_ascii()) {
                out.insert((*w).to_owned());
            }
        }
    }
    let mut out: Vec<String> = out.into_iter().collect();
    let upper: Vec<String> = out.iter().step_by(7).map(|n| n.to_uppercase()).collect();
    out.extend(upper);
    out.extend(
        ["", "zzqqxxnotthere", "quarterly", "ünïcode", "the "]
            .into_iter()
            .map(str::to_owned),
    );
    out
}

/// The brute-force answer of `filter` for one email: its decrypted body scanned by the
/// text oracle, its metadata compared directly (what the test set, not what the index
/// holds).
struct Known {
    raw: Vec<u8>,
    size: u64,
    seen: bool,
    work: bool,
}

fn oracle(filter: &EmailFilter, email: &Known, work: MailboxId) -> bool {
    use mailvault::mail::text::oracle::{matches, TextKey};
    use EmailFilter as F;
    let text = |key: TextKey| matches(&email.raw, &key, 64 << 20);
    match filter {
        F::Text(s) => text(TextKey::Text(s.clone())),
        F::Body(s) => text(TextKey::Body(s.clone())),
        F::Header(name, s) => text(TextKey::Header(name.clone(), s.clone())),
        F::MinSize(n) => email.size >= *n,
        F::MaxSize(n) => email.size < *n,
        F::InMailbox(m) => *m != work || email.work,
        F::Key(SearchKey::Flag(f)) if f == "\\Seen" => email.seen,
        F::And(list) => list.iter().all(|f| oracle(f, email, work)),
        F::Or(list) => list.iter().any(|f| oracle(f, email, work)),
        F::Not(list) => !list.iter().any(|f| oracle(f, email, work)),
        other => unreachable!("not in the test: {other:?}"),
    }
}

/// The filters of the oracle test: each needle as `text`, `body` and (some) `header`,
/// alone and combined by AND/OR/NOT with each other and with metadata conditions
/// (mailbox, keyword, size), `text` and `body` of one needle in one filter.
fn filters(needles: &[String], work: MailboxId, median_size: u64) -> Vec<EmailFilter> {
    use EmailFilter as F;
    let seen = || F::Key(SearchKey::Flag("\\Seen".into()));
    let mut out = Vec::new();
    for (i, n) in needles.iter().enumerate() {
        let m = &needles[(i * 13 + 5) % needles.len()];
        out.push(F::Text(n.clone()));
        out.push(F::Body(n.clone()));
        if i % 3 == 0 {
            let field = ["Subject", "From", "Content-Type", "X-Mailer"][i / 3 % 4];
            out.push(F::Header(field.into(), n.clone()));
            // Two fields, one value: one must not answer for the other.
            out.push(F::Or(vec![
                F::Header("From".into(), n.clone()),
                F::Not(vec![F::Header("Subject".into(), n.clone())]),
            ]));
        }
        match i % 5 {
            0 => out.push(F::And(vec![F::Text(n.clone()), F::MinSize(median_size)])),
            1 => out.push(F::Or(vec![F::Body(n.clone()), seen()])),
            2 => out.push(F::Not(vec![F::Body(n.clone())])),
            3 => out.push(F::And(vec![
                F::Not(vec![F::Text(n.clone())]),
                F::InMailbox(work),
            ])),
            _ => out.push(F::Or(vec![
                F::And(vec![F::Body(n.clone()), F::Body(m.clone())]),
                F::Not(vec![F::Text(m.clone()), seen()]),
            ])),
        }
        // `text` and `body` of one needle in one filter: one must not answer for the
        // other.
        out.push(F::And(vec![
            F::Text(n.clone()),
            F::Not(vec![F::Body(n.clone())]),
        ]));
        out.push(F::Or(vec![
            F::And(vec![F::Body(n.clone()), F::MaxSize(median_size)]),
            F::And(vec![
                F::Text(n.clone()),
                F::InMailbox(work),
                F::Text(m.clone()),
            ]),
        ]));
    }
    for field in ["X-Mailer", "Content-Type", "In-Reply-To", "X-Absent-Field"] {
        out.push(F::Header(field.into(), String::new()));
    }
    out
}

/// Over the real-mail corpus (and a few plain messages), every text filter, alone and
/// inside AND/OR/NOT with metadata conditions, answers what a brute-force oracle does
/// (each body decrypted and scanned by `mail::text::oracle`, the metadata compared
/// directly): on the first queries (the index built by the first), on a fresh handle
/// with the index complete and its cache cold, and with the index covering half the mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_14_email_query_text_filters_equal_the_oracle() {
    let mut raws: Vec<Vec<u8>> = super::mail::corpus().into_iter().map(|(_, r)| r).collect();
    assert!(raws.len() >= 100, "corpus present: {}", raws.len());
    raws.push(plain(
        "Quarterly Bot <bot@example.org>",
        "Quarterly numbers",
        "nothing to see",
    ));
    raws.push(plain(
        "ann@example.org",
        "lunch",
        "the quarterly ünïcode report",
    ));
    let setup = MailSetup::new(super::memory(), CommitMode::CompareAndSwap);
    let mut mail = setup.open().await;
    let emails = super::search::append_all(&mut mail, raws.iter().map(Vec::as_slice)).await;
    // Metadata: every third email also in Work, every other one \Seen.
    let inbox = mail.mailbox_by_name(INBOX).unwrap().id;
    let work = mail.create_mailbox("Work", None).await.unwrap().id;
    let uids: Vec<u32> = mail
        .view(inbox)
        .unwrap()
        .messages
        .iter()
        .map(|m| m.uid)
        .collect();
    let in_work: Vec<u32> = uids.iter().copied().step_by(3).collect();
    let seen: Vec<u32> = uids.iter().copied().step_by(2).collect();
    mail.copy(inbox, &in_work, work).await.unwrap();
    mail.store_flags(inbox, &seen, FlagChange::Add(flags(&["\\Seen"])), None)
        .await
        .unwrap();
    // What the oracle knows, each body decrypted.
    let mut known = Vec::new();
    for (i, email) in emails.iter().enumerate() {
        let record = mail.email_by_id(*email).unwrap();
        let raw = mail.read(&record).await.unwrap().to_vec();
        assert_eq!(raw, raws[i]);
        known.push(Known {
            raw,
            size: record.size,
            seen: i % 2 == 0,
            work: i % 3 == 0,
        });
    }
    let mut sizes: Vec<u64> = known.iter().map(|k| k.size).collect();
    sizes.sort_unstable();
    let filters = filters(&needles(&raws), work, sizes[sizes.len() / 2]);
    assert!(filters.len() > 300, "{} filters", filters.len());
    let want: Vec<BTreeSet<EmailId>> = filters
        .iter()
        .map(|f| {
            emails
                .iter()
                .zip(&known)
                .filter(|(_, k)| oracle(f, k, work))
                .map(|(e, _)| *e)
                .collect()
        })
        .collect();
    // The filters are not trivial: many match some but not all, and `text` answers
    // differently from `body` for some needles.
    let partial = want
        .iter()
        .filter(|w| !w.is_empty() && w.len() < emails.len())
        .count();
    assert!(
        partial * 2 >= filters.len(),
        "{partial} of {} partial",
        filters.len()
    );
    let differ = filters
        .iter()
        .zip(&want)
        .zip(filters.iter().zip(&want).skip(1))
        .filter(|((f, w), (g, v))| {
            matches!((f, g), (EmailFilter::Text(a), EmailFilter::Body(b)) if a == b) && w != v
        })
        .count();
    assert!(differ >= 10, "text and body differ for {differ} needles");

    let check = async |what: &str, mail: &Mailstore| {
        let mut wrong = Vec::new();
        for (filter, want) in filters.iter().zip(&want) {
            let got = mail
                .query_emails(&EmailQuery {
                    filter: Some(filter.clone()),
                    ..EmailQuery::default()
                })
                .await
                .unwrap();
            let ids: BTreeSet<EmailId> = got.ids.iter().copied().collect();
            assert_eq!(got.total, got.ids.len());
            if ids != *want {
                wrong.push(format!(
                    "{filter:?}: {} extra, {} missing",
                    ids.difference(want).count(),
                    want.difference(&ids).count()
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "{what}: {} differ: {wrong:#?}",
            wrong.len()
        );
    };
    check("first queries", &mail).await;
    // The first query indexed every email: nothing is left to index.
    assert_eq!(mail.index_texts(&emails, usize::MAX).await.unwrap(), 0);
    check("all indexed, cold cache", &setup.open().await).await;

    // Another account with the same mail, half of it indexed before the queries.
    let half = MailSetup::new(super::memory(), CommitMode::CompareAndSwap);
    let mut other = half.open().await;
    let other_emails = super::search::append_all(&mut other, raws.iter().map(Vec::as_slice)).await;
    let n = other
        .index_texts(&other_emails, other_emails.len() / 2)
        .await
        .unwrap();
    assert!(n <= other_emails.len() / 2);
    let first = |f: &EmailFilter| EmailQuery {
        filter: Some(f.clone()),
        ..EmailQuery::default()
    };
    for (filter, want) in filters
        .iter()
        .zip(&want)
        .filter(|(f, _)| matches!(f, EmailFilter::Text(_) | EmailFilter::Body(_)))
    {
        // Email ids differ between the accounts: compare positions in append order.
        let got = other.query_emails(&first(filter)).await.unwrap().ids;
        let got: BTreeSet<usize> = got
            .iter()
            .map(|e| other_emails.iter().position(|o| o == e).unwrap())
            .collect();
        let want: BTreeSet<usize> = want
            .iter()
            .map(|e| emails.iter().position(|o| o == e).unwrap())
            .collect();
        assert_eq!(got, want, "half indexed: {filter:?}");
    }
}
