use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::sync::Mutex;

use super::{Directory, RecordName};
use crate::error::{Error, Result};
use crate::ids::AccountId;

/// A [`Directory`] in a local directory: one file per mark, `<account>/<record>`, holding
/// the generation in decimal. Each raise writes a temporary file, fsyncs it, renames it
/// into place and fsyncs the directory, so a raised mark survives a crash.
#[derive(Debug)]
pub struct FileDirectory {
    root: PathBuf,
    lock: Mutex<()>,
}

impl FileDirectory {
    /// A directory rooted at `root` (created if missing).
    ///
    /// # Errors
    /// [`Error::Config`] if `root` cannot be created.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)
            .map_err(|e| Error::Config(format!("{}: {e}", root.display())))?;
        Ok(Self {
            root,
            lock: Mutex::new(()),
        })
    }

    fn path(&self, account: &AccountId, record: &RecordName) -> Result<PathBuf> {
        let safe = !record.is_empty()
            && record
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && !record.starts_with('.');
        if !safe {
            return Err(Error::invalid(format!(
                "record name {record:?} is not a safe file name"
            )));
        }
        Ok(self.root.join(account.to_hex()).join(record))
    }
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Config(format!("directory file {}: {e}", path.display()))
}

fn read_mark(path: &Path) -> Result<u64> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| Error::Config(format!("directory file {} is corrupt", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_error(path, e)),
    }
}

fn write_mark(path: &Path, generation: u64) -> Result<()> {
    let dir = path
        .parent()
        .expect("mark files live in an account directory");
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(|e| io_error(&tmp, e))?;
    file.write_all(generation.to_string().as_bytes())
        .map_err(|e| io_error(&tmp, e))?;
    file.sync_all().map_err(|e| io_error(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

#[async_trait]
impl Directory for FileDirectory {
    async fn high_water_mark(&self, account: &AccountId, record: &RecordName) -> Result<u64> {
        let path = self.path(account, record)?;
        let _guard = self.lock.lock().await;
        tokio::task::spawn_blocking(move || read_mark(&path))
            .await
            .map_err(|e| Error::Config(format!("directory task: {e}")))?
    }

    async fn raise_high_water_mark(
        &self,
        account: &AccountId,
        record: &RecordName,
        generation: u64,
    ) -> Result<()> {
        let path = self.path(account, record)?;
        let _guard = self.lock.lock().await;
        tokio::task::spawn_blocking(move || {
            if read_mark(&path)? < generation {
                write_mark(&path, generation)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Config(format!("directory task: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn marks_only_rise_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let account = AccountId::from_bytes([1; 16]);
        let directory = FileDirectory::open(dir.path()).unwrap();
        assert_eq!(
            directory.high_water_mark(&account, "i-abc").await.unwrap(),
            0
        );
        directory
            .raise_high_water_mark(&account, "i-abc", 5)
            .await
            .unwrap();
        directory
            .raise_high_water_mark(&account, "i-abc", 3)
            .await
            .unwrap();
        let reopened = FileDirectory::open(dir.path()).unwrap();
        assert_eq!(
            reopened.high_water_mark(&account, "i-abc").await.unwrap(),
            5
        );
        assert!(reopened.high_water_mark(&account, "../x").await.is_err());
    }
}
