//! Small files written whole to a local folder (the file directory's marks and records,
//! a companion's key file): a temporary file of a name no other write uses, fsynced, put
//! in place atomically, the folder fsynced; so a crash leaves the old file or the new one,
//! and two writes at once (threads or processes) never share a temporary file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How a file is put in place.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placement {
    /// Readable by its owner only (mode 0600 on Unix).
    pub(crate) private: bool,
    /// Renamed over an existing file; otherwise linked, never over an existing one
    /// (`AlreadyExists`).
    pub(crate) replace: bool,
}

/// Writes `bytes` as the file `path` (see the module), creating its folder if needed.
///
/// # Errors
/// The path and the failure of the first operation that failed; the temporary file is
/// removed.
pub(crate) fn write_file(
    path: &Path,
    bytes: &[u8],
    how: Placement,
) -> Result<(), (PathBuf, std::io::Error)> {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let at = |p: &Path| {
        let p = p.to_path_buf();
        move |e| (p, e)
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(at(dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    // A leading dot: no record, account, directory or key file name starts with one.
    let tmp = dir.join(format!(
        ".tmp-{}-{}-{name}",
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        if how.private {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(at(&tmp))?;
        file.write_all(bytes).map_err(at(&tmp))?;
        file.sync_all().map_err(at(&tmp))?;
        drop(file);
        if how.replace {
            std::fs::rename(&tmp, path).map_err(at(path))
        } else {
            let linked = std::fs::hard_link(&tmp, path).map_err(at(path));
            let _ = std::fs::remove_file(&tmp);
            linked
        }
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(at(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes of one file from several threads at once all succeed, and the file holds one
    /// of them whole (a temporary name per process was shared by the threads: one removed
    /// or replaced another's temporary file).
    #[test]
    fn concurrent_writes_of_one_file_each_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let how = Placement {
            private: true,
            replace: true,
        };
        std::thread::scope(|s| {
            for t in 0..8u8 {
                let path = &path;
                s.spawn(move || {
                    for i in 0..50u8 {
                        let text = vec![t ^ i; 4096 + usize::from(t)];
                        write_file(path, &text, how).unwrap();
                    }
                });
            }
        });
        let text = std::fs::read(&path).unwrap();
        assert!(text.iter().all(|b| *b == text[0]));
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary files left: {left:?}");
    }

    /// Without `replace`, an existing file stays and the write fails as `AlreadyExists`.
    #[test]
    fn a_new_file_never_replaces_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let how = Placement {
            private: true,
            replace: false,
        };
        write_file(&path, b"one", how).unwrap();
        let (_, e) = write_file(&path, b"two", how).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
