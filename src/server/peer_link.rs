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

use tokio_util::task::TaskTracker;

use super::dial::{Ended, Target, keep_up, opening};
use super::inbound::{Inbound, LinkParts};
use super::peers::Peers;
use crate::link::{MAX_LINK_FRAME, dial};
use crate::pb::peer_client::PeerClient;
use crate::pb::{self, relay_frame};
use crate::presence::PresenceStore;
use crate::shutdown::{CancellationToken, Ticker};
use crate::watch::Linked;

/// How often the server registry is read for peers to dial: a server
/// that joins is linked by every other within about this, plus a dial.
pub const DISCOVERY_PERIOD: Duration = Duration::from_millis(250);

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
        let target = Target {
            server: &self.parts.hello.server_id,
            far: "peer",
            addr: &self.target.grpc_addr,
        };
        keep_up(|| self.link_once(&stop), target, unwanted, stop.clone()).await;
    }

    /// One life of the link.
    async fn link_once(&self, stop: &CancellationToken) -> anyhow::Result<Ended> {
        let parts = &self.parts;
        let target = &self.target;
        let channel = dial(&target.grpc_addr, parts.relay.tls.as_ref()).await?;
        let (tx, request) = opening(parts)?;
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
        Ok(Ended::Down)
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
        let mut ticker = Ticker::new(DISCOVERY_PERIOD);
        while ticker.tick(&stop).await {
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
