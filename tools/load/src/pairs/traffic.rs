//! The timed part of a `pairs` run: starts the clock, the progress
//! reporter, the ready file and one writer and one reader per user, waits
//! for every reader (lingering included), then stops the rest and closes
//! the sending sides.
//! Owns the run's start and end and the cancellation; must not judge
//! outcomes or arrivals (`reader`, `audit`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::PairsArgs;
use super::plan::User;
use super::reader::{ReaderCtx, ReaderResult, read_loop};
use super::ready::Ready;
use super::transport::{Outbox, Transport};
use super::writer::write_loop;
use crate::common::now_ns;
use crate::progress::{Progress, Reporter};

/// How the timed part ended.
pub(super) struct Ended {
    /// The clock (ns): all users logged in / every reader had what it
    /// expected (or gave up).
    pub(super) start: u64,
    pub(super) end: u64,
    /// The stall detector gave up on the run.
    pub(super) timed_out: bool,
    /// Chats written, by all senders.
    pub(super) sent: u64,
    /// Writers that stopped on a write error.
    pub(super) write_errors: u64,
    /// The longest wait between two message arrivals.
    pub(super) max_arrival_gap_ns: u64,
}

/// Runs the traffic of logged-in `users` to its end; `names` go into the
/// ready file. Returns how it ended and every reader's result.
pub(super) async fn run<T: Transport>(
    args: &PairsArgs,
    run: &str,
    users: Vec<User<T>>,
    names: Vec<String>,
    print_progress: bool,
) -> anyhow::Result<(Ended, Vec<ReaderResult>)> {
    let progress = Arc::new(Progress::default());
    let cancel = CancellationToken::new();
    let reporter = Reporter::start(
        "pairs",
        progress.clone(),
        print_progress,
        Duration::from_secs(args.outcome_timeout_secs),
        cancel.clone(),
    );

    let start = now_ns();
    let ready = Ready::new(args.ready_after_outcomes);
    let ready_task = args
        .ready_file
        .clone()
        .map(|path| ready.spawn_writer(path, run.to_owned(), names));
    let ctx = || ReaderCtx {
        size: args.size,
        expect_failures: args.expect_failures,
        progress: progress.clone(),
        ready: ready.clone(),
        cancel: cancel.clone(),
        linger: Duration::from_millis(args.linger_ms),
    };
    let (readers, writers) = spawn_connections(args, users, ctx, &progress, &cancel);
    let mut results = Vec::new();
    for r in readers {
        results.push(r.await?);
    }
    // The run ended when the last reader had what it expected; lingering
    // for late duplicates is not part of it.
    let end = results.iter().map(|r| r.done_ns).max().unwrap_or(start);
    let timed_out = cancel.is_cancelled();
    cancel.cancel(); // stops writers still waiting for credit
    reporter.stop().await;
    if let Some(t) = ready_task {
        t.abort();
    }
    let ended = Ended {
        start,
        end,
        timed_out,
        write_errors: close_writers(writers).await?,
        sent: progress.sent.load(Ordering::Relaxed),
        max_arrival_gap_ns: progress.max_arrival_gap_ns.load(Ordering::Relaxed),
    };
    Ok((ended, results))
}

type Readers = Vec<JoinHandle<ReaderResult>>;
type Writers<O> = Vec<JoinHandle<(O, bool)>>;

/// One reader and one writer per user; a sender's window of
/// --window credits is shared by its two tasks.
fn spawn_connections<T: Transport>(
    args: &PairsArgs,
    users: Vec<User<T>>,
    ctx: impl Fn() -> ReaderCtx,
    progress: &Arc<Progress>,
    cancel: &CancellationToken,
) -> (Readers, Writers<T::Outbox>) {
    let pace = (args.rate > 0).then(|| Duration::from_secs_f64(1.0 / args.rate as f64));
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for user in users {
        let window = user
            .sends
            .as_ref()
            .map(|_| Arc::new(Semaphore::new(args.window)));
        readers.push(tokio::spawn(read_loop(
            user.inbox,
            user.sends.clone(),
            user.receives.clone(),
            window.clone(),
            ctx(),
        )));
        writers.push(tokio::spawn(write_loop(
            user.outbox,
            user.sends,
            window,
            args.size,
            pace,
            progress.clone(),
            cancel.clone(),
        )));
    }
    (readers, writers)
}

/// Waits for the writers and closes their sending sides; returns how
/// many stopped on an error. Writers hold them until now: closing them
/// earlier would (over switchboard) half-close the connections and lose
/// outstanding outcomes.
async fn close_writers<O: Outbox>(writers: Writers<O>) -> anyhow::Result<u64> {
    let mut write_errors = 0u64;
    for w in writers {
        let (outbox, ok) = w.await?;
        write_errors += u64::from(!ok);
        outbox.close().await;
    }
    Ok(write_errors)
}
