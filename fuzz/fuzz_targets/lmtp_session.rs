//! The LMTP connection of the reference server (`mailvault-server`'s `lmtp::connection`):
//! arbitrary bytes as a client's whole input, written in chunks through an in-memory
//! pipe, through smtp-proto's command parser, the DATA and BDAT readers and the streaming
//! deliverer, for a recipient `alice@example.org` whose account exists in an in-memory
//! store (each input starts from a copy of it).
//!
//! Nothing may panic or hang (the session ends when the input does); the server's output
//! starts with its 220 greeting and is a sequence of CRLF-ended reply lines, each a
//! three-digit code then a space or a hyphen (RFC 5321 4.2). `MAILVAULT_FUZZ_PRINT=1`
//! prints each session's output (to read what a seed does).

#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use mailvault::delivery::{Deliverer, DeliverySigningKey};
use mailvault_server::lmtp::{self, Lmtp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "common/server_fixture.rs"]
mod server_fixture;
use server_fixture::{runtime, FIXTURE};

/// The largest message: small, so that inputs reach the limit.
const MAX_MESSAGE: usize = 64 * 1024;

/// `output` is the greeting and then reply lines.
fn check_output(output: &[u8]) {
    assert!(
        output.starts_with(b"220"),
        "no greeting first: {:?}",
        String::from_utf8_lossy(output)
    );
    for line in output.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r\n").unwrap_or_else(|| {
            panic!(
                "a reply line not ended by CRLF: {:?}",
                String::from_utf8_lossy(output)
            )
        });
        let well_formed = line.len() >= 3
            && line[..3].iter().all(u8::is_ascii_digit)
            && matches!(line.get(3), None | Some(b' ' | b'-'));
        assert!(
            well_formed,
            "not a reply line: {:?}",
            String::from_utf8_lossy(line)
        );
    }
}

fuzz_target!(
    init: {
        // As in `mail_analysis`: mail-parser's `debug_assert!` on malformed mail is a
        // panic the library catches; libfuzzer-sys's hook would abort on it first.
        drop(std::panic::take_hook());
        LazyLock::force(&FIXTURE);
    },
    |data: &[u8]| {
        let f = &*FIXTURE;
        // Chunks of 1 to 97 bytes, chosen by the input's length: lines, dots and chunk
        // sizes split anywhere across reads.
        let chunk = 1 + (data.len().wrapping_mul(7919)) % 97;
        let output = runtime().block_on(async {
            let deliverer = Deliverer::new(
                f.store(),
                f.deployment,
                f.directory(),
                // Fixed: the fuzzer needs no secret.
                DeliverySigningKey::from_bytes([7; 32]),
            );
            let state = Arc::new(Lmtp {
                deliverer: Arc::new(deliverer),
                accounts: f.config.accounts(),
                max_message_size: MAX_MESSAGE,
            });
            let (client, server) = tokio::io::duplex(16 * 1024);
            let session = tokio::spawn(lmtp::connection(server, state));
            let (mut read, mut write) = tokio::io::split(client);
            let writer = async move {
                for piece in data.chunks(chunk) {
                    if write.write_all(piece).await.is_err() {
                        break; // the server closed the connection (QUIT)
                    }
                }
                let _ = write.shutdown().await;
            };
            let reader = async move {
                let mut output = Vec::new();
                let _ = read.read_to_end(&mut output).await;
                output
            };
            let ((), output) = tokio::join!(writer, reader);
            let _ = session.await.expect("the session task");
            output
        });
        if std::env::var_os("MAILVAULT_FUZZ_PRINT").is_some() {
            eprintln!("{}", String::from_utf8_lossy(&output));
        }
        check_output(&output);
    }
);
