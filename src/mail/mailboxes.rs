//! Mailboxes: list, create, rename, subscribe, delete, status, quota, select.

use super::*;

impl Mailstore {
    /// Every mailbox, by name.
    ///
    /// # Errors
    /// [`Error::Tampered`] for a record that does not parse.
    pub fn mailboxes(&self) -> Result<Vec<Mailbox>> {
        let mut list: Vec<Mailbox> = all_mailboxes(&self.index)?
            .into_iter()
            .map(|(id, r)| mailbox_of(id, r))
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(list)
    }

    /// The mailbox named `name` (`INBOX` in any case).
    pub fn mailbox_by_name(&self, name: &str) -> Option<Mailbox> {
        self.mailboxes()
            .ok()?
            .into_iter()
            .find(|m| same_name(&m.name, name))
    }

    /// Creates a mailbox.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an invalid name, [`Error::MailboxExists`] for one
    /// already taken; backend errors.
    #[tracing::instrument(level = "debug", skip_all, fields(account = %self.account(), requests = tracing::field::Empty, bytes_read = tracing::field::Empty, bytes_written = tracing::field::Empty))]
    pub async fn create_mailbox(
        &mut self,
        name: &str,
        special_use: Option<SpecialUse>,
    ) -> Result<Mailbox> {
        metered(async move {
            check_name(name)?;
            let id = MailboxId::random(&self.rng);
            let name = name.to_owned();
            self.write(move |c, modseq| {
                if all_mailboxes(c)?
                    .iter()
                    .any(|(_, r)| same_name(&r.name, &name))
                {
                    return Err(Error::MailboxExists {
                        name: name.to_string(),
                    });
                }
                let record = MailboxRecord {
                    name: name.clone(),
                    subscribed: false,
                    special_use,
                    // Above any UIDVALIDITY an earlier mailbox of this name had.
                    uid_validity: u32::try_from(modseq).unwrap_or(u32::MAX),
                    modseq,
                };
                let mut plan = Plan::new();
                plan.batch.put(keys::mailbox(&id), record.to_bytes());
                Ok((plan, mailbox_of(id, record)))
            })
            .await
        })
        .await
    }

    /// Renames a mailbox and the mailboxes below it (`a/b` follows `a`). Ids, UIDs and
    /// UIDVALIDITY stay.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for the inbox or an invalid name,
    /// [`Error::NoSuchMailbox`] for an unknown mailbox, [`Error::MailboxExists`] for a new
    /// name (of the mailbox or of one below it: `a/x` becoming `b/x`) already taken by a
    /// mailbox that does not move; nothing is changed then. Backend errors.
    #[tracing::instrument(level = "debug", skip_all, fields(account = %self.account(), requests = tracing::field::Empty, bytes_read = tracing::field::Empty, bytes_written = tracing::field::Empty))]
    pub async fn rename_mailbox(&mut self, id: MailboxId, new_name: &str) -> Result<()> {
        metered(async move {
            check_name(new_name)?;
            if id == INBOX_ID || new_name.eq_ignore_ascii_case(INBOX) {
                return Err(Error::invalid("the inbox cannot be renamed"));
            }
            let new_name = new_name.to_owned();
            self.write(move |c, modseq| {
                let old = require_mailbox(c, &id)?.name;
                let below = format!("{old}/");
                let all = all_mailboxes(c)?;
                if all.iter().any(|(_, r)| same_name(&r.name, &new_name)) {
                    return Err(Error::MailboxExists {
                        name: new_name.to_string(),
                    });
                }
                let (moving, staying): (Vec<_>, Vec<_>) = all
                    .into_iter()
                    .partition(|(other, record)| *other == id || record.name.starts_with(&below));
                // Every new name, the mailbox's and those of the mailboxes below it, must be
                // valid and free among the mailboxes that stay where they are.
                let mut plan = Plan::new();
                for (other, mut record) in moving {
                    let renamed = match record.name.strip_prefix(&below) {
                        Some(rest) if other != id => format!("{new_name}/{rest}"),
                        _ => new_name.clone(),
                    };
                    check_name(&renamed)?;
                    if staying.iter().any(|(_, r)| same_name(&r.name, &renamed)) {
                        return Err(Error::MailboxExists {
                            name: renamed.to_string(),
                        });
                    }
                    record.name = renamed;
                    record.modseq = modseq;
                    plan.batch.put(keys::mailbox(&other), record.to_bytes());
                }
                Ok((plan, ()))
            })
            .await
        })
        .await
    }

    /// Subscribes to a mailbox or unsubscribes.
    ///
    /// # Errors
    /// [`Error::NoSuchMailbox`] for an unknown mailbox; backend errors.
    #[tracing::instrument(level = "debug", skip_all, fields(account = %self.account(), requests = tracing::field::Empty, bytes_read = tracing::field::Empty, bytes_written = tracing::field::Empty))]
    pub async fn subscribe(&mut self, id: MailboxId, subscribed: bool) -> Result<()> {
        metered(async move {
            self.write(move |c, modseq| {
                let mut record = require_mailbox(c, &id)?;
                let mut plan = Plan::new();
                if record.subscribed != subscribed {
                    record.subscribed = subscribed;
                    record.modseq = modseq;
                    plan.batch.put(keys::mailbox(&id), record.to_bytes());
                }
                Ok((plan, ()))
            })
            .await
        })
        .await
    }

    /// Deletes a mailbox and its messages (bodies no other mailbox shows are deleted).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for the inbox, [`Error::NoSuchMailbox`] for an unknown
    /// mailbox; backend errors.
    #[tracing::instrument(level = "debug", skip_all, fields(account = %self.account(), requests = tracing::field::Empty, bytes_read = tracing::field::Empty, bytes_written = tracing::field::Empty))]
    pub async fn delete_mailbox(&mut self, id: MailboxId) -> Result<()> {
        metered(async move {
            if id == INBOX_ID {
                return Err(Error::invalid("the inbox cannot be deleted"));
            }
            let mode = self.index.mode();
            let released = self
                .write(move |c, modseq| {
                    require_mailbox(c, &id)?;
                    let mut plan = Plan::new();
                    for (uid, instance, record) in messages(c, &id)? {
                        plan.remove_message(&id, uid, &instance, &record.email, modseq);
                    }
                    // Its vanished records stay (they tell `account_changes_since` which
                    // emails went); a tombstone tells that the mailbox went.
                    plan.batch
                        .put(keys::deleted_mailbox(&id), number_to_bytes(modseq).to_vec());
                    plan.batch.delete(keys::mailbox(&id));
                    let released = plan.release(c, mode);
                    Ok((plan, released))
                })
                .await?;
            self.delete_bodies(released).await;
            Ok(())
        })
        .await
    }

    /// Status of a mailbox.
    ///
    /// # Errors
    /// [`Error::NoSuchMailbox`] for an unknown mailbox; [`Error::Tampered`] for a record
    /// that does not parse.
    pub fn status(&self, id: MailboxId) -> Result<MailboxStatus> {
        let record = require_mailbox(&self.index, &id)?;
        let list = messages(&self.index, &id)?;
        Ok(self.status_of(&id, &record, &list))
    }

    fn status_of(
        &self,
        id: &MailboxId,
        record: &MailboxRecord,
        list: &[(u32, Instance, MessageRecord)],
    ) -> MailboxStatus {
        let mut status = MailboxStatus {
            uid_validity: record.uid_validity,
            uid_next: uid_next(&self.index, id).unwrap_or(u32::MAX),
            highest_modseq: record.modseq,
            ..MailboxStatus::default()
        };
        for (_, _, m) in list {
            status.messages += 1;
            status.unseen += u32::from(!m.flags.contains(Flags::SEEN));
            status.size += m.size;
            status.highest_modseq = status.highest_modseq.max(m.modseq);
        }
        for (_, v) in self.index.prefix(&keys::vanished_of(id)) {
            if let Ok(vanished) = VanishedRecord::parse(v) {
                status.highest_modseq = status.highest_modseq.max(vanished.modseq);
            }
        }
        status
    }

    /// Quota usage of the account.
    ///
    /// # Errors
    /// [`Error::Tampered`] for a record that does not parse.
    pub fn quota(&self) -> Result<QuotaUsage> {
        let mut usage = QuotaUsage::default();
        for (_, v) in self.index.prefix(&[keys::MESSAGE]) {
            usage.messages += 1;
            usage.bytes += MessageRecord::parse(v)?.size;
        }
        Ok(usage)
    }

    /// The account's storage quota and what counts against it: the bytes of every message
    /// in every mailbox (copies count) and of the deliveries not imported yet (from the
    /// directory's delivered bytes), the figure appends and copies are checked against
    /// inside their commit; the limit as of [`limits`](Self::limits).
    ///
    /// # Errors
    /// [`Error::Tampered`] for a record that does not parse; a directory failure.
    pub async fn storage_quota(&self) -> Result<StorageQuota> {
        let check = self.quota_check().await?;
        let (stored, imported) = usage_of(&self.index, &self.usage_memo)?;
        Ok(StorageQuota {
            used: stored.saturating_add(check.delivered.saturating_sub(imported)),
            limit: check.limit,
        })
    }

    /// The account's limits (quota, message size), as the directory's account record had
    /// them when this handle opened or last [`reload_limits`](Self::reload_limits).
    pub fn limits(&self) -> crate::directory::AccountLimits {
        self.limits
    }

    /// Reads the account's limits from the directory again.
    ///
    /// # Errors
    /// A directory failure.
    pub async fn reload_limits(&mut self) -> Result<crate::directory::AccountLimits> {
        if let Some(record) = self.directory.account_record(&self.account()).await? {
            self.limits = record.limits;
        }
        Ok(self.limits)
    }

    /// What an append or a copy checks its quota against: the limit, and (for an account
    /// with a quota) the bytes delivered to it ever, from the directory.
    pub(super) async fn quota_check(&self) -> Result<QuotaCheck> {
        let delivered = match self.limits.storage {
            Some(_) => {
                self.directory
                    .mark(&self.account(), crate::directory::DELIVERED_BYTES_RECORD)
                    .await?
                    .generation
            }
            None => 0,
        };
        Ok(QuotaCheck {
            limit: self.limits.storage,
            delivered,
        })
    }

    /// Publishes the account's usage in the directory, for deliverers (which hold no key)
    /// to refuse mail over quota: the bytes stored and the bytes of the deliveries
    /// imported, as of this handle's modseq. A publication of an older state than one
    /// already there is dropped.
    ///
    /// # Errors
    /// [`Error::Tampered`] for a record that does not parse; a directory failure.
    #[tracing::instrument(level = "debug", skip_all, fields(account = %self.account(), requests = tracing::field::Empty, bytes_read = tracing::field::Empty, bytes_written = tracing::field::Empty))]
    pub async fn publish_usage(&self) -> Result<crate::directory::PublishedUsage> {
        metered(async move {
            let (stored, imported) = usage_of(&self.index, &self.usage_memo)?;
            let usage = crate::directory::PublishedUsage {
                modseq: self.index.generation(),
                stored,
                imported,
            };
            crate::directory::publish_usage(self.directory.as_ref(), &self.account(), usage)
                .await?;
            Ok(usage)
        })
        .await
    }

    /// Selects a mailbox: loads what changed, and lists its status and messages.
    ///
    /// # Errors
    /// [`Error::NoSuchMailbox`] for an unknown mailbox; as [`refresh`](Self::refresh).
    #[tracing::instrument(level = "debug", skip_all, fields(account = %self.account(), requests = tracing::field::Empty, bytes_read = tracing::field::Empty, bytes_written = tracing::field::Empty))]
    pub async fn select(&mut self, id: MailboxId) -> Result<MailboxView> {
        metered(async move {
            self.refresh().await?;
            if self.index.mode() == CommitMode::WriterUnique && conflicted(&self.index, &id)? {
                self.settle_now().await?;
            }
            self.view(id)
        })
        .await
    }

    /// The mailbox as loaded, without looking at the store.
    ///
    /// # Errors
    /// As [`select`](Self::select).
    pub fn view(&self, id: MailboxId) -> Result<MailboxView> {
        let record = require_mailbox(&self.index, &id)?;
        let list = messages(&self.index, &id)?;
        let status = self.status_of(&id, &record, &list);
        // Collected in place, the summaries keep the larger allocation of `list` (10.5 MB
        // for 7.2 MB at 100 000 messages) as long as the view is held: shrunk to their
        // size (in place: a large allocation is remapped, not copied).
        let mut messages: Vec<MessageSummary> = list
            .into_iter()
            .map(|(uid, _, m)| MessageSummary {
                uid,
                email: m.email,
                flags: m.flags,
                modseq: m.modseq,
                size: m.size,
            })
            .collect();
        messages.shrink_to_fit();
        Ok(MailboxView {
            mailbox: mailbox_of(id, record),
            status,
            messages,
        })
    }
}
