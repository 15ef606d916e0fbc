//! The relay's table of live server links, and what is in flight on each.
//!
//! A link remembers the messages it was handed until their outcome comes
//! back, so that when the link drops or its server dies every sender gets
//! `unavailable` at once instead of waiting for a timeout.

use foldhash::{HashMap, HashMapExt};
use std::num::NonZeroU32;
use std::sync::Arc;

use crate::sync::Mutex;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::clock::now_ms;
use crate::link::LinkSender;
use crate::pb;
use crate::shutdown::CancellationToken;

/// One server's stream, as the relay sees it.
pub struct Link {
    pub server_id: String,
    pub incarnation: String,
    pub grpc_addr: String,
    pub linked_at_ms: i64,
    tx: LinkSender,
    /// message id -> what the relay sent, for messages sent down this
    /// link; None once the link is closed, so nothing can slip in after
    /// the final drain.
    in_flight: Mutex<Option<HashMap<String, InFlight>>>,
    /// Cancelled to end the stream from the relay's side (the server then
    /// relinks), e.g. when its server was declared dead or replaced.
    pub closed: CancellationToken,
    /// Store lookups this server's chats may cost (None: unlimited).
    lookup_budget: Option<DefaultDirectRateLimiter>,
}

/// What the relay remembers of a message it sent down a link: the outcome
/// is routed by this record, never by what the link says back.
#[derive(Debug)]
pub struct InFlight {
    pub origin: String,
    pub rerouted: bool,
}

impl Link {
    /// A link of the server that said `hello`, with `lookup_budget` store
    /// lookups per second for its chats.
    pub fn new(hello: pb::Hello, tx: LinkSender, lookup_budget: Option<NonZeroU32>) -> Self {
        Self {
            lookup_budget: lookup_budget.map(|n| RateLimiter::direct(Quota::per_second(n))),
            server_id: hello.server_id,
            incarnation: hello.incarnation,
            grpc_addr: hello.grpc_addr,
            linked_at_ms: now_ms(),
            tx,
            in_flight: Mutex::new(Some(HashMap::new())),
            closed: CancellationToken::new(),
        }
    }

    /// Sends a forward down this link, remembering it until its outcome.
    /// False if the link is closing or its queue is full (the caller
    /// answers `unavailable`).
    pub fn forward(&self, id: &str, forward: pb::Forward) -> bool {
        let mut in_flight = self.in_flight.lock();
        let Some(map) = in_flight.as_mut() else {
            return false;
        };
        let sent = InFlight {
            origin: forward.origin_server.clone(),
            rerouted: forward.rerouted,
        };
        map.insert(id.to_owned(), sent);
        if self.tx.try_forward(forward, None).is_err() {
            map.remove(id);
            return false;
        }
        true
    }

    /// Takes one store lookup from this server's budget; false if spent.
    pub fn spend_lookup(&self) -> bool {
        self.lookup_budget
            .as_ref()
            .is_none_or(|b| b.check().is_ok())
    }

    /// Sends an outcome to this link's server (the origin of a message).
    pub fn send_outcome(&self, outcome: pb::Outcome) -> bool {
        self.tx.send_outcome(outcome)
    }

    /// The outcome of `id` came back through this link: what was sent, or
    /// None if `id` was not in flight on this link (a stray or forged
    /// outcome, which must not be passed on).
    pub fn settle(&self, id: &str) -> Option<InFlight> {
        self.in_flight.lock().as_mut()?.remove(id)
    }

    /// Messages sent down this link still awaiting their outcome.
    pub fn in_flight(&self) -> usize {
        self.in_flight.lock().as_ref().map_or(0, HashMap::len)
    }

    /// Closes the link and returns what was still in flight on it, by
    /// message id. Later forwards are refused.
    pub fn close(&self) -> Vec<(String, InFlight)> {
        self.closed.cancel();
        self.in_flight
            .lock()
            .take()
            .map(|m| m.into_iter().collect())
            .unwrap_or_default()
    }
}

#[derive(Default)]
pub struct LinkTable {
    links: Mutex<HashMap<String, Arc<Link>>>,
}

impl LinkTable {
    /// Adds a link, returning the one it replaces (same server id).
    pub fn insert(&self, link: Arc<Link>) -> Option<Arc<Link>> {
        self.links.lock().insert(link.server_id.clone(), link)
    }

    pub fn get(&self, server_id: &str) -> Option<Arc<Link>> {
        self.links.lock().get(server_id).cloned()
    }

    /// Removes exactly this link (not a newer one of the same server).
    pub fn remove(&self, link: &Arc<Link>) -> bool {
        let mut links = self.links.lock();
        if links
            .get(&link.server_id)
            .is_some_and(|l| Arc::ptr_eq(l, link))
        {
            links.remove(&link.server_id);
            return true;
        }
        false
    }

    /// Removes the link of one server incarnation, if it is the current one.
    pub fn remove_incarnation(&self, server_id: &str, incarnation: &str) -> Option<Arc<Link>> {
        let mut links = self.links.lock();
        if links
            .get(server_id)
            .is_some_and(|l| l.incarnation == incarnation)
        {
            return links.remove(server_id);
        }
        None
    }

    pub fn len(&self) -> usize {
        self.links.lock().len()
    }

    pub fn all(&self) -> Vec<Arc<Link>> {
        self.links.lock().values().cloned().collect()
    }
}
