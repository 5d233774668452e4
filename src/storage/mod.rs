//! Layer 3: the glue to `object_store`.
//!
//! - [`open_store`]: a store from a URL (`memory://`, a local directory, `s3://bucket`);
//!   local directories are opened with fsync on, so an acknowledged write survives a
//!   crash.
//! - [`naming`]: every object name the crate writes, in one place.
//! - [`get_bounded`], [`get_exact`], [`get_range`]: every read of a stored object, with a
//!   size bound known before the bytes arrive.
//! - [`probe_capabilities`]: finds out whether a backend really honours conditional
//!   writes, because some (Garage 2.5) accept the headers and ignore them.
//! - Test decorators that implement [`ObjectStore`] themselves: [`CountingStore`],
//!   [`FaultyStore`], [`GateStore`] and [`NoCasStore`].

/// `Debug` and `Display` of a decorator: its name around the inner store's.
macro_rules! decorator_fmt {
    ($decorator:ident) => {
        impl std::fmt::Debug for $decorator {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($decorator), "({:?})"), self.inner)
            }
        }

        impl std::fmt::Display for $decorator {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($decorator), "({})"), self.inner)
            }
        }
    };
}

mod bounded;
pub mod commit;
mod counting;
mod faulty;
mod gate;
pub mod metered;
pub mod naming;
mod nocas;
mod open;
mod probe;
mod scoped;

pub(crate) use bounded::exists;
pub use bounded::{get_bounded, get_exact, get_range, get_range_of};
pub use commit::{CommitMode, VersionName, VersionedObjects};
pub use counting::{CountingStore, Request, RequestKind};
pub use faulty::{Fault, FaultMode, FaultyStore};
pub use gate::{Gate, GateStore, Hold};
pub use metered::MeteredStore;
pub use nocas::NoCasStore;
pub use object_store::ObjectStore;
pub use open::{open_store, StoreConfig};
pub use probe::{probe_capabilities, Capabilities};
pub use scoped::AccountScopedStore;

/// The store handle the crate passes around.
pub type DynStore = std::sync::Arc<dyn ObjectStore>;
