//! The embedded, in-process presence store.
//!
//! Used by the one-command local cluster (nothing to install) and by unit
//! tests. It follows exactly the rules of the Redis store; one mutex makes
//! every operation atomic, as one Lua script does in Redis.

use crate::sync::Mutex;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::{
    Kick, KickCause, KickStream, LinkInfo, Presence, PresenceError, PresenceStore, Reassert,
    RelayInfo, Result, Retired, ServerInfo,
};

/// How long kicks and retractions are remembered (the Redis marks' TTL).
const MARK_TTL: Duration = Duration::from_secs(300);
/// Marks kept before expired ones are dropped.
const MARK_PRUNE_AT: usize = 4096;

/// Sessions (server, incarnation, session) marked for a while, as the
/// Redis store's keys with a TTL.
#[derive(Default)]
struct Marks(HashMap<(String, String, u64), Instant>);

impl Marks {
    fn key(p: &Presence) -> (String, String, u64) {
        (p.server.clone(), p.incarnation.clone(), p.session)
    }

    fn mark(&mut self, p: &Presence) {
        let now = Instant::now();
        if self.0.len() >= MARK_PRUNE_AT {
            self.0.retain(|_, at| now.duration_since(*at) < MARK_TTL);
        }
        self.0.insert(Self::key(p), now);
    }

    fn has(&self, p: &Presence) -> bool {
        self.0
            .get(&Self::key(p))
            .is_some_and(|at| at.elapsed() < MARK_TTL)
    }
}

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
    /// Sessions an operator kicked.
    kicked: Marks,
    /// Sessions whose login was retracted.
    retracted: Marks,
    /// The relay registry: each entry and when it expires.
    relays: HashMap<String, (RelayInfo, std::time::Instant)>,
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

    /// Compare-and-delete.
    fn remove_session(&mut self, entry: &Presence) -> bool {
        match self.users.get(&entry.name) {
            Some(cur) if cur.same_session(entry) => {
                self.users.remove(&entry.name);
                self.unindex(entry);
                true
            }
            _ => false,
        }
    }

    fn registered(&self, server: &str, incarnation: &str) -> bool {
        self.servers
            .get(server)
            .is_some_and(|s| s.incarnation == incarnation)
    }

    /// Deletes the indexed entries that still point at the incarnation.
    fn purge_index(&mut self, server: &str, incarnation: &str) -> u64 {
        let names = self
            .index
            .remove(&(server.to_owned(), incarnation.to_owned()))
            .unwrap_or_default();
        let mut purged = 0;
        for name in names {
            let stale = self
                .users
                .get(&name)
                .is_some_and(|p| p.server == server && p.incarnation == incarnation);
            if stale {
                self.users.remove(&name);
                purged += 1;
            }
        }
        purged
    }
}

#[async_trait]
impl PresenceStore for MemoryStore {
    async fn login(&self, entry: &Presence) -> Result<Option<Presence>> {
        let mut inner = self.inner.lock();
        if inner.retracted.has(entry) {
            return Err(PresenceError::Retracted);
        }
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
            inner.kicked.mark(old);
        }
        Ok(old)
    }

    async fn retract(&self, entry: &Presence) -> Result<bool> {
        let mut inner = self.inner.lock();
        inner.retracted.mark(entry);
        Ok(inner.remove_session(entry))
    }

    async fn logout(&self, entry: &Presence) -> Result<bool> {
        Ok(self.inner.lock().remove_session(entry))
    }

    async fn lookup(&self, name: &str) -> Result<Option<Presence>> {
        Ok(self.inner.lock().users.get(name).cloned())
    }

    async fn lookup_many(&self, names: &[String]) -> Result<Vec<Option<Presence>>> {
        let inner = self.inner.lock();
        Ok(names.iter().map(|n| inner.users.get(n).cloned()).collect())
    }

    async fn reassert(&self, entry: &Presence) -> Result<Reassert> {
        let mut inner = self.inner.lock();
        if inner.kicked.has(entry) {
            return Ok(Reassert::Kicked);
        }
        if let Some(holder) = inner.users.get(&entry.name) {
            return Ok(Reassert::Taken(holder.clone()));
        }
        inner.insert(entry);
        Ok(Reassert::Recreated)
    }

    async fn retire(&self, server: &str, incarnation: &str) -> Result<Retired> {
        let mut inner = self.inner.lock();
        let deregistered = inner.registered(server, incarnation);
        if deregistered {
            inner.servers.remove(server);
        }
        Ok(Retired {
            deregistered,
            purged: inner.purge_index(server, incarnation),
        })
    }

    async fn purge(&self, server: &str, incarnation: &str) -> Result<u64> {
        let mut inner = self.inner.lock();
        if inner.registered(server, incarnation) {
            return Ok(0);
        }
        Ok(inner.purge_index(server, incarnation))
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
            purged += self.retire(server, &inc).await?.purged;
        }
        Ok(purged)
    }

    async fn incarnations(&self) -> Result<Vec<(String, String)>> {
        let mut list: Vec<(String, String)> = self.inner.lock().index.keys().cloned().collect();
        list.sort();
        Ok(list)
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
        links: &[LinkInfo],
    ) -> Result<bool> {
        let mut inner = self.inner.lock();
        match inner.servers.get_mut(id) {
            Some(s) if s.incarnation == incarnation => {
                s.connections = connections;
                s.stats.clone_from(stats);
                s.links = links.to_vec();
                s.heartbeat_ms = crate::clock::now_ms();
                Ok(true)
            }
            _ => Ok(false),
        }
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

    async fn mailbox_notice(&self, entry: &Presence) -> Result<()> {
        self.inner.lock().notify(entry, KickCause::Mailbox);
        Ok(())
    }

    async fn kicks(&self, server: &str) -> Result<KickStream> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner
            .lock()
            .kick_subscribers
            .insert(server.to_owned(), tx);
        Ok(Box::pin(UnboundedReceiverStream::new(rx)))
    }

    async fn announce_relay(&self, info: &RelayInfo, ttl: std::time::Duration) -> Result<()> {
        let mut entry = info.clone();
        entry.heartbeat_ms = crate::clock::now_ms();
        let expires = std::time::Instant::now() + ttl;
        self.inner
            .lock()
            .relays
            .insert(info.id.clone(), (entry, expires));
        Ok(())
    }

    async fn withdraw_relay(&self, id: &str, incarnation: &str) -> Result<()> {
        let mut inner = self.inner.lock();
        if inner
            .relays
            .get(id)
            .is_some_and(|(r, _)| r.incarnation == incarnation)
        {
            inner.relays.remove(id);
        }
        Ok(())
    }

    async fn relays(&self) -> Result<Vec<RelayInfo>> {
        let now = std::time::Instant::now();
        let mut inner = self.inner.lock();
        inner.relays.retain(|_, (_, expires)| *expires > now);
        let mut list: Vec<RelayInfo> = inner.relays.values().map(|(r, _)| r.clone()).collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(list)
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
