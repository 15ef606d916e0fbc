//! A message server: client connections, local delivery, the relay link.
//!
//! - `listener`: the accept loop and the connection cap.
//! - `connection`: one task per client: framing, queues, writes.
//! - `commands`: what each request does; the one place where library
//!   errors become protocol errors.
//! - `sessions`: the local session table (authority on local delivery).
//! - `pending`: forwarded chats awaiting their outcome.
//! - `relay_link`: the long-lived bidirectional stream to the relay.
//! - `upkeep`: registry heartbeat, kick notices, forward timeouts.
//!
//! A gateway never routes between other servers; that is the relay's job.

mod commands;
mod connection;
mod limits;
mod listener;
mod operator;
mod pending;
mod relay_link;
mod sessions;
mod upkeep;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::admin::AdminService;
use crate::config::GatewayLimits;
use crate::grpc;
use crate::metrics::Metrics;
use crate::presence::{PresenceStore, ServerInfo, now_ms};
use crate::shutdown::CancellationToken;

pub use sessions::{Control, Delivery, SessionHandle, Sessions};

/// Everything needed to start a message server.
pub struct GatewayOptions {
    pub id: String,
    pub client_listener: TcpListener,
    pub grpc: grpc::GrpcOptions,
    pub advertise_client: String,
    pub advertise_grpc: String,
    pub relay_url: String,
    pub limits: GatewayLimits,
    /// Where to serve `GET /metrics`, if anywhere.
    pub metrics_listener: Option<TcpListener>,
    /// Login tokens are required when set.
    pub auth: Option<crate::auth::Authenticator>,
}

/// State shared by every task of one message server.
pub struct Gateway {
    pub id: String,
    /// Random per start; fences this life's presence entries.
    pub incarnation: String,
    pub store: Arc<dyn PresenceStore>,
    pub sessions: Sessions,
    /// Entries of ended sessions still to remove from the store.
    stale: upkeep::StaleEntries,
    pending: pending::Pending,
    link: relay_link::LinkSlot,
    pub limits: GatewayLimits,
    pub metrics: Arc<Metrics>,
    auth: Option<crate::auth::Authenticator>,
    ip_limits: limits::IpLimits,
    /// One permit per allowed connection.
    connection_slots: Arc<Semaphore>,
    next_session: AtomicU64,
    next_message: AtomicU64,
    /// Set when the drain starts (health is NOT_SERVING from then on).
    draining: std::sync::atomic::AtomicBool,
}

impl Gateway {
    fn new(
        id: String,
        store: Arc<dyn PresenceStore>,
        limits: GatewayLimits,
        auth: Option<crate::auth::Authenticator>,
    ) -> Self {
        let metrics = Metrics::new();
        Self {
            auth,
            ip_limits: limits::IpLimits::new(&limits),
            id,
            incarnation: format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff),
            store,
            sessions: Sessions::default(),
            stale: upkeep::StaleEntries::default(),
            pending: pending::Pending::new(metrics.clone()),
            metrics,
            link: relay_link::LinkSlot::default(),
            connection_slots: Arc::new(Semaphore::new(limits.max_connections as usize)),
            limits,
            next_session: AtomicU64::new(1),
            draining: Default::default(),
            next_message: AtomicU64::new(1),
        }
    }

    pub fn connections(&self) -> u64 {
        self.limits.max_connections - self.connection_slots.available_permits() as u64
    }

    fn new_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Hands a message to the relay; `waiter` receives its outcome (or
    /// `unavailable` at once if there is no link).
    fn forward(&self, message: crate::pb::ChatMessage, waiter: pending::Waiter) {
        let id = message.id.clone();
        let now = std::time::Instant::now();
        let entry = pending::Entry {
            waiter,
            started: now,
            deadline: now + self.limits.forward_timeout(),
        };
        self.pending.insert(id.clone(), entry);
        let forward = crate::pb::Forward {
            message: Some(message),
            origin_server: self.id.clone(),
            rerouted: false,
        };
        if !self.link.send(crate::pb::envelope::Kind::Forward(forward)) {
            self.pending.resolve(&id, crate::pb::Status::Unavailable);
        }
    }

    /// `<server>.<incarnation>.<sequence>`: unique across the cluster.
    fn new_message_id(&self) -> String {
        let seq = self.next_message.fetch_add(1, Ordering::Relaxed);
        format!("{}.{}.{seq}", self.id, self.incarnation)
    }
}

/// Clears what earlier lives of this server id left in the store,
/// subscribes to kick notices (before anyone can log in, so none is
/// missed) and registers this incarnation.
async fn join_cluster(
    gw: &Gateway,
    grpc_addr: &str,
    client_addr: &str,
) -> anyhow::Result<(ServerInfo, crate::presence::KickStream)> {
    let stale = gw
        .store
        .purge_server(&gw.id)
        .await
        .context("clearing presence left by this server's previous runs")?;
    if stale > 0 {
        tracing::info!(server = %gw.id, purged = stale, "purged entries of previous incarnations");
    }
    let info = ServerInfo {
        id: gw.id.clone(),
        incarnation: gw.incarnation.clone(),
        grpc_addr: grpc_addr.to_owned(),
        client_addr: client_addr.to_owned(),
        connections: 0,
        heartbeat_ms: now_ms(),
        started_ms: now_ms(),
        stats: Default::default(),
    };
    let kicks = gw
        .store
        .kicks(&gw.id)
        .await
        .context("subscribing to kick notices")?;
    gw.store
        .register(&info)
        .await
        .context("registering in the server registry")?;
    Ok((info, kicks))
}

/// Removes this incarnation's presence entries and registry entry; if the
/// store is unreachable, the relay's purge does it later.
async fn leave_cluster(gw: &Gateway) {
    match gw.store.purge(&gw.id, &gw.incarnation).await {
        Ok(n) => tracing::info!(server = %gw.id, purged = n, "removed own presence entries"),
        Err(e) => {
            tracing::warn!(server = %gw.id, error = %e, "could not remove own presence entries; the relay will purge them")
        }
    }
    if let Err(e) = gw.store.deregister(&gw.id, &gw.incarnation).await {
        tracing::warn!(server = %gw.id, error = %e, "could not deregister");
    }
}

/// Runs a message server until `shutdown`, then drains it: health
/// NOT_SERVING, no new connections, clients told, presence removed.
pub async fn run(
    opts: GatewayOptions,
    store: Arc<dyn PresenceStore>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // A bad relay URL (or https:// without a CA) is a configuration error:
    // report it now rather than retrying it forever.
    crate::tls::endpoint(&opts.relay_url, opts.grpc.client_tls.as_ref()).context("--relay")?;
    let gw = Arc::new(Gateway::new(
        opts.id.clone(),
        store,
        opts.limits.clone(),
        opts.auth,
    ));
    let (info, kicks) = join_cluster(&gw, &opts.advertise_grpc, &opts.advertise_client).await?;

    let (health, health_service) = grpc::Health::new(vec![]);
    health.set(true).await;
    let grpc_stop = CancellationToken::new();
    let admin = AdminService::new(
        Arc::new(operator::GatewayNode(gw.clone())),
        gw.store.clone(),
    );
    let client_tls = opts.grpc.client_tls.clone();
    let grpc_task = tokio::spawn(grpc::serve(
        opts.grpc,
        health_service,
        admin,
        None,
        grpc_stop.clone(),
    ));

    let background = shutdown.child_token();
    let tasks = TaskTracker::new();
    if let Some(listener) = opts.metrics_listener {
        tasks.spawn(crate::metrics::serve(
            listener,
            gw.metrics.clone(),
            background.clone(),
        ));
    }
    tasks.spawn(upkeep::heartbeat(gw.clone(), info, background.clone()));
    tasks.spawn(upkeep::kicks(gw.clone(), kicks, background.clone()));
    tasks.spawn(upkeep::expire_forwards(gw.clone(), background.clone()));
    tasks.spawn(relay_link::maintain(
        gw.clone(),
        relay_link::Target {
            url: opts.relay_url,
            tls: client_tls,
        },
        opts.advertise_grpc,
        opts.advertise_client,
        background.clone(),
    ));
    tracing::info!(server = %gw.id, incarnation = %gw.incarnation, "message server started");

    let connections = TaskTracker::new();
    listener::accept_loop(
        gw.clone(),
        opts.client_listener,
        &connections,
        shutdown.clone(),
    )
    .await;

    // Drain. Connections see `shutdown` themselves and say goodbye.
    gw.draining.store(true, Ordering::Relaxed);
    health.set(false).await;
    connections.close();
    if tokio::time::timeout(gw.limits.drain_timeout(), connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(server = %gw.id, "drain timeout: exiting while some connections are still closing");
    }
    background.cancel();
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), tasks.wait()).await;
    leave_cluster(&gw).await;
    grpc_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), grpc_task).await;
    tracing::info!(server = %gw.id, "message server stopped");
    Ok(())
}
