//! What each client request does.
//!
//! Library errors (presence store failures) become protocol errors here and
//! only here; everything below speaks typed errors.

use bytes::Bytes;

use super::connection::{Conn, Session};
use super::pending::{Waiter, outcome_line};
use super::sessions::{Delivery, Displaced, SessionHandle};
use crate::pb::{self, Status};
use crate::presence::{PresenceError, now_ms};
use crate::protocol::reply::{Event, Ref, error_line};
use crate::protocol::request::{Parsed, parse};
use crate::protocol::{ChatRequest, ErrorCode, KickReason, ProtocolError, Request};

type Reply = Result<Option<Bytes>, ProtocolError>;

/// A presence store failure, as the client sees it.
fn store_error(e: PresenceError) -> ProtocolError {
    tracing::warn!(error = %e, "presence store failed");
    ProtocolError::new(
        ErrorCode::Unavailable,
        "presence registry unavailable; try again",
    )
}

impl Conn {
    /// Runs one request line; its reply (if any) is queued on `out`.
    pub async fn handle(&mut self, line: &[u8]) {
        let Parsed { reference, request } = parse(line);
        let over_budget = self.limiter.as_ref().is_some_and(|l| l.check().is_err());
        let reply = match request {
            _ if over_budget => Err(ErrorCode::RateLimited.into()),
            Ok(request) => self.execute(request, &reference).await,
            Err(e) => Err(e),
        };
        match reply {
            Ok(Some(line)) => self.push(&line),
            Ok(None) => {}
            Err(e) => self.push(&error_line(&e, &reference)),
        }
    }

    async fn execute(&mut self, request: Request, reference: &Ref) -> Reply {
        match request {
            Request::Ping => Ok(Some(Event::Pong { reference }.to_line())),
            Request::Login { name, token } => self.login(name, token, reference).await,
            Request::Chat(chat) => self.chat(chat, reference).await,
            Request::Who { name } => self.who(&name, reference).await,
            Request::Logout => self.logout(reference).await,
        }
    }

    async fn login(&mut self, name: String, token: Option<String>, reference: &Ref) -> Reply {
        if self.session.is_some() {
            return Err(ErrorCode::AlreadyLoggedIn.into());
        }
        if let Some(auth) = &self.gw.auth {
            auth.verify(&name, token.as_deref())
                .map_err(|e| ProtocolError::new(ErrorCode::Unauthorized, e.to_string()))?;
        }
        let session = Session {
            id: self.gw.new_session_id(),
            since_ms: now_ms(),
            name,
        };
        let displaced = self
            .gw
            .store
            .login(&self.presence(&session))
            .await
            .map_err(store_error)?;
        if let Some(old) =
            displaced.filter(|o| o.server == self.gw.id && o.incarnation == self.gw.incarnation)
        {
            self.gw
                .sessions
                .kick(&old.name, old.conn, KickReason::LoggedInElsewhere);
        }
        let handle = SessionHandle {
            session: session.id,
            since_ms: session.since_ms,
            messages: self.messages_tx.clone(),
            control: self.control_tx.clone(),
        };
        let line = Event::Login {
            ok: true,
            name: &session.name,
            server: &self.gw.id,
            reference,
        }
        .to_line();
        tracing::debug!(server = %self.gw.id, user = %session.name, "login");
        let installed = self.gw.sessions.install(&session.name, handle);
        self.gw.metrics.logins.inc();
        self.session = Some(session);
        if let Err(Displaced(reason)) = installed {
            // Kicked (a newer login elsewhere, an operator) while this
            // login was in flight.
            self.push(&line);
            self.kicked(reason);
            return Ok(None);
        }
        Ok(Some(line))
    }

    async fn logout(&mut self, reference: &Ref) -> Reply {
        if self.session.is_none() {
            return Err(ErrorCode::NotLoggedIn.into());
        }
        super::connection::close_session(self, false).await;
        Ok(Some(
            Event::Logout {
                ok: true,
                reference,
            }
            .to_line(),
        ))
    }

    async fn who(&mut self, name: &str, reference: &Ref) -> Reply {
        let online = self.gw.sessions.is_online(name)
            || self
                .gw
                .store
                .lookup(name)
                .await
                .map_err(store_error)?
                .is_some();
        Ok(Some(
            Event::Who {
                name,
                online,
                reference,
            }
            .to_line(),
        ))
    }

    async fn chat(&mut self, chat: ChatRequest, reference: &Ref) -> Reply {
        let Some(session) = &self.session else {
            return Err(ErrorCode::NotLoggedIn.into());
        };
        if chat.send.as_deref().is_some_and(|s| s != session.name) {
            return Err(ErrorCode::SenderMismatch.into());
        }
        let message = pb::ChatMessage {
            id: self.gw.new_message_id(),
            from: session.name.clone(),
            to: chat.recv,
            content: chat.content,
            ts_ms: now_ms(),
        };
        let local = self
            .gw
            .sessions
            .deliver(&message.to, || message_line(&message));
        let status = match local {
            Delivery::Delivered => Status::Delivered,
            Delivery::Busy => Status::Busy,
            Delivery::NotHere => {
                self.gw.metrics.messages_forwarded.inc();
                return self.forward(message, reference).await;
            }
        };
        self.gw.metrics.messages_local.inc();
        self.gw.metrics.outcome(status);
        Ok(Some(outcome_line(&message.id, reference, status)))
    }

    /// Hands a chat to the relay; its outcome arrives later as a control
    /// line. Waits for an in-flight slot first: backpressure, not loss.
    async fn forward(&mut self, message: pb::ChatMessage, reference: &Ref) -> Reply {
        let Ok(permit) = self.inflight.clone().acquire_owned().await else {
            return Err(ErrorCode::Unavailable.into());
        };
        let waiter = Waiter::Client {
            control: self.control_tx.clone(),
            reference: reference.clone(),
            permit,
        };
        self.gw.forward(message, waiter);
        self.awaiting_outcomes += 1;
        Ok(None)
    }
}

/// The `message` event line a recipient receives.
pub fn message_line(m: &pb::ChatMessage) -> Bytes {
    Event::Message {
        id: &m.id,
        from: &m.from,
        to: &m.to,
        content: &m.content,
        ts: m.ts_ms,
    }
    .to_line()
}
