//! The files of a `FileDirectory` (the trusted directory on a local disk, which a companion
//! and a one-machine provider use): a mark, an account record, the officer keys, the
//! officer log and the delivery verification keys, each holding arbitrary bytes (a damaged
//! disk, a hand edit), must read as a value or as a typed error, never a panic; and what
//! reads as a value is written back and read again as the same value.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mailvault::directory::{Directory, FileDirectory};
use mailvault::ids::AccountId;

const ACCOUNT: &str = "0123456789abcdef0123456789abcdef";

/// One folder per fuzzing process, made once.
fn root() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("mailvault-fuzz-dir-{}", std::process::id()));
        std::fs::create_dir_all(root.join(ACCOUNT)).expect("the fuzz folder");
        root
    })
}

fuzz_target!(|data: &[u8]| {
    let root = root();
    let account = AccountId::from_hex(ACCOUNT).expect("account id");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let files = [
        root.join(ACCOUNT).join("usage"),
        root.join(ACCOUNT).join("account.rec"),
        root.join("officers.rec"),
        root.join("officer.log"),
        root.join("delivery.rec"),
    ];
    for file in &files {
        std::fs::write(file, data).expect("write a directory file");
    }
    runtime.block_on(async {
        let directory = FileDirectory::open(root).expect("open");
        if let Ok(mark) = directory.mark(&account, "usage").await {
            let _ = mailvault::directory::published_usage(&directory, &account).await;
            assert!(directory
                .compare_and_set_mark(&account, "usage", mark, mark)
                .await
                .is_ok());
            assert_eq!(directory.mark(&account, "usage").await.ok(), Some(mark));
        }
        if let Ok(Some(record)) = directory.account_record(&account).await {
            directory
                .set_account_record(&account, record.clone())
                .await
                .expect("write the record back");
            let again = directory
                .account_record(&account)
                .await
                .expect("read again")
                .expect("present");
            assert_eq!(again.model, record.model);
            assert_eq!(again.public_keys, record.public_keys);
            assert_eq!(again.limits, record.limits);
            assert_eq!(again.secret(), record.secret());
        }
        if let Ok(keys) = directory.officer_keys().await {
            directory
                .set_officer_keys(keys.clone())
                .await
                .expect("write the officer keys back");
            assert_eq!(directory.officer_keys().await.expect("read again"), keys);
        }
        let _ = directory.officer_log(None).await;
        let _ = directory.officer_log(Some(&account)).await;
        if let Ok(keys) = directory.delivery_keys().await {
            directory
                .set_delivery_keys(keys.clone())
                .await
                .expect("write the delivery keys back");
            assert_eq!(directory.delivery_keys().await.expect("read again"), keys);
        }
    });
});
