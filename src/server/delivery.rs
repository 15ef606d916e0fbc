//! Delivery on this server: handing a message to a local session, the
//! `message` line its recipient reads, and the sender's reply line for an
//! outcome. Every path that delivers (a local chat, a forward from the
//! relay, an operator's message) goes through here, so they agree.
//! Owns no state and never touches the network.

use bytes::Bytes;

use super::sessions::{Delivery, Sessions};
use crate::outcome::ClientOutcome;
use crate::pb::{ChatMessage, Status};
use crate::protocol::reply::{Event, Ref, code_line};

/// Queues `message` for its recipient if the recipient is on this server.
/// `NotHere` means no local session has the name.
pub fn deliver_local(sessions: &Sessions, message: &ChatMessage) -> Status {
    match sessions.deliver(&message.to, || message_line(message)) {
        Delivery::Delivered => Status::Delivered,
        Delivery::Busy => Status::Busy,
        Delivery::NotHere => Status::NotHere,
    }
}

/// The `message` event line a recipient receives.
pub fn message_line(m: &ChatMessage) -> Bytes {
    Event::Message {
        id: &m.id,
        from: &m.from,
        to: &m.to,
        content: &m.content,
        ts: m.ts_ms,
    }
    .to_line()
}

/// The sender's reply for the outcome of its chat `id`.
pub fn outcome_line(id: &str, reference: &Ref, status: Status) -> Bytes {
    match ClientOutcome::of(status) {
        ClientOutcome::Delivered => Event::Ack {
            id,
            reference,
            status: "delivered",
        }
        .to_line(),
        ClientOutcome::Failed(code) => code_line(code, reference),
    }
}
