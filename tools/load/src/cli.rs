//! The command line: global flags, one subcommand per mode, and the
//! dispatch to the mode's `run`. Must not measure anything; a mode's
//! flags live in its own module.

use clap::{Parser, Subcommand};

use crate::{conns, logins, pairs};

#[derive(Parser, Debug)]
#[command(
    name = "switchboard-load",
    version,
    about = "switchboard load generator: throughput, latency, connections, logins"
)]
pub struct Cli {
    /// Tokio worker threads of the generator.
    #[arg(
        long,
        env = "SWITCHBOARD_LOAD_THREADS",
        default_value_t = 2,
        global = true
    )]
    pub threads: usize,
    /// Progress lines on stderr (once per second); off with --quiet.
    #[arg(long, env = "SWITCHBOARD_LOAD_QUIET", global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// P pairs of users exchange M verified messages, W in flight per sender.
    Pairs(pairs::PairsArgs),
    /// Open and hold N logged-in connections; report memory per connection.
    Conns(conns::ConnsArgs),
    /// N login + logout cycles with C concurrent connections.
    Logins(logins::LoginsArgs),
}

/// Runs the chosen mode; Ok(false) when it found a violation.
pub async fn run(cli: Cli) -> anyhow::Result<bool> {
    let progress = !cli.quiet;
    match cli.command {
        Command::Pairs(args) => pairs::run(args, progress).await,
        Command::Conns(args) => conns::run(args, progress).await,
        Command::Logins(args) => logins::run(args, progress).await,
    }
}
