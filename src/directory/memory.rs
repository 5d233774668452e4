use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;

use super::{Directory, RecordName};
use crate::error::Result;
use crate::ids::AccountId;

/// A [`Directory`] in process memory, for tests and examples.
#[derive(Debug, Default)]
pub struct MemoryDirectory {
    marks: Mutex<HashMap<(AccountId, String), u64>>,
}

impl MemoryDirectory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Directory for MemoryDirectory {
    async fn high_water_mark(&self, account: &AccountId, record: &RecordName) -> Result<u64> {
        let marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(marks
            .get(&(*account, record.to_string()))
            .copied()
            .unwrap_or(0))
    }

    async fn raise_high_water_mark(
        &self,
        account: &AccountId,
        record: &RecordName,
        generation: u64,
    ) -> Result<()> {
        let mut marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        let mark = marks.entry((*account, record.to_string())).or_insert(0);
        *mark = (*mark).max(generation);
        Ok(())
    }
}
