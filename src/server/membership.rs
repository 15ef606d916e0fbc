//! This server's place in the cluster: joining (clearing what earlier
//! lives of its id left, subscribing to kick notices, registering), the
//! registry heartbeat, and leaving. The heartbeat also notices a lost
//! registry entry (store restarted, or wrongly declared dead) and then
//! registers again and reconciles; it retracts what failed store calls
//! left, and reconciles after a failure and every `RECONCILE_EVERY` beats.
//! Its successes are what `StoreReach` records: readiness turns
//! NOT_SERVING once none came for `redis_down_after`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use anyhow::Context;

use super::admission::Admission;
use super::forwards::Forwards;
use super::identity::Identity;
use super::roster::Roster;
use super::sessions::Sessions;
use crate::clock::now_ms;
use crate::grpc;
use crate::metrics::Metrics;
use crate::presence::{KickStream, PresenceStore, ServerInfo};
use crate::shutdown::CancellationToken;

/// A reconcile runs at least every this many heartbeats, whatever
/// happened: presence equals the live sessions again within a few seconds
/// of a fault this server could not see (a purge racing its return, say).
const RECONCILE_EVERY: u64 = 5;

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
        ..Default::default()
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

/// Retires this incarnation: its registry entry and presence entries go;
/// if the store is unreachable, the relay's purge (or its sweep of
/// orphaned indexes) does it later.
pub async fn leave(store: &dyn PresenceStore, me: &Identity) {
    match store.retire(&me.id, &me.incarnation).await {
        Ok(retired) => {
            tracing::info!(server = %me.id, purged = retired.purged, "left the registry and removed own presence entries")
        }
        Err(e) => {
            tracing::warn!(server = %me.id, error = %e, "could not leave the registry; the relay will purge this server")
        }
    }
}

/// When a heartbeat last reached the presence store, and how long it
/// may be out of reach before this server says it is not ready.
pub struct StoreReach {
    last_ok_ms: AtomicI64,
    down_after: Duration,
}

impl StoreReach {
    /// Reached just now (the server joined through it).
    pub fn new(down_after: Duration) -> Self {
        Self {
            last_ok_ms: AtomicI64::new(now_ms()),
            down_after,
        }
    }

    fn reached(&self) {
        self.last_ok_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// False once no heartbeat reached the store for `down_after`.
    pub fn up(&self) -> bool {
        let since = now_ms().saturating_sub(self.last_ok_ms.load(Ordering::Relaxed));
        u128::try_from(since).unwrap_or(0) <= self.down_after.as_millis()
    }
}

/// Why this server is unready while the store is out of reach; the
/// drain holds its own reason, so the store coming back during a drain
/// leaves it NOT_SERVING.
const STORE_OUT_OF_REACH: &str = "presence store out of reach";

/// Keeps readiness (overall health) in step with `reach`, checked every
/// `period`, until `shutdown`.
pub async fn track_readiness(
    reach: Arc<StoreReach>,
    health: grpc::Health,
    period: Duration,
    shutdown: CancellationToken,
) {
    let mut ready = true;
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if reach.up() != ready {
            ready = !ready;
            health.unready(STORE_OUT_OF_REACH, !ready).await;
            if ready {
                tracing::info!("presence store reachable again: ready (SERVING)");
            } else {
                tracing::warn!(down_after = ?reach.down_after, "presence store out of reach: not ready (NOT_SERVING)");
            }
        }
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
    /// Whose links to relays are published with each beat.
    pub forwards: Arc<Forwards>,
    pub reach: Arc<StoreReach>,
    pub period: Duration,
}

impl Heartbeat {
    /// Refreshes the registry entry every period until `shutdown`.
    pub async fn run(self, mut info: ServerInfo, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut beats = 0u64;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let connections = self.admission.connections();
            let stats = self.metrics.server_stats();
            let links = self.forwards.links();
            let (id, inc) = (&self.me.id, &self.me.incarnation);
            let beat = self.store.heartbeat(id, inc, connections, &stats, &links);
            let beat = beat.await;
            if beat.is_ok() {
                self.reach.reached();
            }
            let rejoined = match beat {
                Ok(true) => false,
                Ok(false) => {
                    info.connections = connections;
                    info.stats = stats;
                    info.links = links;
                    info.heartbeat_ms = now_ms();
                    self.rejoin(&info).await
                }
                Err(e) => {
                    tracing::warn!(server = %self.me.id, error = %e, "heartbeat failed");
                    false
                }
            };
            self.roster.retract_owed().await;
            beats += 1;
            if !rejoined && (self.roster.dirty() || beats.is_multiple_of(RECONCILE_EVERY)) {
                let done = self.roster.reconcile(&self.sessions).await;
                if done.reasserted + done.kicked + done.removed > 0 {
                    tracing::info!(server = %self.me.id, ?done, "presence reconciled");
                }
            }
        }
    }

    /// The registry entry vanished: register again, reconcile. True if it
    /// re-registered.
    async fn rejoin(&self, info: &ServerInfo) -> bool {
        if let Err(e) = self.store.register(info).await {
            tracing::warn!(server = %self.me.id, error = %e, "re-registration failed");
            return false;
        }
        let done = self.roster.reconcile(&self.sessions).await;
        tracing::warn!(server = %self.me.id, ?done, "registry entry was missing: re-registered and reconciled sessions");
        true
    }
}
