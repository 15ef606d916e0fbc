//! The relay: joins the message servers.
//!
//! - `service`: the gRPC `Relay.Link` endpoint servers connect to;
//! - `links`: live links and what is in flight on each;
//! - `router`: forwards messages and outcomes between links, with a
//!   self-correcting route cache;
//! - `watcher`: the relay's side of the health watch (`crate::watch`);
//! - `admin_node`: the relay as seen by the Admin API;
//! - `registry`: this relay's entry in the relay registry;
//! - `identity`: who this relay is;
//! - `options`: what a relay is started with.
//!
//! The relay keeps no client connections and no message copies beyond
//! what is in flight; all durable state is in the presence store.

mod admin_node;
mod identity;
mod links;
mod options;
mod registry;
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

pub use crate::watch::HealthWatch;
pub use options::Options;
use router::Router;
use service::RelayService;

pub use identity::RelayIdentity;

/// Runs the relay until `shutdown`; then drains: NOT_SERVING, every
/// linked server is told to send no new pairs (`Drain`), in-flight
/// messages finish (up to the drain timeout), then the links end and the
/// relay leaves the registry.
pub async fn run(
    opts: Options,
    store: Arc<dyn PresenceStore>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let me = identity::RelayIdentity::new(opts.id.clone());
    let metrics = crate::metrics::Metrics::new();
    let router = Arc::new(Router::new(
        store.clone(),
        metrics.clone(),
        opts.lookup_budget,
    ));
    let stop = CancellationToken::new();
    let metrics_task = opts
        .metrics_listener
        .map(|l| tokio::spawn(crate::metrics::serve(l, metrics.clone(), stop.clone())));
    let relay_name = <RelayServer<RelayService> as tonic::server::NamedService>::NAME;
    let (health, health_service) = grpc::Health::new(vec![relay_name.to_owned()]);
    health.set(true).await;

    let draining = CancellationToken::new();
    let links_stop = CancellationToken::new();
    let grpc_stop = CancellationToken::new();
    let addr = opts.grpc.listener.local_addr()?;
    let board = Arc::new(crate::watch::HealthBoard::default());
    let node = admin_node::RelayNode::new(router.clone(), board.clone(), me.clone());
    let admin = AdminService::serve(Arc::new(node), store.clone(), opts.admin_token);
    let relay = RelayService::serve(
        router.clone(),
        service::ServiceOptions {
            me: me.clone(),
            shutdown: links_stop.clone(),
            draining: draining.clone(),
            link_token: opts.link_token,
            queue_bytes: opts.link_queue_bytes,
        },
    );
    let server = tokio::spawn(grpc::serve(
        opts.grpc,
        health_service,
        Services::default().add(admin).add(relay),
        grpc_stop.clone(),
    ));
    let watcher = tokio::spawn(crate::watch::run(
        Arc::new(watcher::RelayWatched(router.clone())),
        store.clone(),
        crate::watch::WatchOptions {
            cfg: opts.health,
            board,
            tls: opts.client_tls,
            metrics: metrics.clone(),
            me: None,
        },
        stop.clone(),
    ));
    let registration = registry::Registration {
        store,
        router: router.clone(),
        me: me.clone(),
        grpc_addr: opts.advertise_grpc,
        period: opts.heartbeat,
        draining: draining.clone(),
    };
    let registry_task = tokio::spawn(registration.run(stop.clone()));
    tracing::info!(%addr, relay = %me.id, incarnation = %me.incarnation, "relay started");

    shutdown.cancelled().await;
    health.set(false).await;
    draining.cancel();
    drain(&router, opts.drain_timeout).await;
    links_stop.cancel();
    grpc_stop.cancel();
    stop.cancel();
    let _ = watcher.await;
    let _ = registry_task.await;
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    match tokio::time::timeout(Duration::from_secs(3), server).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "gRPC server error"),
        Err(_) => tracing::warn!("gRPC server did not stop in time"),
        _ => {}
    }
    tracing::info!(relay = %me.id, "relay stopped");
    Ok(())
}

/// Waits until no message is in flight on any link (the servers were
/// told to send no more), at most `timeout`.
async fn drain(router: &Router, timeout: Duration) {
    let in_flight = || {
        router
            .links
            .all()
            .iter()
            .map(|l| l.in_flight())
            .sum::<usize>()
    };
    let deadline = tokio::time::Instant::now() + timeout;
    while in_flight() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = in_flight();
    if left > 0 {
        tracing::warn!(
            left,
            "drain timeout: closing links with messages in flight (their servers re-send them through another relay)"
        );
    } else {
        tracing::info!(links = router.links.len(), "drained: no message in flight");
    }
}
