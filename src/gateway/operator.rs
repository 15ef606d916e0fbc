//! A message server as an Admin API node: it knows its own link, and
//! sends operator messages like chats (locally or through the relay).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use super::Gateway;
use super::commands::message_line;
use super::pending::Waiter;
use super::sessions::Delivery;
use crate::admin::{AdminNode, ServerView};
use crate::metrics::Metrics;
use crate::pb::{self, Status};

/// The Admin API's view of one message server.
pub struct GatewayNode(pub Arc<Gateway>);

#[tonic::async_trait]
impl AdminNode for GatewayNode {
    fn node_name(&self) -> String {
        self.0.id.clone()
    }

    fn server_views(&self) -> HashMap<String, ServerView> {
        let view = ServerView {
            linked_since_ms: self.0.link.linked_since_ms(),
            health: Some(
                if self.0.draining.load(Ordering::Relaxed) {
                    "NOT_SERVING"
                } else {
                    "SERVING"
                }
                .into(),
            ),
        };
        [(self.0.id.clone(), view)].into()
    }

    async fn send_as_operator(&self, message: pb::ChatMessage) -> Status {
        let gw = &self.0;
        let status = match gw.sessions.deliver(&message.to, || message_line(&message)) {
            Delivery::Delivered => Status::Delivered,
            Delivery::Busy => Status::Busy,
            Delivery::NotHere => {
                let (tx, rx) = oneshot::channel();
                gw.forward(message, Waiter::Operator(tx));
                // The pending sweep guarantees an answer within the timeout.
                return rx.await.unwrap_or(Status::Unavailable);
            }
        };
        gw.metrics.outcome(status);
        status
    }

    fn new_message_id(&self) -> String {
        self.0.new_message_id()
    }

    fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }
}
