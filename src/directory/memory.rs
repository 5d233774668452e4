use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;

use super::{
    AccountRecord, DeliveryKeyEntry, Directory, Mark, OfficerKeyEntry, OfficerLogEntry, RecordName,
};
use crate::error::Result;
use crate::ids::AccountId;

/// A [`Directory`] in process memory, for tests and examples.
#[derive(Default)]
pub struct MemoryDirectory {
    marks: Mutex<HashMap<(AccountId, String), Mark>>,
    accounts: Mutex<HashMap<AccountId, AccountRecord>>,
    officers: Mutex<Vec<OfficerKeyEntry>>,
    delivery_keys: Mutex<Vec<DeliveryKeyEntry>>,
    officer_log: Mutex<Vec<OfficerLogEntry>>,
}

impl std::fmt::Debug for MemoryDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryDirectory").finish_non_exhaustive()
    }
}

impl MemoryDirectory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }
}

/// A copy of the directory as it is now (accounts, marks, keys, log), independent of it
/// afterwards: with `InMemory::fork` of the store, a deployment reset to a known state
/// (the IMAP fuzz target starts each input from one).
impl Clone for MemoryDirectory {
    fn clone(&self) -> Self {
        fn copy<T: Clone>(m: &Mutex<T>) -> Mutex<T> {
            Mutex::new(m.lock().unwrap_or_else(PoisonError::into_inner).clone())
        }
        Self {
            marks: copy(&self.marks),
            accounts: copy(&self.accounts),
            officers: copy(&self.officers),
            delivery_keys: copy(&self.delivery_keys),
            officer_log: copy(&self.officer_log),
        }
    }
}

#[async_trait]
impl Directory for MemoryDirectory {
    async fn mark(&self, account: &AccountId, record: &RecordName) -> Result<Mark> {
        let marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(marks
            .get(&(*account, record.to_string()))
            .copied()
            .unwrap_or(Mark::NONE))
    }

    async fn compare_and_set_mark(
        &self,
        account: &AccountId,
        record: &RecordName,
        expected: Mark,
        new: Mark,
    ) -> Result<bool> {
        if new.generation < expected.generation {
            return Ok(false);
        }
        let mut marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        let mark = marks
            .entry((*account, record.to_string()))
            .or_insert(Mark::NONE);
        if *mark != expected {
            return Ok(false);
        }
        *mark = new;
        Ok(true)
    }

    async fn issue_delivery_numbers(&self, account: &AccountId, count: u64) -> Result<u64> {
        let mut marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        let mark = marks
            .entry((*account, super::DELIVERY_COUNTER_RECORD.to_string()))
            .or_insert(Mark::NONE);
        *mark = Mark::generation_only(mark.generation.saturating_add(count));
        Ok(mark.generation)
    }

    async fn account_record(&self, account: &AccountId) -> Result<Option<AccountRecord>> {
        Ok(self
            .accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(account)
            .cloned())
    }

    async fn set_account_record(&self, account: &AccountId, record: AccountRecord) -> Result<()> {
        self.accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(*account, record);
        Ok(())
    }

    async fn erase_account(&self, account: &AccountId) -> Result<()> {
        self.accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(account);
        self.marks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(a, _), _| a != account);
        Ok(())
    }

    async fn officer_keys(&self) -> Result<Vec<OfficerKeyEntry>> {
        Ok(self
            .officers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone())
    }

    async fn set_officer_keys(&self, keys: Vec<OfficerKeyEntry>) -> Result<()> {
        *self.officers.lock().unwrap_or_else(PoisonError::into_inner) = keys;
        Ok(())
    }

    async fn delivery_key(&self) -> Result<Option<[u8; 32]>> {
        Ok(self
            .delivery_keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|k| k.current)
            .map(|k| k.key))
    }

    async fn set_delivery_key(&self, key: [u8; 32]) -> Result<()> {
        let mut keys = self
            .delivery_keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *keys = super::rotated_delivery_keys(&keys, key);
        Ok(())
    }

    async fn delivery_keys(&self) -> Result<Vec<DeliveryKeyEntry>> {
        Ok(self
            .delivery_keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone())
    }

    async fn set_delivery_keys(&self, keys: Vec<DeliveryKeyEntry>) -> Result<()> {
        *self
            .delivery_keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = keys;
        Ok(())
    }

    async fn append_officer_log(&self, entry: &OfficerLogEntry) -> Result<u64> {
        let mut log = self
            .officer_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        log.push(*entry);
        Ok(log.len() as u64 - 1)
    }

    async fn officer_log(
        &self,
        account: Option<&AccountId>,
    ) -> Result<Vec<(u64, OfficerLogEntry)>> {
        Ok(self
            .officer_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .enumerate()
            .filter(|(_, e)| account.is_none_or(|a| e.account == *a))
            .map(|(i, e)| (i as u64, *e))
            .collect())
    }
}
