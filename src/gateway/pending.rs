//! Chats forwarded to the relay that still await their outcome.
//!
//! Exactly one outcome per chat: whoever removes the entry first (the
//! relay's answer, the link going down, or the timeout sweep) answers the
//! sender; later answers for the same id find nothing and are ignored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

use super::sessions::Control;
use crate::metrics::Metrics;
use crate::pb::Status;
use crate::protocol::ErrorCode;
use crate::protocol::reply::{Event, Ref, code_line};

pub struct Entry {
    pub waiter: Waiter,
    pub started: Instant,
    pub deadline: Instant,
}

/// Who awaits a forwarded message's outcome.
pub enum Waiter {
    /// A client's chat: the outcome becomes its `ack` or `error` line.
    Client {
        control: mpsc::UnboundedSender<Control>,
        reference: Ref,
        /// The sender's in-flight slot, freed with the entry.
        permit: OwnedSemaphorePermit,
    },
    /// An operator's message (Admin API).
    Operator(oneshot::Sender<Status>),
}

pub struct Pending {
    map: Mutex<HashMap<String, Entry>>,
    metrics: Arc<Metrics>,
}

impl Pending {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            map: Mutex::default(),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn answer(&self, id: &str, entry: Entry, status: Status) {
        self.metrics.outcome(status);
        self.metrics
            .forward_latency
            .observe(entry.started.elapsed().as_secs_f64());
        // The sender may have gone meanwhile: nobody left to tell.
        match entry.waiter {
            Waiter::Client {
                control,
                reference,
                permit,
            } => {
                let _ = control.send(Control::Reply(outcome_line(id, &reference, status)));
                drop(permit);
            }
            Waiter::Operator(tx) => {
                let _ = tx.send(status);
            }
        }
    }

    pub fn insert(&self, id: String, entry: Entry) {
        self.lock().insert(id, entry);
    }

    /// Answers the sender of `id`, if it still waits.
    pub fn resolve(&self, id: &str, status: Status) {
        let entry = self.lock().remove(id);
        if let Some(entry) = entry {
            self.answer(id, entry, status);
        }
    }

    /// Answers every waiting sender with `unavailable` (the link is gone).
    pub fn fail_all(&self) -> usize {
        let drained: Vec<(String, Entry)> = self.lock().drain().collect();
        let n = drained.len();
        for (id, entry) in drained {
            self.answer(&id, entry, Status::Unavailable);
        }
        n
    }

    /// Answers `unavailable` to chats older than their deadline.
    pub fn expire(&self, now: Instant) -> usize {
        let expired: Vec<(String, Entry)> = {
            let mut map = self.lock();
            let ids: Vec<String> = map
                .iter()
                .filter(|(_, e)| e.deadline <= now)
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| map.remove(&id).map(|e| (id, e)))
                .collect()
        };
        let n = expired.len();
        for (id, entry) in expired {
            self.answer(&id, entry, Status::Unavailable);
        }
        n
    }
}

/// The one place where a relay status becomes a client reply.
pub fn outcome_line(id: &str, reference: &Ref, status: Status) -> bytes::Bytes {
    let code = match status {
        Status::Delivered => {
            return Event::Ack {
                id,
                reference,
                status: "delivered",
            }
            .to_line();
        }
        Status::Offline | Status::NotHere => ErrorCode::Offline,
        Status::Busy => ErrorCode::RecipientBusy,
        Status::Unavailable | Status::Unspecified => ErrorCode::Unavailable,
    };
    code_line(code, reference)
}
