//! Chats forwarded to the relay: the current link they leave by, and the
//! ones still awaiting their outcome.
//!
//! Exactly one outcome per chat: whoever removes the entry first (the
//! relay's answer, the link going down, or the timeout sweep) answers the
//! sender; later answers for the same id find nothing and are ignored.
//! While no link is up, `forward` answers `unavailable` at once, so
//! cross-server chats fail fast instead of hanging.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use crate::sync::Mutex;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use super::control::Control;
use super::outbox::outcome_line;
use crate::link::LinkSender;
use crate::metrics::Metrics;
use crate::pb::{self, Status};
use crate::protocol::reply::Ref;
use crate::shutdown::CancellationToken;

const EXPIRY_SWEEP: Duration = Duration::from_millis(250);

/// Who awaits a forwarded message's outcome.
pub enum Waiter {
    /// A client's chat: the outcome becomes its `ack` or `error` line.
    Client {
        control: mpsc::UnboundedSender<Control>,
        reference: Ref,
        /// The sender's in-flight slot, freed with the entry and once the
        /// envelope has left the link's queue.
        slot: Arc<OwnedSemaphorePermit>,
    },
    /// An operator's message (Admin API).
    Operator(oneshot::Sender<Status>),
}

struct Entry {
    waiter: Waiter,
    started: Instant,
    deadline: Instant,
}

pub struct Forwards {
    /// This server's id: the origin of its forwards.
    origin: String,
    timeout: Duration,
    pending: Mutex<HashMap<String, Entry>>,
    /// The current link's outbound queue, if a link is up.
    link: Mutex<Option<LinkSender>>,
    /// When the current link came up (unix ms); 0 while down.
    linked_since_ms: AtomicI64,
    metrics: Arc<Metrics>,
}

impl Forwards {
    pub fn new(origin: String, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            origin,
            timeout,
            pending: Mutex::default(),
            link: Mutex::default(),
            linked_since_ms: AtomicI64::new(0),
            metrics,
        }
    }

    /// Hands a message to the relay; `waiter` receives its outcome (or
    /// `unavailable` at once if there is no link, or its queue is full).
    pub fn forward(&self, message: pb::ChatMessage, waiter: Waiter) {
        let id = message.id.clone();
        let slot = match &waiter {
            Waiter::Client { slot, .. } => Some(slot.clone()),
            Waiter::Operator(_) => None,
        };
        let now = Instant::now();
        let entry = Entry {
            waiter,
            started: now,
            deadline: now + self.timeout,
        };
        self.pending.lock().insert(id.clone(), entry);
        let forward = pb::Forward {
            message: Some(message),
            origin_server: self.origin.clone(),
            rerouted: false,
        };
        let link = self.link.lock().clone();
        let sent = link.is_some_and(|link| link.try_forward(forward, slot).is_ok());
        if !sent {
            self.resolve(&id, Status::Unavailable);
        }
    }

    /// Answers the sender of `id`, if it still waits.
    pub fn resolve(&self, id: &str, status: Status) {
        let entry = self.pending.lock().remove(id);
        if let Some(entry) = entry {
            self.answer(id, entry, status);
        }
    }

    /// A link is up: forwards leave through `tx` from now on.
    pub fn link_up(&self, tx: LinkSender) {
        *self.link.lock() = Some(tx);
        self.linked_since_ms
            .store(crate::clock::now_ms(), Ordering::Relaxed);
        self.metrics.relay_links.set(1);
    }

    /// The link is down: every waiting sender gets `unavailable` (it may
    /// have been delivered; nobody can tell). Returns how many.
    pub fn link_down(&self) -> usize {
        *self.link.lock() = None;
        self.linked_since_ms.store(0, Ordering::Relaxed);
        self.metrics.relay_links.set(0);
        let drained: Vec<(String, Entry)> = self.pending.lock().drain().collect();
        self.answer_all(drained, Status::Unavailable)
    }

    /// When the current link came up, if it is up.
    pub fn linked_since_ms(&self) -> Option<i64> {
        Some(self.linked_since_ms.load(Ordering::Relaxed)).filter(|t| *t > 0)
    }

    /// Answers `unavailable` to chats past their deadline; returns how many.
    fn expire(&self, now: Instant) -> usize {
        let expired: Vec<(String, Entry)> = {
            let mut pending = self.pending.lock();
            let ids: Vec<String> = pending
                .iter()
                .filter(|(_, e)| e.deadline <= now)
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| pending.remove(&id).map(|e| (id, e)))
                .collect()
        };
        self.answer_all(expired, Status::Unavailable)
    }

    fn answer_all(&self, entries: Vec<(String, Entry)>, status: Status) -> usize {
        let n = entries.len();
        for (id, entry) in entries {
            self.answer(&id, entry, status);
        }
        n
    }

    fn answer(&self, id: &str, entry: Entry, status: Status) {
        self.metrics.outcome(status);
        self.metrics
            .forward_latency
            .observe(entry.started.elapsed().as_secs_f64());
        // The sender may have gone meanwhile: nobody left to tell.
        match entry.waiter {
            Waiter::Client {
                control, reference, ..
            } => {
                let _ = control.send(Control::Outcome(outcome_line(id, &reference, status)));
            }
            Waiter::Operator(tx) => {
                let _ = tx.send(status);
            }
        }
    }
}

/// Answers `unavailable` to forwards past their timeout, until `shutdown`.
pub async fn expire_loop(forwards: Arc<Forwards>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(EXPIRY_SWEEP);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let expired = forwards.expire(Instant::now());
        if expired > 0 {
            tracing::warn!(server = %forwards.origin, expired, "forwards timed out: answered unavailable");
        }
    }
}
