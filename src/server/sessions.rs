//! The sessions logged in on this server: name -> the connection's queues.
//!
//! This table is the authority on local delivery: a message is queued
//! here or not at all. It also enforces newest-wins locally, and keeps
//! short-lived tombstones for sessions kicked before they finished
//! installing (a kick notice can overtake the login that it displaces).
//! It never talks to the presence store.
//!
//! Invariants:
//! - a name maps to at most one session; installing a newer one kicks the
//!   older (the store already ordered the logins);
//! - a message is queued only within both byte budgets (`outbox::Budget`),
//!   reserved under this table's lock, so reservations never race;
//! - a refused message never had a receipt (it is made only once the
//!   message is queued), so its caller answers the sender, exactly once.

use std::collections::VecDeque;

use foldhash::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::control::{Control, ControlTx};
use super::outbox::{Budget, MessagesTx, Outbound, QueueBytes, Receipt};
use crate::protocol::KickReason;
use crate::sync::{Mutex, MutexGuard};

/// How a connection is reached from the rest of the server.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    /// The session id: unique per login within this server incarnation.
    pub id: u64,
    pub since_ms: i64,
    /// Bounded in messages; `queue` counts its bytes.
    pub messages: MessagesTx,
    pub queue: Arc<QueueBytes>,
    pub control: ControlTx,
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

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undelivered {
    /// The recipient's queue (or the server's budget) is full.
    Busy,
    /// No session of that name here.
    NotHere,
}

/// The session was kicked before it could be installed, for this reason.
#[derive(Debug)]
pub struct Displaced(pub KickReason);

const TOMBSTONE_TTL: Duration = Duration::from_secs(60);
/// Beyond this many, the oldest tombstones go first: memory stays bounded
/// under any churn of kicks.
const TOMBSTONES_MAX: usize = 100_000;

/// Kicks that arrived before their session installed, oldest first.
#[derive(Default)]
struct Tombstones {
    by_session: HashMap<u64, KickReason>,
    order: VecDeque<(Instant, u64)>,
}

impl Tombstones {
    fn insert(&mut self, session: u64, reason: KickReason, now: Instant) {
        // Pruning from the old end costs O(1) per kick, however many
        // tombstones are fresh.
        while let Some(&(at, old)) = self.order.front() {
            if now.duration_since(at) < TOMBSTONE_TTL && self.order.len() < TOMBSTONES_MAX {
                break;
            }
            self.order.pop_front();
            self.by_session.remove(&old);
        }
        self.by_session.insert(session, reason);
        self.order.push_back((now, session));
    }

    /// Session ids are never reused, so a taken tombstone's `order` entry
    /// can wait for pruning.
    fn take(&mut self, session: u64) -> Option<KickReason> {
        self.by_session.remove(&session)
    }
}

#[derive(Default)]
struct Inner {
    by_name: HashMap<String, SessionHandle>,
    tombstones: Tombstones,
}

pub struct Sessions {
    inner: Mutex<Inner>,
    budget: Arc<Budget>,
}

impl Sessions {
    pub fn new(budget: Arc<Budget>) -> Self {
        Self {
            inner: Mutex::default(),
            budget,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    /// Installs a freshly logged-in session, kicking whatever local session
    /// held the name (it is older: the store already ordered the logins).
    pub fn install(&self, name: &str, handle: SessionHandle) -> Result<(), Displaced> {
        let mut inner = self.lock();
        if let Some(reason) = inner.tombstones.take(handle.id) {
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
            _ => inner.tombstones.insert(session, reason, Instant::now()),
        }
    }

    /// Session `session` of `name` has new mail in the offline mailbox
    /// (a notice): its connection drains the mailbox again.
    pub fn mailbox_notice(&self, name: &str, session: u64) {
        let inner = self.lock();
        if let Some(h) = inner.by_name.get(name).filter(|h| h.id == session) {
            let _ = h.control.send(Control::Mailbox);
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

    /// Queues a message for `name`. `render` and `receipt` run only if
    /// `name` is here and within its budgets; on a refusal the caller
    /// answers the sender itself.
    pub fn deliver(
        &self,
        name: &str,
        render: impl FnOnce() -> Bytes,
        receipt: impl FnOnce() -> Receipt,
    ) -> Result<(), Undelivered> {
        let inner = self.lock();
        let Some(h) = inner.by_name.get(name) else {
            return Err(Undelivered::NotHere);
        };
        let line = render();
        let bytes = line.len();
        if !self.budget.try_reserve(&h.queue, bytes) {
            return Err(Undelivered::Busy);
        }
        let (refused, outbound) = match h.messages.try_send(Outbound {
            line,
            receipt: receipt(),
        }) {
            Ok(()) => return Ok(()),
            Err(flume::TrySendError::Full(o)) => (Undelivered::Busy, o),
            Err(flume::TrySendError::Disconnected(o)) => (Undelivered::NotHere, o),
        };
        self.budget.release(&h.queue, bytes);
        outbound.receipt.forget();
        Err(refused)
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
    use crate::pb::Status;
    use crate::server::control::{ControlRx, control_channel};
    use crate::server::outbox::{MessagesRx, message_queue};
    use tokio::sync::oneshot;

    fn sessions(per_queue: usize) -> Sessions {
        Sessions::new(Arc::new(Budget::new(per_queue, usize::MAX)))
    }

    fn handle(session: u64, queue: usize) -> (SessionHandle, MessagesRx, ControlRx) {
        let (tx, rx) = message_queue(queue);
        let (ctx, crx) = control_channel();
        (
            SessionHandle {
                id: session,
                since_ms: 0,
                messages: tx,
                queue: Arc::default(),
                control: ctx,
            },
            rx,
            crx,
        )
    }

    fn receipt() -> (Receipt, oneshot::Receiver<Status>) {
        let (tx, rx) = oneshot::channel();
        (Receipt::operator(tx), rx)
    }

    #[test]
    fn newer_local_login_kicks_older() {
        let s = sessions(1000);
        let (h1, _r1, c1) = handle(1, 4);
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
        let s = sessions(1000);
        s.kick("alice", 5, KickReason::Admin);
        let (h, _r, _c) = handle(5, 4);
        assert!(matches!(
            s.install("alice", h),
            Err(Displaced(KickReason::Admin))
        ));
        assert!(!s.is_online("alice"));
    }

    #[test]
    fn tombstones_stay_bounded_and_keep_the_newest() {
        let mut t = Tombstones::default();
        let now = Instant::now();
        for session in 0..(TOMBSTONES_MAX as u64 + 10) {
            t.insert(session, KickReason::Admin, now);
        }
        assert_eq!(t.by_session.len(), TOMBSTONES_MAX);
        assert_eq!(t.take(0), None, "the oldest went first");
        assert_eq!(t.take(TOMBSTONES_MAX as u64 + 9), Some(KickReason::Admin));
        t.insert(1 << 40, KickReason::Admin, now + TOMBSTONE_TTL);
        assert_eq!(t.by_session.len(), 1, "expired ones are pruned");
    }

    #[test]
    fn full_queue_is_busy_and_absent_is_not_here() {
        let s = sessions(1000);
        let (h, _r, _c) = handle(1, 1);
        s.install("bob", h).unwrap();
        let (r1, _) = receipt();
        assert!(s.deliver("bob", || Bytes::from_static(b"1"), || r1).is_ok());
        let (r2, mut rx2) = receipt();
        let refused = s.deliver("bob", || Bytes::from_static(b"2"), || r2);
        assert_eq!(refused, Err(Undelivered::Busy));
        assert!(rx2.try_recv().is_err(), "a refused message is not settled");
        let refused = s.deliver("carol", || unreachable!(), || unreachable!());
        assert_eq!(refused, Err(Undelivered::NotHere));
    }

    #[test]
    fn the_byte_budget_refuses() {
        let s = sessions(10);
        let (h, _r, _c) = handle(1, 100);
        s.install("bob", h).unwrap();
        let (r1, _) = receipt();
        assert!(
            s.deliver("bob", || Bytes::from_static(b"12345678"), || r1)
                .is_ok()
        );
        let refused = s.deliver("bob", || Bytes::from_static(b"123"), || unreachable!());
        assert_eq!(refused, Err(Undelivered::Busy));
    }
}
