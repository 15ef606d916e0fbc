//! What a client's requests do: one connection's protocol state (who is
//! logged in, which chats await their outcome) and the handler of each
//! request. The one place where library errors (presence store failures)
//! become protocol errors; everything below speaks typed errors.
//!
//! The connection task (`connection`) owns the socket and calls in here;
//! nothing here calls back into it: replies are appended to the buffer it
//! passes, and `Flow::Close` tells it to close.

use std::num::NonZeroU32;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;

use super::control::ControlTx;
use super::delivery::deliver_local;
use super::forwards::{Forwards, Waiter};
use super::identity::Identity;
use super::mailbox::Mailbox;
use super::mesh::Mesh;
use super::options::{Limits, RateLimit};
use super::outbox::{Budget, MessagesTx, QueueBytes, Receipt, outcome_line};
use super::roster::Roster;
use super::sessions::{Displaced, SessionHandle, Sessions};
use crate::auth::Authenticator;
use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::pb::{self, Status};
use crate::presence::PresenceError;
use crate::protocol::reply::{Event, Ref, error_line};
use crate::protocol::request::{Parsed, parse};
use crate::protocol::{ChatRequest, ErrorCode, KickReason, ProtocolError, Request};

/// What a client connection may touch.
pub struct Context {
    pub me: Arc<Identity>,
    pub sessions: Arc<Sessions>,
    pub forwards: Arc<Forwards>,
    /// Mesh mode's router (None: chats go through the relays).
    pub mesh: Option<Arc<Mesh>>,
    pub roster: Arc<Roster>,
    pub limits: Limits,
    /// The byte budgets of queued output (shared with `sessions`).
    pub budget: Arc<Budget>,
    pub auth: Option<Authenticator>,
    pub metrics: Arc<Metrics>,
    /// The server's lookup budget (`who` of names not on this server),
    /// shared by every connection; None: unlimited.
    pub lookup_budget: Option<Arc<DefaultDirectRateLimiter>>,
    /// The offline mailbox (`--mailbox`), drained after each login.
    pub mailbox: Option<Arc<Mailbox>>,
}

/// Whether the connection goes on after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// A session logged in (its mailbox is drained first).
    LoggedIn,
    /// The session ended (logout); the connection stays open.
    SessionEnded,
    /// Close after writing what is buffered (the session was displaced).
    Close,
}

/// The logged-in identity of a connection.
#[derive(Debug, Clone)]
struct Session {
    name: String,
    id: u64,
    since_ms: i64,
}

/// A request's answer: a line to send, nothing (sent later), or an error.
type Answer = Result<Option<Bytes>, ProtocolError>;

/// One connection's protocol state.
pub struct Requests {
    ctx: Arc<Context>,
    session: Option<Session>,
    /// This connection's queues, handed to the session table at login.
    messages: MessagesTx,
    queue: Arc<QueueBytes>,
    control: ControlTx,
    /// Slots for cross-server chats awaiting their outcome.
    inflight: Arc<Semaphore>,
    /// Chats whose outcome line has not arrived yet (queued for a local
    /// recipient, or forwarded); a client that half-closes still gets them
    /// before the connection ends.
    awaiting_outcomes: usize,
    /// The request budget (None: unlimited).
    limiter: Option<DefaultDirectRateLimiter>,
    /// This connection's share of the lookup budget (None: unlimited).
    lookup_share: Option<DefaultDirectRateLimiter>,
}

/// Appends a request's answer (or its error) to the output.
fn append(out: &mut BytesMut, answer: Answer, reference: &Ref) {
    match answer {
        Ok(Some(line)) => out.extend_from_slice(&line),
        Ok(None) => {}
        Err(e) => out.extend_from_slice(&error_line(&e, reference)),
    }
}

/// A presence store failure, as the client sees it.
fn store_error(e: PresenceError) -> ProtocolError {
    tracing::warn!(error = %e, "presence store failed");
    ProtocolError::new(
        ErrorCode::Unavailable,
        "presence registry unavailable; try again",
    )
}

fn request_limiter(limit: Option<RateLimit>) -> Option<DefaultDirectRateLimiter> {
    let RateLimit { per_sec, burst } = limit?;
    Some(RateLimiter::direct(
        Quota::per_second(per_sec).allow_burst(burst),
    ))
}

/// One connection may spend at most this fraction of its server's lookup
/// budget, so that one client cannot leave the others without.
const LOOKUP_SHARE: u32 = 10;

/// The server-wide lookup budget: `per_sec` lookups, one second's burst.
pub fn lookup_budget(per_sec: Option<NonZeroU32>) -> Option<Arc<DefaultDirectRateLimiter>> {
    Some(Arc::new(RateLimiter::direct(Quota::per_second(per_sec?))))
}

fn lookup_share(per_sec: Option<NonZeroU32>) -> Option<DefaultDirectRateLimiter> {
    let share = NonZeroU32::new(per_sec?.get() / LOOKUP_SHARE).unwrap_or(NonZeroU32::MIN);
    Some(RateLimiter::direct(Quota::per_second(share)))
}

/// A lookup over budget, as the client sees it.
fn over_lookup_budget() -> ProtocolError {
    ProtocolError::new(
        ErrorCode::Unavailable,
        "presence lookups over budget; try again",
    )
}

impl Requests {
    pub fn new(
        ctx: Arc<Context>,
        messages: MessagesTx,
        queue: Arc<QueueBytes>,
        control: ControlTx,
    ) -> Self {
        Self {
            queue,
            inflight: Arc::new(Semaphore::new(ctx.limits.max_inflight)),
            limiter: request_limiter(ctx.limits.rate_limit),
            lookup_share: lookup_share(ctx.limits.lookup_budget),
            ctx,
            session: None,
            messages,
            control,
            awaiting_outcomes: 0,
        }
    }

    pub fn logged_in(&self) -> bool {
        self.session.is_some()
    }

    /// The logged-in name, if any.
    pub fn name(&self) -> Option<&str> {
        self.session.as_ref().map(|s| s.name.as_str())
    }

    pub fn awaiting_outcomes(&self) -> usize {
        self.awaiting_outcomes
    }

    /// The outcome line of one of this connection's chats arrived.
    pub fn outcome_arrived(&mut self) {
        self.awaiting_outcomes = self.awaiting_outcomes.saturating_sub(1);
    }

    /// Runs one request line; its reply (if any) is appended to `out`.
    pub async fn handle(&mut self, line: &[u8], out: &mut BytesMut) -> Flow {
        let Parsed { reference, request } = parse(line);
        let over_budget = self.limiter.as_ref().is_some_and(|l| l.check().is_err());
        let answer = match request {
            _ if over_budget => Err(ErrorCode::RateLimited.into()),
            Err(e) => Err(e),
            Ok(Request::Login { name, token }) => {
                return self.login(name, token, &reference, out).await;
            }
            Ok(Request::Ping) => Ok(Some(
                Event::Pong {
                    reference: &reference,
                }
                .to_line(),
            )),
            Ok(Request::Chat(chat)) => self.chat(chat, &reference).await,
            Ok(Request::Who { name }) => self.who(&name, &reference).await,
            Ok(Request::Logout) => {
                let answer = self.logout(&reference).await;
                let ended = answer.is_ok();
                append(out, answer, &reference);
                return if ended {
                    Flow::SessionEnded
                } else {
                    Flow::Continue
                };
            }
        };
        append(out, answer, &reference);
        Flow::Continue
    }

    async fn login(
        &mut self,
        name: String,
        token: Option<String>,
        reference: &Ref,
        out: &mut BytesMut,
    ) -> Flow {
        match self.try_login(name, token, reference).await {
            Ok((line, installed)) => {
                out.extend_from_slice(&line);
                if let Err(Displaced(reason)) = installed {
                    // Kicked (a newer login elsewhere, an operator) while
                    // this login was in flight.
                    out.extend_from_slice(&self.kick(reason));
                    return Flow::Close;
                }
                return Flow::LoggedIn;
            }
            Err(e) => out.extend_from_slice(&error_line(&e, reference)),
        }
        Flow::Continue
    }

    /// Records the login and installs the session; returns the login line
    /// and whether the session survived its own installation.
    async fn try_login(
        &mut self,
        name: String,
        token: Option<String>,
        reference: &Ref,
    ) -> Result<(Bytes, Result<(), Displaced>), ProtocolError> {
        if self.session.is_some() {
            return Err(ErrorCode::AlreadyLoggedIn.into());
        }
        if let Some(auth) = &self.ctx.auth {
            auth.verify(&name, token.as_deref())
                .map_err(|e| ProtocolError::new(ErrorCode::Unauthorized, e.to_string()))?;
        }
        let ctx = &self.ctx;
        let session = Session {
            id: ctx.me.new_session_id(),
            since_ms: now_ms(),
            name,
        };
        let entry = ctx.me.presence(&session.name, session.id, session.since_ms);
        let handle = SessionHandle {
            id: session.id,
            since_ms: session.since_ms,
            messages: self.messages.clone(),
            queue: self.queue.clone(),
            control: self.control.clone(),
        };
        // Runs once the store recorded the login, before the roster stops
        // counting the session as logging in.
        let install = |displaced: Option<crate::presence::Presence>| {
            if let Some(old) = displaced {
                ctx.sessions
                    .kick(&old.name, old.session, KickReason::LoggedInElsewhere);
            }
            ctx.sessions.install(&session.name, handle)
        };
        let installed = ctx
            .roster
            .login(&entry, install)
            .await
            .map_err(store_error)?;
        let line = Event::Login {
            ok: true,
            name: &session.name,
            server: &ctx.me.id,
            reference,
        }
        .to_line();
        tracing::debug!(server = %ctx.me.id, user = %session.name, "login");
        ctx.metrics.logins.inc();
        self.session = Some(session);
        Ok((line, installed))
    }

    async fn logout(&mut self, reference: &Ref) -> Answer {
        if self.session.is_none() {
            return Err(ErrorCode::NotLoggedIn.into());
        }
        self.end().await;
        Ok(Some(
            Event::Logout {
                ok: true,
                reference,
            }
            .to_line(),
        ))
    }

    async fn who(&mut self, name: &str, reference: &Ref) -> Answer {
        let online = self.ctx.sessions.is_online(name) || {
            self.spend_lookup()?;
            self.ctx.roster.is_online(name).await.map_err(store_error)?
        };
        Ok(Some(
            Event::Who {
                name,
                online,
                reference,
            }
            .to_line(),
        ))
    }

    /// Takes one lookup for `who`: from this connection's share, then
    /// from the server's budget.
    fn spend_lookup(&self) -> Result<(), ProtocolError> {
        self.spend(self.lookup_share.as_ref())
    }

    /// Takes one lookup for routing a chat (mesh mode) from the server's
    /// budget alone, as the relay budgets chats per server: a client's
    /// burst of chats to an offline user (which the mailbox stores) must
    /// not be cut at a connection's tenth in one mode and not the other.
    fn spend_route_lookup(&self) -> Result<(), ProtocolError> {
        self.spend(None)
    }

    fn spend(&self, share: Option<&DefaultDirectRateLimiter>) -> Result<(), ProtocolError> {
        let take =
            |budget: Option<&DefaultDirectRateLimiter>| budget.is_none_or(|b| b.check().is_ok());
        if take(share) && take(self.ctx.lookup_budget.as_deref()) {
            return Ok(());
        }
        self.ctx.metrics.lookups_refused.inc();
        Err(over_lookup_budget())
    }

    async fn chat(&mut self, chat: ChatRequest, reference: &Ref) -> Answer {
        let Some(session) = &self.session else {
            return Err(ErrorCode::NotLoggedIn.into());
        };
        if chat.send.as_deref().is_some_and(|s| s != session.name) {
            return Err(ErrorCode::SenderMismatch.into());
        }
        let ctx = &self.ctx;
        let message = pb::ChatMessage {
            id: ctx.me.new_message_id(),
            from: session.name.clone(),
            to: chat.recv,
            content: chat.content,
            ts_ms: now_ms(),
        };
        let receipt =
            || Receipt::local(self.control.clone(), message.id.clone(), reference.clone());
        match deliver_local(&ctx.sessions, &message, receipt) {
            Ok(()) => {
                // The outcome comes once the message is written (or not).
                ctx.metrics.messages_local.inc();
                self.awaiting_outcomes += 1;
                Ok(None)
            }
            Err(Status::NotHere) => {
                ctx.metrics.messages_forwarded.inc();
                self.forward(message, reference).await
            }
            Err(status) => {
                ctx.metrics.messages_local.inc();
                ctx.metrics.outcome(status);
                Ok(Some(outcome_line(&message.id, reference, status)))
            }
        }
    }

    /// Hands a chat to the relay (in mesh mode: to its recipient's
    /// server); its outcome arrives later as a control line. Waits for an
    /// in-flight slot first: backpressure, not loss.
    async fn forward(&mut self, message: pb::ChatMessage, reference: &Ref) -> Answer {
        let dest = match self.destination(&message.to).await? {
            Ok(dest) => dest,
            // Mesh mode found the recipient offline here: this server
            // decided, so it stores (relay mode stores on the relay's
            // `offline` outcome, in `Forwards`).
            Err(Status::Offline) if self.ctx.mailbox.is_some() => {
                self.store_offline(&message, reference);
                return Ok(None);
            }
            Err(status) => {
                self.ctx.metrics.outcome(status);
                return Ok(Some(outcome_line(&message.id, reference, status)));
            }
        };
        let Ok(permit) = self.inflight.clone().acquire_owned().await else {
            return Err(ErrorCode::Unavailable.into());
        };
        let waiter = Waiter::Client {
            control: self.control.clone(),
            reference: reference.clone(),
            slot: Arc::new(permit),
        };
        self.ctx.forwards.forward(message, waiter, dest.as_deref());
        self.awaiting_outcomes += 1;
        Ok(None)
    }

    /// Stores a chat to an offline recipient; its outcome (`stored`, or
    /// `mailbox_full`, `offline`) arrives later as a control line.
    fn store_offline(&mut self, message: &pb::ChatMessage, reference: &Ref) {
        let Some(mailbox) = &self.ctx.mailbox else {
            return;
        };
        let receipt = Receipt::local(self.control.clone(), message.id.clone(), reference.clone());
        let metrics = self.ctx.metrics.clone();
        mailbox.store(message, move |status| receipt.settle(status, &metrics));
        self.awaiting_outcomes += 1;
    }

    /// Mesh mode: the server holding `to` (a store lookup, from the
    /// lookup budget, unless cached), or the chat's outcome if it goes
    /// nowhere. Relay mode: None, the relay routes.
    async fn destination(&self, to: &str) -> Result<Result<Option<String>, Status>, ProtocolError> {
        let Some(mesh) = &self.ctx.mesh else {
            return Ok(Ok(None));
        };
        if let Some(server) = mesh.cached(to) {
            return Ok(Ok(Some(server)));
        }
        self.spend_route_lookup()?;
        Ok(mesh.lookup(to).await.map(Some))
    }

    /// Closes the session (if any) with a `kicked` event; returns the line.
    /// Displaced or kicked by an operator, the session no longer owns its
    /// name: it is forgotten without a logout. Kicked by the drain, it
    /// still does: `end` logs it out like any disconnect, so that presence
    /// tells the truth while the rest of the drain goes on.
    pub fn kick(&mut self, reason: KickReason) -> Bytes {
        if let Some(s) = &self.session {
            self.ctx.metrics.kick(reason);
            // The drain kicks everyone: one line per session would bury
            // its own summary.
            if reason == KickReason::LoggedInElsewhere {
                tracing::info!(server = %self.ctx.me.id, user = %s.name, "session kicked: logged in elsewhere");
            } else {
                tracing::debug!(server = %self.ctx.me.id, user = %s.name, ?reason, "session closed");
            }
        }
        if reason != KickReason::ServerShutdown {
            self.session = None;
        }
        Event::Kicked { reason }.to_line()
    }

    /// `kick`, if session `session` is still this connection's.
    pub fn kick_session(&mut self, session: u64, reason: KickReason) -> Option<Bytes> {
        let ours = self.session.as_ref().is_some_and(|s| s.id == session);
        ours.then(|| self.kick(reason))
    }

    /// Ends the session, if any: forgets it locally and removes its
    /// presence entry (compare-and-delete: harmless if the name moved on).
    pub async fn end(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        self.ctx.sessions.remove(&session.name, session.id);
        let entry = self
            .ctx
            .me
            .presence(&session.name, session.id, session.since_ms);
        self.ctx.roster.logout(entry).await;
    }
}
