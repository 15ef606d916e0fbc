//! Routing between servers.
//!
//! A forward is routed by the recipient's server: first from the route
//! cache, else from the presence store. The cache needs no invalidation on
//! login, logout or kick because the destination server is the authority:
//! if the recipient is not there it answers NOT_HERE with the message, and
//! the router drops the cache entry and re-routes once from the store. A
//! purge evicts every route to the dead server. So the hot path costs no
//! store round trip and spawns nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

use super::links::{Link, LinkTable};
use crate::metrics::Metrics;
use crate::pb::{self, Status};
use crate::presence::PresenceStore;

/// Routes kept before the cache is reset (bounds its memory).
const ROUTE_CACHE_MAX: usize = 1_000_000;

#[derive(Default)]
struct RouteCache {
    routes: Mutex<HashMap<String, String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RouteCache {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, String>> {
        lock(&self.routes)
    }

    fn get(&self, name: &str) -> Option<String> {
        self.lock().get(name).cloned()
    }

    fn put(&self, name: &str, server: &str) {
        let mut routes = self.lock();
        if routes.len() >= ROUTE_CACHE_MAX {
            routes.clear();
        }
        routes.insert(name.to_owned(), server.to_owned());
    }

    fn forget(&self, name: &str) {
        self.lock().remove(name);
    }

    fn forget_route(&self, name: &str, server: &str) {
        let mut routes = self.lock();
        if routes.get(name).is_some_and(|s| s == server) {
            routes.remove(name);
        }
    }

    fn evict_server(&self, server: &str) {
        self.lock().retain(|_, s| s != server);
    }
}

/// The origin of messages the relay sends itself (operator messages); the
/// colon keeps it apart from every valid server id.
pub const RELAY_ORIGIN: &str = ":relay";

pub struct Router {
    pub links: LinkTable,
    pub metrics: Arc<Metrics>,
    /// Operator messages awaiting their outcome, by message id.
    waiters: Mutex<HashMap<String, oneshot::Sender<Status>>>,
    cache: RouteCache,
    store: Arc<dyn PresenceStore>,
}

/// Where a message should go next.
enum Route {
    Server(String),
    Done(Status),
}

impl Router {
    pub fn new(store: Arc<dyn PresenceStore>, metrics: Arc<Metrics>) -> Self {
        Self {
            links: LinkTable::default(),
            metrics,
            waiters: Mutex::default(),
            cache: RouteCache::default(),
            store,
        }
    }

    /// A message arrived from its origin server.
    pub async fn on_forward(&self, forward: pb::Forward) {
        self.metrics.routed_forwards.inc();
        let Some(to) = forward.message.as_ref().map(|m| m.to.clone()) else {
            return;
        };
        // A cached route to a server without a link is stale (the recipient
        // may have moved on): ask the store instead.
        let route = match self.cache.get(&to) {
            Some(server) if self.links.get(&server).is_some() => Route::Server(server),
            _ => self.lookup(&to).await,
        };
        self.dispatch(forward, route);
    }

    /// An outcome arrived from the server `from` that received a message.
    pub async fn on_outcome(&self, from: &Link, mut outcome: pb::Outcome) {
        self.metrics.routed_outcomes.inc();
        from.settle(&outcome.message_id);
        if outcome.status() != Status::NotHere {
            self.send_outcome(outcome);
            return;
        }
        let Some(mut forward) = outcome.returned.take() else {
            outcome.status = Status::Offline as i32;
            self.send_outcome(outcome);
            return;
        };
        let Some(to) = forward.message.as_ref().map(|m| m.to.clone()) else {
            return;
        };
        self.cache.forget(&to);
        let route = match self.lookup(&to).await {
            Route::Server(s) if forward.rerouted || s == from.server_id => {
                // The store still points where the recipient is not: a
                // logout in flight. Treat as offline rather than loop.
                self.cache.forget(&to);
                Route::Done(Status::Offline)
            }
            route => route,
        };
        forward.rerouted = true;
        self.dispatch(forward, route);
    }

    async fn lookup(&self, to: &str) -> Route {
        match self.store.lookup(to).await {
            Ok(Some(p)) => {
                self.cache.put(to, &p.server);
                Route::Server(p.server)
            }
            Ok(None) => Route::Done(Status::Offline),
            Err(e) => {
                tracing::warn!(error = %e, "presence lookup failed");
                Route::Done(Status::Unavailable)
            }
        }
    }

    fn dispatch(&self, forward: pb::Forward, route: Route) {
        let Some(message) = &forward.message else {
            return;
        };
        let (id, to) = (message.id.clone(), message.to.clone());
        let status = match route {
            Route::Done(status) => status,
            Route::Server(server) => match self.links.get(&server) {
                Some(link) => {
                    let origin = forward.origin_server.clone();
                    if link.forward(&id, forward) {
                        return;
                    }
                    return self.answer(&origin, id, Status::Unavailable);
                }
                None => {
                    // No link to that server: drop the route so the next
                    // message asks the store again (it may have moved on).
                    self.cache.forget_route(&to, &server);
                    Status::Unavailable
                }
            },
        };
        self.answer(&forward.origin_server, id, status);
    }

    /// Tells an origin server the outcome of one of its messages.
    pub fn answer(&self, origin: &str, message_id: String, status: Status) {
        self.send_outcome(pb::Outcome {
            message_id,
            origin_server: origin.to_owned(),
            status: status as i32,
            returned: None,
        });
    }

    /// Routes a message from the relay itself and waits for its outcome.
    pub async fn send_from_relay(&self, message: pb::ChatMessage, timeout: Duration) -> Status {
        let id = message.id.clone();
        let (tx, rx) = oneshot::channel();
        lock(&self.waiters).insert(id.clone(), tx);
        let forward = pb::Forward {
            message: Some(message),
            origin_server: RELAY_ORIGIN.to_owned(),
            rerouted: false,
        };
        self.on_forward(forward).await;
        let status = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(status)) => status,
            _ => Status::Unavailable,
        };
        lock(&self.waiters).remove(&id);
        self.metrics.outcome(status);
        status
    }

    fn send_outcome(&self, outcome: pb::Outcome) {
        if outcome.origin_server == RELAY_ORIGIN {
            if let Some(tx) = lock(&self.waiters).remove(&outcome.message_id) {
                let _ = tx.send(outcome.status());
            }
            return;
        }
        // No link to the origin: it failed its pending chats itself when
        // its link dropped, so there is nobody left to tell.
        if let Some(link) = self.links.get(&outcome.origin_server) {
            link.send_outcome(outcome);
        }
    }

    /// A link is gone (or must go): close it; its in-flight messages get
    /// `unavailable`.
    pub fn fail_link(&self, link: &Link) -> usize {
        let in_flight = link.close();
        let n = in_flight.len();
        for (id, origin) in in_flight {
            self.answer(&origin, id, Status::Unavailable);
        }
        n
    }

    /// A server is dead: stop routing to it.
    pub fn forget_server(&self, server_id: &str, incarnation: &str) -> usize {
        self.cache.evict_server(server_id);
        match self.links.remove_incarnation(server_id, incarnation) {
            Some(link) => {
                self.metrics.relay_links.set(self.links.len() as i64);
                self.fail_link(&link)
            }
            None => 0,
        }
    }
}
