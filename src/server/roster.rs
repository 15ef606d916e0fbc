//! This server's sessions as the presence store records them: login,
//! logout (retried by the heartbeat while the store is unreachable) and
//! reconcile, which makes the store agree with the local session table
//! after the two may have drifted (store restarted, notices missed).
//!
//! The only door from a session to the presence store; it never touches
//! a socket.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::sync::Mutex;

use super::identity::Identity;
use super::sessions::Sessions;
use crate::presence::{self, Presence, PresenceStore, Reassert};
use crate::protocol::KickReason;

/// Beyond this many unremoved entries the oldest are given up (the
/// relay's purge at this server's death still removes them).
const STALE_MAX: usize = 100_000;

pub struct Roster {
    store: Arc<dyn PresenceStore>,
    me: Arc<Identity>,
    /// Entries of ended sessions still to remove from the store.
    stale: Mutex<VecDeque<Presence>>,
}

impl Roster {
    pub fn new(store: Arc<dyn PresenceStore>, me: Arc<Identity>) -> Self {
        Self {
            store,
            me,
            stale: Mutex::default(),
        }
    }

    /// Records a login (newest wins). Returns the displaced entry if it
    /// was a session of this very incarnation: this server kicks it
    /// itself (other servers learn through the store's kick notices).
    pub async fn login(&self, entry: &Presence) -> presence::Result<Option<Presence>> {
        let displaced = self.store.login(entry).await?;
        Ok(displaced.filter(|old| self.me.owns(old)))
    }

    /// Removes a session's entry (compare-and-delete); if the store is
    /// unreachable, the heartbeat retries it.
    pub async fn logout(&self, entry: Presence) {
        if let Err(e) = self.store.logout(&entry).await {
            tracing::warn!(user = %entry.name, error = %e, "could not remove presence entry; retrying with the heartbeat");
            self.push_stale(entry);
        }
    }

    /// Is `name` online anywhere in the cluster?
    pub async fn is_online(&self, name: &str) -> presence::Result<bool> {
        Ok(self.store.lookup(name).await?.is_some())
    }

    fn push_stale(&self, entry: Presence) {
        let mut stale = self.stale.lock();
        if stale.len() >= STALE_MAX {
            stale.pop_front();
        }
        stale.push_back(entry);
    }

    /// Retries the removals that failed.
    pub async fn retry_stale(&self) {
        let batch = std::mem::take(&mut *self.stale.lock());
        for entry in batch {
            // Compare-and-delete: harmless if the name moved on meanwhile.
            if self.store.logout(&entry).await.is_err() {
                self.push_stale(entry);
            }
        }
    }

    /// Makes the store agree with the local session table: missing
    /// entries are re-created, sessions whose name now belongs elsewhere
    /// (or that an operator kicked) are kicked. Returns (re-asserted,
    /// kicked).
    pub async fn reconcile(&self, sessions: &Sessions) -> (usize, usize) {
        let (mut reasserted, mut kicked) = (0, 0);
        for (name, session, since_ms) in sessions.snapshot() {
            let mine = self.me.presence(&name, session, since_ms);
            let kick = match self.store.lookup(&name).await {
                Ok(Some(cur)) if cur.same_session(&mine) => None,
                Ok(Some(_)) => Some(KickReason::LoggedInElsewhere),
                Ok(None) => match self.store.reassert(&mine).await {
                    // The session may have ended while we re-created it.
                    Ok(Reassert::Recreated) if !sessions.holds(&name, session) => {
                        self.push_stale(mine);
                        None
                    }
                    Ok(Reassert::Recreated) => {
                        reasserted += 1;
                        None
                    }
                    Ok(Reassert::Taken) => None,
                    // An operator kick whose notice we missed.
                    Ok(Reassert::Kicked) => Some(KickReason::Admin),
                    Err(e) => {
                        tracing::warn!(user = %name, error = %e, "re-assert failed");
                        None
                    }
                },
                Err(e) => {
                    tracing::warn!(user = %name, error = %e, "reconcile lookup failed");
                    None
                }
            };
            if let Some(reason) = kick {
                sessions.kick(&name, session, reason);
                kicked += 1;
            }
        }
        (reasserted, kicked)
    }
}
