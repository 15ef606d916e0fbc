//! What a `pairs` run needs from the system under test, so that one
//! workload (plan, windows, pacing, verification, audit, report) measures
//! both switchboard and the NATS baseline: connect a user and make it
//! reachable, send batches of chats, and read what comes back as
//! [`Event`]s (outcomes of the user's own chats, messages for it).
//!
//! - `switchboard`: the client protocol (NDJSON over TCP, `login`, `chat`,
//!   `ack`/`error` outcomes), through `crate::client`.
//! - `nats`: core NATS through the `async-nats` client; a chat's outcome
//!   is the recipient's ack (see that file for the subjects and why).
//!
//! Owns the interface only; the files below it must not count, time or
//! judge anything (the reader, `audit` and `report` do).

pub(super) mod nats;
pub(super) mod switchboard;

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use crate::content::Stamp;

/// One thing a user's connection brought, borrowed from its read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Event<'a> {
    /// The outcome (a `verify::outcome` code) of this user's chat
    /// `reference` (its sequence number).
    Outcome { reference: u64, code: u8 },
    /// A chat for this user: its sender as the system reports it, and
    /// the content as it arrived.
    Message { from: &'a str, content: &'a [u8] },
    /// The server ended the session (switchboard's `kicked`).
    Kicked { reason: Option<&'a str> },
    /// Well formed, but nothing this run asked for.
    Unexpected,
    /// Not understood.
    Unparseable,
}

/// The receiving side of a user's connection, owned by its reader.
pub(super) trait Inbox: Send + 'static {
    /// The next event already received, without waiting.
    fn next_event(&mut self) -> Option<Event<'_>>;
    /// Waits until more may be read; false at the end of the stream.
    fn fill(&mut self) -> impl Future<Output = io::Result<bool>> + Send;
}

/// The sending side of a user's connection, owned by its writer.
pub(super) trait Outbox: Send + 'static {
    /// Adds chat `stamp.seq` to `to`, with `size` bytes of content, to the
    /// batch that `send` sends.
    fn push_chat(&mut self, to: &str, stamp: Stamp, size: usize);
    /// Sends the batch (all of it, or an error).
    fn send(&mut self) -> impl Future<Output = io::Result<()>> + Send;
    /// The run is over: nothing more will be sent. Called only once every
    /// reader has ended, so that no outcome is cut off.
    fn close(self) -> impl Future<Output = ()> + Send;
}

/// A system `pairs` can measure.
pub(super) trait Transport: Send + Sync + 'static {
    /// In the JSON summary's `transport` key and on stderr.
    const NAME: &'static str;
    type Inbox: Inbox;
    type Outbox: Outbox;

    /// Connects user `name` to the server at `addr` and makes it
    /// reachable (`reference`: for a request that needs one).
    fn open(
        addr: SocketAddr,
        name: &str,
        reference: u64,
    ) -> impl Future<Output = anyhow::Result<(Self::Inbox, Self::Outbox)>> + Send;

    /// Once every user is open: returns when a chat sent now from a user
    /// on `a` to one on `b`, or back, can reach it (gives up after
    /// `timeout`).
    fn settle(
        a: SocketAddr,
        b: SocketAddr,
        run: &str,
        timeout: std::time::Duration,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}
