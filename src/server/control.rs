//! What a connection is told besides the messages queued for it: the
//! outcome lines of its own chats, kicks, and new mail in the offline
//! mailbox. Never refused, and bounded by construction (one outcome per
//! chat awaiting one, one kick, one notice per message stored).

use bytes::Bytes;

use crate::protocol::KickReason;

/// Where a connection's control lines are sent, and received.
pub type ControlTx = flume::Sender<Control>;
pub type ControlRx = flume::Receiver<Control>;

/// A connection's control channel: unbounded (see above), and empty
/// channels allocate nothing, so idle connections stay small.
pub fn control_channel() -> (ControlTx, ControlRx) {
    flume::unbounded()
}

#[derive(Debug)]
pub enum Control {
    /// The outcome line of one of this connection's chats.
    Outcome(Bytes),
    /// Close session `session` with a `kicked` event.
    Kick { session: u64, reason: KickReason },
    /// The session's offline mailbox got a message after the login's
    /// drain: drain it again.
    Mailbox,
}
