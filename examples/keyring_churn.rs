//! Keyring churn across real processes (issue 10, item 2): `workers` processes (4 by
//! default), each with its own `Provider`, change the password and add and remove device
//! slots of one account for `seconds` (60 by default), on one store without
//! compare-and-swap and one shared `FileDirectory`. Afterwards every acknowledged change
//! must hold and the last password change in commit order must open the account
//! (`mailvault::testkit::churn::check`). Prints each worker's figures and the totals.
//!
//! ```sh
//! cargo run --release --all-features --example keyring_churn                 # local directory as no-CAS store, 60 s
//! cargo run --release --all-features --example keyring_churn -- --seconds 10
//! source .s3-servers/env.sh && cargo run --release --all-features --example keyring_churn -- --garage
//! ```

use std::time::Duration;

use mailvault::testkit::churn;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> mailvault::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--worker") {
        churn::worker_main(&args[1..]).await?;
        return Ok(());
    }
    let mut seconds = 60.0;
    let mut workers = 4;
    let mut garage = false;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--seconds" => seconds = rest.next().and_then(|s| s.parse().ok()).unwrap_or(seconds),
            "--workers" => workers = rest.next().and_then(|s| s.parse().ok()).unwrap_or(workers),
            "--garage" => garage = true,
            other => panic!("unknown argument {other:?}"),
        }
    }
    let root = tempfile::tempdir().expect("a temporary directory");
    let spec = if garage {
        "s3:GARAGE".to_string()
    } else {
        format!("dir:{}", root.path().join("store").display())
    };
    let exe = std::env::current_exe().expect("the example's own path");
    let run = churn::drive(
        &spec,
        root.path(),
        workers,
        Duration::from_secs_f64(seconds),
        |args| {
            let mut command = std::process::Command::new(&exe);
            command.arg("--worker").args(args);
            command
        },
    )
    .await?;
    println!(
        "store {spec}, {workers} processes, {:.1} s",
        run.elapsed.as_secs_f64()
    );
    for (i, w) in run.workers.iter().enumerate() {
        println!(
            "worker {i}: {} acknowledged, {} conflicts, {} other errors",
            w.acknowledged, w.conflicts, w.errors
        );
    }
    let r = &run.report;
    let conflicts: u64 = run.workers.iter().map(|w| w.conflicts).sum();
    println!(
        "acknowledged {} ({} password changes, {} slots added, {} removed), {conflicts} conflicts; \
         {:.1} commits/s; final generation {}; {} keyring object(s) left; every acknowledged change holds",
        r.acknowledged,
        r.password_changes,
        r.slots_added,
        r.slots_removed,
        r.acknowledged as f64 / run.elapsed.as_secs_f64(),
        r.final_generation,
        r.keyring_objects
    );
    Ok(())
}
