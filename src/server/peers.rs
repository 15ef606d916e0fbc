//! Mesh mode's links to the other servers: one long-lived stream per pair
//! of servers, dialled by the server with the lower id (`peer_link`) and
//! answered by the other (`peer_service`). `Peers` is the table of live peer links,
//! shared by both sides: the newest link of a peer replaces an older one
//! (a restart, or a link the far end gave up on), whose chats in flight
//! go out once more on the new one (the destination drops copies).
//!
//! It is also what the health watch (`crate::watch`) sees of this server:
//! a peer declared dead loses its link and its routes at once. A peer
//! that leaves the registry is not dialled again; its link stays until it
//! ends (a server that leaves gracefully ends it itself), so a registry
//! entry lost with Redis does not cut a live link.

use std::collections::HashMap;
use std::sync::Arc;

use super::forwards::{Forwards, LinkKey};
use super::mesh::Mesh;
use crate::link::LinkSender;
use crate::shutdown::CancellationToken;
use crate::sync::Mutex;
use crate::watch::{Linked, Watched};

struct PeerEntry {
    incarnation: String,
    grpc_addr: String,
    key: LinkKey,
    /// Cancelled to end this link from here (replaced, or its server died).
    closed: CancellationToken,
}

/// The live peer links, by peer server id.
pub struct Peers {
    links: Mutex<HashMap<String, PeerEntry>>,
    forwards: Arc<Forwards>,
    mesh: Arc<Mesh>,
}

impl Peers {
    pub fn new(forwards: Arc<Forwards>, mesh: Arc<Mesh>) -> Self {
        Self {
            links: Mutex::default(),
            forwards,
            mesh,
        }
    }

    /// A link to `peer` is up, replacing an older one of the same peer:
    /// its key and the token that ends it from here.
    pub fn up(&self, peer: &Linked, tx: LinkSender) -> (LinkKey, CancellationToken) {
        let mut links = self.links.lock();
        let (key, replaced) = self.forwards.link_replacing(&peer.id, tx);
        let closed = CancellationToken::new();
        let entry = PeerEntry {
            incarnation: peer.incarnation.clone(),
            grpc_addr: peer.grpc_addr.clone(),
            key,
            closed: closed.clone(),
        };
        if let Some(old) = links.insert(peer.id.clone(), entry) {
            old.closed.cancel();
        }
        drop(links);
        if let Some(failover) = replaced {
            tracing::info!(peer = %peer.id, resent = failover.resent, unavailable = failover.unavailable, "peer link replaced by a newer one");
        }
        tracing::info!(peer = %peer.id, incarnation = %peer.incarnation, "peer link up");
        (key, closed)
    }

    /// Link `key` of `peer` ended: its chats in flight get `unavailable`
    /// (there is no other way to that server).
    pub fn down(&self, peer: &str, key: LinkKey) {
        {
            let mut links = self.links.lock();
            if links.get(peer).is_some_and(|e| e.key == key) {
                links.remove(peer);
            }
        }
        let failover = self.forwards.link_down(key);
        tracing::warn!(%peer, unavailable = failover.unavailable, "peer link down");
    }
}

impl Watched for Peers {
    fn linked(&self) -> Vec<Linked> {
        self.links
            .lock()
            .iter()
            .map(|(id, e)| Linked {
                id: id.clone(),
                incarnation: e.incarnation.clone(),
                grpc_addr: e.grpc_addr.clone(),
            })
            .collect()
    }

    fn forget(&self, id: &str, incarnation: &str) -> usize {
        self.mesh.forget_server(id);
        let dead = {
            let mut links = self.links.lock();
            if links.get(id).is_some_and(|e| e.incarnation == incarnation) {
                links.remove(id)
            } else {
                None
            }
        };
        let Some(dead) = dead else {
            return 0;
        };
        dead.closed.cancel();
        self.forwards.link_down(dead.key).unavailable
    }
}
