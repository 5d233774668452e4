//! The conformance suite against every backend and decorator.

use std::sync::Arc;

use mailvault::storage::{Capabilities, CountingStore, FaultyStore, NoCasStore};
use mailvault::testkit::conformance;

const CAS: Capabilities = Capabilities {
    conditional_create: true,
    conditional_update: true,
};
const CREATE_ONLY: Capabilities = Capabilities {
    conditional_create: true,
    conditional_update: false,
};
const NO_CAS: Capabilities = Capabilities {
    conditional_create: false,
    conditional_update: false,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory() {
    conformance::run(super::memory(), CAS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let store = mailvault::storage::open_store(dir.path().to_str().unwrap()).unwrap();
    conformance::run(store, CREATE_ONLY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counting_decorator() {
    conformance::run(Arc::new(CountingStore::new(super::memory())), CAS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_decorator_without_fault() {
    conformance::run(Arc::new(FaultyStore::new(super::memory(), None)), CAS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cas_decorator_on_memory() {
    conformance::run(Arc::new(NoCasStore::new(super::memory())), NO_CAS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cas_decorator_on_local_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let local = mailvault::storage::open_store(dir.path().to_str().unwrap()).unwrap();
    conformance::run(Arc::new(NoCasStore::new(local)), NO_CAS).await;
}

/// Garage 2.5 accepts conditional headers and ignores them: the probe must say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garage() {
    if let Some(store) = mailvault::testkit::s3_from_env("GARAGE") {
        conformance::run(store, NO_CAS).await;
    }
}

/// moto_server honours If-None-Match and If-Match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto() {
    if let Some(store) = mailvault::testkit::s3_from_env("MOTO") {
        conformance::run(store, CAS).await;
    }
}
