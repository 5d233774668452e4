//! Moving message bodies off an old key epoch: the mail side of the epoch re-encryption
//! job (`Session::reencrypt_epoch` drives it and then drops the epoch).

use super::{keys, Mailstore, Plan};
use crate::error::{Error, Result};
use crate::format::mail::EmailRecord;
use crate::format::BlobKind;
use crate::ids::{BlobId, EmailId};

/// Progress of a re-encryption, reported after every body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochProgress {
    /// Bodies rewritten so far by this run.
    pub done: usize,
    /// Bodies under the old epoch when this run started.
    pub total: usize,
}

impl Mailstore {
    /// Rewrites every body sealed under key epoch `old` (symmetric bodies and imported
    /// deliveries alike) as a body under the current epoch, and points its email record
    /// at the new body; the old body is deleted after the commit. Resumable: each body is
    /// one commit, and a run killed at any point leaves every message readable (through
    /// the old body or the new one); the next run finishes the work, including deleting
    /// old bodies a killed run had already unlinked. Returns the bodies rewritten.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `old` is the current epoch; read, write and backend
    /// errors (the run stops; run it again).
    pub async fn rewrite_epoch(
        &mut self,
        old: u32,
        mut progress: impl FnMut(EpochProgress),
    ) -> Result<usize> {
        if self.blobs.current_epoch() == old {
            return Err(Error::invalid("the current epoch cannot be rewritten"));
        }
        self.refresh().await?;
        // Old bodies a killed run unlinked but did not delete.
        self.delete_retired().await?;
        let pending: Vec<EmailId> = self
            .index
            .prefix(&[keys::EMAIL])
            .filter_map(|(k, v)| {
                let record = EmailRecord::parse(v).ok()?;
                let id = keys::tagged_id(k)?;
                (record.pin.header.epoch == old).then(|| EmailId::from_bytes(id))
            })
            .collect();
        let total = pending.len();
        let mut done = 0;
        for email in pending {
            let Some(record) = self
                .index
                .get(&keys::email(&email))
                .map(EmailRecord::parse)
                .transpose()?
            else {
                continue; // expunged meanwhile
            };
            if record.pin.header.epoch != old {
                continue;
            }
            let body = self.blobs.read(&record.pin).await?;
            let new_pin = self.blobs.put(BlobKind::Message, &body).await?;
            let old_pin = record.pin;
            let swapped = self
                .write(move |c, _| {
                    let mut plan = Plan::new();
                    let Some(current) = c
                        .get(&keys::email(&email))
                        .map(EmailRecord::parse)
                        .transpose()?
                    else {
                        return Ok((plan, false));
                    };
                    if current.pin != old_pin {
                        return Ok((plan, false));
                    }
                    let updated = EmailRecord {
                        pin: new_pin,
                        ..current
                    };
                    plan.batch.put(keys::email(&email), updated.to_bytes());
                    plan.batch.put(keys::retired(&old_pin.id), Vec::new());
                    Ok((plan, true))
                })
                .await?;
            if !swapped {
                let _ = self.blobs.delete(&new_pin.id).await;
                continue;
            }
            self.delete_retired().await?;
            done += 1;
            progress(EpochProgress { done, total });
        }
        Ok(done)
    }

    /// Deletes bodies unlinked by a rewrite, then their markers.
    async fn delete_retired(&mut self) -> Result<()> {
        let retired: Vec<BlobId> = self
            .index
            .prefix(&[keys::RETIRED])
            .filter_map(|(k, _)| keys::tagged_id(k).map(BlobId::from_bytes))
            .collect();
        if retired.is_empty() {
            return Ok(());
        }
        for id in &retired {
            self.blobs.delete(id).await?;
        }
        self.write(move |_, _| {
            let mut plan = Plan::new();
            for id in &retired {
                plan.batch.delete(keys::retired(id));
            }
            Ok((plan, ()))
        })
        .await
    }

    /// Bodies still under key epoch `epoch`.
    pub fn bodies_under_epoch(&self, epoch: u32) -> usize {
        self.index
            .prefix(&[keys::EMAIL])
            .filter(|(_, v)| EmailRecord::parse(v).is_ok_and(|r| r.pin.header.epoch == epoch))
            .count()
    }
}
