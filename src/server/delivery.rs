//! Delivery on this server: handing a message to a local session and the
//! `message` line its recipient reads. Every path that delivers (a local
//! chat, a forward from the relay, an operator's message, the offline
//! mailbox at login) goes through here, so they agree. Owns no state and never touches the network.

use bytes::Bytes;

use super::outbox::Receipt;
use super::sessions::{Sessions, Undelivered};
use crate::mailbox::Message;
use crate::pb::{ChatMessage, Status};
use crate::protocol::reply::Event;

/// Queues `message` for its recipient if the recipient is on this server;
/// the receipt `receipt` makes learns the outcome once the message is
/// written or dropped. A refusal (`BUSY`, or `NOT_HERE`: no local session
/// has the name) is for the caller to answer or route elsewhere.
pub fn deliver_local(
    sessions: &Sessions,
    message: &ChatMessage,
    receipt: impl FnOnce() -> Receipt,
) -> Result<(), Status> {
    sessions
        .deliver(&message.to, || message_line(message), receipt)
        .map_err(|why| match why {
            Undelivered::Busy => Status::Busy,
            Undelivered::NotHere => Status::NotHere,
        })
}

/// The `message` event line a recipient receives.
pub fn message_line(m: &ChatMessage) -> Bytes {
    line(&m.id, &m.from, &m.to, &m.content, m.ts_ms, false)
}

/// The `message` line of a message from the offline mailbox: the same
/// event, marked `"stored":true`.
pub fn stored_line(m: &Message) -> Bytes {
    line(&m.id, &m.from, &m.to, &m.content, m.ts_ms, true)
}

fn line(id: &str, from: &str, to: &str, content: &str, ts: i64, stored: bool) -> Bytes {
    Event::Message {
        id,
        from,
        to,
        content,
        ts,
        stored,
    }
    .to_line()
}
