//! The switchboard relay: routes between message servers, purges the dead.
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use switchboard::config::RelayConfig;
use switchboard::presence::RedisStore;
use switchboard::relay::{self, RelayOptions};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(name = "switchboard-relay", version, about = "switchboard relay")]
struct Cli {
    #[command(flatten)]
    config: RelayConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Cli::parse().config;
    switchboard::telemetry::init();
    let shutdown = switchboard::shutdown::on_signal();
    let store = RedisStore::connect(&cfg.redis_url)
        .await
        .with_context(|| format!("cannot connect to Redis at {}", cfg.redis_url))?;
    let grpc_listener = TcpListener::bind(cfg.grpc_listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.grpc_listen))?;
    let opts = RelayOptions {
        grpc_listener,
        health: cfg.health,
    };
    relay::run(opts, Arc::new(store), shutdown).await
}
