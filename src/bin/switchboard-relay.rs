//! The switchboard relay: routes between message servers, purges the dead.

// mimalloc: the message path allocates small strings at a high rate;
// glibc's malloc spent a fifth of the servers' CPU (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::sync::Arc;

use clap::Parser;
use switchboard::config::{RelayConfig, listen_opt};
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
    let store = cfg.redis.connect().await?;
    let opts = RelayOptions {
        grpc: cfg.grpc.options(cfg.grpc_listen).await?,
        metrics_listener: listen_opt(cfg.metrics_listen).await?,
        health: cfg.health,
    };
    relay::run(opts, Arc::new(store), shutdown).await
}
