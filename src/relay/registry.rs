//! This relay's entry in the relay registry, where servers that discover
//! relays find it (`--discover-relays`) and operators list relays: it is
//! announced every heartbeat and expires after three missed ones, so a
//! relay that died leaves by itself; it says `draining` once the relay
//! shuts down, and is withdrawn at exit.

use std::sync::Arc;
use std::time::Duration;

use super::identity::RelayIdentity;
use super::router::Router;
use crate::clock::now_ms;
use crate::presence::{PresenceStore, RelayInfo};
use crate::shutdown::CancellationToken;

/// Heartbeats an entry may miss before it expires.
const MISSES: u32 = 3;

pub struct Registration {
    pub store: Arc<dyn PresenceStore>,
    pub router: Arc<Router>,
    pub me: RelayIdentity,
    pub grpc_addr: String,
    pub period: Duration,
    /// Cancelled when the relay starts to drain.
    pub draining: CancellationToken,
}

impl Registration {
    /// Announces the entry every period until `stop`, then withdraws it.
    pub async fn run(self, stop: CancellationToken) {
        let started_ms = now_ms();
        let mut tick = tokio::time::interval(self.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_draining = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
                // Say so at once: servers stop sending new forwards here.
                _ = self.draining.cancelled(), if !was_draining => {}
            }
            was_draining = self.draining.is_cancelled();
            let info = RelayInfo {
                id: self.me.id.clone(),
                incarnation: self.me.incarnation.clone(),
                grpc_addr: self.grpc_addr.clone(),
                draining: was_draining,
                links: self.router.links.len() as u32,
                started_ms,
                heartbeat_ms: now_ms(),
            };
            if let Err(e) = self.store.announce_relay(&info, self.period * MISSES).await {
                tracing::warn!(relay = %self.me.id, error = %e, "cannot announce this relay in the registry");
            }
        }
        if let Err(e) = self
            .store
            .withdraw_relay(&self.me.id, &self.me.incarnation)
            .await
        {
            tracing::warn!(relay = %self.me.id, error = %e, "cannot withdraw this relay from the registry (it expires by itself)");
        }
    }
}
