//! Routing between servers.
//!
//! A forward is routed by the recipient's server: first from the route
//! cache, else from the presence store. The cache needs no invalidation on
//! login, logout or kick because the destination server is the authority:
//! if the recipient is not there it answers NOT_HERE with the message, and
//! the router drops the cache entry and re-routes once from the store. A
//! purge evicts every route to the dead server. So the hot path costs no
//! store round trip and spawns nothing.
//!
//! Store lookups are budgeted per origin server (its link's lookup budget):
//! chats to names nobody uses are never cached, so a flood of them would
//! cost Redis one lookup each. Over budget, a chat gets `unavailable`.

use foldhash::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use crate::sync::Mutex;
use tokio::sync::oneshot;

use super::links::{Link, LinkTable};
use crate::metrics::Metrics;
use crate::pb::{self, Status};
use crate::presence::PresenceStore;
use crate::routes::RouteCache;

/// The origin of messages the relay sends itself (operator messages); the
/// colon keeps it apart from every valid server id.
pub const RELAY_ORIGIN: &str = ":relay";

pub struct Router {
    pub links: LinkTable,
    pub metrics: Arc<Metrics>,
    /// Operator messages awaiting their outcome, by message id.
    waiters: Mutex<HashMap<String, oneshot::Sender<Status>>>,
    /// Recipients whose store lookup is under way, with the messages (and
    /// their NOT_HERE server, if re-routed) waiting for its answer.
    lookups: Mutex<HashMap<String, Vec<Waiting>>>,
    cache: RouteCache,
    store: Arc<dyn PresenceStore>,
    /// Store lookups per second each linked server's chats may cost.
    pub lookup_budget: Option<NonZeroU32>,
}

/// A message waiting for its recipient's lookup, with the server that
/// said NOT_HERE for it (if it is being re-routed).
type Waiting = (pb::Forward, Option<String>);

/// Where a message should go next.
#[derive(Clone)]
enum Route {
    Server(String),
    Done(Status),
}

impl Router {
    pub fn new(
        store: Arc<dyn PresenceStore>,
        metrics: Arc<Metrics>,
        lookup_budget: Option<NonZeroU32>,
    ) -> Self {
        Self {
            lookup_budget,
            links: LinkTable::default(),
            metrics,
            waiters: Mutex::default(),
            lookups: Mutex::default(),
            cache: RouteCache::default(),
            store,
        }
    }

    /// A message arrived on `from`, its origin's link. The relay, not the
    /// link, says who sent it: the origin is the link's server and nothing
    /// has been re-routed yet. Its id must be one that server mints
    /// (`<server id>.…`), so that no link can take over the in-flight
    /// record (and so the outcome) of another server's message.
    pub fn on_forward_from(self: &Arc<Self>, from: &Link, mut forward: pb::Forward) {
        let own_id = forward.message.as_ref().is_some_and(|m| {
            m.id.strip_prefix(from.server_id.as_str())
                .is_some_and(|rest| rest.starts_with('.'))
        });
        if !own_id {
            self.metrics.dropped_forwards.inc();
            tracing::debug!(server = %from.server_id, "forward without an id of its server: dropped");
            return;
        }
        forward.origin_server = from.server_id.clone();
        forward.rerouted = false;
        self.on_forward(forward);
    }

    fn on_forward(self: &Arc<Self>, forward: pb::Forward) {
        self.metrics.routed_forwards.inc();
        self.route(forward, None);
    }

    /// An outcome arrived from the server `from` that received a message.
    /// Only an outcome for a message in flight on that very link is passed
    /// on, to the origin the relay recorded (whatever the outcome says),
    /// so a link can neither answer for another server nor redirect.
    pub fn on_outcome(self: &Arc<Self>, from: &Link, mut outcome: pb::Outcome) {
        let Some(sent) = from.settle(&outcome.message_id) else {
            self.metrics.dropped_outcomes.inc();
            tracing::debug!(server = %from.server_id, id = %outcome.message_id, "outcome for a message not in flight on its link: dropped");
            return;
        };
        self.metrics.routed_outcomes.inc();
        outcome.origin_server = sent.origin;
        if outcome.status() != Status::NotHere {
            self.send_outcome(outcome);
            return;
        }
        let id = &outcome.message_id;
        let returned = outcome
            .returned
            .take()
            .filter(|f| f.message.as_ref().is_some_and(|m| &m.id == id));
        let Some(mut forward) = returned.map(|f| *f) else {
            outcome.status = Status::Offline as i32;
            self.send_outcome(outcome);
            return;
        };
        forward.origin_server = outcome.origin_server;
        if sent.rerouted {
            // Re-routed once already and still not there: offline, no loop.
            return self.dispatch(forward, Route::Done(Status::Offline));
        }
        if let Some(m) = &forward.message {
            self.cache.forget(&m.to);
        }
        forward.rerouted = true;
        self.route(forward, Some(from.server_id.clone()));
    }

    /// Routes by the cache when it has a linked answer, else through a
    /// store lookup that runs beside the link (a slow lookup must not hold
    /// up the other messages on the same link). Messages to a recipient
    /// whose lookup is under way wait behind it, in order. `not_on`: the
    /// server that just said NOT_HERE; a store still pointing there means a
    /// logout in flight, i.e. offline.
    fn route(self: &Arc<Self>, forward: pb::Forward, not_on: Option<String>) {
        let Some(to) = forward.message.as_ref().map(|m| m.to.clone()) else {
            return;
        };
        let mut lookups = self.lookups.lock();
        if let Some(queue) = lookups.get_mut(&to) {
            queue.push((forward, not_on));
            return;
        }
        if not_on.is_none()
            && let Some(server) = self.cache.get(&to)
            && self.links.get(&server).is_some()
        {
            return self.dispatch(forward, Route::Server(server));
        }
        if !self.spend_lookup(&forward.origin_server) {
            drop(lookups);
            self.metrics.lookups_refused.inc();
            return self.dispatch(forward, Route::Done(Status::Unavailable));
        }
        lookups.insert(to.clone(), vec![(forward, not_on)]);
        drop(lookups);
        let router = self.clone();
        tokio::spawn(async move {
            let route = router.lookup(&to).await;
            // Dispatch under the lock: a message arriving meanwhile either
            // queues behind these or finds the queue gone and follows them.
            let mut lookups = router.lookups.lock();
            for (forward, not_on) in lookups.remove(&to).unwrap_or_default() {
                let route = match &route {
                    Route::Server(s) if not_on.as_ref() == Some(s) => {
                        router.cache.forget(&to);
                        Route::Done(Status::Offline)
                    }
                    route => route.clone(),
                };
                router.dispatch(forward, route);
            }
        });
    }

    /// Takes a store lookup from `origin`'s budget. The relay's own
    /// messages, and those of an origin no longer linked (nobody would get
    /// the outcome anyway), are not budgeted.
    fn spend_lookup(&self, origin: &str) -> bool {
        self.links
            .get(origin)
            .is_none_or(|link| link.spend_lookup())
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
                    if forward.origin_server != RELAY_ORIGIN {
                        // Another relay may have one (this one has just
                        // started): the origin tries it.
                        return self.send_outcome(pb::Outcome {
                            message_id: id,
                            origin_server: forward.origin_server.clone(),
                            status: Status::NoLink as i32,
                            returned: Some(Box::new(forward)),
                        });
                    }
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
    pub async fn send_from_relay(
        self: &Arc<Self>,
        message: pb::ChatMessage,
        timeout: Duration,
    ) -> Status {
        let id = message.id.clone();
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().insert(id.clone(), tx);
        let forward = pb::Forward {
            message: Some(message),
            origin_server: RELAY_ORIGIN.to_owned(),
            rerouted: false,
            resent: false,
        };
        self.on_forward(forward);
        let status = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(status)) => status,
            _ => Status::Unavailable,
        };
        self.waiters.lock().remove(&id);
        self.metrics.outcome(status);
        status
    }

    fn send_outcome(&self, outcome: pb::Outcome) {
        if outcome.origin_server == RELAY_ORIGIN {
            if let Some(tx) = self.waiters.lock().remove(&outcome.message_id) {
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
        for (id, sent) in in_flight {
            self.answer(&sent.origin, id, Status::Unavailable);
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
