//! The message server's one long-lived bidirectional stream to the relay.
//!
//! `RelayLink::run` keeps the link up: connect, say hello, serve inbound
//! envelopes, and on loss answer every pending forward with `unavailable`
//! (`Forwards::link_down`) and reconnect with capped exponential backoff.
//! Local users are never affected by the link.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::delivery::deliver_local;
use super::forwards::Forwards;
use super::options::RelayEndpoint;
use super::outbox::Receipt;
use super::sessions::Sessions;
use crate::grpc::Bearer;
use crate::link::{LinkSender, MAX_LINK_FRAME, batches, dial, queue};
use crate::pb::envelope::Kind;
use crate::pb::relay_client::RelayClient;
use crate::pb::{self, Status, server_frame};
use crate::shutdown::CancellationToken;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What the link needs: where the relay is, who we are, and the two
/// things envelopes reach: local sessions and waiting forwards.
pub struct RelayLink {
    pub relay: RelayEndpoint,
    /// Bytes of forwards the link's outbound queue may hold.
    pub queue_bytes: usize,
    pub hello: pb::Hello,
    pub sessions: Arc<Sessions>,
    pub forwards: Arc<Forwards>,
}

impl RelayLink {
    /// Keeps the link up until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        let mut was_up = true; // log the first failure
        let id = &self.hello.server_id;
        while !shutdown.is_cancelled() {
            match self.link_once(&shutdown).await {
                Ok(()) => {
                    backoff = BACKOFF_MIN;
                    was_up = true;
                    let failed = self.forwards.link_down();
                    tracing::warn!(server = %id, unavailable = failed, "relay link down; reconnecting");
                }
                Err(e) => {
                    if was_up {
                        tracing::warn!(server = %id, relay = %self.relay.url, error = %format_args!("{e:#}"), "cannot reach the relay; retrying with backoff");
                    } else {
                        tracing::debug!(server = %id, error = %format_args!("{e:#}"), "relay still unreachable");
                    }
                    was_up = false;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        self.forwards.link_down();
    }

    /// One life of the link. Ok(()) if it was established and later ended.
    async fn link_once(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let channel = dial(&self.relay.url, self.relay.tls.as_ref()).await?;
        let (tx, rx) = queue(self.queue_bytes);
        let first = pb::ServerFrame {
            kind: Some(server_frame::Kind::Hello(self.hello.clone())),
        };
        let rest = batches(rx).map(|b| pb::ServerFrame {
            kind: Some(server_frame::Kind::Batch(b)),
        });
        let mut request = tonic::Request::new(futures::stream::once(async { first }).chain(rest));
        if let Some(token) = &self.relay.link_token {
            Bearer::attach(&mut request, token)?;
        }
        let mut inbound = RelayClient::new(channel)
            .max_decoding_message_size(MAX_LINK_FRAME)
            .link(request)
            .await
            .map_err(refusal)?
            .into_inner();
        self.forwards.link_up(tx.clone());
        tracing::info!(server = %self.hello.server_id, relay = %self.relay.url, "relay link up");
        loop {
            let frame = tokio::select! {
                _ = shutdown.cancelled() => break,
                f = inbound.message() => f,
            };
            match frame {
                Ok(Some(frame)) => {
                    for envelope in frame.batch.into_iter().flat_map(|b| b.envelopes) {
                        self.on_envelope(&tx, envelope.kind);
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    tracing::debug!(server = %self.hello.server_id, %status, "relay stream error");
                    break;
                }
            }
        }
        Ok(())
    }

    fn on_envelope(&self, tx: &LinkSender, kind: Option<Kind>) {
        match kind {
            Some(Kind::Forward(forward)) => {
                if let Some(refused) = self.deliver(tx, forward) {
                    tx.send_outcome(refused);
                }
            }
            Some(Kind::Outcome(outcome)) => {
                let status = Status::try_from(outcome.status).unwrap_or(Status::Unavailable);
                self.forwards.resolve(&outcome.message_id, status);
            }
            None => {}
        }
    }

    /// Queues a message forwarded by the relay for a local session: its
    /// outcome goes back on the link once it is written (or dropped).
    /// Returns the outcome of a refusal at once; a NOT_HERE outcome
    /// carries the message back for re-routing.
    fn deliver(&self, tx: &LinkSender, forward: pb::Forward) -> Option<pb::Outcome> {
        let Some(message) = &forward.message else {
            return Some(outcome(
                String::new(),
                forward.origin_server,
                Status::Unavailable,
            ));
        };
        let receipt = || {
            Receipt::remote(
                tx.clone(),
                message.id.clone(),
                forward.origin_server.clone(),
            )
        };
        let status = deliver_local(&self.sessions, message, receipt).err()?;
        let mut result = outcome(message.id.clone(), forward.origin_server.clone(), status);
        if status == Status::NotHere {
            result.returned = Some(forward);
        }
        Some(result)
    }
}

/// Names the likely cause when the relay refuses the link itself.
fn refusal(status: tonic::Status) -> anyhow::Error {
    let why = match status.code() {
        tonic::Code::Unauthenticated => "the relay refused the link token (--link-token)",
        tonic::Code::PermissionDenied => "the relay refused this server's certificate identity",
        _ => return status.into(),
    };
    anyhow::anyhow!("{why}: {}", status.message())
}

fn outcome(message_id: String, origin_server: String, status: Status) -> pb::Outcome {
    pb::Outcome {
        message_id,
        origin_server,
        status: status as i32,
        returned: None,
    }
}
