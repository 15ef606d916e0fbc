//! Mesh mode: the link this server dials to one peer (a registered server
//! with a higher id). `PeerLink::run` keeps it up: connect, say hello,
//! check that the welcome comes from the very server and incarnation the
//! registry named (an address reused by another process is not that
//! peer), serve the stream (`inbound`), and on loss reconnect with capped
//! exponential backoff until the peer set no longer wants it.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::inbound::{Inbound, LinkParts};
use super::peers::Peers;
use crate::grpc::Bearer;
use crate::link::{MAX_LINK_FRAME, batches, dial, queue};
use crate::pb::peer_client::PeerClient;
use crate::pb::{self, relay_frame, server_frame};
use crate::shutdown::CancellationToken;
use crate::watch::Linked;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const WELCOME_TIMEOUT: Duration = Duration::from_secs(5);

pub struct PeerLink {
    pub parts: Arc<LinkParts>,
    pub peers: Arc<Peers>,
    /// The peer as the registry names it.
    pub target: Linked,
}

impl PeerLink {
    /// Keeps the link up until `stop`, or until `unwanted` (the peer left
    /// the registry, or restarted) while it is down.
    pub async fn run(self, unwanted: CancellationToken, stop: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        let mut was_up = true; // log the first failure
        let me = &self.parts.hello.server_id;
        while !stop.is_cancelled() && !unwanted.is_cancelled() {
            match self.link_once(&stop).await {
                Ok(()) => {
                    backoff = BACKOFF_MIN;
                    was_up = true;
                }
                Err(e) => {
                    let peer = &self.target.id;
                    if was_up {
                        tracing::warn!(server = %me, %peer, error = %format_args!("{e:#}"), "cannot link to the peer; retrying with backoff");
                    } else {
                        tracing::debug!(server = %me, %peer, error = %format_args!("{e:#}"), "peer still unreachable");
                    }
                    was_up = false;
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = unwanted.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One life of the link.
    async fn link_once(&self, stop: &CancellationToken) -> anyhow::Result<()> {
        let parts = &self.parts;
        let target = &self.target;
        let channel = dial(&target.grpc_addr, parts.relay.tls.as_ref()).await?;
        let (tx, rx) = queue(parts.queue_bytes);
        let first = pb::ServerFrame {
            kind: Some(server_frame::Kind::Hello(parts.hello.clone())),
        };
        let rest = batches(rx).map(|b| pb::ServerFrame {
            kind: Some(server_frame::Kind::Batch(b)),
        });
        let mut request = tonic::Request::new(futures::stream::once(async { first }).chain(rest));
        if let Some(token) = &parts.relay.link_token {
            Bearer::attach(&mut request, token)?;
        }
        let mut inbound = PeerClient::new(channel)
            .max_decoding_message_size(MAX_LINK_FRAME)
            .link(request)
            .await?
            .into_inner();
        let welcome = tokio::time::timeout(WELCOME_TIMEOUT, inbound.message()).await;
        match welcome {
            Ok(Ok(Some(pb::RelayFrame {
                kind: Some(relay_frame::Kind::Welcome(w)),
            }))) if w.relay_id == target.id && w.incarnation == target.incarnation => {}
            Ok(Ok(Some(pb::RelayFrame {
                kind: Some(relay_frame::Kind::Welcome(w)),
            }))) => anyhow::bail!(
                "{} answers as {} ({}), not as the registered {} ({})",
                target.grpc_addr,
                w.relay_id,
                w.incarnation,
                target.id,
                target.incarnation
            ),
            _ => anyhow::bail!("the peer did not welcome the link"),
        }
        let (key, closed) = self.peers.up(target, tx.clone());
        let reader = Inbound {
            parts,
            tx: &tx,
            key,
            peer: Some(&target.id),
        };
        reader.read(&mut inbound, batch_of, stop, &closed).await;
        self.peers.down(&target.id, key);
        Ok(())
    }
}

fn batch_of(frame: pb::RelayFrame) -> Option<pb::Batch> {
    match frame.kind {
        Some(relay_frame::Kind::Batch(b)) => Some(b),
        _ => None,
    }
}
