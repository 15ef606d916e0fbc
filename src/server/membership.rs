//! This server's place in the cluster: joining (clearing what earlier
//! lives of its id left, subscribing to kick notices, registering), the
//! registry heartbeat, and leaving. The heartbeat also notices a lost
//! registry entry (store restarted, or wrongly declared dead) and then
//! registers again and re-asserts every live session.

use std::sync::Arc;

use anyhow::Context;

use super::admission::Admission;
use super::identity::Identity;
use super::roster::Roster;
use super::sessions::Sessions;
use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::presence::{KickStream, PresenceStore, ServerInfo};
use crate::shutdown::CancellationToken;

/// Clears what earlier lives of this server id left in the store,
/// subscribes to kick notices (before anyone can log in, so none is
/// missed) and registers this incarnation.
pub async fn join(
    store: &dyn PresenceStore,
    me: &Identity,
    grpc_addr: &str,
    client_addr: &str,
) -> anyhow::Result<(ServerInfo, KickStream)> {
    let stale = store
        .purge_server(&me.id)
        .await
        .context("clearing presence left by this server's previous runs")?;
    if stale > 0 {
        tracing::info!(server = %me.id, purged = stale, "purged entries of previous incarnations");
    }
    let info = ServerInfo {
        id: me.id.clone(),
        incarnation: me.incarnation.clone(),
        grpc_addr: grpc_addr.to_owned(),
        client_addr: client_addr.to_owned(),
        connections: 0,
        heartbeat_ms: now_ms(),
        started_ms: now_ms(),
        stats: Default::default(),
    };
    let kicks = store
        .kicks(&me.id)
        .await
        .context("subscribing to kick notices")?;
    store
        .register(&info)
        .await
        .context("registering in the server registry")?;
    Ok((info, kicks))
}

/// Removes this incarnation's presence entries and registry entry; if the
/// store is unreachable, the relay's purge does it later.
pub async fn leave(store: &dyn PresenceStore, me: &Identity) {
    match store.purge(&me.id, &me.incarnation).await {
        Ok(n) => tracing::info!(server = %me.id, purged = n, "removed own presence entries"),
        Err(e) => {
            tracing::warn!(server = %me.id, error = %e, "could not remove own presence entries; the relay will purge them")
        }
    }
    if let Err(e) = store.deregister(&me.id, &me.incarnation).await {
        tracing::warn!(server = %me.id, error = %e, "could not deregister");
    }
}

/// What the heartbeat reads and repairs.
pub struct Heartbeat {
    pub store: Arc<dyn PresenceStore>,
    pub me: Arc<Identity>,
    pub admission: Arc<Admission>,
    pub metrics: Arc<Metrics>,
    pub roster: Arc<Roster>,
    pub sessions: Arc<Sessions>,
    pub period: std::time::Duration,
}

impl Heartbeat {
    /// Refreshes the registry entry every period until `shutdown`.
    pub async fn run(self, mut info: ServerInfo, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let connections = self.admission.connections();
            let stats = self.metrics.server_stats();
            let beat = self
                .store
                .heartbeat(&self.me.id, &self.me.incarnation, connections, &stats);
            match beat.await {
                Ok(true) => {}
                Ok(false) => {
                    info.connections = connections;
                    info.stats = stats;
                    info.heartbeat_ms = now_ms();
                    self.rejoin(&info).await;
                }
                Err(e) => tracing::warn!(server = %self.me.id, error = %e, "heartbeat failed"),
            }
            self.roster.retry_stale().await;
        }
    }

    /// The registry entry vanished: register again, re-assert sessions.
    async fn rejoin(&self, info: &ServerInfo) {
        if let Err(e) = self.store.register(info).await {
            tracing::warn!(server = %self.me.id, error = %e, "re-registration failed");
            return;
        }
        let (reasserted, kicked) = self.roster.reconcile(&self.sessions).await;
        tracing::warn!(server = %self.me.id, reasserted, kicked, "registry entry was missing: re-registered and re-asserted sessions");
    }
}
