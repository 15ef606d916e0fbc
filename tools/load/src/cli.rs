//! The command line (global flags, one subcommand per mode) and the
//! helpers every mode shares: the clock, run ids, address resolution and
//! the progress reporter.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::{conns, logins, pairs};
use tokio_util::sync::CancellationToken;

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

/// Nanoseconds since a process-local epoch (set on first use).
pub fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A short random id that makes this run's user names unique.
pub fn run_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// Resolves `HOST:PORT` to its first address.
pub async fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(addr)
        .await
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to no address"))
}

/// Counters shown once per second on stderr.
#[derive(Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub outcomes: AtomicU64,
    pub done: AtomicU64,
}

impl Progress {
    fn snapshot(&self) -> [u64; 4] {
        [
            self.sent.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
            self.outcomes.load(Ordering::Relaxed),
            self.done.load(Ordering::Relaxed),
        ]
    }
}

/// Prints progress each second until `stop`; cancels `stall` when no
/// counter moved for `stall_after` (the run is stuck: give up).
pub async fn report_progress(
    mode: &'static str,
    progress: std::sync::Arc<Progress>,
    print: bool,
    stall_after: Duration,
    stall: CancellationToken,
    stop: CancellationToken,
) {
    let start = Instant::now();
    let mut last = progress.snapshot();
    let mut last_change = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = progress.snapshot();
        if print {
            let [sent, received, outcomes, done] = now;
            let line = match mode {
                "pairs" => format!(
                    "sent {sent} received {received} outcomes {outcomes} in-flight {}",
                    sent.saturating_sub(outcomes)
                ),
                _ => format!("done {done} in-flight {}", sent.saturating_sub(done)),
            };
            eprintln!("[{mode} {:>4.0}s] {line}", start.elapsed().as_secs_f64());
        }
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() >= stall_after {
            eprintln!(
                "[{mode}] no progress for {} s: giving up",
                stall_after.as_secs()
            );
            stall.cancel();
            return;
        }
    }
}

/// Messages per second (or any rate), 0 when no time passed.
pub fn rate(count: u64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s > 0.0 {
        (count as f64 / s).round()
    } else {
        0.0
    }
}
