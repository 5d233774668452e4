//! The reference server's modules, a library so that the `mailvault` binary
//! (`src/main.rs`) and the fuzz targets (`fuzz/fuzz_targets/imap_session.rs`) share
//! them: the configuration file, the IMAP and LMTP sessions, TLS. Like the binary, it
//! uses only the `mailvault` library's public API.
#![forbid(unsafe_code)]

pub mod config;
pub mod export;
pub mod imap;
pub mod imap_source;
pub mod keyops;
pub mod lmtp;
pub mod migrate;
pub mod mutf7;
pub mod tls;
