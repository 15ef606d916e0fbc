//! The embedded, in-process presence store.
//!
//! Used by the one-command local cluster (nothing to install) and by unit
//! tests. It follows exactly the rules of the Redis store; one mutex makes
//! every operation atomic, as one Lua script does in Redis.

use crate::sync::Mutex;
use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::{Kick, KickCause, KickStream, Presence, PresenceStore, Reassert, Result, ServerInfo};

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
    purge_totals: (u64, u64),
    /// Sessions an operator kicked: (server, incarnation, session).
    kicked: HashSet<(String, String, u64)>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
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

    fn notify(&self, old: &Presence, cause: KickCause) {
        if let Some(tx) = self.kick_subscribers.get(&old.server) {
            // A closed receiver means that server is gone: nothing to kick.
            let _ = tx.send(Kick {
                name: old.name.clone(),
                incarnation: old.incarnation.clone(),
                session: old.session,
                cause,
            });
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
        let mut inner = self.inner.lock();
        let old = inner.users.get(&entry.name).cloned();
        if let Some(old) = &old {
            inner.unindex(old);
            if old.server != entry.server {
                inner.notify(old, KickCause::Displaced);
            }
        }
        inner.insert(entry);
        Ok(old)
    }

    async fn kick(&self, name: &str) -> Result<Option<Presence>> {
        let mut inner = self.inner.lock();
        let old = inner.users.remove(name);
        if let Some(old) = &old {
            inner.unindex(old);
            inner.notify(old, KickCause::Admin);
            inner
                .kicked
                .insert((old.server.clone(), old.incarnation.clone(), old.session));
        }
        Ok(old)
    }

    async fn logout(&self, entry: &Presence) -> Result<bool> {
        let mut inner = self.inner.lock();
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
        Ok(self.inner.lock().users.get(name).cloned())
    }

    async fn reassert(&self, entry: &Presence) -> Result<Reassert> {
        let mut inner = self.inner.lock();
        let session = (
            entry.server.clone(),
            entry.incarnation.clone(),
            entry.session,
        );
        if inner.kicked.contains(&session) {
            return Ok(Reassert::Kicked);
        }
        if inner.users.contains_key(&entry.name) {
            return Ok(Reassert::Taken);
        }
        inner.insert(entry);
        Ok(Reassert::Recreated)
    }

    async fn purge(&self, server: &str, incarnation: &str) -> Result<u64> {
        let mut inner = self.inner.lock();
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
            .inner
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
        let inner = self.inner.lock();
        let mut names: Vec<String> = inner
            .index
            .get(&(server.to_owned(), incarnation.to_owned()))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        names.sort();
        Ok(names)
    }

    async fn register(&self, info: &ServerInfo) -> Result<()> {
        self.inner
            .lock()
            .servers
            .insert(info.id.clone(), info.clone());
        Ok(())
    }

    async fn heartbeat(
        &self,
        id: &str,
        incarnation: &str,
        connections: u64,
        stats: &BTreeMap<String, u64>,
    ) -> Result<bool> {
        let mut inner = self.inner.lock();
        match inner.servers.get_mut(id) {
            Some(s) if s.incarnation == incarnation => {
                s.connections = connections;
                s.stats.clone_from(stats);
                s.heartbeat_ms = crate::clock::now_ms();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn deregister(&self, id: &str, incarnation: &str) -> Result<bool> {
        let mut inner = self.inner.lock();
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
        let mut list: Vec<ServerInfo> = self.inner.lock().servers.values().cloned().collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(list)
    }

    async fn record_purge(&self, entries: u64) -> Result<()> {
        let mut inner = self.inner.lock();
        inner.purge_totals.0 += 1;
        inner.purge_totals.1 += entries;
        Ok(())
    }

    async fn purge_totals(&self) -> Result<(u64, u64)> {
        Ok(self.inner.lock().purge_totals)
    }

    async fn kicks(&self, server: &str) -> Result<KickStream> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner
            .lock()
            .kick_subscribers
            .insert(server.to_owned(), tx);
        Ok(Box::pin(UnboundedReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryStore;
    use crate::presence::conformance;

    #[tokio::test]
    async fn follows_the_presence_rules() {
        conformance::run_all(&MemoryStore::new()).await;
    }
}
