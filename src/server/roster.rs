//! This server's sessions as the presence store records them: login,
//! logout, and reconcile, which makes the store agree with the local
//! session table after the two may have drifted (store restarted or slow,
//! notices missed, a purge that raced a re-registration).
//!
//! A store call that failed may still have happened, or happen later: a
//! login whose reply timed out can run in Redis afterwards. So every
//! login that did not land, and every logout that failed, is owed a
//! retraction, retried with each heartbeat until the store confirms it
//! (a retraction also stops a login that has not run yet); and a failed
//! call marks the roster dirty, so the next heartbeat reconciles.
//!
//! The only door from a session to the presence store; it never touches
//! a socket.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sync::Mutex;

use super::identity::Identity;
use super::sessions::Sessions;
use crate::presence::{self, Presence, PresenceStore, Reassert};
use crate::protocol::KickReason;

/// Beyond this many owed retractions the oldest are given up (the relay's
/// purge at this server's death, or a reconcile, still removes them).
const OWED_MAX: usize = 100_000;

pub struct Roster {
    store: Arc<dyn PresenceStore>,
    me: Arc<Identity>,
    /// Entries to retract: logins that did not land, failed logouts.
    owed: Mutex<VecDeque<Presence>>,
    /// Sessions whose login is under way: their entries are not ghosts.
    logging_in: Mutex<HashSet<u64>>,
    /// A store call failed since the last reconcile.
    dirty: AtomicBool,
    /// One reconcile at a time (the heartbeat and the kick notices start
    /// them).
    reconciling: tokio::sync::Mutex<()>,
    /// Logins of one name on this server take turns (by shard of the
    /// name): each is recorded in the store and installed locally before
    /// the next starts, so the local install order is the store's order.
    /// Otherwise an older login installing late would displace the newest
    /// session, then be kicked by its own delayed notice: nobody left.
    login_turns: Vec<tokio::sync::Mutex<()>>,
}

/// Shards of `login_turns`: logins of different names rarely wait on
/// each other.
const LOGIN_SHARDS: usize = 64;

/// What a reconcile changed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Reconciled {
    /// Missing entries of live sessions re-created.
    pub reasserted: usize,
    /// Live sessions closed: their name belongs to another session.
    pub kicked: usize,
    /// Entries of this incarnation removed: no live session here.
    pub removed: usize,
}

/// A login under way: its session is not a ghost; if it does not land
/// (failed, or dropped mid-way), its entry is owed a retraction.
struct LoggingIn<'a> {
    roster: &'a Roster,
    entry: &'a Presence,
    landed: bool,
}

impl<'a> LoggingIn<'a> {
    fn start(roster: &'a Roster, entry: &'a Presence) -> Self {
        roster.logging_in.lock().insert(entry.session);
        Self {
            roster,
            entry,
            landed: false,
        }
    }
}

impl Drop for LoggingIn<'_> {
    fn drop(&mut self) {
        if !self.landed {
            self.roster.owe(self.entry.clone());
        }
        self.roster.logging_in.lock().remove(&self.entry.session);
    }
}

impl Roster {
    pub fn new(store: Arc<dyn PresenceStore>, me: Arc<Identity>) -> Self {
        Self {
            store,
            me,
            owed: Mutex::default(),
            logging_in: Mutex::default(),
            dirty: AtomicBool::new(false),
            reconciling: tokio::sync::Mutex::new(()),
            login_turns: (0..LOGIN_SHARDS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    fn login_turn(&self, name: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(name);
        &self.login_turns[hash as usize % LOGIN_SHARDS]
    }

    /// Records a login (newest wins), then runs `install` with the
    /// displaced entry if it was a session of this very incarnation (this
    /// server kicks it itself; other servers learn through the store's kick
    /// notices). Until `install` returned, the session counts as live for
    /// reconcile. A failed login is retracted later: the store may still
    /// run it.
    pub async fn login<R>(
        &self,
        entry: &Presence,
        install: impl FnOnce(Option<Presence>) -> R,
    ) -> presence::Result<R> {
        let _turn = self.login_turn(&entry.name).lock().await;
        let mut login = LoggingIn::start(self, entry);
        let displaced = self.store.login(entry).await?;
        let installed = install(displaced.filter(|old| self.me.owns(old)));
        login.landed = true;
        Ok(installed)
    }

    /// Removes a session's entry (compare-and-delete); if the store is
    /// unreachable, the heartbeat retracts it later.
    pub async fn logout(&self, entry: Presence) {
        if let Err(e) = self.store.logout(&entry).await {
            tracing::warn!(user = %entry.name, error = %e, "could not remove presence entry; retrying with the heartbeat");
            self.owe(entry);
        }
    }

    /// Is `name` online anywhere in the cluster?
    pub async fn is_online(&self, name: &str) -> presence::Result<bool> {
        Ok(self.store.lookup(name).await?.is_some())
    }

    fn owe(&self, entry: Presence) {
        self.dirty.store(true, Ordering::Relaxed);
        let mut owed = self.owed.lock();
        if owed.len() >= OWED_MAX {
            owed.pop_front();
        }
        owed.push_back(entry);
    }

    /// True if a store call failed since the last reconcile.
    pub fn dirty(&self) -> bool {
        self.dirty.load(Ordering::Relaxed)
    }

    /// Retracts the owed entries, oldest first; stops at the first failure
    /// (the store is still unreachable: the next heartbeat goes on).
    pub async fn retract_owed(&self) {
        let due = self.owed.lock().len();
        for _ in 0..due {
            let Some(entry) = self.owed.lock().pop_front() else {
                return;
            };
            // Compare-and-delete: harmless if the name moved on meanwhile.
            if self.store.retract(&entry).await.is_err() {
                self.owed.lock().push_front(entry);
                return;
            }
        }
    }

    /// Makes the store agree with the local session table, both ways:
    /// entries of live sessions that are missing are re-created; entries
    /// this incarnation holds for sessions that are not live here (ghosts)
    /// are removed; sessions whose name belongs to another session (or
    /// that an operator kicked) are kicked. A store failure leaves the
    /// roster dirty: the next heartbeat tries again.
    pub async fn reconcile(&self, sessions: &Sessions) -> Reconciled {
        let _one = self.reconciling.lock().await;
        self.dirty.store(false, Ordering::Relaxed);
        let mut done = Reconciled::default();
        if let Err(e) = self.try_reconcile(sessions, &mut done).await {
            tracing::warn!(server = %self.me.id, error = %e, "reconcile failed; retrying with the heartbeat");
            self.dirty.store(true, Ordering::Relaxed);
        }
        done
    }

    async fn try_reconcile(
        &self,
        sessions: &Sessions,
        done: &mut Reconciled,
    ) -> presence::Result<()> {
        let local: HashMap<String, Presence> = sessions
            .snapshot()
            .into_iter()
            .map(|(name, session, since)| {
                let mine = self.me.presence(&name, session, since);
                (name, mine)
            })
            .collect();
        let indexed: HashSet<String> = self
            .store
            .users_of(&self.me.id, &self.me.incarnation)
            .await?
            .into_iter()
            .collect();
        let names: Vec<String> = indexed
            .iter()
            .cloned()
            .chain(local.keys().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let entries = self.store.lookup_many(&names).await?;
        for (name, entry) in names.iter().zip(entries) {
            let mine = local.get(name);
            // A live entry its index lost (a write lost in a Redis Cluster
            // failover, a purge racing a re-registration): indexing it
            // again is what `reassert` does first; the entry stands.
            let unindexed = !indexed.contains(name);
            if let (Some(m), Some(e), true) = (mine, &entry, unindexed)
                && m.same_session(e)
            {
                self.store.reassert(m).await?;
            }
            self.settle(sessions, mine, entry, done).await?;
        }
        Ok(())
    }

    /// Settles one name: `mine` is its local session (as of the snapshot),
    /// `entry` what the store holds.
    async fn settle(
        &self,
        sessions: &Sessions,
        mine: Option<&Presence>,
        entry: Option<Presence>,
        done: &mut Reconciled,
    ) -> presence::Result<()> {
        match entry {
            Some(e) if mine.is_some_and(|m| m.same_session(&e)) => {}
            Some(e) if !self.me.owns(&e) => {
                if let Some(m) = mine {
                    self.kick(sessions, m, KickReason::LoggedInElsewhere, done);
                }
            }
            // A newer local login (under way, or installed since).
            Some(e) if self.is_live(sessions, &e) => {}
            Some(ghost) => {
                if self.store.logout(&ghost).await? {
                    done.removed += 1;
                }
                if let Some(m) = mine {
                    self.reassert(sessions, m, done).await?;
                }
            }
            None => {
                if let Some(m) = mine {
                    self.reassert(sessions, m, done).await?;
                }
            }
        }
        Ok(())
    }

    async fn reassert(
        &self,
        sessions: &Sessions,
        mine: &Presence,
        done: &mut Reconciled,
    ) -> presence::Result<()> {
        match self.store.reassert(mine).await? {
            // The session may have ended while its entry was re-created.
            Reassert::Recreated if !sessions.holds(&mine.name, mine.session) => {
                self.owe(mine.clone())
            }
            Reassert::Recreated => done.reasserted += 1,
            Reassert::Taken(holder) if holder.same_session(mine) => {}
            // A local ghost or a newer local login: the next reconcile
            // settles it, once that login has landed.
            Reassert::Taken(holder) if self.me.owns(&holder) => {
                self.dirty.store(true, Ordering::Relaxed)
            }
            // Taken elsewhere while we looked: a newer login, which saw no
            // entry to displace, so no kick notice comes. The loser goes.
            Reassert::Taken(_) => self.kick(sessions, mine, KickReason::LoggedInElsewhere, done),
            // An operator kick whose notice we missed.
            Reassert::Kicked => self.kick(sessions, mine, KickReason::Admin, done),
        }
        Ok(())
    }

    fn kick(
        &self,
        sessions: &Sessions,
        mine: &Presence,
        reason: KickReason,
        done: &mut Reconciled,
    ) {
        sessions.kick(&mine.name, mine.session, reason);
        done.kicked += 1;
    }

    /// True if `entry`'s session is live here or logging in.
    fn is_live(&self, sessions: &Sessions, entry: &Presence) -> bool {
        self.logging_in.lock().contains(&entry.session)
            || sessions.holds(&entry.name, entry.session)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use async_trait::async_trait;
    use tokio::sync::Semaphore;

    use crate::server::control::{ControlRx, control_channel};
    use crate::server::outbox::message_queue;

    use super::*;
    use std::time::Duration;

    use crate::presence::{
        KickStream, LinkInfo, MemoryStore, PresenceError, RelayInfo, Retired, ServerInfo,
    };
    use crate::server::control::Control;
    use crate::server::outbox::Budget;
    use crate::server::sessions::SessionHandle;

    /// The in-process store, with races injected where a slow Redis opens
    /// them: a newer login elsewhere just before a `reassert`; a login
    /// that runs but whose caller sees a failure (a reply timed out); a
    /// login held after it ran, until released.
    #[derive(Default)]
    struct RacyStore {
        inner: MemoryStore,
        /// Logged in (once) just before the next `reassert`.
        elsewhere_before_reassert: crate::sync::Mutex<Option<Presence>>,
        login_times_out: bool,
        /// If set, a login waits for a permit after it ran.
        login_gate: Option<Semaphore>,
    }

    #[async_trait]
    impl PresenceStore for RacyStore {
        async fn login(&self, e: &Presence) -> presence::Result<Option<Presence>> {
            let old = self.inner.login(e).await?;
            if let Some(gate) = &self.login_gate {
                let _ = gate.acquire().await;
            }
            if self.login_times_out {
                return Err(PresenceError::Corrupt("reply timed out".into()));
            }
            Ok(old)
        }
        async fn kick(&self, name: &str) -> presence::Result<Option<Presence>> {
            self.inner.kick(name).await
        }
        async fn retract(&self, e: &Presence) -> presence::Result<bool> {
            self.inner.retract(e).await
        }
        async fn logout(&self, e: &Presence) -> presence::Result<bool> {
            self.inner.logout(e).await
        }
        async fn lookup(&self, name: &str) -> presence::Result<Option<Presence>> {
            self.inner.lookup(name).await
        }
        async fn lookup_many(&self, names: &[String]) -> presence::Result<Vec<Option<Presence>>> {
            self.inner.lookup_many(names).await
        }
        async fn reassert(&self, e: &Presence) -> presence::Result<Reassert> {
            let elsewhere = self.elsewhere_before_reassert.lock().take();
            if let Some(other) = elsewhere {
                self.inner.login(&other).await?;
            }
            self.inner.reassert(e).await
        }
        async fn retire(&self, server: &str, inc: &str) -> presence::Result<Retired> {
            self.inner.retire(server, inc).await
        }
        async fn purge(&self, server: &str, inc: &str) -> presence::Result<u64> {
            self.inner.purge(server, inc).await
        }
        async fn purge_server(&self, server: &str) -> presence::Result<u64> {
            self.inner.purge_server(server).await
        }
        async fn incarnations(&self) -> presence::Result<Vec<(String, String)>> {
            self.inner.incarnations().await
        }
        async fn users_of(&self, server: &str, inc: &str) -> presence::Result<Vec<String>> {
            self.inner.users_of(server, inc).await
        }
        async fn register(&self, info: &ServerInfo) -> presence::Result<()> {
            self.inner.register(info).await
        }
        async fn heartbeat(
            &self,
            id: &str,
            inc: &str,
            connections: u64,
            stats: &BTreeMap<String, u64>,
            links: &[LinkInfo],
        ) -> presence::Result<bool> {
            self.inner
                .heartbeat(id, inc, connections, stats, links)
                .await
        }
        async fn servers(&self) -> presence::Result<Vec<ServerInfo>> {
            self.inner.servers().await
        }
        async fn record_purge(&self, entries: u64) -> presence::Result<()> {
            self.inner.record_purge(entries).await
        }
        async fn purge_totals(&self) -> presence::Result<(u64, u64)> {
            self.inner.purge_totals().await
        }
        async fn mailbox_notice(&self, e: &Presence) -> presence::Result<()> {
            self.inner.mailbox_notice(e).await
        }
        async fn kicks(&self, server: &str) -> presence::Result<KickStream> {
            self.inner.kicks(server).await
        }
        async fn announce_relay(&self, info: &RelayInfo, ttl: Duration) -> presence::Result<()> {
            self.inner.announce_relay(info, ttl).await
        }
        async fn withdraw_relay(&self, id: &str, inc: &str) -> presence::Result<()> {
            self.inner.withdraw_relay(id, inc).await
        }
        async fn relays(&self) -> presence::Result<Vec<RelayInfo>> {
            self.inner.relays().await
        }
    }

    struct Fixture {
        store: Arc<RacyStore>,
        me: Arc<Identity>,
        roster: Arc<Roster>,
        sessions: Arc<Sessions>,
    }

    fn fixture(store: RacyStore) -> Fixture {
        let store = Arc::new(store);
        let me = Arc::new(Identity::new("a".into()));
        let roster = Arc::new(Roster::new(store.clone(), me.clone()));
        let sessions = Arc::new(Sessions::new(Arc::new(Budget::new(1 << 20, 1 << 20))));
        Fixture {
            store,
            me,
            roster,
            sessions,
        }
    }

    impl Fixture {
        /// A session of `name` live here; returns it and its control queue.
        fn live(&self, name: &str) -> (Presence, ControlRx) {
            let (handle, control) = handle(self.me.new_session_id());
            let mine = self.me.presence(name, handle.id, handle.since_ms);
            self.sessions.install(name, handle).unwrap();
            (mine, control)
        }
    }

    fn handle(id: u64) -> (SessionHandle, ControlRx) {
        let (messages, _) = message_queue(1);
        let (control, rx) = control_channel();
        let handle = SessionHandle {
            id,
            since_ms: 1,
            messages,
            queue: Arc::default(),
            control,
        };
        (handle, rx)
    }

    fn kicked(control: &mut ControlRx) -> Option<KickReason> {
        match control.try_recv() {
            Ok(Control::Kick { reason, .. }) => Some(reason),
            _ => None,
        }
    }

    #[tokio::test]
    async fn reconcile_kicks_a_session_whose_name_was_taken_while_it_looked() {
        let other = Presence {
            name: "alice".into(),
            server: "b".into(),
            incarnation: "1".into(),
            session: 9,
            since_ms: 2,
        };
        let f = fixture(RacyStore {
            elsewhere_before_reassert: crate::sync::Mutex::new(Some(other.clone())),
            ..Default::default()
        });
        // alice is live here, but the store lost her entry (a restart).
        let (_, mut control) = f.live("alice");

        let done = f.roster.reconcile(&f.sessions).await;
        assert_eq!(f.store.lookup("alice").await.unwrap(), Some(other));
        assert_eq!(
            kicked(&mut control),
            Some(KickReason::LoggedInElsewhere),
            "the session that lost the name must be kicked"
        );
        assert_eq!(done.kicked, 1);
        assert!(!f.sessions.is_online("alice"));
    }

    #[tokio::test]
    async fn a_login_that_failed_but_ran_is_retracted() {
        let f = fixture(RacyStore {
            login_times_out: true,
            ..Default::default()
        });
        let entry = f.me.presence("alice", f.me.new_session_id(), 1);
        let installed = f.roster.login(&entry, |_| ()).await;
        assert!(installed.is_err());
        assert_eq!(f.store.lookup("alice").await.unwrap(), Some(entry));
        assert!(f.roster.dirty());
        f.roster.retract_owed().await;
        assert_eq!(f.store.lookup("alice").await.unwrap(), None);
    }

    #[tokio::test]
    async fn reconcile_removes_ghosts_and_restores_the_missing() {
        let f = fixture(RacyStore::default());
        // A ghost of this incarnation (a login that never landed here),
        // and a live session whose entry a ghost of its own name hides.
        let ghost = f.me.presence("ghost", 1000, 1);
        f.store.login(&ghost).await.unwrap();
        let (bob, mut control) = f.live("bob");
        f.store.login(&f.me.presence("bob", 1001, 1)).await.unwrap();
        let (carol, _) = f.live("carol");

        let done = f.roster.reconcile(&f.sessions).await;
        assert_eq!(f.store.lookup("ghost").await.unwrap(), None);
        assert_eq!(f.store.lookup("bob").await.unwrap(), Some(bob));
        assert_eq!(f.store.lookup("carol").await.unwrap(), Some(carol));
        assert_eq!((done.removed, done.reasserted, done.kicked), (2, 2, 0));
        assert_eq!(kicked(&mut control), None);
        assert!(!f.roster.dirty());
    }

    #[tokio::test]
    async fn reconcile_leaves_a_login_under_way_alone() {
        let f = fixture(RacyStore {
            login_gate: Some(Semaphore::new(0)),
            ..Default::default()
        });
        let entry = f.me.presence("alice", f.me.new_session_id(), 1);
        let login = {
            let (roster, sessions, entry) = (f.roster.clone(), f.sessions.clone(), entry.clone());
            tokio::spawn(async move {
                let (handle, _control) = handle(entry.session);
                let install = |_| sessions.install("alice", handle).is_ok();
                roster.login(&entry, install).await.unwrap()
            })
        };
        while f.store.lookup("alice").await.unwrap().is_none() {
            tokio::task::yield_now().await;
        }
        // The login ran in the store, its session is not installed yet.
        let done = f.roster.reconcile(&f.sessions).await;
        assert_eq!(done.removed, 0);
        assert_eq!(f.store.lookup("alice").await.unwrap(), Some(entry.clone()));
        f.store.login_gate.as_ref().unwrap().add_permits(1);
        assert!(login.await.unwrap());
        assert!(f.sessions.holds("alice", entry.session));
    }
}
