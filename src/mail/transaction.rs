//! Email-centric, atomic operations (issue 12, item 6): what JMAP `Email/set` and IMAP
//! `MULTIAPPEND` need. A [`Transaction`] lists appends, keyword changes, mailbox
//! memberships and destroys of emails (by EMAILID, across mailboxes); [`Mailstore::commit`]
//! applies them in **one** index commit: all of them or none. Bodies are uploaded first;
//! on a compare-and-swap conflict the records are planned again on the newer state (UIDs,
//! quota, the conditional state are checked again), as for every single operation.
//!
//! # Keywords: one set per email, flags per mailbox copy
//!
//! IMAP keeps flags per message, that is per copy of an email in a mailbox; JMAP keeps
//! one keyword set per email. Both are served from the same message records:
//! - the **keywords of an email** ([`Mailstore::keywords`]) are the union of the flags
//!   of its copies, without `\Deleted`: JMAP has no `\Deleted` keyword (RFC 8621 §4.1.1),
//!   it is IMAP's per-mailbox mark for expunge;
//! - a **keyword change** ([`Transaction::change_keywords`], JMAP `Email/set` keywords)
//!   applies to every copy, and leaves each copy's `\Deleted` as it was (a change that
//!   names `\Deleted` does not touch it). After a [`FlagChange::Replace`] every copy has
//!   the same keywords; after an add or a remove, every copy has (or lacks) the keyword;
//! - an IMAP `STORE` ([`Mailstore::store_flags`]) changes one copy: the email then has a
//!   keyword when any copy has it (a message read in one mailbox reads as `$seen`);
//! - a copy added by [`Transaction::add_to_mailbox`] gets the email's keywords; one
//!   added by IMAP `COPY` gets its source's flags.
//!
//! A JMAP server maps `$seen`, `$flagged`, `$answered` and `$draft` to the system flags
//! `\Seen`, `\Flagged`, `\Answered` and `\Draft` (RFC 8621 §4.1.1); other keywords are
//! stored as they are.
//!
//! # Conditional writes
//!
//! [`Transaction::if_in_state`] (JMAP `ifInState`) makes the commit fail with
//! [`Error::StateMismatch`] when the account's modseq is not the one given: checked inside
//! the commit, on the state the commit is made on: no other commit can come between the
//! check and the write (compare-and-swap of the store, or of the directory's mark on a
//! backend without it, `docs/design.md` §9); a write by another server not loaded yet
//! makes the commit reload and fail the check. Only a collection of the older
//! writer-unique scheme, whose concurrent heads merge, cannot refuse a concurrent write.

use super::text::extract::ExtractedText;
use super::*;

/// One operation of a [`Transaction`].
#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Keywords(EmailId, FlagChange),
    AddTo(EmailId, MailboxId),
    RemoveFrom(EmailId, MailboxId),
    Destroy(EmailId),
}

/// A message to append, as given to [`Transaction::append`].
#[derive(Debug, Clone)]
struct NewEmail {
    mailboxes: Vec<MailboxId>,
    body: Bytes,
    options: AppendOptions,
}

/// Several changes to an account's emails, committed at once by [`Mailstore::commit`] or
/// [`SharedAccount::commit`](crate::engine::SharedAccount::commit) (see the
/// [module documentation](self)). Operations apply in the order they were added; those
/// that name an email by its id name one that exists before the transaction (an email
/// appended by the transaction gets its keywords and mailboxes in its
/// [`append`](Self::append)).
#[derive(Debug, Clone, Default)]
pub struct Transaction {
    ops: Vec<Op>,
    appends: Vec<NewEmail>,
    if_in_state: Option<u64>,
}

impl Transaction {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Commits only if the account's modseq is `modseq` when the commit is made (JMAP
    /// `ifInState`); otherwise [`Mailstore::commit`] fails with
    /// [`Error::StateMismatch`] and nothing is written.
    pub fn if_in_state(&mut self, modseq: u64) -> &mut Self {
        self.if_in_state = Some(modseq);
        self
    }

    /// Appends a message to one or more mailboxes (one email, a message in each; IMAP
    /// `MULTIAPPEND` adds one append per message, JMAP `Email/import` one per email).
    /// `options.flags` are its keywords in every mailbox. Returns the index of its
    /// [`CreatedEmail`] in [`Committed::created`].
    pub fn append(
        &mut self,
        mailboxes: impl IntoIterator<Item = MailboxId>,
        body: impl Into<Bytes>,
        options: AppendOptions,
    ) -> usize {
        let mut list: Vec<MailboxId> = Vec::new();
        for mailbox in mailboxes {
            if !list.contains(&mailbox) {
                list.push(mailbox);
            }
        }
        self.appends.push(NewEmail {
            mailboxes: list,
            body: body.into(),
            options,
        });
        self.ops.push(Op::Append(self.appends.len() - 1));
        self.appends.len() - 1
    }

    /// Changes the keywords of an email, in every mailbox that shows it (see the
    /// [module documentation](self): `\Deleted` is never changed this way).
    pub fn change_keywords(&mut self, email: EmailId, change: FlagChange) -> &mut Self {
        self.ops.push(Op::Keywords(email, change));
        self
    }

    /// Adds an email to a mailbox (a new UID there, the email's keywords); nothing when it
    /// is there already.
    pub fn add_to_mailbox(&mut self, email: EmailId, mailbox: MailboxId) -> &mut Self {
        self.ops.push(Op::AddTo(email, mailbox));
        self
    }

    /// Removes an email from a mailbox (its UID there is expunged); nothing when it is not
    /// there. An email must stay in at least one mailbox: a transaction that leaves one in
    /// none without [`destroy`](Self::destroy)ing it fails with
    /// [`Error::InvalidArgument`].
    pub fn remove_from_mailbox(&mut self, email: EmailId, mailbox: MailboxId) -> &mut Self {
        self.ops.push(Op::RemoveFrom(email, mailbox));
        self
    }

    /// Destroys an email: removed from every mailbox, its body deleted once nothing shows
    /// it (JMAP `Email/set` destroy).
    pub fn destroy(&mut self, email: EmailId) -> &mut Self {
        self.ops.push(Op::Destroy(email));
        self
    }

    /// Whether the transaction does nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// An email a [`Transaction`] appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedEmail {
    /// Its EMAILID.
    pub email: EmailId,
    /// Its THREADID.
    pub thread: ThreadId,
    /// Its size in bytes.
    pub size: u64,
    /// Its message in each mailbox, in the order the mailboxes were given (IMAP
    /// `APPENDUID`).
    pub messages: Vec<Appended>,
}

/// What [`Mailstore::commit`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Committed {
    /// Modseq of the commit: the account's new state. When nothing changed, nothing was
    /// committed and this is the account's modseq as it was.
    pub modseq: u64,
    /// The emails appended, in the order of the appends.
    pub created: Vec<CreatedEmail>,
    /// Emails whose keywords or mailboxes changed, ascending.
    pub updated: Vec<EmailId>,
    /// Emails destroyed, ascending.
    pub destroyed: Vec<EmailId>,
}

/// A transaction whose bodies are uploaded, ready to commit.
pub(crate) struct Prepared {
    ops: Vec<Op>,
    uploads: Vec<Upload>,
    /// One instance per `AddTo` operation, in order.
    instances: Vec<Instance>,
    if_in_state: Option<u64>,
    quota: QuotaCheck,
}

/// The body of an append, uploaded and analysed.
struct Upload {
    mailboxes: Vec<MailboxId>,
    pin: crate::format::pin::BlobPin,
    analysis: EmailAnalysis,
    email: EmailId,
    thread: ThreadId,
    instances: Vec<Instance>,
    internal_date: i64,
    provenance: Provenance,
    flags: Flags,
    /// The searchable text of the message, for the text index (`MailConfig::index_appends`).
    text: Option<ExtractedText>,
}

/// Uploads and analyses the bodies of a transaction's appends.
pub(crate) struct Uploader {
    blobs: AccountBlobs,
    rng: RandomSource,
    max_parse_len: usize,
    index_appends: bool,
}

impl Uploader {
    /// Uploads every append's body (deleting those uploaded when one fails).
    pub(crate) async fn upload_all(self, tx: Transaction, quota: QuotaCheck) -> Result<Prepared> {
        let mut uploads: Vec<Upload> = Vec::with_capacity(tx.appends.len());
        for append in tx.appends {
            match self.upload(&append.body).await {
                Ok((pin, analysis, text)) => uploads.push(Upload {
                    text,
                    instances: append.mailboxes.iter().map(|_| self.rng.array()).collect(),
                    mailboxes: append.mailboxes,
                    pin,
                    analysis,
                    email: EmailId::random(&self.rng),
                    thread: ThreadId::random(&self.rng),
                    internal_date: append
                        .options
                        .internal_date
                        .unwrap_or(crate::unix_now() as i64),
                    provenance: append.options.provenance.unwrap_or(Provenance::KeyHolder),
                    flags: append.options.flags,
                }),
                Err(e) => {
                    for upload in &uploads {
                        let _ = self.blobs.delete(&upload.pin.id).await;
                    }
                    return Err(e);
                }
            }
        }
        let adds = tx.ops.iter().filter(|o| matches!(o, Op::AddTo(..))).count();
        Ok(Prepared {
            ops: tx.ops,
            uploads,
            instances: (0..adds).map(|_| self.rng.array()).collect(),
            if_in_state: tx.if_in_state,
            quota,
        })
    }

    /// Uploads one body and analyses it (off the executor thread), extracting its text
    /// from the same parse when appends are indexed.
    async fn upload(
        &self,
        body: &Bytes,
    ) -> Result<(
        crate::format::pin::BlobPin,
        EmailAnalysis,
        Option<ExtractedText>,
    )> {
        let mut writer = self.blobs.writer(BlobKind::Message);
        let mut parse = super::ParseBuffer::new(self.max_parse_len);
        if let Err(e) = writer.write_bytes(body.clone()).await {
            let _ = writer.abort().await;
            return Err(e);
        }
        parse.push(body);
        let pin = writer.finish().await?;
        let (buffer, too_large) = parse.finish();
        match mime::analyze_blocking(buffer, too_large, self.index_appends).await {
            Ok((analysis, text)) => Ok((pin, analysis, text)),
            Err(e) => {
                let _ = self.blobs.delete(&pin.id).await;
                Err(e)
            }
        }
    }
}

/// One copy of an email (a message in a mailbox) as the transaction plans it.
#[derive(Debug, Clone)]
struct Copy {
    mailbox: MailboxId,
    uid: u32,
    instance: Instance,
    record: MessageRecord,
    /// Whether the copy exists in the state (false: added by this transaction).
    existing: bool,
}

/// An existing email the transaction touches: its copies before and as planned.
struct Working {
    size: u64,
    /// Its keywords as planned (what a copy added by the transaction gets).
    keywords: Flags,
    before: Vec<Copy>,
    copies: Vec<Copy>,
    destroyed: bool,
}

/// The copies of `email` in the state `c` (`NoSuchMessage` when it has none), locating
/// each through its reference record and its mailbox's UIDs (`located`, built once per
/// mailbox and plan).
fn copies_of(
    c: &Collection,
    email: &EmailId,
    located: &mut HashMap<MailboxId, HashMap<Instance, u32>>,
) -> Result<Vec<Copy>> {
    let mut copies = Vec::new();
    for (k, v) in c.prefix(&keys::references_of(email)) {
        let instance: Instance = k
            .get(17..25)
            .and_then(|i| i.try_into().ok())
            .ok_or(Error::Tampered)?;
        let mailbox = MailboxId::from_bytes(v.try_into().map_err(|_| Error::Tampered)?);
        let uids = located.entry(mailbox).or_insert_with(|| {
            c.prefix(&keys::messages_of(&mailbox))
                .filter_map(|(k, _)| keys::parse_message(k))
                .map(|(_, uid, instance)| (instance, uid))
                .collect()
        });
        let uid = *uids.get(&instance).ok_or(Error::Tampered)?;
        let bytes = c
            .get(&keys::message(&mailbox, uid, &instance))
            .ok_or(Error::Tampered)?;
        copies.push(Copy {
            mailbox,
            uid,
            instance,
            record: MessageRecord::parse(bytes)?,
            existing: true,
        });
    }
    if copies.is_empty() {
        return Err(Error::NoSuchMessage {
            what: format!("email {email}"),
        });
    }
    Ok(copies)
}

/// The keywords of an email with these copies: the union of their flags, `\Deleted` aside.
pub(super) fn keywords_of<'a>(copies: impl IntoIterator<Item = &'a MessageRecord>) -> Flags {
    let deleted = deleted_flag();
    copies
        .into_iter()
        .fold(Flags::new(), |all, m| all.union(&m.flags))
        .difference(&deleted)
}

fn deleted_flag() -> Flags {
    Flags::from_names([Flags::DELETED]).expect("a system flag")
}

/// The next UID of `mailbox` in this plan (above those the plan gave already).
fn take_uid(
    c: &Collection,
    next: &mut HashMap<MailboxId, u32>,
    mailbox: &MailboxId,
) -> Result<u32> {
    let uid = match next.get(mailbox) {
        Some(&uid) => uid,
        None => uid_next(c, mailbox)?,
    };
    let after = uid
        .checked_add(1)
        .ok_or_else(|| Error::LimitReached("the UIDs of this mailbox are exhausted".into()))?;
    next.insert(*mailbox, after);
    Ok(uid)
}

impl Mailstore {
    /// The keywords of an email (JMAP `keywords`): the union of the flags of its copies,
    /// without `\Deleted` (see [the transaction module](crate::mail::Transaction) for how
    /// they relate to IMAP's flags per copy).
    ///
    /// # Errors
    /// [`Error::NoSuchMessage`] for an email no mailbox shows; [`Error::Tampered`].
    pub fn keywords(&self, email: EmailId) -> Result<Flags> {
        let copies = copies_of(&self.index, &email, &mut HashMap::new())?;
        Ok(keywords_of(copies.iter().map(|c| &c.record)))
    }

    /// The mailboxes that show an email (JMAP `mailboxIds`), ascending.
    ///
    /// # Errors
    /// [`Error::NoSuchMessage`] for an email no mailbox shows; [`Error::Tampered`].
    pub fn mailboxes_of(&self, email: EmailId) -> Result<Vec<MailboxId>> {
        let mut mailboxes = BTreeSet::new();
        for (_, v) in self.index.prefix(&keys::references_of(&email)) {
            mailboxes.insert(MailboxId::from_bytes(
                v.try_into().map_err(|_| Error::Tampered)?,
            ));
        }
        if mailboxes.is_empty() {
            return Err(Error::NoSuchMessage {
                what: format!("email {email}"),
            });
        }
        Ok(mailboxes.into_iter().collect())
    }

    /// Every email of the account (those a mailbox shows), ascending by id.
    ///
    /// # Errors
    /// [`Error::Tampered`] for a key that does not parse.
    pub fn emails(&self) -> Result<Vec<EmailId>> {
        let mut out: Vec<EmailId> = Vec::new();
        for (k, _) in self.index.prefix(&[keys::REFERENCE]) {
            let id = EmailId::from_bytes(keys::tagged_id(k).ok_or(Error::Tampered)?);
            if out.last() != Some(&id) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// The emails of a thread (JMAP `Thread/get` `emailIds`), by internal date then id;
    /// empty for a thread no email is in. Reads every email record of the account.
    ///
    /// # Errors
    /// [`Error::Tampered`] for a record that does not parse.
    pub fn thread_members(&self, thread: ThreadId) -> Result<Vec<EmailId>> {
        let mut members = Vec::new();
        for id in self.emails()? {
            if let Some(record) = email_record(&self.index, &id)? {
                if record.thread == thread {
                    members.push((record.internal_date, id));
                }
            }
        }
        members.sort();
        Ok(members.into_iter().map(|(_, id)| id).collect())
    }

    /// Applies a transaction in one commit: all of its operations or none (see the
    /// [transaction module](crate::mail::Transaction)). Bodies are uploaded before the
    /// commit and deleted again when it fails.
    ///
    /// # Errors
    /// [`Error::StateMismatch`] when [`Transaction::if_in_state`] does not hold;
    /// [`Error::NoSuchMailbox`], [`Error::NoSuchMessage`] for a mailbox or an email that
    /// is not there; [`Error::InvalidArgument`] for an append to no mailbox or an email
    /// left in none; [`Error::TooBig`], [`Error::OverQuota`], [`Error::LimitReached`];
    /// backend errors. Nothing is committed on any of them.
    #[tracing::instrument(level = "debug", skip_all, fields(account = %self.account(), requests = tracing::field::Empty, bytes_read = tracing::field::Empty, bytes_written = tracing::field::Empty, ops = tx.ops.len()))]
    pub async fn commit(&mut self, tx: Transaction) -> Result<Committed> {
        metered(async move {
            let prepared = self.prepare(tx).await?;
            self.commit_prepared(prepared).await
        })
        .await
    }

    /// The first half of [`commit`](Self::commit): checks what can be checked before the
    /// commit, uploads and analyses the bodies (needs no exclusive access).
    pub(crate) async fn prepare(&self, tx: Transaction) -> Result<Prepared> {
        let (quota, uploader) = self.check_transaction(&tx).await?;
        uploader.upload_all(tx, quota).await
    }

    /// What [`prepare`](Self::prepare) checks before any upload, and the uploader of the
    /// bodies, which needs no access to the handle: a shared handle uploads without
    /// holding its lock.
    pub(crate) async fn check_transaction(
        &self,
        tx: &Transaction,
    ) -> Result<(QuotaCheck, Uploader)> {
        let quota = self.quota_check().await?;
        let adding: u64 = tx
            .appends
            .iter()
            .map(|a| (a.body.len() as u64).saturating_mul(a.mailboxes.len() as u64))
            .sum();
        check_quota(&self.index, quota, adding, &self.usage_memo)?;
        for append in &tx.appends {
            if append.mailboxes.is_empty() {
                return Err(Error::invalid("an append needs at least one mailbox"));
            }
            for mailbox in &append.mailboxes {
                require_mailbox(&self.index, mailbox)?;
            }
            if let Some(limit) = self
                .limits
                .message_size
                .filter(|l| append.body.len() as u64 > *l)
            {
                return Err(Error::TooBig { limit });
            }
        }
        Ok((
            quota,
            Uploader {
                blobs: self.blobs.clone(),
                rng: self.rng.clone(),
                max_parse_len: self.config.max_parse_len,
                index_appends: self.config.index_appends,
            },
        ))
    }

    async fn delete_uploads(&self, uploads: &[Upload]) {
        for upload in uploads {
            let _ = self.blobs.delete(&upload.pin.id).await;
        }
    }

    /// The second half of [`commit`](Self::commit): plans and commits the records (again
    /// on a newer state after a compare-and-swap conflict); deletes the uploaded bodies
    /// when nothing was committed because of an error.
    pub(crate) async fn commit_prepared(&mut self, mut prepared: Prepared) -> Result<Committed> {
        let mode = self.index.mode();
        let memo = self.usage_memo.clone();
        let outcome = self
            .write_with_info(|c, modseq| plan_transaction(c, modseq, &prepared, mode, &memo))
            .await;
        match outcome {
            Ok(((mut committed, released), info)) => {
                committed.modseq = reported_modseq(&info, committed.modseq);
                self.delete_bodies(released).await;
                // Every upload is an append of the commit.
                let texts = prepared
                    .uploads
                    .iter_mut()
                    .filter_map(|u| u.text.take().map(|text| (u.email, text)))
                    .collect();
                self.buffer_texts(texts).await;
                Ok(committed)
            }
            Err(e) => {
                // Nothing committed (a refusal, or a backend failure before the commit
                // was acknowledged: the bodies of a commit that did land are referenced
                // and must stay).
                if !e.is_transient() {
                    self.delete_uploads(&prepared.uploads).await;
                }
                Err(e)
            }
        }
    }
}

/// The records of a transaction on the state `c`, at `modseq`.
fn plan_transaction(
    c: &Collection,
    modseq: u64,
    tx: &Prepared,
    mode: CommitMode,
    memo: &UsageMemo,
) -> Result<(Plan, (Committed, Vec<EmailRecord>))> {
    if let Some(expected) = tx.if_in_state {
        let actual = c.generation();
        if actual != expected {
            return Err(Error::StateMismatch { expected, actual });
        }
    }
    let mut plan = Plan::new();
    let mut next_uid: HashMap<MailboxId, u32> = HashMap::new();
    let mut located: HashMap<MailboxId, HashMap<Instance, u32>> = HashMap::new();
    let mut touched: BTreeMap<EmailId, Working> = BTreeMap::new();
    let mut committed = Committed {
        modseq,
        ..Committed::default()
    };
    let mut added = 0u64;
    let mut removed = 0u64;
    let mut instances = tx.instances.iter();
    fn working<'a>(
        c: &Collection,
        touched: &'a mut BTreeMap<EmailId, Working>,
        located: &mut HashMap<MailboxId, HashMap<Instance, u32>>,
        email: &EmailId,
    ) -> Result<&'a mut Working> {
        if !touched.contains_key(email) {
            let before = copies_of(c, email, located)?;
            touched.insert(
                *email,
                Working {
                    size: before[0].record.size,
                    keywords: keywords_of(before.iter().map(|c| &c.record)),
                    copies: before.clone(),
                    before,
                    destroyed: false,
                },
            );
        }
        touched.get_mut(email).ok_or(Error::Tampered)
    }
    for op in &tx.ops {
        match op {
            Op::Append(i) => {
                let u = tx.uploads.get(*i).ok_or(Error::Tampered)?;
                let size = u.pin.len();
                let thread = join_thread(c, &u.analysis.envelope, u.thread, &mut plan.batch);
                let email = EmailRecord {
                    pin: u.pin,
                    internal_date: u.internal_date,
                    size,
                    thread,
                    provenance: u.provenance,
                    analyzed: true,
                    envelope: u.analysis.envelope.clone(),
                    parts: u.analysis.parts.clone(),
                    header_block: u.analysis.header_block.clone(),
                    preview: u.analysis.preview.clone(),
                    created_modseq: modseq,
                    stored_details: None,
                };
                plan.batch.put(keys::email(&u.email), email.to_bytes());
                let mut messages = Vec::new();
                for (mailbox, instance) in u.mailboxes.iter().zip(&u.instances) {
                    let record = require_mailbox(c, mailbox)?;
                    let uid = take_uid(c, &mut next_uid, mailbox)?;
                    let message = MessageRecord {
                        email: u.email,
                        modseq,
                        size,
                        flags: u.flags.clone(),
                    };
                    plan.add_message(mailbox, uid, instance, &message);
                    added = added.saturating_add(size);
                    messages.push(Appended {
                        uid_validity: record.uid_validity,
                        uid,
                        email: u.email,
                        thread,
                        modseq,
                    });
                }
                committed.created.push(CreatedEmail {
                    email: u.email,
                    thread,
                    size,
                    messages,
                });
            }
            Op::Keywords(email, change) => {
                let w = working(c, &mut touched, &mut located, email)?;
                let deleted = deleted_flag();
                w.keywords = change.apply(&w.keywords).difference(&deleted);
                for copy in &mut w.copies {
                    let changed = change.apply(&copy.record.flags).difference(&deleted);
                    copy.record.flags = if copy.record.flags.contains(Flags::DELETED) {
                        changed.union(&deleted)
                    } else {
                        changed
                    };
                }
            }
            Op::AddTo(email, mailbox) => {
                let instance = *instances.next().ok_or(Error::Tampered)?;
                require_mailbox(c, mailbox)?;
                let w = working(c, &mut touched, &mut located, email)?;
                if w.copies.iter().any(|copy| copy.mailbox == *mailbox) {
                    continue;
                }
                let uid = take_uid(c, &mut next_uid, mailbox)?;
                let flags = w.keywords.clone();
                w.copies.push(Copy {
                    mailbox: *mailbox,
                    uid,
                    instance,
                    record: MessageRecord {
                        email: *email,
                        modseq,
                        size: w.size,
                        flags,
                    },
                    existing: false,
                });
            }
            Op::RemoveFrom(email, mailbox) => {
                let w = working(c, &mut touched, &mut located, email)?;
                w.copies.retain(|copy| copy.mailbox != *mailbox);
            }
            Op::Destroy(email) => {
                let w = working(c, &mut touched, &mut located, email)?;
                w.copies.clear();
                w.destroyed = true;
            }
        }
    }
    for (email, w) in touched {
        if w.copies.is_empty() && !w.destroyed {
            return Err(Error::invalid(format!(
                "email {email} would be in no mailbox: destroy it instead"
            )));
        }
        let mut changed = false;
        for old in &w.before {
            let kept = w
                .copies
                .iter()
                .find(|copy| copy.existing && copy.instance == old.instance);
            match kept {
                None => {
                    plan.remove_message(&old.mailbox, old.uid, &old.instance, &email, modseq);
                    removed = removed.saturating_add(old.record.size);
                    changed = true;
                }
                Some(copy) if copy.record.flags != old.record.flags => {
                    let record = MessageRecord {
                        modseq,
                        ..copy.record.clone()
                    };
                    plan.batch.put(
                        keys::message(&old.mailbox, old.uid, &old.instance),
                        record.to_bytes(),
                    );
                    changed = true;
                }
                Some(_) => {}
            }
        }
        for copy in w.copies.iter().filter(|copy| !copy.existing) {
            plan.add_message(&copy.mailbox, copy.uid, &copy.instance, &copy.record);
            added = added.saturating_add(copy.record.size);
            changed = true;
        }
        if w.copies.is_empty() {
            committed.destroyed.push(email);
        } else if changed {
            committed.updated.push(email);
        }
    }
    check_quota(c, tx.quota, added.saturating_sub(removed), memo)?;
    let released = plan.release(c, mode);
    Ok((plan, (committed, released)))
}
