//! `switchboard`: the one-command local cluster (relay + two servers).

// mimalloc: the message path allocates small strings at a high rate;
// glibc's malloc spent a fifth of the servers' CPU (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::Parser;
use switchboard::cluster::{self, ClusterConfig};

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "switchboard local cluster: a relay and two message servers in one process"
)]
struct Cli {
    #[command(flatten)]
    config: ClusterConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Cli::parse().config;
    switchboard::telemetry::init(cfg.log.log_format);
    cluster::run(cfg, switchboard::shutdown::on_signal()).await
}
