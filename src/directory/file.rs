use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::sync::Mutex;

use super::{
    AccountRecord, DeliveryKeyEntry, Directory, KeyModel, Mark, OfficerAction, OfficerKeyEntry,
    OfficerLogEntry, OfficerPublicKey, RecordName,
};
use crate::error::{Error, Result};
use crate::ids::AccountId;

/// A [`Directory`] in a local directory, shareable by several processes: one file per
/// mark, `<account>/<record>`, holding `<generation> <digest hex>` (or a bare generation,
/// as older versions wrote); the account record in `<account>/account.rec`; the officer
/// keys in `officers.rec`; the officer log in `officer.log`, one entry a line (`<account
/// hex> <action> <officer key hex> <time>`), extended by rewriting the whole file with one
/// line more.
///
/// Every change runs under an exclusive lock of `<root>/.lock` (`flock`, through std's
/// `File::lock`), taken after an in-process mutex, so a compare-and-set is atomic across
/// threads and processes. Every write goes to a temporary file whose name is unique to the
/// process and the write (`.tmp-<pid>-<n>-<name>`), is fsynced, renamed into place and the
/// folder fsynced, so it survives a crash and readers (which take no lock) see the old or
/// the new content, never a mix.
#[derive(Debug)]
pub struct FileDirectory {
    root: PathBuf,
    lock: Mutex<()>,
}

/// The file every process locks before changing anything.
const LOCK_FILE: &str = ".lock";

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

    /// Runs `work` on a blocking thread holding the directory's lock: the in-process
    /// mutex, then an exclusive lock of [`LOCK_FILE`] shared with other processes.
    async fn exclusive<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let _guard = self.lock.lock().await;
        let lock_path = self.root.join(LOCK_FILE);
        blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|e| io_error(&lock_path, e))?;
            file.lock().map_err(|e| io_error(&lock_path, e))?;
            let out = work();
            // Closing the file releases the lock as well; unlock first to say so.
            let _ = file.unlock();
            out
        })
        .await
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

/// `<generation>` or `<generation> <digest hex>`; a missing file is [`Mark::NONE`].
fn read_mark(path: &Path) -> Result<Mark> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Mark::NONE),
        Err(e) => return Err(io_error(path, e)),
    };
    let mut fields = text.split_whitespace();
    let generation = fields
        .next()
        .and_then(|g| g.parse().ok())
        .ok_or_else(|| corrupt(path))?;
    let digest = match fields.next() {
        None => [0; 32],
        Some(hex) => unhex32(hex).ok_or_else(|| corrupt(path))?,
    };
    if fields.next().is_some() {
        return Err(corrupt(path));
    }
    Ok(Mark::new(generation, digest))
}

fn write_mark(path: &Path, mark: Mark) -> Result<()> {
    let text = format!("{} {}\n", mark.generation, crate::ids::hex(&mark.digest));
    write_atomic(path, text.as_bytes())
}

/// Writes `bytes` as `path` whole (see [`crate::localfs`]), over the file it replaces.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let how = crate::localfs::Placement {
        private: false,
        replace: true,
    };
    crate::localfs::write_file(path, bytes, how).map_err(|(at, e)| io_error(&at, e))
}

fn corrupt(path: &Path) -> Error {
    Error::Config(format!("directory file {} is corrupt", path.display()))
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks_exact(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// `model <n>`, `secret <hex>`, then `epoch <n> <hex public key>` lines, then
/// `storage-limit <bytes>` and `message-limit <bytes>` when set.
fn encode_record(record: &AccountRecord) -> zeroize::Zeroizing<String> {
    let mut out = format!(
        "model {}\nsecret {}\n",
        record.model.number(),
        crate::ids::hex(record.secret())
    );
    for (epoch, key) in &record.public_keys {
        out.push_str(&format!("epoch {epoch} {}\n", crate::ids::hex(key)));
    }
    if let Some(bytes) = record.limits.storage {
        out.push_str(&format!("storage-limit {bytes}\n"));
    }
    if let Some(bytes) = record.limits.message_size {
        out.push_str(&format!("message-limit {bytes}\n"));
    }
    zeroize::Zeroizing::new(out)
}

fn decode_record(path: &Path, text: &str) -> Result<AccountRecord> {
    let mut model = None;
    let mut secret = None;
    let mut keys = Vec::new();
    let mut limits = super::AccountLimits::default();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["model", n] => model = n.parse().ok().and_then(KeyModel::from_number),
            ["secret", hex] => secret = unhex32(hex),
            ["epoch", n, hex] => keys.push((
                n.parse().map_err(|_| corrupt(path))?,
                unhex32(hex).ok_or_else(|| corrupt(path))?,
            )),
            ["storage-limit", n] => limits.storage = Some(n.parse().map_err(|_| corrupt(path))?),
            ["message-limit", n] => {
                limits.message_size = Some(n.parse().map_err(|_| corrupt(path))?)
            }
            _ => return Err(corrupt(path)),
        }
    }
    match (model, secret) {
        (Some(model), Some(secret)) => {
            let mut record = AccountRecord::new(model, keys, secret);
            record.limits = limits;
            Ok(record)
        }
        _ => Err(corrupt(path)),
    }
}

/// The officer log's entries, oldest first (an absent file is an empty log).
fn read_officer_log(path: &Path) -> Result<Vec<OfficerLogEntry>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(path, e)),
    };
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [account, action, officer, time] = fields.as_slice() else {
                return Err(corrupt(path));
            };
            Ok(OfficerLogEntry {
                account: AccountId::from_hex(account).map_err(|_| corrupt(path))?,
                action: action
                    .parse()
                    .ok()
                    .and_then(OfficerAction::from_byte)
                    .ok_or_else(|| corrupt(path))?,
                officer: OfficerPublicKey::from_bytes(
                    unhex32(officer).ok_or_else(|| corrupt(path))?,
                ),
                time: time.parse().map_err(|_| corrupt(path))?,
            })
        })
        .collect()
}

fn encode_officer_log_entry(entry: &OfficerLogEntry) -> String {
    format!(
        "{} {} {} {}\n",
        entry.account.to_hex(),
        entry.action.to_byte(),
        crate::ids::hex(&entry.officer.to_bytes()),
        entry.time
    )
}

/// The delivery verification key set: one key a line, `<hex> current|retired`.
const DELIVERY_KEYS_FILE: &str = "delivery.rec";

/// Reads [`DELIVERY_KEYS_FILE`]; a line of a bare key (as older versions wrote the one
/// key) reads as the current key; a missing file as no key.
fn read_delivery_keys(path: &Path) -> Result<Vec<DeliveryKeyEntry>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(path, e)),
    };
    text.lines()
        .map(
            |line| match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                [hex] => Ok(DeliveryKeyEntry {
                    key: unhex32(hex).ok_or_else(|| corrupt(path))?,
                    current: true,
                }),
                [hex, state @ ("current" | "retired")] => Ok(DeliveryKeyEntry {
                    key: unhex32(hex).ok_or_else(|| corrupt(path))?,
                    current: *state == "current",
                }),
                _ => Err(corrupt(path)),
            },
        )
        .collect()
}

fn encode_delivery_keys(keys: &[DeliveryKeyEntry]) -> String {
    keys.iter()
        .map(|k| {
            format!(
                "{} {}\n",
                crate::ids::hex(&k.key),
                if k.current { "current" } else { "retired" }
            )
        })
        .collect()
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Config(format!("directory task: {e}")))?
}

#[async_trait]
impl Directory for FileDirectory {
    async fn mark(&self, account: &AccountId, record: &RecordName) -> Result<Mark> {
        let path = self.path(account, record)?;
        blocking(move || read_mark(&path)).await
    }

    async fn compare_and_set_mark(
        &self,
        account: &AccountId,
        record: &RecordName,
        expected: Mark,
        new: Mark,
    ) -> Result<bool> {
        let path = self.path(account, record)?;
        if new.generation < expected.generation {
            return Ok(false);
        }
        self.exclusive(move || {
            if read_mark(&path)? != expected {
                return Ok(false);
            }
            write_mark(&path, new)?;
            Ok(true)
        })
        .await
    }

    async fn issue_delivery_numbers(&self, account: &AccountId, count: u64) -> Result<u64> {
        // One read-and-raise under the lock (no compare-and-set retries under contention).
        let path = self.path(account, super::DELIVERY_COUNTER_RECORD)?;
        self.exclusive(move || {
            let next = read_mark(&path)?.generation.saturating_add(count);
            write_mark(&path, Mark::generation_only(next))?;
            Ok(next)
        })
        .await
    }

    async fn account_record(&self, account: &AccountId) -> Result<Option<AccountRecord>> {
        let path = self.root.join(account.to_hex()).join("account.rec");
        blocking(move || match std::fs::read_to_string(&path) {
            Ok(text) => decode_record(&path, &text).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path, e)),
        })
        .await
    }

    async fn set_account_record(&self, account: &AccountId, record: AccountRecord) -> Result<()> {
        let path = self.root.join(account.to_hex()).join("account.rec");
        self.exclusive(move || write_atomic(&path, encode_record(&record).as_bytes()))
            .await
    }

    async fn erase_account(&self, account: &AccountId) -> Result<()> {
        let dir = self.root.join(account.to_hex());
        let root = self.root.clone();
        self.exclusive(move || {
            // The secret first, durably; then the marks.
            let record = dir.join("account.rec");
            match std::fs::remove_file(&record) {
                Ok(()) => std::fs::File::open(&dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| io_error(&dir, e))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&record, e)),
            }
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&dir, e)),
            }
            std::fs::File::open(&root)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error(&root, e))
        })
        .await
    }

    async fn officer_keys(&self) -> Result<Vec<OfficerKeyEntry>> {
        let path = self.root.join("officers.rec");
        blocking(move || {
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(io_error(&path, e)),
            };
            text.lines()
                .map(
                    |line| match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                        [hex, state @ ("current" | "retired")] => Ok(OfficerKeyEntry {
                            key: OfficerPublicKey::from_bytes(
                                unhex32(hex).ok_or_else(|| corrupt(&path))?,
                            ),
                            current: *state == "current",
                        }),
                        _ => Err(corrupt(&path)),
                    },
                )
                .collect()
        })
        .await
    }

    async fn set_officer_keys(&self, keys: Vec<OfficerKeyEntry>) -> Result<()> {
        let path = self.root.join("officers.rec");
        let text: String = keys
            .iter()
            .map(|k| {
                format!(
                    "{} {}\n",
                    crate::ids::hex(&k.key.to_bytes()),
                    if k.current { "current" } else { "retired" }
                )
            })
            .collect();
        self.exclusive(move || write_atomic(&path, text.as_bytes()))
            .await
    }

    async fn delivery_key(&self) -> Result<Option<[u8; 32]>> {
        Ok(self
            .delivery_keys()
            .await?
            .into_iter()
            .find(|k| k.current)
            .map(|k| k.key))
    }

    async fn set_delivery_key(&self, key: [u8; 32]) -> Result<()> {
        let path = self.root.join(DELIVERY_KEYS_FILE);
        self.exclusive(move || {
            let keys = super::rotated_delivery_keys(&read_delivery_keys(&path)?, key);
            write_atomic(&path, encode_delivery_keys(&keys).as_bytes())
        })
        .await
    }

    async fn delivery_keys(&self) -> Result<Vec<DeliveryKeyEntry>> {
        let path = self.root.join(DELIVERY_KEYS_FILE);
        blocking(move || read_delivery_keys(&path)).await
    }

    async fn set_delivery_keys(&self, keys: Vec<DeliveryKeyEntry>) -> Result<()> {
        let path = self.root.join(DELIVERY_KEYS_FILE);
        let text = encode_delivery_keys(&keys);
        self.exclusive(move || write_atomic(&path, text.as_bytes()))
            .await
    }

    async fn append_officer_log(&self, entry: &OfficerLogEntry) -> Result<u64> {
        let path = self.root.join("officer.log");
        let line = encode_officer_log_entry(entry);
        self.exclusive(move || {
            // A log that does not parse is never extended (nor silently buried).
            let count = read_officer_log(&path)?.len() as u64;
            let mut text = match std::fs::read(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(io_error(&path, e)),
            };
            text.extend_from_slice(line.as_bytes());
            write_atomic(&path, &text)?;
            Ok(count)
        })
        .await
    }

    async fn officer_log(
        &self,
        account: Option<&AccountId>,
    ) -> Result<Vec<(u64, OfficerLogEntry)>> {
        let path = self.root.join("officer.log");
        let account = account.copied();
        let _guard = self.lock.lock().await;
        blocking(move || {
            Ok(read_officer_log(&path)?
                .into_iter()
                .enumerate()
                .filter(|(_, e)| account.is_none_or(|a| e.account == a))
                .map(|(i, e)| (i as u64, e))
                .collect())
        })
        .await
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

    #[tokio::test]
    async fn compare_and_set_replaces_only_the_expected_mark_and_reads_older_files() {
        let dir = tempfile::tempdir().unwrap();
        let account = AccountId::from_bytes([3; 16]);
        let directory = FileDirectory::open(dir.path()).unwrap();
        let first = Mark::new(1, [1; 32]);
        assert!(directory
            .compare_and_set_mark(&account, "keyring", Mark::NONE, first)
            .await
            .unwrap());
        assert!(!directory
            .compare_and_set_mark(&account, "keyring", Mark::NONE, Mark::new(1, [2; 32]))
            .await
            .unwrap());
        assert!(!directory
            .compare_and_set_mark(&account, "keyring", first, Mark::new(0, [2; 32]))
            .await
            .unwrap());
        let reopened = FileDirectory::open(dir.path()).unwrap();
        assert_eq!(reopened.mark(&account, "keyring").await.unwrap(), first);
        // A mark file of an older version: a bare generation.
        std::fs::write(dir.path().join(account.to_hex()).join("i-old"), "42").unwrap();
        assert_eq!(
            reopened.mark(&account, "i-old").await.unwrap(),
            Mark::generation_only(42)
        );
        std::fs::write(dir.path().join(account.to_hex()).join("i-bad"), "4 zz").unwrap();
        assert!(reopened.mark(&account, "i-bad").await.is_err());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join(account.to_hex()))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[tokio::test]
    async fn delivery_keys_rotate_keep_retired_keys_and_read_the_older_single_key_file() {
        let dir = tempfile::tempdir().unwrap();
        // As older versions wrote it: one bare key, read as the current key.
        std::fs::write(
            dir.path().join(DELIVERY_KEYS_FILE),
            format!("{}\n", crate::ids::hex(&[1; 32])),
        )
        .unwrap();
        let directory = FileDirectory::open(dir.path()).unwrap();
        assert_eq!(directory.delivery_key().await.unwrap(), Some([1; 32]));
        directory.set_delivery_key([2; 32]).await.unwrap();
        let rotated = vec![
            DeliveryKeyEntry {
                key: [1; 32],
                current: false,
            },
            DeliveryKeyEntry {
                key: [2; 32],
                current: true,
            },
        ];
        let reopened = FileDirectory::open(dir.path()).unwrap();
        assert_eq!(reopened.delivery_keys().await.unwrap(), rotated);
        assert_eq!(reopened.delivery_key().await.unwrap(), Some([2; 32]));
        // Removing the retired key.
        reopened
            .set_delivery_keys(rotated[1..].to_vec())
            .await
            .unwrap();
        assert_eq!(directory.delivery_keys().await.unwrap(), rotated[1..]);
        std::fs::write(dir.path().join(DELIVERY_KEYS_FILE), "zz current\n").unwrap();
        assert!(directory.delivery_keys().await.is_err());
    }

    #[tokio::test]
    async fn account_records_and_officer_keys_survive_reopening_and_erase_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let account = AccountId::from_bytes([2; 16]);
        let directory = FileDirectory::open(dir.path()).unwrap();
        let record = AccountRecord::new(
            KeyModel::ServerManaged,
            vec![(1, [7; 32]), (2, [8; 32])],
            [9; 32],
        );
        directory
            .set_account_record(&account, record)
            .await
            .unwrap();
        directory
            .raise_high_water_mark(&account, "keyring", 3)
            .await
            .unwrap();
        let officers = vec![
            OfficerKeyEntry {
                key: OfficerPublicKey::from_bytes([1; 32]),
                current: true,
            },
            OfficerKeyEntry {
                key: OfficerPublicKey::from_bytes([2; 32]),
                current: false,
            },
        ];
        directory.set_officer_keys(officers.clone()).await.unwrap();
        let reopened = FileDirectory::open(dir.path()).unwrap();
        let back = reopened.account_record(&account).await.unwrap().unwrap();
        assert_eq!(
            (back.model, back.public_keys.clone(), *back.secret()),
            (
                KeyModel::ServerManaged,
                vec![(1, [7; 32]), (2, [8; 32])],
                [9; 32]
            )
        );
        assert_eq!(reopened.officer_keys().await.unwrap(), officers);
        reopened.erase_account(&account).await.unwrap();
        assert!(reopened.account_record(&account).await.unwrap().is_none());
        assert_eq!(
            reopened.high_water_mark(&account, "keyring").await.unwrap(),
            0
        );
        assert!(!dir.path().join(account.to_hex()).exists());
    }

    #[tokio::test]
    async fn the_officer_log_only_grows_survives_reopening_and_erase() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            AccountId::from_bytes([3; 16]),
            AccountId::from_bytes([4; 16]),
        );
        let directory = FileDirectory::open(dir.path()).unwrap();
        let entry = |account, action, time| OfficerLogEntry {
            account,
            action,
            officer: OfficerPublicKey::from_bytes([5; 32]),
            time,
        };
        let entries = [
            entry(a, OfficerAction::Open, 10),
            entry(b, OfficerAction::Audit, 11),
            entry(a, OfficerAction::ResetPassword, 12),
        ];
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(directory.append_officer_log(e).await.unwrap(), i as u64);
        }
        directory.erase_account(&a).await.unwrap();
        let reopened = FileDirectory::open(dir.path()).unwrap();
        assert_eq!(
            reopened.officer_log(None).await.unwrap(),
            vec![(0, entries[0]), (1, entries[1]), (2, entries[2])]
        );
        assert_eq!(
            reopened.officer_log(Some(&a)).await.unwrap(),
            vec![(0, entries[0]), (2, entries[2])]
        );
        // A damaged log is refused, never extended.
        std::fs::write(dir.path().join("officer.log"), "garbage\n").unwrap();
        assert!(reopened.officer_log(None).await.is_err());
        assert!(reopened.append_officer_log(&entries[0]).await.is_err());
    }
}
