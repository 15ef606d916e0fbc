//! The offline mailbox: messages kept for users who are not online, until
//! they log in again.
//!
//! `MailboxStore` is the one interface; `RedisMailbox` is what production
//! runs (a Redis Stream per user, beside the user's presence entry),
//! `MemoryMailbox` the in-process store of the local cluster. Both follow
//! the same rules, checked by one suite (`conformance`):
//!
//! - a user's mailbox keeps its messages in the order they were appended;
//!   `take` returns them oldest first, in pages;
//! - `append` refuses (writing nothing) when the mailbox holds
//!   `Limits::max_messages` messages, or when the message would take its
//!   bytes beyond `Limits::max_bytes`; the check and the append are one
//!   atomic step;
//! - a message older than `Limits::ttl` is never returned: it is removed
//!   (and counted as expired) by the next `append` or `take`, and a
//!   mailbox nothing was appended to for `ttl` disappears as a whole;
//! - a message is removed only when its key is passed back to `take` (or
//!   `remove`), which the caller does once it has written it: a crash in
//!   between delivers it again (at least once; clients drop copies by id);
//! - all of one user's data is in one Redis Cluster slot (the user's hash
//!   tag), so every step is one script on one node.
//!
//! This module knows nothing of sessions, sockets or routing: who stores
//! and who drains is the message server's business.

#[doc(hidden)]
pub mod conformance;
mod memory;
mod redis_store;

use std::time::Duration;

use async_trait::async_trait;

pub use memory::MemoryMailbox;
pub use redis_store::RedisMailbox;

/// One stored message: what the recipient's `message` event carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    pub from: String,
    pub to: String,
    pub content: String,
    /// When it was sent, unix milliseconds.
    pub ts_ms: i64,
}

impl Message {
    /// The bytes it counts against `Limits::max_bytes` (the recipient's
    /// name is the mailbox's, not counted).
    pub fn size(&self) -> u64 {
        (self.id.len() + self.from.len() + self.content.len()) as u64
    }
}

/// What every mailbox may hold (`--mailbox-max`, `--mailbox-max-bytes`,
/// `--mailbox-ttl-secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_messages: u32,
    pub max_bytes: u64,
    pub ttl: Duration,
}

/// What `append` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// False: the mailbox is full (messages or bytes); nothing written.
    pub stored: bool,
    /// Messages found expired and removed on the way.
    pub expired: u64,
}

/// A stored message and its key in the mailbox (pass it back to remove it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub message: Message,
}

/// The oldest messages of a mailbox, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub entries: Vec<Entry>,
    /// Messages found expired and removed on the way.
    pub expired: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("corrupt mailbox data: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, MailboxError>;

#[async_trait]
pub trait MailboxStore: Send + Sync + 'static {
    fn limits(&self) -> Limits;

    /// Appends `message` to the mailbox of `message.to`, unless that is
    /// full; refreshes the mailbox's TTL.
    async fn append(&self, message: &Message) -> Result<Appended>;

    /// Removes the entries `written` (keys from earlier pages, once their
    /// messages were written), then returns up to `count` of the oldest
    /// entries left, in order. The mailbox's key goes once it is empty.
    async fn take(&self, name: &str, written: &[String], count: usize) -> Result<Page>;

    /// Messages in `name`'s mailbox (those expired but not yet removed
    /// included).
    async fn size(&self, name: &str) -> Result<u64>;

    /// Empties `name`'s mailbox (an operator's call); returns how many
    /// messages it held.
    async fn clear(&self, name: &str) -> Result<u64>;
}
