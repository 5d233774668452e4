use std::path::PathBuf;
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;

use super::DynStore;
use crate::error::{Error, Result};

/// Which backend to open.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreConfig {
    /// A process-local in-memory store (tests, examples).
    Memory,
    /// A local directory, created if missing; every write is fsynced (file and directory)
    /// before it is acknowledged.
    Local {
        /// Root directory of the store.
        root: PathBuf,
    },
    /// An S3 bucket. Endpoint, region and credentials come from the standard `AWS_*`
    /// environment variables (`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`).
    #[cfg(feature = "s3")]
    S3 {
        /// Bucket name.
        bucket: String,
    },
}

impl StoreConfig {
    /// Parses a store URL: `memory://`, `file:///abs/dir`, a plain directory path, or
    /// `s3://bucket`.
    ///
    /// # Errors
    /// [`Error::Config`] for an unknown scheme or a URL without a bucket or path.
    pub fn from_url(url: &str) -> Result<Self> {
        if url == "memory://" || url == "memory:" {
            return Ok(StoreConfig::Memory);
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            #[cfg(feature = "s3")]
            {
                let bucket = rest.trim_end_matches('/');
                if bucket.is_empty() || bucket.contains('/') {
                    return Err(Error::Config(format!("expected s3://bucket, got {url}")));
                }
                return Ok(StoreConfig::S3 {
                    bucket: bucket.to_string(),
                });
            }
            #[cfg(not(feature = "s3"))]
            {
                let _ = rest;
                return Err(Error::Config("built without the `s3` feature".into()));
            }
        }
        if url.starts_with("file://") {
            let parsed = url::Url::parse(url).map_err(|e| Error::Config(format!("{url}: {e}")))?;
            let root = parsed
                .to_file_path()
                .map_err(|()| Error::Config(format!("{url}: not a local path")))?;
            return Ok(StoreConfig::Local { root });
        }
        if url.contains("://") || url.is_empty() {
            return Err(Error::Config(format!("unsupported store URL {url}")));
        }
        Ok(StoreConfig::Local {
            root: PathBuf::from(url),
        })
    }

    /// Opens the store, wrapped in a [`MeteredStore`](super::MeteredStore) (the requests
    /// and bytes of each public mail operation are recorded on its tracing span).
    ///
    /// # Errors
    /// [`Error::Config`] if the directory cannot be created or the S3 settings are
    /// incomplete.
    pub fn open(&self) -> Result<DynStore> {
        let store = self.open_unmetered()?;
        Ok(Arc::new(super::MeteredStore::new(store)))
    }

    fn open_unmetered(&self) -> Result<DynStore> {
        match self {
            StoreConfig::Memory => Ok(Arc::new(InMemory::new())),
            StoreConfig::Local { root } => {
                std::fs::create_dir_all(root)
                    .map_err(|e| Error::Config(format!("{}: {e}", root.display())))?;
                let store = LocalFileSystem::new_with_prefix(root)
                    .map_err(|e| Error::Config(format!("{}: {e}", root.display())))?
                    .with_fsync(true);
                Ok(Arc::new(store))
            }
            #[cfg(feature = "s3")]
            StoreConfig::S3 { bucket } => {
                use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
                let store = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_conditional_put(S3ConditionalPut::ETagMatch)
                    .build()
                    .map_err(|e| Error::Config(format!("s3://{bucket}: {e}")))?;
                Ok(Arc::new(store))
            }
        }
    }
}

/// Opens a store from a URL (see [`StoreConfig::from_url`]).
///
/// # Errors
/// As [`StoreConfig::from_url`] and [`StoreConfig::open`].
pub fn open_store(url: &str) -> Result<DynStore> {
    StoreConfig::from_url(url)?.open()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            StoreConfig::from_url("memory://").unwrap(),
            StoreConfig::Memory
        );
        assert_eq!(
            StoreConfig::from_url("file:///tmp/x").unwrap(),
            StoreConfig::Local {
                root: "/tmp/x".into()
            }
        );
        assert_eq!(
            StoreConfig::from_url("./data").unwrap(),
            StoreConfig::Local {
                root: "./data".into()
            }
        );
        #[cfg(feature = "s3")]
        assert_eq!(
            StoreConfig::from_url("s3://mail/").unwrap(),
            StoreConfig::S3 {
                bucket: "mail".into()
            }
        );
        assert!(StoreConfig::from_url("s3://").is_err());
        assert!(StoreConfig::from_url("gopher://x").is_err());
    }
}
