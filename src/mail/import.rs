//! Import of sealed deliveries into mailboxes, by the key holder.

use futures::TryStreamExt;
use object_store::ObjectStoreExt;

use super::{keys, mailbox_of, same_name, uid_next, Mailstore, Plan, INBOX_ID};
use crate::crypto::AccountKey;
use crate::delivery::{open_envelope, Rejection};
use crate::error::{Error, Result};
use crate::format::mail::{
    number_to_bytes, EmailAnalysis, EmailRecord, Envelope, Flags, MessageRecord, Provenance,
};
use crate::ids::{DeliveryId, EmailId, MailboxId, ThreadId};
use crate::storage::naming;

/// What [`Mailstore::import_deliveries`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Deliveries imported: (delivery, mailbox, UID).
    pub imported: Vec<(DeliveryId, MailboxId, u32)>,
    /// Deliveries refused now, with the reason (they stay in the store, quarantined).
    pub quarantined: Vec<(DeliveryId, Rejection)>,
    /// Envelopes of deliveries imported before (a replay, or a crash after the import),
    /// removed.
    pub already_imported: usize,
    /// Deliveries left pending, not quarantined, because they are sealed to a key epoch
    /// the import's keys lack ([`Mailstore::import_pending`]): to import again with keys
    /// reloaded from the keyring.
    pub deferred: Vec<DeliveryId>,
}

impl ImportReport {
    /// Adds what a later pass over the same deliveries did: its imports, quarantines and
    /// replays; its deferred deliveries replace this one's (the later pass tried them).
    pub fn absorb(&mut self, later: ImportReport) {
        self.imported.extend(later.imported);
        self.quarantined.extend(later.quarantined);
        self.already_imported += later.already_imported;
        self.deferred = later.deferred;
    }
}

/// Which deliveries an import pass tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Pending ones, skipping quarantined ones; with `defer`, a retryable rejection
    /// leaves the delivery pending instead of quarantining it.
    Pending { defer: bool },
    /// Pending and quarantined ones.
    Recheck,
}

fn parse_quarantine(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes.get(1..).unwrap_or_default()).into_owned()
}

impl Mailstore {
    /// Imports every pending delivery of the account: for each envelope, the provider's
    /// signature is verified (`verifying_key`, from the trusted directory), the envelope
    /// opened with the account's keys, the stored body checked against the envelope
    /// without reading it (its size, its header bytes, its final chunk: one or two ranged
    /// GETs, [`AccountBlobs::verify_stored`](crate::blob::AccountBlobs::verify_stored)),
    /// and the message added to its mailbox (INBOX if the mailbox does not exist)
    /// with a pin that needs no X25519 to read, together with the delivery id, so that a
    /// replay is refused. The body is neither downloaded nor re-uploaded; its envelope
    /// fields and MIME structure are computed on first read ([`Mailstore::analyze`]).
    ///
    /// Idempotent: after a crash at any point, running it again imports each delivery
    /// exactly once. A delivery that fails a check is quarantined with the reason and left
    /// in the store ([`recheck_quarantined`](Self::recheck_quarantined) tries it again).
    /// `keys` are taken as final: a delivery sealed to an epoch they lack is quarantined
    /// too (see [`import_pending`](Self::import_pending) to defer it instead).
    ///
    /// # Errors
    /// Backend failures (the import stops; what was imported stays imported).
    pub async fn import_deliveries(
        &mut self,
        keys: &[AccountKey],
        verifying_key: &[u8; 32],
    ) -> Result<ImportReport> {
        self.import_pass(keys, &[*verifying_key], Pass::Pending { defer: false })
            .await
    }

    /// As [`import_deliveries`](Self::import_deliveries), accepting deliveries signed by
    /// any of `verifying_keys` (the directory's delivery key set, retired keys included);
    /// with `defer_unknown_epochs`, a delivery sealed to an epoch that `keys` lack is left
    /// pending, listed in [`ImportReport::deferred`], instead of being quarantined: the
    /// caller reloads its keys (the keyring changed since they were read) and imports
    /// again with `defer_unknown_epochs` false.
    ///
    /// # Errors
    /// As [`import_deliveries`](Self::import_deliveries).
    pub async fn import_pending(
        &mut self,
        keys: &[AccountKey],
        verifying_keys: &[[u8; 32]],
        defer_unknown_epochs: bool,
    ) -> Result<ImportReport> {
        let pass = Pass::Pending {
            defer: defer_unknown_epochs,
        };
        self.import_pass(keys, verifying_keys, pass).await
    }

    /// Checks every quarantined delivery whose envelope is still in the store again, as
    /// an import would (and imports every pending one on the way): those that pass now
    /// (the keys or the directory's key set were missing something when they were
    /// quarantined) are imported and leave the quarantine; the others stay quarantined,
    /// with their reason of now, and are listed in the report's `quarantined`.
    ///
    /// # Errors
    /// As [`import_deliveries`](Self::import_deliveries).
    pub async fn recheck_quarantined(
        &mut self,
        keys: &[AccountKey],
        verifying_keys: &[[u8; 32]],
    ) -> Result<ImportReport> {
        self.import_pass(keys, verifying_keys, Pass::Recheck).await
    }

    /// The one import loop of [`import_deliveries`](Self::import_deliveries),
    /// [`import_pending`](Self::import_pending) and
    /// [`recheck_quarantined`](Self::recheck_quarantined).
    async fn import_pass(
        &mut self,
        keys: &[AccountKey],
        verifying_keys: &[[u8; 32]],
        pass: Pass,
    ) -> Result<ImportReport> {
        self.refresh().await?;
        let account = self.account();
        let store = self.blobs.store().clone();
        let mut pending: Vec<(DeliveryId, object_store::path::Path)> = store
            .list(Some(&naming::delivery_prefix(&account)))
            .map_ok(|meta| meta.location)
            .try_collect::<Vec<_>>()
            .await?
            .into_iter()
            .filter_map(|path| {
                let id = DeliveryId::from_hex(path.filename()?).ok()?;
                Some((id, path))
            })
            .collect();
        pending.sort_by_key(|(id, _)| *id);
        let mut report = ImportReport::default();
        for (delivery, path) in pending {
            if self.index.get(&keys::imported(&delivery)).is_some() {
                let _ = store.delete(&path).await;
                report.already_imported += 1;
                continue;
            }
            if pass != Pass::Recheck && self.index.get(&keys::quarantined(&delivery)).is_some() {
                continue;
            }
            let bytes = match crate::storage::get_bounded(
                store.as_ref(),
                &path,
                crate::format::delivery::MAX_ENVELOPE_LEN as u64,
            )
            .await
            {
                Ok(bytes) => bytes,
                Err(Error::NotFound { .. }) => continue,
                // Quarantined below as malformed, like any envelope that does not parse.
                Err(Error::TooLarge { .. }) => bytes::Bytes::new(),
                Err(e) => return Err(e),
            };
            match self
                .import_one(&delivery, &bytes, keys, verifying_keys)
                .await?
            {
                Ok((mailbox, uid)) => {
                    let _ = store.delete(&path).await;
                    report.imported.push((delivery, mailbox, uid));
                }
                Err(rejection)
                    if rejection.is_retryable() && pass == (Pass::Pending { defer: true }) =>
                {
                    report.deferred.push(delivery);
                }
                Err(rejection) => {
                    self.quarantine(&delivery, &rejection).await?;
                    report.quarantined.push((delivery, rejection));
                }
            }
        }
        Ok(report)
    }

    /// Imports one verified delivery. The outer error is a backend failure; the inner
    /// one a rejection.
    async fn import_one(
        &mut self,
        delivery: &DeliveryId,
        bytes: &[u8],
        keys: &[AccountKey],
        verifying_keys: &[[u8; 32]],
    ) -> Result<std::result::Result<(MailboxId, u32), Rejection>> {
        let opened = match open_envelope(bytes, delivery, &self.blobs, verifying_keys, keys) {
            Ok(opened) => opened,
            Err(rejection) => return Ok(Err(rejection)),
        };
        let envelope = opened.envelope;
        let pin = match self.blobs.pin_sealed_with(&opened.blob, &opened.file_key) {
            Ok(pin) => pin,
            Err(_) => return Ok(Err(Rejection::BadBody)),
        };
        match self.blobs.verify_stored(&pin).await {
            Ok(()) => {}
            Err(Error::Tampered | Error::NotFound { .. }) => return Ok(Err(Rejection::BadBody)),
            Err(e) => return Err(e),
        }
        // Deterministic ids: two importers of one delivery write the same records.
        let email = EmailId::from_bytes(*delivery.as_bytes());
        let mut instance = [0u8; 8];
        instance.copy_from_slice(&delivery.as_bytes()[..8]);
        let thread = ThreadId::from_bytes(*delivery.as_bytes());
        let flags =
            Flags::from_names(envelope.flags.iter().map(String::as_str)).unwrap_or_default();
        let target = envelope.mailbox.clone();
        let delivery = *delivery;
        let outcome = self
            .write(move |c, modseq| {
                let mut plan = Plan::new();
                if c.get(&keys::imported(&delivery)).is_some() {
                    return Ok((plan, None));
                }
                let mailbox = super::all_mailboxes(c)?
                    .into_iter()
                    .map(|(id, r)| mailbox_of(id, r))
                    .find(|m| !target.is_empty() && same_name(&m.name, &target))
                    .map_or(INBOX_ID, |m| m.id);
                let uid = uid_next(c, &mailbox)?;
                let record = EmailRecord {
                    pin,
                    internal_date: envelope.internal_date,
                    size: pin.len(),
                    thread,
                    provenance: Provenance::SealedDelivery,
                    analyzed: false,
                    envelope: Envelope::default(),
                    parts: Vec::new(),
                };
                plan.batch.put(keys::email(&email), record.to_bytes());
                plan.add_message(
                    &mailbox,
                    uid,
                    &instance,
                    &MessageRecord {
                        email,
                        modseq,
                        size: pin.len(),
                        flags: flags.clone(),
                    },
                );
                plan.batch
                    .put(keys::imported(&delivery), number_to_bytes(modseq).to_vec());
                // Imported on a re-check: out of quarantine.
                if c.get(&keys::quarantined(&delivery)).is_some() {
                    plan.batch.delete(keys::quarantined(&delivery));
                }
                Ok((plan, Some((mailbox, uid))))
            })
            .await?;
        Ok(Ok(outcome.unwrap_or((INBOX_ID, 0))))
    }

    async fn quarantine(&mut self, delivery: &DeliveryId, rejection: &Rejection) -> Result<()> {
        let delivery = *delivery;
        let reason = rejection.reason();
        self.write(move |_, _| {
            let mut plan = Plan::new();
            let mut value = vec![crate::format::mail::MAIL_RECORD_VERSION];
            value.extend_from_slice(reason.as_bytes());
            plan.batch.put(keys::quarantined(&delivery), value);
            Ok((plan, ()))
        })
        .await
    }

    /// Deliveries refused at import, with the reason. Their envelopes and bodies stay in
    /// the store for inspection.
    pub fn quarantined(&self) -> Vec<(DeliveryId, String)> {
        self.index
            .prefix(&[keys::QUARANTINE])
            .filter_map(|(k, v)| {
                let id = keys::tagged_id(k)?;
                Some((DeliveryId::from_bytes(id), parse_quarantine(v)))
            })
            .collect()
    }

    /// The email of message `uid`, with its envelope fields and MIME structure computed
    /// from the body if they were not yet (a sealed delivery imported without reading
    /// it): one full read, then one commit; later calls read nothing.
    ///
    /// The analysis is its own record beside the email record, written only if the email
    /// is still there and not analyzed meanwhile: a concurrent rewrite of the body (the
    /// epoch job, which changes the email record's pin) and the analysis both hold,
    /// whichever commits first, with or without compare-and-swap.
    ///
    /// # Errors
    /// As [`Mailstore::email`] and [`Mailstore::read`]; [`Error::InvalidArgument`] if the
    /// message was removed meanwhile.
    pub async fn analyze(&mut self, mailbox: MailboxId, uid: u32) -> Result<EmailRecord> {
        let email = self.email(mailbox, uid)?;
        if email.analyzed {
            return Ok(email);
        }
        // As at append, a body above the parse limit is parsed for its header only: only
        // that much of it is read.
        let limit = self.config.max_parse_len;
        let (envelope, parts) = if email.size > limit as u64 {
            let prefix = self.read_range(&email, 0..limit as u64).await?;
            (super::mime::analyze_header(&prefix), Vec::new())
        } else {
            super::mime::analyze(&self.read(&email).await?)
        };
        let id = self.email_id_of(mailbox, uid)?;
        self.write(move |c, _| {
            let mut plan = Plan::new();
            // Read again inside the commit: the record may have changed since the body
            // was read (a rewritten body, an analysis by another server, an expunge).
            let current = super::email_record(c, &id)?
                .ok_or_else(|| Error::invalid(format!("no email {id}")))?;
            if current.analyzed {
                return Ok((plan, current));
            }
            // A delivery joins the thread of the messages it answers or that answer it,
            // now that its references are known.
            let thread = super::join_thread(c, &envelope, current.thread, &mut plan.batch);
            let analysis = EmailAnalysis {
                thread,
                envelope: envelope.clone(),
                parts: parts.clone(),
            };
            plan.batch.put(keys::analysis(&id), analysis.to_bytes());
            Ok((plan, current.with_analysis(analysis)?))
        })
        .await
    }

    fn email_id_of(&self, mailbox: MailboxId, uid: u32) -> Result<EmailId> {
        super::select_uids(&self.index, &mailbox, &[uid])?
            .into_iter()
            .next()
            .map(|(_, _, m)| m.email)
            .ok_or_else(|| Error::invalid(format!("no message with UID {uid}")))
    }
}
