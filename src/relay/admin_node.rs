//! The relay as an Admin API node: it knows every link and the health it
//! has seen, and sends operator messages through its own router.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::router::Router;
use super::watcher::HealthBoard;
use crate::admin::{AdminNode, ServerView};
use crate::metrics::Metrics;
use crate::pb::{self, Status};

/// How long an operator message may wait for its outcome.
const OPERATOR_TIMEOUT: Duration = Duration::from_secs(5);

pub struct RelayNode {
    router: Arc<Router>,
    board: Arc<HealthBoard>,
    /// Random per start, so message ids stay unique across restarts.
    incarnation: String,
    next_message: AtomicU64,
}

impl RelayNode {
    pub fn new(router: Arc<Router>, board: Arc<HealthBoard>) -> Self {
        Self {
            router,
            board,
            incarnation: crate::clock::new_incarnation(),
            next_message: AtomicU64::new(1),
        }
    }
}

#[tonic::async_trait]
impl AdminNode for RelayNode {
    fn node_name(&self) -> String {
        "relay".into()
    }

    fn server_views(&self) -> HashMap<String, ServerView> {
        let mut views: HashMap<String, ServerView> = self
            .board
            .snapshot()
            .into_iter()
            .map(|(id, health)| {
                (
                    id,
                    ServerView {
                        linked_since_ms: None,
                        health: Some(health),
                    },
                )
            })
            .collect();
        for link in self.router.links.all() {
            views
                .entry(link.server_id.clone())
                .or_default()
                .linked_since_ms = Some(link.linked_at_ms);
        }
        views
    }

    async fn send_as_operator(&self, message: pb::ChatMessage) -> Status {
        self.router.send_from_relay(message, OPERATOR_TIMEOUT).await
    }

    fn new_message_id(&self) -> String {
        let seq = self.next_message.fetch_add(1, Ordering::Relaxed);
        format!("relay.{}.{seq}", self.incarnation)
    }

    fn metrics(&self) -> &Metrics {
        &self.router.metrics
    }
}
