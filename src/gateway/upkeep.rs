//! A message server's background duties:
//! - `heartbeat`: refresh the registry entry; if it vanished (store
//!   restarted, or the relay wrongly declared us dead), register again and
//!   re-assert every live session so nobody stays invisible;
//! - `kicks`: apply kick notices from the store (newest-wins across
//!   servers); after a broken subscription, reconcile sessions, since
//!   notices may have been missed;
//! - `expire_forwards`: answer `unavailable` to forwards past their timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::Gateway;
use std::sync::Mutex;

use crate::presence::{KickCause, KickStream, Presence, Reassert, ServerInfo, now_ms};
use crate::protocol::KickReason;
use crate::shutdown::CancellationToken;

const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(500);
const EXPIRY_SWEEP: Duration = Duration::from_millis(250);

pub async fn heartbeat(gw: Arc<Gateway>, mut info: ServerInfo, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(gw.limits.heartbeat());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let connections = gw.connections();
        let stats = gw.metrics.server_stats();
        let beat = gw
            .store
            .heartbeat(&gw.id, &gw.incarnation, connections, &stats);
        match beat.await {
            Ok(true) => {}
            Ok(false) => {
                info.connections = connections;
                info.stats = stats;
                info.heartbeat_ms = now_ms();
                if let Err(e) = gw.store.register(&info).await {
                    tracing::warn!(server = %gw.id, error = %e, "re-registration failed");
                    continue;
                }
                let (reasserted, kicked) = reconcile(&gw).await;
                tracing::warn!(server = %gw.id, reasserted, kicked, "registry entry was missing: re-registered and re-asserted sessions");
            }
            Err(e) => tracing::warn!(server = %gw.id, error = %e, "heartbeat failed"),
        }
        gw.stale.retry(&gw.store).await;
    }
}

/// Applies kick notices from `first` (subscribed before the server
/// accepted anyone, so no notice can be missed at start) and from every
/// re-subscription after it, reconciling sessions after each gap.
pub async fn kicks(gw: Arc<Gateway>, first: KickStream, shutdown: CancellationToken) {
    let mut stream = Some(first);
    loop {
        if let Some(s) = stream.take() {
            apply_kicks(&gw, s, &shutdown).await;
            if shutdown.is_cancelled() {
                return;
            }
            tracing::warn!(server = %gw.id, "kick subscription lost; resubscribing");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RESUBSCRIBE_DELAY) => {}
        }
        match gw.store.kicks(&gw.id).await {
            Ok(s) => {
                let (reasserted, kicked) = reconcile(&gw).await;
                tracing::info!(server = %gw.id, reasserted, kicked, "kick subscription restored; sessions reconciled");
                stream = Some(s);
            }
            Err(e) => {
                tracing::warn!(server = %gw.id, error = %e, "cannot subscribe to kick notices")
            }
        }
    }
}

async fn apply_kicks(gw: &Gateway, mut stream: KickStream, shutdown: &CancellationToken) {
    loop {
        let kick = tokio::select! {
            _ = shutdown.cancelled() => return,
            k = stream.next() => k,
        };
        let Some(k) = kick else { return };
        if k.incarnation != gw.incarnation {
            continue;
        }
        let reason = match k.cause {
            KickCause::Displaced => KickReason::LoggedInElsewhere,
            KickCause::Admin => KickReason::Admin,
        };
        gw.sessions.kick(&k.name, k.conn, reason);
    }
}

/// Makes the store agree with the local session table: missing entries are
/// re-created, sessions whose name now belongs elsewhere are kicked.
/// Returns (re-asserted, kicked).
async fn reconcile(gw: &Gateway) -> (usize, usize) {
    let (mut reasserted, mut kicked) = (0, 0);
    for (name, session, since_ms) in gw.sessions.snapshot() {
        let mine = Presence {
            name: name.clone(),
            server: gw.id.clone(),
            incarnation: gw.incarnation.clone(),
            conn: session,
            since_ms,
        };
        match gw.store.lookup(&name).await {
            Ok(Some(cur)) if cur.same_session(&mine) => {}
            Ok(Some(_)) => {
                gw.sessions
                    .kick(&name, session, KickReason::LoggedInElsewhere);
                kicked += 1;
            }
            Ok(None) => match gw.store.reassert(&mine).await {
                // The session may have ended while we re-created its entry.
                Ok(Reassert::Recreated) if !gw.sessions.holds(&name, session) => {
                    gw.stale.push(mine);
                }
                Ok(Reassert::Recreated) => reasserted += 1,
                Ok(Reassert::Taken) => {}
                // An operator kick whose notice we missed.
                Ok(Reassert::Kicked) => {
                    gw.sessions.kick(&name, session, KickReason::Admin);
                    kicked += 1;
                }
                Err(e) => tracing::warn!(user = %name, error = %e, "re-assert failed"),
            },
            Err(e) => tracing::warn!(user = %name, error = %e, "reconcile lookup failed"),
        }
    }
    (reasserted, kicked)
}

pub async fn expire_forwards(gw: Arc<Gateway>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(EXPIRY_SWEEP);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let expired = gw.pending.expire(Instant::now());
        if expired > 0 {
            tracing::warn!(server = %gw.id, expired, "forwards timed out: answered unavailable");
        }
    }
}

/// Presence entries of ended sessions that could not be removed (the
/// store was unreachable); the heartbeat retries them.
#[derive(Default)]
pub struct StaleEntries(Mutex<Vec<Presence>>);

/// Beyond this, the oldest stale entries are given up (the relay's purge
/// at this server's death still removes them).
const STALE_MAX: usize = 100_000;

impl StaleEntries {
    pub fn push(&self, entry: Presence) {
        let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if list.len() >= STALE_MAX {
            list.remove(0);
        }
        list.push(entry);
    }

    async fn retry(&self, store: &Arc<dyn crate::presence::PresenceStore>) {
        let batch = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        for entry in batch {
            // Compare-and-delete: harmless if the name moved on meanwhile.
            if store.logout(&entry).await.is_err() {
                self.push(entry);
            }
        }
    }
}
