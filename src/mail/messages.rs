//! Messages: read whole or by part, append, flags, copy, move, expunge.

use super::*;

impl Mailstore {
    /// The email (body pin, envelope, MIME structure) of message `uid`, as the index
    /// keeps it: its details (MIME parts, header block, preview) may be stored apart
    /// ([`EmailRecord::stored_details`]); [`with_details`](Self::with_details) reads them.
    ///
    /// # Errors
    /// [`Error::NoSuchMailbox`] for an unknown mailbox, [`Error::NoSuchMessage`] for an unknown UID; [`Error::Tampered`] for
    /// a record that does not parse.
    pub fn email(&self, mailbox: MailboxId, uid: u32) -> Result<EmailRecord> {
        let (_, _, message) = select_uids(&self.index, &mailbox, &[uid])?
            .into_iter()
            .next()
            .ok_or_else(|| Error::NoSuchMessage {
                what: format!("UID {uid}"),
            })?;
        self.email_by_id(message.email)
    }

    /// An email by its EMAILID (its details may be stored apart, as for
    /// [`email`](Self::email)).
    ///
    /// # Errors
    /// [`Error::NoSuchMessage`] for an unknown email; [`Error::Tampered`] for a record
    /// that does not parse.
    pub fn email_by_id(&self, email: EmailId) -> Result<EmailRecord> {
        email_record(&self.index, &email)?.ok_or_else(|| Error::NoSuchMessage {
            what: format!("email {email}"),
        })
    }

    /// Reads a whole message body.
    ///
    /// # Errors
    /// As [`AccountBlobs::read`].
    #[tracing::instrument(level = "debug", skip_all, fields(account = %self.account(), requests = tracing::field::Empty, bytes_read = tracing::field::Empty, bytes_written = tracing::field::Empty))]
    pub async fn read(&self, email: &EmailRecord) -> Result<Bytes> {
        metered(async move { self.blobs.read(&email.pin).await }).await
    }

    /// Streams a whole message body.
    ///
    /// # Errors
    /// As [`AccountBlobs::get`].
    #[tracing::instrument(level = "debug", skip_all, fields(account = %self.account(), requests = tracing::field::Empty, bytes_read = tracing::field::Empty, bytes_written = tracing::field::Empty))]
    pub async fn read_stream(&self, email: &EmailRecord) -> Result<BlobStream> {
        metered(async move { self.blobs.get(&email.pin).await }).await
    }

    /// Reads bytes `range` of a message body (IMAP partial fetch): one ranged GET.
    ///
    /// # Errors
    /// As [`AccountBlobs::get_range`].
    #[tracing::instrument(level = "debug", skip_all, fields(account = %self.account(), requests = tracing::field::Empty, bytes_read = tracing::field::Empty, bytes_written = tracing::field::Empty))]
    pub async fn read_range(&self, email: &EmailRecord, range: Range<u64>) -> Result<Bytes> {
        metered(async move { self.blobs.get_range(&email.pin, range).await }).await
    }

    /// Reads MIME part `part` (an index into [`EmailRecord::parts`]): one ranged GET of
    /// the part and at most the two chunks around it.
    ///
    /// # Errors
    /// [`Error::NoSuchMessage`] for an unknown part; as [`AccountBlobs::get_range`].
    #[tracing::instrument(level = "debug", skip_all, fields(account = %self.account(), requests = tracing::field::Empty, bytes_read = tracing::field::Empty, bytes_written = tracing::field::Empty))]
    pub async fn read_part(
        &self,
        email: &EmailRecord,
        part: usize,
        section: PartSection,
    ) -> Result<Bytes> {
        metered(async move {
            let loaded;
            let email = match email.stored_details {
                Some(_) => {
                    loaded = self.with_details(email.clone()).await?;
                    &loaded
                }
                None => email,
            };
            let p = email.parts.get(part).ok_or_else(|| Error::NoSuchMessage {
                what: format!("MIME part {part}"),
            })?;
            let range = match section {
                PartSection::Whole => p.header_offset..p.end_offset,
                PartSection::Header => p.header_offset..p.body_offset,
                PartSection::Body => p.body_offset..p.end_offset,
            };
            self.blobs.get_range(&email.pin, range).await
        })
        .await
    }

    /// The envelope of a header block (`From:` ... up to the blank line), parsed as at
    /// append: what a server computes for a message nested in a `message/rfc822` part
    /// (its header read with [`read_part`](Self::read_part)) when the part has no
    /// [`MimePart::envelope`] (an analysis of an email record of version 1).
    pub fn header_envelope(header: &[u8]) -> Envelope {
        mime::analyze(header, true).envelope
    }

    /// What an append computes from the message `raw` (JMAP `Email/parse`, a server's
    /// check of a message before it stores it): envelope, MIME structure with the
    /// `BODYSTRUCTURE` data of every part, header block and preview, with a zero thread.
    /// Never fails: bytes that are not a message give an empty envelope and no parts.
    /// Parses the whole of `raw`: a caller bounds it (an append parses at most
    /// [`MailConfig::max_parse_len`] bytes, the header only above).
    pub fn parse_message(raw: &[u8]) -> EmailAnalysis {
        mime::analyze(raw, false)
    }

    /// The part an IMAP section number names (`[1, 2]` for `BODY[1.2]`), as an index
    /// into [`EmailRecord::parts`] (of a record with its details:
    /// [`with_details`](Self::with_details)).
    pub fn imap_section(email: &EmailRecord, path: &[u32]) -> Option<usize> {
        mime::imap_section(&email.parts, path)
    }

    /// Appends a message to a mailbox.
    ///
    /// # Errors
    /// [`Error::NoSuchMailbox`] for an unknown mailbox; backend errors (the append is
    /// then not acknowledged).
    pub async fn append(
        &mut self,
        mailbox: MailboxId,
        body: &[u8],
        options: AppendOptions,
    ) -> Result<Appended> {
        let chunks = futures::stream::iter([Ok(Bytes::copy_from_slice(body))]);
        self.append_stream(mailbox, chunks, options).await
    }

    /// Appends a message streamed in pieces: the body is encrypted and uploaded as it
    /// arrives (multipart for large ones), and parsed at the end (messages above
    /// [`MailConfig::max_parse_len`] for their header only). Returns once the body and its
    /// records are durable.
    ///
    /// # Errors
    /// As [`append`](Self::append), and any error the stream yields.
    #[tracing::instrument(level = "debug", skip_all, fields(account = %self.account(), requests = tracing::field::Empty, bytes_read = tracing::field::Empty, bytes_written = tracing::field::Empty))]
    pub async fn append_stream<S>(
        &mut self,
        mailbox: MailboxId,
        body: S,
        options: AppendOptions,
    ) -> Result<Appended>
    where
        S: Stream<Item = Result<Bytes>> + Unpin,
    {
        metered(async move {
            require_mailbox(&self.index, &mailbox)?;
            // Full already: refused before the body is uploaded.
            let (quota, memo) = (self.quota_check().await?, self.usage_memo.clone());
            check_quota(&self.index, quota, 1, &memo)?;
            let mut body = body;
            let mut writer = self.blobs.writer(BlobKind::Message);
            let mut parse = super::ParseBuffer::new(self.config.max_parse_len);
            let mut received = 0u64;
            while let Some(piece) = body.next().await {
                let piece = match piece {
                    Ok(piece) => piece,
                    Err(e) => {
                        let _ = writer.abort().await;
                        return Err(e);
                    }
                };
                received += piece.len() as u64;
                if let Some(limit) = self.limits.message_size.filter(|l| received > *l) {
                    let _ = writer.abort().await;
                    return Err(Error::TooBig { limit });
                }
                writer.write_bytes(piece.clone()).await?;
                parse.push(&piece);
            }
            let (parse_buffer, too_large) = parse.finish();
            let pin = writer.finish().await?;
            let with_text = self.config.index_appends;
            let (analysis, text) =
                match mime::analyze_blocking(parse_buffer, too_large, with_text).await {
                    Ok(analyzed) => analyzed,
                    Err(e) => {
                        let _ = self.blobs.delete(&pin.id).await;
                        return Err(e);
                    }
                };
            let email_id = EmailId::random(&self.rng);
            let new_thread = ThreadId::random(&self.rng);
            let instance: Instance = self.rng.array();
            let size = pin.len();
            let internal_date = options.internal_date.unwrap_or(crate::unix_now() as i64);
            let provenance = options.provenance.unwrap_or(Provenance::KeyHolder);
            let flags = options.flags;
            let outcome = self
                .write(move |c, modseq| {
                    let record = require_mailbox(c, &mailbox)?;
                    let uid = uid_next(c, &mailbox)?;
                    check_quota(c, quota, size, &memo)?;
                    let mut plan = Plan::new();
                    let thread = join_thread(c, &analysis.envelope, new_thread, &mut plan.batch);
                    let email = EmailRecord {
                        pin,
                        internal_date,
                        size,
                        thread,
                        provenance,
                        analyzed: true,
                        envelope: analysis.envelope.clone(),
                        parts: analysis.parts.clone(),
                        header_block: analysis.header_block.clone(),
                        preview: analysis.preview.clone(),
                        created_modseq: modseq,
                        stored_details: None,
                    };
                    let message = MessageRecord {
                        email: email_id,
                        modseq,
                        size,
                        flags: flags.clone(),
                    };
                    plan.batch.put(keys::email(&email_id), email.to_bytes());
                    plan.add_message(&mailbox, uid, &instance, &message);
                    Ok((
                        plan,
                        Appended {
                            uid_validity: record.uid_validity,
                            uid,
                            email: email_id,
                            thread,
                            modseq,
                        },
                    ))
                })
                .await;
            if let Err(
                Error::InvalidArgument(_)
                | Error::NoSuchMailbox { .. }
                | Error::LimitReached(_)
                | Error::OverQuota { .. },
            ) = &outcome
            {
                // Refused before anything was committed (the mailbox went away, its UIDs ran
                // out, the quota is used up): the body is nobody's.
                let _ = self.blobs.delete(&pin.id).await;
            }
            if let (Ok(appended), Some(text)) = (&outcome, text) {
                self.buffer_texts(vec![(appended.email, text)]).await;
            }
            outcome
        })
        .await
    }

    /// Changes the flags of messages (IMAP `STORE`, JMAP `Email/set` keywords). With
    /// `unchanged_since` (RFC 7162 `UNCHANGEDSINCE`), messages changed after that modseq
    /// are left alone and reported. Messages whose flags would not change keep their
    /// modseq.
    ///
    /// # Errors
    /// [`Error::NoSuchMailbox`] for an unknown mailbox; backend errors.
    #[tracing::instrument(level = "debug", skip_all, fields(account = %self.account(), requests = tracing::field::Empty, bytes_read = tracing::field::Empty, bytes_written = tracing::field::Empty))]
    pub async fn store_flags(
        &mut self,
        mailbox: MailboxId,
        uids: &[u32],
        change: FlagChange,
        unchanged_since: Option<u64>,
    ) -> Result<FlagsStored> {
        metered(async move {
            let uids = uids.to_vec();
            let (mut stored, info) = self
                .write_with_info(move |c, modseq| {
                    require_mailbox(c, &mailbox)?;
                    let mut plan = Plan::new();
                    let mut stored = FlagsStored {
                        modseq,
                        ..FlagsStored::default()
                    };
                    for (uid, instance, mut message) in select_uids(c, &mailbox, &uids)? {
                        if unchanged_since.is_some_and(|since| message.modseq > since) {
                            stored.modified.push(uid);
                            continue;
                        }
                        let flags = change.apply(&message.flags);
                        if flags == message.flags {
                            continue;
                        }
                        message.flags = flags;
                        message.modseq = modseq;
                        plan.batch
                            .put(keys::message(&mailbox, uid, &instance), message.to_bytes());
                        stored.updated.push(uid);
                    }
                    Ok((plan, stored))
                })
                .await?;
            stored.modseq = reported_modseq(&info, stored.modseq);
            Ok(stored)
        })
        .await
    }

    /// Copies messages to another mailbox (or the same): new UIDs, same bodies (nothing
    /// copied but records), flags kept.
    ///
    /// # Errors
    /// [`Error::NoSuchMailbox`] for an unknown mailbox; backend errors.
    #[tracing::instrument(level = "debug", skip_all, fields(account = %self.account(), requests = tracing::field::Empty, bytes_read = tracing::field::Empty, bytes_written = tracing::field::Empty))]
    pub async fn copy(&mut self, from: MailboxId, uids: &[u32], to: MailboxId) -> Result<Copied> {
        metered(async move { self.transfer(from, uids, to, false).await }).await
    }

    /// Moves messages to another mailbox (IMAP `MOVE`): as [`copy`](Self::copy), and the
    /// sources are expunged, in one commit.
    ///
    /// # Errors
    /// As [`copy`](Self::copy).
    #[tracing::instrument(level = "debug", skip_all, fields(account = %self.account(), requests = tracing::field::Empty, bytes_read = tracing::field::Empty, bytes_written = tracing::field::Empty))]
    pub async fn move_messages(
        &mut self,
        from: MailboxId,
        uids: &[u32],
        to: MailboxId,
    ) -> Result<Copied> {
        metered(async move { self.transfer(from, uids, to, true).await }).await
    }

    async fn transfer(
        &mut self,
        from: MailboxId,
        uids: &[u32],
        to: MailboxId,
        remove: bool,
    ) -> Result<Copied> {
        let uids = uids.to_vec();
        let instances: Vec<Instance> = (0..uids.len() * 2).map(|_| self.rng.array()).collect();
        let (quota, memo) = (self.quota_check().await?, self.usage_memo.clone());
        let (mut copied, info) = self
            .write_with_info(move |c, modseq| {
                require_mailbox(c, &from)?;
                let target = require_mailbox(c, &to)?;
                let mut next = uid_next(c, &to)?;
                if !remove {
                    // Copies count: a copy adds its size to the usage.
                    let adding = select_uids(c, &from, &uids)?
                        .iter()
                        .map(|(_, _, m)| m.size)
                        .sum();
                    check_quota(c, quota, adding, &memo)?;
                }
                let mut plan = Plan::new();
                let mut copied = Copied {
                    uid_validity: target.uid_validity,
                    uids: Vec::new(),
                    modseq,
                };
                for (i, (uid, instance, message)) in
                    select_uids(c, &from, &uids)?.into_iter().enumerate()
                {
                    let new_instance = instances
                        .get(i)
                        .copied()
                        .ok_or_else(|| Error::invalid("conflicting UIDs"))?;
                    let copy = MessageRecord {
                        modseq,
                        ..message.clone()
                    };
                    plan.add_message(&to, next, &new_instance, &copy);
                    copied.uids.push((uid, next));
                    next = next.checked_add(1).ok_or_else(|| {
                        Error::LimitReached("the UIDs of this mailbox are exhausted".into())
                    })?;
                    if remove {
                        plan.remove_message(&from, uid, &instance, &message.email, modseq);
                    }
                }
                Ok((plan, copied))
            })
            .await?;
        copied.modseq = reported_modseq(&info, copied.modseq);
        Ok(copied)
    }

    /// Expunges the messages flagged `\Deleted` (all of them, or those among `uids`: IMAP
    /// `UID EXPUNGE`). Bodies no message shows any more are deleted. Returns the UIDs
    /// expunged.
    ///
    /// # Errors
    /// [`Error::NoSuchMailbox`] for an unknown mailbox; backend errors.
    #[tracing::instrument(level = "debug", skip_all, fields(account = %self.account(), requests = tracing::field::Empty, bytes_read = tracing::field::Empty, bytes_written = tracing::field::Empty))]
    pub async fn expunge(&mut self, mailbox: MailboxId, uids: Option<&[u32]>) -> Result<Vec<u32>> {
        metered(async move {
            let within: Option<BTreeSet<u32>> = uids.map(|u| u.iter().copied().collect());
            self.remove_where(mailbox, None, move |uid, m| {
                m.flags.contains(Flags::DELETED) && within.as_ref().is_none_or(|w| w.contains(&uid))
            })
            .await
        })
        .await
    }

    /// Removes messages whatever their flags (JMAP `Email/set` destroy). Returns the UIDs
    /// removed.
    ///
    /// # Errors
    /// As [`expunge`](Self::expunge).
    #[tracing::instrument(level = "debug", skip_all, fields(account = %self.account(), requests = tracing::field::Empty, bytes_read = tracing::field::Empty, bytes_written = tracing::field::Empty))]
    pub async fn remove(&mut self, mailbox: MailboxId, uids: &[u32]) -> Result<Vec<u32>> {
        metered(async move {
            self.remove_where(mailbox, Some(uids.to_vec()), |_, _| true)
                .await
        })
        .await
    }

    /// Removes, in one commit, the messages among `among` (every message when `None`)
    /// that `which` selects.
    async fn remove_where(
        &mut self,
        mailbox: MailboxId,
        among: Option<Vec<u32>>,
        which: impl Fn(u32, &MessageRecord) -> bool,
    ) -> Result<Vec<u32>> {
        let mode = self.index.mode();
        let (removed, released) = self
            .write(move |c, modseq| {
                require_mailbox(c, &mailbox)?;
                let mut plan = Plan::new();
                let mut removed = Vec::new();
                let candidates = match &among {
                    Some(uids) => select_uids(c, &mailbox, uids)?,
                    None => messages(c, &mailbox)?,
                };
                for (uid, instance, message) in candidates {
                    if which(uid, &message) {
                        plan.remove_message(&mailbox, uid, &instance, &message.email, modseq);
                        removed.push(uid);
                    }
                }
                let released = plan.release(c, mode);
                removed.dedup();
                Ok((plan, (removed, released)))
            })
            .await?;
        self.delete_bodies(released).await;
        Ok(removed)
    }
}
