//! A message server as an Admin API node: it knows its own link and
//! drain state, and sends operator messages as chats (delivered here or
//! forwarded through the relay, or in mesh mode to the recipient's
//! server).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::admission::Admission;
use super::delivery::deliver_local;
use super::forwards::{Forwards, Waiter};
use super::identity::Identity;
use super::membership::StoreReach;
use super::mesh::Mesh;
use super::outbox::Receipt;
use super::sessions::Sessions;
use crate::admin::{AdminNode, ServerView};
use crate::metrics::Metrics;
use crate::pb::{self, Status};

pub struct ServerNode {
    pub me: Arc<Identity>,
    pub sessions: Arc<Sessions>,
    pub forwards: Arc<Forwards>,
    /// Mesh mode's router (None: relay mode).
    pub mesh: Option<Arc<Mesh>>,
    pub admission: Arc<Admission>,
    pub reach: Arc<StoreReach>,
    pub metrics: Arc<Metrics>,
    /// How long an operator message waits for its outcome.
    pub forward_timeout: std::time::Duration,
}

#[tonic::async_trait]
impl AdminNode for ServerNode {
    fn node_name(&self) -> String {
        self.me.id.clone()
    }

    fn server_views(&self) -> HashMap<String, ServerView> {
        let health = if self.admission.is_draining() || !self.reach.up() {
            "NOT_SERVING"
        } else {
            "SERVING"
        };
        let view = ServerView {
            linked_since_ms: self.forwards.linked_since_ms(),
            health: Some(health.into()),
            links: Some(self.forwards.links()),
        };
        [(self.me.id.clone(), view)].into()
    }

    async fn send_as_operator(&self, message: pb::ChatMessage) -> Status {
        let (tx, rx) = oneshot::channel();
        match deliver_local(&self.sessions, &message, move || Receipt::operator(tx)) {
            // Settled once written or dropped; a recipient that reads
            // slowly may keep the call waiting up to the forward timeout.
            Ok(()) => tokio::time::timeout(self.forward_timeout, rx)
                .await
                .map_or(Status::Unavailable, |r| r.unwrap_or(Status::Unavailable)),
            Err(Status::NotHere) => {
                let dest = match &self.mesh {
                    Some(mesh) => match mesh.route(&message.to).await {
                        Ok(server) => Some(server),
                        Err(status) => {
                            self.metrics.outcome(status);
                            return status;
                        }
                    },
                    None => None,
                };
                let (tx, rx) = oneshot::channel();
                let dest = dest.as_deref();
                self.forwards.forward(message, Waiter::Operator(tx), dest);
                // The expiry sweep guarantees an answer within the timeout.
                rx.await.unwrap_or(Status::Unavailable)
            }
            Err(status) => {
                self.metrics.outcome(status);
                status
            }
        }
    }

    fn new_message_id(&self) -> String {
        self.me.new_message_id()
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}
