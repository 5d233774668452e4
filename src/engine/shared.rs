//! One handle per account per process, shared by every connection of that account
//! (issue 12, items 1 and 2).
//!
//! A server keeps an [`AccountRegistry`]; each connection that logs in gets the account's
//! [`SharedAccount`] from it (opened by the first, found by the others). The handle holds
//! the account's one [`Session`] and one [`Mailstore`]: the account is loaded once,
//! whatever the number of connections. Readers share the mail state
//! ([`read`](SharedAccount::read)); writes are serialized inside
//! ([`write`](SharedAccount::write)). One poller per handle looks, every
//! [`ShareConfig::poll_interval`], for what other processes did (index commits of other
//! servers, deliveries waiting for import), loads it, imports pending deliveries in the
//! order of their delivery numbers, and tells every subscriber
//! ([`subscribe`](SharedAccount::subscribe)) the account's new modseq. The import runs
//! in batches of [`ShareConfig::import_batch`] deliveries, one commit each, and holds the
//! handle's write access only for those commits (the envelopes are read, verified and
//! opened and the bodies checked without it): readers go on reading meanwhile, and
//! subscribers hear of each batch. A handle opened over many pending deliveries
//! (more than [`ShareConfig::import_at_open`]) is open at once with what was imported
//! before: a login is answered without waiting for the import, which the poller starts at
//! once; the client sees the deliveries arrive as new mail, in delivery order. The poller also
//! collects the account's garbage ([`Mailstore::collect_garbage`]: index segments and
//! manifests superseded by commits and compactions, bodies of expunged messages) at most
//! once per [`ShareConfig::gc_interval`], and only while something changed recently
//! enough that garbage may be left. When the last clone of the handle is dropped, its
//! poller stops and the registry forgets it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{watch, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::Session;
use crate::error::{Error, Result};
use crate::ids::{AccountId, MailboxId};
use crate::mail::{Committed, ImportReport, MailGcReport, MailboxView, Mailstore, Transaction};

/// How a [`SharedAccount`] follows other processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareConfig {
    /// How often the poller checks for changes made by other processes: one small request
    /// to the store (or one read of the directory's mark) and one read of the directory's
    /// delivery counter per interval, whatever the number of connections.
    pub poll_interval: Duration,
    /// Whether the poller imports deliveries as they arrive (a handle whose session holds
    /// the account's keys: the provider in the transparent flavor, the companion in the
    /// hardened one).
    pub import_deliveries: bool,
    /// Deliveries waiting (by the directory's delivery counter:
    /// [`Mailstore::deliveries_waiting`]) up to which [`SharedAccount::open`] imports them
    /// before it returns, so that a login after a few deliveries sees them at once. Above
    /// it the handle opens at once with what was imported before and its poller imports
    /// the waiting deliveries in the background, starting at once, a batch at a time
    /// ([`import_batch`](Self::import_batch)): readers are served meanwhile and
    /// subscribers see the deliveries arrive, in delivery order. `u64::MAX` (the
    /// default): open always imports everything first, so that a client sees every
    /// acknowledged delivery at once (what one-shot clients such as fetchmail, and every
    /// client's first view, expect); 0: never. A server that prefers answering a login
    /// after a large backlog at once sets a bound (the reference server's
    /// `import_at_open`). A companion's local directory does not see the provider's
    /// counter: its handle imports at open whatever is waiting.
    pub import_at_open: u64,
    /// The most deliveries one import commit adds (at most 512 in any case): the write
    /// access the poller takes for a commit, and how often subscribers hear of a large
    /// import's progress. Each commit has a fixed cost (a segment and a manifest written):
    /// 10 000 deliveries on a local directory took 2.5 s of commits in batches of 128
    /// against 1.0 s in batches of 512.
    pub import_batch: usize,
    /// How the poller finds that deliveries wait for import.
    pub pending: PendingCheck,
    /// How often, at most, the poller collects the account's garbage
    /// ([`SharedAccount::collect_garbage`] with [`gc_grace`](Self::gc_grace)); `None`:
    /// never (another process does the store's maintenance). A collection runs when this
    /// long has passed since the previous one (or since the handle opened) and the account
    /// changed (a commit of this process or of another) less than the grace period before
    /// the previous collection started, or after it: what a change leaves behind is
    /// collectable one grace period later, so a quiet account costs nothing. The interval
    /// runs across the handles of one [`AccountRegistry`]: a handle opened when the
    /// account was last collected longer ago (or never) collects at its first poll, so
    /// short sessions get their garbage collected too. A collection lists the account's
    /// index objects (one LIST) and holds the handle's write access while it runs.
    pub gc_interval: Option<Duration>,
    /// The grace period of those collections: a manifest superseded, a segment unlisted
    /// or a body released less than this long ago is kept, for the readers and writers
    /// of other processes that may still need it (§8.6 of docs/design.md). Raised to
    /// [`Mailstore::min_gc_grace`] (the index's `verify_after`) when shorter: a commit of
    /// another process that stalls longer checks its manifest before acknowledging it.
    pub gc_grace: Duration,
}

impl Default for ShareConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            import_deliveries: true,
            import_at_open: u64::MAX,
            import_batch: 256,
            pending: PendingCheck::DeliveryCounter,
            gc_interval: Some(Duration::from_secs(60)),
            gc_grace: Duration::from_secs(60),
        }
    }
}

/// How a [`SharedAccount`]'s poller finds deliveries waiting for import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingCheck {
    /// The directory's delivery counter against the highest number imported
    /// ([`Mailstore::deliveries_pending`]): one read of the trusted directory, no store
    /// request. For a handle whose directory is the one the deliverer raises (the
    /// provider's).
    DeliveryCounter,
    /// The counter as above, and also one LIST of the account's pending envelopes
    /// ([`Mailstore::envelopes_waiting`]): for a companion, whose local directory never
    /// sees the provider's counter. The store can withhold an envelope from a listing; the
    /// import still reports gaps in the numbers it sees (§12.4 of docs/design.md).
    ListEnvelopes,
}

struct State {
    session: Session,
    mail: Mailstore,
}

struct Inner {
    account: AccountId,
    config: ShareConfig,
    state: RwLock<State>,
    changes: watch::Sender<u64>,
    /// The last error the poller met (it goes on polling), for the operator.
    last_poll_error: Mutex<Option<String>>,
    /// Each mailbox's view as of a modseq, shared by the connections that select it.
    views: Mutex<HashMap<MailboxId, (u64, Arc<MailboxView>)>>,
    poller: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Serializes the imports of this handle (the poller's, [`SharedAccount::sync`]'s).
    importing: tokio::sync::Mutex<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(poller) = self
            .poller
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            poller.abort();
        }
    }
}

/// The mail of one account, shared by every connection of this process (see the
/// [module documentation](self)). Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct SharedAccount {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SharedAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedAccount")
            .field("account", &self.inner.account)
            .field("modseq", &*self.inner.changes.borrow())
            .finish_non_exhaustive()
    }
}

/// Shared read access to the account's mail (see [`SharedAccount::read`]).
pub type MailRead<'a> = tokio::sync::RwLockReadGuard<'a, Mailstore>;

/// Exclusive access to the account's mail for a write (see [`SharedAccount::write`]);
/// subscribers are told the new modseq when it is dropped.
pub struct MailWrite<'a> {
    guard: RwLockWriteGuard<'a, State>,
    changes: &'a watch::Sender<u64>,
}

impl std::ops::Deref for MailWrite<'_> {
    type Target = Mailstore;
    fn deref(&self) -> &Mailstore {
        &self.guard.mail
    }
}

impl std::ops::DerefMut for MailWrite<'_> {
    fn deref_mut(&mut self) -> &mut Mailstore {
        &mut self.guard.mail
    }
}

impl Drop for MailWrite<'_> {
    fn drop(&mut self) {
        publish(self.changes, self.guard.mail.modseq());
    }
}

/// Tells subscribers `modseq` if it is newer than what they were told.
fn publish(changes: &watch::Sender<u64>, modseq: u64) {
    changes.send_if_modified(|seen| {
        let newer = modseq > *seen;
        if newer {
            *seen = modseq;
        }
        newer
    });
}

impl SharedAccount {
    /// Opens the account's mail through `session`, imports what was delivered meanwhile
    /// (when `config` says so: up to [`ShareConfig::import_at_open`] deliveries before it
    /// returns, more in the background) and starts the poller. Most servers get handles
    /// through an [`AccountRegistry`] instead, so that connections share them.
    ///
    /// # Errors
    /// As [`Session::mailstore`] and [`Session::import_deliveries`].
    #[tracing::instrument(level = "debug", skip_all, fields(account = %session.account()))]
    pub async fn open(session: Session, config: ShareConfig) -> Result<Self> {
        Self::open_with(session, config, None).await
    }

    /// As [`open`](Self::open); `collected`: when this process last collected the
    /// account's garbage, shared with the handles of the account opened before and after
    /// this one (the registry's), so that a client that connects for a few seconds at a
    /// time still gets its garbage collected, at most once per interval.
    async fn open_with(
        mut session: Session,
        config: ShareConfig,
        collected: Option<Arc<Mutex<Option<Instant>>>>,
    ) -> Result<Self> {
        let mut mail = session.mailstore().await?;
        // Many deliveries waiting: imported by the poller, starting at once.
        let mut import_now = false;
        if config.import_deliveries {
            if mail.deliveries_waiting().await? <= config.import_at_open {
                session.import_deliveries(&mut mail).await?;
            } else {
                import_now = true;
            }
        }
        let account = mail.account();
        let (changes, _) = watch::channel(mail.modseq());
        let inner = Arc::new(Inner {
            account,
            config,
            state: RwLock::new(State { session, mail }),
            changes,
            last_poll_error: Mutex::new(None),
            views: Mutex::new(HashMap::new()),
            poller: Mutex::new(None),
            importing: tokio::sync::Mutex::new(()),
        });
        let poller = tokio::spawn(poll(
            Arc::downgrade(&inner),
            config,
            collected.unwrap_or_default(),
            import_now,
        ));
        *inner.poller.lock().unwrap_or_else(PoisonError::into_inner) = Some(poller);
        Ok(Self { inner })
    }

    /// The account.
    pub fn account(&self) -> AccountId {
        self.inner.account
    }

    /// Rotates the account's root key through the handle's session
    /// ([`Session::rotate_root`]), then opens the mail again under the new index key
    /// (the old collection is closed and deleted by the rotation), all under the write
    /// lock. Returns the new epoch public keys and the root key sealed under
    /// `device_key` as a device key file's text (what a companion keeps).
    pub(crate) async fn rotate_root(
        &self,
        device_key: &crate::keys::DeviceKey,
    ) -> Result<(Vec<(u32, [u8; 32])>, String)> {
        let mut state = self.inner.state.write().await;
        let rotated = state.session.rotate_root(&[], |_| {}).await;
        // Part way, the rotation may have closed the mail collection this handle has
        // open (moved under the new root): the handle follows the keyring as it stands
        // either way (every message stays readable at any point of a rotation).
        let reopened = reopen(&self.inner, &mut state, rotated.is_err()).await;
        rotated?;
        reopened?;
        let keyring = state.session.keyring();
        Ok((
            keyring.epoch_public_keys(),
            keyring.device_key_file(device_key).await?,
        ))
    }

    /// Whether `self` and `other` are the same handle (clones of one another).
    pub fn same(&self, other: &SharedAccount) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The account's modseq as the handle knows it.
    pub fn modseq(&self) -> u64 {
        *self.inner.changes.borrow()
    }

    /// A watch of the account's modseq: it changes after every write through this handle
    /// and whenever the poller loaded a change made elsewhere (another server, a
    /// delivery imported). What an IDLE connection waits on.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Shared access to the mail, for reads: many connections read at once; a write
    /// waits until they are done. Keep it for one command (a connection that needs its
    /// view across commands keeps the `MailboxView` it got, which is a value).
    pub async fn read(&self) -> MailRead<'_> {
        RwLockReadGuard::map(self.inner.state.read().await, |s| &s.mail)
    }

    /// The mailbox's messages and status as of the account's current modseq: what a
    /// connection keeps from `SELECT` on (its sequence numbers). One view per mailbox
    /// and modseq is computed and shared: the connections that select the same mailbox
    /// between two changes hold the same view, so a hundred connections cost the memory
    /// of one.
    ///
    /// # Errors
    /// As [`Mailstore::view`].
    pub async fn view(&self, mailbox: MailboxId) -> Result<Arc<MailboxView>> {
        let mail = self.read().await;
        let modseq = mail.modseq();
        let cached = |views: &HashMap<MailboxId, (u64, Arc<MailboxView>)>| {
            views
                .get(&mailbox)
                .filter(|(at, _)| *at == modseq)
                .map(|(_, view)| view.clone())
        };
        if let Some(view) = cached(&self.views()) {
            return Ok(view);
        }
        let view = Arc::new(mail.view(mailbox)?);
        let mut views = self.views();
        // Views of an older modseq are of no use to anyone who asks from now on.
        views.retain(|_, (at, _)| *at == modseq);
        Ok(views.entry(mailbox).or_insert((modseq, view)).1.clone())
    }

    fn views(&self) -> std::sync::MutexGuard<'_, HashMap<MailboxId, (u64, Arc<MailboxView>)>> {
        self.inner
            .views
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Exclusive access to the mail, for a write: writes are serialized here, each
    /// one atomic in the store. Subscribers are told the new modseq when the guard goes.
    pub async fn write(&self) -> MailWrite<'_> {
        MailWrite {
            guard: self.inner.state.write().await,
            changes: &self.inner.changes,
        }
    }

    /// Applies a transaction in one commit, as [`Mailstore::commit`] (JMAP `Email/set`,
    /// IMAP `MULTIAPPEND`): the bodies are uploaded and analysed without holding the
    /// handle (other connections read and write meanwhile); only the commit of the
    /// records takes the write access.
    /// Subscribers are told the new modseq.
    ///
    /// # Errors
    /// As [`Mailstore::commit`].
    pub async fn commit(&self, tx: Transaction) -> Result<Committed> {
        // The checks under read access; the uploads under none (a writer waiting for the
        // lock would hold every reader back behind a long upload).
        let (quota, uploader) = self.read().await.check_transaction(&tx).await?;
        let prepared = uploader.upload_all(tx, quota).await?;
        self.write().await.commit_prepared(prepared).await
    }

    /// Does at once what the poller does at every interval: loads what other processes
    /// committed and imports pending deliveries (when [`ShareConfig::import_deliveries`]
    /// says so), all of them, in batches, before it returns. Returns the import's report.
    ///
    /// # Errors
    /// As [`Mailstore::refresh`] and [`Session::import_deliveries`].
    pub async fn sync(&self) -> Result<ImportReport> {
        sync(&self.inner, self.inner.config.import_deliveries).await
    }

    /// Collects the account's garbage now, as [`Mailstore::collect_garbage`], under the
    /// handle's write access; `grace` is raised to [`Mailstore::min_gc_grace`] when
    /// shorter. What the poller does every [`ShareConfig::gc_interval`] when there may be
    /// garbage. Subscribers are told the new modseq (deleting released emails is a
    /// commit).
    ///
    /// # Errors
    /// As [`Mailstore::collect_garbage`].
    pub async fn collect_garbage(&self, grace: Duration) -> Result<MailGcReport> {
        let mut mail = self.write().await;
        let grace = grace.max(mail.min_gc_grace());
        mail.collect_garbage(grace).await
    }

    /// The last error the poller met, if its last poll failed (it keeps polling).
    pub fn last_poll_error(&self) -> Option<String> {
        self.inner
            .last_poll_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// One poll: refresh and import when something changed, then tell subscribers.
async fn sync(inner: &Inner, import: bool) -> Result<ImportReport> {
    {
        let mut state = inner.state.write().await;
        match state.mail.refresh().await {
            // A root rotation (of another session, or one of this handle that failed part
            // way) moved the mail collection under a new index key.
            Err(Error::Moved) => reopen(inner, &mut state, true).await?,
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        publish(&inner.changes, state.mail.modseq());
    }
    if !import {
        return Ok(ImportReport::default());
    }
    let _importing = inner.importing.lock().await;
    let mut report = import_in_batches(inner, true).await?;
    if !report.deferred.is_empty() {
        // Sealed to an epoch the keyring lacked: reloaded, they are tried again.
        let mut state = inner.state.write().await;
        let State { session, mail } = &mut *state;
        session.reload_for_import(mail).await?;
        drop(state);
        report.absorb(import_in_batches(inner, false).await?);
    }
    Ok(report)
}

/// One pass of the import ([`Session::import_deliveries`]'s, with `defer`) in its steps
/// ([`crate::mail::ImportRun`]), the handle's write access held only for its commits and
/// its read access only to look the listed deliveries up: subscribers are told after
/// each batch.
async fn import_in_batches(inner: &Inner, defer: bool) -> Result<ImportReport> {
    let mut run = {
        let state = inner.state.read().await;
        let mut run = state.session.import_run(&state.mail, defer).await?;
        drop(state);
        run.list().await?;
        inner.state.read().await.mail.look_up(&mut run);
        run
    };
    run.read().await?;
    let retries = run.take_retries();
    if !retries.is_empty() {
        inner.state.write().await.mail.drop_retries(retries).await?;
    }
    let batch = inner.config.import_batch.clamp(1, 512);
    while let Some(deliveries) = run.next_batch(batch) {
        let checked = run.check(deliveries).await?;
        let imported = {
            let mut state = inner.state.write().await;
            let imported = state.mail.import_batch(&mut run, checked).await?;
            publish(&inner.changes, state.mail.modseq());
            imported
        };
        run.delete_envelopes(&imported).await?;
    }
    let mut state = inner.state.write().await;
    let report = state.mail.finish_import(run).await?;
    publish(&inner.changes, state.mail.modseq());
    Ok(report)
}

/// Opens the mail again from the session (after reloading its keyring when `reload`, and
/// finishing a root rotation under way), and tells the subscribers; the shared views go.
async fn reopen(inner: &Inner, state: &mut State, reload: bool) -> Result<()> {
    if reload {
        state.session.reload_keyring().await?;
    }
    // Never the copy of a rotation under way: it may lack recent writes, and what is
    // written to it the rotation's next copy replaces. The rotation is finished first.
    if state.session.keyring().rotating() {
        state.session.finish_rotation().await?;
    }
    state.mail = state.session.mailstore().await?;
    publish(&inner.changes, state.mail.modseq());
    inner
        .views
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    Ok(())
}

/// The poller of one handle: holds it only while it polls, so that the handle goes
/// when its last connection does.
/// `import_now`: the handle opened over deliveries waiting, which its first poll imports
/// at once.
async fn poll(
    handle: Weak<Inner>,
    config: ShareConfig,
    collected: Arc<Mutex<Option<Instant>>>,
    mut import_now: bool,
) {
    let mut published = 0u64;
    let last = *collected.lock().unwrap_or_else(PoisonError::into_inner);
    let mut gc = GcSchedule::new(&config, last);
    loop {
        if !std::mem::take(&mut import_now) {
            tokio::time::sleep(config.poll_interval).await;
        }
        let Some(inner) = handle.upgrade() else {
            return;
        };
        let outcome: Result<()> = async {
            let (changed, delivered) = {
                let state = inner.state.read().await;
                let modseq = state.mail.modseq();
                let delivered = config.import_deliveries
                    && (state.mail.deliveries_pending().await?
                        || (config.pending == PendingCheck::ListEnvelopes
                            && state.mail.envelopes_waiting().await?));
                (state.mail.changed_since(modseq).await?, delivered)
            };
            if changed || delivered {
                sync(&inner, delivered).await?;
            }
            // Usage for the deliverers of an account with a quota, once per change.
            let state = inner.state.read().await;
            if state.mail.limits().storage.is_some() && state.mail.modseq() > published {
                published = state.mail.publish_usage().await?.modseq;
            }
            let due = gc
                .due(state.mail.modseq())
                .map(|grace| grace.max(state.mail.min_gc_grace()));
            drop(state);
            if let Some(grace) = due {
                let started = Instant::now();
                // A failed collection waits for the next interval too.
                gc.last_run = started;
                *collected.lock().unwrap_or_else(PoisonError::into_inner) = Some(started);
                let report = SharedAccount {
                    inner: inner.clone(),
                }
                .collect_garbage(grace)
                .await?;
                let modseq = inner.state.read().await.mail.modseq();
                gc.ran(started, modseq, grace);
                tracing::debug!(
                    account = %inner.account,
                    bodies = report.bodies,
                    manifests = report.index.manifests,
                    segments = report.index.segments,
                    "garbage collected"
                );
            }
            Result::Ok(())
        }
        .await;
        let mut last = inner
            .last_poll_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match outcome {
            Ok(()) => *last = None,
            Err(e) => {
                tracing::warn!(account = %inner.account, error = %e, "account poll failed");
                *last = Some(e.to_string());
            }
        }
    }
}

/// When the poller collects garbage (see [`ShareConfig::gc_interval`]).
struct GcSchedule {
    interval: Option<Duration>,
    grace: Duration,
    /// When the previous collection started.
    last_run: Instant,
    /// Whether a change may have left garbage that the previous collection could not
    /// take yet (younger than the grace period when it started). True at first: the
    /// account may hold garbage from before the handle opened.
    pending: bool,
    /// When the newest change was seen, and its modseq.
    last_change: Instant,
    modseq: Option<u64>,
}

impl GcSchedule {
    /// `last_run`: when this process last collected the account, if it did: the first
    /// collection of a handle is due one interval after it, or at once.
    fn new(config: &ShareConfig, last_run: Option<Instant>) -> Self {
        let now = Instant::now();
        let interval = config.gc_interval.unwrap_or_default();
        Self {
            interval: config.gc_interval,
            grace: config.gc_grace,
            last_run: last_run
                .or_else(|| now.checked_sub(interval))
                .unwrap_or(now),
            pending: true,
            last_change: now,
            modseq: None,
        }
    }

    /// Notes the account's `modseq`; the grace period to collect with if a collection
    /// is due.
    fn due(&mut self, modseq: u64) -> Option<Duration> {
        let interval = self.interval?;
        if self.modseq != Some(modseq) {
            if self.modseq.is_some() {
                self.last_change = Instant::now();
                self.pending = true;
            }
            self.modseq = Some(modseq);
        }
        (self.pending && self.last_run.elapsed() >= interval).then_some(self.grace)
    }

    /// A collection started at `started` with `grace` succeeded; the account's modseq
    /// after it.
    fn ran(&mut self, started: Instant, modseq: u64, grace: Duration) {
        if self.modseq != Some(modseq) {
            // The collection committed (released emails deleted): its own garbage.
            self.last_change = Instant::now();
            self.modseq = Some(modseq);
        }
        self.last_run = started;
        // Garbage of changes younger than the grace period at the start stays for the
        // next collection.
        self.pending = self.last_change + grace > started;
    }
}

/// The open accounts of one process: a connection that logs in gets the handle the
/// account's other connections use, or opens it. Handles are held weakly: an account
/// whose last connection ended is closed.
#[derive(Default)]
pub struct AccountRegistry {
    open: Mutex<HashMap<AccountId, Weak<Inner>>>,
    /// When each account's garbage was last collected by a handle of this registry.
    collected: Mutex<HashMap<AccountId, Arc<Mutex<Option<Instant>>>>>,
    /// Serializes openings, so that two logins at once open one handle.
    opening: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for AccountRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountRegistry")
            .field("open", &self.open_accounts())
            .finish()
    }
}

impl AccountRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The handle of `account` if one is open in this process.
    pub fn get(&self, account: &AccountId) -> Option<SharedAccount> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        match open.get(account).and_then(Weak::upgrade) {
            Some(inner) => Some(SharedAccount { inner }),
            None => {
                open.remove(account);
                None
            }
        }
    }

    /// The handle of `account`: the open one, or one opened with the session that
    /// `unlock` gives (called only when none is open; a login still checks its
    /// credential before it asks, so `unlock` is where that check belongs when the
    /// handle is open already: see [`Self::get`]).
    ///
    /// # Errors
    /// What `unlock` returns; as [`SharedAccount::open`].
    pub async fn get_or_open<F, Fut>(
        &self,
        account: AccountId,
        config: ShareConfig,
        unlock: F,
    ) -> Result<SharedAccount>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Session>>,
    {
        if let Some(handle) = self.get(&account) {
            return Ok(handle);
        }
        let _opening = self.opening.lock().await;
        if let Some(handle) = self.get(&account) {
            return Ok(handle);
        }
        let collected = self
            .collected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(account)
            .or_default()
            .clone();
        let handle = SharedAccount::open_with(unlock().await?, config, Some(collected)).await?;
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(account, Arc::downgrade(&handle.inner));
        Ok(handle)
    }

    /// How many accounts have a handle open.
    pub fn open_accounts(&self) -> usize {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|_, inner| inner.strong_count() > 0);
        open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(interval: u64, grace: u64, last_run: Option<Instant>) -> GcSchedule {
        GcSchedule::new(
            &ShareConfig {
                gc_interval: Some(Duration::from_secs(interval)),
                gc_grace: Duration::from_secs(grace),
                ..ShareConfig::default()
            },
            last_run,
        )
    }

    /// Moves the schedule's clock back by `secs` (as if that much time had passed).
    fn age(gc: &mut GcSchedule, secs: u64) {
        let d = Duration::from_secs(secs);
        gc.last_run -= d;
        gc.last_change -= d;
    }

    #[test]
    fn collects_once_per_interval_and_only_while_garbage_may_be_left() {
        let grace = Duration::from_secs(60);
        // A handle of an account this process collected 10 s ago (another handle, closed
        // since): not before the interval.
        let mut gc = schedule(60, 60, Instant::now().checked_sub(Duration::from_secs(10)));
        assert_eq!(gc.due(5), None);
        age(&mut gc, 51);
        assert_eq!(gc.due(5), Some(grace));
        // Never collected by this process: at the first poll (garbage may be left from
        // before the handle opened).
        let mut gc = schedule(60, 60, None);
        assert_eq!(gc.due(5), Some(grace));
        age(&mut gc, 61);
        let started = Instant::now();
        gc.ran(started, 5, grace);
        // Nothing changed for longer than the grace period before it started: quiet.
        age(&mut gc, 121);
        assert_eq!(gc.due(5), None);
        // A change: due again one interval after the previous run.
        assert_eq!(gc.due(6), Some(grace));
        gc.ran(Instant::now(), 6, grace);
        // That change was younger than the grace period when the collection started:
        // its garbage waits for the next one, one interval later.
        assert_eq!(gc.due(6), None);
        age(&mut gc, 61);
        assert_eq!(gc.due(6), Some(grace));
        gc.ran(Instant::now(), 6, grace);
        assert_eq!(gc.due(6), None);
        age(&mut gc, 121);
        assert_eq!(gc.due(6), None, "a quiet account costs nothing");
        // A collection that committed (released emails deleted) left its own garbage.
        age(&mut gc, 61);
        gc.pending = true;
        assert_eq!(gc.due(6), Some(grace));
        gc.ran(Instant::now(), 7, grace);
        age(&mut gc, 61);
        assert_eq!(gc.due(7), Some(grace));
    }

    #[test]
    fn never_without_an_interval() {
        let mut gc = GcSchedule::new(
            &ShareConfig {
                gc_interval: None,
                ..ShareConfig::default()
            },
            None,
        );
        age(&mut gc, 121);
        assert_eq!(gc.due(1), None);
        assert_eq!(gc.due(2), None);
    }
}
