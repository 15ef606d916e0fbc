//! The presence registry: who is connected where, and which servers exist.
//!
//! `PresenceStore` is the one interface; `RedisStore` is what production
//! runs, `MemoryStore` the embedded store of the one-command local cluster
//! and of unit tests. Both implement the same rules:
//!
//! - login is atomic and newest-wins; the displaced entry's server learns
//!   of it through the store's kick channel (one Redis and Sentinel:
//!   PUBLISH inside the login script, so the notice cannot be lost between
//!   the two steps; Redis Cluster: a sharded publish right after it, and a
//!   notice lost there is made up for by that server's periodic
//!   reconcile);
//! - logout deletes an entry only if it still belongs to that connection;
//!   a retraction also stops a login of that session that has not run yet
//!   (its caller saw it fail, but the store may still run it later);
//! - every entry is fenced by its server's incarnation, and indexed per
//!   (server, incarnation), so a dead or restarted server's entries are
//!   purged in bulk without touching fresher ones (compare-and-delete per
//!   entry); retiring an incarnation takes it out of the registry before
//!   its entries go, so a failure in between leaves entries to purge,
//!   never a registered server without its users.
//!
//! This module does not know about sockets, gRPC or routing.

#[doc(hidden)]
pub mod conformance;
mod memory;
mod redis_conn;
mod redis_store;
mod redis_url;
mod sentinel;

use std::collections::BTreeMap;
use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;

pub use memory::MemoryStore;
/// The Redis connection (any engine), for other stores kept in the same
/// Redis (the offline mailbox).
pub use redis_conn::Conn as RedisConn;
pub use redis_store::RedisStore;
pub use redis_url::{UrlError, redact as redact_url};

/// What `reassert` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reassert {
    Recreated,
    /// The name has an entry, this one: nothing written.
    Taken(Presence),
    /// An operator kicked this very session: nothing written.
    Kicked,
}

/// Where one user is connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub name: String,
    pub server: String,
    pub incarnation: String,
    /// Session id, unique within one server incarnation.
    pub session: u64,
    /// Login time, unix milliseconds.
    pub since_ms: i64,
}

impl Presence {
    /// True if `other` is the very same session (not just the same name).
    pub fn same_session(&self, other: &Presence) -> bool {
        self.server == other.server
            && self.incarnation == other.incarnation
            && self.session == other.session
    }
}

/// A message server as recorded in the server registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerInfo {
    pub id: String,
    pub incarnation: String,
    pub grpc_addr: String,
    pub client_addr: String,
    pub connections: u64,
    pub heartbeat_ms: i64,
    pub started_ms: i64,
    /// The server's counters as of its last heartbeat (for cluster stats).
    pub stats: BTreeMap<String, u64>,
    /// Its links to relays as of its last heartbeat (for operators).
    pub links: Vec<LinkInfo>,
}

/// A server's link to one relay, as the server publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub relay: String,
    /// Unix ms since the link is up.
    pub since_ms: i64,
    /// The relay said it is shutting down: no new forwards go to it.
    pub draining: bool,
}

/// A relay as recorded in the relay registry. An entry lives as long as
/// its relay refreshes it (`announce_relay`), so a relay that died leaves
/// the registry by itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayInfo {
    pub id: String,
    pub incarnation: String,
    /// Where servers link to it (`host:port`).
    pub grpc_addr: String,
    /// Shutting down: servers send it no new forwards.
    pub draining: bool,
    /// Servers linked to it.
    pub links: u32,
    pub started_ms: i64,
    pub heartbeat_ms: i64,
}

/// What retiring a server incarnation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retired {
    /// This call took the incarnation out of the registry: of several
    /// callers (several relays) exactly one sees it, and counts the purge.
    pub deregistered: bool,
    /// Entries deleted by this call.
    pub purged: u64,
}

/// A notice to a server: its session `session` for `name` must be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kick {
    pub name: String,
    pub incarnation: String,
    pub session: u64,
    pub cause: KickCause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KickCause {
    /// A newer login of the same name on another server.
    Displaced,
    /// An operator's kick (Admin API).
    Admin,
    /// Not a kick: the session's offline mailbox got a message after its
    /// login drained it (`mailbox_notice`); its server drains it again.
    Mailbox,
}

pub type KickStream = Pin<Box<dyn Stream<Item = Kick> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis URL: {0}")]
    Url(#[from] UrlError),
    #[error("corrupt presence data: {0}")]
    Corrupt(String),
    /// The session's login was retracted before the store ran it.
    #[error("the login was retracted")]
    Retracted,
}

pub type Result<T> = std::result::Result<T, PresenceError>;

#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Records `entry`, replacing any entry of the same name (newest wins),
    /// and returns the replaced entry. If that entry lived on another
    /// server, that server receives a [`Kick`] on its kick stream. Fails
    /// with `Retracted`, writing nothing, if the session was retracted.
    async fn login(&self, entry: &Presence) -> Result<Option<Presence>>;

    /// Removes the entry of `entry.name` if it is this session, and makes
    /// a login of this session that the store has not run yet write
    /// nothing when it runs (for 300 s). For a login whose caller gave up
    /// (its reply failed or timed out) while the store may still run it.
    /// Returns true if an entry was removed.
    async fn retract(&self, entry: &Presence) -> Result<bool>;

    /// An operator's kick: removes `name`'s entry whatever session it is
    /// and notifies its server (which closes the session). Returns the
    /// removed entry, or None if `name` was not online.
    async fn kick(&self, name: &str) -> Result<Option<Presence>>;

    /// Removes the entry of `entry.name` only if it is still this session.
    async fn logout(&self, entry: &Presence) -> Result<bool>;

    async fn lookup(&self, name: &str) -> Result<Option<Presence>>;

    /// `lookup` of many names at once (in batches), in the order given.
    async fn lookup_many(&self, names: &[String]) -> Result<Vec<Option<Presence>>>;

    /// Re-creates `entry` if its name has no entry at all (after a store
    /// restart or a mistaken purge). Never displaces anybody, and never
    /// brings back a session an operator kicked (its server may have missed
    /// the notice). When the name is taken, returns who holds it, decided
    /// in the same step. An entry that stands (re-created, or held by this
    /// very session) is indexed under its incarnation again if its index
    /// lost it.
    async fn reassert(&self, entry: &Presence) -> Result<Reassert>;

    /// Declares one server incarnation gone: removes it from the registry
    /// (if it is still that incarnation), then deletes its entries that
    /// still point at it, in batches. Batches stop if the incarnation
    /// registers again (it was alive and re-asserts its sessions).
    /// Idempotent: of concurrent callers (several relays) exactly one is
    /// told it deregistered; each entry is deleted, and counted, once.
    async fn retire(&self, server: &str, incarnation: &str) -> Result<Retired>;

    /// Deletes the entries of one server incarnation that still point at
    /// it, unless that incarnation is registered (then nothing, at any
    /// batch). For incarnations already gone from the registry: what an
    /// interrupted `retire` left, orphaned index keys.
    async fn purge(&self, server: &str, incarnation: &str) -> Result<u64>;

    /// Retires every incarnation of `server` that has an index (a server
    /// starting up clears what its previous lives left behind).
    async fn purge_server(&self, server: &str) -> Result<u64>;

    /// (server, incarnation) of every per-incarnation index in the store.
    async fn incarnations(&self) -> Result<Vec<(String, String)>>;

    /// The names logged in on one server incarnation.
    async fn users_of(&self, server: &str, incarnation: &str) -> Result<Vec<String>>;

    /// Adds or replaces a server in the registry.
    async fn register(&self, info: &ServerInfo) -> Result<()>;

    /// Refreshes a server's connection count, counters, links and
    /// heartbeat. Returns false if the registry has no entry for this
    /// incarnation (the caller then registers again and re-asserts its
    /// sessions).
    async fn heartbeat(
        &self,
        id: &str,
        incarnation: &str,
        connections: u64,
        stats: &BTreeMap<String, u64>,
        links: &[LinkInfo],
    ) -> Result<bool>;

    async fn servers(&self) -> Result<Vec<ServerInfo>>;

    /// Adds to the cluster-wide purge totals (servers, entries).
    async fn record_purge(&self, entries: u64) -> Result<()>;

    /// The cluster-wide purge totals: (servers purged, entries removed).
    async fn purge_totals(&self) -> Result<(u64, u64)>;

    /// Tells the server of `entry` that this session has new mail in the
    /// offline mailbox: a notice with cause `Mailbox` on that server's
    /// kick stream (best effort, like every notice).
    async fn mailbox_notice(&self, entry: &Presence) -> Result<()>;

    /// Kick notices for `server`. The stream ends if the subscription
    /// breaks; the caller re-subscribes and reconciles its sessions.
    async fn kicks(&self, server: &str) -> Result<KickStream>;

    /// Adds or refreshes a relay in the relay registry; the entry expires
    /// `ttl` after its last refresh.
    async fn announce_relay(&self, info: &RelayInfo, ttl: std::time::Duration) -> Result<()>;

    /// Removes a relay from the registry if it is still that incarnation.
    async fn withdraw_relay(&self, id: &str, incarnation: &str) -> Result<()>;

    /// The relays whose entries have not expired, sorted by id.
    async fn relays(&self) -> Result<Vec<RelayInfo>>;
}

/// `id:since_ms:state` of each link, space-separated: how the stores keep
/// a server's links (ids are names, which hold no `:` or space).
pub fn encode_links(links: &[LinkInfo]) -> String {
    links
        .iter()
        .map(|l| {
            let state = if l.draining { "draining" } else { "linked" };
            format!("{}:{}:{state}", l.relay, l.since_ms)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The inverse of `encode_links`; malformed parts are skipped.
pub fn decode_links(text: &str) -> Vec<LinkInfo> {
    text.split(' ')
        .filter_map(|part| {
            let mut fields = part.split(':');
            let (relay, since, state) = (fields.next()?, fields.next()?, fields.next()?);
            Some(LinkInfo {
                relay: relay.to_owned(),
                since_ms: since.parse().ok()?,
                draining: state == "draining",
            })
        })
        .collect()
}
