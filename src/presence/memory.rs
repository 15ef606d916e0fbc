//! The embedded, in-process presence store.
//!
//! Used by the one-command local cluster (nothing to install) and by unit
//! tests. It follows exactly the rules of the Redis store; one mutex makes
//! every operation atomic, as one Lua script does in Redis.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::{Kick, KickStream, Presence, PresenceStore, Result, ServerInfo};

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    users: HashMap<String, Presence>,
    /// (server, incarnation) -> names: the per-server index.
    index: HashMap<(String, String), HashSet<String>>,
    servers: HashMap<String, ServerInfo>,
    kick_subscribers: HashMap<String, mpsc::UnboundedSender<Kick>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent maps behind
        // (each operation mutates after all checks), so poisoning is moot.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn index_mut(&mut self, server: &str, incarnation: &str) -> &mut HashSet<String> {
        self.index
            .entry((server.to_owned(), incarnation.to_owned()))
            .or_default()
    }

    fn unindex(&mut self, p: &Presence) {
        let key = (p.server.clone(), p.incarnation.clone());
        if let Some(set) = self.index.get_mut(&key) {
            set.remove(&p.name);
            if set.is_empty() {
                self.index.remove(&key);
            }
        }
    }

    fn insert(&mut self, entry: &Presence) {
        self.index_mut(&entry.server, &entry.incarnation)
            .insert(entry.name.clone());
        self.users.insert(entry.name.clone(), entry.clone());
    }
}

#[async_trait]
impl PresenceStore for MemoryStore {
    async fn login(&self, entry: &Presence) -> Result<Option<Presence>> {
        let mut inner = self.lock();
        let old = inner.users.get(&entry.name).cloned();
        if let Some(old) = &old {
            inner.unindex(old);
            if old.server != entry.server
                && let Some(tx) = inner.kick_subscribers.get(&old.server)
            {
                // A closed receiver means that server is gone: nothing to kick.
                let _ = tx.send(Kick {
                    name: old.name.clone(),
                    incarnation: old.incarnation.clone(),
                    conn: old.conn,
                });
            }
        }
        inner.insert(entry);
        Ok(old)
    }

    async fn logout(&self, entry: &Presence) -> Result<bool> {
        let mut inner = self.lock();
        match inner.users.get(&entry.name) {
            Some(cur) if cur.same_session(entry) => {
                inner.users.remove(&entry.name);
                inner.unindex(entry);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn lookup(&self, name: &str) -> Result<Option<Presence>> {
        Ok(self.lock().users.get(name).cloned())
    }

    async fn reassert(&self, entry: &Presence) -> Result<bool> {
        let mut inner = self.lock();
        if inner.users.contains_key(&entry.name) {
            return Ok(false);
        }
        inner.insert(entry);
        Ok(true)
    }

    async fn purge(&self, server: &str, incarnation: &str) -> Result<u64> {
        let mut inner = self.lock();
        let names = inner
            .index
            .remove(&(server.to_owned(), incarnation.to_owned()))
            .unwrap_or_default();
        let mut purged = 0;
        for name in names {
            let stale = inner
                .users
                .get(&name)
                .is_some_and(|p| p.server == server && p.incarnation == incarnation);
            if stale {
                inner.users.remove(&name);
                purged += 1;
            }
        }
        Ok(purged)
    }

    async fn purge_server(&self, server: &str) -> Result<u64> {
        let incarnations: Vec<String> = self
            .lock()
            .index
            .keys()
            .filter(|(s, _)| s == server)
            .map(|(_, i)| i.clone())
            .collect();
        let mut purged = 0;
        for inc in incarnations {
            purged += self.purge(server, &inc).await?;
        }
        Ok(purged)
    }

    async fn users_of(&self, server: &str, incarnation: &str) -> Result<Vec<String>> {
        let inner = self.lock();
        let mut names: Vec<String> = inner
            .index
            .get(&(server.to_owned(), incarnation.to_owned()))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        names.sort();
        Ok(names)
    }

    async fn register(&self, info: &ServerInfo) -> Result<()> {
        self.lock().servers.insert(info.id.clone(), info.clone());
        Ok(())
    }

    async fn heartbeat(&self, id: &str, incarnation: &str, connections: u64) -> Result<bool> {
        let mut inner = self.lock();
        match inner.servers.get_mut(id) {
            Some(s) if s.incarnation == incarnation => {
                s.connections = connections;
                s.heartbeat_ms = super::now_ms();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn deregister(&self, id: &str, incarnation: &str) -> Result<bool> {
        let mut inner = self.lock();
        if inner
            .servers
            .get(id)
            .is_some_and(|s| s.incarnation == incarnation)
        {
            inner.servers.remove(id);
            return Ok(true);
        }
        Ok(false)
    }

    async fn servers(&self) -> Result<Vec<ServerInfo>> {
        let mut list: Vec<ServerInfo> = self.lock().servers.values().cloned().collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(list)
    }

    async fn kicks(&self, server: &str) -> Result<KickStream> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().kick_subscribers.insert(server.to_owned(), tx);
        Ok(Box::pin(UnboundedReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn p(name: &str, server: &str, inc: &str, conn: u64) -> Presence {
        Presence {
            name: name.into(),
            server: server.into(),
            incarnation: inc.into(),
            conn,
            since_ms: 1,
        }
    }

    #[tokio::test]
    async fn newest_login_wins_and_kicks_the_other_server() {
        let store = MemoryStore::new();
        let mut kicks_a = store.kicks("a").await.unwrap();
        assert_eq!(store.login(&p("alice", "a", "1", 1)).await.unwrap(), None);
        let old = store.login(&p("alice", "b", "1", 7)).await.unwrap();
        assert_eq!(old, Some(p("alice", "a", "1", 1)));
        assert_eq!(
            kicks_a.next().await,
            Some(Kick {
                name: "alice".into(),
                incarnation: "1".into(),
                conn: 1
            })
        );
        assert_eq!(
            store.lookup("alice").await.unwrap(),
            Some(p("alice", "b", "1", 7))
        );
        assert!(store.users_of("a", "1").await.unwrap().is_empty());
        assert_eq!(
            store.users_of("b", "1").await.unwrap(),
            vec!["alice".to_string()]
        );
    }

    #[tokio::test]
    async fn same_server_relogin_sends_no_kick_notice() {
        let store = MemoryStore::new();
        let mut kicks = store.kicks("a").await.unwrap();
        store.login(&p("alice", "a", "1", 1)).await.unwrap();
        let old = store.login(&p("alice", "a", "1", 2)).await.unwrap();
        assert_eq!(old.map(|o| o.conn), Some(1));
        store.login(&p("zed", "b", "1", 1)).await.unwrap();
        store.login(&p("zed", "a", "1", 3)).await.unwrap();
        // The only notice is for b's session; a's own stream stays empty.
        assert!(futures::FutureExt::now_or_never(kicks.next()).is_none());
    }

    #[tokio::test]
    async fn logout_is_compare_and_delete() {
        let store = MemoryStore::new();
        let first = p("alice", "a", "1", 1);
        store.login(&first).await.unwrap();
        store.login(&p("alice", "b", "1", 2)).await.unwrap();
        assert!(
            !store.logout(&first).await.unwrap(),
            "stale logout must not erase"
        );
        assert_eq!(store.lookup("alice").await.unwrap().unwrap().server, "b");
        assert!(store.logout(&p("alice", "b", "1", 2)).await.unwrap());
        assert_eq!(store.lookup("alice").await.unwrap(), None);
    }

    #[tokio::test]
    async fn purge_removes_only_entries_still_pointing_at_the_incarnation() {
        let store = MemoryStore::new();
        store.login(&p("u1", "a", "old", 1)).await.unwrap();
        store.login(&p("u2", "a", "old", 2)).await.unwrap();
        store.login(&p("u3", "a", "new", 1)).await.unwrap();
        store.login(&p("u2", "b", "1", 9)).await.unwrap();
        assert_eq!(store.purge("a", "old").await.unwrap(), 1);
        assert_eq!(store.lookup("u1").await.unwrap(), None);
        assert_eq!(store.lookup("u2").await.unwrap().unwrap().server, "b");
        assert_eq!(
            store.lookup("u3").await.unwrap().unwrap().incarnation,
            "new"
        );
        assert_eq!(store.purge_server("a").await.unwrap(), 1);
        assert_eq!(store.lookup("u3").await.unwrap(), None);
    }

    #[tokio::test]
    async fn reassert_never_displaces() {
        let store = MemoryStore::new();
        assert!(store.reassert(&p("alice", "a", "1", 1)).await.unwrap());
        assert!(!store.reassert(&p("alice", "b", "1", 1)).await.unwrap());
        assert_eq!(store.lookup("alice").await.unwrap().unwrap().server, "a");
    }

    #[tokio::test]
    async fn registry_heartbeat_and_fenced_deregister() {
        let store = MemoryStore::new();
        let info = ServerInfo {
            id: "a".into(),
            incarnation: "1".into(),
            grpc_addr: "g".into(),
            client_addr: "c".into(),
            connections: 0,
            heartbeat_ms: 0,
            started_ms: 0,
        };
        assert!(!store.heartbeat("a", "1", 3).await.unwrap());
        store.register(&info).await.unwrap();
        assert!(store.heartbeat("a", "1", 3).await.unwrap());
        assert!(!store.heartbeat("a", "2", 3).await.unwrap());
        assert_eq!(store.servers().await.unwrap()[0].connections, 3);
        assert!(!store.deregister("a", "2").await.unwrap());
        assert!(store.deregister("a", "1").await.unwrap());
        assert!(store.servers().await.unwrap().is_empty());
    }
}
