//! `switchboard-load`: a load generator and correctness checker for the
//! client protocol.
//!
//! - `cli`: global flags and the dispatch to a mode.
//! - `common`: the clock, run ids, address resolution.
//! - `progress`: live counters, the progress line, stall detection.
//! - `client`: a pipelined protocol client (connect, line reader, replies).
//! - `content`: self-verifying chat content (seq, send time, checksum).
//! - `verify`: per-direction exactly-once / in-order / intact checks and
//!   the final audit of outcomes against arrivals.
//! - `stats`: percentiles, latency summaries, rates.
//! - `pairs`: throughput and latency between pairs of users.
//! - `conns`: many idle logged-in connections, memory per connection.
//! - `logins`: login + logout cycles per second.
//!
//! Every mode prints progress and a human summary on stderr and exactly
//! one JSON summary line on stdout; the process exits with 1 when the run
//! found a violation or failed.
//!
//! A separate package: it talks to the servers only over TCP and must not
//! depend on the `switchboard` library.

// mimalloc: the message path allocates small strings at a high rate;
// glibc's malloc spent a fifth of the servers' CPU (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;
mod client;
mod common;
mod conns;
mod content;
mod logins;
mod pairs;
mod progress;
mod stats;
mod verify;

use clap::Parser;
use cli::Cli;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()?;
    let ok = runtime.block_on(cli::run(cli))?;
    std::process::exit(if ok { 0 } else { 1 });
}
