//! Removal of what nothing references (`mailvault gc`, §17.1 of docs/design.md): the
//! index's own collection ([`Mailstore::collect_garbage`](crate::mail::Mailstore::collect_garbage):
//! released bodies, superseded manifests and segments), then the orphans a verification
//! finds (bodies of killed appends and deliveries, index objects no manifest lists,
//! keyring versions the directory did not accept), then the staging files a local
//! store's `object_store` backend leaves when a process dies mid-upload.

use std::path::Path;

use object_store::ObjectStoreExt;
use std::time::Duration;

use super::verify::{Damage, Finding, ObjectKind, VerifyOptions};
use super::{Provider, Session};
use crate::error::{Error, Result};
use crate::ids::AccountId;
use crate::storage::naming;

/// How [`Provider::collect_account_garbage`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcOptions {
    /// Only what is older than this (and, for index objects, superseded for this long)
    /// is removed; raised to the index's `verify_after` (§8.6) when shorter.
    pub grace: Duration,
    /// Report what would be removed; remove nothing.
    pub dry_run: bool,
    /// The store's root folder when it is a local directory: its staging files
    /// (`<object>#<digits>`, what `object_store`'s `LocalFileSystem` writes before putting
    /// an object in place) under the account's prefix are removed too.
    pub local_root: Option<std::path::PathBuf>,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(3600),
            dry_run: false,
            local_root: None,
        }
    }
}

/// What [`Provider::collect_account_garbage`] removed (or, dry, would remove).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GcSummary {
    /// Released bodies the index's collection deleted.
    pub released_bodies: usize,
    /// Manifests and segments the index's collection deleted.
    pub index_objects: usize,
    /// Orphans found by verification, removed (each with its kind, name and size).
    pub orphans: Vec<Finding>,
    /// Staging files removed: path and size.
    pub staging_files: Vec<(String, u64)>,
    /// What was not done, and why.
    pub skipped: Vec<String>,
}

impl Provider {
    /// Removes what nothing references in `account`'s store (see the module
    /// documentation of `engine::gc`). With `session` (the account's keys) everything;
    /// without, only keyring versions the directory did not accept and staging files
    /// (which bodies and index objects are referenced needs the keys). Nothing is removed
    /// by reference when the verification finds damage (missing, tampered, rolled back
    /// or unreadable objects): a damaged index would make live bodies look orphaned.
    /// `progress(objects, bytes)` is called as the verification checks objects (as in
    /// [`verify_account`](Self::verify_account)).
    ///
    /// # Errors
    /// As [`Mailstore::collect_garbage`](crate::mail::Mailstore::collect_garbage) and
    /// [`verify_account`](Self::verify_account); a failure to remove an object.
    pub async fn collect_account_garbage(
        &self,
        account: AccountId,
        session: Option<&Session>,
        options: &GcOptions,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<GcSummary> {
        let mut summary = GcSummary::default();
        let mut grace = options.grace;
        if let Some(session) = session {
            let mut mail = session.mailstore().await?;
            grace = grace.max(mail.min_gc_grace());
            if options.dry_run {
                summary
                    .skipped
                    .push("dry run: the index's own collection was not run".to_owned());
            } else {
                let report = mail.collect_garbage(grace).await?;
                summary.released_bodies = report.bodies;
                summary.index_objects = report.index.manifests + report.index.segments;
            }
        } else {
            summary.skipped.push(
                "without the account's keys: bodies and index objects are not collected \
                 (which are referenced needs the keys)"
                    .to_owned(),
            );
        }
        let verify = VerifyOptions {
            grace,
            ..VerifyOptions::default()
        };
        let report = self
            .verify_account(account, session, &verify, progress)
            .await?;
        let damaged = report
            .findings
            .iter()
            .filter(|f| f.damage != Damage::Orphaned)
            .count();
        if damaged > 0 {
            summary.skipped.push(format!(
                "{damaged} damaged object(s) found (run verify): nothing removed by reference"
            ));
        } else {
            for finding in report.findings {
                if finding.kind == ObjectKind::Unknown {
                    // Not a name the library writes: not ours to remove.
                    continue;
                }
                if !options.dry_run {
                    let path = object_store::path::Path::from(finding.path.as_str());
                    match self.store.delete(&path).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                summary.orphans.push(finding);
            }
        }
        if let Some(root) = &options.local_root {
            let prefix = root.join(naming::account_prefix(&account).as_ref());
            let cutoff = std::time::SystemTime::now()
                .checked_sub(grace)
                .unwrap_or(std::time::UNIX_EPOCH);
            let mut found = Vec::new();
            staging_files(&prefix, cutoff, &mut found).map_err(|e| local_error(&prefix, e))?;
            for (path, size) in found {
                if !options.dry_run {
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(local_error(&path, e)),
                    }
                }
                summary
                    .staging_files
                    .push((path.to_string_lossy().into_owned(), size));
            }
        }
        Ok(summary)
    }
}

/// A local file operation's failure, as the backend's.
fn local_error(path: &Path, e: std::io::Error) -> Error {
    Error::Backend {
        source: object_store::Error::Generic {
            store: "LocalFileSystem",
            source: format!("{}: {e}", path.display()).into(),
        },
    }
}

/// Whether `name` is a staging file's name of `object_store`'s `LocalFileSystem`:
/// `<object name>#<digits>` (its listing skips such files, so they are invisible through
/// the store).
fn is_staging_name(name: &str) -> bool {
    name.rsplit_once('#').is_some_and(|(object, suffix)| {
        !object.is_empty() && !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit())
    })
}

/// The staging files under `dir` last modified before `cutoff`, with their sizes.
fn staging_files(
    dir: &Path,
    cutoff: std::time::SystemTime,
    out: &mut Vec<(std::path::PathBuf, u64)>,
) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_dir() {
            staging_files(&path, cutoff, out)?;
        } else if kind.is_file() && is_staging_name(&entry.file_name().to_string_lossy()) {
            let meta = entry.metadata()?;
            if meta.modified()? < cutoff {
                out.push((path, meta.len()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names() {
        assert!(is_staging_name("0123abcd#1"));
        assert!(is_staging_name("0000000000000003#12"));
        assert!(!is_staging_name("0123abcd"));
        assert!(!is_staging_name("0123abcd#"));
        assert!(!is_staging_name("#12"));
        assert!(!is_staging_name("notes#x1"));
    }
}
