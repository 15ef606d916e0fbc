//! One task per client connection.
//!
//! The task owns the socket: it reads requests, runs them (`commands`),
//! and writes everything the client is sent: replies, chat messages from
//! its bounded queue, and control lines. Writes are batched: everything
//! ready is appended to one buffer and written once, so a busy client gets
//! few large writes. If the client stops reading, writes block, the queue
//! fills and senders get `recipient_busy`; after the write timeout the
//! connection is closed. Memory per connection stays bounded.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{FutureExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::codec::FramedRead;

use super::Gateway;
use super::sessions::Control;
use crate::presence::Presence;
use crate::protocol::reply::{Event, code_line};
use crate::protocol::{ErrorCode, Frame, KickReason, LineCodec};
use crate::shutdown::CancellationToken;

/// Messages and control lines drained per write, so one flood cannot
/// starve reading this client's own requests.
const MAX_BATCH: usize = 256;

/// Initial read buffer per connection.
const READ_BUFFER: usize = 512;

/// The logged-in identity of a connection.
#[derive(Debug, Clone)]
pub struct Session {
    pub name: String,
    pub id: u64,
    pub since_ms: i64,
}

/// A connection's state, as the command handlers see it.
pub struct Conn {
    pub gw: Arc<Gateway>,
    pub session: Option<Session>,
    pub messages_tx: mpsc::Sender<Bytes>,
    pub control_tx: mpsc::UnboundedSender<Control>,
    /// Slots for cross-server chats awaiting their outcome.
    pub inflight: Arc<Semaphore>,
    /// Cross-server chats whose outcome line has not arrived yet; a client
    /// that half-closes still gets them before the connection ends.
    pub awaiting_outcomes: usize,
    /// Lines waiting to be written.
    pub out: BytesMut,
    /// The request budget (None: unlimited).
    pub limiter: Option<governor::DefaultDirectRateLimiter>,
    /// Set when the connection must close after the next write.
    pub closing: bool,
}

impl Conn {
    pub fn push(&mut self, line: &[u8]) {
        self.out.extend_from_slice(line);
    }

    pub fn presence(&self, s: &Session) -> Presence {
        Presence {
            name: s.name.clone(),
            server: self.gw.id.clone(),
            incarnation: self.gw.incarnation.clone(),
            conn: s.id,
            since_ms: s.since_ms,
        }
    }

    fn apply_control(&mut self, control: Control) {
        match control {
            Control::Reply(line) => {
                self.awaiting_outcomes = self.awaiting_outcomes.saturating_sub(1);
                self.push(&line);
            }
            Control::Kick { session, reason } => {
                if self.session.as_ref().is_some_and(|s| s.id == session) {
                    self.kicked(reason);
                }
            }
        }
    }

    /// Handles one decoded frame (or end of input); false if the
    /// connection is broken.
    async fn on_frame(
        &mut self,
        frame: Option<std::io::Result<Frame>>,
        input_done: &mut bool,
    ) -> bool {
        match frame {
            Some(Ok(Frame::Line(line))) => self.handle(&line).await,
            Some(Ok(Frame::TooLong)) => self.push(&code_line(ErrorCode::LineTooLong, &None)),
            Some(Err(_)) => return false,
            // Half-closed: answer what is still in flight, then close.
            None => *input_done = true,
        }
        true
    }

    pub fn kicked(&mut self, reason: KickReason) {
        if self.session.is_some() {
            self.gw.metrics.kick(reason);
        }
        if let Some(s) = &self.session {
            // Shutdown kicks everyone at once: one line per session would
            // bury the drain's own summary.
            if reason == KickReason::LoggedInElsewhere {
                tracing::info!(server = %self.gw.id, user = %s.name, "session kicked: logged in elsewhere");
            } else {
                tracing::debug!(server = %self.gw.id, user = %s.name, ?reason, "session closed");
            }
        }
        self.push(&Event::Kicked { reason }.to_line());
        // The session no longer owns its name: forget it without a logout
        // (on shutdown the server purges all its entries in one sweep).
        if let Some(s) = self.session.take()
            && reason == KickReason::ServerShutdown
        {
            self.gw.sessions.remove(&s.name, s.id);
        }
        self.closing = true;
    }
}

/// What an admitted connection holds until it ends: its place under the
/// server's cap and under its address's limit.
pub struct Slots {
    pub _server: OwnedSemaphorePermit,
    pub _ip: Option<super::limits::IpSlot>,
}

pub async fn run(gw: Arc<Gateway>, stream: TcpStream, _slots: Slots, shutdown: CancellationToken) {
    let (read, mut write) = stream.into_split();
    // A small initial read buffer: it grows with the lines a client sends,
    // and most connections sit idle (the default 8 KiB would dominate
    // their memory).
    let codec = LineCodec::new(gw.limits.max_line_bytes as usize);
    let mut reader = FramedRead::with_capacity(read, codec, READ_BUFFER);
    let (messages_tx, mut messages_rx) = mpsc::channel(gw.limits.outbound_queue as usize);
    let (control_tx, mut control_rx) = mpsc::unbounded_channel();
    let mut conn = Conn {
        limiter: super::limits::request_limiter(&gw.limits),
        inflight: Arc::new(Semaphore::new(gw.limits.max_inflight as usize)),
        gw,
        session: None,
        messages_tx,
        control_tx,
        out: BytesMut::new(),
        closing: false,
        awaiting_outcomes: 0,
    };
    conn.gw.metrics.connections.inc();
    let login_deadline = tokio::time::sleep(conn.gw.limits.login_timeout());
    tokio::pin!(login_deadline);
    let mut ever_logged_in = false;
    let mut input_done = false;

    while !conn.closing {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => conn.kicked(KickReason::ServerShutdown),
            Some(control) = control_rx.recv() => conn.apply_control(control),
            Some(line) = messages_rx.recv() => conn.push(&line),
            frame = reader.next(), if !input_done => {
                if !conn.on_frame(frame, &mut input_done).await {
                    break;
                }
                // Run the requests already buffered too, so that their
                // replies leave in one write instead of one write each.
                for _ in 0..MAX_BATCH {
                    if input_done || conn.closing {
                        break;
                    }
                    let Some(frame) = reader.next().now_or_never() else { break };
                    if !conn.on_frame(frame, &mut input_done).await {
                        conn.closing = true;
                    }
                }
                ever_logged_in |= conn.session.is_some();
            }
            _ = &mut login_deadline, if !ever_logged_in => {
                conn.push(&crate::protocol::reply::error_line(
                    &crate::protocol::ProtocolError::new(ErrorCode::NotLoggedIn, "login timeout; closing"),
                    &None,
                ));
                conn.closing = true;
            }
        }
        drain_ready(&mut conn, &mut control_rx, &mut messages_rx);
        if !flush(&mut conn, &mut write).await || (input_done && conn.awaiting_outcomes == 0) {
            break;
        }
    }
    let _ = write.shutdown().await;
    close_session(&mut conn, shutdown.is_cancelled()).await;
    conn.gw.metrics.connections.dec();
}

/// Appends whatever else is ready, up to a batch.
fn drain_ready(
    conn: &mut Conn,
    control_rx: &mut mpsc::UnboundedReceiver<Control>,
    messages_rx: &mut mpsc::Receiver<Bytes>,
) {
    for _ in 0..MAX_BATCH {
        if conn.closing {
            return;
        }
        if let Ok(control) = control_rx.try_recv() {
            conn.apply_control(control);
        } else if let Ok(line) = messages_rx.try_recv() {
            conn.push(&line);
        } else {
            return;
        }
    }
}

/// Writes the buffer; false if the client is gone or stopped reading.
async fn flush(conn: &mut Conn, write: &mut OwnedWriteHalf) -> bool {
    if conn.out.is_empty() {
        return true;
    }
    let timeout = conn.gw.limits.write_timeout();
    match tokio::time::timeout(timeout, write.write_all(&conn.out)).await {
        Ok(Ok(())) => {
            conn.out.clear();
            true
        }
        Ok(Err(_)) => false,
        Err(_) => {
            tracing::info!(server = %conn.gw.id, "client stopped reading; closing after write timeout");
            false
        }
    }
}

/// Forgets a session that is still ours, locally and in the registry.
/// During shutdown the server purges its entries in one sweep instead.
pub async fn close_session(conn: &mut Conn, shutting_down: bool) {
    let Some(session) = conn.session.take() else {
        return;
    };
    conn.gw.sessions.remove(&session.name, session.id);
    if shutting_down {
        return;
    }
    let presence = conn.presence(&session);
    if let Err(e) = conn.gw.store.logout(&presence).await {
        tracing::warn!(user = %session.name, error = %e, "could not remove presence entry; retrying with the heartbeat");
        conn.gw.stale.push(presence);
    }
}
