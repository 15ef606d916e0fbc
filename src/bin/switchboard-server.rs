//! A switchboard message server: clients over TCP, peers via the relay.
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use switchboard::config::{ServerConfig, dialable, listen, listen_opt};
use switchboard::gateway::{self, GatewayOptions};
use switchboard::presence::RedisStore;

#[derive(Parser)]
#[command(
    name = "switchboard-server",
    version,
    about = "switchboard message server"
)]
struct Cli {
    #[command(flatten)]
    config: ServerConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Cli::parse().config;
    switchboard::telemetry::init(cfg.log.log_format);
    let shutdown = switchboard::shutdown::on_signal();
    let store = RedisStore::connect(&cfg.redis_url)
        .await
        .with_context(|| format!("cannot connect to Redis at {}", cfg.redis_url))?;
    let client_listener = listen(cfg.listen).await?;
    let grpc_listener = listen(cfg.grpc_listen).await?;
    let metrics_listener = listen_opt(cfg.metrics_listen).await?;
    let opts = GatewayOptions {
        metrics_listener,
        advertise_client: cfg.advertise_client.unwrap_or_else(|| dialable(cfg.listen)),
        advertise_grpc: cfg
            .advertise_grpc
            .unwrap_or_else(|| dialable(cfg.grpc_listen)),
        id: cfg.id,
        client_listener,
        grpc_listener,
        relay_url: cfg.relay,
        limits: cfg.limits,
    };
    gateway::run(opts, Arc::new(store), shutdown).await
}
