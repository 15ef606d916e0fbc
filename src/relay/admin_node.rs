//! The relay as an Admin API node: it knows every link and the health it
//! has seen, and sends operator messages through its own router.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::identity::RelayIdentity;
use super::router::Router;
use crate::admin::{AdminNode, ServerView};
use crate::metrics::Metrics;
use crate::pb::{self, Status};
use crate::watch::HealthBoard;

/// How long an operator message may wait for its outcome.
const OPERATOR_TIMEOUT: Duration = Duration::from_secs(5);

pub struct RelayNode {
    router: Arc<Router>,
    board: Arc<HealthBoard>,
    me: RelayIdentity,
    next_message: AtomicU64,
}

impl RelayNode {
    pub fn new(router: Arc<Router>, board: Arc<HealthBoard>, me: RelayIdentity) -> Self {
        Self {
            router,
            board,
            me,
            next_message: AtomicU64::new(1),
        }
    }
}

#[tonic::async_trait]
impl AdminNode for RelayNode {
    fn node_name(&self) -> String {
        self.me.id.clone()
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
                        health: Some(health),
                        ..Default::default()
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
        // The incarnation, random per start, keeps ids unique across
        // relays and restarts.
        format!("relay.{}.{seq}", self.me.incarnation)
    }

    fn metrics(&self) -> &Metrics {
        &self.router.metrics
    }
}
