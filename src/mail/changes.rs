//! Changes since a modseq, per mailbox (CONDSTORE/QRESYNC) and per account (JMAP).

use super::*;

impl Mailstore {
    /// Changes of a mailbox since `modseq`.
    ///
    /// # Errors
    /// [`Error::NoSuchMailbox`] for an unknown mailbox; [`Error::Tampered`] for a record
    /// that does not parse.
    pub fn changes_since(&self, mailbox: MailboxId, modseq: u64) -> Result<MailboxChanges> {
        let record = require_mailbox(&self.index, &mailbox)?;
        let mut highest_modseq = record.modseq;
        let mut changed = Vec::new();
        for (k, v) in self.index.prefix(&keys::messages_of(&mailbox)) {
            let m = MessageRecord::peek_modseq(v)?;
            highest_modseq = highest_modseq.max(m);
            if m > modseq {
                let (_, uid, _) = keys::parse_message(k).ok_or(Error::Tampered)?;
                let message = MessageRecord::parse(v)?;
                changed.push(MessageSummary {
                    uid,
                    email: message.email,
                    flags: message.flags,
                    modseq: message.modseq,
                    size: message.size,
                });
            }
        }
        let mut vanished = Vec::new();
        for (k, v) in self.index.prefix(&keys::vanished_of(&mailbox)) {
            let expunged = VanishedRecord::parse(v)?.modseq;
            highest_modseq = highest_modseq.max(expunged);
            if expunged > modseq {
                vanished.push(keys::parse_vanished_uid(k).ok_or(Error::Tampered)?);
            }
        }
        Ok(MailboxChanges {
            changed,
            vanished,
            highest_modseq,
        })
    }

    /// Changes of the whole account since `modseq`, by EMAILID and mailbox id, from the
    /// records themselves (modseqs of message and mailbox records, vanished records,
    /// mailbox tombstones): exact however old `modseq` is.
    ///
    /// # Errors
    /// [`Error::Tampered`] for a record that does not parse.
    pub fn account_changes_since(&self, modseq: u64) -> Result<AccountChanges> {
        let c = &self.index;
        let mut changed = BTreeSet::new();
        let mut destroyed = BTreeSet::new();
        for (_, v) in c.prefix(&[keys::MESSAGE]) {
            let message = MessageRecord::parse(v)?;
            if message.modseq > modseq {
                changed.insert(message.email);
            }
        }
        for (_, v) in c.prefix(&[keys::VANISHED]) {
            let vanished = VanishedRecord::parse(v)?;
            if vanished.modseq <= modseq {
                continue;
            }
            let email = vanished.email;
            let gone = c.get(&keys::email(&email)).is_none()
                || c.prefix(&keys::references_of(&email)).next().is_none();
            if gone {
                destroyed.insert(email);
            } else {
                // Left one mailbox, still in another.
                changed.insert(email);
            }
        }
        let mut out = AccountChanges {
            modseq: c.generation(),
            ..AccountChanges::default()
        };
        for (id, record) in all_mailboxes(c)? {
            if record.modseq > modseq {
                out.mailboxes_changed.push(id);
            }
        }
        for (k, v) in c.prefix(&[keys::DELETED_MAILBOX]) {
            let id = MailboxId::from_bytes(keys::tagged_id(k).ok_or(Error::Tampered)?);
            if parse_number(v)? > modseq && c.get(&keys::mailbox(&id)).is_none() {
                out.mailboxes_destroyed.push(id);
            }
        }
        out.emails_changed = changed.difference(&destroyed).copied().collect();
        for email in &out.emails_changed {
            let created = match c.get(&keys::email(email)) {
                Some(bytes) => EmailRecord::parse(bytes)?.created_modseq,
                None => 0,
            };
            if created > modseq {
                out.emails_created.push(*email);
            } else {
                out.emails_updated.push(*email);
            }
        }
        out.emails_destroyed = destroyed.into_iter().collect();
        Ok(out)
    }
}
