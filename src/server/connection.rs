//! One task per client connection, owning the socket.
//!
//! It reads request lines and hands them to `Requests`, and writes
//! everything the client is sent: replies, chat messages from its bounded
//! queue, and control lines. Writes are batched: everything ready is
//! appended to one buffer and written once, so a busy client gets few
//! large writes. If the client stops reading, writes block, the queue
//! fills and senders get `recipient_busy`; after the write timeout the
//! connection is closed. Memory per connection stays bounded.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{FutureExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

use super::admission::Slots;
use super::requests::{Context, Flow, Requests};
use super::sessions::Control;
use crate::protocol::reply::{code_line, error_line};
use crate::protocol::{ErrorCode, Frame, KickReason, LineCodec, ProtocolError};
use crate::shutdown::CancellationToken;

/// Messages and control lines drained per write, so one flood cannot
/// starve reading this client's own requests.
const MAX_BATCH: usize = 256;

/// Initial read buffer per connection: it grows with the lines a client
/// sends, and most connections sit idle (the default 8 KiB would dominate
/// their memory).
const READ_BUFFER: usize = 512;

struct Conn {
    ctx: Arc<Context>,
    requests: Requests,
    reader: FramedRead<OwnedReadHalf, LineCodec>,
    write: OwnedWriteHalf,
    /// Lines waiting to be written.
    out: BytesMut,
    /// Set when the connection must close after the next write.
    closing: bool,
    /// The client half-closed: answer what is in flight, then close.
    input_done: bool,
}

pub async fn run(ctx: Arc<Context>, stream: TcpStream, _slots: Slots, shutdown: CancellationToken) {
    let (read, write) = stream.into_split();
    let codec = LineCodec::new(ctx.limits.max_line_bytes);
    let (messages_tx, mut messages_rx) = mpsc::channel(ctx.limits.outbound_queue);
    let (control_tx, mut control_rx) = mpsc::unbounded_channel();
    let mut conn = Conn {
        requests: Requests::new(ctx.clone(), messages_tx, control_tx),
        reader: FramedRead::with_capacity(read, codec, READ_BUFFER),
        write,
        out: BytesMut::new(),
        closing: false,
        input_done: false,
        ctx,
    };
    conn.ctx.metrics.connections.inc();
    let login_deadline = tokio::time::sleep(conn.ctx.limits.login_timeout);
    tokio::pin!(login_deadline);
    let mut ever_logged_in = false;

    while !conn.closing {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => conn.kick(KickReason::ServerShutdown),
            Some(control) = control_rx.recv() => conn.apply_control(control),
            Some(line) = messages_rx.recv() => conn.out.extend_from_slice(&line),
            frame = conn.reader.next(), if !conn.input_done => {
                if !conn.read_batch(frame).await {
                    break;
                }
                ever_logged_in |= conn.requests.logged_in();
            }
            _ = &mut login_deadline, if !ever_logged_in => conn.login_timeout(),
        }
        conn.drain_ready(&mut control_rx, &mut messages_rx);
        let finished = conn.input_done && conn.requests.awaiting_outcomes() == 0;
        if !conn.flush().await || finished {
            break;
        }
    }
    let _ = conn.write.shutdown().await;
    conn.requests.end(shutdown.is_cancelled()).await;
    conn.ctx.metrics.connections.dec();
}

impl Conn {
    fn kick(&mut self, reason: KickReason) {
        let line = self.requests.kick(reason);
        self.out.extend_from_slice(&line);
        self.closing = true;
    }

    fn apply_control(&mut self, control: Control) {
        match control {
            Control::Outcome(line) => {
                self.requests.outcome_arrived();
                self.out.extend_from_slice(&line);
            }
            Control::Kick { session, reason } => {
                if let Some(line) = self.requests.kick_session(session, reason) {
                    self.out.extend_from_slice(&line);
                    self.closing = true;
                }
            }
        }
    }

    fn login_timeout(&mut self) {
        let error = ProtocolError::new(ErrorCode::NotLoggedIn, "login timeout; closing");
        self.out.extend_from_slice(&error_line(&error, &None));
        self.closing = true;
    }

    /// Handles `first` and then the requests already buffered, so that
    /// their replies leave in one write instead of one write each. False
    /// if the connection is broken.
    async fn read_batch(&mut self, first: Option<std::io::Result<Frame>>) -> bool {
        if !self.on_frame(first).await {
            return false;
        }
        for _ in 0..MAX_BATCH {
            if self.input_done || self.closing {
                break;
            }
            let Some(frame) = self.reader.next().now_or_never() else {
                break;
            };
            if !self.on_frame(frame).await {
                self.closing = true;
            }
        }
        true
    }

    /// Handles one decoded frame (or end of input); false if the
    /// connection is broken.
    async fn on_frame(&mut self, frame: Option<std::io::Result<Frame>>) -> bool {
        match frame {
            Some(Ok(Frame::Line(line))) => {
                if self.requests.handle(&line, &mut self.out).await == Flow::Close {
                    self.closing = true;
                }
            }
            Some(Ok(Frame::TooLong)) => self
                .out
                .extend_from_slice(&code_line(ErrorCode::LineTooLong, &None)),
            Some(Err(_)) => return false,
            None => self.input_done = true,
        }
        true
    }

    /// Appends whatever else is ready, up to a batch.
    fn drain_ready(
        &mut self,
        control_rx: &mut mpsc::UnboundedReceiver<Control>,
        messages_rx: &mut mpsc::Receiver<Bytes>,
    ) {
        for _ in 0..MAX_BATCH {
            if self.closing {
                return;
            }
            if let Ok(control) = control_rx.try_recv() {
                self.apply_control(control);
            } else if let Ok(line) = messages_rx.try_recv() {
                self.out.extend_from_slice(&line);
            } else {
                return;
            }
        }
    }

    /// Writes the buffer; false if the client is gone or stopped reading.
    async fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let timeout = self.ctx.limits.write_timeout;
        match tokio::time::timeout(timeout, self.write.write_all(&self.out)).await {
            Ok(Ok(())) => {
                self.out.clear();
                true
            }
            Ok(Err(_)) => false,
            Err(_) => {
                tracing::info!(server = %self.ctx.me.id, "client stopped reading; closing after write timeout");
                false
            }
        }
    }
}
