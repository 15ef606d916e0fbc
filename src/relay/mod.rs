//! The relay: joins the message servers.
//!
//! - `service`: the gRPC `Relay.Link` endpoint servers connect to;
//! - `links`: live links and what is in flight on each;
//! - `router`: forwards messages and outcomes between links, with a
//!   self-correcting route cache;
//! - `watcher`: health checks, death, purge;
//! - `admin_node`: the relay as seen by the Admin API;
//! - `options`: what a relay is started with.
//!
//! The relay keeps no client connections and no message copies beyond
//! what is in flight; all durable state is in the presence store.

mod admin_node;
mod links;
mod options;
mod router;
mod service;
mod watcher;

use std::sync::Arc;
use std::time::Duration;

use crate::admin::AdminService;
use crate::grpc::{self, Services};
use crate::pb::relay_server::RelayServer;
use crate::presence::PresenceStore;
use crate::shutdown::CancellationToken;

pub use options::{HealthWatch, Options};
use router::Router;
use service::RelayService;

/// Runs the relay until `shutdown`; then reports NOT_SERVING, ends every
/// link (servers fall back to local-only and relink later) and returns.
pub async fn run(
    opts: Options,
    store: Arc<dyn PresenceStore>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = crate::metrics::Metrics::new();
    let router = Arc::new(Router::new(
        store.clone(),
        metrics.clone(),
        opts.lookup_budget,
    ));
    let metrics_stop = CancellationToken::new();
    let metrics_task = opts.metrics_listener.map(|l| {
        tokio::spawn(crate::metrics::serve(
            l,
            metrics.clone(),
            metrics_stop.clone(),
        ))
    });
    let relay_name = <RelayServer<RelayService> as tonic::server::NamedService>::NAME;
    let (health, health_service) = grpc::Health::new(vec![relay_name.to_owned()]);
    health.set(true).await;

    let links_stop = CancellationToken::new();
    let grpc_stop = CancellationToken::new();
    let addr = opts.grpc.listener.local_addr()?;
    let board = Arc::new(watcher::HealthBoard::default());
    let admin = AdminService::serve(
        Arc::new(admin_node::RelayNode::new(router.clone(), board.clone())),
        store.clone(),
        opts.admin_token,
    );
    let relay = RelayService::serve(
        router.clone(),
        links_stop.clone(),
        opts.link_token,
        opts.link_queue_bytes,
    );
    let server = tokio::spawn(grpc::serve(
        opts.grpc,
        health_service,
        Services::default().add(admin).add(relay),
        grpc_stop.clone(),
    ));
    let watcher = tokio::spawn(watcher::run(
        router,
        store,
        watcher::WatchOptions {
            cfg: opts.health,
            board,
            tls: opts.client_tls,
        },
        shutdown.clone(),
    ));
    tracing::info!(%addr, "relay started");

    shutdown.cancelled().await;
    health.set(false).await;
    links_stop.cancel();
    grpc_stop.cancel();
    let _ = watcher.await;
    metrics_stop.cancel();
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    match tokio::time::timeout(Duration::from_secs(3), server).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "gRPC server error"),
        Err(_) => tracing::warn!("gRPC server did not stop in time"),
        _ => {}
    }
    tracing::info!("relay stopped");
    Ok(())
}
