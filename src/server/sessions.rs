//! The sessions logged in on this server: name -> the connection's queues.
//!
//! This table is the authority on local delivery: a message is delivered
//! here or not at all. It also enforces newest-wins locally, and keeps
//! short-lived tombstones for sessions kicked before they finished
//! installing (a kick notice can overtake the login that it displaces).
//! It never talks to the presence store.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::sync::{Mutex, MutexGuard};
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::protocol::KickReason;

/// Messages to a connection besides chat messages: never refused, and
/// bounded by construction (one reply per in-flight chat, one kick).
#[derive(Debug)]
pub enum Control {
    /// A forwarded chat's outcome line, for its sender.
    Outcome(Bytes),
    /// Close session `session` with a `kicked` event.
    Kick { session: u64, reason: KickReason },
}

/// How a connection is reached from the rest of the server.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    /// The session id: unique per login within this server incarnation.
    pub id: u64,
    pub since_ms: i64,
    /// Bounded: a full queue means `recipient_busy`.
    pub messages: mpsc::Sender<Bytes>,
    pub control: mpsc::UnboundedSender<Control>,
}

impl SessionHandle {
    fn kick(&self, reason: KickReason) {
        // A closed channel means the connection is already going away.
        let _ = self.control.send(Control::Kick {
            session: self.id,
            reason,
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    Busy,
    NotHere,
}

/// The session was kicked before it could be installed, for this reason.
#[derive(Debug)]
pub struct Displaced(pub KickReason);

const TOMBSTONE_TTL: Duration = Duration::from_secs(60);
const TOMBSTONE_PRUNE_AT: usize = 4096;

#[derive(Default)]
struct Inner {
    by_name: HashMap<String, SessionHandle>,
    tombstones: HashMap<u64, (Instant, KickReason)>,
}

#[derive(Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    /// Installs a freshly logged-in session, kicking whatever local session
    /// held the name (it is older: the store already ordered the logins).
    pub fn install(&self, name: &str, handle: SessionHandle) -> Result<(), Displaced> {
        let mut inner = self.lock();
        if let Some((_, reason)) = inner.tombstones.remove(&handle.id) {
            return Err(Displaced(reason));
        }
        if let Some(old) = inner.by_name.insert(name.to_owned(), handle) {
            old.kick(KickReason::LoggedInElsewhere);
        }
        Ok(())
    }

    /// Kicks session `session` of `name`, now or as soon as it installs.
    pub fn kick(&self, name: &str, session: u64, reason: KickReason) {
        let mut inner = self.lock();
        match inner.by_name.get(name) {
            Some(h) if h.id == session => {
                if let Some(h) = inner.by_name.remove(name) {
                    h.kick(reason);
                }
            }
            _ => {
                let now = Instant::now();
                if inner.tombstones.len() >= TOMBSTONE_PRUNE_AT {
                    inner
                        .tombstones
                        .retain(|_, (t, _)| now.duration_since(*t) < TOMBSTONE_TTL);
                }
                inner.tombstones.insert(session, (now, reason));
            }
        }
    }

    /// Removes `name` if it is still session `session`.
    pub fn remove(&self, name: &str, session: u64) -> bool {
        let mut inner = self.lock();
        if inner.by_name.get(name).is_some_and(|h| h.id == session) {
            inner.by_name.remove(name);
            return true;
        }
        false
    }

    /// True if `name` is session `session` here.
    pub fn holds(&self, name: &str, session: u64) -> bool {
        self.lock()
            .by_name
            .get(name)
            .is_some_and(|h| h.id == session)
    }

    pub fn is_online(&self, name: &str) -> bool {
        self.lock().by_name.contains_key(name)
    }

    /// Queues a message for `name`; `render` runs only if `name` is here.
    pub fn deliver(&self, name: &str, render: impl FnOnce() -> Bytes) -> Delivery {
        let inner = self.lock();
        let Some(h) = inner.by_name.get(name) else {
            return Delivery::NotHere;
        };
        match h.messages.try_send(render()) {
            Ok(()) => Delivery::Delivered,
            Err(mpsc::error::TrySendError::Full(_)) => Delivery::Busy,
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::NotHere,
        }
    }

    /// (name, session, since) of every local session.
    pub fn snapshot(&self) -> Vec<(String, u64, i64)> {
        self.lock()
            .by_name
            .iter()
            .map(|(n, h)| (n.clone(), h.id, h.since_ms))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(
        session: u64,
        queue: usize,
    ) -> (
        SessionHandle,
        mpsc::Receiver<Bytes>,
        mpsc::UnboundedReceiver<Control>,
    ) {
        let (tx, rx) = mpsc::channel(queue);
        let (ctx, crx) = mpsc::unbounded_channel();
        (
            SessionHandle {
                id: session,
                since_ms: 0,
                messages: tx,
                control: ctx,
            },
            rx,
            crx,
        )
    }

    #[test]
    fn newer_local_login_kicks_older() {
        let s = Sessions::default();
        let (h1, _r1, mut c1) = handle(1, 4);
        let (h2, _r2, _c2) = handle(2, 4);
        s.install("alice", h1).unwrap();
        s.install("alice", h2).unwrap();
        assert!(matches!(
            c1.try_recv(),
            Ok(Control::Kick { session: 1, .. })
        ));
        assert!(
            !s.remove("alice", 1),
            "the stale session must not remove the new one"
        );
        assert!(s.is_online("alice"));
    }

    #[test]
    fn kick_before_install_leaves_a_tombstone() {
        let s = Sessions::default();
        s.kick("alice", 5, KickReason::Admin);
        let (h, _r, _c) = handle(5, 4);
        assert!(matches!(
            s.install("alice", h),
            Err(Displaced(KickReason::Admin))
        ));
        assert!(!s.is_online("alice"));
    }

    #[test]
    fn full_queue_is_busy_and_absent_is_not_here() {
        let s = Sessions::default();
        let (h, _r, _c) = handle(1, 1);
        s.install("bob", h).unwrap();
        assert_eq!(
            s.deliver("bob", || Bytes::from_static(b"1")),
            Delivery::Delivered
        );
        assert_eq!(
            s.deliver("bob", || Bytes::from_static(b"2")),
            Delivery::Busy
        );
        assert_eq!(s.deliver("carol", || unreachable!()), Delivery::NotHere);
    }
}
