//! LMTP (RFC 2033) on TCP and on a unix socket: commands parsed by `smtp-proto`,
//! messages streamed into the library's `Deliverer` as they arrive (sealed to each
//! recipient's public key, signed), after DATA (dot-stuffed) or in BDAT chunks (RFC 3030
//! CHUNKING). A recipient's 250 is sent only once its delivery call returned Ok, that is
//! once the sealed body and its envelope are durable. Each delivery's id is derived from
//! the message's content, so a client's resend of a message whose replies it lost is
//! stored once.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mailvault::delivery::{Deliverer, DeliveryOptions, Recipient};
use mailvault::ids::AccountId;
use mailvault::mail::INBOX;
use smtp_proto::request::receiver::DataReceiver;
use smtp_proto::Request;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::Accounts;

/// Longest command line accepted (RFC 5321 allows 512; extensions make it longer).
const MAX_LINE: usize = 4096;
/// A connection idle this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Pieces of a message in flight between the connection and the deliverer.
const PIECES_IN_FLIGHT: usize = 16;
/// Recipients of one transaction (RFC 5321 4.5.3.1.8 asks a server to accept at least
/// 100); each is a sealed writer while the message streams in.
const MAX_RECIPIENTS: usize = 100;

/// What every LMTP connection shares.
pub struct Lmtp {
    /// Writes sealed deliveries.
    pub deliverer: Arc<Deliverer>,
    /// Recipient address → account.
    pub accounts: Accounts,
    /// Largest message accepted, bytes.
    pub max_message_size: usize,
}

/// Accepts TCP connections until the task is aborted.
pub async fn accept_loop(listener: TcpListener, state: Arc<Lmtp>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let state = state.clone();
                tokio::spawn(async move {
                    tracing::debug!(%peer, "LMTP connection");
                    if let Err(e) = connection(stream, state).await {
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

/// Accepts connections on a unix socket (how an MTA on the same machine usually
/// reaches LMTP) until the task is aborted.
pub async fn accept_unix(listener: UnixListener, state: Arc<Lmtp>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let state = state.clone();
                tokio::spawn(async move {
                    tracing::debug!("LMTP connection on the unix socket");
                    if let Err(e) = connection(stream, state).await {
                        tracing::debug!(error = %e, "LMTP connection ended");
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
struct Input<R> {
    stream: R,
    pending: Vec<u8>,
}

/// What the connection sends the deliverer: a piece of the message, or its end.
enum Piece {
    Data(Bytes),
    End,
}

/// Where the pieces of a message go: the deliverer's stream, until it stops taking them
/// (it refused the message: too big, or every recipient failed). The message is complete
/// only once [`end`](Self::end) says so: dropped before (an error, RSET, the connection
/// gone, any early return), its stream ends with an error and nothing of it is stored.
struct Pieces(Option<mpsc::Sender<Piece>>);

impl Pieces {
    async fn send(&mut self, piece: Vec<u8>) {
        if let Some(sender) = &self.0 {
            if sender.send(Piece::Data(Bytes::from(piece))).await.is_err() {
                self.0 = None;
            }
        }
    }

    /// The message is complete.
    async fn end(&mut self) {
        if let Some(sender) = self.0.take() {
            let _ = sender.send(Piece::End).await;
        }
    }
}

/// The deliverer's side of [`Pieces`]: the message's bytes, then its end; an error if the
/// sender went without saying the message ended.
fn message_stream(
    mut receiver: mpsc::Receiver<Piece>,
) -> impl futures::Stream<Item = mailvault::Result<Bytes>> + Unpin {
    let mut ended = false;
    futures::stream::poll_fn(move |cx| {
        if ended {
            return std::task::Poll::Ready(None);
        }
        receiver.poll_recv(cx).map(|piece| match piece {
            Some(Piece::Data(bytes)) => Some(Ok(bytes)),
            Some(Piece::End) => {
                ended = true;
                None
            }
            None => {
                ended = true;
                Some(Err(mailvault::Error::InvalidArgument(
                    "the message was abandoned before its end".into(),
                )))
            }
        })
    })
}

impl<R: AsyncRead + Unpin> Input<R> {
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

    /// Streams the message after DATA, dot-unstuffed, without the final `.` line, into
    /// `pieces`; false when the stream ended before the final dot (the caller drops
    /// `pieces`: the message is abandoned).
    async fn data(&mut self, pieces: &mut Pieces) -> std::io::Result<bool> {
        let mut receiver = DataReceiver::new();
        let mut body = Vec::new();
        // The receiver recognises a dot (stuffed or final) after a CRLF only: start it as
        // if a line had just ended, so the first line is handled like the others.
        receiver.ingest(&mut b"\r\n".iter(), &mut body);
        body.clear();
        loop {
            if !self.pending.is_empty() {
                let mut it = self.pending.iter();
                let done = receiver.ingest(&mut it, &mut body);
                let consumed = self.pending.len() - it.as_slice().len();
                self.pending.drain(..consumed);
                if done {
                    pieces.send(std::mem::take(&mut body)).await;
                    return Ok(true);
                }
                // A CR at the end may be the one of the final ".\r\n", which the receiver
                // takes back from `body` when the LF comes: it stays until then.
                let hold = usize::from(body.last() == Some(&b'\r'));
                if body.len() > hold {
                    let rest = body.split_off(body.len() - hold);
                    pieces.send(std::mem::replace(&mut body, rest)).await;
                }
            }
            if !self.fill().await? {
                return Ok(false);
            }
        }
    }

    /// Streams the next `size` bytes (a BDAT chunk) into `pieces`; false when the stream
    /// ended first (the caller drops `pieces`: the message is abandoned).
    async fn chunk(&mut self, mut size: usize, pieces: &mut Pieces) -> std::io::Result<bool> {
        while size > 0 {
            if self.pending.is_empty() && !self.fill().await? {
                return Ok(false);
            }
            let take = size.min(self.pending.len());
            let piece: Vec<u8> = self.pending.drain(..take).collect();
            size -= take;
            pieces.send(piece).await;
        }
        Ok(true)
    }
}

/// A message being delivered while it streams in: where its pieces go, and the task
/// that delivers them and gives the reply lines.
struct Streaming {
    pieces: Pieces,
    task: JoinHandle<String>,
    recipients: usize,
}

impl Streaming {
    /// Starts delivering to `recipients` a message whose pieces are sent to `pieces`.
    fn start(state: &Arc<Lmtp>, recipients: Vec<(String, AccountId)>) -> Self {
        let (sender, receiver) = mpsc::channel(PIECES_IN_FLIGHT);
        let state = state.clone();
        let count = recipients.len();
        let task =
            tokio::spawn(
                async move { deliver(&state, &recipients, message_stream(receiver)).await },
            );
        Self {
            pieces: Pieces(Some(sender)),
            task,
            recipients: count,
        }
    }

    /// The message is complete: its reply lines, one per recipient.
    async fn finish(mut self) -> String {
        self.pieces.end().await;
        self.task.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "delivery task failed");
            "451 4.3.0 temporary failure, try again later\r\n".repeat(self.recipients)
        })
    }

    /// The message is abandoned (RSET, the connection ended): nothing of it is stored.
    async fn abort(self) {
        drop(self.pieces);
        let _ = self.task.await;
    }
}

#[derive(Default)]
struct Transaction {
    from: Option<String>,
    recipients: Vec<(String, AccountId)>,
    /// A message arriving in BDAT chunks: delivered as they come.
    chunks: Option<Streaming>,
    /// A BDAT chunk was refused: the rest of the message is read and dropped.
    chunks_refused: bool,
}

impl Transaction {
    /// Ends the transaction, dropping a message still arriving in chunks.
    async fn reset(&mut self) {
        if let Some(streaming) = std::mem::take(self).chunks {
            streaming.abort().await;
        }
    }
}

/// Serves one LMTP connection on `stream` (a TCP or unix socket; the fuzz target
/// `lmtp_session` gives it an in-memory pipe) until the client quits or the stream ends.
/// A message not complete when the stream ends is not stored.
///
/// # Errors
/// The stream's I/O errors.
pub async fn connection<S>(stream: S, state: Arc<Lmtp>) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (read, mut write) = tokio::io::split(stream);
    let mut input = Input {
        stream: read,
        pending: Vec::new(),
    };
    let mut tx = Transaction::default();
    let outcome = session(&mut input, &mut write, &state, &mut tx).await;
    // A message still arriving in chunks when the connection ends is not stored.
    tx.reset().await;
    outcome
}

async fn session<R, W>(
    input: &mut Input<R>,
    write: &mut W,
    state: &Arc<Lmtp>,
    tx: &mut Transaction,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    write
        .write_all(b"220 mailvault LMTP service ready\r\n")
        .await?;
    let mut greeted = false;
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
            Err(e) if line.len() >= 5 && line[..5].eq_ignore_ascii_case(b"BDAT ") => {
                // The chunk's bytes follow and their end is unknown: reading them as
                // commands would run the message's content.
                tracing::debug!(error = ?e, "LMTP BDAT without a readable size");
                write
                    .write_all(b"421 4.5.2 BDAT size unreadable, closing the connection\r\n")
                    .await?;
                return Ok(());
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
                tx.reset().await;
                format!(
                    "250-mailvault\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n\
                     250-8BITMIME\r\n250-CHUNKING\r\n250 SIZE {}\r\n",
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
                } else if tx.chunks.is_some() {
                    "503 5.5.1 RCPT inside BDAT\r\n".into()
                } else if tx.recipients.len() >= MAX_RECIPIENTS {
                    format!("452 4.5.3 at most {MAX_RECIPIENTS} recipients per message\r\n")
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
                if tx.from.is_none() || tx.recipients.is_empty() || tx.chunks.is_some() {
                    "503 5.5.1 no valid recipient\r\n".into()
                } else {
                    write
                        .write_all(b"354 send the message, end with <CRLF>.<CRLF>\r\n")
                        .await?;
                    let recipients = std::mem::take(&mut tx.recipients);
                    tx.reset().await;
                    let mut streaming = Streaming::start(state, recipients);
                    if !input.data(&mut streaming.pieces).await? {
                        streaming.abort().await;
                        return Ok(());
                    }
                    streaming.finish().await
                }
            }
            // smtp-proto reads a size of more digits than a usize holds as a wrong, small
            // number: the chunk's end would be misplaced and its bytes read as commands.
            Request::Bdat { chunk_size, .. } if bdat_size_as_written(&line) != Some(chunk_size) => {
                write
                    .write_all(b"421 4.5.2 BDAT size unreadable, closing the connection\r\n")
                    .await?;
                return Ok(());
            }
            // A chunk larger than any message accepted: the message is refused, its bytes
            // read and dropped (RFC 3030 2: the chunk follows whatever the reply, and only
            // then comes the next command; RFC 5321 3.8: a server closes only after QUIT
            // or with 421). After the last chunk one reply per recipient (RFC 2033 4.2),
            // otherwise one, and the chunks that follow are refused.
            Request::Bdat {
                chunk_size,
                is_last,
            } if chunk_size > state.max_message_size => {
                let mut nowhere = Pieces(None);
                if !input.chunk(chunk_size, &mut nowhere).await? {
                    return Ok(());
                }
                let refusal = |address: &str| {
                    format!(
                        "552 5.3.4 {address}message above the limit of {} bytes\r\n",
                        state.max_message_size
                    )
                };
                let recipients: Vec<String> = if tx.from.is_some() {
                    tx.recipients.iter().map(|(a, _)| a.clone()).collect()
                } else {
                    Vec::new()
                };
                tx.reset().await;
                if is_last && !recipients.is_empty() {
                    recipients
                        .iter()
                        .map(|a| refusal(&format!("<{a}> ")))
                        .collect()
                } else {
                    if !is_last {
                        tx.chunks_refused = true;
                    }
                    refusal("")
                }
            }
            Request::Bdat {
                chunk_size,
                is_last,
            } => {
                // RFC 3030 §2: the chunk is read whatever the reply, so that the next
                // command is found.
                let refused = if tx.chunks_refused {
                    Some("503 5.5.1 the message was refused already\r\n")
                } else if tx.from.is_none() || tx.recipients.is_empty() {
                    Some("503 5.5.1 no valid recipient\r\n")
                } else {
                    None
                };
                if let Some(refusal) = refused {
                    let mut nowhere = Pieces(None);
                    if !input.chunk(chunk_size, &mut nowhere).await? {
                        return Ok(());
                    }
                    if is_last {
                        tx.reset().await;
                    } else {
                        tx.chunks_refused = true;
                    }
                    refusal.into()
                } else {
                    if tx.chunks.is_none() {
                        let recipients = tx.recipients.clone();
                        tx.chunks = Some(Streaming::start(state, recipients));
                    }
                    let streaming = tx.chunks.as_mut().expect("started above");
                    if !input.chunk(chunk_size, &mut streaming.pieces).await? {
                        return Ok(());
                    }
                    if is_last {
                        let streaming = tx.chunks.take().expect("started above");
                        tx.reset().await;
                        streaming.finish().await
                    } else {
                        format!("250 2.0.0 {chunk_size} octets received\r\n")
                    }
                }
            }
            Request::Rset => {
                tx.reset().await;
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

/// Delivers the message streamed in `body` to every recipient at once; one reply line
/// per recipient, in order (RFC 2033 §4.2). An account named by several recipients (two
/// addresses, or one twice) gets the message once, and each of them its reply. Each
/// delivery's id is derived from the message as received (`id_from_content`), so that a
/// client's retry of a message whose replies it lost (a dropped connection, a killed
/// server) stores it once.
async fn deliver<S>(state: &Lmtp, recipients: &[(String, AccountId)], body: S) -> String
where
    S: futures::Stream<Item = mailvault::Result<Bytes>> + Unpin,
{
    let mut accounts: Vec<AccountId> = Vec::new();
    for (_, account) in recipients {
        if !accounts.contains(account) {
            accounts.push(*account);
        }
    }
    let targets: Vec<Recipient> = accounts
        .iter()
        .map(|account| Recipient {
            account: *account,
            options: DeliveryOptions {
                mailbox: INBOX.into(),
                id_from_content: true,
                ..DeliveryOptions::default()
            },
        })
        .collect();
    let limit = Some(state.max_message_size as u64);
    // One reply per account, with `{address}` for the recipient's address.
    let replies: Vec<String> = match state.deliverer.deliver_each(&targets, body, limit).await {
        Ok(results) => accounts
            .iter()
            .zip(results)
            .map(|(account, result)| match result {
                Ok(receipt) => {
                    tracing::info!(
                        %account,
                        delivery = %receipt.delivery,
                        size = receipt.size,
                        duplicate = receipt.duplicate,
                        "delivered"
                    );
                    "250 2.0.0 <{address}> delivered\r\n".to_string()
                }
                Err(e) => {
                    tracing::warn!(%account, error = %e, "delivery failed");
                    reply_for_error(&e)
                }
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "delivery failed");
            vec![reply_for_error(&e); accounts.len()]
        }
    };
    recipients
        .iter()
        .map(|(address, account)| {
            let i = accounts
                .iter()
                .position(|a| a == account)
                .expect("every recipient's account is listed");
            replies[i].replace("{address}", address)
        })
        .collect()
}

/// The chunk size of a `BDAT` command line as written: its second word, all digits, if
/// it fits a `usize`.
fn bdat_size_as_written(line: &[u8]) -> Option<usize> {
    let size = line
        .split(|b| b.is_ascii_whitespace())
        .find(|w| !w.is_empty() && !w.eq_ignore_ascii_case(b"BDAT"))?;
    if size.is_empty() || !size.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(size).ok()?.parse().ok()
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
