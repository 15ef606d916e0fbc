//! Messages on their way to a recipient's socket, who learns their
//! outcome, and the reply line a sender reads for it. A message is `delivered` only once its line is written to the
//! socket (handed to the kernel); one still queued when its recipient's
//! session ends is `offline`. Whoever sent it learns the outcome through
//! its `Receipt`: a chat's sender on this server, the origin server of a
//! forward (through the link), or an operator call. Exactly once: settling
//! consumes the receipt, and a receipt dropped unsettled (its connection
//! task gone) settles `offline` on the way out.
//!
//! Queues are bounded in bytes as well as in messages, per connection and
//! for the whole server (`Budget`), so recipients that stop reading cost a
//! bounded amount of memory. This module never touches a socket.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::control::{Control, ControlTx};
use super::dedupe::Dedupe;
use crate::link::LinkSender;
use crate::metrics::Metrics;
use crate::outcome::ClientOutcome;
use crate::pb::{self, Status};
use crate::protocol::reply::{Event, Ref, code_line};

/// The sender's reply for the outcome of its chat `id`.
pub fn outcome_line(id: &str, reference: &Ref, status: Status) -> Bytes {
    match ClientOutcome::of(status) {
        ClientOutcome::Failed(code) => code_line(code, reference),
        acked => Event::Ack {
            id,
            reference,
            status: acked.code(),
        }
        .to_line(),
    }
}

/// One message for a recipient: its line and who learns its outcome.
pub struct Outbound {
    pub line: Bytes,
    pub receipt: Receipt,
}

/// Where a connection's messages are queued, and taken from.
pub type MessagesTx = flume::Sender<Outbound>;
pub type MessagesRx = flume::Receiver<Outbound>;

/// A connection's message queue of `capacity` messages (its bytes are
/// bounded by `Budget`); an empty queue allocates nothing, so idle
/// connections stay small.
pub fn message_queue(capacity: usize) -> (MessagesTx, MessagesRx) {
    flume::bounded(capacity)
}

/// Who learns a message's outcome. Boxed: every connection's queue
/// allocates slots for its messages up front, and an unboxed receipt
/// would triple their size (memory per idle connection).
pub struct Receipt(Option<Box<Waiting>>);

enum Waiting {
    /// A chat from a session on this server: its sender's control channel.
    Local {
        sender: ControlTx,
        id: String,
        reference: Ref,
    },
    /// A message forwarded by a relay: the outcome goes back on the link
    /// it came by, and on the links its copies came by (`Dedupe`).
    Remote {
        link: LinkSender,
        message_id: String,
        origin: String,
        dedupe: Arc<Dedupe>,
    },
    /// An operator's message sent on this server (Admin API).
    Operator(oneshot::Sender<Status>),
}

impl Receipt {
    pub fn local(sender: ControlTx, id: String, reference: Ref) -> Self {
        Self(Some(Box::new(Waiting::Local {
            sender,
            id,
            reference,
        })))
    }

    pub fn remote(
        link: LinkSender,
        message_id: String,
        origin: String,
        dedupe: Arc<Dedupe>,
    ) -> Self {
        Self(Some(Box::new(Waiting::Remote {
            link,
            message_id,
            origin,
            dedupe,
        })))
    }

    pub fn operator(tx: oneshot::Sender<Status>) -> Self {
        Self(Some(Box::new(Waiting::Operator(tx))))
    }

    /// True if its message may go to the offline mailbox when its
    /// session ends unwritten: a chat (local or forwarded), not an
    /// operator's message (its call is answered at once).
    pub fn storable(&self) -> bool {
        self.0
            .as_deref()
            .is_some_and(|w| !matches!(w, Waiting::Operator(_)))
    }

    /// Drops the receipt without telling anyone: its caller answers the
    /// sender itself (a refusal it got back, with another outcome).
    pub fn forget(mut self) {
        self.0 = None;
    }

    /// Tells the waiting party the outcome (it may be gone: then nobody
    /// is left to tell). Chats and operator messages of this server count
    /// in its outcome metrics; a forward counts at its origin.
    pub fn settle(mut self, status: Status, metrics: &Metrics) {
        if let Some(waiting) = self.0.take() {
            if !matches!(*waiting, Waiting::Remote { .. }) {
                metrics.outcome(status);
            }
            waiting.tell(status);
        }
    }
}

impl Waiting {
    fn tell(self, status: Status) {
        match self {
            Waiting::Local {
                sender,
                id,
                reference,
            } => {
                let _ = sender.send(Control::Outcome(outcome_line(&id, &reference, status)));
            }
            Waiting::Remote {
                link,
                message_id,
                origin,
                dedupe,
            } => {
                let also = dedupe.settle(&message_id, status);
                let outcome = pb::Outcome {
                    message_id,
                    origin_server: origin,
                    status: status as i32,
                    returned: None,
                };
                for other in also {
                    other.send_outcome(outcome.clone());
                }
                link.send_outcome(outcome);
            }
            Waiting::Operator(tx) => {
                let _ = tx.send(status);
            }
        }
    }
}

impl Drop for Receipt {
    fn drop(&mut self) {
        if let Some(waiting) = self.0.take() {
            waiting.tell(Status::Offline);
        }
    }
}

/// The byte budgets of queued output: each connection's, and the server's.
pub struct Budget {
    per_queue: usize,
    total_max: usize,
    total: AtomicUsize,
}

/// Bytes queued for one connection (messages not yet written).
#[derive(Debug, Default)]
pub struct QueueBytes(AtomicUsize);

impl Budget {
    pub fn new(per_queue: usize, total_max: usize) -> Self {
        Self {
            per_queue,
            total_max,
            total: AtomicUsize::new(0),
        }
    }

    /// Reserves `n` bytes for `queue`, if both budgets allow it. Callers
    /// serialise reservations (the session table's lock); releases may
    /// run concurrently, they only lower the counts.
    pub fn try_reserve(&self, queue: &QueueBytes, n: usize) -> bool {
        let mine = queue.0.load(Ordering::Relaxed);
        let all = self.total.load(Ordering::Relaxed);
        if mine + n > self.per_queue || all + n > self.total_max {
            return false;
        }
        queue.0.fetch_add(n, Ordering::Relaxed);
        self.total.fetch_add(n, Ordering::Relaxed);
        true
    }

    pub fn release(&self, queue: &QueueBytes, n: usize) {
        queue.0.fetch_sub(n, Ordering::Relaxed);
        self.total.fetch_sub(n, Ordering::Relaxed);
    }
}

impl QueueBytes {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// A connection's share of the budget: what it releases as its messages
/// are written or dropped.
#[derive(Clone)]
pub struct Share {
    pub budget: Arc<Budget>,
    pub queue: Arc<QueueBytes>,
}

impl Share {
    pub fn release(&self, n: usize) {
        self.budget.release(&self.queue, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_budgets_bound_reservations() {
        let budget = Budget::new(100, 150);
        let (a, b) = (QueueBytes::default(), QueueBytes::default());
        assert!(budget.try_reserve(&a, 100));
        assert!(!budget.try_reserve(&a, 1), "per-queue budget");
        assert!(budget.try_reserve(&b, 50));
        assert!(!budget.try_reserve(&b, 1), "server-wide budget");
        budget.release(&a, 60);
        assert!(budget.try_reserve(&b, 50));
        assert_eq!(budget.total.load(Ordering::Relaxed), 140);
    }

    #[test]
    fn a_dropped_receipt_settles_offline_once() {
        let (tx, rx) = oneshot::channel();
        drop(Receipt::operator(tx));
        assert_eq!(rx.blocking_recv(), Ok(Status::Offline));

        let (tx, rx) = oneshot::channel();
        Receipt::operator(tx).settle(Status::Delivered, &Metrics::new());
        assert_eq!(rx.blocking_recv(), Ok(Status::Delivered));
    }
}
