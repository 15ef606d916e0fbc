//! A switchboard message server: clients over TCP, peers via the relay.

// mimalloc: the message path allocates small strings at a high rate;
// glibc's malloc spent a fifth of the servers' CPU (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::sync::Arc;

use clap::Parser;
use switchboard::config::{ServerConfig, dialable, listen_on, listen_opt};
use switchboard::gateway::{self, GatewayOptions};

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
    let store = cfg.redis.connect().await?;
    let opts = GatewayOptions {
        advertise_client: cfg.advertise_client.unwrap_or_else(|| dialable(cfg.listen)),
        advertise_grpc: cfg
            .advertise_grpc
            .unwrap_or_else(|| dialable(cfg.grpc_listen)),
        client_listener: listen_on(cfg.listen).await?,
        grpc: cfg.grpc.options(cfg.grpc_listen).await?,
        metrics_listener: listen_opt(cfg.metrics_listen).await?,
        auth: cfg.auth.authenticator()?,
        id: cfg.id,
        relay_url: cfg.relay,
        limits: cfg.limits,
    };
    gateway::run(opts, Arc::new(store), shutdown).await
}
