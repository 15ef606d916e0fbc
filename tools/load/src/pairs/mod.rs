//! The `pairs` mode: P pairs of users, each sender pushing M verified
//! chats to its partner with at most W outcomes outstanding.
//!
//! Per connection there is one writer task (waits for window credit,
//! batches every chat it may send into one write) and one reader task
//! (outcomes free credit; `message` lines are verified; it reads on for
//! --linger-ms after the last expected line, to catch late duplicates).
//! All users log in before the clock starts. A run is `ok` when nothing was lost,
//! duplicated, reordered, corrupted or left without an outcome.
//!
//! For fault injection: `--rate` paces each sender, `--ready-file` tells
//! a test when traffic flows (the moment to kill something), and
//! `--expect-failures` accepts connections closed by the server while
//! keeping every other check strict (see `verify::Fate`).
//!
//! The system under test is a `transport`: switchboard's client protocol,
//! or with --nats core NATS (the baseline of scripts/bench.sh). Everything
//! else (plan, windows, pacing, verification, audit, report) is the same
//! code for both, so the two are measured by one workload.
//!
//! One step per file, in run order: `plan` (directions, users, log in),
//! `traffic` (one `writer` and one `reader` per connection, the `ready`
//! file, until every reader ends), `audit` (outcomes joined with
//! arrivals) and `report` (stderr lines, the JSON summary). This file
//! owns the flags and the order of the steps and must not do a step
//! itself.

mod audit;
mod plan;
mod reader;
mod ready;
mod report;
mod traffic;
mod transport;
mod writer;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;

use crate::common::{now_ns, resolve, run_id};
use crate::content::HEADER_LEN;
use audit::{Readers, Tally};
use report::Finished;
use transport::Transport;
use transport::nats::Nats;
use transport::switchboard::Switchboard;

#[derive(clap::Args, Debug, Clone)]
pub struct PairsArgs {
    /// Server of the senders (`x` users).
    #[arg(long, env = "SWITCHBOARD_LOAD_A", default_value = "127.0.0.1:9501")]
    pub a: String,
    /// Server of the recipients (`y` users), unless --same-server.
    #[arg(long, env = "SWITCHBOARD_LOAD_B", default_value = "127.0.0.1:9502")]
    pub b: String,
    /// Measure core NATS instead of switchboard, as a baseline: --a and
    /// --b are then two servers (HOST:PORT) of one NATS cluster. Same
    /// users, chats, windows and checks. User N subscribes to `u.N`; a
    /// chat goes to `u.RECIPIENT` with the reply subject `u.SENDER.SEQ`.
    /// Core NATS has no delivery ack, so a chat's outcome is the ack its
    /// recipient publishes to that reply subject when it reads the chat
    /// (request/reply): --window counts chats without that ack, and `ack`
    /// latency is send -> ack read (switchboard's is send -> `delivered`).
    #[arg(long, env = "SWITCHBOARD_LOAD_NATS")]
    pub nats: bool,
    /// Number of pairs.
    #[arg(long, env = "SWITCHBOARD_LOAD_PAIRS", default_value_t = 50)]
    pub pairs: u32,
    /// Messages per sender.
    #[arg(long, env = "SWITCHBOARD_LOAD_MESSAGES", default_value_t = 2000)]
    pub messages: u64,
    /// Chats in flight per sender (sent, outcome not yet received).
    #[arg(long, env = "SWITCHBOARD_LOAD_WINDOW", default_value_t = 32)]
    pub window: usize,
    /// Content size in bytes (at least 48).
    #[arg(long, env = "SWITCHBOARD_LOAD_SIZE", default_value_t = 64)]
    pub size: usize,
    /// Put both users of every pair on server A.
    #[arg(long, env = "SWITCHBOARD_LOAD_SAME_SERVER")]
    pub same_server: bool,
    /// Both users of a pair send M messages to each other.
    #[arg(long, env = "SWITCHBOARD_LOAD_BOTH_WAYS")]
    pub both_ways: bool,
    /// Give up when no outcome or message arrived for this long.
    #[arg(
        long,
        env = "SWITCHBOARD_LOAD_OUTCOME_TIMEOUT_SECS",
        default_value_t = 30
    )]
    pub outcome_timeout_secs: u64,
    /// Connections opened (and logged in) concurrently before the run.
    #[arg(
        long,
        env = "SWITCHBOARD_LOAD_CONNECT_CONCURRENCY",
        default_value_t = 256
    )]
    pub connect_concurrency: usize,
    /// Servers or the relay fail on purpose during this run. A connection
    /// closed by the server (EOF, reset, `kicked` for `server_shutdown`) is
    /// then not a violation by itself: a sender whose connection died
    /// stops, and its chats still without an outcome are abandoned, not
    /// missing; a `delivered` chat that never arrived is not lost if the
    /// recipient's connection died. Everything else stays a violation:
    /// a missing or duplicate outcome on a connection that stayed up, a
    /// `delivered` chat that never reached a recipient that stayed
    /// connected, duplicated, reordered or corrupted arrivals.
    #[arg(long, env = "SWITCHBOARD_LOAD_EXPECT_FAILURES")]
    pub expect_failures: bool,
    /// Chats per second per sender (0: as fast as the window allows). A
    /// paced run lasts about messages / rate seconds whatever the
    /// outcomes, e.g. while every chat fails fast with `unavailable`.
    #[arg(long, env = "SWITCHBOARD_LOAD_RATE", default_value_t = 0)]
    pub rate: u64,
    /// Written (atomically: a temporary file, then renamed) once every
    /// user is logged in, the clock started and --ready-after-outcomes
    /// outcomes arrived. Holds `{"run":…,"pid":…,"users":[…]}`. For tests
    /// that inject a failure mid-run.
    #[arg(long, env = "SWITCHBOARD_LOAD_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// Once a connection has every outcome and message it expects, read
    /// on for this long: a duplicate arriving after the last expected line
    /// is then counted as a violation instead of going unseen.
    #[arg(long, env = "SWITCHBOARD_LOAD_LINGER_MS", default_value_t = 250)]
    pub linger_ms: u64,
    /// Outcomes (all senders together) before --ready-file is written.
    #[arg(
        long,
        env = "SWITCHBOARD_LOAD_READY_AFTER_OUTCOMES",
        default_value_t = 1
    )]
    pub ready_after_outcomes: u64,
}

impl PairsArgs {
    /// The recipients' server as given on the command line (A with
    /// --same-server).
    fn recipients_server(&self) -> &str {
        if self.same_server { &self.a } else { &self.b }
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.size < HEADER_LEN {
            bail!("--size must be at least {HEADER_LEN} bytes");
        }
        if self.window == 0 || self.pairs == 0 || self.messages == 0 {
            bail!("--pairs, --messages and --window must be positive");
        }
        Ok(())
    }
}

pub async fn run(args: PairsArgs, print_progress: bool) -> anyhow::Result<bool> {
    args.check()?;
    if args.nats {
        run_on::<Nats>(args, print_progress).await
    } else {
        run_on::<Switchboard>(args, print_progress).await
    }
}

/// The run's steps against the system `T`.
async fn run_on<T: Transport>(args: PairsArgs, print_progress: bool) -> anyhow::Result<bool> {
    let a = resolve(&args.a).await?;
    let b = if args.same_server {
        a
    } else {
        resolve(&args.b).await?
    };
    let run = run_id();
    now_ns(); // start the epoch

    let (dirs, planned) = plan::plan(&args, &run, a, b);
    let names = planned.iter().map(|p| p.name.clone()).collect();
    let (users, login_secs) = plan::log_in::<T>(&args, &run, planned).await?;
    let timeout = Duration::from_secs(args.outcome_timeout_secs);
    T::settle(a, b, &run, timeout).await?;
    let (ended, results) = traffic::run(&args, &run, users, names, print_progress).await?;
    let (readers, receivers) = Readers::sum(results, dirs.len(), ended.start);
    let tally = Tally::of(&dirs, receivers, args.expect_failures);
    let finished = Finished {
        args: &args,
        transport: T::NAME,
        run: &run,
        login_secs,
        ended,
        readers,
        tally,
    };
    Ok(finished.report())
}
