//! The shape of a link, shared by both of its ends: one long-lived
//! bidirectional gRPC stream whose frames carry batches of envelopes, the
//! outbound queue that feeds it (bounded in bytes), the HTTP/2 settings
//! that keep it fast and notice a dead peer, and how the dialing side
//! opens its channel, and who may speak for a server on it. Names no
//! tier.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tonic::transport::{Channel, ClientTlsConfig};

use crate::pb::{Batch, Envelope, Forward, Outcome, envelope::Kind};

/// HTTP/2 keepalive: a silently dead peer is noticed within seconds.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 flow-control windows of the long-lived links: the 64 KiB
/// default would make a busy link wait for window updates every few
/// hundred messages.
pub const STREAM_WINDOW: u32 = 8 << 20;
pub const CONNECTION_WINDOW: u32 = 16 << 20;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Most envelopes sent in one stream frame.
const MAX_ENVELOPES: usize = 512;
/// A batch stops growing past this many encoded bytes.
const MAX_BATCH_BYTES: usize = 1 << 20;
/// Largest link frame either side accepts: one batch plus one envelope of
/// the largest line a server accepts (`--max-line-bytes` stays below it).
pub const MAX_LINK_FRAME: usize = 64 << 20;

/// The server ids the caller's certificate names; empty without a client
/// certificate or without a server identity in it.
pub fn vouched_ids<T>(request: &tonic::Request<T>) -> Result<Vec<String>, tonic::Status> {
    let Some(chain) = request.peer_certs() else {
        return Ok(Vec::new());
    };
    crate::tls::server_ids(&chain).map_err(|e| tonic::Status::permission_denied(e.to_string()))
}

/// Refuses a hello for another server than the one the caller's
/// certificate names, if it names one: nobody speaks for another server.
pub fn check_identity(vouched: &[String], server_id: &str) -> Result<(), tonic::Status> {
    if vouched.is_empty() || vouched.iter().any(|id| id == server_id) {
        return Ok(());
    }
    tracing::warn!(hello = %server_id, certificate = ?vouched, "link refused: its certificate names another server");
    Err(tonic::Status::permission_denied(format!(
        "this certificate identifies server {}; it cannot link as {server_id:?}",
        vouched.join(", ")
    )))
}

/// How long a link's caller may take to send its `hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the first frame of a link a server opened: its `hello`, with a
/// valid server id and an incarnation.
pub async fn read_hello(
    inbound: &mut tonic::Streaming<crate::pb::ServerFrame>,
) -> Result<crate::pb::Hello, tonic::Status> {
    use crate::pb::{ServerFrame, server_frame};
    let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("no hello within 5 s"))??;
    let Some(ServerFrame {
        kind: Some(server_frame::Kind::Hello(hello)),
    }) = first
    else {
        return Err(tonic::Status::invalid_argument(
            "the first frame of a link must be hello",
        ));
    };
    if !crate::names::is_valid_name(&hello.server_id) || hello.incarnation.is_empty() {
        return Err(tonic::Status::invalid_argument(
            "hello needs a valid server_id and an incarnation",
        ));
    }
    Ok(hello)
}

/// Opens the channel of a link to `url`, with the link's HTTP/2 settings.
pub async fn dial(url: &str, tls: Option<&ClientTlsConfig>) -> anyhow::Result<Channel> {
    Ok(crate::tls::endpoint(url, tls)?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .tcp_nodelay(true)
        .connect()
        .await?)
}

/// One envelope waiting in a link's outbound queue.
struct Queued {
    kind: Kind,
    /// Its encoded size, counted against the queue's budget.
    bytes: usize,
    /// The sender's in-flight slot, held until the envelope has left the
    /// queue (and, by the sender, until its outcome): a chat that timed
    /// out while queued still holds its memory, so it still holds a slot.
    _slot: Option<Arc<OwnedSemaphorePermit>>,
}

/// The sending side of a link's outbound queue. Forwards are refused once
/// the queue holds its budget of bytes (the caller answers `unavailable`),
/// so a slow but alive peer cannot grow this process without limit.
/// Outcomes are always queued: they are small, and there are never more
/// of them than forwards in flight the other way.
#[derive(Clone)]
pub struct LinkSender {
    tx: mpsc::UnboundedSender<Queued>,
    queued: Arc<AtomicUsize>,
    budget: usize,
}

/// The receiving side: turned into the stream of batches by `batches`.
pub struct LinkReceiver {
    rx: mpsc::UnboundedReceiver<Queued>,
    queued: Arc<AtomicUsize>,
}

/// A link's outbound queue holding at most `budget` bytes of forwards.
pub fn queue(budget: usize) -> (LinkSender, LinkReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let sender = LinkSender {
        tx,
        queued: queued.clone(),
        budget,
    };
    (sender, LinkReceiver { rx, queued })
}

/// Why a forward was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue holds its budget of bytes.
    Full,
    /// The link is gone.
    Closed,
}

impl LinkSender {
    /// Queues a forward, holding `slot` until it has left the queue; a
    /// refusal hands the forward back.
    #[allow(
        clippy::result_large_err,
        reason = "handing it back saves a copy per message"
    )]
    pub fn try_forward(
        &self,
        forward: Forward,
        slot: Option<Arc<OwnedSemaphorePermit>>,
    ) -> Result<(), (Refused, Forward)> {
        let bytes = forward.encoded_len();
        if self.queued.load(Ordering::Relaxed) + bytes > self.budget {
            return Err((Refused::Full, forward));
        }
        match self.push(Kind::Forward(forward), bytes, slot) {
            Ok(()) => Ok(()),
            Err(Kind::Forward(f)) => Err((Refused::Closed, f)),
            // `push` gives back what it was given.
            Err(Kind::Outcome(_)) => Err((Refused::Closed, Forward::default())),
        }
    }

    /// Queues an outcome; false if the link is gone.
    pub fn send_outcome(&self, outcome: Outcome) -> bool {
        let bytes = outcome.encoded_len();
        self.push(Kind::Outcome(outcome), bytes, None).is_ok()
    }

    /// Queues `kind`; gives it back if the link is gone.
    #[allow(
        clippy::result_large_err,
        reason = "handing it back saves a copy per message"
    )]
    fn push(
        &self,
        kind: Kind,
        bytes: usize,
        slot: Option<Arc<OwnedSemaphorePermit>>,
    ) -> Result<(), Kind> {
        self.queued.fetch_add(bytes, Ordering::Relaxed);
        let queued = Queued {
            kind,
            bytes,
            _slot: slot,
        };
        self.tx.send(queued).map_err(|e| {
            self.queued.fetch_sub(bytes, Ordering::Relaxed);
            e.0.kind
        })
    }
}

/// Turns a link's queue into a stream of batches: each batch takes
/// whatever is queued when the stream is polled (up to 512 envelopes or
/// 1 MiB), so a busy link sends few large frames and an idle one sends
/// each envelope at once. An envelope leaves the queue's budget (and frees
/// its slot) as it goes into a batch.
pub fn batches(receiver: LinkReceiver) -> impl futures::Stream<Item = Batch> {
    futures::stream::unfold(receiver, |mut r| async move {
        let first = r.rx.recv().await?;
        let mut bytes = 0;
        let mut envelopes = Vec::new();
        let mut next = Some(first);
        while let Some(q) = next.take() {
            r.queued.fetch_sub(q.bytes, Ordering::Relaxed);
            bytes += q.bytes;
            envelopes.push(Envelope { kind: Some(q.kind) });
            if envelopes.len() < MAX_ENVELOPES && bytes < MAX_BATCH_BYTES {
                next = r.rx.try_recv().ok();
            }
        }
        Some((Batch { envelopes }, r))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::sync::Semaphore;

    fn forward(content: &str) -> Forward {
        Forward {
            message: Some(crate::pb::ChatMessage {
                content: content.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn forwards_beyond_the_budget_are_refused_until_batches_drain() {
        let (tx, rx) = queue(250);
        let big = "x".repeat(100);
        assert!(tx.try_forward(forward(&big), None).is_ok());
        assert!(tx.try_forward(forward(&big), None).is_ok());
        let refused = tx
            .try_forward(forward(&big), None)
            .map_err(|(why, f)| (why, f.message.unwrap().content.len()));
        assert_eq!(
            refused,
            Err((Refused::Full, 100)),
            "refused, and handed back"
        );
        assert!(tx.send_outcome(Outcome::default()), "outcomes always queue");
        let mut batches = Box::pin(batches(rx));
        let batch = batches.next().await.unwrap();
        assert_eq!(batch.envelopes.len(), 3);
        assert!(tx.try_forward(forward(&big), None).is_ok(), "drained");
        drop(batches);
        let refused = tx.try_forward(forward(&big), None).map_err(|(why, _)| why);
        assert_eq!(refused, Err(Refused::Closed));
    }

    #[tokio::test]
    async fn a_slot_is_held_until_the_envelope_leaves_the_queue() {
        let slots = Arc::new(Semaphore::new(1));
        let (tx, rx) = queue(1 << 20);
        let slot = Arc::new(slots.clone().try_acquire_owned().unwrap());
        assert!(tx.try_forward(forward("hi"), Some(slot.clone())).is_ok());
        // The sender gives up its share (say, the chat timed out) ...
        drop(slot);
        assert_eq!(slots.available_permits(), 0, "still queued: slot held");
        // ... and the slot comes back once the envelope is sent on.
        let mut batches = Box::pin(batches(rx));
        batches.next().await.unwrap();
        assert_eq!(slots.available_permits(), 1);
    }
}
