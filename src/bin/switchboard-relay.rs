//! The switchboard relay: routes between message servers, purges the dead.
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use switchboard::config::{RelayConfig, listen, listen_opt};
use switchboard::presence::RedisStore;
use switchboard::relay::{self, RelayOptions};

#[derive(Parser)]
#[command(name = "switchboard-relay", version, about = "switchboard relay")]
struct Cli {
    #[command(flatten)]
    config: RelayConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Cli::parse().config;
    switchboard::telemetry::init(cfg.log.log_format);
    let shutdown = switchboard::shutdown::on_signal();
    let store = RedisStore::connect(&cfg.redis_url)
        .await
        .with_context(|| format!("cannot connect to Redis at {}", cfg.redis_url))?;
    let grpc_listener = listen(cfg.grpc_listen).await?;
    let metrics_listener = listen_opt(cfg.metrics_listen).await?;
    let opts = RelayOptions {
        grpc_listener,
        metrics_listener,
        health: cfg.health,
    };
    relay::run(opts, Arc::new(store), shutdown).await
}
