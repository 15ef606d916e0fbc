//! Mesh mode's routing of this server's own chats: which server holds a
//! recipient (the route cache, else a presence lookup), and the second try
//! when that server answers NOT_HERE (the recipient moved or left).
//!
//! What the relay's router does for every server, a mesh server does for
//! its own chats only, with the same rules: the destination is the
//! authority, so a cached route needs no invalidation; a NOT_HERE drops it
//! and routes once more from the store; a second NOT_HERE is `offline`.
//! Routes to a server that died or left are evicted. Never touches a link
//! itself: `Forwards` sends.

use std::sync::Arc;

use super::delivery::deliver_local;
use super::forwards::{Forwards, LinkKey, Waiter};
use super::outbox::Receipt;
use super::sessions::Sessions;
use crate::pb::{self, Status};
use crate::presence::PresenceStore;
use crate::routes::RouteCache;

pub struct Mesh {
    /// This server's id.
    me: String,
    store: Arc<dyn PresenceStore>,
    cache: RouteCache,
    forwards: Arc<Forwards>,
    sessions: Arc<Sessions>,
}

impl Mesh {
    pub fn new(
        me: String,
        store: Arc<dyn PresenceStore>,
        forwards: Arc<Forwards>,
        sessions: Arc<Sessions>,
    ) -> Self {
        Self {
            me,
            store,
            cache: RouteCache::default(),
            forwards,
            sessions,
        }
    }

    /// The server `to` was last seen on, without asking the store.
    pub fn cached(&self, to: &str) -> Option<String> {
        self.cache.get(to)
    }

    /// Asks the store which server holds `to`: `offline` if nobody (or
    /// only this server, which just found no session of that name),
    /// `unavailable` if the store cannot say.
    pub async fn lookup(&self, to: &str) -> Result<String, Status> {
        match self.store.lookup(to).await {
            Ok(Some(p)) if p.server != self.me => {
                self.cache.put(to, &p.server);
                Ok(p.server)
            }
            Ok(_) => Err(Status::Offline),
            Err(e) => {
                tracing::warn!(server = %self.me, error = %e, "presence lookup failed");
                Err(Status::Unavailable)
            }
        }
    }

    /// The server holding `to`: cached, else looked up.
    pub async fn route(&self, to: &str) -> Result<String, Status> {
        match self.cached(to) {
            Some(server) => Ok(server),
            None => self.lookup(to).await,
        }
    }

    /// The server at the end of link `from` answered NOT_HERE for
    /// `forward`: forget that route and, the first time, route it once
    /// more from the store (in a task: this runs on the link's reader).
    pub fn not_here(self: &Arc<Self>, forward: pb::Forward, from: LinkKey) {
        let Some(message) = &forward.message else {
            return;
        };
        let (id, to) = (message.id.clone(), message.to.clone());
        let Some(said) = self.forwards.not_here(&id, from) else {
            return;
        };
        self.cache.forget_route(&to, &said);
        let mesh = self.clone();
        tokio::spawn(async move {
            match mesh.store.lookup(&to).await {
                Ok(Some(p)) if p.server == mesh.me => mesh.deliver_here(&id, &forward),
                Ok(Some(p)) => {
                    mesh.cache.put(&to, &p.server);
                    mesh.forwards.reroute(&id, forward, &p.server);
                }
                Ok(None) => mesh.forwards.resolve(&id, Status::Offline),
                Err(e) => {
                    tracing::warn!(server = %mesh.me, error = %e, "presence lookup failed");
                    mesh.forwards.resolve(&id, Status::Unavailable);
                }
            }
        });
    }

    /// The recipient of a re-routed chat is now on this very server.
    fn deliver_here(&self, id: &str, forward: &pb::Forward) {
        let Some(message) = &forward.message else {
            return;
        };
        let receipt = || match self.forwards.take(id) {
            Some(Waiter::Client {
                control, reference, ..
            }) => Receipt::local(control, id.to_owned(), reference),
            Some(Waiter::Operator(tx)) => Receipt::operator(tx),
            // Answered meanwhile (timeout): nobody waits for this one.
            None => Receipt::operator(tokio::sync::oneshot::channel().0),
        };
        if let Err(status) = deliver_local(&self.sessions, message, receipt) {
            let status = if status == Status::NotHere {
                Status::Offline
            } else {
                status
            };
            self.forwards.resolve(id, status);
        }
    }

    /// `server` died or left: no route leads there any more.
    pub fn forget_server(&self, server: &str) {
        self.cache.evict_server(server);
    }
}
