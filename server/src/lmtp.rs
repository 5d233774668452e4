//! LMTP (RFC 2033) on TCP: commands parsed by `smtp-proto`, messages delivered through
//! the library's `Deliverer` (sealed to each recipient's public key, signed). A
//! recipient's 250 after DATA is sent only once its delivery call returned Ok, that is
//! once the sealed body and its envelope are durable.

use std::sync::Arc;
use std::time::Duration;

use mailvault::delivery::{Deliverer, DeliveryOptions, Recipient};
use mailvault::ids::AccountId;
use mailvault::mail::INBOX;
use sha2::{Digest, Sha256};
use smtp_proto::request::receiver::DataReceiver;
use smtp_proto::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config::Accounts;

/// Longest command line accepted (RFC 5321 allows 512; extensions make it longer).
const MAX_LINE: usize = 4096;
/// A connection idle this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// What every LMTP connection shares.
pub struct Lmtp {
    /// Writes sealed deliveries.
    pub deliverer: Arc<Deliverer>,
    /// Recipient address → account.
    pub accounts: Accounts,
    /// Largest message accepted, bytes.
    pub max_message_size: usize,
}

/// Accepts connections until the task is aborted.
pub async fn accept_loop(listener: TcpListener, state: Arc<Lmtp>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let state = state.clone();
                tokio::spawn(async move {
                    tracing::debug!(%peer, "LMTP connection");
                    if let Err(e) = connection(stream, &state).await {
                        tracing::debug!(%peer, error = %e, "LMTP connection ended");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "LMTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The input side of a connection: bytes read but not yet consumed.
struct Input {
    stream: tokio::net::tcp::OwnedReadHalf,
    pending: Vec<u8>,
}

impl Input {
    /// Reads more bytes into `pending`; false at the end of the stream.
    async fn fill(&mut self) -> std::io::Result<bool> {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(IDLE_TIMEOUT, self.stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "idle timeout"))??;
        self.pending.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// The next line with its line end, or `Err` of a line too long (consumed up to its
    /// end); `None` at the end of the stream.
    async fn line(&mut self) -> std::io::Result<Option<Result<Vec<u8>, ()>>> {
        let mut too_long = false;
        loop {
            if let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=pos).collect();
                return Ok(Some(if too_long || line.len() > MAX_LINE {
                    Err(())
                } else {
                    Ok(line)
                }));
            }
            if self.pending.len() > MAX_LINE {
                too_long = true;
                self.pending.clear();
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    /// The message after DATA, dot-unstuffed, without the final `.` line; `Err` when it
    /// exceeded `max` bytes (consumed to its end all the same); `None` at the end of the
    /// stream.
    async fn data(&mut self, max: usize) -> std::io::Result<Option<Result<Vec<u8>, ()>>> {
        let mut receiver = DataReceiver::new();
        let mut body = Vec::new();
        // The receiver recognises a dot (stuffed or final) after a CRLF only: start it as
        // if a line had just ended, so the first line is handled like the others.
        receiver.ingest(&mut b"\r\n".iter(), &mut body);
        body.clear();
        let mut too_large = false;
        loop {
            if !self.pending.is_empty() {
                let mut it = self.pending.iter();
                let done = receiver.ingest(&mut it, &mut body);
                let rest = it.as_slice().len();
                let consumed = self.pending.len() - rest;
                self.pending.drain(..consumed);
                if body.len() > max {
                    too_large = true;
                    body.clear();
                }
                if done {
                    return Ok(Some(if too_large { Err(()) } else { Ok(body) }));
                }
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }
}

#[derive(Default)]
struct Transaction {
    from: Option<String>,
    recipients: Vec<(String, AccountId)>,
}

async fn connection(stream: TcpStream, state: &Lmtp) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut input = Input {
        stream: read,
        pending: Vec::new(),
    };
    write
        .write_all(b"220 mailvault LMTP service ready\r\n")
        .await?;
    let mut greeted = false;
    let mut tx = Transaction::default();
    loop {
        let line = match input.line().await? {
            None => return Ok(()),
            Some(Err(())) => {
                write.write_all(b"500 5.5.2 line too long\r\n").await?;
                continue;
            }
            Some(Ok(line)) => line,
        };
        let request = match Request::parse(&mut line.iter()) {
            Ok(request) => request,
            Err(smtp_proto::Error::UnknownCommand) => {
                write.write_all(b"500 5.5.1 unknown command\r\n").await?;
                continue;
            }
            Err(e) => {
                tracing::debug!(error = ?e, "LMTP syntax error");
                write.write_all(b"501 5.5.4 syntax error\r\n").await?;
                continue;
            }
        };
        let reply: String = match request {
            Request::Lhlo { .. } => {
                greeted = true;
                tx = Transaction::default();
                format!(
                    "250-mailvault\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n\
                     250-8BITMIME\r\n250 SIZE {}\r\n",
                    state.max_message_size
                )
            }
            Request::Ehlo { .. } | Request::Helo { .. } => {
                "500 5.5.1 this is LMTP: say LHLO\r\n".into()
            }
            Request::Mail { from } => {
                if !greeted {
                    "503 5.5.1 LHLO first\r\n".into()
                } else if tx.from.is_some() {
                    "503 5.5.1 nested MAIL command\r\n".into()
                } else if from.size > state.max_message_size {
                    format!(
                        "552 5.3.4 message size exceeds the limit of {} bytes\r\n",
                        state.max_message_size
                    )
                } else {
                    tx.from = Some(from.address.into_owned());
                    "250 2.1.0 sender OK\r\n".into()
                }
            }
            Request::Rcpt { to } => {
                if tx.from.is_none() {
                    "503 5.5.1 MAIL first\r\n".into()
                } else {
                    let address = to.address.into_owned();
                    match state.accounts.lookup(&address) {
                        Ok(Some(account)) => {
                            tx.recipients.push((address, account));
                            "250 2.1.5 recipient OK\r\n".into()
                        }
                        Ok(None) => "550 5.1.1 no such user here\r\n".into(),
                        Err(e) => {
                            tracing::error!(error = %e, "accounts table");
                            "451 4.3.0 cannot look the recipient up now\r\n".into()
                        }
                    }
                }
            }
            Request::Data => {
                if tx.from.is_none() || tx.recipients.is_empty() {
                    "503 5.5.1 no valid recipient\r\n".into()
                } else {
                    write
                        .write_all(b"354 send the message, end with <CRLF>.<CRLF>\r\n")
                        .await?;
                    let body = match input.data(state.max_message_size).await? {
                        None => return Ok(()),
                        Some(body) => body,
                    };
                    let recipients = std::mem::take(&mut tx).recipients;
                    match &body {
                        Err(()) => recipients
                            .iter()
                            .map(|(address, _)| {
                                format!(
                                    "552 5.3.4 <{address}> message exceeds {} bytes\r\n",
                                    state.max_message_size
                                )
                            })
                            .collect(),
                        Ok(body) => deliver(state, &recipients, body).await,
                    }
                }
            }
            Request::Rset => {
                tx = Transaction::default();
                "250 2.0.0 reset\r\n".into()
            }
            Request::Noop { .. } => "250 2.0.0 OK\r\n".into(),
            Request::Quit => {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            other => format!("502 5.5.1 {} not implemented\r\n", other.name()),
        };
        write.write_all(reply.as_bytes()).await?;
    }
}

/// Delivers the message to every recipient at once; one reply line per recipient, in
/// order (RFC 2033 §4.2). Each recipient's delivery id is derived from a digest of the
/// message as received, so that a client's retry of a message whose replies it lost
/// (a dropped connection, a killed server) stores it once.
async fn deliver(state: &Lmtp, recipients: &[(String, AccountId)], body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let targets: Vec<Recipient> = recipients
        .iter()
        .map(|(_, account)| Recipient {
            account: *account,
            options: DeliveryOptions {
                mailbox: INBOX.into(),
                id: Some(state.deliverer.delivery_id_for(account, &digest)),
                ..DeliveryOptions::default()
            },
        })
        .collect();
    let results = match state.deliverer.deliver_to_many(&targets, body).await {
        Ok(results) => results,
        Err(e) => {
            tracing::warn!(error = %e, "delivery failed");
            let reply = reply_for_error(&e);
            return recipients
                .iter()
                .map(|(address, _)| reply.replace("{address}", address))
                .collect();
        }
    };
    recipients
        .iter()
        .zip(results)
        .map(|((address, account), result)| match result {
            Ok(receipt) => {
                tracing::info!(
                    %account,
                    delivery = %receipt.delivery,
                    size = receipt.size,
                    duplicate = receipt.duplicate,
                    "delivered"
                );
                format!("250 2.0.0 <{address}> delivered\r\n")
            }
            Err(e) => {
                tracing::warn!(%account, error = %e, "delivery failed");
                reply_for_error(&e).replace("{address}", address)
            }
        })
        .collect()
}

/// The reply line for a delivery that failed, with `{address}` for the recipient.
fn reply_for_error(e: &mailvault::Error) -> String {
    match e {
        mailvault::Error::TooBig { limit } => {
            format!("552 5.3.4 <{{address}}> message exceeds {limit} bytes\r\n")
        }
        mailvault::Error::OverQuota { .. } => {
            "552 5.2.2 <{address}> mailbox full: over quota\r\n".into()
        }
        e if e.is_transient() => {
            "451 4.3.0 <{address}> temporary failure, try again later\r\n".into()
        }
        _ => "554 5.3.0 <{address}> delivery failed\r\n".into(),
    }
}
