//! The switchboard relay: routes between message servers, purges the dead.

// mimalloc: the message path allocates small strings at a high rate;
// glibc's malloc spent a fifth of the servers' CPU (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use switchboard::cli::RelayArgs;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = RelayArgs::parse();
    switchboard::telemetry::init(args.log.log_format);
    let shutdown = switchboard::shutdown::on_signal();
    let (options, store) = args.build().await?;
    switchboard::relay::run(options, store, shutdown).await
}
