//! One task per client connection, owning the socket.
//!
//! It reads request lines and hands them to `Requests`, and writes (through
//! `Output`) everything the client is sent: replies, messages from its
//! bounded queue, and control lines. Reading and writing are served
//! fairly: a flood of messages to a client cannot keep its own requests
//! unread. Writes are batched: everything ready (up to a batch) goes out
//! in one write. If the client stops reading, writes block, its queue
//! fills and senders get `recipient_busy`; after the write timeout the
//! connection is closed. When its session ends, whatever is still queued
//! for it is settled `offline`, or stored in the offline mailbox
//! (`stored`) when the server has one. Right after a login, the mailbox
//! is drained (`mailbox::Drain`): its pages are written before any live
//! message, which waits in the queue meanwhile. Memory per connection
//! stays bounded.

use std::sync::Arc;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio_util::codec::FramedRead;

use super::admission::Slots;
use super::control::{Control, ControlRx, control_channel};
use super::drain::Drain;
use super::mailbox::Drain as MailboxDrain;
use super::outbox::{MessagesRx, Receipt, Share, message_queue};
use super::output::{Output, WriteFailed};
use super::requests::{Context, Flow, Requests};
use crate::mailbox::{self, Page};
use crate::pb::Status;
use crate::protocol::reply::{code_line, error_line};
use crate::protocol::{ErrorCode, Frame, KickReason, LineCodec, ProtocolError};

/// Requests, messages and control lines taken per step, so that neither
/// side starves the other.
const MAX_BATCH: usize = 256;
/// A write stops growing past this many bytes: a reply never waits behind
/// megabytes of messages.
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// Initial read buffer per connection: it grows with the lines a client
/// sends, and most connections sit idle (the default 8 KiB would dominate
/// their memory).
const READ_BUFFER: usize = 512;

struct Conn {
    ctx: Arc<Context>,
    requests: Requests,
    reader: FramedRead<OwnedReadHalf, LineCodec>,
    output: Output,
    messages: MessagesRx,
    control: ControlRx,
    share: Share,
    /// The offline mailbox's drain after a login, while it lasts: live
    /// messages wait until it is done.
    drain: Option<MailboxDrain>,
    /// Set when the connection must close after the next write.
    closing: bool,
    /// The client half-closed: answer what is in flight, then close.
    input_done: bool,
}

pub async fn run(ctx: Arc<Context>, stream: TcpStream, _slots: Slots, drain: Arc<Drain>) {
    let mut conn = Conn::new(ctx, stream);
    conn.ctx.metrics.connections.inc();
    let login_deadline = tokio::time::sleep(conn.ctx.limits.login_timeout);
    tokio::pin!(login_deadline);
    // Pending until the drain starts, then until this connection's turn.
    let drain_turn = drain.turn();
    tokio::pin!(drain_turn);
    let mut ever_logged_in = false;

    while !conn.closing {
        // The client's own requests come before its messages, and every
        // step also gathers messages (`gather`): so each step serves both,
        // and a flood to this client cannot keep its requests unread (an
        // unbiased select would pick the one branch only now and then).
        tokio::select! {
            biased;
            _ = &mut drain_turn => conn.kick(KickReason::ServerShutdown),
            Ok(control) = conn.control.recv_async() => conn.apply_control(control),
            frame = conn.reader.next(), if !conn.input_done => {
                if !conn.read_batch(frame).await {
                    break;
                }
                ever_logged_in |= conn.requests.logged_in();
            }
            page = next_page(&mut conn.drain), if conn.drain.is_some() => conn.on_page(page),
            Ok(message) = conn.messages.recv_async(), if conn.drain.is_none() => conn.output.message(message),
            _ = &mut login_deadline, if !ever_logged_in => conn.login_timeout(),
        }
        conn.gather();
        if let Err(why) = conn.output.flush().await {
            if why == WriteFailed::TimedOut {
                tracing::info!(server = %conn.ctx.me.id, "client stopped reading; closing after write timeout");
            }
            break;
        }
        if let Some(drain) = conn.drain.as_mut() {
            drain.flushed();
        }
        if conn.input_done && conn.requests.awaiting_outcomes() == 0 {
            break;
        }
    }
    conn.finish().await;
}

/// The drain's next page; pending without a drain.
async fn next_page(drain: &mut Option<MailboxDrain>) -> mailbox::Result<Page> {
    match drain {
        Some(drain) => drain.page().await,
        None => std::future::pending().await,
    }
}

impl Conn {
    fn new(ctx: Arc<Context>, stream: TcpStream) -> Self {
        let (read, write) = stream.into_split();
        let codec = LineCodec::new(ctx.limits.max_line_bytes);
        let (messages_tx, messages) = message_queue(ctx.limits.outbound_queue);
        let (control_tx, control) = control_channel();
        let share = Share {
            budget: ctx.budget.clone(),
            queue: Arc::default(),
        };
        let output = Output::new(
            write,
            share.clone(),
            ctx.metrics.clone(),
            ctx.limits.write_timeout,
        );
        Self {
            requests: Requests::new(ctx.clone(), messages_tx, share.queue.clone(), control_tx),
            reader: FramedRead::with_capacity(read, codec, READ_BUFFER),
            output,
            messages,
            control,
            share,
            drain: None,
            closing: false,
            input_done: false,
            ctx,
        }
    }

    fn kick(&mut self, reason: KickReason) {
        let line = self.requests.kick(reason);
        self.output.line(&line);
        self.closing = true;
    }

    fn apply_control(&mut self, control: Control) {
        match control {
            Control::Outcome(line) => {
                self.requests.outcome_arrived();
                self.output.line(&line);
            }
            Control::Kick { session, reason } => {
                if let Some(line) = self.requests.kick_session(session, reason) {
                    self.output.line(&line);
                    self.closing = true;
                }
            }
            Control::Mailbox => match self.drain.as_mut() {
                Some(drain) => drain.again(),
                None => self.start_drain(),
            },
        }
    }

    fn login_timeout(&mut self) {
        let error = ProtocolError::new(ErrorCode::NotLoggedIn, "login timeout; closing");
        self.output.line(&error_line(&error, &None));
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
            if self.input_done || self.closing || self.output.len() >= MAX_BATCH_BYTES {
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
                match self.requests.handle(&line, self.output.replies()).await {
                    Flow::Continue => {}
                    Flow::LoggedIn => self.start_drain(),
                    Flow::SessionEnded => self.session_ended().await,
                    Flow::Close => self.closing = true,
                }
            }
            Some(Ok(Frame::TooLong)) => self.output.line(&code_line(ErrorCode::LineTooLong, &None)),
            Some(Err(_)) => return false,
            None => self.input_done = true,
        }
        true
    }

    /// Appends whatever else is ready, up to a batch.
    fn gather(&mut self) {
        for _ in 0..MAX_BATCH {
            if self.closing {
                return;
            }
            if let Ok(control) = self.control.try_recv() {
                self.apply_control(control);
            } else if self.output.len() >= MAX_BATCH_BYTES || self.drain.is_some() {
                return;
            } else if let Ok(message) = self.messages.try_recv() {
                self.output.message(message);
            } else {
                return;
            }
        }
    }

    /// A login: its mailbox (if the server has one) is written first.
    fn start_drain(&mut self) {
        if let (Some(mailbox), Some(name)) = (&self.ctx.mailbox, self.requests.name()) {
            self.drain = Some(MailboxDrain::start(mailbox.clone(), name.to_owned()));
        }
    }

    /// A page of the drain: written before anything else; an empty page
    /// ends the drain, and live messages flow again.
    fn on_page(&mut self, page: mailbox::Result<Page>) {
        let Some(drain) = self.drain.as_mut() else {
            return;
        };
        match page {
            Ok(page) => {
                let done = page.entries.is_empty();
                for line in drain.lines(page) {
                    self.output.line(&line);
                }
                if done {
                    let again = drain.wanted_again();
                    self.drain = None;
                    if again {
                        self.start_drain();
                    }
                }
            }
            Err(e) => {
                tracing::warn!(server = %self.ctx.me.id, error = %e, "mailbox drain failed: the rest waits for the next login");
                if let Some(drain) = self.drain.take() {
                    tokio::spawn(drain.finish());
                }
            }
        }
    }

    /// Logout: the drain stops, messages still queued are settled.
    async fn session_ended(&mut self) {
        if let Some(drain) = self.drain.take() {
            drain.finish().await;
        }
        let queued = self.take_queued();
        self.settle_unwritten(queued);
    }

    /// Messages still in the queue, their bytes released.
    fn take_queued(&mut self) -> Vec<(Bytes, Receipt)> {
        let mut queued = Vec::new();
        while let Ok(message) = self.messages.try_recv() {
            self.share.release(message.line.len());
            queued.push((message.line, message.receipt));
        }
        queued
    }

    /// Messages the session ended without writing: to the mailbox if the
    /// server has one (`stored`), else `offline`.
    fn settle_unwritten(&self, unwritten: Vec<(Bytes, Receipt)>) {
        match &self.ctx.mailbox {
            Some(mailbox) => mailbox.store_unwritten(unwritten),
            None => {
                for (_, receipt) in unwritten {
                    receipt.settle(Status::Offline, &self.ctx.metrics);
                }
            }
        }
    }

    /// Ends the connection: the session and its presence entry go, after
    /// which no more messages can be queued (every message is queued under
    /// the session table's lock, by name); what was not written is settled
    /// (in the order it was queued: the write buffer's first).
    async fn finish(mut self) {
        if let Some(drain) = self.drain.take() {
            drain.finish().await;
        }
        self.requests.end().await;
        let mut unwritten = self.take_queued();
        let mut first = self.output.close().await;
        first.append(&mut unwritten);
        self.settle_unwritten(first);
        // Every message released its bytes when settled; a remainder would
        // be a bug, and must not shrink the server's budget for good.
        let left = self.share.queue.get();
        if left > 0 {
            tracing::error!(server = %self.ctx.me.id, left, "queued bytes left at close");
            self.share.release(left);
        }
        self.ctx.metrics.connections.dec();
    }
}
