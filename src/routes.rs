//! The route cache: recipient name -> the server that holds its session,
//! as a presence lookup last said. Shared by the two routers (the relay's,
//! and a mesh server's for its own chats). It needs no invalidation on
//! login, logout or kick because the destination server is the authority:
//! a stale route is answered NOT_HERE, and the router then forgets it.
//! Names no tier; does no I/O.

use foldhash::HashMap;

use crate::sync::Mutex;

/// Routes kept before the cache is reset (bounds its memory).
const ROUTE_CACHE_MAX: usize = 1_000_000;

#[derive(Default)]
pub struct RouteCache {
    routes: Mutex<HashMap<String, String>>,
}

impl RouteCache {
    pub fn get(&self, name: &str) -> Option<String> {
        self.routes.lock().get(name).cloned()
    }

    pub fn put(&self, name: &str, server: &str) {
        let mut routes = self.routes.lock();
        if routes.len() >= ROUTE_CACHE_MAX {
            routes.clear();
        }
        routes.insert(name.to_owned(), server.to_owned());
    }

    pub fn forget(&self, name: &str) {
        self.routes.lock().remove(name);
    }

    /// Forgets the route of `name` if it still leads to `server`.
    pub fn forget_route(&self, name: &str, server: &str) {
        let mut routes = self.routes.lock();
        if routes.get(name).is_some_and(|s| s == server) {
            routes.remove(name);
        }
    }

    /// Forgets every route to `server` (it died or left).
    pub fn evict_server(&self, server: &str) {
        self.routes.lock().retain(|_, s| s != server);
    }
}
