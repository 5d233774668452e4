//! Maintenance: compaction and garbage collection of released bodies.

use super::*;

impl Mailstore {
    /// Moves the details of the email records that hold them to details segments
    /// ([`store_details`](Self::store_details), unless
    /// [`MailConfig::details_apart`] is off), then merges the index's segments into
    /// one (see [`Collection::compact`]): maintenance for a quiet moment; the index also
    /// compacts by itself, in size tiers.
    ///
    /// # Errors
    /// As [`store_details`](Self::store_details) and [`Collection::compact`].
    #[tracing::instrument(level = "debug", skip_all, fields(account = %self.account(), requests = tracing::field::Empty, bytes_read = tracing::field::Empty, bytes_written = tracing::field::Empty))]
    pub async fn compact(&mut self) -> Result<()> {
        if self.config.details_apart {
            self.store_details().await?;
        }
        metered(async move { self.index.compact().await.map(|_| ()) }).await
    }

    /// The live records of the account's index by kind, in key order: what the index's
    /// size is made of, before the framing, sealing and stamps of its segments (§8.2 of
    /// docs/design.md). Tombstones are not counted. For operators and benchmarks.
    pub fn index_usage(&self) -> Vec<IndexUsage> {
        let mut usage: Vec<IndexUsage> = Vec::new();
        for (key, value) in self.index.iter() {
            let kind = key.first().copied().unwrap_or(0);
            if usage.last().is_none_or(|u| u.kind != kind) {
                usage.push(IndexUsage {
                    kind,
                    ..IndexUsage::default()
                });
            }
            if let Some(u) = usage.last_mut() {
                u.records += 1;
                u.key_bytes += key.len() as u64;
                u.value_bytes += value.len() as u64;
            }
        }
        usage
    }

    /// The shortest grace period [`collect_garbage`](Self::collect_garbage) may be given
    /// while other handles or processes commit to the account: the index's
    /// [`IndexConfig::verify_after`](crate::index::IndexConfig::verify_after) (§8.6 of
    /// docs/design.md).
    pub fn min_gc_grace(&self) -> Duration {
        self.index.config().verify_after
    }

    /// Deletes bodies released after a grace period (backends without compare-and-swap
    /// mark them instead of deleting them at once, since a concurrent copy may still
    /// refer to them), then collects the index's garbage (the text index's too, when
    /// this handle searched text).
    ///
    /// # Errors
    /// As [`Collection::collect_garbage`].
    #[tracing::instrument(level = "debug", skip_all, fields(account = %self.account(), requests = tracing::field::Empty, bytes_read = tracing::field::Empty, bytes_written = tracing::field::Empty))]
    pub async fn collect_garbage(&mut self, grace: Duration) -> Result<MailGcReport> {
        metered(async move {
            self.refresh().await?;
            let cutoff = crate::unix_now().saturating_sub(grace.as_secs());
            let released = self
                .write(move |c, _| {
                    let mut plan = Plan::new();
                    let mut bodies = Vec::new();
                    for (k, v) in c.prefix(&[keys::RELEASE]) {
                        let email = keys::parse_release(k).ok_or(Error::Tampered)?;
                        if parse_number(v)? > cutoff {
                            continue;
                        }
                        plan.batch.delete(k.to_vec());
                        if c.prefix(&keys::references_of(&email)).next().is_some() {
                            continue; // referenced again (a concurrent copy): keep it
                        }
                        if let Some(record) = c.get(&keys::email(&email)) {
                            bodies.push(EmailRecord::parse(record)?);
                        }
                        plan.delete_email(&email);
                    }
                    // An analysis committed beside the deletion of its email (without
                    // compare-and-swap) outlived it.
                    for (k, _) in c.prefix(&[keys::ANALYSIS]) {
                        let email = EmailId::from_bytes(keys::tagged_id(k).ok_or(Error::Tampered)?);
                        if c.get(&keys::email(&email)).is_none() {
                            plan.batch.delete(k.to_vec());
                        }
                    }
                    Ok((plan, bodies))
                })
                .await?;
            let bodies = released.len();
            self.delete_bodies(released).await;
            let mut index = self.index.collect_garbage(grace).await?;
            // The text index's collection: its merges leave segments behind too.
            if let Some(text) = self.text.get_mut().collect_garbage(grace).await? {
                index.manifests += text.manifests;
                index.segments += text.segments;
            }
            Ok(MailGcReport { bodies, index })
        })
        .await
    }
}
