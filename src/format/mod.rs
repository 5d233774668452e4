//! Layer 2: byte layouts of every stored object, parsers split from writers.
//!
//! Every parser here takes untrusted bytes: it checks lengths before reading, never
//! panics, and is fuzzed (`fuzz/`). The layouts are described byte by byte in
//! `docs/design.md`.

pub(crate) mod armor;
pub mod blob;
pub mod delivery;
pub mod index;
pub mod keyring;
pub mod mail;
pub mod pin;
mod reader;
pub mod search;
pub mod slot;

pub use blob::{BlobHeader, BlobKind, BlobLayout};
pub use pin::BlobPin;
