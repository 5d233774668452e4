//! The IMAP connection state machine of the reference server (`mailvault-server`'s
//! `imap::scripted_session`): arbitrary bytes as a client's whole input, handed over in
//! chunks as the session asks for them, through imap-next's framing, imap-codec's parser
//! and every command handler, on an account in an in-memory store (logged in when the
//! input says `LOGIN alice@example.org "correct horse battery staple"`, the account the
//! seeds of `server/tests/imap_malformed/` use). Each input starts from the same
//! deployment: a copy of the store and directory as they were after the account's
//! creation.
//!
//! Nothing may panic or hang (the session ends when the input does); the server's output
//! starts with its greeting and is a sequence of responses imap-codec decodes.

#![no_main]

use std::sync::LazyLock;

use imap_codec::decode::{Decoder, ResponseDecodeError};
use imap_codec::{GreetingCodec, ResponseCodec};
use libfuzzer_sys::fuzz_target;
use mailvault::engine::{Provider, ShareConfig};
use mailvault_server::imap::{scripted_session, Imap, Login, ScriptedClient};

#[path = "common/server_fixture.rs"]
mod server_fixture;
use server_fixture::{provider_config, runtime, Fixture, FIXTURE};
/// APPENDLIMIT: small, so that inputs reach the limits.
const MAX_MESSAGE: u32 = 64 * 1024;

/// The IMAP state of a deployment copied from the fixture's.
async fn fresh_state(f: &Fixture) -> Imap {
    let provider = Provider::new(f.store(), f.deployment, f.directory(), provider_config())
        .await
        .expect("a provider");
    Imap {
        login: Login::Provider {
            provider: Box::new(provider),
            accounts: f.config.accounts(),
            registry: Default::default(),
            share: ShareConfig::default(),
        },
        max_message_size: MAX_MESSAGE,
        tls: None,
    }
}

/// `output` is a greeting, then responses; only the last may be cut (output beyond
/// [`ScriptedClient::KEPT`] is not kept).
fn check_output(output: &[u8], truncated: bool) {
    let mut rest = match GreetingCodec::default().decode(output) {
        Ok((rest, _)) => rest,
        Err(e) => panic!(
            "no greeting first ({e:?}): {:?}",
            String::from_utf8_lossy(output)
        ),
    };
    while !rest.is_empty() {
        match ResponseCodec::default().decode(rest) {
            Ok((next, _)) => rest = next,
            Err(ResponseDecodeError::Incomplete | ResponseDecodeError::LiteralFound { .. })
                if truncated =>
            {
                return
            }
            Err(e) => panic!(
                "the server wrote what imap-codec does not decode ({e:?}): {:?}",
                String::from_utf8_lossy(&rest[..rest.len().min(400)])
            ),
        }
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
        // Chunks of 1 to 97 bytes, chosen by the input's length: lines and literals split
        // anywhere across reads.
        let chunk = 1 + (data.len().wrapping_mul(7919)) % 97;
        let mut client = ScriptedClient::new(data.to_vec(), chunk);
        // A runtime per input: the tasks an account handle spawns (its poller) end with
        // it rather than piling up across inputs.
        runtime().block_on(async {
            let state = fresh_state(f).await;
            scripted_session(&state, &mut client, true).await;
        });
        check_output(&client.output, client.written > client.output.len());
    }
);
