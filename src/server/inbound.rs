//! What arrives on a link, whichever kind: a relay link, or (mesh mode) a
//! peer link, dialled or answered. Forwards are checked against `Dedupe`
//! (a copy re-sent through another relay is not delivered twice) and
//! delivered to local sessions, their outcomes going back on the link they
//! came by; outcomes answer this server's own chats.
//!
//! On a peer link the far end is exactly one server, so it may only send
//! its own chats (ids it mints) and only answer chats sent to it: the
//! checks the relay makes for every link, made here by the destination.

use std::sync::Arc;

use super::dedupe::{Arrival, Dedupe};
use super::delivery::deliver_local;
use super::forwards::{Forwards, LinkKey};
use super::mesh::Mesh;
use super::options::RelayEndpoint;
use super::outbox::Receipt;
use super::sessions::Sessions;
use crate::link::LinkSender;
use crate::metrics::Metrics;
use crate::pb::envelope::Kind;
use crate::pb::{self, Status};
use crate::shutdown::CancellationToken;

/// What every link of a server shares.
pub struct LinkParts {
    /// Where the relays are (relay mode), and the TLS and link token of
    /// every link this server dials.
    pub relay: RelayEndpoint,
    /// Bytes of forwards a link's outbound queue may hold.
    pub queue_bytes: usize,
    pub hello: pb::Hello,
    pub sessions: Arc<Sessions>,
    pub forwards: Arc<Forwards>,
    pub dedupe: Arc<Dedupe>,
    pub metrics: Arc<Metrics>,
    /// Mesh mode's router (None: relay mode).
    pub mesh: Option<Arc<Mesh>>,
}

/// One live link's inbound side.
pub struct Inbound<'a> {
    pub parts: &'a LinkParts,
    pub tx: &'a LinkSender,
    pub key: LinkKey,
    /// Mesh mode: the peer server at the far end.
    pub peer: Option<&'a str>,
}

impl Inbound<'_> {
    /// Handles a peer link's frames until its stream ends, `stop` or
    /// `closed`; `batch_of` takes the batch out of a frame.
    pub async fn read<F>(
        &self,
        stream: &mut tonic::Streaming<F>,
        batch_of: fn(F) -> Option<pb::Batch>,
        stop: &CancellationToken,
        closed: &CancellationToken,
    ) {
        loop {
            let frame = tokio::select! {
                _ = stop.cancelled() => return,
                _ = closed.cancelled() => return,
                f = stream.message() => f,
            };
            match frame {
                Ok(Some(frame)) => {
                    if let Some(batch) = batch_of(frame) {
                        self.batch(batch);
                    }
                }
                Ok(None) => return,
                Err(status) => {
                    tracing::debug!(peer = ?self.peer, %status, "link stream error");
                    return;
                }
            }
        }
    }

    pub fn batch(&self, batch: pb::Batch) {
        for envelope in batch.envelopes {
            match envelope.kind {
                Some(Kind::Forward(forward)) => self.forward(forward),
                Some(Kind::Outcome(outcome)) => self.outcome(outcome),
                None => {}
            }
        }
    }

    fn forward(&self, mut forward: pb::Forward) {
        if let Some(peer) = self.peer {
            // Only its own chats: no peer takes over another's outcomes.
            let own = forward.message.as_ref().is_some_and(|m| {
                m.id.strip_prefix(peer)
                    .is_some_and(|rest| rest.starts_with('.'))
            });
            if !own {
                self.parts.metrics.dropped_forwards.inc();
                tracing::debug!(%peer, "forward without an id of its server: dropped");
                return;
            }
            forward.origin_server = peer.to_owned();
        }
        if let Some(answer) = self.deliver(forward) {
            self.tx.send_outcome(answer);
        }
    }

    fn outcome(&self, outcome: pb::Outcome) {
        let forwards = &self.parts.forwards;
        let status = Status::try_from(outcome.status).unwrap_or(Status::Unavailable);
        let Some(mesh) = self.parts.mesh.as_ref().filter(|_| self.peer.is_some()) else {
            return match (status, outcome.returned) {
                (Status::NoLink, Some(forward)) => {
                    forwards.redirect(&outcome.message_id, *forward, self.key)
                }
                _ => forwards.resolve(&outcome.message_id, status),
            };
        };
        let id = &outcome.message_id;
        let returned = outcome
            .returned
            .filter(|f| f.message.as_ref().is_some_and(|m| &m.id == id));
        match (status, returned) {
            (Status::NotHere, Some(forward)) => mesh.not_here(*forward, self.key),
            (Status::NotHere, None) => forwards.resolve_from(id, Status::Offline, self.key),
            (Status::NoLink, _) => forwards.resolve_from(id, Status::Unavailable, self.key),
            (status, _) => forwards.resolve_from(id, status, self.key),
        }
    }

    /// Queues a forwarded message for a local session: its outcome goes
    /// back once it is written (or dropped). Returns the outcome to send
    /// at once: a refusal (a NOT_HERE outcome carries the message back
    /// for re-routing), or a copy's answer.
    fn deliver(&self, forward: pb::Forward) -> Option<pb::Outcome> {
        let parts = self.parts;
        let Some(message) = &forward.message else {
            return Some(outcome(
                String::new(),
                forward.origin_server,
                Status::Unavailable,
            ));
        };
        match parts.dedupe.arrive(&message.id, self.tx) {
            Arrival::Fresh => {}
            Arrival::Waiting => {
                parts.metrics.duplicates_dropped.inc();
                return None;
            }
            Arrival::Settled(status) => {
                parts.metrics.duplicates_dropped.inc();
                return Some(outcome(message.id.clone(), forward.origin_server, status));
            }
        }
        let receipt = || {
            Receipt::remote(
                self.tx.clone(),
                message.id.clone(),
                forward.origin_server.clone(),
                parts.dedupe.clone(),
            )
        };
        let status = deliver_local(&parts.sessions, message, receipt).err()?;
        parts.dedupe.refused(&message.id);
        let mut result = outcome(message.id.clone(), forward.origin_server.clone(), status);
        if status == Status::NotHere {
            result.returned = Some(Box::new(forward));
        }
        Some(result)
    }
}

fn outcome(message_id: String, origin_server: String, status: Status) -> pb::Outcome {
    pb::Outcome {
        message_id,
        origin_server,
        status: status as i32,
        returned: None,
    }
}
