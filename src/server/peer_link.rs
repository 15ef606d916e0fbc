//! Mesh mode: the links this server dials. `PeerSet` reads the server
//! registry every `DISCOVERY_PERIOD` and keeps one `PeerLink` to every
//! registered server with a higher id (a peer that restarted gets a new
//! one; one that left is not dialled again). `PeerLink::run` keeps one up: connect, say hello,
//! check that the welcome comes from the very server and incarnation the
//! registry named (an address reused by another process is not that
//! peer), serve the stream (`inbound`), and on loss reconnect with capped
//! exponential backoff until the peer set no longer wants it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::task::TaskTracker;

use super::inbound::{Inbound, LinkParts};
use super::peers::Peers;
use crate::grpc::Bearer;
use crate::link::{MAX_LINK_FRAME, batches, dial, queue};
use crate::pb::peer_client::PeerClient;
use crate::pb::{self, relay_frame, server_frame};
use crate::presence::PresenceStore;
use crate::shutdown::CancellationToken;
use crate::watch::Linked;

/// How often the server registry is read for peers to dial: a server
/// that joins is linked by every other within about this, plus a dial.
pub const DISCOVERY_PERIOD: Duration = Duration::from_millis(250);

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

/// Dials every registered server with a higher id than this one's.
pub struct PeerSet {
    pub parts: Arc<LinkParts>,
    pub peers: Arc<Peers>,
    pub store: Arc<dyn PresenceStore>,
}

impl PeerSet {
    /// Keeps a link to each wanted peer until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let tasks = TaskTracker::new();
        // peer id -> (the incarnation dialled, cancelled once unwanted)
        let mut dialled: HashMap<String, (String, CancellationToken)> = HashMap::new();
        let mut tick = tokio::time::interval(DISCOVERY_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let Some(wanted) = self.wanted().await else {
                continue;
            };
            dialled.retain(|id, (incarnation, unwanted)| {
                let keep = wanted
                    .iter()
                    .any(|w| &w.id == id && &w.incarnation == incarnation);
                if !keep {
                    unwanted.cancel();
                }
                keep
            });
            for target in wanted {
                if dialled.contains_key(&target.id) {
                    continue;
                }
                let unwanted = CancellationToken::new();
                dialled.insert(
                    target.id.clone(),
                    (target.incarnation.clone(), unwanted.clone()),
                );
                let link = PeerLink {
                    parts: self.parts.clone(),
                    peers: self.peers.clone(),
                    target,
                };
                tasks.spawn(link.run(unwanted, stop.clone()));
            }
        }
        tasks.close();
        tasks.wait().await;
    }

    /// The registered servers this one dials; None if the registry cannot
    /// be read now (the current links stay).
    async fn wanted(&self) -> Option<Vec<Linked>> {
        let me = &self.parts.hello.server_id;
        match self.store.servers().await {
            Ok(servers) => Some(
                servers
                    .into_iter()
                    .filter(|s| s.id.as_str() > me.as_str())
                    .map(|s| Linked {
                        id: s.id,
                        incarnation: s.incarnation,
                        grpc_addr: s.grpc_addr,
                    })
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(server = %me, error = %e, "cannot read the server registry; keeping the current peer links");
                None
            }
        }
    }
}
