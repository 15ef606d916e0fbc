//! `switchboard-check`: smoke test of a running deployment (gRPC health,
//! then a chat between two fresh users); `helm test` runs it. Exits 0 if
//! every check passed.

use clap::Parser;
use switchboard::cli::CheckArgs;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = CheckArgs::parse().build()?;
    switchboard::check::run(options).await
}
