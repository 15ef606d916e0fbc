//! `switchboard-load`: load generator and checker (see `switchboard::loadgen`).

// mimalloc: the message path allocates small strings at a high rate;
// glibc's malloc spent a fifth of the servers' CPU (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::Parser;
use switchboard::loadgen::{self, Cli};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()?;
    let ok = runtime.block_on(loadgen::run(cli))?;
    std::process::exit(if ok { 0 } else { 1 });
}
